# shellcheck shell=bash
# Sourced by the benchmarks that run nginx as a peer (bench-peers.sh, bench-dpdk.sh).
#
# nginx_peer_conf WORK SERVER: writes WORK/nginx.conf for one nginx master in the
# foreground with one worker, running as whoever runs the script (so it can read the 0700
# temporary directory WORK), sendfile on, no access log, every temporary path under
# WORK/nginx-tmp, and SERVER (listen lines, root, locations) inside its one server block.
nginx_peer_conf() {
    local work=$1 server=$2
    mkdir -p "$work/nginx-tmp"
    cat > "$work/nginx.conf" << EOF
user $(id -un) $(id -gn);
worker_processes 1;
daemon off;
error_log $work/nginx-error.log;
pid $work/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx-tmp;
    proxy_temp_path $work/nginx-tmp;
    fastcgi_temp_path $work/nginx-tmp;
    uwsgi_temp_path $work/nginx-tmp;
    scgi_temp_path $work/nginx-tmp;
    types { }
    default_type application/octet-stream;
    server {
$server
    }
}
EOF
}
