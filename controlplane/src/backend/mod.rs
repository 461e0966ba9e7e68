//! The packet-I/O backend a node runs on (`backend = "udp" | "afxdp"`), and everything the
//! `afxdp` backend needs around its socket: the XDP classifier in front of it, the checks
//! of the interface, the runtime allowlist reload (SIGHUP), and what it reports.
//!
//! `afxdp` start-up, in order: the classifier is loaded and attached to the interface
//! (replacing a stale Beeline classifier, refusing any other program), the AF_XDP socket
//! is opened on the arena and bound to the RX queue, and the classifier's XSKMAP gets the
//! socket. On shutdown (or any exit of the data-plane thread) the socket closes and the
//! classifier is detached; nothing is pinned, so a killed node leaves nothing behind.
//!
//! The source allowlist is enforced in the kernel on this path: a storage packet from
//! outside it is dropped by the classifier and never reaches user space, so the node's own
//! (userspace) allowlist admits everything the classifier lets through. `kill -HUP` makes
//! the node re-read `allow` from its config file and update the classifier's LPM tries in
//! place, without reloading anything.

#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod local;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use beeline_dataplane::arena::Arena;
use beeline_dataplane::io::afxdp::{AfXdpConfig, AfXdpError, AfXdpIo, BindMode, XDP_PACKET_HEADROOM, ZeroCopy};
use beeline_dataplane::io::udp::{UdpConfig, UdpIo, UdpIoError};
use beeline_dataplane::io::{PacketIo, Readiness, RxBatch, TxBatch};
use beeline_dataplane::node::allow::Allowlist;
use beeline_xdp::{Classifier, Verdict, XdpError};
use tracing::{info, warn};

use crate::config::afxdp::AfxdpSettings;
use crate::config::{BackendSettings, NodeSettings};

/// RX queues `interface` has, from sysfs (1 when it cannot be read).
pub(crate) fn interface_rx_queues(interface: &str) -> usize {
    std::fs::read_dir(format!("/sys/class/net/{interface}/queues"))
        .map(|dir| dir.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with("rx-")).count())
        .unwrap_or(1)
}

/// Why the backend could not start or failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Udp(#[from] UdpIoError),
    #[error(transparent)]
    AfXdp(#[from] AfXdpError),
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error("the backend's settings were not resolved; this is a bug in the config code")]
    NoSettings,
    #[error("{0}")]
    Dpdk(String),
    #[error("{0}")]
    Io(String),
    #[error(
        "backend = \"dpdk\" but this beeline was built without DPDK: rebuild it with `cargo build --release -p \
         beeline --features dpdk` (needs `apt-get install dpdk-dev libdpdk-dev libclang-dev`)"
    )]
    DpdkNotBuilt,
}

/// Set by the SIGHUP handler; the data-plane thread applies the reload.
static RELOAD_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_signal: libc::c_int) {
    RELOAD_REQUESTED.store(true, Ordering::Relaxed);
}

fn install_sighup_handler() {
    // SAFETY: all-zero is a valid `sigaction` (empty mask, no flags); we then set a handler
    // that only stores to an atomic, which is async-signal-safe. `sa_sigaction` holds the
    // handler's address as the C API expects; the old action is not needed.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sighup as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut());
    }
}

/// The `afxdp` backend: the classifier and the socket of the one RX queue it serves.
pub struct AfxdpBackend {
    // `Drop` detaches the classifier first (no more redirects), then the socket closes.
    io: AfXdpIo,
    classifier: Option<Classifier>,
    settings: AfxdpSettings,
    port: u16,
    /// Largest Beeline fragment payload one frame on the link carries.
    fragment_bytes_cap: u16,
}

impl AfxdpBackend {
    // Long on purpose: one classifier + AF_XDP socket bring-up in the order the kernel
    // requires (attach, open the socket on the arena, register it in the XSKMAP), with the
    // checks between the steps.
    fn open(
        settings: &AfxdpSettings,
        listen: SocketAddr,
        allow: &Allowlist,
        arena: &mut Arena<'_>,
    ) -> Result<Self, BackendError> {
        let interface = &settings.interface;
        let ifindex = beeline_xdp::interface_index(interface)?;
        let sysfs = |file: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{interface}/{file}"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        };
        // Every storage packet must fit a frame behind the kernel's XDP headroom. The link may
        // carry larger ones (jumbo frames for other traffic): the classifier handles
        // multi-buffer packets and passes what is not storage traffic to the kernel whole,
        // while the node keeps its own datagrams, and tells clients to keep theirs, within a
        // frame. A storage datagram larger than a frame is dropped by the kernel at the
        // socket (counted: afxdp_kernel_rx_dropped).
        let frame_packet_max = arena.frame_size()
            - XDP_PACKET_HEADROOM
            - beeline_dataplane::io::netstack::ETHERNET_LEN
            - beeline_dataplane::io::netstack::VLAN_LEN;
        let mtu: usize = sysfs("mtu").unwrap_or(1500);
        if mtu > frame_packet_max {
            warn!(
                interface = %interface,
                mtu,
                frame_bytes = arena.frame_size(),
                storage_packet_bytes_max = frame_packet_max,
                "the interface's MTU is larger than an arena frame holds: storage datagrams stay within a frame \
                 (clients are told the smaller fragment size), other traffic keeps the whole MTU; a larger storage \
                 datagram is dropped by the kernel (afxdp_kernel_rx_dropped). AF_XDP frames cannot exceed a page"
            );
        }
        // The node must never build a datagram the link cannot carry: with its own IP
        // headers it cannot fragment (the kernel's UDP socket would).
        let ip_header = if listen.is_ipv6() {
            beeline_dataplane::io::netstack::IPV6_LEN
        } else {
            beeline_dataplane::io::netstack::IPV4_LEN
        };
        let fragment_bytes_cap = mtu
            .min(frame_packet_max)
            .saturating_sub(ip_header + beeline_dataplane::io::netstack::UDP_LEN + beeline_dataplane::wire::HEADER_LEN)
            .min(usize::from(u16::MAX)) as u16;
        let rx_queues = interface_rx_queues(interface);
        if rx_queues > settings.queues as usize {
            warn!(
                interface = %interface,
                rx_queues,
                "the interface has more RX queues than the node serves: storage packets arriving on other queues \
                 are dropped (counted as xdp_drop_no_socket); steer them to queue 0 with `ethtool -L {interface} \
                 combined 1` or an ntuple rule"
            );
        }

        let prefixes: Vec<(IpAddr, u8)> = allow.prefixes().iter().map(|p| (p.addr, p.len)).collect();
        // Attached inactive (port 0: everything passes) until the socket is in its XSKMAP.
        let mut classifier = Classifier::attach(interface, settings.xdp_mode, 0, &prefixes)?;
        if let Some(replaced) = classifier.replaced() {
            warn!(
                interface = %interface,
                program_id = replaced.program_id,
                mode = replaced.mode.name(),
                "replaced a stale Beeline XDP classifier left attached by an earlier run"
            );
        }
        let mut config = AfXdpConfig::new(interface, ifindex, 0, listen.port());
        config.zero_copy = if settings.require_zero_copy { ZeroCopy::Require } else { ZeroCopy::Prefer };
        let io = AfXdpIo::open(arena, config)?;
        classifier.register_socket(io.queue(), &io)?;
        classifier.set_port(listen.port())?;
        let mode = io.bind_mode();
        match mode {
            BindMode::ZeroCopy => info!(
                interface = %interface,
                queue = io.queue(),
                xdp_mode = settings.xdp_mode.name(),
                program_id = classifier.program_id(),
                "AF_XDP socket bound in zero-copy mode: the NIC moves packets straight to and from arena frames"
            ),
            BindMode::Copy => warn!(
                interface = %interface,
                queue = io.queue(),
                xdp_mode = settings.xdp_mode.name(),
                program_id = classifier.program_id(),
                "AF_XDP socket bound in COPY mode (the driver has no zero-copy support): the kernel copies each \
                 packet once between its buffers and the arena; set require_zero_copy = true to refuse this"
            ),
        }
        if settings.allow_reload.is_some() {
            install_sighup_handler();
        }
        Ok(AfxdpBackend {
            io,
            classifier: Some(classifier),
            settings: settings.clone(),
            port: listen.port(),
            fragment_bytes_cap,
        })
    }

    fn reload_allowlist(&mut self) {
        let Some(path) = &self.settings.allow_reload else {
            warn!("SIGHUP: `allow` was given as flags, which a reload cannot change; restart the node to change it");
            return;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                warn!(path = %path.display(), %error, "SIGHUP: cannot read the config; the allowlist is unchanged");
                return;
            }
        };
        let file = match crate::config::parse_file(&path.display().to_string(), &text) {
            Ok(file) => file,
            Err(error) => {
                warn!(%error, "SIGHUP: the allowlist is unchanged");
                return;
            }
        };
        let mut prefixes = Vec::new();
        for text in file.allow.unwrap_or_default() {
            match crate::config::parse_prefix(&text) {
                Some(prefix) => prefixes.push((prefix.addr, prefix.len)),
                None => {
                    warn!(prefix = %text, path = %path.display(), "SIGHUP: bad prefix in `allow`; the allowlist is unchanged");
                    return;
                }
            }
        }
        let Some(classifier) = &mut self.classifier else { return };
        match classifier.set_allowlist(&prefixes) {
            Ok(()) => info!(prefixes = prefixes.len(), "SIGHUP: allowlist updated in the XDP classifier"),
            Err(error) => warn!(%error, "SIGHUP: the allowlist could not be updated"),
        }
    }

    fn describe(&self) -> String {
        let mode = match self.io.bind_mode() {
            BindMode::ZeroCopy => "zero-copy mode".to_owned(),
            BindMode::Copy => "copy mode (no zero-copy support in the driver)".to_owned(),
        };
        let program = self.classifier.as_ref().map(Classifier::program_id).unwrap_or(0);
        format!(
            "afxdp on {} queue {}, port {}: {mode}; XDP classifier {} (program id {program})",
            self.settings.interface,
            self.io.queue(),
            self.port,
            self.settings.xdp_mode.name()
        )
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        out.push(("afxdp_zero_copy".to_owned(), u64::from(self.io.bind_mode() == BindMode::ZeroCopy)));
        if let Some(Ok(counters)) = self.classifier.as_ref().map(Classifier::counters) {
            for verdict in Verdict::ALL {
                let count = counters.get(verdict);
                out.push((format!("xdp_{}_packets", verdict.name()), count.packets));
                out.push((format!("xdp_{}_bytes", verdict.name()), count.bytes));
            }
        }
        let c = self.io.counters();
        out.extend(
            [
                ("afxdp_rx_packets", c.rx_packets),
                ("afxdp_rx_bytes", c.rx_bytes),
                ("afxdp_rx_not_udp", c.rx_not_udp),
                ("afxdp_rx_wrong_port", c.rx_wrong_port),
                ("afxdp_rx_bad_descriptor", c.rx_bad_descriptor),
                ("afxdp_tx_packets", c.tx_packets),
                ("afxdp_tx_bytes", c.tx_bytes),
                ("afxdp_tx_no_route", c.tx_no_route),
                ("afxdp_tx_ring_full", c.tx_ring_full),
                ("afxdp_tx_bad_packet", c.tx_bad_packet),
                ("afxdp_tx_kicks", c.tx_kicks),
                ("afxdp_rx_kicks", c.rx_kicks),
                ("afxdp_kernel_copied_bytes", c.kernel_copied_bytes),
            ]
            .map(|(name, value)| (name.to_owned(), value)),
        );
        if let Ok(k) = self.io.kernel_stats() {
            out.extend(
                [
                    ("afxdp_kernel_rx_dropped", k.rx_dropped),
                    ("afxdp_kernel_rx_ring_full", k.rx_ring_full),
                    ("afxdp_kernel_rx_fill_ring_empty", k.rx_fill_ring_empty_descs),
                    ("afxdp_kernel_rx_invalid_descs", k.rx_invalid_descs),
                    ("afxdp_kernel_tx_invalid_descs", k.tx_invalid_descs),
                ]
                .map(|(name, value)| (name.to_owned(), value)),
            );
        }
        out
    }
}

impl Drop for AfxdpBackend {
    fn drop(&mut self) {
        let Some(classifier) = self.classifier.take() else { return };
        let interface = classifier.interface().to_owned();
        match classifier.detach() {
            Ok(()) => info!(interface = %interface, "XDP classifier detached"),
            Err(error) => warn!(%error, "detaching the XDP classifier failed"),
        }
    }
}

/// The backend a node runs on.
pub enum Backend {
    Udp(Box<UdpIo>),
    Afxdp(Box<AfxdpBackend>),
    #[cfg(feature = "dpdk")]
    Dpdk(Box<crate::backend::dpdk::DpdkBackend>),
}

/// Where a DPDK node's frames are (the pool that is its arena); `()` without DPDK.
#[cfg(feature = "dpdk")]
pub type DpdkLayout = beeline_dataplane::io::dpdk::PoolLayout;
#[cfg(not(feature = "dpdk"))]
pub type DpdkLayout = ();

impl Backend {
    /// Opens the backend `settings.backend` selects. `afxdp` registers `arena` as its UMEM,
    /// so the arena must be the one the poll loop then uses. Returns the address the node
    /// serves on.
    pub fn open(
        settings: &NodeSettings,
        dpdk: Option<DpdkLayout>,
        arena: &mut Arena<'_>,
    ) -> Result<(Backend, SocketAddr), BackendError> {
        match &settings.backend {
            BackendSettings::Udp => {}
            BackendSettings::Afxdp(afxdp) => {
                let backend = AfxdpBackend::open(afxdp, settings.listen, &settings.allow, arena)?;
                return Ok((Backend::Afxdp(Box::new(backend)), settings.listen));
            }
            #[cfg(feature = "dpdk")]
            BackendSettings::Dpdk(_) => {
                let layout = dpdk.ok_or(BackendError::NoSettings)?;
                let backend = crate::backend::dpdk::DpdkBackend::open(settings, layout, arena)?;
                return Ok((Backend::Dpdk(Box::new(backend)), settings.listen));
            }
            #[cfg(not(feature = "dpdk"))]
            BackendSettings::Dpdk(_) => {
                let _ = dpdk;
                return Err(BackendError::DpdkNotBuilt);
            }
        }
        let config = UdpConfig { datagram_bytes_max: settings.frame_bytes as usize, ..UdpConfig::default() };
        let io = UdpIo::bind(settings.listen, config)?;
        if let Some(warning) = io.buffer_warning() {
            warn!("{warning}");
        }
        let local = io.local_addr();
        Ok((Backend::Udp(Box::new(io)), local))
    }

    /// The allowlist the node itself applies: on `afxdp` the classifier enforces the
    /// configured one in the kernel, so the node admits whatever reaches it.
    pub fn node_allowlist(&self, configured: &Allowlist) -> Allowlist {
        match self {
            Backend::Udp(_) => configured.clone(),
            Backend::Afxdp(_) => Allowlist::allow_all(),
            // Only `net_af_xdp` has a classifier in front; the node filters for other ports.
            #[cfg(feature = "dpdk")]
            Backend::Dpdk(_) => configured.clone(),
        }
    }

    /// Largest fragment payload one datagram of this backend can carry (the node's
    /// `NodeConfig::fragment_bytes_cap`): the kernel fragments for `udp`, `afxdp` cannot.
    pub fn fragment_bytes_cap(&self) -> u16 {
        match self {
            Backend::Udp(_) => u16::MAX,
            Backend::Afxdp(afxdp) => afxdp.fragment_bytes_cap,
            #[cfg(feature = "dpdk")]
            Backend::Dpdk(dpdk) => dpdk.fragment_bytes_cap,
        }
    }

    /// The descriptor `wait` sleeps on, when it is one a caller can poll with others.
    pub fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        match self {
            Backend::Udp(io) => Some(io.raw_fd()),
            _ => None,
        }
    }

    /// One line for `beeline node status`: the backend and, for `afxdp`, its bind mode.
    pub fn describe(&self) -> String {
        match self {
            Backend::Udp(io) => format!("udp on {}", io.local_addr()),
            Backend::Afxdp(afxdp) => afxdp.describe(),
            #[cfg(feature = "dpdk")]
            Backend::Dpdk(dpdk) => dpdk.describe(),
        }
    }

    /// The backend's own counters (and, for `afxdp`, the classifier's), for status and metrics.
    pub fn counters(&self) -> Vec<(String, u64)> {
        match self {
            Backend::Udp(io) => {
                let c = io.counters();
                vec![
                    ("udp_recv_truncated".to_owned(), c.recv_truncated),
                    ("udp_send_failed".to_owned(), c.send_failed),
                    ("udp_syscalls_recv".to_owned(), c.syscalls_recv),
                    ("udp_syscalls_send".to_owned(), c.syscalls_send),
                    ("udp_gso_sends".to_owned(), c.gso_sends),
                    ("udp_gso_disabled".to_owned(), c.gso_disabled),
                ]
            }
            Backend::Afxdp(afxdp) => afxdp.counters(),
            #[cfg(feature = "dpdk")]
            Backend::Dpdk(dpdk) => dpdk.counters(),
        }
    }
}

impl PacketIo for Backend {
    type Error = BackendError;

    fn recv_batch(&mut self, arena: &mut Arena<'_>, out: &mut RxBatch) -> Result<usize, BackendError> {
        match self {
            Backend::Udp(io) => Ok(io.recv_batch(arena, out)?),
            Backend::Afxdp(afxdp) => {
                if RELOAD_REQUESTED.swap(false, Ordering::Relaxed) {
                    afxdp.reload_allowlist();
                }
                Ok(afxdp.io.recv_batch(arena, out)?)
            }
            #[cfg(feature = "dpdk")]
            Backend::Dpdk(dpdk) => Ok(dpdk.io.recv_batch(arena, out)?),
        }
    }

    fn send_batch(&mut self, arena: &mut Arena<'_>, batch: &mut TxBatch) -> Result<(), BackendError> {
        match self {
            Backend::Udp(io) => Ok(io.send_batch(arena, batch)?),
            Backend::Afxdp(afxdp) => Ok(afxdp.io.send_batch(arena, batch)?),
            #[cfg(feature = "dpdk")]
            Backend::Dpdk(dpdk) => Ok(dpdk.io.send_batch(arena, batch)?),
        }
    }

    fn wait(&mut self, timeout_us: u32) -> Readiness {
        match self {
            Backend::Udp(io) => io.wait(timeout_us),
            Backend::Afxdp(afxdp) => afxdp.io.wait(timeout_us),
            #[cfg(feature = "dpdk")]
            Backend::Dpdk(dpdk) => dpdk.io.wait(timeout_us),
        }
    }

    fn dropped(&self) -> u64 {
        match self {
            Backend::Udp(io) => io.dropped(),
            Backend::Afxdp(afxdp) => afxdp.io.dropped(),
            #[cfg(feature = "dpdk")]
            Backend::Dpdk(dpdk) => dpdk.io.dropped(),
        }
    }
}
