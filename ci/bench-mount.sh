#!/usr/bin/env bash
# `cp` of a large file into and out of `beeline mount`, each followed by `sync`, side by
# side with the same `cp` + `sync` between two directories of the local disk, in one run
# (alternating rounds, so that drift of a shared machine hits both alike). One node
# (release build, udp backend, data on the local disk under BENCH_DIR) and one mount on
# it. The mount's spool directory is on the same disk.
#
# Prints a Markdown table of each round's MB/s and the medians' ratios (mount / disk),
# with `beeline put` + sync and `beeline get` of the same file as the transport's own
# ceiling (the client library over UDP loopback, which the mount uses underneath).
# Everything started is stopped, unmounted and the temporary directory removed on exit.
#
#   ci/bench-mount.sh [> report.md]
#
# Environment (defaults in brackets):
#   BENCH_MIB     size of the file copied, MiB [1024]
#   BENCH_ROUNDS  rounds per side [3]
#   BENCH_DIR     parent of the temporary directory, on the disk measured [/var/tmp]
#   BEELINE_BIN   the beeline binary [target/release/beeline, built if missing]
#   BENCH_MOUNT_ARGS  extra flags for `beeline mount`, such as --direct-reads [none]
#   BENCH_NODE_ARGS   extra flags for `beeline node run`, such as --drop-written-pages [none]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/setup.sh
source ci/setup.sh >&2

mib="${BENCH_MIB:-1024}"
rounds="${BENCH_ROUNDS:-3}"
beeline="${BEELINE_BIN:-$PWD/target/release/beeline}"
[[ -x $beeline ]] || cargo build --release --locked -p beeline >&2
work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/beeline-bench-mount.XXXXXX")"
port=7987
export BEELINE_NODE="127.0.0.1:$port" BEELINE_KEY_FILE="$work/cluster.key"
node_pid=""
mount_pid=""
cleanup() {
    if mountpoint -q "$work/mnt" 2>/dev/null; then fusermount3 -u -z "$work/mnt" || true; fi
    for pid in $mount_pid $node_pid; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $mount_pid $node_pid; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/mnt" "$work/a" "$work/b" "$work/out" "$work/spool"
# --auto-tag false: the node's own tagger would read every copied file back while timed.
# shellcheck disable=SC2086 # word splitting on purpose: a list of flags
"$beeline" node run --listen "$BEELINE_NODE" --data-dir "$work/node" --hugepages off --auto-tag false \
    ${BENCH_NODE_ARGS:-} 2>"$work/node.log" &
node_pid=$!
for _ in $(seq 1 300); do "$beeline" node ping >/dev/null 2>&1 && break; sleep 0.05; done
"$beeline" node ping >/dev/null || { tail -n 5 "$work/node.log" >&2; exit 1; }
# shellcheck disable=SC2086 # word splitting on purpose: a list of flags
"$beeline" mount "$work/mnt" --spool-dir "$work/spool" ${BENCH_MOUNT_ARGS:-} 2>"$work/mount.log" &
mount_pid=$!
for _ in $(seq 1 300); do mountpoint -q "$work/mnt" && break; sleep 0.05; done
mountpoint -q "$work/mnt" || { tail -n 5 "$work/mount.log" >&2; exit 1; }

head -c "$((mib << 20))" /dev/urandom >"$work/a/file"
sync

# Seconds one command (then sync) takes, as MB/s of the file.
timed() {
    local start_ns end_ns
    start_ns=$(date +%s%N)
    "$@"
    sync
    end_ns=$(date +%s%N)
    python3 -c "print(f'{$mib * 1.048576 / (($end_ns - $start_ns) / 1e9):.1f}')"
}
quiet() { "$@" >/dev/null; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

declare -a disk_in mount_in disk_out mount_out cli_put cli_get
for round in $(seq 1 "$rounds"); do
    drop_caches
    disk_in+=("$(timed cp "$work/a/file" "$work/b/file$round")")
    drop_caches
    mount_in+=("$(timed cp "$work/a/file" "$work/mnt/file$round")")
    drop_caches
    disk_out+=("$(timed cp "$work/b/file$round" "$work/out/disk$round")")
    drop_caches
    mount_out+=("$(timed cp "$work/mnt/file$round" "$work/out/mount$round")")
    cmp "$work/a/file" "$work/out/mount$round"
    drop_caches
    cli_put+=("$(timed quiet "$beeline" put "$work/a/file" --as "cli$round")")
    drop_caches
    cli_get+=("$(timed quiet "$beeline" get "cli$round" -o "$work/out/cli$round")")
    "$beeline" rm "cli$round" >/dev/null
    rm -f "$work/out/cli$round"
    rm -f "$work/b/file$round" "$work/out/disk$round" "$work/out/mount$round" "$work/mnt/file$round"
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

echo "| round | cp in, disk MB/s | cp in, mount MB/s | cp out, disk MB/s | cp out, mount MB/s | beeline put MB/s | beeline get MB/s |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for round in $(seq 1 "$rounds"); do
    i=$((round - 1))
    echo "| $round | ${disk_in[i]} | ${mount_in[i]} | ${disk_out[i]} | ${mount_out[i]} | ${cli_put[i]} | ${cli_get[i]} |"
done
di="$(median "${disk_in[@]}")" mi="$(median "${mount_in[@]}")"
do_="$(median "${disk_out[@]}")" mo="$(median "${mount_out[@]}")"
cp_="$(median "${cli_put[@]}")" cg="$(median "${cli_get[@]}")"
echo "| **median** | **$di** | **$mi** | **$do_** | **$mo** | **$cp_** | **$cg** |"
echo
echo "ratio mount / disk: cp in $(ratio "$mi" "$di")x, cp out $(ratio "$mo" "$do_")x" \
    "($mib MiB file, cp then sync, $rounds rounds per side, page cache dropped before each copy, mount flags: ${BENCH_MOUNT_ARGS:-none}, node flags: ${BENCH_NODE_ARGS:-none});" \
    "mount / beeline put-get: in $(ratio "$mi" "$cp_")x, out $(ratio "$mo" "$cg")x"
echo
echo "The mount's log on the page cache: $(grep -o 'write-only opens.*\|writes.* go through the page cache.*' "$work/mount.log" | head -n 1)"
