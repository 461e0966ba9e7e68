#!/usr/bin/env bash
# The meta VM: redis-server as the DisGraFS metadata engine on the management network,
# Prometheus scraping the storage nodes (unless BEELINE_PROMETHEUS=no), and the CLI set up
# for the vagrant user. Idempotent: settings are replaced in place, not appended twice.
set -euo pipefail
# shellcheck source=lib.sh
source "${BEELINE_SRC:-/vagrant}/vagrant/provision/lib.sh"
require_root
mgmt_ip="${BEELINE_MGMT_IP:?}"
metadata="redis://$mgmt_ip:6379"

[[ -n "$(iface_by_ip "$mgmt_ip")" ]] || die "no interface carries $mgmt_ip: check the Vagrantfile's mgmt network"

log "redis-server on 127.0.0.1 and $mgmt_ip:6379"
apt_install redis-server
conf=/etc/redis/redis.conf
# Set directive $1 to the rest: drop every active line of it, then append it (a later
# line wins in redis.conf, and re-running gives the same file).
set_redis() {
    local key="$1"
    shift
    sed -i -E "/^${key}[[:space:]]/d" "$conf"
    echo "$key $*" >>"$conf"
}
# Reachable from the storage VMs over the private management network only. Protected
# mode would refuse every non-loopback client because no password is set; the network
# is a host-internal one of throwaway VMs, so it is turned off rather than adding a
# password (docs/metadata.md describes redis://user:password@ URLs for real clusters).
set_redis bind "127.0.0.1 -::1 $mgmt_ip"
set_redis protected-mode no
set_redis appendonly yes
systemctl enable redis-server >/dev/null 2>&1
systemctl restart redis-server
for _ in $(seq 1 50); do
    redis-cli -h "$mgmt_ip" ping >/dev/null 2>&1 && break
    sleep 0.2
done
[[ "$(redis-cli -h "$mgmt_ip" ping 2>&1)" == PONG ]] || die "redis-server does not answer on $mgmt_ip:6379 (journalctl -u redis-server)"
log "redis answers at $metadata"

log "the CLI for the vagrant user: BEELINE_METADATA and the cluster key"
cat >/etc/profile.d/beeline.sh <<EOF
# Written by vagrant/provision/meta.sh: the Beeline CLI talks to this cluster.
export BEELINE_METADATA=$metadata
EOF
install -d -o vagrant -g vagrant -m 0700 /home/vagrant/.config /home/vagrant/.config/beeline
install -o vagrant -g vagrant -m 0600 "$BEELINE_STATE_DIR/cluster.key" /home/vagrant/.config/beeline/cluster.key

if [[ "${BEELINE_PROMETHEUS:-yes}" == yes ]]; then
    log "prometheus scraping ${BEELINE_SCRAPE_TARGETS:?}"
    apt_install prometheus
    install -m 0644 "$BEELINE_SRC/monitoring/alerts.yml" /etc/prometheus/beeline-alerts.yml
    {
        echo "# Written by vagrant/provision/meta.sh from monitoring/prometheus.yml's scrape job,"
        echo "# with this cluster's storage nodes (metrics on their management addresses)."
        echo "global:"
        echo "  scrape_interval: 5s"
        echo "  scrape_timeout: 4s"
        echo "  evaluation_interval: 5s"
        echo "  external_labels:"
        echo "    cluster: beeline-vagrant"
        echo "rule_files:"
        echo "  - beeline-alerts.yml"
        echo "scrape_configs:"
        echo "  - job_name: beeline"
        echo "    metrics_path: /metrics"
        echo "    static_configs:"
        echo "      - targets:"
        IFS=, read -r -a targets <<<"$BEELINE_SCRAPE_TARGETS"
        for target in "${targets[@]}"; do echo "          - $target"; done
    } >/etc/prometheus/prometheus.yml.new
    promtool check config /etc/prometheus/prometheus.yml.new
    mv /etc/prometheus/prometheus.yml.new /etc/prometheus/prometheus.yml
    systemctl enable prometheus >/dev/null 2>&1
    systemctl restart prometheus
    log "prometheus on http://$mgmt_ip:9090 (from the host: vagrant ssh meta -- -L 9090:localhost:9090)"
else
    log "prometheus skipped (BEELINE_VAGRANT_PROMETHEUS=no on the host)"
fi
log "meta ready: metadata at $metadata"
