#!/usr/bin/env bash
# Every VM: Debian packages, the shared cluster key, and the `beeline` binary at
# /usr/local/bin/beeline. Idempotent: packages already present are not touched, cargo
# rebuilds only what changed, the key is copied again (the same file every time).
#
# The binary: vagrant/bin/beeline from the host if there is one (built there on
# Debian 12 with `cargo build --release -p beeline --features dpdk`), otherwise built
# here, after installing Rust with rustup when no rustc >= 1.87 exists (needs internet).
set -euo pipefail
# shellcheck source=lib.sh
source "${BEELINE_SRC:-/vagrant}/vagrant/provision/lib.sh"
require_root
role="${BEELINE_ROLE:?BEELINE_ROLE is set by the Vagrantfile: meta or store}"

prebuilt="$BEELINE_SRC/vagrant/bin/beeline"
log "packages"
# What the node and the CLI need at run time (the self-built box has all of them already,
# so no mirror is needed); the build tools only when the binary is built here.
# DPDK's runtime libraries are only Recommends of the dpdk package: the EAL and ethdev the
# binary links, the PCI bus, the mempool ring and the virtio PMD it loads.
apt_install dpdk "${BEELINE_DPDK_RUNTIME[@]}" redis-tools pciutils python3 iputils-ping
if [[ ! -x "$prebuilt" ]]; then
    apt_install build-essential pkg-config clang llvm libclang-dev linux-libc-dev dpdk-dev libbpf-dev curl ca-certificates
fi

log "cluster key"
key_source="$BEELINE_SRC/vagrant/.cluster.key"
[[ -f "$key_source" ]] ||
    die "no $key_source: \`vagrant up\`/\`vagrant provision\` on the host creates it; run \`vagrant rsync\` if it exists there"
grep -Eqx '[0-9a-f]{64}' "$key_source" || die "$key_source must hold 64 hex digits"
install -d -m 0755 "$BEELINE_STATE_DIR"
install -m 0600 -o root -g root "$key_source" "$BEELINE_STATE_DIR/cluster.key"

log "beeline binary"
if [[ -x "$prebuilt" ]]; then
    log "using the host's $prebuilt"
    install -m 0755 "$prebuilt" /usr/local/bin/beeline
else
    ensure_rust
    features=()
    # Storage nodes serve through DPDK; the meta VM only needs the CLI.
    [[ "$role" == store ]] && features=(--features dpdk)
    export CARGO_TARGET_DIR=/var/cache/beeline-build CARGO_TERM_COLOR=never
    log "cargo build --release --locked -p beeline ${features[*]} (first build: several minutes)"
    (cd "$BEELINE_SRC" && cargo build --release --locked -p beeline "${features[@]}")
    install -m 0755 "$CARGO_TARGET_DIR/release/beeline" /usr/local/bin/beeline
fi
/usr/local/bin/beeline --version >/dev/null 2>&1 || /usr/local/bin/beeline --help >/dev/null ||
    die "/usr/local/bin/beeline does not run (a host-built binary must come from Debian 12: it links DPDK 22.11)"
log "beeline installed at /usr/local/bin/beeline"
