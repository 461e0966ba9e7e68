#!/usr/bin/env bash
# AF_XDP vs udp on one veth pair, in one run: starts a node namespace and a client
# namespace joined by a veth pair, runs the same `beeline bench` workload from the client
# namespace against a `udp` node and then an `afxdp` node on the node's veth end, measures
# each node's idle CPU, and prints a Markdown table (docs/benchmarks.md, "AF_XDP vs udp on
# veth"). Not a test: numbers depend on the machine and on whatever else runs on it.
#
#   sudo ci/bench-afxdp.sh [--chunks N] [--ops N] [--mtu BYTES] [--fragment-bytes BYTES]
#                          [--idle-seconds S] [--output FILE]
#
# Uses target/release/beeline (built if missing; BEELINE_BIN overrides). Needs root,
# iproute2, ethtool and python3. Everything it creates (namespaces, veth pair, data
# directories, the hugepages it reserves) is removed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

chunks=64 ops=20000 mtu=3500 fragment=3372 idle_seconds=10 output=""
while (($#)); do
    case "$1" in
        --chunks) chunks=$2; shift 2 ;;
        --ops) ops=$2; shift 2 ;;
        --mtu) mtu=$2; shift 2 ;;
        --fragment-bytes) fragment=$2; shift 2 ;;
        --idle-seconds) idle_seconds=$2; shift 2 ;;
        --output) output=$2; shift 2 ;;
        *) echo "bench-afxdp.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-afxdp.sh: needs root (network namespaces, XDP, AF_XDP): run it with sudo" >&2
    exit 1
fi
for tool in ip ethtool python3; do
    command -v "$tool" >/dev/null || { echo "bench-afxdp.sh: $tool is missing (ci/setup.sh installs it)" >&2; exit 1; }
done

bin=${BEELINE_BIN:-target/release/beeline}
if [[ ! -x $bin ]]; then
    echo "bench-afxdp.sh: building $bin" >&2
    cargo build --release --locked -p beeline >&2
fi
bin=$(realpath "$bin")

id=$$
node_ns=blbench-n$id client_ns=blbench-c$id node_if=blbn$id client_if=blbc$id
node_ip=10.77.0.1 client_ip=10.77.0.2 port=7777
work=$(mktemp -d /tmp/beeline-bench-afxdp.XXXXXX)
node_pid=""
hugepages_before=$(cat /proc/sys/vm/nr_hugepages)

cleanup() {
    if [[ -n $node_pid ]]; then kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
    ip netns del "$node_ns" 2>/dev/null || true
    ip netns del "$client_ns" 2>/dev/null || true
    echo "$hugepages_before" > /proc/sys/vm/nr_hugepages || true
    rm -rf "$work"
}
trap cleanup EXIT

# The arena: 16384 frames of 4 KiB = 64 MiB = 32 hugepages, reserved for the run.
echo $((hugepages_before + 32)) > /proc/sys/vm/nr_hugepages

ip netns add "$node_ns"
ip netns add "$client_ns"
ip link add "$client_if" netns "$client_ns" type veth peer name "$node_if" netns "$node_ns"
ip -n "$node_ns" addr add $node_ip/24 dev "$node_if"
ip -n "$client_ns" addr add $client_ip/24 dev "$client_if"
for pair in "$node_ns $node_if" "$client_ns $client_if"; do
    set -- $pair
    ip -n "$1" link set "$2" mtu "$mtu" up
    ip -n "$1" link set lo up
done
# Kernel senders on veth leave UDP checksums to an offload that never happens; send
# complete ones, as a real NIC path would.
ip netns exec "$client_ns" ethtool -K "$client_if" tx off >/dev/null

cli() { ip netns exec "$client_ns" "$bin" "$@" --node $node_ip:$port --key-file "$work/cluster.key"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine_busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

for backend in udp afxdp; do
    extra=()
    [[ $backend == afxdp ]] && extra=(--interface "$node_if")
    ip netns exec "$node_ns" "$bin" node run --backend $backend "${extra[@]}" --listen $node_ip:$port \
        --data-dir "$work/data-$backend" --key-file "$work/cluster.key" --arena-frames 16384 --frame-bytes 4096 \
        --hugepages prefer --auto-tag false 2> "$work/node-$backend.log" &
    node_pid=$!
    for _ in $(seq 300); do
        cli node ping >/dev/null 2>&1 && break
        kill -0 "$node_pid" 2>/dev/null || { cat "$work/node-$backend.log" >&2; exit 1; }
        sleep 0.1
    done
    cli node ping >/dev/null

    # Idle CPU: the node process alone, and the whole machine, over a quiet window.
    hz=$(getconf CLK_TCK)
    node_before=$(cpu_ticks "$node_pid") machine_before=$(machine_busy) start=$(date +%s.%N)
    sleep "$idle_seconds"
    node_after=$(cpu_ticks "$node_pid") machine_after=$(machine_busy) end=$(date +%s.%N)
    python3 -c "
import sys
wall = $end - $start
print(f'{($node_after - $node_before) / $hz / wall * 100:.3f} {($machine_after - $machine_before) / $hz / wall * 100:.1f}')
" > "$work/idle-$backend.txt"

    # Two runs, so the node's own CPU (from /proc, immune to whatever else the machine
    # runs) can be split between bulk transfer and small gets.
    echo "bench-afxdp.sh: $backend backend" >&2
    bench() { ip netns exec "$client_ns" "$bin" bench --node $node_ip:$port --key-file "$work/cluster.key" \
        --op-bytes 4096 --fragment-bytes "$fragment" --no-baselines --json "$@" > /dev/null; }
    node_start=$(cpu_ticks "$node_pid")
    bench --chunks "$chunks" --ops 0 --output "$work/bulk-$backend.json"
    node_mid=$(cpu_ticks "$node_pid")
    bench --chunks 1 --ops "$ops" --output "$work/small-$backend.json"
    node_end=$(cpu_ticks "$node_pid")
    echo "$node_start $node_mid $node_end $hz" > "$work/node-cpu-$backend.txt"
    cli node status > "$work/status-$backend.txt"
    kill -TERM "$node_pid"
    wait "$node_pid" || true
    node_pid=""
done

python3 - "$work" "$chunks" "$ops" "$mtu" "$fragment" "$idle_seconds" <<'EOF' | tee ${output:+"$output"}
import json, sys, os
work, chunks, ops, mtu, fragment, idle_seconds = sys.argv[1:]
rows = {}
for backend in ("udp", "afxdp"):
    report = json.load(open(os.path.join(work, f"bulk-{backend}.json")))
    small_report = json.load(open(os.path.join(work, f"small-{backend}.json")))
    phases = {p["name"]: p for p in report["phases"]}
    put = next(p for n, p in phases.items() if n.startswith("Put 4 MiB"))
    get = next(p for n, p in phases.items() if n.startswith("Get 4 MiB"))
    small = next(p for p in small_report["phases"] if "one at a time" in p["name"])
    small_bulk_bytes = sum(p["bytes"] for p in small_report["phases"] if "4 MiB" in p["name"])
    counters = dict(report["node_counters"])
    for name, value in small_report["node_counters"].items():
        counters[name] = counters.get(name, 0) + value
    start, mid, end, hz = map(float, open(os.path.join(work, f"node-cpu-{backend}.txt")).read().split())
    bulk_bytes = put["bytes"] + get["bytes"]
    node_bulk = (mid - start) / hz
    node_per_byte = node_bulk / bulk_bytes
    # The small-get run also puts and gets one 4 MiB chunk: take its share (at the bulk
    # rate) out of the node's CPU before dividing by the gets.
    node_small = max((end - mid) / hz - node_per_byte * small_bulk_bytes, 0.0)
    status = {}
    for line in open(os.path.join(work, f"status-{backend}.txt")):
        if line.startswith("  "):
            name, value = line.split()[:2]
            status[name] = int(value)
        elif line.startswith("backend:"):
            status["backend"] = line.split(":", 1)[1].strip()
        elif line.startswith("arena:"):
            status["arena"] = line.split(":", 1)[1].strip()
    node_idle, machine_idle = open(os.path.join(work, f"idle-{backend}.txt")).read().split()
    stored = max(counters.get("bytes_stored", 0), 1)
    moved = counters.get("bytes_stored", 0) + counters.get("bytes_served", 0)
    kernel_copied = counters.get("afxdp_kernel_copied_bytes", 0)
    rows[backend] = dict(
        node_bulk_per_gb=node_bulk / (bulk_bytes / 1e9),
        client_bulk_per_gb=(put["process_cpu_seconds"] + get["process_cpu_seconds"]) / (bulk_bytes / 1e9),
        node_us_per_get=node_small / max(small["ops"], 1) * 1e6,
        client_us_per_get=small["process_cpu_seconds"] / max(small["ops"], 1) * 1e6,
        report=report, status=status, put=put, get=get, small=small, counters=counters,
        node_idle=node_idle, machine_idle=machine_idle,
        beeline_copied=counters.get("data_bytes_copied", 0) / stored,
        kernel_copied=(kernel_copied / max(moved, 1)) if backend == "afxdp" else None,
    )
first = rows["udp"]["report"]
print(f"Run {first['date']} on {first['machine']}; load average at start {first['load_average']}.")
print(f"Command: `sudo ci/bench-afxdp.sh --chunks {chunks} --ops {ops} --mtu {mtu} --fragment-bytes {fragment}`: "
      f"veth MTU {mtu}, {fragment}-byte fragments, {chunks} x 4 MiB put then get, {ops} gets of 4 KiB one at a time, "
      f"node arena 16384 x 4 KiB frames; idle CPU over {idle_seconds} s.")
print()
for backend in ("udp", "afxdp"):
    status = rows[backend]["status"]
    print(f"- {backend} node: {status.get('backend', '?')}; arena {status.get('arena', '?')}")
print()
print("| | udp | afxdp | afxdp / udp |")
print("| --- | ---: | ---: | ---: |")
def line(label, key, fmt, ratio=True):
    u, a = key(rows["udp"]), key(rows["afxdp"])
    r = f"{a / u:.2f}x" if ratio and u else ""
    print(f"| {label} | {fmt(u)} | {fmt(a)} | {r} |")
line("4 MiB put, GB/s", lambda r: r["put"]["gb_per_second"], lambda v: f"{v:.3f}")
line("4 MiB get, GB/s", lambda r: r["get"]["gb_per_second"], lambda v: f"{v:.3f}")
line("4 KiB get, ops/s", lambda r: r["small"]["ops_per_second"], lambda v: f"{v:,.0f}")
line("4 KiB get p50, µs", lambda r: r["small"]["latency_us"]["p50"], lambda v: f"{v:.1f}")
line("4 KiB get p99, µs", lambda r: r["small"]["latency_us"]["p99"], lambda v: f"{v:.1f}")
line("put + get, node process CPU-s per GB", lambda r: r["node_bulk_per_gb"], lambda v: f"{v:.2f}")
line("put + get, client process CPU-s per GB", lambda r: r["client_bulk_per_gb"], lambda v: f"{v:.2f}")
line("4 KiB get, node process CPU µs per get", lambda r: r["node_us_per_get"], lambda v: f"{v:.1f}")
line("4 KiB get, client process CPU µs per get", lambda r: r["client_us_per_get"], lambda v: f"{v:.1f}")
line("put, whole-machine CPU-s per GB (/proc/stat)", lambda r: r["put"]["machine_cpu_seconds_per_gb"], lambda v: f"{v:.2f}")
line("get, whole-machine CPU-s per GB (/proc/stat)", lambda r: r["get"]["machine_cpu_seconds_per_gb"], lambda v: f"{v:.2f}")
line("payload bytes copied by Beeline per byte stored", lambda r: r["beeline_copied"], lambda v: f"{v:g}", False)
print(f"| payload bytes copied by the kernel per byte moved | 1 (recvmmsg/sendmmsg, by construction) | "
      f"{rows['afxdp']['kernel_copied']:.2f} (copy-mode bind, counted) | |")
line("idle node CPU, % of one core", lambda r: float(r["node_idle"]), lambda v: f"{v:.3f}", False)
line("idle machine CPU, % of one core (everything running)", lambda r: float(r["machine_idle"]), lambda v: f"{v:.1f}", False)
a = rows["afxdp"]["counters"]
print()
print("afxdp node counters over the run: " + ", ".join(
    f"{k} {a[k]}" for k in sorted(a) if (k.startswith("xdp_") or k.startswith("afxdp_")) and a[k]))
EOF
