#!/usr/bin/env bash
# The main job: builds Beeline, starts a small cluster (a real redis-server as the
# metadata engine and three storage nodes), stores files with two replicas each, tags them
# (a `beeline tagger run` adds automatic tags by content) and finds them through the
# file-tag graph, serves the web UI (its address is printed), gets them back and shows they match, then kills a node and shows that every
# file still comes back and that repair restores the replicas. Idempotent: everything
# lives in a fresh temporary directory that is removed at the end, and every process
# started here is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/setup.sh

# The third node runs on DPDK when it can (root, DPDK installed by ci/setup.sh, hugepages):
# a net_virtio_user port behind beeline-dpdk-forward, which bridges its vhost-user socket
# to a tap, the way a VM's virtio NIC reaches the network. BEELINE_DEMO_DPDK=0 keeps all
# three nodes on udp.
dpdk="${BEELINE_DEMO_DPDK:-1}"
if [[ $dpdk == 1 && ( $(id -u) -ne 0 || ! -d /sys/kernel/mm/hugepages ) ]]; then
    echo "--- node 3 runs on udp: the DPDK node needs root and hugepages"
    dpdk=0
fi
if [[ $dpdk == 1 ]]; then
    cargo build --release --locked -p beeline --features dpdk
else
    cargo build --release --locked -p beeline
fi
beeline="$PWD/target/release/beeline"
work="$(mktemp -d /tmp/beeline-demo.XXXXXX)"
redis_port="${BEELINE_DEMO_REDIS_PORT:-6479}"
export BEELINE_METADATA="redis://127.0.0.1:$redis_port" BEELINE_KEY_FILE="$work/cluster.key"
pids=()
hugepages_before="$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)"
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    if [[ $dpdk == 1 ]]; then
        echo "$hugepages_before" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "--- metadata: redis-server on 127.0.0.1:$redis_port"
mkdir -p "$work/redis"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save "" --appendonly yes \
    --daemonize no --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 1 200); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

echo "--- three storage nodes"
for i in 1 2 3; do
    if [[ $i == 3 && $dpdk == 1 ]]; then
        continue
    fi
    "$beeline" node run --listen "127.0.0.1:778$i" --data-dir "$work/node$i" --hugepages off \
        --metrics-listen "127.0.0.1:978$i" 2>"$work/node$i.log" &
    pids+=($!)
done
if [[ $dpdk == 1 ]]; then
    echo "node 3: DPDK net_virtio_user on 10.84.0.2, vhost-user socket bridged to tap bldemo0 (10.84.0.1)"
    mountpoint -q /dev/hugepages || { mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages; }
    echo $((hugepages_before + 160)) >/proc/sys/vm/nr_hugepages
    "$PWD/target/release/beeline-dpdk-forward" -l 1 --in-memory --single-file-segments --no-pci --iova-mode=va \
        --file-prefix beeline-demo-forward --vdev "net_vhost0,iface=$work/vhost.sock" \
        --vdev net_tap0,iface=bldemo0 >"$work/forward.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 200); do [[ -S $work/vhost.sock ]] && ip link show bldemo0 >/dev/null 2>&1 && break; sleep 0.05; done
    ip addr add 10.84.0.1/24 dev bldemo0
    ip link set bldemo0 up
    "$beeline" node run --backend dpdk --listen 10.84.0.2:7783 --dpdk-devices "net_virtio_user0,path=$work/vhost.sock" \
        --dpdk-file-prefix beeline-demo-node3 --hugepages require --arena-frames 8192 --data-dir "$work/node3" \
        --metrics-listen 127.0.0.1:9783 2>"$work/node3.log" &
    pids+=($!)
fi
live_nodes() { "$beeline" cluster status 2>/dev/null | sed -n 's/^nodes: *[0-9]* (\([0-9]*\) live)/\1/p'; }
for _ in $(seq 1 300); do [[ "$(live_nodes)" == 3 ]] && break; sleep 0.05; done
if [[ "$(live_nodes)" != 3 ]]; then
    tail -n 5 "$work"/node*.log >&2
    echo "demo: the three nodes did not all come up (logs above)" >&2
    exit 1
fi
"$beeline" cluster status

echo "--- a tagger for automatic tags (Redis Stream {beeline}:tagging) and the web UI"
"$beeline" tagger run --claim-idle-ms 5000 2>"$work/tagger.log" &
pids+=($!)
web_port="${BEELINE_DEMO_WEB_PORT:-8780}"
"$beeline" web --listen "127.0.0.1:$web_port" >"$work/web.log" 2>&1 &
pids+=($!)

echo "--- storing files (two replicas of every chunk)"
mkdir -p "$work/in" "$work/out"
cp README.md "$work/in/README.md"
cp docs/architecture.md "$work/in/architecture.md"
head -c 20000000 /dev/urandom >"$work/in/random-20MB.bin"
: >"$work/in/empty.txt"
for file in "$work"/in/*; do
    "$beeline" put "$file"
done
"$beeline" tag README.md docs beeline
"$beeline" tag architecture.md docs design
"$beeline" tag random-20MB.bin binary

echo "--- listing and finding"
"$beeline" ls
echo "files tagged docs:";        "$beeline" search docs
echo "files tagged docs+design:"; "$beeline" search docs design
# The tagger works asynchronously: wait (bounded) until it has read README.md's keywords.
for _ in $(seq 1 600); do "$beeline" tags README.md 2>/dev/null | grep '^keyword:' >/dev/null && break; sleep 0.05; done
echo "README.md's tags (user ones and the tagger's):"; "$beeline" tags README.md
"$beeline" tags README.md | grep '^keyword:' >/dev/null || {
    tail -n 5 "$work/tagger.log" >&2
    echo "demo: the tagger added no keywords to README.md (its log above)" >&2
    exit 1
}
echo "files related to README.md (shared tags, rare ones weigh more):"; "$beeline" related README.md
echo "search 'docs & !design':"; "$beeline" search 'docs & !design'
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$web_port/" >/dev/null && break; sleep 0.05; done
if curl -sf "http://127.0.0.1:$web_port/" >/dev/null; then
    echo "web UI: http://127.0.0.1:$web_port/ (beeline web; up until the demo ends)"
else
    tail -n 5 "$work/web.log" >&2
    echo "demo: beeline web did not answer on 127.0.0.1:$web_port (its log above)" >&2
    exit 1
fi

echo "--- getting them back"
check_all() {
    for file in "$work"/in/*; do
        name="$(basename "$file")"
        "$beeline" get "$name" -o "$work/out/$name" >/dev/null
        cmp "$file" "$work/out/$name"
        echo "match: $name"
    done
}
check_all

echo "--- killing node 2 (SIGKILL): every file must still come back"
kill -KILL "${pids[2]}"
for _ in $(seq 1 300); do [[ "$(live_nodes)" == 2 ]] && break; sleep 0.05; done
check_all
"$beeline" cluster repair
"$beeline" cluster status
"$beeline" stat random-20MB.bin
curl -s "http://127.0.0.1:9781/metrics" 2>/dev/null | grep -E '^beeline_(puts_total|put_bytes_total|get_bytes_total) ' || true
if [[ $dpdk == 1 ]]; then
    echo "--- node 3 on DPDK"
    "$beeline" node status --node 10.84.0.2:7783 | grep -E '^(backend|arena)|chunks_stored|dpdk_(rx|tx)_packets|dpdk_arp_replies'
fi
echo
echo "demo passed: stored, found and returned every file byte-identical, also with a node down"
