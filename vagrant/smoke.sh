#!/usr/bin/env bash
# Smoke test of the Vagrant cluster, run on the host after `vagrant up`:
#
#   vagrant/smoke.sh
#
# From the meta VM, with the `beeline` CLI on the kernel stack: waits for both storage
# nodes to hold a lease, pings them (ICMP, answered by the DPDK nodes themselves), shows
# their status, then puts two files (two replicas of every chunk), tags them, finds them
# by tag, gets them back byte-identical and removes them. Exit code non-zero on any
# failure. Idempotent: file names are unique per run and removed at the end.
set -euo pipefail

if [[ "${1:-}" != --in-vm ]]; then
    cd "$(dirname "$0")"
    command -v vagrant >/dev/null || { echo "smoke.sh: vagrant is not installed" >&2; exit 1; }
    exec vagrant ssh meta -c "bash /vagrant/vagrant/smoke.sh --in-vm"
fi

# --- inside the meta VM from here on
export BEELINE_METADATA="${BEELINE_METADATA:-redis://10.77.1.10:6379}"
read -r -a stores <<<"${BEELINE_SMOKE_NODES:-10.77.0.11 10.77.0.12}"
step() { echo; echo "--- $*"; }
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }
work="$(mktemp -d /tmp/beeline-smoke.XXXXXX)"
trap 'rm -rf "$work"' EXIT
command -v beeline >/dev/null || fail "no beeline on the meta VM: vagrant provision meta"

step "metadata at $BEELINE_METADATA: waiting for ${#stores[@]} live storage nodes"
live=0
for _ in $(seq 1 120); do
    live="$(beeline cluster status 2>/dev/null | sed -n 's/^nodes: *[0-9]* (\([0-9]*\) live)/\1/p')"
    [[ "${live:-0}" -ge "${#stores[@]}" ]] && break
    sleep 1
done
beeline cluster status
[[ "${live:-0}" -ge "${#stores[@]}" ]] ||
    fail "$live of ${#stores[@]} nodes live after 120 s: vagrant ssh storeN -c 'sudo journalctl -u beeline-node'"

for store in "${stores[@]}"; do
    step "node $store"
    ping -c 2 -W 2 "$store" >/dev/null || fail "$store does not answer ping (the DPDK node answers ARP and ICMP itself)"
    echo "answers ping"
    beeline node ping --node "$store:7777"
    beeline node status --node "$store:7777"
done

step "put, tag, search, get"
run_id="smoke-$(date +%s)-$$"
cp /vagrant/README.md "$work/readme.md"
head -c 10000000 /dev/urandom >"$work/random.bin"
for file in readme.md random.bin; do
    beeline put "$work/$file" --as "$run_id-$file"
done
beeline tag "$run_id-readme.md" "$run_id" docs
beeline tag "$run_id-random.bin" "$run_id" binary
found="$(beeline search "$run_id")"
echo "files tagged $run_id:"
echo "$found"
for file in readme.md random.bin; do
    grep -q "$run_id-$file" <<<"$found" || fail "search $run_id does not list $run_id-$file"
done
beeline search "$run_id" docs | grep -q "$run_id-readme.md" || fail "search $run_id docs misses the readme"
if beeline search "$run_id" docs | grep -q "$run_id-random.bin"; then
    fail "search $run_id docs lists the binary file"
fi
for file in readme.md random.bin; do
    beeline get "$run_id-$file" -o "$work/back-$file" >/dev/null
    cmp "$work/$file" "$work/back-$file" || fail "$run_id-$file came back different"
    echo "match: $run_id-$file"
done
beeline stat "$run_id-random.bin"
for file in readme.md random.bin; do
    beeline rm "$run_id-$file"
done

echo
echo "smoke passed: ${#stores[@]} DPDK nodes live, files stored, tagged, found and returned byte-identical"
