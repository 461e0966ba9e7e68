#!/usr/bin/env bash
# Every `vagrant up`/`vagrant reload` of a storage VM (run: "always"), after Vagrant has set
# up the NICs: (re)start beeline-node.service, whose ExecStartPre binds the data NIC to
# vfio-pci, and wait until the node serves its health endpoint. Also the way to start the
# node by hand after a reboot: `sudo bash /vagrant/vagrant/provision/store-start.sh`.
set -euo pipefail
# shellcheck source=lib.sh
source "${BEELINE_SRC:-/vagrant}/vagrant/provision/lib.sh"
require_root

# shellcheck source=/dev/null
source "$BEELINE_NIC_RECORD"
log "binding the data NIC, then checking this VM against the virtio hardware profile"
/usr/local/sbin/beeline-dpdk-bind
if ! (cd "$BEELINE_SRC" && beeline hw check --profile virtio --device "$BEELINE_DPDK_PCI"); then
    die "beeline hw check --profile virtio --device $BEELINE_DPDK_PCI failed (above): the node would not start"
fi

log "starting beeline-node"
systemctl restart beeline-node || true
# The reply to GET /health on the node's metrics port (no curl in the box: bash's /dev/tcp),
# waiting $1 s at most: under TCG on a busy host one vCPU answers slowly.
# In a subshell: a refused connection fails `exec`'s redirection, which would end the
# whole script (and with it the diagnostics below), not just this function.
health_reply() (
    exec 3<>/dev/tcp/127.0.0.1/9777 || exit 1
    printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    timeout "$1" cat <&3
)
healthy() {
    systemctl is-active --quiet beeline-node && [[ "$(health_reply 10 2>/dev/null | tr -d '\r' | tail -n 1)" == ok ]]
}
# Who is not answering: the listener's accept queue (a Recv-Q above 0 means connections
# wait for a tokio worker that never comes), each thread's state, wait channel and CPU
# ticks, and the load.
diagnose() {
    local pid task
    pid="$(systemctl show -p MainPID --value beeline-node 2>/dev/null || echo 0)"
    {
        echo "--- ss -ltn sport = :9777 (Recv-Q = connections not yet accepted)"
        ss -ltn 'sport = :9777' || true
        echo "--- threads of beeline-node (pid $pid): name state utime stime wchan"
        for task in /proc/"$pid"/task/*; do
            [[ -r $task/stat ]] || continue
            echo "$(cat "$task/comm") $(cut -d' ' -f3,14,15 <"$task/stat" 2>/dev/null) $(cat "$task/wchan" 2>/dev/null)"
        done
        echo "--- /proc/loadavg: $(cat /proc/loadavg)"
        top -b -n 1 -H -p "$pid" 2>/dev/null | head -20 || true
    } >&2
}
# Healthy twice, 2 s apart: a node whose EAL fails exits (and systemd restarts it) quickly.
deadline_s=$((SECONDS + 300))
while ((SECONDS < deadline_s)); do
    if healthy && sleep 2 && healthy; then
        log "node up after $((SECONDS - deadline_s + 300)) s; metrics on :9777, storage protocol on $(sed -n 's/^listen = //p' /etc/beeline/node.toml)"
        exit 0
    fi
    # Once, a minute in: the state while it is stuck, in case it recovers later.
    if ((SECONDS > deadline_s - 240)) && [[ -z ${diagnosed:-} ]]; then
        diagnosed=1
        echo "--- no answer to /health after a minute; the node's state now:" >&2
        diagnose
    fi
    sleep 2
done
journalctl -u beeline-node -n 40 --no-pager >&2 || true
diagnose
echo "--- the last reply to GET /health on 127.0.0.1:9777 (10 s at most):" >&2
health_reply 10 >&2 || echo "(no reply within 10 s, or no connection)" >&2
echo "--- beeline hw check --profile virtio --device $BEELINE_DPDK_PCI" >&2
(cd "$BEELINE_SRC" && beeline hw check --profile virtio --device "$BEELINE_DPDK_PCI") >&2 || true
die "beeline-node did not answer /health within 5 minutes (journal above; see vagrant/README.md, Troubleshooting)"
