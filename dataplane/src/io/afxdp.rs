//! The AF_XDP backend: the node's buffer arena is the socket's UMEM, so the kernel (copy
//! mode) or the NIC (zero-copy mode) writes received frames straight into arena frames and
//! sends straight out of them.
//!
//! Frame ownership follows the rings. A frame handed to the fill ring or the TX ring stays
//! *allocated* in the [`Arena`] while the kernel owns it (its [`FrameId`] token is dropped,
//! and a private bitmap records that the kernel has it); the RX ring and the completion
//! ring hand frames back by address, and [`Arena::reclaim_by_offset`] turns the address
//! into a token again. Nothing on the packet path allocates or copies payload:
//!
//! - RX: the Ethernet/IP/UDP headers of each frame are parsed (checked: the bytes are
//!   untrusted) to find where the Beeline datagram starts and who sent it; the frame goes
//!   to the node as it is. The sender's route (MACs, VLAN tag, addresses) is learned into
//!   a fixed-size peer table.
//! - TX: the node writes each datagram at [`HEADROOM_BYTES`](crate::arena::HEADROOM_BYTES)
//!   of its frame; the headers go
//!   into the headroom in front of it, with the IPv4 header checksum and the UDP checksum
//!   computed here, and the descriptor points at the first header byte.
//!
//! The socket binds with `XDP_USE_NEED_WAKEUP` and lets the kernel pick zero-copy when the
//! driver supports it, copy mode otherwise; [`AfXdpIo::bind_mode`] says which it got. In
//! copy mode the kernel copies each packet once between its own buffer and the UMEM frame
//! (counted in [`AfXdpCounters::kernel_copied_bytes`]); Beeline's code copies nothing on
//! either path.
//!
//! One socket serves one RX queue of one interface; the XDP classifier (crate
//! `beeline-xdp`) must direct that queue's storage traffic to it through its XSKMAP.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};
use std::boxed::Box;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::vec;

use libc::{c_int, c_void, socklen_t};

use crate::arena::{Arena, FrameId};
use crate::io::netstack;
use crate::io::peers::{AddressError, PEER_PROBES, PeerTable};
use crate::io::{PacketIo, Readiness, RxBatch, TxBatch};

/// Bytes in front of every received packet: the kernel's XDP headroom. The UMEM's own
/// headroom is 0.
pub const XDP_PACKET_HEADROOM: usize = 256;

/// How many times `send_batch` kicks the kernel and waits for TX ring room before it
/// drops what is left.
const TX_STALLS_MAX: u32 = 8;

/// Whether the socket must run zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy when the driver supports it, copy mode otherwise.
    Prefer,
    /// Zero-copy or fail.
    Require,
}

/// The mode the kernel bound the socket in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The NIC DMAs straight into and out of arena frames.
    ZeroCopy,
    /// The kernel copies each packet between its buffers and the arena frame.
    Copy,
}

impl BindMode {
    pub fn name(self) -> &'static str {
        match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        }
    }
}

/// Settings for [`AfXdpIo::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfXdpConfig {
    pub ifindex: u32,
    /// The interface's name, for messages.
    pub interface: [u8; 16],
    pub queue: u32,
    /// Entries of each of the four rings (a power of two).
    pub ring_size: u32,
    /// The storage UDP port; datagrams to other ports are dropped and counted.
    pub port: u16,
    pub zero_copy: ZeroCopy,
    /// Peers whose routes are remembered (a power of two).
    pub peers: usize,
}

impl AfXdpConfig {
    pub fn new(interface: &str, ifindex: u32, queue: u32, port: u16) -> Self {
        let mut name = [0u8; 16];
        let len = interface.len().min(15);
        name[..len].copy_from_slice(&interface.as_bytes()[..len]);
        Self { ifindex, interface: name, queue, ring_size: 2048, port, zero_copy: ZeroCopy::Prefer, peers: 1024 }
    }

    fn interface_name(&self) -> std::string::String {
        let end = self.interface.iter().position(|b| *b == 0).unwrap_or(self.interface.len());
        std::string::String::from_utf8_lossy(&self.interface[..end]).into_owned()
    }
}

/// What the backend counted since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AfXdpCounters {
    pub rx_packets: u64,
    /// Bytes of the received frames (Ethernet headers included).
    pub rx_bytes: u64,
    /// Frames that were not a well-formed UDP datagram (the classifier lets none through;
    /// nonzero means a classifier of another version or a bug).
    pub rx_not_udp: u64,
    /// UDP datagrams to another port than the storage port.
    pub rx_wrong_port: u64,
    /// Descriptors naming a frame the kernel did not own, or out of the UMEM.
    pub rx_bad_descriptor: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Replies to a peer whose route is unknown (never seen, or evicted): dropped.
    pub tx_no_route: u64,
    /// Replies dropped because the TX ring stayed full.
    pub tx_ring_full: u64,
    /// Replies that did not fit their frame's headroom or length limits.
    pub tx_bad_packet: u64,
    /// `sendto` kicks that made the kernel transmit.
    pub tx_kicks: u64,
    /// `recvfrom` kicks for a fill ring that asked for a wakeup.
    pub rx_kicks: u64,
    /// Bytes the kernel copied into or out of the UMEM because the socket runs in copy
    /// mode (0 in zero-copy mode). Beeline's own code copies no payload on this path.
    pub kernel_copied_bytes: u64,
    /// Completions naming a frame the kernel did not own.
    pub completion_bad: u64,
}

/// The kernel's own counters for the socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// Why the AF_XDP socket could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    #[error(
        "cannot open an AF_XDP socket ({0}): this needs root (CAP_NET_RAW, CAP_NET_ADMIN) and a kernel built with \
         CONFIG_XDP_SOCKETS; use --backend udp otherwise"
    )]
    Socket(io::Error),
    #[error(
        "cannot register the {bytes}-byte arena as AF_XDP UMEM with {frame_size}-byte frames ({os_error}): frames \
         must be a power of two from 2048 to the page size (the kernel takes no larger AF_XDP frames, hugepages \
         or not), and the process needs CAP_IPC_LOCK or a memlock limit above the arena size"
    )]
    Umem { bytes: usize, frame_size: usize, os_error: io::Error },
    #[error("setting up the AF_XDP rings failed in {op}: {os_error}")]
    Rings { op: &'static str, os_error: io::Error },
    #[error(
        "{interface} queue {queue} cannot run AF_XDP in zero-copy mode ({os_error}), and require_zero_copy is set: \
         its driver has no zero-copy support (veth never has); unset require_zero_copy to run in copy mode (the \
         kernel then copies each packet once), or use a NIC whose driver supports AF_XDP zero-copy"
    )]
    ZeroCopyUnavailable { interface: std::string::String, queue: u32, os_error: io::Error },
    #[error(
        "{interface} queue {queue} is already served by another AF_XDP socket (or was just released; the kernel \
         frees it shortly): stop the other node, or wait a second and start again"
    )]
    Busy { interface: std::string::String, queue: u32 },
    #[error(
        "cannot bind an AF_XDP socket to {interface} queue {queue} ({os_error}): check that the queue exists \
         (`ethtool -l {interface}`) and the interface is up"
    )]
    Bind { interface: std::string::String, queue: u32, os_error: io::Error },
    #[error("invalid AF_XDP configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("the arena has {free} free frames; the AF_XDP fill ring needs at least {needed}: raise arena_frames")]
    ArenaTooSmall { free: usize, needed: usize },
    #[error("the AF_XDP socket failed: {0}; restart the node")]
    Io(io::Error),
}

/// One `mmap`ed ring: its mapping plus pointers to the shared producer/consumer/flags
/// words and the descriptor array.
struct Ring<T> {
    map: NonNull<c_void>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    size: u32,
    /// Our copy of the index we advance (producer for fill/TX, consumer for RX/completion).
    local: u32,
}

impl<T: Copy> Ring<T> {
    /// Maps ring `pgoff` of `fd` with `size` entries laid out as `offsets` says; we are its
    /// producer (fill, TX) or its consumer (RX, completion).
    fn map(fd: &OwnedFd, pgoff: i64, size: u32, offsets: &libc::xdp_ring_offset, we_produce: bool) -> io::Result<Self> {
        let map_len = offsets.desc as usize + size as usize * core::mem::size_of::<T>();
        // SAFETY: a shared mapping of the socket's ring at the kernel's offset for it, at
        // an address of the kernel's choosing (no MAP_FIXED): it cannot alter any existing
        // mapping. The result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap returned null"))?;
        let at = |offset: u64| {
            NonNull::new(map.as_ptr().cast::<u8>().wrapping_add(offset as usize))
                .ok_or_else(|| io::Error::other("ring offset wraps the address space"))
        };
        let producer = at(offsets.producer)?.cast::<AtomicU32>();
        let consumer = at(offsets.consumer)?.cast::<AtomicU32>();
        let flags = at(offsets.flags)?.cast::<AtomicU32>();
        let descs = at(offsets.desc)?.cast::<T>();
        let mut ring = Ring { map, map_len, producer, consumer, flags, descs, mask: size - 1, size, local: 0 };
        // Our index starts where the kernel's copy of it is (0 on a fresh socket).
        ring.local =
            if we_produce { ring.producer().load(Ordering::Relaxed) } else { ring.consumer().load(Ordering::Relaxed) };
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: the kernel's offsets put a naturally aligned u32 at `producer` inside the
        // live mapping, which lives as long as `self`; the kernel updates it concurrently,
        // which is what the atomic type is for.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        // In bounds: `index & mask` < size, and the mapping holds `size` descriptors.
        self.descs.as_ptr().wrapping_add((index & self.mask) as usize)
    }

    // ---- producer side (fill, TX): we write descriptors, the kernel consumes them ----

    /// Free slots we may write before submitting.
    fn free(&self) -> u32 {
        let consumer = self.consumer().load(Ordering::Acquire);
        self.size - self.local.wrapping_sub(consumer)
    }

    /// Writes `value` into the `n`th free slot (0-based, not yet submitted).
    fn write(&mut self, n: u32, value: T) {
        // SAFETY: the caller checked `n < free()`, so the kernel has consumed this slot and
        // will not read it before `submit`; the pointer is in bounds of the mapping and
        // aligned for T (the kernel lays the array out for its own `T`).
        unsafe { self.slot(self.local.wrapping_add(n)).write_volatile(value) };
    }

    /// Publishes `n` written slots to the kernel.
    fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.producer().store(self.local, Ordering::Release);
    }

    // ---- consumer side (RX, completion): the kernel writes, we read ----

    /// Entries ready to read.
    fn available(&self) -> u32 {
        self.producer().load(Ordering::Acquire).wrapping_sub(self.local)
    }

    /// Reads the `n`th ready entry (0-based, `n < available()`).
    fn read(&self, n: u32) -> T {
        // SAFETY: the caller checked `n < available()`, and the Acquire load of the producer
        // in `available` orders this read after the kernel's write of the entry; in bounds
        // and aligned as in `write`.
        unsafe { self.slot(self.local.wrapping_add(n)).read_volatile() }
    }

    /// Hands `n` read entries back to the kernel.
    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.consumer().store(self.local, Ordering::Release);
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping `map` created, unmapped once; no reference into it
        // outlives `self`.
        unsafe { libc::munmap(self.map.as_ptr(), self.map_len) };
    }
}

/// An AF_XDP socket whose UMEM is the node's arena.
pub struct AfXdpIo {
    // Rings are declared before the socket so they are unmapped before it closes.
    fill: Ring<u64>,
    completion: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fd: OwnedFd,
    config: AfXdpConfig,
    bind_mode: BindMode,
    frame_size: usize,
    frame_count: u32,
    /// One bit per arena frame, set while the kernel owns it (fill/RX or TX/completion).
    kernel_owned: Box<[u64]>,
    /// Frames in the fill ring or the RX ring (given to the kernel, not back yet).
    rx_owned: u32,
    /// Frames in the TX ring or the completion ring.
    tx_owned: u32,
    /// Frames the fill side keeps at most; the rest of the arena serves replies.
    fill_target: u32,
    peers: PeerTable,
    ip_id: u16,
    counters: AfXdpCounters,
}

// SAFETY: the raw pointers point into this value's own ring mappings (unmapped only on
// drop) and are only used through `&mut self`/`&self` methods; moving the backend to
// another thread moves sole ownership of those mappings with it.
unsafe impl Send for AfXdpIo {}

fn setsockopt<T>(fd: &OwnedFd, option: c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised T and the length passed is its size; the
    // kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            option,
            (value as *const T).cast(),
            core::mem::size_of::<T>() as socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

impl AfXdpIo {
    /// Opens a socket on `config.ifindex`/`config.queue` with `arena`'s whole region as
    /// UMEM, gives the fill ring its frames, and binds.
    ///
    /// The arena's memory must stay mapped (and the arena in use by the caller) for as long
    /// as the returned socket lives: the kernel reads and writes frames behind Beeline's
    /// back. Drop the socket first.
    // Long on purpose: one AF_XDP socket bring-up (UMEM registration, ring sizes, ring mmaps, bind, fill) in the kernel's required order, each step with its SAFETY invariants next to it.
    pub fn open(arena: &mut Arena<'_>, config: AfXdpConfig) -> Result<Self, AfXdpError> {
        if !config.ring_size.is_power_of_two() || !(64..=16384).contains(&config.ring_size) {
            return Err(AfXdpError::InvalidConfig("ring_size must be a power of two from 64 to 16384"));
        }
        if !config.peers.is_power_of_two() || config.peers < PEER_PROBES {
            return Err(AfXdpError::InvalidConfig("peers must be a power of two of at least 8"));
        }
        let frame_size = arena.frame_size();
        if frame_size < 2048 || frame_size <= XDP_PACKET_HEADROOM + netstack::HEADERS_MAX {
            return Err(AfXdpError::InvalidConfig("AF_XDP needs frames of at least 2048 bytes"));
        }
        let frame_count = arena.frame_count();
        let fill_target = config.ring_size.min(frame_count / 2);
        let reserve = Self::reserve(frame_count);
        if arena.free_frames() < fill_target as usize + reserve {
            return Err(AfXdpError::ArenaTooSmall {
                free: arena.free_frames(),
                needed: fill_target as usize + reserve,
            });
        }

        // SAFETY: socket(2) takes no pointers; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(AfXdpError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let umem = libc::xdp_umem_reg {
            addr: arena.region_ptr() as u64,
            len: arena.region_len() as u64,
            chunk_size: frame_size as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(&fd, libc::XDP_UMEM_REG, &umem).map_err(|os_error| AfXdpError::Umem {
            bytes: arena.region_len(),
            frame_size,
            os_error,
        })?;
        let rings = |op, e| AfXdpError::Rings { op, os_error: e };
        let size = config.ring_size;
        setsockopt(&fd, libc::XDP_UMEM_FILL_RING, &size).map_err(|e| rings("XDP_UMEM_FILL_RING", e))?;
        setsockopt(&fd, libc::XDP_UMEM_COMPLETION_RING, &size).map_err(|e| rings("XDP_UMEM_COMPLETION_RING", e))?;
        setsockopt(&fd, libc::XDP_RX_RING, &size).map_err(|e| rings("XDP_RX_RING", e))?;
        setsockopt(&fd, libc::XDP_TX_RING, &size).map_err(|e| rings("XDP_TX_RING", e))?;

        // SAFETY: all-zero is a valid `xdp_mmap_offsets` (integers only).
        let mut offsets: libc::xdp_mmap_offsets = unsafe { core::mem::zeroed() };
        let mut len = core::mem::size_of::<libc::xdp_mmap_offsets>() as socklen_t;
        // SAFETY: `offsets` is writable for `len` bytes; the kernel writes at most that and
        // updates `len`.
        let rc = unsafe {
            libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, libc::XDP_MMAP_OFFSETS, (&raw mut offsets).cast(), &mut len)
        };
        if rc < 0 {
            return Err(rings("XDP_MMAP_OFFSETS", io::Error::last_os_error()));
        }
        if len as usize != core::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(rings("XDP_MMAP_OFFSETS", io::Error::other("kernel without ring flags (older than 5.4)")));
        }
        let fill = Ring::<u64>::map(&fd, libc::XDP_UMEM_PGOFF_FILL_RING as i64, size, &offsets.fr, true)
            .map_err(|e| rings("mmap(fill)", e))?;
        let completion = Ring::<u64>::map(&fd, libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64, size, &offsets.cr, false)
            .map_err(|e| rings("mmap(completion)", e))?;
        let rx = Ring::<libc::xdp_desc>::map(&fd, libc::XDP_PGOFF_RX_RING, size, &offsets.rx, false)
            .map_err(|e| rings("mmap(rx)", e))?;
        let tx = Ring::<libc::xdp_desc>::map(&fd, libc::XDP_PGOFF_TX_RING, size, &offsets.tx, true)
            .map_err(|e| rings("mmap(tx)", e))?;

        let mut io = AfXdpIo {
            fill,
            completion,
            rx,
            tx,
            fd,
            config,
            bind_mode: BindMode::Copy,
            frame_size,
            frame_count,
            kernel_owned: vec![0u64; (frame_count as usize).div_ceil(64)].into_boxed_slice(),
            rx_owned: 0,
            tx_owned: 0,
            fill_target,
            peers: PeerTable::new(config.peers),
            ip_id: 0,
            counters: AfXdpCounters::default(),
        };
        io.refill(arena);
        io.bind()?;
        Ok(io)
    }

    /// Free frames the fill ring leaves to the node for replies.
    fn reserve(frame_count: u32) -> usize {
        (frame_count as usize / 4).max(super::TX_QUEUE_MAX.min(frame_count as usize / 2))
    }

    fn bind(&mut self) -> Result<(), AfXdpError> {
        let interface = self.config.interface_name();
        let queue = self.config.queue;
        let mut flags = libc::XDP_USE_NEED_WAKEUP;
        if self.config.zero_copy == ZeroCopy::Require {
            flags |= libc::XDP_ZEROCOPY;
        }
        let address = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: self.config.ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `address` is a valid sockaddr_xdp of the size passed, alive across the
        // call, which only reads it.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&raw const address).cast(),
                core::mem::size_of::<libc::sockaddr_xdp>() as socklen_t,
            )
        };
        if rc < 0 {
            let os_error = io::Error::last_os_error();
            return Err(match os_error.raw_os_error() {
                Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT) if self.config.zero_copy == ZeroCopy::Require => {
                    AfXdpError::ZeroCopyUnavailable { interface, queue, os_error }
                }
                Some(libc::EBUSY) => AfXdpError::Busy { interface, queue },
                _ => AfXdpError::Bind { interface, queue, os_error },
            });
        }
        let mut options = libc::xdp_options { flags: 0 };
        let mut len = core::mem::size_of::<libc::xdp_options>() as socklen_t;
        // SAFETY: `options` is writable for `len` bytes; the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(self.fd.as_raw_fd(), libc::SOL_XDP, libc::XDP_OPTIONS, (&raw mut options).cast(), &mut len)
        };
        if rc < 0 {
            return Err(AfXdpError::Rings { op: "XDP_OPTIONS", os_error: io::Error::last_os_error() });
        }
        self.bind_mode =
            if options.flags & libc::XDP_OPTIONS_ZEROCOPY != 0 { BindMode::ZeroCopy } else { BindMode::Copy };
        if self.bind_mode == BindMode::Copy && self.config.zero_copy == ZeroCopy::Require {
            return Err(AfXdpError::ZeroCopyUnavailable {
                interface,
                queue,
                os_error: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            });
        }
        Ok(())
    }

    /// Whether the kernel bound the socket zero-copy or in copy mode.
    pub fn bind_mode(&self) -> BindMode {
        self.bind_mode
    }

    pub fn queue(&self) -> u32 {
        self.config.queue
    }

    pub fn counters(&self) -> AfXdpCounters {
        self.counters
    }

    /// Frames the kernel holds right now (fill + RX, TX + completion).
    pub fn frames_in_kernel(&self) -> (u32, u32) {
        (self.rx_owned, self.tx_owned)
    }

    /// The kernel's counters for this socket.
    pub fn kernel_stats(&self) -> io::Result<KernelStats> {
        // SAFETY: all-zero is a valid `xdp_statistics` (integers only).
        let mut stats: libc::xdp_statistics = unsafe { core::mem::zeroed() };
        let mut len = core::mem::size_of::<libc::xdp_statistics>() as socklen_t;
        // SAFETY: `stats` is writable for `len` bytes; the kernel writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&raw mut stats).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(KernelStats {
            rx_dropped: stats.rx_dropped,
            rx_invalid_descs: stats.rx_invalid_descs,
            tx_invalid_descs: stats.tx_invalid_descs,
            rx_ring_full: stats.rx_ring_full,
            rx_fill_ring_empty_descs: stats.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: stats.tx_ring_empty_descs,
        })
    }

    /// Marks `frame` as owned by the kernel and returns its UMEM address.
    fn give(&mut self, arena: &Arena<'_>, frame: FrameId) -> u64 {
        let index = frame.index() as usize;
        self.kernel_owned[index / 64] |= 1 << (index % 64);
        // The token is dropped: the frame stays allocated in the arena until its address
        // comes back through the RX or completion ring.
        arena.offset_of(&frame)
    }

    /// Turns an address the kernel handed back into the frame's token, if the kernel
    /// owned that frame.
    fn take(&mut self, arena: &mut Arena<'_>, addr: u64) -> Option<FrameId> {
        let index = addr / self.frame_size as u64;
        if index >= u64::from(self.frame_count) {
            return None;
        }
        let (word, bit) = (index as usize / 64, index % 64);
        if self.kernel_owned[word] & (1 << bit) == 0 {
            return None;
        }
        let frame = arena.reclaim_by_offset(addr)?;
        self.kernel_owned[word] &= !(1 << bit);
        Some(frame)
    }

    /// Gives the fill ring frames up to its target, keeping the node's reserve free.
    fn refill(&mut self, arena: &mut Arena<'_>) {
        let reserve = Self::reserve(self.frame_count);
        let want = self.fill_target.saturating_sub(self.rx_owned);
        let room = arena.free_frames().saturating_sub(reserve) as u32;
        let count = want.min(room).min(self.fill.free());
        if count == 0 {
            return;
        }
        for n in 0..count {
            let Some(frame) = arena.alloc() else { break };
            let addr = self.give(arena, frame);
            self.fill.write(n, addr);
        }
        self.fill.submit(count);
        self.rx_owned += count;
        if self.fill.needs_wakeup() {
            self.kick_rx();
        }
    }

    fn kick_rx(&mut self) {
        self.counters.rx_kicks += 1;
        // SAFETY: a zero-length recvfrom with null buffers only tells the kernel to look at
        // the fill ring; nothing is read or written through the pointers.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                core::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
            )
        };
    }

    /// Makes the kernel transmit what the TX ring holds; `Err` only on a fatal socket error.
    fn kick_tx(&mut self) -> Result<(), AfXdpError> {
        self.counters.tx_kicks += 1;
        // SAFETY: a zero-length sendto with a null buffer and no address only tells the
        // kernel to process the TX ring; nothing is read through the pointers.
        let rc = unsafe {
            libc::sendto(self.fd.as_raw_fd(), core::ptr::null(), 0, libc::MSG_DONTWAIT, core::ptr::null(), 0)
        };
        if rc >= 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            // Budget used up, device queue busy, no memory for an skb, interrupted: the
            // rest goes on the next kick.
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => Ok(()),
            // The link went down: packets wait in the ring (or are lost, and retried by
            // the protocol).
            Some(libc::ENETDOWN | libc::ENXIO) => Ok(()),
            _ => Err(AfXdpError::Io(error)),
        }
    }

    /// Takes back every frame the kernel finished sending.
    fn reap_completions(&mut self, arena: &mut Arena<'_>) {
        let ready = self.completion.available();
        for n in 0..ready {
            let addr = self.completion.read(n);
            match self.take(arena, addr) {
                Some(frame) => {
                    arena.free(frame);
                    self.tx_owned = self.tx_owned.saturating_sub(1);
                }
                None => self.counters.completion_bad += 1,
            }
        }
        if ready > 0 {
            self.completion.release(ready);
        }
    }
}

impl AsFd for AfXdpIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for AfXdpIo {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for AfXdpIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfXdpIo")
            .field("interface", &self.config.interface_name())
            .field("queue", &self.config.queue)
            .field("bind_mode", &self.bind_mode)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl PacketIo for AfXdpIo {
    type Error = AfXdpError;

    fn recv_batch(&mut self, arena: &mut Arena<'_>, out: &mut RxBatch) -> Result<usize, AfXdpError> {
        self.reap_completions(arena);
        let want = (out.capacity() - out.len()) as u32;
        let ready = self.rx.available().min(want);
        let mut appended = 0;
        for n in 0..ready {
            let desc = self.rx.read(n);
            let Some(frame) = self.take(arena, desc.addr) else {
                self.counters.rx_bad_descriptor += 1;
                continue;
            };
            self.rx_owned = self.rx_owned.saturating_sub(1);
            let start = (desc.addr % self.frame_size as u64) as usize;
            let len = desc.len as usize;
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += len as u64;
            if self.bind_mode == BindMode::Copy {
                self.counters.kernel_copied_bytes += len as u64;
            }
            let parsed = arena.frame(&frame).get(start..start + len).map(netstack::parse);
            let datagram = match parsed {
                Some(Ok(datagram)) => datagram,
                _ => {
                    self.counters.rx_not_udp += 1;
                    arena.free(frame);
                    continue;
                }
            };
            if datagram.dst.port() != self.config.port {
                self.counters.rx_wrong_port += 1;
                arena.free(frame);
                continue;
            }
            let packet = self.peers.accept(frame, start, &datagram);
            match out.push(packet) {
                Ok(()) => appended += 1,
                Err(packet) => arena.free(packet.frame),
            }
        }
        if ready > 0 {
            self.rx.release(ready);
        }
        self.refill(arena);
        Ok(appended)
    }

    fn send_batch(&mut self, arena: &mut Arena<'_>, batch: &mut TxBatch) -> Result<(), AfXdpError> {
        self.reap_completions(arena);
        let mut queued = 0u32;
        let mut stalls = 0;
        let mut fatal = None;
        for packet in batch.drain(..) {
            self.ip_id = self.ip_id.wrapping_add(1);
            let (start, frame_len) = match self.peers.address(arena, &packet, 0, self.ip_id) {
                Ok(span) => span,
                Err(error) => {
                    match error {
                        AddressError::NoRoute => self.counters.tx_no_route += 1,
                        AddressError::BadPacket => self.counters.tx_bad_packet += 1,
                    }
                    arena.free(packet.frame);
                    continue;
                }
            };
            // Room in the TX ring: kick the kernel and take completions until there is.
            while self.tx.free() <= queued && fatal.is_none() && stalls < TX_STALLS_MAX {
                stalls += 1;
                self.tx.submit(queued);
                queued = 0;
                if let Err(error) = self.kick_tx() {
                    fatal = Some(error);
                }
                self.reap_completions(arena);
                if self.tx.free() == 0 {
                    poll_fd(&self.fd, libc::POLLOUT, 1);
                }
            }
            if self.tx.free() <= queued {
                self.counters.tx_ring_full += 1;
                arena.free(packet.frame);
                continue;
            }
            let addr = self.give(arena, packet.frame) + start as u64;
            self.tx.write(queued, libc::xdp_desc { addr, len: frame_len as u32, options: 0 });
            queued += 1;
            self.tx_owned += 1;
            self.counters.tx_packets += 1;
            self.counters.tx_bytes += frame_len as u64;
            if self.bind_mode == BindMode::Copy {
                self.counters.kernel_copied_bytes += frame_len as u64;
            }
        }
        if queued > 0 {
            self.tx.submit(queued);
        }
        if let Some(error) = fatal {
            return Err(error);
        }
        // Copy mode transmits only inside a syscall; zero-copy drivers ask through the flag.
        if self.tx_owned > 0 && (self.bind_mode == BindMode::Copy || self.tx.needs_wakeup()) {
            // Each kick sends a bounded budget (32 packets in copy mode): kick until the
            // kernel has taken everything or stops making progress.
            for _ in 0..TX_STALLS_MAX * 4 {
                let before = self.tx.consumer().load(Ordering::Acquire);
                self.kick_tx()?;
                let after = self.tx.consumer().load(Ordering::Acquire);
                if after == self.tx.local || after == before {
                    break;
                }
            }
        }
        self.reap_completions(arena);
        Ok(())
    }

    fn wait(&mut self, timeout_us: u32) -> Readiness {
        if self.rx.available() > 0 {
            return Readiness::Ready;
        }
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout = libc::timespec {
            tv_sec: (timeout_us / 1_000_000) as libc::time_t,
            tv_nsec: ((timeout_us % 1_000_000) * 1000) as libc::c_long,
        };
        // SAFETY: `pfd` is one valid, writable pollfd and `timeout` a valid timespec, both
        // alive across the call; a null signal mask leaves the mask unchanged.
        let rc = unsafe { libc::ppoll(&mut pfd, 1, &timeout, core::ptr::null()) };
        if rc == 0 { Readiness::TimedOut } else { Readiness::Ready }
    }

    fn dropped(&self) -> u64 {
        let c = &self.counters;
        c.rx_not_udp + c.rx_wrong_port + c.rx_bad_descriptor + c.tx_no_route + c.tx_ring_full + c.tx_bad_packet
    }
}

/// Waits up to `timeout_ms` for `events` on `fd`; errors and timeouts are both "go on".
fn poll_fd(fd: &OwnedFd, events: libc::c_short, timeout_ms: c_int) {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    // SAFETY: `pfd` is one valid, writable pollfd alive across the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::netstack::{ETHERTYPE_VLAN, Route, Vlan};
    use core::net::SocketAddr;

    fn route(port: u16, last: u8) -> Route {
        Route {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, last],
            vlan: None,
            src: "10.1.0.1:7777".parse().unwrap(),
            dst: SocketAddr::from(([10, 1, 0, last], port)),
        }
    }

    #[test]
    fn peer_table_learns_updates_and_evicts_the_least_recent() {
        let mut table = PeerTable::new(8);
        for last in 0..8u8 {
            table.learn(route(1000, last));
        }
        for last in 0..8u8 {
            assert!(table.route(&route(1000, last).dst).is_some(), "peer {last}");
        }
        // Re-learning updates in place (a VLAN tag appeared).
        let mut tagged = route(1000, 3);
        tagged.vlan = Some(Vlan { tpid: ETHERTYPE_VLAN, tci: 7 });
        table.learn(tagged);
        assert_eq!(table.route(&tagged.dst).unwrap().vlan, tagged.vlan);
        // A ninth peer evicts someone, never the one just used.
        table.learn(route(2000, 9));
        assert!(table.route(&route(2000, 9).dst).is_some());
        assert!(table.route(&tagged.dst).is_some());
        let known = (0..8u8).filter(|last| table.route(&route(1000, *last).dst).is_some()).count();
        assert_eq!(known, 7);
    }

    #[test]
    fn config_is_validated_before_any_syscall() {
        let mut memory =
            crate::arena::memory::ArenaMemory::allocate(64, 4096, crate::arena::memory::PagePolicy::Normal).unwrap();
        let mut arena = memory.arena();
        let mut config = AfXdpConfig::new("lo", 1, 0, 7777);
        config.ring_size = 1000;
        assert!(matches!(AfXdpIo::open(&mut arena, config), Err(AfXdpError::InvalidConfig(_))));
        let config = AfXdpConfig::new("lo", 1, 0, 7777);
        // With frames taken, 64 cannot hold a 32-frame fill ring plus the node's reserve.
        let held = arena.alloc().unwrap();
        assert!(matches!(AfXdpIo::open(&mut arena, config), Err(AfXdpError::ArenaTooSmall { .. })));
        arena.free(held);
        assert_eq!(config.interface_name(), "lo");
    }
}
