# Shared helpers for the Vagrant provisioning scripts (sourced, not run). Every script
# that sources this runs as root inside a VM, with the environment the Vagrantfile sets.
# shellcheck shell=bash

BEELINE_SRC="${BEELINE_SRC:-/vagrant}"
# shellcheck disable=SC2034 # used by the scripts that source this file
BEELINE_STATE_DIR=/etc/beeline
# shellcheck disable=SC2034
BEELINE_NIC_RECORD="$BEELINE_STATE_DIR/dpdk-nic.env"
# What a `--features dpdk` beeline needs of DPDK 22.11 at run time (box/build.sh installs
# the same list; the dpdk package only recommends them).
# shellcheck disable=SC2034
BEELINE_DPDK_RUNTIME=(librte-eal23 librte-ethdev23 librte-mbuf23 librte-mempool23 librte-mempool-ring23
    librte-bus-pci23 librte-net-virtio23)

log() { echo "[beeline-provision $(hostname)] $*"; }
die() {
    echo "[beeline-provision $(hostname)] ERROR: $*" >&2
    exit 1
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root (Vagrant's shell provisioner does)"
}

# Installs the Debian packages given that are not installed yet; apt runs only then.
apt_install() {
    local missing=() package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if ((${#missing[@]} > 0)); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# The interface that carries IPv4 address $1 (empty when none does).
iface_by_ip() {
    local ip="$1"
    ip -o -4 addr show | awk -v ip="$ip" '{ split($4, a, "/"); if (a[1] == ip) { print $2; exit } }'
}

# The PCI address (0000:00:06.0) of interface $1, from sysfs. A virtio NIC's netdev hangs
# off a virtio bus device (…/0000:00:06.0/virtio2), so walk up the resolved device path
# to the nearest component that is a PCI address.
pci_of_iface() {
    local iface="$1" path component
    [[ -e "/sys/class/net/$iface/device" ]] || return 1
    path="$(readlink -f "/sys/class/net/$iface/device")"
    while [[ "$path" != "/" && -n "$path" ]]; do
        component="$(basename "$path")"
        if [[ "$component" =~ ^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$ ]]; then
            echo "$component"
            return 0
        fi
        path="$(dirname "$path")"
    done
    return 1
}

# The kernel driver bound to PCI device $1 (empty when none is).
driver_of_pci() {
    local link="/sys/bus/pci/devices/$1/driver"
    if [[ -e "$link" ]]; then basename "$(readlink -f "$link")"; fi
}

# The Rust toolchain for building Beeline (>= 1.87; Debian 12's rustc 1.63 is too old):
# rustup's own installer from static.rust-lang.org, only when no new-enough cargo exists.
# Needs the VM to reach the internet (Vagrant's NAT interface gives it that).
ensure_rust() {
    export PATH="/root/.cargo/bin:$PATH"
    local version=""
    if command -v rustc >/dev/null 2>&1; then
        version="$(rustc --version | awk '{print $2}')"
    fi
    if [[ -n "$version" ]] && printf '1.87.0\n%s\n' "$version" | sort -V -C; then
        log "rustc $version found"
        return 0
    fi
    log "installing Rust with rustup (rustc ${version:-absent}; need >= 1.87)"
    local installer
    installer="$(mktemp /tmp/rustup-init.XXXXXX)"
    curl --proto '=https' --tlsv1.2 -sSfL -o "$installer" \
        https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init ||
        die "cannot download rustup-init from static.rust-lang.org: the VM needs internet access, or build beeline on the host and put it at vagrant/bin/beeline (see vagrant/README.md)"
    chmod +x "$installer"
    "$installer" -y --profile minimal --default-toolchain stable --no-modify-path
    rm -f "$installer"
    rustc --version
}
