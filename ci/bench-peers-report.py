#!/usr/bin/env python3
"""The report of ci/bench-peers.sh: reads the raw results in WORKDIR, prints Markdown (the
comparison table and the raw numbers) and writes an SVG plot of the ratios. Standard
library only.

    bench-peers-report.py WORKDIR SVG MACHINE START LOAD_END COMMIT COMMAND
"""

import csv
import json
import math
import os
import sys
from xml.sax.saxutils import escape

GB = 1e9


def percentile(samples, q):
    """Nearest rank, as `beeline bench` computes it."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def bench_phases(path, baselines):
    """The phases of one `beeline bench --json` run, by short name."""
    with open(path) as f:
        bench = json.load(f)
    phases = {phase["name"]: phase for phase in bench["phases"]}

    def phase(prefix):
        for name, value in phases.items():
            if name.startswith(prefix):
                return value
        raise SystemExit(f"bench-peers-report.py: no '{prefix}' phase in {path}")

    b = {
        "put4m": phase("Put 4 MiB chunks"),
        "get4m": phase("Get 4 MiB chunks"),
        "get4k_1": phase("Get 4 KiB one at a time"),
        "put4k_32": phase("Put 4 KiB chunks, 32 in flight"),
        "get4k_32": phase("Get 4 KiB chunks, 32 in flight"),
    }
    if baselines:
        b["disk"] = phase("Baseline: file write + fdatasync per 4 MiB")
    return bench, b


def load(work):
    beeline, b = bench_phases(os.path.join(work, "beeline.json"), True)
    # The same node and workload through shared memory (issue #13), when it ran.
    shm_path = os.path.join(work, "beeline-shm.json")
    shm = bench_phases(shm_path, False)[1] if os.path.exists(shm_path) else None
    peers = {}
    with open(os.path.join(work, "raw.tsv")) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            entry = {
                "bytes": int(row["bytes"]),
                "ops": int(row["ops"]),
                "wall": float(row["wall_s"]),
                "cpu": float(row["cpu_s"]),
            }
            entry["gbps"] = entry["bytes"] / entry["wall"] / GB
            entry["ops_s"] = entry["ops"] / entry["wall"]
            entry["cpu_per_gb"] = entry["cpu"] / (entry["bytes"] / GB)
            latency = row["latency_file"]
            if latency.startswith("lat-"):
                with open(os.path.join(work, latency)) as lf:
                    samples = [float(line) * 1e6 for line in lf if line.strip()]
                entry["p50"], entry["p99"] = percentile(samples, 0.50), percentile(samples, 0.99)
                entry["samples"] = len(samples)
            elif latency.startswith("redis-"):
                with open(os.path.join(work, latency)) as lf:
                    rows = list(csv.DictReader(lf))
                # redis-benchmark's own figures: requests/s and latency in ms.
                entry["ops_s_redis"] = float(rows[0]["rps"])
                entry["p50"] = float(rows[0]["p50_latency_ms"]) * 1e3
                entry["p99"] = float(rows[0]["p99_latency_ms"]) * 1e3
            peers[row["name"]] = entry
    with open(os.path.join(work, "iperf.json")) as f:
        iperf = json.load(f)
    iperf_gbps = iperf["end"]["sum_received"]["bits_per_second"] / 8 / GB
    return beeline, b, shm, peers, iperf_gbps


def main():
    work, svg_path, machine, start, load_end, commit, command = sys.argv[1:8]
    beeline, b, shm, p, iperf_gbps = load(work)
    node_cpu = lambda phase: phase.get("node_cpu_seconds_per_gb", float("nan"))  # noqa: E731

    # (workload, Beeline value, peer name, peer value, unit, higher is better, target ratio or None)
    rows = [
        ("4 MiB GET throughput", b["get4m"]["gb_per_second"], "nginx HTTP sendfile", p["nginx_http_get4m"]["gbps"], "GB/s", True, 0.75),
        ("4 MiB GET throughput", b["get4m"]["gb_per_second"], "nginx HTTPS (TLS 1.3 AES-GCM)", p["nginx_https_get4m"]["gbps"], "GB/s", True, 1.0),
        ("4 MiB GET throughput", b["get4m"]["gb_per_second"], "iperf3 TCP loopback", iperf_gbps, "GB/s", True, None),
        ("4 MiB PUT throughput, durable", b["put4m"]["gb_per_second"], "disk floor (4 MiB write + fdatasync)", b["disk"]["gb_per_second"], "GB/s", True, 0.9),
        ("4 MiB PUT throughput", b["put4m"]["gb_per_second"], "nginx HTTP WebDAV PUT (not synced)", p["nginx_http_put4m"]["gbps"], "GB/s", True, None),
        ("4 MiB PUT throughput", b["put4m"]["gb_per_second"], "nginx HTTPS WebDAV PUT (not synced)", p["nginx_https_put4m"]["gbps"], "GB/s", True, None),
        ("4 KiB GET, 1 in flight, p50", b["get4k_1"]["latency_us"]["p50"], "Redis GET -c 1", p["redis_get_c1"]["p50"], "µs", False, 1.0),
        ("4 KiB GET, 1 in flight, p99", b["get4k_1"]["latency_us"]["p99"], "Redis GET -c 1", p["redis_get_c1"]["p99"], "µs", False, 1.0),
        ("4 KiB GET, 1 in flight, p50", b["get4k_1"]["latency_us"]["p50"], "nginx HTTP GET (curl, kept alive)", p["nginx_http_get4k"]["p50"], "µs", False, None),
        ("4 KiB GET, 1 in flight, ops/s", b["get4k_1"]["ops_per_second"], "Redis GET -c 1", p["redis_get_c1"]["ops_s_redis"], "ops/s", True, None),
        ("4 KiB GET, 32 in flight, ops/s", b["get4k_32"]["ops_per_second"], "Redis GET -c 32", p["redis_get_c32"]["ops_s_redis"], "ops/s", True, 1.0),
        ("4 KiB PUT, 32 in flight, ops/s (durable vs not)", b["put4k_32"]["ops_per_second"], "Redis SET -c 32 (no persistence)", p["redis_set_c32"]["ops_s_redis"], "ops/s", True, None),
        ("server CPU-s/GB, 4 MiB GET", node_cpu(b["get4m"]), "nginx HTTPS worker", p["nginx_https_get4m"]["cpu_per_gb"], "CPU-s/GB", False, 1.0),
        ("server CPU-s/GB, 4 MiB GET", node_cpu(b["get4m"]), "nginx HTTP worker", p["nginx_http_get4m"]["cpu_per_gb"], "CPU-s/GB", False, None),
        ("server CPU-s/GB, 4 MiB PUT", node_cpu(b["put4m"]), "nginx HTTPS worker (PUT)", p["nginx_https_put4m"]["cpu_per_gb"], "CPU-s/GB", False, None),
        ("server CPU-s/GB, 4 KiB GET 32 in flight", node_cpu(b["get4k_32"]), "redis-server (GET -c 32)", p["redis_get_c32"]["cpu_per_gb"], "CPU-s/GB", False, None),
    ]
    if shm is not None:
        # Issue #13's shared-memory targets: the same bench and node, `--transport shm`.
        rows += [
            ("shm: 4 MiB GET throughput", shm["get4m"]["gb_per_second"], "Beeline UDP, same run", b["get4m"]["gb_per_second"], "GB/s", True, 1.5),
            ("shm: 4 MiB GET throughput", shm["get4m"]["gb_per_second"], "nginx HTTP sendfile", p["nginx_http_get4m"]["gbps"], "GB/s", True, 1.0),
            ("shm: node CPU-s/GB, 4 MiB PUT", node_cpu(shm["put4m"]), "Beeline UDP PUT, same run", node_cpu(b["put4m"]), "CPU-s/GB", False, 0.5),
            ("shm: 4 KiB GET, 1 in flight, p50", shm["get4k_1"]["latency_us"]["p50"], "Beeline UDP, same run", b["get4k_1"]["latency_us"]["p50"], "µs", False, 0.5),
            ("shm: 4 MiB PUT throughput, durable", shm["put4m"]["gb_per_second"], "Beeline UDP, same run", b["put4m"]["gb_per_second"], "GB/s", True, None),
        ]

    def fmt(value):
        if math.isnan(value):
            return "–"
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}"

    out = []
    out.append(f"- Machine: {machine}")
    out.append(f"- Started: {start}; load average at the end {load_end}")
    out.append(f"- Commit: {commit}")
    out.append(f"- Command: `{command}`")
    out.append(f"- Beeline node: {beeline['target']}")
    out.append(f"- Beeline workload: {beeline['workload']}")
    out.append("")
    out.append("Ratio = Beeline ÷ peer. For latency and CPU-s/GB lower is better, so the target is a ratio at most 1.")
    out.append("")
    out.append("| Workload | Beeline | Peer | Peer value | Unit | Ratio | Target | Met |")
    out.append("|---|---:|---|---:|---|---:|---|---|")
    plotted = []
    for workload, mine, peer, theirs, unit, higher, target in rows:
        ratio = mine / theirs if theirs and not math.isnan(theirs) else float("nan")
        if target is None:
            target_text, met = "–", ""
        else:
            target_text = f"≥ {target}" if higher else f"≤ {target}"
            met = "yes" if (ratio >= target if higher else ratio <= target) else "**no**"
        out.append(f"| {workload} | {fmt(mine)} | {peer} | {fmt(theirs)} | {unit} | {ratio:.3f} | {target_text} | {met} |")
        plotted.append((f"{workload} vs {peer}", ratio, target, higher))

    out.append("")
    out.append("Raw numbers (GB = 10^9 bytes; server CPU from utime+stime of the server process in /proc/PID/stat):")
    out.append("")
    out.append("| Measurement | Bytes | Ops | Wall s | GB/s | ops/s | p50 µs | p99 µs | Server CPU s | Server CPU-s/GB |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, label in [
        ("put4m", "Beeline PUT 4 MiB chunks (durable)"),
        ("get4m", "Beeline GET 4 MiB chunks"),
        ("get4k_1", "Beeline GET 4 KiB, 1 in flight"),
        ("put4k_32", "Beeline PUT 4 KiB, 32 in flight (durable)"),
        ("get4k_32", "Beeline GET 4 KiB, 32 in flight"),
        ("disk", "Disk floor: 4 MiB write(2) + fdatasync each"),
    ]:
        phase = b[key]
        latency = phase.get("latency_us", {})
        out.append(
            "| {} | {} | {} | {:.3f} | {:.3f} | {} | {} | {} | {} | {} |".format(
                label,
                phase["bytes"],
                phase.get("ops", "–"),
                phase["wall_seconds"],
                phase["gb_per_second"],
                fmt(phase["ops_per_second"]) if "ops_per_second" in phase else "–",
                fmt(latency["p50"]) if latency else "–",
                fmt(latency["p99"]) if latency else "–",
                fmt(phase["node_cpu_seconds"]) if "node_cpu_seconds" in phase else "–",
                fmt(phase["node_cpu_seconds_per_gb"]) if "node_cpu_seconds_per_gb" in phase else "–",
            )
        )
    for name, entry in p.items():
        ops = entry.get("ops_s_redis", entry["ops_s"])
        out.append(
            "| {} | {} | {} | {:.3f} | {:.3f} | {} | {} | {} | {} | {} |".format(
                name,
                entry["bytes"],
                entry["ops"],
                entry["wall"],
                entry["gbps"],
                fmt(ops),
                fmt(entry["p50"]) if "p50" in entry else "–",
                fmt(entry["p99"]) if "p99" in entry else "–",
                fmt(entry["cpu"]),
                fmt(entry["cpu_per_gb"]),
            )
        )
    out.append(f"| iperf3 TCP loopback | | | | {iperf_gbps:.3f} | | | | | |")
    out.append("")
    out.append(
        "Redis rows: ops/s and latency are redis-benchmark's own (`--csv`); wall and CPU are measured "
        "around the whole redis-benchmark process (includes its connection set-up). nginx rows: wall "
        "around the one curl process; 4 KiB latency from curl's `%{time_total}` per transfer."
    )
    print("\n".join(out))
    with open(svg_path, "w") as f:
        f.write(svg(plotted))


def svg(rows):
    """Horizontal bars of Beeline ÷ peer on a log scale, with each row's target marked."""
    width, left, right, row_h, top = 980, 430, 30, 24, 50
    height = top + row_h * len(rows) + 50
    lo, hi = 0.001, 10.0
    span = width - left - right

    def x(ratio):
        ratio = min(max(ratio, lo), hi)
        return left + span * (math.log10(ratio) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">Beeline ÷ peer on the same machine '
        "(log scale; for latency and CPU-s/GB lower is better)</text>",
    ]
    for decade in range(-3, 2):
        ratio = 10.0**decade
        parts.append(
            f'<line x1="{x(ratio):.1f}" y1="{top - 8}" x2="{x(ratio):.1f}" y2="{top + row_h * len(rows)}" '
            f'stroke="#{"888" if decade == 0 else "ddd"}"/>'
        )
        parts.append(
            f'<text x="{x(ratio):.1f}" y="{top + row_h * len(rows) + 16}" text-anchor="middle">{ratio:g}×</text>'
        )
    for index, (label, ratio, target, higher) in enumerate(rows):
        y = top + index * row_h
        if target is None:
            colour = "#8aa4c8"
        else:
            colour = "#4a9a4a" if (ratio >= target if higher else ratio <= target) else "#c84a4a"
        parts.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        if not math.isnan(ratio):
            parts.append(
                f'<rect x="{left}" y="{y + 4}" width="{x(ratio) - left:.1f}" height="{row_h - 8}" fill="{colour}"/>'
            )
            parts.append(f'<text x="{x(ratio) + 4:.1f}" y="{y + 15}">{ratio:.3g}</text>')
        if target is not None:
            parts.append(
                f'<line x1="{x(target):.1f}" y1="{y + 1}" x2="{x(target):.1f}" y2="{y + row_h - 1}" '
                'stroke="black" stroke-width="2"/>'
            )
    parts.append(
        f'<text x="{left}" y="{height - 12}">green: meets its target (black tick); red: misses it; '
        "blue: no target, for context</text>"
    )
    parts.append("</svg>\n")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
