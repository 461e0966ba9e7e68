#!/usr/bin/env bash
# Smoke test of the Vagrant cluster, run on the host after `vagrant up`:
#
#   vagrant/smoke.sh
#
# 1. From the meta VM (the client, on the data network through its kernel): waits for both
#    storage nodes to hold a lease; pings each node's data address and checks that the MAC
#    that answered ARP is the MAC of that VM's vfio-bound NIC (the VM's kernel no longer
#    has that NIC, so only the DPDK node can have answered); sets two replicas; puts files,
#    tags them, finds them by tag and gets them back byte-identical.
# 2. On the host: kills store2 (`virsh destroy` under libvirt, `vagrant halt --force`
#    otherwise): no shutdown, the VM just stops.
# 3. From meta again: reads every file back from the surviving node and compares it.
# Prints every command it runs (set -x style, "+ ..."). Exit code non-zero on any failure.
# Destructive: store2 stays down (`vagrant up store2` brings it back).
set -euo pipefail

if [[ "${1:-}" != --in-vm ]]; then
    cd "$(dirname "$0")"
    command -v vagrant >/dev/null || { echo "smoke.sh: vagrant is not installed" >&2; exit 1; }
    started_s=$SECONDS
    run_id="smoke-$(date +%s)-$$"
    victim="${BEELINE_SMOKE_KILL:-store2}"
    macs=""
    for store in store1 store2; do
        # The data NIC's MAC as the store provisioning recorded it before binding it.
        mac="$(vagrant ssh "$store" -c 'sed -n "s/^BEELINE_DPDK_MAC=//p" /etc/beeline/dpdk-nic.env' 2>/dev/null | tr -d '\r')"
        [[ -n "$mac" ]] || { echo "smoke.sh: no recorded data NIC on $store: vagrant provision $store" >&2; exit 1; }
        macs+="$mac "
    done
    echo "=== phase 1 (meta): ARP and ping from the DPDK ports, put and get with two replicas"
    vagrant ssh meta -c "bash /vagrant/vagrant/smoke.sh --in-vm put $run_id '$macs'"

    echo
    echo "=== phase 2 (host): killing $victim"
    domain="$(cat "${VAGRANT_DOTFILE_PATH:-.vagrant}/machines/$victim/libvirt/id" 2>/dev/null || true)"
    if [[ -n "$domain" ]] && command -v virsh >/dev/null; then
        echo "+ virsh destroy $domain"
        virsh -c qemu:///system destroy "$domain"
    else
        echo "+ vagrant halt --force $victim"
        vagrant halt --force "$victim"
    fi

    echo
    echo "=== phase 3 (meta): every file back with $victim dead"
    vagrant ssh meta -c "bash /vagrant/vagrant/smoke.sh --in-vm get $run_id"
    echo
    echo "smoke passed in $((SECONDS - started_s)) s: ARP and ping answered by both DPDK nodes, files stored with two replicas, read back byte-identical before and after killing $victim"
    exit 0
fi

# --- inside the meta VM from here on: smoke.sh --in-vm put|get RUN_ID [MACS]
phase="$2" run_id="$3"
export BEELINE_METADATA="${BEELINE_METADATA:-redis://10.90.1.10:6379}"
read -r -a stores <<<"${BEELINE_SMOKE_NODES:-10.90.0.11 10.90.0.12}"
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
run() { echo "+ $*"; "$@"; }
command -v beeline >/dev/null || fail "no beeline on the meta VM: vagrant provision meta"
keep="/var/tmp/beeline-$run_id" # the originals, kept for phase 3's comparison
files=(readme.md random.bin small-1.txt small-2.txt small-3.txt)

if [[ "$phase" == put ]]; then
    read -r -a macs <<<"$4"
    echo "metadata at $BEELINE_METADATA: waiting (120 s at most) for ${#stores[@]} live storage nodes"
    live=0
    for _ in $(seq 1 120); do
        live="$(beeline cluster status 2>/dev/null | sed -n 's/^nodes: *[0-9]* (\([0-9]*\) live)/\1/p')"
        [[ "${live:-0}" -ge "${#stores[@]}" ]] && break
        sleep 1
    done
    run beeline cluster status
    [[ "${live:-0}" -ge "${#stores[@]}" ]] ||
        fail "$live of ${#stores[@]} nodes live after 120 s: vagrant ssh storeN -c 'sudo journalctl -u beeline-node'"

    for i in "${!stores[@]}"; do
        store="${stores[$i]}" want="${macs[$i]}"
        echo
        echo "--- node $store (its vfio-bound NIC: $want)"
        run sudo ip neigh flush to "$store"
        run ping -c 3 -W 2 "$store" || fail "$store does not answer ping (the DPDK node answers ARP and ICMP itself)"
        got="$(ip neigh show to "$store" | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }')"
        echo "ARP: $store is at ${got:-?}"
        [[ "$got" == "$want" ]] || fail "$store answered ARP from ${got:-nothing}, not from its DPDK NIC $want"
        run beeline node ping --node "$store:7777"
        run beeline node status --node "$store:7777"
    done

    echo
    echo "--- put, tag, search, get (run $run_id)"
    run beeline cluster configure --replication-factor 2
    mkdir -p "$keep"
    cp /vagrant/README.md "$keep/readme.md"
    head -c 3000000 /dev/urandom >"$keep/random.bin"
    for i in 1 2 3; do echo "small file $i of $run_id" >"$keep/small-$i.txt"; done
    for file in "${files[@]}"; do
        run beeline put "$keep/$file" --as "$run_id/$file"
    done
    run beeline tag "$run_id/readme.md" "$run_id" docs
    run beeline tag "$run_id/random.bin" "$run_id" binary
    found="$(beeline search "$run_id")"
    echo "files tagged $run_id:"
    echo "$found"
    for file in readme.md random.bin; do
        grep -q "$run_id/$file" <<<"$found" || fail "search $run_id does not list $run_id/$file"
    done
    for file in "${files[@]}"; do
        # Every chunk line ("  chunk N: NODE NODE") must name two different nodes.
        stat_out="$(beeline stat "$run_id/$file")"
        [[ "$file" == random.bin ]] && { echo "+ beeline stat $run_id/$file"; echo "$stat_out"; }
        chunks="$(grep -c '^ *chunk [0-9]*:' <<<"$stat_out" || true)"
        spread="$(awk '/^ *chunk [0-9]+:/ { if ($3 != $4 && $4 != "") n++ } END { print n + 0 }' <<<"$stat_out")"
        ((chunks > 0 && spread == chunks)) || fail "$run_id/$file: $spread of $chunks chunks have replicas on two nodes"
    done
    echo "every chunk of the ${#files[@]} files has replicas on two nodes"
    work="$(mktemp -d)"
    for file in "${files[@]}"; do
        run beeline get "$run_id/$file" -o "$work/$file"
        cmp "$keep/$file" "$work/$file" || fail "$run_id/$file came back different"
        echo "match: $run_id/$file"
    done
    rm -rf "$work"
    exit 0
fi

[[ "$phase" == get ]] || fail "unknown phase $phase"
work="$(mktemp -d)"
for file in "${files[@]}"; do
    run beeline get "$run_id/$file" -o "$work/$file" || fail "cannot read $run_id/$file back with a storage node dead"
    cmp "$keep/$file" "$work/$file" || fail "$run_id/$file came back different"
    echo "match: $run_id/$file"
done
run beeline cluster status || true
rm -rf "$work" "$keep"
