#!/usr/bin/env bash
# A storage VM: hugepages, vfio-pci (behind the VM's emulated IOMMU) for the data NIC, /etc/beeline/node.toml
# for the DPDK backend, and beeline-node.service. Binding the NIC and starting the node is
# store-start.sh's job (every `vagrant up`). Idempotent: every file is rewritten whole.
set -euo pipefail
# shellcheck source=lib.sh
source "${BEELINE_SRC:-/vagrant}/vagrant/provision/lib.sh"
require_root
data_ip="${BEELINE_DATA_IP:?}"
meta_ip="${BEELINE_META_IP:?}"
hugepages="${BEELINE_HUGEPAGES:-256}"

log "hugepages: $hugepages x 2 MiB"
echo "vm.nr_hugepages = $hugepages" >/etc/sysctl.d/80-beeline-hugepages.conf
sysctl -q -w "vm.nr_hugepages=$hugepages"
reserved="$(awk '/^HugePages_Total:/ {print $2}' /proc/meminfo)"
if ((reserved < hugepages / 2)); then
    die "only $reserved of $hugepages hugepages could be reserved (memory fragmented?): reboot the VM (vagrant reload) or lower BEELINE_VAGRANT_HUGEPAGES"
elif ((reserved < hugepages)); then
    log "warning: only $reserved of $hugepages hugepages reserved; enough for the node's 64 MiB arena"
fi
mountpoint -q /dev/hugepages || die "/dev/hugepages is not mounted (systemd's dev-hugepages.mount)"

log "vfio-pci behind the IOMMU"
# Debian's kernel has no vfio no-IOMMU mode (CONFIG_VFIO_NOIOMMU), so vfio-pci needs the
# VM's emulated IOMMU: q35 + intel-iommu (the Vagrantfile) and intel_iommu=on on the
# kernel command line (the self-built box gets it from the Vagrantfile's cmd_line; a box
# with its own bootloader gets it from GRUB here, and needs one reboot).
rm -f /etc/modprobe.d/beeline-vfio-noiommu.conf
echo "vfio-pci" >/etc/modules-load.d/beeline-vfio-pci.conf
if [[ -z "$(ls -A /sys/kernel/iommu_groups 2>/dev/null)" ]]; then
    if [[ -f /etc/default/grub ]] && command -v update-grub >/dev/null; then
        mkdir -p /etc/default/grub.d
        # shellcheck disable=SC2016 # GRUB expands it
        echo 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX intel_iommu=on iommu=pt"' >/etc/default/grub.d/beeline-iommu.cfg
        update-grub
        die "no IOMMU in this VM yet: intel_iommu=on is now in GRUB's command line; run \`vagrant reload $(hostname)\` once"
    fi
    die "no IOMMU in this VM (/sys/kernel/iommu_groups is empty): the VM needs q35 with intel-iommu and intel_iommu=on iommu=pt on its kernel command line (see vagrant/README.md)"
fi
log "$(find /sys/kernel/iommu_groups -mindepth 1 -maxdepth 1 | wc -l) IOMMU groups"

log "finding the data NIC ($data_ip)"
iface="$(iface_by_ip "$data_ip")"
if [[ -n "$iface" ]]; then
    pci="$(pci_of_iface "$iface")" || die "cannot find the PCI device of $iface in sysfs"
    mac="$(cat "/sys/class/net/$iface/address")"
    log "$data_ip is on $iface, PCI $pci, MAC $mac"
elif [[ -f "$BEELINE_NIC_RECORD" ]]; then
    # Provisioned before: the NIC is DPDK's now and has no kernel interface.
    # shellcheck source=/dev/null
    source "$BEELINE_NIC_RECORD"
    [[ "${BEELINE_DPDK_IP:-}" == "$data_ip" ]] || die "$BEELINE_NIC_RECORD is for ${BEELINE_DPDK_IP:-?}, not $data_ip"
    pci="$BEELINE_DPDK_PCI" iface="$BEELINE_DPDK_IFACE" mac="$BEELINE_DPDK_MAC"
    [[ "$(driver_of_pci "$pci")" == vfio-pci ]] ||
        die "no interface carries $data_ip and the recorded $pci is not bound to vfio-pci: vagrant reload"
    log "$data_ip: recorded $pci (already bound to vfio-pci)"
else
    ip -o -4 addr show >&2
    die "no interface carries $data_ip: check the Vagrantfile's data network (vagrant reload)"
fi
install -d -m 0755 "$BEELINE_STATE_DIR" /usr/local/lib/beeline
cat >"$BEELINE_NIC_RECORD" <<EOF
# Written by vagrant/provision/store.sh: the data NIC handed to DPDK.
BEELINE_DPDK_IP=$data_ip
BEELINE_DPDK_PCI=$pci
BEELINE_DPDK_IFACE=$iface
BEELINE_DPDK_MAC=$mac
EOF
install -m 0644 "$BEELINE_SRC/vagrant/provision/lib.sh" /usr/local/lib/beeline/lib.sh
install -m 0755 "$BEELINE_SRC/vagrant/provision/dpdk-bind.sh" /usr/local/sbin/beeline-dpdk-bind

log "/etc/beeline/node.toml"
install -d -m 0750 /var/lib/beeline
cat >"$BEELINE_STATE_DIR/node.toml" <<EOF
# Written by vagrant/provision/store.sh; re-provisioning rewrites it.
# The storage protocol on the data NIC through DPDK: the kernel no longer owns that NIC,
# so the node answers ARP and ping for $data_ip itself.
listen = "$data_ip:7777"
advertise = "$data_ip:7777"
backend = "dpdk"
dpdk_devices = ["$pci"]
dpdk_cores = "0"
dpdk_file_prefix = "beeline"
# As hw-configs/virtio.toml: core 0 (a 1-vCPU VM has no other), physical addresses as
# IOVAs, and QEMU's and VirtualBox's virtqueues hold 256 descriptors.
dpdk_eal_args = ["--iova-mode=pa"]
rx_ring_size = 256
tx_ring_size = 256
mtu = 1500
queues = 1
hugepages = "require"
arena_frames = 16384
frame_bytes = 4096
data_dir = "/var/lib/beeline"
key_file = "/etc/beeline/cluster.key"
allow = ["${BEELINE_DATA_PREFIX:-10.90.0.0/24}"]
# Redis and the metrics endpoint go through the kernel on the management network
# (this VM's kernel has no address on the data network any more).
metadata = "redis://$meta_ip:6379"
metrics_listen = "0.0.0.0:9777"
# Background repair runs a client on the kernel stack, which cannot reach the data
# network from here: run \`beeline cluster repair\` on the meta VM instead.
repair_interval_ms = 0
EOF

log "beeline-node.service"
cat >/etc/systemd/system/beeline-node.service <<'EOF'
# Written by vagrant/provision/store.sh. Started by the Vagrant "start" provisioner on
# every `vagrant up`, not enabled at boot (see vagrant/README.md, "After a reboot").
[Unit]
Description=Beeline storage node (DPDK on the virtio data NIC)
Documentation=file:///vagrant/vagrant/README.md
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStartPre=/usr/local/sbin/beeline-dpdk-bind
ExecStart=/usr/local/bin/beeline node run --config /etc/beeline/node.toml
Environment=RUST_LOG=info
LimitMEMLOCK=infinity
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
log "store provisioned: $data_ip on $pci; store-start.sh binds it and starts the node"
