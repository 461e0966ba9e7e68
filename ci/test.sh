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

step "clippy (with the dpdk backend)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "the workspace without DPDK still builds"
cargo check --locked -p beeline --all-targets

step "no_std: the data plane core links without std"
cargo build --locked --manifest-path nostd-check/Cargo.toml

step "tests (with the dpdk backend: its tests reserve 2 MiB hugepages)"
cargo test --workspace --all-features --locked

step "bounded fuzz run"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" ci/fuzz.sh

step "vagrant cluster: vagrant validate (libvirt, virtualbox), bash -n, shellcheck"
ci/vagrant-validate.sh

echo
echo "all tests passed"
