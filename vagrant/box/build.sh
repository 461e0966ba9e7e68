#!/usr/bin/env bash
# Builds a libvirt Vagrant box of Debian 12 from Debian's archive alone (no Vagrant Cloud):
# debootstrap (minbase) plus a kernel, DPDK, Redis, an ssh server and Vagrant's insecure
# key, written with `mkfs.ext4 -d` into a raw image and converted to qcow2. The image has
# no bootloader: the Vagrantfile boots the kernel and initrd this script leaves beside the
# box (libvirt's `kernel`/`initrd`/`cmd_line`).
#
#   vagrant/box/build.sh [CACHE_DIR]     # default /var/cache/beeline-vagrant
#
# Idempotent and cached: a box whose recipe (this script) has not changed is not rebuilt.
# Leaves CACHE_DIR/beeline-bookworm.box, CACHE_DIR/vmlinuz, CACHE_DIR/initrd.img and
# CACHE_DIR/recipe.sha256. Needs root (debootstrap, chroot) and the Debian packages
# debootstrap, e2fsprogs and qemu-utils.
set -euo pipefail

cache="${1:-${BEELINE_BOX_CACHE:-/var/cache/beeline-vagrant}}"
mirror="${BEELINE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
image_size_mib=4096
packages=(
    linux-image-amd64 systemd-sysv udev kmod ifupdown isc-dhcp-client iproute2 iputils-ping
    openssh-server sudo rsync ca-certificates netbase procps pciutils python3
    dpdk redis-server
    # What a `--features dpdk` beeline loads (the dpdk package only recommends them); the
    # same list as BEELINE_DPDK_RUNTIME in provision/lib.sh.
    librte-eal23 librte-ethdev23 librte-mbuf23 librte-mempool23 librte-mempool-ring23
    librte-bus-pci23 librte-net-virtio23
)

for tool in debootstrap mkfs.ext4 qemu-img; do
    command -v "$tool" >/dev/null || {
        echo "vagrant/box/build.sh: $tool not found: apt-get install debootstrap e2fsprogs qemu-utils" >&2
        exit 1
    }
done
[[ $(id -u) == 0 ]] || {
    echo "vagrant/box/build.sh: needs root (debootstrap and chroot): run it with sudo" >&2
    exit 1
}
insecure_key="$(find /usr/share/rubygems-integration /usr/lib/ruby /opt/vagrant -path '*/keys/vagrant.pub' 2>/dev/null | head -n1 || true)"
[[ -n $insecure_key ]] || {
    echo "vagrant/box/build.sh: Vagrant's insecure key (keys/vagrant.pub) not found: apt-get install vagrant" >&2
    exit 1
}

mkdir -p "$cache"
recipe="$( (cat "$0"; printf '%s\n' "${packages[@]}" "$mirror") | sha256sum | cut -d' ' -f1)"
if [[ -f $cache/beeline-bookworm.box && $(cat "$cache/recipe.sha256" 2>/dev/null) == "$recipe" ]]; then
    echo "box up to date: $cache/beeline-bookworm.box"
    exit 0
fi

work="$(mktemp -d "$cache/build.XXXXXX")"
cleanup() {
    for mount in proc sys dev/pts dev; do
        mountpoint -q "$work/root/$mount" && umount -l "$work/root/$mount"
    done
    rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"

started_s=$SECONDS
echo "debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" bookworm "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    echo "vagrant/box/build.sh: debootstrap failed (log above)" >&2
    exit 1
}

echo "configuring the guest"
echo "beeline-box" >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 beeline-box\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 errors=remount-ro 0 1\n' >"$root/etc/fstab"
# Vagrant's management NIC asks DHCP; Vagrant itself writes the private networks. NICs are
# ethN: the kernel command line carries net.ifnames=0, as Vagrant's Debian boxes do.
cat >"$root/etc/network/interfaces" <<'EOF'
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
allow-hotplug eth0
iface eth0 inet dhcp
EOF
chroot "$root" useradd --create-home --shell /bin/bash --groups sudo vagrant
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
install -d -m 0700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$insecure_key" "$root/home/vagrant/.ssh/authorized_keys"
printf 'UseDNS no\nHostKey /etc/ssh/ssh_host_ed25519_key\n' >"$root/etc/ssh/sshd_config.d/vagrant.conf"
# Every VM made from the box must get its own ssh host key and machine id. Only ed25519:
# under TCG emulation an RSA key takes minutes to generate.
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate the ssh host key on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable ssh-host-keys.service >/dev/null 2>&1
: >"$root/etc/machine-id"
# Redis and DPDK are started by the provisioning, on the VMs whose role needs them.
chroot "$root" systemctl disable redis-server.service >/dev/null 2>&1 || true
chroot "$root" apt-get clean
cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"

echo "writing the image"
truncate -s "${image_size_mib}M" "$work/box.raw"
mkfs.ext4 -q -F -L beeline-root -d "$root" "$work/box.raw"
qemu-img convert -c -O qcow2 "$work/box.raw" "$work/box.img"
cat >"$work/metadata.json" <<EOF
{"provider": "libvirt", "format": "qcow2", "virtual_size": $((image_size_mib / 1024))}
EOF
tar -C "$work" -czf "$work/beeline-bookworm.box" box.img metadata.json
mv "$work/vmlinuz" "$work/initrd.img" "$cache/"
mv "$work/beeline-bookworm.box" "$cache/beeline-bookworm.box"
echo "$recipe" >"$cache/recipe.sha256"
echo "built $cache/beeline-bookworm.box ($(du -h "$cache/beeline-bookworm.box" | cut -f1)) in $((SECONDS - started_s)) s"
