#!/usr/bin/env bash
# DPDK vs AF_XDP vs udp on one veth pair, in one run: starts a node namespace and a client
# namespace joined by a veth pair, runs the same `beeline bench` workload from the client
# namespace against a `udp` node, an `afxdp` node and a `dpdk` node on DPDK's net_af_xdp PMD
# (all three on the node's veth end, one after the other), measures each node's idle CPU,
# and prints a Markdown table (docs/benchmarks.md, "DPDK vs AF_XDP vs udp on veth"), then
# nginx (plain HTTP sendfile) on the same pair and each backend's 4 MiB get against it.
# With --virtio it then also runs a `dpdk` node on net_virtio_user, reached through
# beeline-dpdk-forward (vhost-user <-> a tap in the client namespace: the virtio path of a
# VM), and prints a second table against the same run's `udp` node. Not a test: numbers
# depend on the machine and on whatever else runs on it.
#
#   sudo ci/bench-dpdk.sh [--chunks N] [--ops N] [--mtu BYTES] [--fragment-bytes BYTES]
#                         [--idle-seconds S] [--virtio] [--virtio-queue-size N] [--keep-logs DIR]
#                         [--output FILE]
#
# --virtio-queue-size N passes queue_size=N to net_virtio_user (the node defaults it to its rx_ring_size).
# --keep-logs DIR keeps the nodes' logs, the bench reports (JSON) and the nodes' status.
#
# Builds target/release/beeline and beeline-dpdk-forward with the dpdk feature (a no-op
# when they are up to date; BEELINE_BIN overrides, the forwarder is looked up next to it).
# Needs root, iproute2, ethtool, python3 and the system DPDK. Everything it creates
# (namespaces, veth pair, tap, data directories, the hugepages it reserves, the hugetlbfs
# mount if it made one) is removed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

chunks=64 ops=20000 mtu=1500 fragment=1372 idle_seconds=10 virtio=0 virtio_queue_size="" keep_logs="" output=""
while (($#)); do
    case "$1" in
        --chunks) chunks=$2; shift 2 ;;
        --ops) ops=$2; shift 2 ;;
        --mtu) mtu=$2; shift 2 ;;
        --fragment-bytes) fragment=$2; shift 2 ;;
        --idle-seconds) idle_seconds=$2; shift 2 ;;
        --virtio) virtio=1; shift ;;
        --virtio-queue-size) virtio_queue_size=$2; shift 2 ;;
        --keep-logs) keep_logs=$2; shift 2 ;;
        --output) output=$2; shift 2 ;;
        *) echo "bench-dpdk.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-dpdk.sh: needs root (network namespaces, XDP, AF_XDP, hugepages): run it with sudo" >&2
    exit 1
fi
for package in nginx curl; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        echo "bench-dpdk.sh: installing $package (the peer measured on the same veth pair)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >&2
    fi
done
for tool in ip ethtool python3 mount; do
    command -v "$tool" >/dev/null || { echo "bench-dpdk.sh: $tool is missing (ci/setup.sh installs it)" >&2; exit 1; }
done

if [[ -n ${BEELINE_BIN:-} ]]; then
    bin=$BEELINE_BIN
else
    # Always asked: cargo rebuilds when the existing binary lacks the dpdk feature.
    echo "bench-dpdk.sh: building target/release/beeline with --features dpdk" >&2
    cargo build --release --locked -p beeline --features dpdk -j1 >&2
    bin=target/release/beeline
fi
bin=$(realpath "$bin")
forward_bin=$(dirname "$bin")/beeline-dpdk-forward
if ((virtio)) && [[ ! -x $forward_bin ]]; then
    echo "bench-dpdk.sh: --virtio needs $forward_bin (cargo build --release -p beeline --features dpdk)" >&2
    exit 1
fi

id=$$
node_ns=blbd-n$id client_ns=blbd-c$id node_if=blbdn$id client_if=blbdc$id tap=blbdt$id
node_ip=10.79.0.1 client_ip=10.79.0.2 port=7777
tap_ip=10.80.0.1 virtio_ip=10.80.0.2
work=$(mktemp -d /tmp/beeline-bench-dpdk.XXXXXX)
node_pid="" forward_pid="" nginx_pid="" mounted_hugetlbfs=""
hugepages_before=$(cat /proc/sys/vm/nr_hugepages)

cleanup() {
    if [[ -n $node_pid ]]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
    if [[ -n $forward_pid ]]; then kill "$forward_pid" 2>/dev/null || true; wait "$forward_pid" 2>/dev/null || true; fi
    if [[ -n $nginx_pid ]]; then kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; fi
    ip netns del "$node_ns" 2>/dev/null || true
    ip netns del "$client_ns" 2>/dev/null || true
    echo "$hugepages_before" > /proc/sys/vm/nr_hugepages || true
    if [[ -n $mounted_hugetlbfs ]]; then umount "$mounted_hugetlbfs" 2>/dev/null || true; fi
    if [[ -n $keep_logs ]]; then
        mkdir -p "$keep_logs" || true
        cp "$work"/*.log "$work"/*.json "$work"/*.txt "$keep_logs"/ 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# DPDK maps hugepages through a hugetlbfs mount (the node checks for one before the EAL).
if ! grep -q ' hugetlbfs ' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs nodev /dev/hugepages
    mounted_hugetlbfs=/dev/hugepages
fi
# One node runs at a time; its arena is 16384 frames of 4 KiB = 64 MiB = 32 hugepages. A
# DPDK node needs more on top (the EAL's heap, the port's rings, the PMD's UMEM
# bookkeeping): 96 pages; the virtio run's forwarder keeps its own mbuf pool: 64 more.
wanted=$((32 + 96 + 64 * virtio))
echo $((hugepages_before + wanted)) > /proc/sys/vm/nr_hugepages
free_pages=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages)
if ((free_pages < wanted)); then
    echo "bench-dpdk.sh: only $free_pages free 2 MiB hugepages after asking for $wanted more (memory fragmented?)" >&2
    exit 1
fi

ip netns add "$node_ns"
ip netns add "$client_ns"
ip link add "$client_if" netns "$client_ns" type veth peer name "$node_if" netns "$node_ns"
ip -n "$node_ns" addr add $node_ip/24 dev "$node_if"
ip -n "$client_ns" addr add $client_ip/24 dev "$client_if"
for ns in "$node_ns" "$client_ns"; do
    ip -n "$ns" link set lo up
done
ip -n "$node_ns" link set "$node_if" mtu "$mtu" up
ip -n "$client_ns" link set "$client_if" mtu "$mtu" up
# Kernel senders on veth leave UDP checksums to an offload that never happens; send
# complete ones, as a real NIC path would.
ip netns exec "$client_ns" ethtool -K "$client_if" tx off >/dev/null

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

# measure LABEL ADDR NODE-RUN-ARGS...: starts a node in the node namespace, waits for its
# ping, measures its idle CPU, runs the bulk and the small-get bench from the client
# namespace, saves its status, stops it with SIGTERM and records how it exited.
measure() {
    local label=$1 addr=$2
    shift 2
    cli() { ip netns exec "$client_ns" "$bin" "$@" --node "$addr" --key-file "$work/cluster.key"; }
    BEELINE_LOG=info ip netns exec "$node_ns" "$bin" node run --listen "$addr" \
        --data-dir "$work/data-$label" --key-file "$work/cluster.key" --arena-frames 16384 --frame-bytes 4096 --auto-tag false \
        "$@" 2> "$work/node-$label.log" &
    node_pid=$!
    local deadline=$((SECONDS + 60))
    until cli node ping >/dev/null 2>&1; do
        if ! kill -0 "$node_pid" 2>/dev/null; then
            echo "bench-dpdk.sh: the $label node exited during start-up; its log:" >&2
            cat "$work/node-$label.log" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "bench-dpdk.sh: the $label node did not answer a ping within 60 s; its log:" >&2
            cat "$work/node-$label.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    cli node ping >/dev/null

    # Idle CPU: the node process alone (all its threads), and the whole machine.
    local node_before machine_before start node_after machine_after end
    node_before=$(cpu_ticks "$node_pid") machine_before=$(machine_busy) start=$(date +%s.%N)
    sleep "$idle_seconds"
    node_after=$(cpu_ticks "$node_pid") machine_after=$(machine_busy) end=$(date +%s.%N)
    python3 -c "
wall = $end - $start
print(f'{($node_after - $node_before) / $hz / wall * 100:.3f} {($machine_after - $machine_before) / $hz / wall * 100:.1f}')
" > "$work/idle-$label.txt"

    # Two runs, so the node's own CPU (from /proc, immune to whatever else the machine
    # runs) can be split between bulk transfer and small gets. The forwarder of the virtio
    # run (the hypervisor's side) is measured the same way.
    echo "bench-dpdk.sh: $label node" >&2
    bench() { ip netns exec "$client_ns" "$bin" bench --node "$addr" --key-file "$work/cluster.key" \
        --op-bytes 4096 --fragment-bytes "$fragment" --no-baselines --json "$@" > /dev/null; }
    local helper=${forward_pid:-$node_pid}
    local node_start node_mid node_end helper_start helper_mid helper_end
    node_start=$(cpu_ticks "$node_pid") helper_start=$(cpu_ticks "$helper")
    bench --chunks "$chunks" --ops 0 --output "$work/bulk-$label.json"
    node_mid=$(cpu_ticks "$node_pid") helper_mid=$(cpu_ticks "$helper")
    bench --chunks 1 --ops "$ops" --output "$work/small-$label.json"
    node_end=$(cpu_ticks "$node_pid") helper_end=$(cpu_ticks "$helper")
    echo "$node_start $node_mid $node_end $hz" > "$work/node-cpu-$label.txt"
    [[ -n $forward_pid ]] && echo "$helper_start $helper_mid $helper_end $hz" > "$work/forward-cpu-$label.txt"
    cli node status > "$work/status-$label.txt"
    kill -TERM "$node_pid"
    local rc=0
    wait "$node_pid" || rc=$?
    node_pid=""
    echo "$rc" > "$work/exit-$label.txt"
    # What the node had to say beyond its start-up lines, for the reader of the run.
    grep -E 'WARN|ERROR|beeline:' "$work/node-$label.log" | sed "s/^/bench-dpdk.sh: $label node log: /" | head -20 >&2 || true
}

measure udp "$node_ip:$port" --backend udp --hugepages prefer
measure afxdp "$node_ip:$port" --backend afxdp --interface "$node_if" --hugepages prefer
# net_af_xdp on the same veth: the veth keeps its IP in the kernel (ARP and ping stay the
# kernel's, passed by Beeline's classifier, which the node hands to the PMD).
measure dpdk "$node_ip:$port" --backend dpdk --dpdk-devices "net_af_xdp0,iface=$node_if" --dpdk-cores 0 \
    --dpdk-file-prefix "blbd-afxdp-$id" --mtu "$mtu" --hugepages require
if ip -n "$node_ns" -d link show "$node_if" | grep -q 'prog/xdp'; then
    echo "xdp program left attached" > "$work/xdp-left-dpdk.txt"
fi

# The peer on the same pair: nginx (plain HTTP, sendfile, one worker) in the node namespace,
# curl in the client namespace fetching the same 4 MiB object as many times as the bench
# gets chunks (one curl, one kept-alive connection, one request in flight).
echo "bench-dpdk.sh: nginx plain HTTP GET on the same veth pair" >&2
mkdir -p "$work/www"
head -c $((4 << 20)) /dev/urandom > "$work/www/obj4m"
# shellcheck source=ci/nginx-peer.sh
source ci/nginx-peer.sh
nginx_peer_conf "$work" "        listen $node_ip:8080;
        root $work/www;"
ip netns exec "$node_ns" nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" &
nginx_pid=$!
deadline=$((SECONDS + 30))
until ip netns exec "$client_ns" curl -sS --fail -o /dev/null "http://$node_ip:8080/obj4m" 2>/dev/null; do
    if ! kill -0 "$nginx_pid" 2>/dev/null || ((SECONDS > deadline)); then
        echo "bench-dpdk.sh: nginx did not serve the object within 30 s; its error log:" >&2
        cat "$work/nginx-error.log" >&2
        exit 1
    fi
    sleep 0.1
done
nginx_worker=$(pgrep -P "$nginx_pid" | head -n 1)
for ((i = 0; i < chunks; i++)); do
    printf 'url = "http://%s:8080/obj4m"\noutput = "/dev/null"\n' "$node_ip"
done > "$work/nginx-get.cfg"
worker_start=$(cpu_ticks "$nginx_worker") start=$(date +%s.%N)
ip netns exec "$client_ns" curl -sS --fail -K "$work/nginx-get.cfg"
end=$(date +%s.%N) worker_end=$(cpu_ticks "$nginx_worker")
echo "$start $end $worker_start $worker_end $hz" > "$work/nginx-get.txt"
kill -TERM "$nginx_pid"
wait "$nginx_pid" 2>/dev/null || true
nginx_pid=""

if ((virtio)); then
    # The hypervisor's side: a vhost-user server on a socket, bridged to a tap in the
    # client namespace; the node is the guest's virtio driver (net_virtio_user).
    ip netns exec "$client_ns" "$forward_bin" -l 1 --in-memory --single-file-segments --no-pci --iova-mode=va \
        --file-prefix "blbd-fwd-$id" --vdev "net_vhost0,iface=$work/vhost.sock" --vdev "net_tap0,iface=$tap" \
        > "$work/forward.log" 2>&1 &
    forward_pid=$!
    for _ in $(seq 200); do
        [[ -S $work/vhost.sock ]] && ip -n "$client_ns" link show "$tap" >/dev/null 2>&1 && break
        kill -0 "$forward_pid" 2>/dev/null || { cat "$work/forward.log" >&2; exit 1; }
        sleep 0.1
    done
    ip -n "$client_ns" addr add $tap_ip/24 dev "$tap"
    ip -n "$client_ns" link set "$tap" mtu "$mtu" up
    measure virtio "$virtio_ip:$port" --backend dpdk --dpdk-devices "net_virtio_user0,path=$work/vhost.sock${virtio_queue_size:+,queue_size=$virtio_queue_size}" \
        --dpdk-cores 0 --dpdk-file-prefix "blbd-virtio-$id" --mtu "$mtu" --hugepages require
    ip -n "$client_ns" -s -j link show "$tap" > "$work/tap-stats.json" || true
    kill -TERM "$forward_pid"
    rc=0
    wait "$forward_pid" || rc=$?
    forward_pid=""
    echo "$rc" > "$work/exit-forward.txt"
fi

python3 - "$work" "$chunks" "$ops" "$mtu" "$fragment" "$idle_seconds" "$virtio" "$virtio_queue_size" <<'EOF' | tee ${output:+"$output"}
import json, sys, os
work, chunks, ops, mtu, fragment, idle_seconds, virtio, virtio_queue_size = sys.argv[1:]
virtio = virtio == "1"
labels = ["udp", "afxdp", "dpdk"] + (["virtio"] if virtio else [])
rows = {}
def read(name):
    path = os.path.join(work, name)
    return open(path).read().strip() if os.path.exists(path) else None
for label in labels:
    report = json.load(open(os.path.join(work, f"bulk-{label}.json")))
    small_report = json.load(open(os.path.join(work, f"small-{label}.json")))
    phases = {p["name"]: p for p in report["phases"]}
    put = next(p for n, p in phases.items() if n.startswith("Put 4 MiB"))
    get = next(p for n, p in phases.items() if n.startswith("Get 4 MiB"))
    small = next(p for p in small_report["phases"] if "one at a time" in p["name"])
    small_bulk_bytes = sum(p["bytes"] for p in small_report["phases"] if "4 MiB" in p["name"])
    counters = dict(report["node_counters"])
    for name, value in small_report["node_counters"].items():
        counters[name] = counters.get(name, 0) + value
    bulk_bytes = put["bytes"] + get["bytes"]
    def split(path):
        # CPU-s per GB of bulk transfer, and µs per small get: the small-get run also puts
        # and gets one 4 MiB chunk, so its share (at the bulk rate) is taken out first.
        start, mid, end, hz = map(float, open(path).read().split())
        bulk = (mid - start) / hz
        small_cpu = max((end - mid) / hz - bulk / bulk_bytes * small_bulk_bytes, 0.0)
        return bulk / (bulk_bytes / 1e9), small_cpu / max(small["ops"], 1) * 1e6
    node_bulk_per_gb, node_us_per_get = split(os.path.join(work, f"node-cpu-{label}.txt"))
    forward = None
    if os.path.exists(os.path.join(work, f"forward-cpu-{label}.txt")):
        forward = split(os.path.join(work, f"forward-cpu-{label}.txt"))
    status = {}
    for line in open(os.path.join(work, f"status-{label}.txt")):
        if line.startswith("  "):
            name, value = line.split()[:2]
            try:
                status[name] = int(value)
            except ValueError:
                pass
        elif line.startswith("backend:"):
            status["backend"] = line.split(":", 1)[1].strip()
        elif line.startswith("arena:"):
            status["arena"] = line.split(":", 1)[1].strip()
    node_idle, machine_idle = read(f"idle-{label}.txt").split()
    stored = max(counters.get("bytes_stored", 0), 1)
    moved = counters.get("bytes_stored", 0) + counters.get("bytes_served", 0)
    kernel_copied = counters.get("afxdp_kernel_copied_bytes", 0)
    rows[label] = dict(
        label=label,
        node_bulk_per_gb=node_bulk_per_gb,
        client_bulk_per_gb=(put["process_cpu_seconds"] + get["process_cpu_seconds"]) / (bulk_bytes / 1e9),
        node_us_per_get=node_us_per_get,
        client_us_per_get=small["process_cpu_seconds"] / max(small["ops"], 1) * 1e6,
        forward=forward,
        report=report, status=status, put=put, get=get, small=small, counters=counters,
        node_idle=node_idle, machine_idle=machine_idle,
        beeline_copied=counters.get("data_bytes_copied", 0) / stored,
        kernel_copied=kernel_copied / max(moved, 1),
        exit=read(f"exit-{label}.txt"),
    )
first = rows["udp"]["report"]
print(f"Run {first['date']} on {first['machine']}; load average at start {first['load_average']}.")
print(f"Command: `sudo ci/bench-dpdk.sh --chunks {chunks} --ops {ops} --mtu {mtu} --fragment-bytes {fragment}"
      f"{' --virtio' if virtio else ''}{f' --virtio-queue-size {virtio_queue_size}' if virtio_queue_size else ''}`: veth MTU {mtu}, {fragment}-byte fragments, {chunks} x 4 MiB put then get, "
      f"{ops} gets of 4 KiB one at a time, node arena 16384 x 4 KiB frames on 2 MiB hugepages; idle CPU over "
      f"{idle_seconds} s.")
print()
names = {"udp": "udp", "afxdp": "afxdp", "dpdk": "dpdk (net_af_xdp)", "virtio": "dpdk (net_virtio_user)"}
for label in labels:
    status = rows[label]["status"]
    exit_note = "" if rows[label]["exit"] == "0" else f"; exited with status {rows[label]['exit']} on SIGTERM"
    print(f"- {names[label]} node: {status.get('backend', '?')}; arena {status.get('arena', '?')}{exit_note}")
if read("xdp-left-dpdk.txt"):
    print("- after the dpdk node stopped, an XDP program was still attached to the node's veth")
print()

def table(cols, ratio_cols):
    header = " | ".join(c if c != "virtio" else names[c] for c in cols)
    ratios = " | ".join(f"{c} / udp" for c in ratio_cols)
    print(f"| | {header} | {ratios} |")
    print("| --- |" + " ---: |" * (len(cols) + len(ratio_cols)))
    def line(label, key, fmt, ratio=True):
        values = [key(rows[c]) for c in cols]
        cells = [fmt(v) if v is not None else "" for v in values]
        u = key(rows["udp"])
        rs = [f"{key(rows[c]) / u:.2f}x" if ratio and u and key(rows[c]) is not None else "" for c in ratio_cols]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(rs) + " |")
    line("4 MiB put, GB/s", lambda r: r["put"]["gb_per_second"], lambda v: f"{v:.3f}")
    line("4 MiB get, GB/s", lambda r: r["get"]["gb_per_second"], lambda v: f"{v:.3f}")
    line("4 KiB get, ops/s", lambda r: r["small"]["ops_per_second"], lambda v: f"{v:,.0f}")
    line("4 KiB get p50, µs", lambda r: r["small"]["latency_us"]["p50"], lambda v: f"{v:.1f}")
    line("4 KiB get p99, µs", lambda r: r["small"]["latency_us"]["p99"], lambda v: f"{v:.1f}")
    line("put + get, node process CPU-s per GB", lambda r: r["node_bulk_per_gb"], lambda v: f"{v:.2f}")
    line("put + get, client process CPU-s per GB", lambda r: r["client_bulk_per_gb"], lambda v: f"{v:.2f}")
    line("4 KiB get, node process CPU µs per get", lambda r: r["node_us_per_get"], lambda v: f"{v:.1f}")
    line("4 KiB get, client process CPU µs per get", lambda r: r["client_us_per_get"], lambda v: f"{v:.1f}")
    if "virtio" in cols:
        line("put + get, forwarder process CPU-s per GB (vhost-user <-> tap)",
             lambda r: r["forward"][0] if r["forward"] else None, lambda v: f"{v:.2f}", False)
        line("4 KiB get, forwarder process CPU µs per get",
             lambda r: r["forward"][1] if r["forward"] else None, lambda v: f"{v:.1f}", False)
    line("put, whole-machine CPU-s per GB (/proc/stat)", lambda r: r["put"]["machine_cpu_seconds_per_gb"], lambda v: f"{v:.2f}")
    line("get, whole-machine CPU-s per GB (/proc/stat)", lambda r: r["get"]["machine_cpu_seconds_per_gb"], lambda v: f"{v:.2f}")
    line("payload bytes copied by Beeline per byte stored", lambda r: r["beeline_copied"], lambda v: f"{v:g}", False)
    kernel = {"udp": "1 (recvmmsg/sendmmsg, by construction)",
              "afxdp": f"{rows['afxdp']['kernel_copied']:.2f} (copy-mode bind, counted)",
              "dpdk": "copy-mode bind on veth (not counted)",
              "virtio": "vhost-user copies in the forwarder, tap in the kernel (not counted)"}
    print("| payload bytes copied outside Beeline per byte moved | " + " | ".join(kernel[c] for c in cols)
          + " |" + " |" * len(ratio_cols))
    line("put: fragments received twice (resent)", lambda r: r["counters"].get("fragments_duplicate", 0), lambda v: f"{v:,}", False)
    line("packets dropped for want of a free frame", lambda r: r["counters"].get("dropped_no_buffer", 0), lambda v: f"{v:,}", False)
    dpdk_only = lambda name: (lambda r: r["counters"].get(name, 0) if r["label"] in ("dpdk", "virtio") else None)
    for name in ("dpdk_port_rx_nombuf", "dpdk_port_imissed", "dpdk_tx_ring_full", "dpdk_pool_refilled", "dpdk_pool_drained"):
        line(f"`{name}`", dpdk_only(name), lambda v: f"{v:,}", False)
    line("idle node CPU, % of one core", lambda r: float(r["node_idle"]), lambda v: f"{v:.3f}", False)
    line("idle machine CPU, % of one core (everything running)", lambda r: float(r["machine_idle"]), lambda v: f"{v:.1f}", False)

table(["udp", "afxdp", "dpdk"], ["afxdp", "dpdk"])
print()
start, end, worker_start, worker_end, hz = map(float, open(os.path.join(work, "nginx-get.txt")).read().split())
nginx_bytes = int(chunks) * (4 << 20)
nginx_gbps = nginx_bytes / (end - start) / 1e9
nginx_cpu = (worker_end - worker_start) / hz / (nginx_bytes / 1e9)
print(f"The peer on the same veth pair, same run: nginx plain HTTP (sendfile, one worker) served {chunks} GETs of a "
      f"4 MiB object to one curl at **{nginx_gbps:.3f} GB/s** ({nginx_cpu:.2f} worker CPU-s per GB).")
print()
print("| 4 MiB get ÷ nginx plain HTTP GET on the same pair | " + " | ".join(names[c] for c in ["udp", "afxdp", "dpdk"]) + " |")
print("| --- |" + " ---: |" * 3)
print("| ratio (target ≥ 1.0 for afxdp and dpdk) | " + " | ".join(
    f"{rows[c]['get']['gb_per_second'] / nginx_gbps:.2f}x" for c in ["udp", "afxdp", "dpdk"]) + " |")
print()
# Gauges, not counters: their difference over the run means nothing; shown at the end.
gauges = ("dpdk_frames_owned", "dpdk_frames_pooled")
def counter_line(label, prefixes):
    c, status = rows[label]["counters"], rows[label]["status"]
    text = f"{label} node counters over the run: " + ", ".join(
        f"{k} {c[k]}" for k in sorted(c) if k.startswith(prefixes) and c[k] and k not in gauges)
    held = [f"{k} {status[k]}" for k in gauges if k in status]
    if held:
        text += "; after the run: " + ", ".join(held)
    print(text)
    print()
counter_line("afxdp", ("xdp_", "afxdp_"))
counter_line("dpdk", ("xdp_", "dpdk_"))
if virtio:
    print("The virtio path (net_virtio_user -> vhost-user -> beeline-dpdk-forward -> tap), against the same run's udp node on veth:")
    print()
    table(["udp", "virtio"], ["virtio"])
    print()
    counter_line("virtio", ("dpdk_",))
    # The forwarder counts what it could not hand on (a full vhost-user or tap queue):
    # losses the node's counters never see.
    forward_log = os.path.join(work, "forward.log")
    if os.path.exists(forward_log):
        totals = [l.strip() for l in open(forward_log, errors="replace") if l.startswith("forwarded ")]
        if totals:
            print(f"beeline-dpdk-forward at exit: {totals[-1]}")
    tap_stats = os.path.join(work, "tap-stats.json")
    if os.path.exists(tap_stats):
        try:
            stats = json.load(open(tap_stats))[0]["stats64"]
            print(f"tap in the client namespace: tx {stats['tx']['packets']} packets, {stats['tx']['dropped']} dropped; "
                  f"rx {stats['rx']['packets']} packets, {stats['rx']['dropped']} dropped")
        except (ValueError, KeyError, IndexError):
            pass
    forward_exit = read("exit-forward.txt")
    if forward_exit != "0":
        print(f"(the forwarder exited with status {forward_exit} on SIGTERM)")
EOF
