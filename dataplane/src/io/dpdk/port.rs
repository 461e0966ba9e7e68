//! Port bring-up shared by the node's backend and the forwarder: a port's device info,
//! and its queues set up and started. Split from `dpdk.rs`; the same `unsafe` rules hold.

use super::*;

/// A port's device info and its driver's name.
pub(super) fn device_info(port: u16) -> Result<(sys::rte_eth_dev_info, String), DpdkError> {
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: a port id the EAL handed out; `info` is writable.
    let rc = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
    if rc != 0 {
        return Err(DpdkError::Port { port, op: "reading device info", reason: errno_text(rc) });
    }
    let driver = if info.driver_name.is_null() {
        "?".to_string()
    } else {
        // SAFETY: DPDK's driver name is a static NUL-terminated string.
        unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
    };
    Ok((info, driver))
}

/// Sets up `queues` RX/TX queue pairs of a configured port, RX buffers from `pool`, and
/// starts it.
pub(super) fn start_port(
    port: u16,
    queues: u16,
    rx_ring: u16,
    tx_ring: u16,
    socket: u32,
    pool: NonNull<sys::rte_mempool>,
) -> Result<(), DpdkError> {
    let port_error = |op: &'static str, rc: i32| DpdkError::Port { port, op, reason: errno_text(rc) };
    for queue in 0..queues {
        // SAFETY: a configured port with at least `queues` queues, default queue configs
        // (null), and a pool of pktmbufs that outlives the port (callers drop the port
        // first).
        let rc = unsafe { sys::rte_eth_rx_queue_setup(port, queue, rx_ring, socket, core::ptr::null(), pool.as_ptr()) };
        if rc != 0 {
            return Err(port_error("setting up an RX queue", rc));
        }
        // SAFETY: as above, for the TX side.
        let rc = unsafe { sys::rte_eth_tx_queue_setup(port, queue, tx_ring, socket, core::ptr::null()) };
        if rc != 0 {
            return Err(port_error("setting up a TX queue", rc));
        }
    }
    // SAFETY: every queue is set up.
    let rc = unsafe { sys::rte_eth_dev_start(port) };
    if rc != 0 {
        return Err(port_error("start", rc));
    }
    Ok(())
}
