#!/usr/bin/env bash
# Decides how QEMU runs guests on this host: KVM when /dev/kvm is usable and the CPU
# offers hardware virtualisation (vmx or svm in /proc/cpuinfo), TCG software emulation
# otherwise. A /dev/kvm without vmx/svm is a paravirtual KVM (PVM, `kvm_pvm`): a stock
# Debian guest kernel cannot run under it, so it counts as no KVM.
#
#   accel.sh            prints kvm or tcg
#   accel.sh qemu-args  prints QEMU's arguments for it
#   accel.sh libvirt    prints vagrant-libvirt's driver for it (kvm or qemu)
set -euo pipefail

if [[ -r /dev/kvm && -w /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo && ! grep -qw kvm_pvm /proc/modules 2>/dev/null; then
    accel=kvm
else
    accel=tcg
fi
case "${1:-}" in
"") echo "$accel" ;;
qemu-args) if [[ $accel == kvm ]]; then echo "-accel kvm -cpu host"; else echo "-accel tcg,thread=multi -cpu max"; fi ;;
libvirt) if [[ $accel == kvm ]]; then echo kvm; else echo qemu; fi ;;
*)
    echo "usage: accel.sh [qemu-args|libvirt]" >&2
    exit 2
    ;;
esac
