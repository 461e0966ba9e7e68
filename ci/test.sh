#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then formatting, lints,
# the no_std proof, every unit/property/simulation/end-to-end test, the fuzz corpus
# replay and a short bounded fuzz run, then the Vagrant cluster booted and smoke-tested.
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

step "the README's plain release build needs no DPDK (pkg-config finds no libdpdk here)"
no_dpdk="$(mktemp -d)"
PKG_CONFIG_LIBDIR="$no_dpdk" PKG_CONFIG_PATH="" cargo build --release --locked
rmdir "$no_dpdk"

step "layout: no import cycles between top-level modules"
python3 ci/module-cycles.py

step "no_std: the data plane core links without std, and without allocating"
cargo build --locked --manifest-path nostd-check/Cargo.toml
nostd_bin="$(mktemp)"
cc -o "$nostd_bin" nostd-check/link-check.c nostd-check/target/debug/libbeeline_nostd_check.a \
    -Wl,--gc-sections
"$nostd_bin"
rm -f "$nostd_bin"

step "tests (with the dpdk backend: its tests reserve 2 MiB hugepages)"
# A test that cannot run here records why (beeline_dataplane::testkit::skip); the summary
# below shows them, since cargo test hides the output of tests that pass.
BEELINE_SKIP_LOG="$(mktemp)"
export BEELINE_SKIP_LOG
cargo test --workspace --all-features --locked
skipped="$(sort -u "$BEELINE_SKIP_LOG")"
if [[ -n $skipped ]]; then
    echo "$(wc -l <<<"$skipped") tests (or parts of tests) skipped:"
    while IFS= read -r line; do echo "  $line"; done <<<"$skipped"
else
    echo "0 tests skipped"
fi
rm -f "$BEELINE_SKIP_LOG"

step "bounded fuzz run"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}" ci/fuzz.sh

step "vagrant cluster: vagrant validate (libvirt, virtualbox), bash -n, shellcheck"
ci/vagrant-validate.sh

step "vagrant cluster: three VMs booted, DPDK nodes on vfio-bound virtio NICs, smoke test, all destroyed"
# Installs libvirt, Vagrant and QEMU, builds the box from Debian's archive (cached) and
# beeline with the dpdk feature; bounded (BEELINE_VAGRANT_TIMEOUT_S, 1200 s); one SKIP line
# where this machine cannot boot VMs.
ci/vagrant-cluster.sh

echo
echo "all tests passed"
