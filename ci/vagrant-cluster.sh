#!/usr/bin/env bash
# Boots the Vagrant cluster (vagrant/) under libvirt, runs vagrant/smoke.sh against it and
# destroys everything again, as root:
#
#   ci/vagrant-cluster.sh            # BEELINE_VAGRANT_TIMEOUT_S=1200 bounds the whole run
#
# 1. Installs what it needs (idempotent): libvirt, Vagrant with vagrant-libvirt, the box
#    builder's tools, and qemu-system-x86 from bookworm-backports (Debian 12's own QEMU
#    conflicts with the backports qemu-utils these machines carry); starts virtlogd and
#    libvirtd when they are not running (no systemd here) and stops what it started.
# 2. Builds the box from Debian's archive (vagrant/box/build.sh; cached in
#    /var/cache/beeline-vagrant, rebuilt only when its recipe changes) and beeline with the
#    dpdk feature on the host (the VMs never compile anything).
# 3. `vagrant up` (three VMs, one vCPU each; KVM or TCG as vagrant/box/accel.sh decides),
#    then vagrant/smoke.sh.
# 4. Always, also on failure or timeout: destroys the VMs, the libvirt networks, the storage
#    pool and its volumes, Vagrant's state, then checks with virsh that none is left.
# Prints one SKIP line and exits 0 where this machine cannot boot VMs at all.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
timeout_s="${BEELINE_VAGRANT_TIMEOUT_S:-1200}"
prefix="beeline-ci-"
pool=beeline-ci
pool_dir=/var/lib/libvirt/beeline-ci
networks=(beeline-vagrant beeline-mgmt beeline-data)
machines=(meta store1 store2)
say() { echo "[vagrant-cluster $(date -u +%H:%M:%S)] $*"; }
skip() {
    echo "SKIP vagrant cluster (ci/vagrant-cluster.sh): $*"
    exit 0
}

# --- can this machine boot VMs at all?
[[ $(id -u) -eq 0 ]] || skip "needs root (libvirt's system instance, the box build)"
[[ $(uname -m) == x86_64 ]] || skip "the box and the cluster are x86_64; this is $(uname -m)"
grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release || skip "the installation steps are Debian 12's; this is $(. /etc/os-release && echo "$PRETTY_NAME")"
avail_kib="$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)"
((avail_kib > 5 * 1024 * 1024)) || skip "$((avail_kib / 1024)) MiB of memory available; the three VMs need 4 GiB and room"

virsh_() { virsh -c qemu:///system "$@"; }
work=""

# Everything the run made, whatever state it reached; safe to run twice.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    say "clean-up (exit code so far $rc)"
    if [[ -n "$work" && -d "$work" ]]; then
        (cd vagrant && timeout 180 vagrant destroy -f >/dev/null 2>&1) || say "vagrant destroy failed; removing the domains with virsh"
    fi
    if command -v virsh >/dev/null && virsh_ version >/dev/null 2>&1; then
        local domain network volume
        for domain in "${machines[@]/#/$prefix}"; do
            if virsh_ dominfo "$domain" >/dev/null 2>&1; then
                virsh_ destroy "$domain" >/dev/null 2>&1 || true
                virsh_ undefine "$domain" --nvram >/dev/null 2>&1 || virsh_ undefine "$domain" >/dev/null 2>&1 || true
            fi
        done
        for network in "${networks[@]}"; do
            if virsh_ net-info "$network" >/dev/null 2>&1; then
                virsh_ net-destroy "$network" >/dev/null 2>&1 || true
                virsh_ net-undefine "$network" >/dev/null 2>&1 || true
            fi
        done
        if virsh_ pool-info "$pool" >/dev/null 2>&1; then
            virsh_ pool-refresh "$pool" >/dev/null 2>&1 || true
            while read -r volume; do
                [[ -n "$volume" ]] && virsh_ vol-delete --pool "$pool" "$volume" >/dev/null 2>&1
            done < <(virsh_ vol-list --pool "$pool" 2>/dev/null | awk 'NR > 2 && NF { print $1 }')
            virsh_ pool-destroy "$pool" >/dev/null 2>&1 || true
            virsh_ pool-undefine "$pool" >/dev/null 2>&1 || true
        fi
        rmdir "$pool_dir" 2>/dev/null || true

        # What is left: nothing of ours may be.
        local left=()
        for domain in "${machines[@]/#/$prefix}"; do
            virsh_ list --all --name | grep -qx "$domain" && left+=("domain $domain")
        done
        for network in "${networks[@]}"; do
            virsh_ net-list --all --name | grep -qx "$network" && left+=("network $network")
        done
        virsh_ pool-list --all --name | grep -qx "$pool" && left+=("pool $pool: $(virsh_ vol-list --pool "$pool" | awk 'NR > 2 && NF { print $1 }' | tr '\n' ' ')")
        [[ -e "$pool_dir" ]] && left+=("directory $pool_dir")
        echo "+ virsh list --all"; virsh_ list --all
        echo "+ virsh net-list --all"; virsh_ net-list --all
        echo "+ virsh pool-list --all"; virsh_ pool-list --all
        if ((${#left[@]} > 0)); then
            say "LEFT BEHIND: ${left[*]}"
            rc=1
        else
            say "nothing left behind: no $prefix* domain, none of the networks ${networks[*]}, no pool $pool (the box stays cached in /var/cache/beeline-vagrant)"
        fi
    fi
    rm -f "$repo/vagrant/bin/beeline"
    rmdir "$repo/vagrant/bin" 2>/dev/null || true
    [[ -n "$work" && -f "$work/made-key" ]] && rm -f "$repo/vagrant/.cluster.key"
    # The daemons this run started (their pid files are libvirt's defaults), in reverse.
    # Waits (10 s at most) until each is gone: a run right after this one would otherwise
    # find the old daemon still exiting, not start its own, and get no answer.
    local daemon pid
    for daemon in libvirtd virtlogd; do
        if [[ -f "$work/started-$daemon" && -f "/run/$daemon.pid" ]]; then
            pid="$(cat "/run/$daemon.pid")"
            if kill "$pid" 2>/dev/null; then
                for _ in $(seq 1 100); do
                    kill -0 "$pid" 2>/dev/null || break
                    sleep 0.1
                done
                if kill -0 "$pid" 2>/dev/null; then
                    say "$daemon (pid $pid) did not exit within 10 s of SIGTERM"
                else
                    say "stopped $daemon (this run started it)"
                fi
            fi
        fi
    done
    [[ -n "$work" ]] && rm -rf "$work"
    exit "$rc"
}

if [[ "${1:-}" != --inner ]]; then
    # The outer run: the inner one under a hard timeout, then the clean-up, which runs
    # however the inner one ended (failure, timeout, signal).
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    say "bounded to $timeout_s s (BEELINE_VAGRANT_TIMEOUT_S)"
    work="$(mktemp -d /tmp/beeline-vagrant-ci.XXXXXX)"
    export BEELINE_CI_WORK="$work"
    # Vagrant's box store and machine state in $work; VMs named beeline-ci-*, disks in a
    # pool of their own: the clean-up removes exactly these.
    export VAGRANT_HOME="$work/home" VAGRANT_DOTFILE_PATH="$work/dot" VAGRANT_CHECKPOINT_DISABLE=1
    export BEELINE_VAGRANT_POOL="$pool" BEELINE_VAGRANT_PREFIX="$prefix" VAGRANT_DEFAULT_PROVIDER=libvirt
    # The cluster key `vagrant up` writes goes again afterwards, unless it was there before.
    [[ -f vagrant/.cluster.key ]] || touch "$work/made-key"
    set +e
    timeout -k 20 "$timeout_s" "$0" --inner
    rc=$?
    set -e
    ((rc == 124 || rc == 137)) && say "FAILED: the run did not finish in $timeout_s s"
    if [[ -f "$work/skip" ]]; then
        cat "$work/skip"
        rc=0
    fi
    exit "$rc"
fi

# --- the inner run, under the timeout
work="${BEELINE_CI_WORK:?set by the outer run}"
stamp() { say "$* (at $((SECONDS)) s)"; }
export DEBIAN_FRONTEND=noninteractive

stamp "packages"
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/beeline-backports.list
    apt-get update -qq
fi
need=()
for package in vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base debootstrap e2fsprogs qemu-utils rsync; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || need+=("$package")
done
if ! dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null | grep -q bpo; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils
fi
if ((${#need[@]} > 0)); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

stamp "libvirt daemons"
for daemon in virtlogd libvirtd; do
    if ! pgrep -x "$daemon" >/dev/null; then
        "$daemon" -d
        touch "$work/started-$daemon"
        echo "started $daemon"
    fi
done
for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
done
virsh -c qemu:///system version >/dev/null || { echo "libvirtd does not answer" >&2; exit 1; }
accel="$(vagrant/box/accel.sh)"
if [[ $accel == tcg ]] && ! virsh -c qemu:///system domcapabilities --virttype qemu --machine q35 >/dev/null 2>&1; then
    echo "SKIP vagrant cluster (ci/vagrant-cluster.sh): no KVM for a guest and libvirt offers no QEMU (TCG) q35 machine" >"$work/skip"
    exit 0
fi
echo "guests run under $accel (vagrant/box/accel.sh)"

if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "no cargo: install Rust >= 1.87 with rustup (ci/setup.sh says how)" >&2; exit 1; }

stamp "box"
vagrant/box/build.sh
stamp "beeline (host build, dpdk feature)"
cargo build --locked -p beeline --features dpdk --quiet
mkdir -p vagrant/bin
strip -o vagrant/bin/beeline target/debug/beeline

stamp "libvirt pool $pool and Vagrant's state in $work"
mkdir -p "$pool_dir"
virsh -c qemu:///system pool-define-as "$pool" dir --target "$pool_dir" >/dev/null
virsh -c qemu:///system pool-start "$pool" >/dev/null
vagrant box add --name beeline/bookworm /var/cache/beeline-vagrant/beeline-bookworm.box >/dev/null

cd vagrant
stamp "vagrant up (${machines[*]})"
up_s=$SECONDS
# Without the box upload's progress meter (a thousand updates on one line).
vagrant up --provider libvirt 2>&1 | sed -E 's/(\x1b\[K)?Progress: [0-9]+%( \([^)]*\))?//g'
stamp "cluster up in $((SECONDS - up_s)) s"
smoke_s=$SECONDS
./smoke.sh
stamp "smoke test passed in $((SECONDS - smoke_s)) s"
