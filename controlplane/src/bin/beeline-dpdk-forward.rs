//! `beeline-dpdk-forward EAL-ARGS...`: forwards frames between the two DPDK ports the EAL
//! arguments create, until SIGINT/SIGTERM. A lab and test tool: it plays the hypervisor's
//! side of a vhost-user socket (`--vdev net_vhost0,iface=SOCK`) bridged to a tap
//! (`--vdev net_tap0,iface=NAME`), so a node on `net_virtio_user` is driven through the
//! same virtio path as inside a VM, and kernel clients reach it through the tap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use beeline_dataplane::io::dpdk::{Eal, forward};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|arg| arg == "--help") {
        println!(
            "usage: beeline-dpdk-forward EAL-ARGS... (two ports, e.g. --vdev net_vhost0,iface=/tmp/v.sock --vdev net_tap0,iface=tap0)"
        );
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook_like::SIGINT, signal_hook_like::SIGTERM] {
        signal_hook_like::on(signal, stop.clone());
    }
    let eal = match Eal::init(&args) {
        Ok(eal) => eal,
        Err(error) => {
            eprintln!("beeline-dpdk-forward: {error}");
            std::process::exit(1);
        }
    };
    println!("forwarding (ctrl-c stops)");
    match forward(&eal, &stop, 8192) {
        Ok(stats) => println!(
            "forwarded {} / {} frames, dropped {} / {} (port 0 -> 1 / 1 -> 0)",
            stats.forwarded[0], stats.forwarded[1], stats.dropped[0], stats.dropped[1]
        ),
        Err(error) => {
            eprintln!("beeline-dpdk-forward: {error}");
            std::process::exit(1);
        }
    }
    stop.store(true, Ordering::Relaxed);
}

/// SIGINT/SIGTERM set a flag the forwarding loop checks.
mod signal_hook_like {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};

    pub const SIGINT: i32 = libc::SIGINT;
    pub const SIGTERM: i32 = libc::SIGTERM;
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

    extern "C" fn handler(_signal: libc::c_int) {
        if let Some(flag) = FLAG.get() {
            flag.store(true, Ordering::Relaxed);
        }
    }

    pub fn on(signal: i32, flag: Arc<AtomicBool>) {
        let _ = FLAG.set(flag);
        // SAFETY: all-zero is a valid `sigaction`; the handler only does an atomic store
        // through a OnceLock that is set before the handler is installed.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}
