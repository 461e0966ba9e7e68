#!/usr/bin/env bash
# What automatic tagging costs the put path, in one run: a cluster (redis-server and two
# nodes, two replicas) takes the same durable puts of 4 MiB text files with no tagger and
# with one `beeline tagger run` working beside them, in alternating rounds (off, on, off,
# on, ...) so that drift of a shared machine hits both alike. The tagger reads every new
# file back and extracts its keywords while the next puts run, on the same cores.
#
# Prints a Markdown table: each round's put throughput, the median of each side and their
# ratio, and how many files the tagger tagged. Idempotent; everything started is stopped
# and the temporary directory removed on exit.
#
#   ci/bench-tagger.sh [> report.md]
#
# Environment (defaults in brackets):
#   BENCH_FILES   4 MiB files put per round [24]
#   BENCH_ROUNDS  rounds per side [3]
#   BENCH_DIR     parent of the temporary directory [/var/tmp]
#   BEELINE_BIN   the beeline binary [target/release/beeline, built if missing]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/setup.sh
source ci/setup.sh >&2

files="${BENCH_FILES:-24}"
rounds="${BENCH_ROUNDS:-3}"
beeline="${BEELINE_BIN:-$PWD/target/release/beeline}"
[[ -x $beeline ]] || cargo build --release --locked -p beeline >&2
work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/beeline-bench-tagger.XXXXXX")"
redis_port=6579
export BEELINE_METADATA="redis://127.0.0.1:$redis_port" BEELINE_KEY_FILE="$work/cluster.key"
pids=()
tagger_pid=""
cleanup() {
    for pid in $tagger_pid "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $tagger_pid "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/redis" "$work/in"
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work/redis" --save "" --appendonly yes \
    --appendfsync always --daemonize no --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 1 200); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
for i in 1 2; do
    "$beeline" node run --listen "127.0.0.1:788$i" --data-dir "$work/node$i" --hugepages off 2>"$work/node$i.log" &
    pids+=($!)
done
live_nodes() { "$beeline" cluster status 2>/dev/null | sed -n 's/^nodes: *[0-9]* (\([0-9]*\) live)/\1/p'; }
for _ in $(seq 1 300); do [[ "$(live_nodes)" == 2 ]] && break; sleep 0.05; done
[[ "$(live_nodes)" == 2 ]] || {
    tail -n 5 "$work"/node*.log >&2
    echo "ci/bench-tagger.sh: the two nodes did not come up (logs above)" >&2
    exit 1
}

# Text with a vocabulary like the project's own docs, different in every file, so the
# keyword extractor does real work on each.
python3 - "$work/in" "$files" <<'EOF'
import random, re, sys, pathlib
words = re.findall(r"[A-Za-z]{3,}", " ".join(p.read_text() for p in pathlib.Path("docs").glob("*.md")))
out, count = pathlib.Path(sys.argv[1]), int(sys.argv[2])
for i in range(count):
    rng = random.Random(i)
    text, size = [], 0
    while size < 4 << 20:
        line = " ".join(rng.choice(words) for _ in range(14)) + ".\n"
        text.append(line)
        size += len(line)
    (out / f"f{i}.txt").write_bytes("".join(text).encode()[: 4 << 20])
EOF

# One round: every file put once under a name unique to the round; prints MB/s.
put_round() {
    local round=$1 start_ns end_ns
    start_ns=$(date +%s%N)
    for i in $(seq 0 $((files - 1))); do
        "$beeline" put "$work/in/f$i.txt" --as "r$round/f$i.txt" >/dev/null
    done
    end_ns=$(date +%s%N)
    python3 -c "print(f'{$files * 4 * 1.048576 / (($end_ns - $start_ns) / 1e9):.1f}')"
}

declare -a off on
tagged=0
for round in $(seq 1 "$rounds"); do
    off+=("$(put_round "off$round")")
    "$beeline" tagger run --consumer bench --metrics-listen 127.0.0.1:9879 2>"$work/tagger$round.log" &
    tagger_pid=$!
    on+=("$(put_round "on$round")")
    round_tagged="$(curl -sf http://127.0.0.1:9879/metrics | awk '$1 == "beeline_tagger_files_tagged_total" {print $2}')"
    tagged=$((tagged + ${round_tagged:-0}))
    kill -TERM "$tagger_pid"
    wait "$tagger_pid" 2>/dev/null || true
    tagger_pid=""
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
off_median="$(median "${off[@]}")"
on_median="$(median "${on[@]}")"

echo "| round | put MB/s, no tagger | put MB/s, tagger running |"
echo "|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
    echo "| $round | ${off[round - 1]} | ${on[round - 1]} |"
done
echo "| **median** | **$off_median** | **$on_median** |"
echo
echo "ratio (tagger running / none): $(python3 -c "print(f'{$on_median / $off_median:.2f}')")x;" \
    "$files files of 4 MiB per round, $rounds rounds per side; files the tagger tagged during the puts: $tagged"
