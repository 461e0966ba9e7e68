#!/usr/bin/env bash
# Hands the storage VM's data NIC to DPDK: vfio-pci, behind the VM's emulated IOMMU. Installed as
# /usr/local/sbin/beeline-dpdk-bind and run by beeline-node.service before the node starts
# (ExecStartPre), so `systemctl restart beeline-node` works after a reboot too.
# Idempotent: a NIC already bound to vfio-pci is left as it is.
#
# Which NIC: the one carrying the data address (BEELINE_DPDK_IP in /etc/beeline/dpdk-nic.env,
# written by store.sh), found through sysfs while the kernel still owns it; once it is
# bound, the kernel has no interface for it and the recorded PCI address is used.
set -euo pipefail
# shellcheck source=lib.sh
source "${BEELINE_LIB:-/usr/local/lib/beeline/lib.sh}"
require_root
[[ -f "$BEELINE_NIC_RECORD" ]] || die "no $BEELINE_NIC_RECORD: run the store provisioning first (vagrant provision)"
# shellcheck source=/dev/null
source "$BEELINE_NIC_RECORD"
ip_address="${BEELINE_DPDK_IP:?missing in $BEELINE_NIC_RECORD}"
pci="${BEELINE_DPDK_PCI:?missing in $BEELINE_NIC_RECORD}"

iface="$(iface_by_ip "$ip_address")"
if [[ -n "$iface" ]]; then
    found="$(pci_of_iface "$iface")" || die "cannot find the PCI device of $iface in sysfs"
    [[ "$found" == "$pci" ]] ||
        die "$ip_address is on $iface ($found), but node.toml serves $pci: re-run the store provisioning (vagrant provision --provision-with store)"
fi
[[ -e "/sys/bus/pci/devices/$pci" ]] || die "no PCI device $pci (lspci -D lists the NICs)"

modprobe vfio-pci
[[ -e "/sys/bus/pci/devices/$pci/iommu_group" ]] ||
    die "$pci is in no IOMMU group: the VM needs q35 + intel-iommu and intel_iommu=on on its kernel command line (vagrant/README.md)"

driver="$(driver_of_pci "$pci")"
if [[ "$driver" == vfio-pci ]]; then
    log "$pci ($ip_address) already bound to vfio-pci"
    exit 0
fi
if [[ -n "$iface" ]]; then
    # dpdk-devbind.py refuses (and still exits 0) to touch an interface with a route;
    # take the address and the link down first.
    log "releasing $iface ($ip_address) from the kernel"
    ip addr flush dev "$iface"
    ip link set "$iface" down
fi
log "binding $pci (was ${driver:-unbound}) to vfio-pci"
dpdk-devbind.py -b vfio-pci "$pci"
driver="$(driver_of_pci "$pci")"
if [[ "$driver" != vfio-pci ]]; then
    dpdk-devbind.py --status-dev net >&2 || true
    die "$pci is bound to ${driver:-nothing}, not vfio-pci"
fi
log "$pci bound to vfio-pci, IOMMU group $(basename "$(readlink -f "/sys/bus/pci/devices/$pci/iommu_group")")"
