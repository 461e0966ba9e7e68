#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then formatting, lints,
# the no_std proof, every unit/property/simulation/end-to-end test, the fuzz corpus
# replay and a short bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/setup.sh

export CARGO_TERM_COLOR=never
step() { echo; echo "=== $* ==="; }

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "no_std: the data plane core links without std"
cargo build --locked --manifest-path nostd-check/Cargo.toml

step "tests"
cargo test --workspace --locked

step "bounded fuzz run"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" ci/fuzz.sh

step "vagrant cluster: vagrant validate (libvirt, virtualbox), bash -n, shellcheck"
ci/vagrant-validate.sh

echo
echo "all tests passed"
