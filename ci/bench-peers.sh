#!/usr/bin/env bash
# Beeline beside nginx, Redis and iperf3 on this machine, on the same bytes, in one run:
#
#   - Beeline: a node in its own process (`beeline node run`, udp backend on 127.0.0.1,
#     its own data dir) driven by `beeline bench --node ... --node-pid ... --in-flight 32`:
#     durable 4 MiB puts, 4 MiB gets, 4 KiB gets one at a time (p50/p99), 4 KiB puts and
#     gets 32 in flight; its own baselines include the disk floor (4 MiB write(2) +
#     fdatasync each, in the same directory as the node's data). The same bench runs a
#     second time over shared memory (`--transport shm`) against the same node.
#   - nginx (worker_processes 1, its own config): sendfile GET of a 4 MiB and a 4 KiB file
#     and WebDAV PUT of 4 MiB, over plain HTTP and HTTPS (TLS 1.3, AES-128-GCM,
#     self-signed), driven by curl: one curl, many URLs, one kept-alive connection.
#   - Redis: redis-server (no persistence) and redis-benchmark SET/GET of 4096 bytes, -c 1
#     and -c 32, no pipelining.
#   - iperf3: TCP on loopback, the kernel's ceiling.
#   - CPU-seconds per GB served by each server process (beeline node, nginx worker,
#     redis-server), from utime+stime in /proc/PID/stat around every workload.
#
# Prints a Markdown report (table + raw numbers) and, when BENCH_SVG is set, writes the plot
# there (to update the tracked plot: BENCH_SVG=docs/benchmarks/peers.svg); a run only for
# measuring leaves the working tree alone.
# Idempotent: installs what is missing (ci/setup.sh, then nginx, redis-tools, iperf3, curl),
# builds the release binary if needed; everything started is stopped and the temporary
# directory removed on exit. About 3 minutes with the defaults on an idle 2-core machine.
#
#   ci/bench-peers.sh [> report.md]
#
# Environment (defaults in brackets):
#   BENCH_MIB        MiB moved per 4 MiB workload [256]
#   BENCH_OPS        4 KiB ops per Beeline small-op phase and per curl latency run [20000]
#   BENCH_REDIS_C1   redis-benchmark requests with -c 1 [50000]
#   BENCH_REDIS_C32  redis-benchmark requests with -c 32 [200000]
#   BENCH_IPERF_S    iperf3 seconds [3]
#   BENCH_DIR        parent of the temporary directory (data dirs, files, disk floor) [/var/tmp]
#   BENCH_SVG        where the plot goes [none: no plot]
#   BENCH_NODE_ARGS  extra flags for the Beeline node, such as --drop-written-pages [none]
#   BEELINE_BIN      the beeline binary [target/release/beeline, built if missing]
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=ci/setup.sh
source ci/setup.sh

peer_packages=(nginx redis-tools redis-server iperf3 curl openssl python3)
peer_missing=()
for package in "${peer_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        peer_missing+=("$package")
    fi
done
if ((${#peer_missing[@]} > 0)); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bench-peers.sh: missing Debian packages ${peer_missing[*]}: run as root (or: sudo apt-get install ${peer_missing[*]})" >&2
        exit 1
    fi
    echo "bench-peers.sh: installing ${peer_missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${peer_missing[@]}" >&2
fi

mib=${BENCH_MIB:-256}
ops=${BENCH_OPS:-20000}
redis_c1=${BENCH_REDIS_C1:-50000}
redis_c32=${BENCH_REDIS_C32:-200000}
iperf_seconds=${BENCH_IPERF_S:-3}
svg=${BENCH_SVG:-}
bin=${BEELINE_BIN:-target/release/beeline}
for value in "$mib" "$ops" "$redis_c1" "$redis_c32" "$iperf_seconds"; do
    [[ $value =~ ^[1-9][0-9]*$ ]] || { echo "bench-peers.sh: $value is not a positive integer (see BENCH_* at the top)" >&2; exit 2; }
done
if ((mib % 4 != 0 || mib > 16384)); then
    echo "bench-peers.sh: BENCH_MIB=$mib must be a multiple of 4, at most 16384" >&2
    exit 2
fi
if [[ ! -x $bin ]]; then
    echo "bench-peers.sh: building $bin" >&2
    cargo build --release --locked -p beeline >&2
fi
big_count=$((mib / 4))

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/beeline-bench-peers.XXXXXX")
node_pid="" nginx_pid="" redis_pid="" iperf_pid=""
stop() {
    if [[ -n $1 ]]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
cleanup() {
    stop "$node_pid"
    stop "$nginx_pid"
    stop "$redis_pid"
    stop "$iperf_pid"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench-peers.sh: $*" >&2; }
# CPU ticks (utime + stime, all threads) of a process; the command name may hold spaces.
ticks() {
    local stat fields
    stat=$(<"/proc/$1/stat")
    read -r -a fields <<< "${stat##*) }"
    echo $((fields[11] + fields[12]))
}
# wait_port PORT PID: until something listens on 127.0.0.1:PORT (TCP), or PID is gone.
# Asks ss rather than connecting: a probe connection would be iperf3 -1's one client.
wait_port() {
    local deadline=$((SECONDS + 30))
    until [[ -n $(ss -Hltn "sport = :$1") ]]; do
        kill -0 "$2" 2>/dev/null || { log "the server on port $1 exited during start-up"; return 1; }
        ((SECONDS < deadline)) || { log "nothing listens on port $1 after 30 s"; return 1; }
        sleep 0.1
    done
}
read -r p_node p_http p_https p_redis p_iperf < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
raw=$work/raw.tsv
printf 'name\tserver\tbytes\tops\twall_s\tcpu_s\tlatency_file\n' > "$raw"
# measured NAME SERVER-PID BYTES OPS LATENCY-FILE -- COMMAND... (LATENCY-FILE: a name in $work): wall time and the server's
# CPU-seconds around COMMAND, one line of $raw.
measured() {
    local name=$1 pid=$2 bytes=$3 count=$4 latency=$5
    shift 6
    local c0 t0 t1 c1
    c0=$(ticks "$pid") t0=$EPOCHREALTIME
    "$@"
    t1=$EPOCHREALTIME c1=$(ticks "$pid")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$pid" "$bytes" "$count" \
        "$(python3 -c "print($t1 - $t0)")" "$(python3 -c "print(($c1 - $c0) / $(getconf CLK_TCK))")" "$latency" >> "$raw"
}

machine_start="$(date -u '+%Y-%m-%d %H:%M:%SZ'); load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- Beeline ---------------------------------------------------------------------------
log "beeline node on 127.0.0.1:$p_node"
# shellcheck disable=SC2086 # word splitting on purpose: a list of flags
"$bin" node run --listen "127.0.0.1:$p_node" --data-dir "$work/beeline-data" --key-file "$work/cluster.key" \
    --frame-bytes 8192 --hugepages off --repair-interval-ms 0 --auto-tag false ${BENCH_NODE_ARGS:-} \
    2> "$work/node.log" &
node_pid=$!
deadline=$((SECONDS + 60))
until "$bin" node ping --node "127.0.0.1:$p_node" --key-file "$work/cluster.key" > /dev/null 2>&1; do
    if ! kill -0 "$node_pid" 2>/dev/null || ((SECONDS > deadline)); then
        log "the node did not come up; its log:"
        cat "$work/node.log" >&2
        exit 1
    fi
    sleep 0.1
done
log "beeline bench: $mib MiB of 4 MiB chunks, $ops 4 KiB gets one at a time, $ops 4 KiB puts and gets 32 in flight"
"$bin" bench --node "127.0.0.1:$p_node" --key-file "$work/cluster.key" --node-pid "$node_pid" \
    --chunks "$big_count" --ops "$ops" --op-bytes 4096 --in-flight 32 --dir "$work" \
    --json --output "$work/beeline.json" > /dev/null
log "beeline bench over shared memory (the same node and workload, no baselines)"
"$bin" bench --node "127.0.0.1:$p_node" --key-file "$work/cluster.key" --node-pid "$node_pid" \
    --chunks "$big_count" --ops "$ops" --op-bytes 4096 --in-flight 32 --dir "$work" --no-baselines \
    --transport shm --json --output "$work/beeline-shm.json" > /dev/null
stop "$node_pid"
node_pid=""

# --- nginx -----------------------------------------------------------------------------
mkdir -p "$work/www/up"
head -c $((4 << 20)) /dev/urandom > "$work/www/obj4m"
head -c 4096 /dev/urandom > "$work/www/obj4k"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2> /dev/null
# shellcheck source=ci/nginx-peer.sh
source ci/nginx-peer.sh
nginx_peer_conf "$work" "        listen 127.0.0.1:$p_http;
        listen 127.0.0.1:$p_https ssl;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        ssl_protocols TLSv1.3;
        client_max_body_size 8m;
        client_body_buffer_size 4m;
        root $work/www;
        location /up/ { dav_methods PUT; create_full_put_path on; }"
nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx-error.log" &
nginx_pid=$!
wait_port "$p_http" "$nginx_pid"
wait_port "$p_https" "$nginx_pid"
worker=$(pgrep -P "$nginx_pid" | head -n 1)
[[ -n $worker ]] || { log "no nginx worker under pid $nginx_pid"; exit 1; }

# curl_config FILE COUNT URL [UPLOAD]: COUNT transfers of URL (uploading UPLOAD) to /dev/null.
curl_config() {
    local i
    for ((i = 0; i < $2; i++)); do
        if [[ -n ${4:-} ]]; then
            printf 'upload-file = "%s"\nurl = "%s%s"\noutput = "/dev/null"\n' "$4" "$3" "$i"
        else
            printf 'url = "%s"\noutput = "/dev/null"\n' "$3"
        fi
    done > "$1"
}
curl_config "$work/get4m.cfg" "$big_count" "/obj4m"
curl_config "$work/get4k.cfg" "$ops" "/obj4k"
curl_config "$work/put4m.cfg" "$big_count" "/up/obj" "$work/www/obj4m"
for scheme in http https; do
    if [[ $scheme == http ]]; then port=$p_http tls=(); else port=$p_https tls=(-k --tlsv1.3 --tls13-ciphers TLS_AES_128_GCM_SHA256); fi
    base="$scheme://127.0.0.1:$port"
    for what in get4m get4k put4m; do
        sed "s|url = \"|url = \"$base|" "$work/$what.cfg" > "$work/$what-$scheme.cfg"
    done
    log "nginx $scheme: GET 4 MiB x $big_count, PUT 4 MiB x $big_count, GET 4 KiB x $ops"
    curl -sS --fail "${tls[@]}" -o /dev/null "$base/obj4k" # warm-up: page cache, TLS session
    measured "nginx_${scheme}_get4m" "$worker" $((big_count << 22)) "$big_count" "" -- \
        curl -sS --fail "${tls[@]}" -K "$work/get4m-$scheme.cfg"
    measured "nginx_${scheme}_put4m" "$worker" $((big_count << 22)) "$big_count" "" -- \
        curl -sS --fail "${tls[@]}" -K "$work/put4m-$scheme.cfg"
    measured "nginx_${scheme}_get4k" "$worker" $((ops * 4096)) "$ops" "lat-$scheme.txt" -- \
        curl -sS --fail "${tls[@]}" -w '%{time_total}\n' -K "$work/get4k-$scheme.cfg" \
        > "$work/lat-$scheme.txt"
    rm -f "$work"/www/up/*
done
cmp "$work/www/obj4m" <(curl -sS "http://127.0.0.1:$p_http/obj4m") || { log "nginx served different bytes"; exit 1; }
stop "$nginx_pid"
nginx_pid=""

# --- Redis -----------------------------------------------------------------------------
redis-server --bind 127.0.0.1 --port "$p_redis" --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" --daemonize no &
redis_pid=$!
wait_port "$p_redis" "$redis_pid"
for clients in 1 32; do
    if ((clients == 1)); then n=$redis_c1; else n=$redis_c32; fi
    for test in set get; do
        log "redis-benchmark -t $test -d 4096 -c $clients -n $n"
        measured "redis_${test}_c$clients" "$redis_pid" $((n * 4096)) "$n" "redis-$test-c$clients.csv" -- \
            redis-benchmark -h 127.0.0.1 -p "$p_redis" -t "$test" -d 4096 -c "$clients" -n "$n" -P 1 --csv \
            > "$work/redis-$test-c$clients.csv"
    done
done
stop "$redis_pid"
redis_pid=""

# --- iperf3 ----------------------------------------------------------------------------
iperf3 -s -B 127.0.0.1 -p "$p_iperf" -1 > /dev/null 2>&1 &
iperf_pid=$!
wait_port "$p_iperf" "$iperf_pid"
log "iperf3 TCP on loopback, $iperf_seconds s"
iperf3 -c 127.0.0.1 -p "$p_iperf" -t "$iperf_seconds" -J > "$work/iperf.json"
wait "$iperf_pid" 2>/dev/null || true
iperf_pid=""

# --- Report ----------------------------------------------------------------------------
machine="$(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM, kernel $(uname -r)"
[[ -n $svg ]] || svg="$work/peers.svg"
mkdir -p "$(dirname "$svg")"
python3 ci/bench-peers-report.py "$work" "$svg" "$machine" "$machine_start" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "BENCH_MIB=$mib BENCH_OPS=$ops BENCH_REDIS_C1=$redis_c1 BENCH_REDIS_C32=$redis_c32 BENCH_IPERF_S=$iperf_seconds${BENCH_NODE_ARGS:+ BENCH_NODE_ARGS='$BENCH_NODE_ARGS'} ci/bench-peers.sh"
