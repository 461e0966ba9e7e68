//! The kernel-socket backend: one non-blocking UDP socket (IPv4 or IPv6), moved in batches
//! with `recvmmsg(2)` and `sendmmsg(2)`.
//!
//! The kernel copies each received datagram straight into an arena frame at
//! [`HEADROOM_BYTES`] and reads each datagram to send straight out of its frame; Beeline
//! copies nothing. The `mmsghdr`/`iovec`/`sockaddr_storage` arrays the system calls need
//! are allocated once, at [`UdpIo::bind`], so the packet path never allocates.
//!
//! Peers that reach an IPv6 socket over IPv4 (`::ffff:a.b.c.d`) are reported as IPv4
//! addresses, and IPv4 peers are sent to through their mapped IPv6 address, so the rest
//! of Beeline sees one address per peer whichever socket family it listens on.

use core::fmt;
use core::mem;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::boxed::Box;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::string::String;
use std::vec;

use libc::{c_int, c_uint, socklen_t};

use crate::arena::{Arena, FrameId, HEADROOM_BYTES};
use crate::io::{BATCH_MAX, PacketIo, Readiness, RxBatch, RxPacket, TxBatch};

/// Default size asked for the socket's receive and send buffers.
pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Largest UDP payload over IPv4 (65535 - 20 byte IP header - 8 byte UDP header).
pub const UDP_PAYLOAD_MAX: usize = 65_507;

/// How many times `send_batch` waits for the socket to drain before dropping the rest.
const SEND_STALLS_MAX: u32 = 4;
/// How long each of those waits may take, in milliseconds.
const SEND_STALL_POLL_MS: c_int = 1;

// UDP generic segmentation offload (Linux 4.18+): one `sendmsg` carries many datagrams of
// one size to one peer, cut by the kernel (or the NIC) after the stack has been walked
// once. The libc crate exports these for uclibc only.
pub const SOL_UDP: c_int = 17;
pub const UDP_SEGMENT: c_int = 103;
pub const UDP_GRO: c_int = 104;
/// Most datagrams in one segmented send (the kernel allows 64 on older releases).
pub const GSO_SEGMENTS_MAX: usize = 64;
/// Most payload bytes in one segmented send: it must fit one IPv4 or IPv6 datagram.
pub const GSO_BYTES_MAX: usize = 65_000;

/// The control message of a segmented send: a `cmsghdr` and the segment size.
#[repr(C)]
#[derive(Clone, Copy)]
struct GsoControl {
    header: libc::cmsghdr,
    segment_bytes: u16,
    _pad: [u8; 6],
}

// SAFETY: CMSG_LEN and CMSG_SPACE are arithmetic on their argument; nothing is read.
const GSO_CMSG_LEN: usize = unsafe { libc::CMSG_LEN(2) } as usize;
// SAFETY: as above.
const GSO_CMSG_SPACE: usize = unsafe { libc::CMSG_SPACE(2) } as usize;
// SAFETY: as above.
const CMSG_HEADER_BYTES: usize = unsafe { libc::CMSG_LEN(0) } as usize;

const _: () = {
    // The kernel reads CMSG_LEN(2) bytes and steps by CMSG_SPACE(2): both within the struct,
    // with the segment size where the kernel's CMSG_DATA looks for it.
    assert!(core::mem::size_of::<GsoControl>() >= GSO_CMSG_SPACE);
    assert!(core::mem::offset_of!(GsoControl, segment_bytes) == CMSG_HEADER_BYTES);
};

/// Socket settings for [`UdpIo::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpConfig {
    /// Receive buffer asked for with `SO_RCVBUF` (`SO_RCVBUFFORCE` when the process has
    /// CAP_NET_ADMIN, which lifts the `net.core.rmem_max` cap). 0 keeps the kernel default.
    pub recv_buffer_bytes: usize,
    /// Send buffer asked for with `SO_SNDBUF` (`SO_SNDBUFFORCE` with CAP_NET_ADMIN).
    /// 0 keeps the kernel default.
    pub send_buffer_bytes: usize,
    /// Largest datagram received or sent. Longer datagrams are dropped and counted. The
    /// receive limit is also capped by the frame: `frame_size - HEADROOM_BYTES`.
    pub datagram_bytes_max: usize,
    /// Send runs of same-size datagrams to one peer as one segmented send (`UDP_SEGMENT`).
    /// Turned off by itself, for good, the first time the kernel refuses one.
    pub segmentation_offload: bool,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            recv_buffer_bytes: DEFAULT_SOCKET_BUFFER_BYTES,
            send_buffer_bytes: DEFAULT_SOCKET_BUFFER_BYTES,
            datagram_bytes_max: UDP_PAYLOAD_MAX,
            segmentation_offload: true,
        }
    }
}

/// What the backend has counted since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams dropped on receive because they did not fit the frame (or were longer
    /// than `datagram_bytes_max`).
    pub recv_truncated: u64,
    /// Datagrams dropped on receive because the kernel gave no usable sender address.
    pub recv_bad_peer: u64,
    /// Packets handed to `send_batch` that were not sent: refused by the kernel, still
    /// unsent when the socket stayed full, addressed to the wrong family or malformed.
    pub send_failed: u64,
    /// `recvmmsg` calls made.
    pub syscalls_recv: u64,
    /// `sendmmsg` calls made.
    pub syscalls_send: u64,
    /// Segmented sends (`UDP_SEGMENT`) of more than one datagram that the kernel took.
    pub gso_sends: u64,
    /// 1 once the kernel refused a segmented send and the socket went back to one
    /// datagram per message (a device without checksum offload, a small MTU).
    pub gso_disabled: u64,
}

/// Why the UDP backend could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum UdpIoError {
    #[error(
        "cannot listen on {addr}: another node (or another program) is already listening \
         there; stop it or pick a different address with --listen"
    )]
    AddrInUse { addr: SocketAddr },
    #[error(
        "not allowed to listen on {addr} ({os_error}): ports below 1024 need root or \
         CAP_NET_BIND_SERVICE; pick a port of 1024 or above with --listen, or grant the \
         capability (`setcap cap_net_bind_service=+ep` on the binary)"
    )]
    PermissionDenied { addr: SocketAddr, os_error: io::Error },
    #[error(
        "cannot listen on {addr}: that address belongs to no interface of this host; pick \
         one of its addresses (or 0.0.0.0 / [::] for all of them) with --listen"
    )]
    AddrNotAvailable { addr: SocketAddr },
    #[error(
        "cannot open an {family} UDP socket ({os_error}): {family} is not enabled on this \
         host; enable it or pick an address of the other family with --listen"
    )]
    FamilyUnsupported { family: &'static str, os_error: io::Error },
    #[error("invalid UDP configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("setting up the UDP socket for {addr} failed in {op}: {os_error}")]
    Setup { op: &'static str, addr: SocketAddr, os_error: io::Error },
    #[error("receiving from the UDP socket failed: {0}")]
    Recv(io::Error),
    #[error("sending on the UDP socket failed: {0}; the socket is unusable, restart the node")]
    Send(io::Error),
}

/// The header, buffer-descriptor and address arrays of one direction, allocated once.
struct MsgArrays {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    /// Send only: per datagram, its address length and peer; per message, its first
    /// datagram, its datagram count and its segmentation control message.
    name_lens: Box<[socklen_t]>,
    peers: Box<[Option<SocketAddr>]>,
    first_datagram: Box<[usize]>,
    datagrams: Box<[usize]>,
    controls: Box<[GsoControl]>,
}

impl MsgArrays {
    fn new() -> Self {
        // SAFETY: `mmsghdr`, `iovec` and `sockaddr_storage` are plain C structs of integers
        // and raw pointers, for which all-zero bytes is a valid value (null pointers, zero
        // lengths, AF_UNSPEC).
        let (hdr, iov, addr) = unsafe {
            (mem::zeroed::<libc::mmsghdr>(), mem::zeroed::<libc::iovec>(), mem::zeroed::<libc::sockaddr_storage>())
        };
        // SAFETY: as above, `cmsghdr` is integers only.
        let control_header = unsafe { mem::zeroed::<libc::cmsghdr>() };
        let control = GsoControl { header: control_header, segment_bytes: 0, _pad: [0; 6] };
        Self {
            hdrs: vec![hdr; BATCH_MAX].into_boxed_slice(),
            iovs: vec![iov; BATCH_MAX].into_boxed_slice(),
            addrs: vec![addr; BATCH_MAX].into_boxed_slice(),
            name_lens: vec![0; BATCH_MAX].into_boxed_slice(),
            peers: vec![None; BATCH_MAX].into_boxed_slice(),
            first_datagram: vec![0; BATCH_MAX].into_boxed_slice(),
            datagrams: vec![0; BATCH_MAX].into_boxed_slice(),
            controls: vec![control; BATCH_MAX].into_boxed_slice(),
        }
    }

    /// Receive only: points header `i` at `iovs[i]` and at `addrs[i]`, a whole
    /// `sockaddr_storage` for the kernel to fill, for the first `count` entries. The iovecs
    /// must already be filled in. (Sends build their headers in `UdpIo::group_tx`.)
    fn link_rx(&mut self, count: usize) {
        let name_len = mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        // One base pointer per array, taken after the arrays were last written through
        // references, so the pointers stay valid until the system call.
        let iovs = self.iovs.as_mut_ptr();
        let addrs = self.addrs.as_mut_ptr();
        for (i, hdr) in self.hdrs[..count].iter_mut().enumerate() {
            let msg = &mut hdr.msg_hdr;
            msg.msg_name = addrs.wrapping_add(i).cast();
            msg.msg_namelen = name_len;
            msg.msg_iov = iovs.wrapping_add(i);
            msg.msg_iovlen = 1;
            msg.msg_control = core::ptr::null_mut();
            msg.msg_controllen = 0;
            msg.msg_flags = 0;
            hdr.msg_len = 0;
        }
    }
}

/// A UDP socket moving datagrams between the network and arena frames.
pub struct UdpIo {
    fd: OwnedFd,
    local: SocketAddr,
    ipv6: bool,
    datagram_bytes_max: usize,
    recv_buffer_bytes: usize,
    send_buffer_bytes: usize,
    buffer_warning: Option<String>,
    counters: UdpCounters,
    segmentation_offload: bool,
    rx: MsgArrays,
    tx: MsgArrays,
}

// SAFETY: the only non-`Send` parts are the raw pointers inside the `mmsghdr`/`iovec`
// arrays. They point into this value's own boxed arrays or into the arena lent to the
// current call, are rewritten before every system call and are never dereferenced by Rust
// code, so moving the backend to another thread cannot create shared access to anything.
unsafe impl Send for UdpIo {}

impl UdpIo {
    /// Opens a non-blocking UDP socket bound to `addr` (port 0 picks a free port).
    // Long on purpose: the socket's set-up steps in order, each failure with its own one-line error.
    pub fn bind(addr: SocketAddr, config: UdpConfig) -> Result<UdpIo, UdpIoError> {
        if config.datagram_bytes_max == 0 {
            return Err(UdpIoError::InvalidConfig("datagram_bytes_max must be at least 1 byte"));
        }
        let ipv6 = addr.is_ipv6();
        let (domain, family) = if ipv6 { (libc::AF_INET6, "IPv6") } else { (libc::AF_INET, "IPv4") };
        let setup = |op: &'static str, os_error: io::Error| UdpIoError::Setup { op, addr, os_error };

        // SAFETY: socket(2) takes no pointers; the result is checked before use.
        let raw = unsafe {
            libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP)
        };
        if raw < 0 {
            let os_error = io::Error::last_os_error();
            return Err(match os_error.raw_os_error() {
                Some(libc::EAFNOSUPPORT) => UdpIoError::FamilyUnsupported { family, os_error },
                Some(libc::EACCES | libc::EPERM) => UdpIoError::PermissionDenied { addr, os_error },
                _ => setup("socket", os_error),
            });
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns; the
        // `OwnedFd` becomes its only owner and closes it on drop.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        if config.recv_buffer_bytes > 0 {
            set_buffer(&fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, config.recv_buffer_bytes)
                .map_err(|e| setup("setsockopt(SO_RCVBUF)", e))?;
        }
        if config.send_buffer_bytes > 0 {
            set_buffer(&fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, config.send_buffer_bytes)
                .map_err(|e| setup("setsockopt(SO_SNDBUF)", e))?;
        }
        let recv_buffer_bytes = get_int_option(&fd, libc::SO_RCVBUF).map_err(|e| setup("getsockopt(SO_RCVBUF)", e))?;
        let send_buffer_bytes = get_int_option(&fd, libc::SO_SNDBUF).map_err(|e| setup("getsockopt(SO_SNDBUF)", e))?;
        let buffer_warning = buffer_warning(&config, recv_buffer_bytes, send_buffer_bytes);

        // SAFETY: all-zero bytes is a valid `sockaddr_storage` (AF_UNSPEC).
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let Some(len) = write_sockaddr(addr, ipv6, &mut storage) else {
            unreachable!("the socket family follows the bind address");
        };
        // SAFETY: `storage` holds a valid sockaddr of `len` bytes for the socket's family
        // and lives across the call; bind(2) only reads it.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) };
        if rc < 0 {
            let os_error = io::Error::last_os_error();
            return Err(match os_error.raw_os_error() {
                Some(libc::EADDRINUSE) => UdpIoError::AddrInUse { addr },
                Some(libc::EACCES | libc::EPERM) => UdpIoError::PermissionDenied { addr, os_error },
                Some(libc::EADDRNOTAVAIL) => UdpIoError::AddrNotAvailable { addr },
                Some(libc::EAFNOSUPPORT) => UdpIoError::FamilyUnsupported { family, os_error },
                _ => setup("bind", os_error),
            });
        }

        // SAFETY: as above, zero is a valid `sockaddr_storage`.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        // SAFETY: `storage` is writable for `len` bytes and `len` is a valid in/out length;
        // the kernel writes at most `len` bytes and updates `len`.
        let rc = unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len) };
        if rc < 0 {
            return Err(setup("getsockname", io::Error::last_os_error()));
        }
        let local = read_sockaddr(&storage, len, false)
            .ok_or_else(|| setup("getsockname", io::Error::other("unexpected address family")))?;

        Ok(UdpIo {
            fd,
            local,
            ipv6,
            datagram_bytes_max: config.datagram_bytes_max,
            recv_buffer_bytes,
            send_buffer_bytes,
            buffer_warning,
            counters: UdpCounters::default(),
            segmentation_offload: config.segmentation_offload,
            rx: MsgArrays::new(),
            tx: MsgArrays::new(),
        })
    }

    /// The address the socket is bound to (with the port the kernel picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket, for callers that sleep on it together with other descriptors.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Everything counted since `bind`.
    pub fn counters(&self) -> UdpCounters {
        self.counters
    }

    /// The receive buffer the kernel granted, as it reports it (twice the usable payload
    /// room; the other half covers its bookkeeping).
    pub fn recv_buffer_bytes(&self) -> usize {
        self.recv_buffer_bytes
    }

    /// The send buffer the kernel granted, as it reports it.
    pub fn send_buffer_bytes(&self) -> usize {
        self.send_buffer_bytes
    }

    /// Set when the kernel capped the socket buffers below what [`UdpConfig`] asked for:
    /// a message for the operator saying how to lift the cap.
    pub fn buffer_warning(&self) -> Option<&str> {
        self.buffer_warning.as_deref()
    }

    /// Longest datagram a frame of `frame_size` bytes can receive.
    fn rx_payload_max(&self, frame_size: usize) -> usize {
        (frame_size - HEADROOM_BYTES).min(self.datagram_bytes_max).min(usize::from(u16::MAX))
    }
}

impl AsFd for UdpIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for UdpIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpIo")
            .field("fd", &self.fd)
            .field("local", &self.local)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl PacketIo for UdpIo {
    type Error = UdpIoError;

    // Long on purpose: one recvmmsg call with its per-message bookkeeping next to the SAFETY invariants it relies on.
    fn recv_batch(&mut self, arena: &mut Arena<'_>, out: &mut RxBatch) -> Result<usize, UdpIoError> {
        let want = out.capacity() - out.len();
        let mut frames: heapless::Vec<FrameId, BATCH_MAX> = heapless::Vec::new();
        while frames.len() < want {
            let Some(frame) = arena.alloc() else { break };
            if let Err(frame) = frames.push(frame) {
                arena.free(frame);
                break;
            }
        }
        if frames.is_empty() {
            return Ok(0);
        }

        let payload_max = self.rx_payload_max(arena.frame_size());
        let region = arena.region_ptr();
        for (iov, frame) in self.rx.iovs.iter_mut().zip(&frames) {
            // In bounds: the frame lies inside the region and HEADROOM_BYTES + payload_max
            // <= frame_size.
            let start = arena.offset_of(frame) as usize + HEADROOM_BYTES;
            iov.iov_base = region.wrapping_add(start).cast();
            iov.iov_len = payload_max;
        }
        self.rx.link_rx(frames.len());

        // SAFETY: the first `frames.len()` headers each point at one iovec and one
        // `sockaddr_storage` of `self.rx` (with `msg_namelen` its full size), and each iovec
        // at `payload_max` bytes inside a distinct frame this call allocated from `arena`,
        // which stays mutably borrowed (so unaliased) for the whole call. The kernel writes
        // only within those buffers and the headers. MSG_DONTWAIT keeps it from blocking
        // and the null timeout is allowed.
        let rc = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.rx.hdrs.as_mut_ptr(),
                frames.len() as c_uint,
                libc::MSG_DONTWAIT as _,
                core::ptr::null_mut(),
            )
        };
        self.counters.syscalls_recv += 1;
        if rc < 0 {
            let error = io::Error::last_os_error();
            for frame in frames {
                arena.free(frame);
            }
            return match error.raw_os_error() {
                // EAGAIN == EWOULDBLOCK on Linux.
                Some(libc::EAGAIN | libc::EINTR) => Ok(0),
                _ => Err(UdpIoError::Recv(error)),
            };
        }

        let received = rc as usize;
        let mut appended = 0;
        for (i, frame) in frames.into_iter().enumerate() {
            if i >= received {
                arena.free(frame);
                continue;
            }
            let hdr = &self.rx.hdrs[i];
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.counters.recv_truncated += 1;
                arena.free(frame);
                continue;
            }
            let Some(peer) = read_sockaddr(&self.rx.addrs[i], hdr.msg_hdr.msg_namelen, self.ipv6) else {
                self.counters.recv_bad_peer += 1;
                arena.free(frame);
                continue;
            };
            // Not truncated, so the length is at most `payload_max`, which fits a u16.
            let len = hdr.msg_len.min(payload_max as c_uint) as u16;
            let packet = RxPacket { frame, offset: HEADROOM_BYTES as u16, len, peer };
            match out.push(packet) {
                Ok(()) => appended += 1,
                // Cannot happen: no more frames were taken than `out` had room for.
                Err(packet) => arena.free(packet.frame),
            }
        }
        Ok(appended)
    }

    fn send_batch(&mut self, arena: &mut Arena<'_>, batch: &mut TxBatch) -> Result<(), UdpIoError> {
        let mut frames: heapless::Vec<FrameId, BATCH_MAX> = heapless::Vec::new();
        let mut failed = self.stage_tx(arena, batch, &mut frames);
        let count = frames.len();
        let messages = self.group_tx(0, 0, count);
        let (done, refused, fatal) = self.transmit(messages, count);
        failed += refused + (count - done) as u64;
        self.counters.send_failed += failed;
        // The kernel copied everything it accepted; every frame goes back.
        for frame in frames {
            arena.free(frame);
        }
        match fatal {
            Some(error) => Err(UdpIoError::Send(error)),
            None => Ok(()),
        }
    }

    fn wait(&mut self, timeout_us: u32) -> Readiness {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout = libc::timespec {
            tv_sec: (timeout_us / 1_000_000) as libc::time_t,
            tv_nsec: ((timeout_us % 1_000_000) * 1000) as libc::c_long,
        };
        // SAFETY: `pfd` is one valid, writable pollfd and `timeout` a valid timespec, both
        // alive across the call; a null signal mask leaves the mask unchanged.
        let rc = unsafe { libc::ppoll(&mut pfd, 1, &timeout, core::ptr::null()) };
        // rc < 0 is EINTR (or a transient ENOMEM): report Ready so the loop polls the
        // socket, where a real error surfaces.
        if rc == 0 { Readiness::TimedOut } else { Readiness::Ready }
    }

    fn dropped(&self) -> u64 {
        let c = &self.counters;
        c.recv_truncated + c.recv_bad_peer + c.send_failed
    }
}

impl UdpIo {
    /// Points one `sendmmsg` header per packet at its frame and peer; the frames move into
    /// `frames` (kept borrowed until the kernel has read them). Returns the packets that
    /// could not be staged (freed at once).
    fn stage_tx(
        &mut self,
        arena: &mut Arena<'_>,
        batch: &mut TxBatch,
        frames: &mut heapless::Vec<FrameId, BATCH_MAX>,
    ) -> u64 {
        let frame_size = arena.frame_size();
        let region = arena.region_ptr();
        let mut failed = 0u64;

        for packet in batch.drain(..) {
            let (start, len) = (usize::from(packet.offset), usize::from(packet.len));
            let slot = frames.len();
            let name_len = if start + len > frame_size || len > self.datagram_bytes_max {
                None
            } else {
                write_sockaddr(packet.peer, self.ipv6, &mut self.tx.addrs[slot])
            };
            let Some(name_len) = name_len else {
                failed += 1;
                arena.free(packet.frame);
                continue;
            };
            // In bounds: the frame lies inside the region and start + len <= frame_size.
            let base = region.wrapping_add(arena.offset_of(&packet.frame) as usize + start);
            self.tx.iovs[slot] = libc::iovec { iov_base: base.cast(), iov_len: len };
            self.tx.name_lens[slot] = name_len;
            self.tx.peers[slot] = Some(packet.peer);
            if let Err(frame) = frames.push(packet.frame) {
                // Cannot happen: a TxBatch holds at most BATCH_MAX packets.
                failed += 1;
                arena.free(frame);
            }
        }
        failed
    }

    /// Builds send messages from staged datagrams `first..count`, from message `message`
    /// on: a run of datagrams to one peer, all of one size but a shorter last one, becomes
    /// one segmented message while segmentation offload is on. Returns the message count.
    fn group_tx(&mut self, mut message: usize, first: usize, count: usize) -> usize {
        // One base pointer per array, taken after the arrays were last written through
        // references, so the pointers stay valid until the system call.
        let iovs = self.tx.iovs.as_mut_ptr();
        let addrs = self.tx.addrs.as_mut_ptr();
        let controls = self.tx.controls.as_mut_ptr();
        let mut datagram = first;
        while datagram < count {
            let run = self.segment_run(datagram, count);
            let msg = &mut self.tx.hdrs[message].msg_hdr;
            msg.msg_name = addrs.wrapping_add(datagram).cast();
            msg.msg_namelen = self.tx.name_lens[datagram];
            msg.msg_iov = iovs.wrapping_add(datagram);
            msg.msg_iovlen = run as _;
            msg.msg_flags = 0;
            if run > 1 {
                let control = &mut self.tx.controls[message];
                control.header.cmsg_len = GSO_CMSG_LEN as _;
                control.header.cmsg_level = SOL_UDP;
                control.header.cmsg_type = UDP_SEGMENT;
                control.segment_bytes = self.tx.iovs[datagram].iov_len as u16;
                msg.msg_control = controls.wrapping_add(message).cast();
                msg.msg_controllen = GSO_CMSG_SPACE as _;
            } else {
                msg.msg_control = core::ptr::null_mut();
                msg.msg_controllen = 0;
            }
            self.tx.hdrs[message].msg_len = 0;
            self.tx.first_datagram[message] = datagram;
            self.tx.datagrams[message] = run;
            datagram += run;
            message += 1;
        }
        message
    }

    /// How many staged datagrams from `first` one segmented send can carry: same peer, same
    /// size (the last may be shorter), within the kernel's segment and byte limits.
    fn segment_run(&self, first: usize, count: usize) -> usize {
        let segment_bytes = self.tx.iovs[first].iov_len;
        if !self.segmentation_offload || segment_bytes == 0 || segment_bytes > usize::from(u16::MAX) {
            return 1;
        }
        let mut run = 1;
        let mut total_bytes = segment_bytes;
        while first + run < count && run < GSO_SEGMENTS_MAX {
            let next_bytes = self.tx.iovs[first + run].iov_len;
            let same_peer = self.tx.peers[first + run] == self.tx.peers[first];
            if !same_peer || next_bytes == 0 || next_bytes > segment_bytes || total_bytes + next_bytes > GSO_BYTES_MAX {
                break;
            }
            total_bytes += next_bytes;
            run += 1;
            if next_bytes < segment_bytes {
                break;
            }
        }
        run
    }

    /// Sends messages `0..messages` (built over `count` datagrams), bounded retries on a
    /// full socket. Returns how many datagrams the kernel took or refused (all before the
    /// first message still unsent), how many of those it refused, and a fatal socket error
    /// if one stopped it.
    fn transmit(&mut self, mut messages: usize, count: usize) -> (usize, u64, Option<io::Error>) {
        let mut failed = 0u64;
        let mut next = 0;
        let mut stalls = 0;
        let mut fatal = None;
        while next < messages {
            // SAFETY: headers `next..messages` each point at `msg_iovlen` consecutive iovecs
            // and one sockaddr of `self.tx` holding a valid address of `msg_namelen` bytes,
            // and at its own `GsoControl` (or none); each iovec covers `len` bytes inside a
            // frame of `arena` (checked `start + len <= frame_size` when staged), which stays
            // borrowed for the whole call. The kernel only reads the buffers and writes
            // `msg_len`. MSG_DONTWAIT keeps it from blocking.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.tx.hdrs.as_mut_ptr().wrapping_add(next),
                    (messages - next) as c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            self.counters.syscalls_send += 1;
            if rc > 0 {
                let sent = rc as usize;
                self.counters.gso_sends +=
                    self.tx.datagrams[next..next + sent].iter().filter(|n| **n > 1).count() as u64;
                next += sent;
                continue;
            }
            // rc == 0 (nothing sent, no error; not expected with messages > next) is treated
            // like a full socket, without reading a stale errno.
            let error = (rc < 0).then(io::Error::last_os_error);
            match error.as_ref().and_then(io::Error::raw_os_error) {
                // Interrupted before anything was sent: try again (still bounded).
                Some(libc::EINTR) => {
                    stalls += 1;
                    if stalls > SEND_STALLS_MAX {
                        break;
                    }
                }
                // The socket buffer (or the device queue) is full: wait briefly for room.
                Some(libc::EAGAIN | libc::ENOBUFS) | None => {
                    stalls += 1;
                    if stalls > SEND_STALLS_MAX {
                        break;
                    }
                    poll_fd(&self.fd, libc::POLLOUT, SEND_STALL_POLL_MS);
                }
                // The socket itself is broken: nothing more can be sent.
                Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT) => {
                    fatal = error;
                    break;
                }
                // The path cannot take a segmented send (no checksum offload: EIO; a segment
                // over the MTU: EINVAL): stop segmenting for good and resend the rest one
                // datagram per message.
                Some(libc::EIO | libc::EINVAL) if self.tx.datagrams[next] > 1 => {
                    self.segmentation_offload = false;
                    self.counters.gso_disabled = 1;
                    messages = self.group_tx(next, self.tx.first_datagram[next], count);
                }
                // The kernel refused message `next` (unreachable destination, too large,
                // filtered, ...): drop it and go on with the rest.
                Some(_) => {
                    failed += self.tx.datagrams[next] as u64;
                    next += 1;
                }
            }
        }
        let done = if next < messages { self.tx.first_datagram[next] } else { count };
        (done, failed, fatal)
    }
}

/// The operator message for socket buffers the kernel granted smaller than asked for.
/// The kernel reports twice the size it was given (the other half covers its
/// bookkeeping), so a grant below twice the request means `net.core.{r,w}mem_max` capped it.
fn buffer_warning(config: &UdpConfig, recv_granted: usize, send_granted: usize) -> Option<String> {
    let capped = |asked: usize, granted: usize| {
        let asked = asked.min(c_int::MAX as usize / 2);
        asked > 0 && granted < asked * 2
    };
    let mut sysctls = std::vec::Vec::new();
    let mut what = std::vec::Vec::new();
    if capped(config.recv_buffer_bytes, recv_granted) {
        what.push(std::format!("receive {} of {}", recv_granted / 2, config.recv_buffer_bytes));
        sysctls.push(std::format!("net.core.rmem_max={}", config.recv_buffer_bytes));
    }
    if capped(config.send_buffer_bytes, send_granted) {
        what.push(std::format!("send {} of {}", send_granted / 2, config.send_buffer_bytes));
        sysctls.push(std::format!("net.core.wmem_max={}", config.send_buffer_bytes));
    }
    if what.is_empty() {
        return None;
    }
    Some(std::format!(
        "the kernel capped the UDP socket buffers (bytes granted of bytes asked: {}), so \
         bursts may be dropped; run with CAP_NET_ADMIN or raise the caps with `sysctl -w {}`",
        what.join(", "),
        sysctls.join(" ")
    ))
}

/// Sets a socket buffer size, with the `*FORCE` option (which ignores the sysctl cap)
/// when the process is allowed to, the plain one otherwise.
fn set_buffer(fd: &OwnedFd, force: c_int, plain: c_int, bytes: usize) -> io::Result<()> {
    let value = c_int::try_from(bytes).unwrap_or(c_int::MAX / 2);
    match set_int_option(fd, force, value) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => set_int_option(fd, plain, value),
        other => other,
    }
}

fn set_int_option(fd: &OwnedFd, option: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is exactly its size;
    // setsockopt(2) only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            mem::size_of::<c_int>() as socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn get_int_option(fd: &OwnedFd, option: c_int) -> io::Result<usize> {
    let mut value: c_int = 0;
    let mut len = mem::size_of::<c_int>() as socklen_t;
    // SAFETY: `value` is a writable c_int and `len` its size; getsockopt(2) writes at most
    // `len` bytes into it and updates `len`.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, option, (&raw mut value).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(value).unwrap_or(0))
}

/// Waits up to `timeout_ms` for `events` on `fd`; errors and timeouts are both just "go on".
fn poll_fd(fd: &OwnedFd, events: libc::c_short, timeout_ms: c_int) {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    // SAFETY: `pfd` is one valid, writable pollfd alive across the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
}

// `sockaddr_storage` can hold, suitably aligned, either address form read or written here.
const _: () = {
    use libc::{sockaddr_in, sockaddr_in6, sockaddr_storage};
    assert!(mem::size_of::<sockaddr_in>() <= mem::size_of::<sockaddr_storage>());
    assert!(mem::align_of::<sockaddr_in>() <= mem::align_of::<sockaddr_storage>());
    assert!(mem::size_of::<sockaddr_in6>() <= mem::size_of::<sockaddr_storage>());
    assert!(mem::align_of::<sockaddr_in6>() <= mem::align_of::<sockaddr_storage>());
};

/// Writes `addr` into `storage` in the form a socket of the given family takes, returning
/// its length: an IPv4 address on an IPv6 socket becomes its mapped form `::ffff:a.b.c.d`.
/// `None` for an IPv6 address on an IPv4 socket.
fn write_sockaddr(addr: SocketAddr, ipv6_socket: bool, storage: &mut libc::sockaddr_storage) -> Option<socklen_t> {
    let v6 = match (addr, ipv6_socket) {
        (SocketAddr::V4(v4), false) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: `storage` is a valid, exclusive `sockaddr_storage`, at least as large
            // and as aligned as `sockaddr_in` (checked at compile time above this function),
            // so the cast pointer is valid for one write; `sockaddr_in` has no padding, so
            // every byte of `storage` stays initialised.
            unsafe { core::ptr::write((storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(), sin) };
            return Some(mem::size_of::<libc::sockaddr_in>() as socklen_t);
        }
        (SocketAddr::V6(_), false) => return None,
        (SocketAddr::V4(v4), true) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        (SocketAddr::V6(v6), true) => v6,
    };
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: v6.port().to_be(),
        sin6_flowinfo: v6.flowinfo(),
        sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
        sin6_scope_id: v6.scope_id(),
    };
    // SAFETY: as for `sockaddr_in` above: `storage` is exclusive, large and aligned enough
    // (checked at compile time above this function) and `sockaddr_in6` has no padding.
    unsafe { core::ptr::write((storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(), sin6) };
    Some(mem::size_of::<libc::sockaddr_in6>() as socklen_t)
}

/// Reads the address of `len` bytes in `storage`. With `canonical`, an IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`) comes back as the IPv4 address. `None` for another family
/// or a length too short for the family.
fn read_sockaddr(storage: &libc::sockaddr_storage, len: socklen_t, canonical: bool) -> Option<SocketAddr> {
    let len = len as usize;
    match c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: `storage` is an initialised `sockaddr_storage`, at least as large and
            // as aligned as `sockaddr_in` (checked at compile time above `write_sockaddr`),
            // and any bytes are a valid `sockaddr_in` (integers only); the read copies them.
            let sin =
                unsafe { core::ptr::read((storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6` (integers and a byte array only).
            let sin6 =
                unsafe { core::ptr::read((storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            match ip.to_ipv4_mapped() {
                Some(v4) if canonical => Some(SocketAddr::V4(SocketAddrV4::new(v4, port))),
                _ => Some(SocketAddr::V6(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id))),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
