#!/usr/bin/env bash
# Boots the box built by build.sh once, with plain QEMU (no libvirt, no Vagrant), and waits
# until its ssh server answers with Vagrant's insecure key: proof that the image, its kernel
# and initrd, the first-boot host key and the vagrant user work. Uses KVM when a guest can
# run under it, TCG otherwise (see accel.sh). Prints the boot time; leaves nothing behind.
#
#   vagrant/box/boot-check.sh [CACHE_DIR] [TIMEOUT_S]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${1:-${BEELINE_BOX_CACHE:-/var/cache/beeline-vagrant}}"
timeout_s="${2:-900}"
port="${BEELINE_BOOT_CHECK_PORT:-2299}"

command -v qemu-system-x86_64 >/dev/null || {
    echo "vagrant/box/boot-check.sh: qemu-system-x86_64 not found: apt-get install -t bookworm-backports qemu-system-x86" >&2
    exit 1
}
[[ -f $cache/beeline-bookworm.box ]] || {
    echo "vagrant/box/boot-check.sh: no box in $cache: run vagrant/box/build.sh first" >&2
    exit 1
}
insecure_key="$(find /usr/share/rubygems-integration /usr/lib/ruby /opt/vagrant -path '*/keys/vagrant' 2>/dev/null | head -n1 || true)"
[[ -n $insecure_key ]] || {
    echo "vagrant/box/boot-check.sh: Vagrant's insecure key not found: apt-get install vagrant" >&2
    exit 1
}

work="$(mktemp -d)"
qemu_pid=""
cleanup() {
    [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
tar -C "$work" -xzf "$cache/beeline-bookworm.box" box.img
qemu-img create -q -f qcow2 -b "$work/box.img" -F qcow2 "$work/vm.qcow2"
install -m 0600 "$insecure_key" "$work/key"

read -r -a accel < <("$here/accel.sh" qemu-args)
echo "booting the box with ${accel[*]} (console log: kept on failure)"
started_s=$SECONDS
qemu-system-x86_64 -machine q35 "${accel[@]}" -smp 1 -m 1024 -nographic -no-reboot \
    -kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" -append "root=/dev/vda rw console=ttyS0 panic=-1 net.ifnames=0" \
    -drive "file=$work/vm.qcow2,if=virtio" \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" -device virtio-net-pci,netdev=n0 \
    >"$work/console.log" 2>&1 &
qemu_pid=$!
ssh_options=(-q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 -i "$work/key" -p "$port")
while ! ssh "${ssh_options[@]}" vagrant@127.0.0.1 true 2>/dev/null; do
    if ! kill -0 "$qemu_pid" 2>/dev/null || ((SECONDS - started_s > timeout_s)); then
        echo "vagrant/box/boot-check.sh: no ssh after $((SECONDS - started_s)) s; the console's last lines:" >&2
        tail -n 20 "$work/console.log" >&2
        exit 1
    fi
    sleep 2
done
echo "ssh answered after $((SECONDS - started_s)) s: $(ssh "${ssh_options[@]}" vagrant@127.0.0.1 'uname -r; sudo -n true && echo sudo ok' | tr '\n' ' ')"
