//! `beeline-dpdk-forward`'s loop: frames moved between two DPDK ports (a vhost-user port
//! and a tap, the hypervisor's side of a VM's virtio NIC), spread over queues by flow.
//! Split from `dpdk.rs`; the same `unsafe` rules hold (every block names its invariant).

use super::*;

/// What [`forward`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Frames moved from port 0 to port 1, and from port 1 to port 0.
    pub forwarded: [u64; 2],
    /// Frames the other port's TX ring would not take.
    pub dropped: [u64; 2],
}

/// Queues the forwarder opens per port at most.
const FORWARD_QUEUES_MAX: u16 = 8;

/// Which of `queues` TX queues a frame goes out on: a hash of its IPv4 addresses and
/// ports, so one flow stays on one queue and different flows spread, as RSS would.
fn flow_queue(mbuf: *const sys::rte_mbuf, queues: u16) -> u16 {
    if queues <= 1 {
        return 0;
    }
    // SAFETY: a received, single-owner mbuf; its data spans `data_off..data_off + data_len`
    // of its buffer and only bytes below `pkt_len` (checked) are read.
    let bytes = unsafe {
        let data = (sys::beeline_mbuf_buf_addr(mbuf) as *const u8).add(usize::from(sys::beeline_mbuf_data_off(mbuf)));
        let len = (sys::beeline_mbuf_pkt_len(mbuf) as usize).min(38);
        core::slice::from_raw_parts(data, len)
    };
    let Some(flow) = bytes.get(26..38).filter(|_| bytes[12..14] == [0x08, 0x00]) else { return 0 };
    let hash = flow.iter().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193));
    (hash % u32::from(queues)) as u16
}

/// Forwards every frame between the EAL's first two ports, both ways, until `stop` is set:
/// the far end of a vhost-user socket bridged to a tap, the way a hypervisor's switch
/// sits between a VM's virtio NIC and the network. A vhost-user port gets every queue its
/// socket offers (up to 8): frames are read from all of them and sent on the queue their flow hashes
/// to, so a multi-queue guest sees its flows spread over its RX queues. Idle, it steps
/// down as a node does (yield, then sleeps of up to 1 ms, then up to 4 ms), so a quiet
/// forwarder leaves the core to others. Uses a pool of its own, not an arena.
// Long on purpose: the forwarder's whole poll loop (read every queue, hash, send, back off) in one place, like the node's.
pub fn forward(_eal: &Eal, stop: &AtomicBool, mbufs: u32) -> Result<ForwardStats, DpdkError> {
    // SAFETY: plain queries of the EAL's port table.
    let ports = unsafe {
        let first = sys::rte_eth_find_next(0);
        [first, sys::rte_eth_find_next(first + 1)]
    };
    if ports.iter().any(|port| u32::from(*port) >= sys::RTE_MAX_ETHPORTS) {
        return Err(DpdkError::NoPort { devices: "(the forwarder needs two ports)".into() });
    }
    // SAFETY: a valid name and sizes; the pool lives until the process exits (the
    // forwarder is the whole process).
    let pool = unsafe {
        sys::rte_pktmbuf_pool_create(c"beeline-forward".as_ptr(), mbufs, 256, 0, 2048 + MBUF_HEADROOM_BYTES as u16, -1)
    };
    let pool =
        NonNull::new(pool).ok_or_else(|| DpdkError::Pool { frames: mbufs, frame_bytes: 2048, reason: last_error() })?;
    let mut queues = [1u16; 2];
    for (slot, port) in ports.into_iter().enumerate() {
        let port_error = |op: &'static str, rc: i32| DpdkError::Port { port, op, reason: errno_text(rc) };
        // Only vhost-user ports get several queues (as many as the socket was given with
        // `queues=N`): DPDK's tap PMD breaks past 4 queue pairs (it passes one fd per queue
        // in an 8-fd message), and a single kernel-facing queue is all a lab bridge needs.
        let (info, driver) = device_info(port)?;
        let count = if driver == "net_vhost" {
            info.max_rx_queues.min(info.max_tx_queues).clamp(1, FORWARD_QUEUES_MAX)
        } else {
            1
        };
        queues[slot] = count;
        let conf = sys::rte_eth_conf::default();
        // SAFETY: valid port and a zeroed (default) configuration.
        let rc = unsafe { sys::rte_eth_dev_configure(port, count, count, &conf) };
        if rc != 0 {
            return Err(port_error("configure", rc));
        }
        start_port(port, count, 512, 512, 0, pool)?;
        // SAFETY: a started port.
        unsafe { sys::rte_eth_promiscuous_enable(port) };
    }
    let mut stats = ForwardStats::default();
    let mut burst = [core::ptr::null_mut::<sys::rte_mbuf>(); BATCH_MAX];
    // The same idle steps as a node's `wait`, for the same reason: each packet of a
    // request/reply exchange crosses the forwarder, so its sleeps add to every exchange.
    let mut last_traffic = std::time::Instant::now();
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    while !stop.load(Ordering::Relaxed) {
        let mut moved = 0;
        for (direction, (from, to)) in [(0usize, 1usize), (1, 0)].into_iter().enumerate() {
            for queue in 0..queues[from] {
                // SAFETY: `burst` has room for BATCH_MAX pointers; each received mbuf is
                // ours until handed to TX or freed.
                unsafe {
                    let received = sys::beeline_rx_burst(ports[from], queue, burst.as_mut_ptr(), BATCH_MAX as u16);
                    for mbuf in &mut burst[..usize::from(received)] {
                        let tx_queue = flow_queue(*mbuf, queues[to]);
                        if sys::beeline_tx_burst(ports[to], tx_queue, mbuf, 1) == 1 {
                            stats.forwarded[direction] += 1;
                        } else {
                            sys::beeline_pktmbuf_free(*mbuf);
                            stats.dropped[direction] += 1;
                        }
                    }
                    moved += received;
                }
            }
        }
        if moved > 0 {
            last_traffic = std::time::Instant::now();
            continue;
        }
        let idle = last_traffic.elapsed();
        if idle.as_micros() < u128::from(IDLE_SPIN_US) {
            std::thread::yield_now();
        } else {
            let cap =
                if idle.as_millis() < u128::from(IDLE_LONG_AFTER_MS) { IDLE_SLEEP_US_MAX } else { IDLE_SLEEP_LONG_US };
            std::thread::sleep(core::time::Duration::from_micros(u64::from(cap)));
        }
    }
    for port in ports {
        // SAFETY: both ports were started above.
        unsafe {
            sys::rte_eth_dev_stop(port);
            sys::rte_eth_dev_close(port);
        }
    }
    Ok(stats)
}
