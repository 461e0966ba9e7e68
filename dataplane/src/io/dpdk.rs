//! The DPDK backend: the mbuf pool's memory is the node's arena, so a port's RX rings DMA
//! straight into arena frames, the chunk store writes payload to disk straight from those
//! frames (a store that kept chunks resident would keep the frames, and with them their
//! mbufs; the disk store frees them once written), and replies leave from the frames they
//! were built in.
//!
//! One mempool element is one arena frame. [`DpdkMemory`] reserves one virtually
//! contiguous memzone of `frames × frame_bytes` and lays the pool's elements back to back
//! in it, each exactly `frame_bytes` long:
//!
//! ```text
//! frame i:  [object header 64 B][rte_mbuf 128 B][mbuf headroom 128 B][packet data ...]
//!           ^ base + i * frame_bytes          headroom = 320 B ^
//! ```
//!
//! so a frame's index, its mbuf and its data are each a multiplication away from the
//! others. The arena's headroom is moved to 320 bytes ([`Arena::set_headroom`]): the node
//! writes datagrams there and never touches the mbuf in front of it; Ethernet/IP/UDP
//! headers go into the mbuf's own headroom.
//!
//! Ownership follows one bit per frame, as in the AF_XDP backend: a frame whose bit is
//! set belongs to DPDK (its mbuf is in the pool, in an RX ring, or in a TX ring on its way
//! back to the pool); a frame without it is the arena's (free, or held by the node or the
//! store), and so is its mbuf, which is then in no ring and no pool. The PMDs refill RX
//! rings from the pool by themselves and return sent mbufs to it, so the pool is what
//! AF_XDP calls the fill ring: [`DpdkIo`] keeps it between two watermarks, handing free
//! arena frames to it ([`rte_pktmbuf_free`]) or taking frames back out of it.
//!
//! The node answers ARP, IPv6 neighbour discovery (for the link-local address derived from
//! the port MAC) and ICMP / ICMPv6 echo itself ([`crate::io::responder`]), since the kernel no
//! longer sees the port (with `net_af_xdp` the XDP classifier passes those to the kernel
//! instead, and they never arrive here).
//!
//! `unsafe` is confined to this module's FFI calls and the raw mbuf/frame arithmetic;
//! every block names the invariant it relies on.

use core::ffi::{CStr, c_char, c_void};
use core::fmt;
use core::net::{IpAddr, Ipv6Addr};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use std::boxed::Box;
use std::ffi::CString;
use std::format;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use beeline_dpdk_sys as sys;

use crate::arena::{Arena, ArenaError, FrameId};
use crate::io::netstack::{self, MacAddr};
use crate::io::peers::{AddressError, PeerTable};
use crate::io::responder::{self, Answer, LocalAddrs};
use crate::io::{BATCH_MAX, PacketIo, Readiness, RxBatch, TxBatch};

mod forward;
mod port;
pub use forward::{ForwardStats, forward};
use port::{device_info, start_port};

/// Bytes of `struct rte_mbuf` (two cache lines on every DPDK platform).
const MBUF_BYTES: usize = 128;
/// Bytes DPDK keeps in front of every mbuf's packet data.
const MBUF_HEADROOM_BYTES: usize = sys::RTE_PKTMBUF_HEADROOM as usize;
/// How many times `send_batch` retries (yielding the CPU in between) a TX burst that made
/// no progress before it drops what is left.
const TX_STALLS_MAX: u32 = 64;
/// DPDK ports have no file descriptor to sleep on, so idle waiting is done in steps. For
/// this long after the last received packet `wait` only yields the CPU: the next request
/// of a client usually arrives within it, and a sleep would add its whole length (plus
/// timer slack) to that request's latency.
const IDLE_SPIN_US: u64 = 200;
/// Then sleeps of at most this long, so the rings are looked at 1000 times a second...
const IDLE_SLEEP_US_MAX: u32 = 1000;
/// ...and after this long without traffic, sleeps of up to `IDLE_SLEEP_LONG_US`: an idle
/// node then costs well under 1% of a core, and the first packet after a quiet spell
/// waits at most that long.
const IDLE_LONG_AFTER_MS: u64 = 100;
const IDLE_SLEEP_LONG_US: u32 = 4000;

/// Set once the EAL has been initialised: DPDK allows one EAL per process.
static EAL_STARTED: AtomicBool = AtomicBool::new(false);

/// Why the DPDK backend could not start or failed.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("DPDK's EAL did not start ({reason}): {fix}")]
    Eal { reason: String, fix: String },
    #[error(
        "the EAL started but no port came up from dpdk_devices {devices}: check the device string and, for a PCI \
         device, that it is bound to vfio-pci (`dpdk-devbind.py -s`)"
    )]
    NoPort { devices: String },
    #[error("DPDK port {port}: {op} failed ({reason}); run `beeline hw check` against the host's profile")]
    Port { port: u16, op: &'static str, reason: String },
    #[error(
        "cannot build the mbuf pool of {frames} frames x {frame_bytes} B ({reason}): reserve more hugepages \
         (`echo N > /proc/sys/vm/nr_hugepages`) or lower arena_frames"
    )]
    Pool { frames: u32, frame_bytes: usize, reason: String },
    #[error(
        "arena_frames = {frames} is too few: the port's rings hold {in_rings} frames and the node needs 1024 more; \
         raise arena_frames to at least {needed} or lower rx_ring_size / tx_ring_size / queues"
    )]
    TooFewFrames { frames: u32, in_rings: u32, needed: u32 },
    #[error("the DPDK arena is unusable ({0:?}); this is a bug in the pool layout code")]
    Arena(ArenaError),
    #[error(
        "MTU {mtu} does not fit {frame_bytes}-byte frames (at most {max} bytes of packet each): raise frame_bytes \
         or lower mtu"
    )]
    MtuTooLarge { mtu: u16, frame_bytes: usize, max: usize },
    #[error("the dpdk backend serves IPv4 only (it answers ARP for its address): listen on the port's IPv4 address")]
    NotIpv4,
}

/// The reason for the last failed DPDK call, from the thread-local `rte_errno`.
fn last_error() -> String {
    // SAFETY: the shim reads this thread's `rte_errno` and returns DPDK's static,
    // NUL-terminated message for it, which lives for the whole process.
    let message = unsafe { CStr::from_ptr(sys::beeline_rte_strerror_last()) };
    message.to_string_lossy().into_owned()
}

fn errno_text(rc: i32) -> String {
    // SAFETY: `rte_strerror` returns a pointer to a static or thread-local NUL-terminated
    // string for any errno value.
    let message = unsafe { CStr::from_ptr(sys::rte_strerror(-rc)) };
    message.to_string_lossy().into_owned()
}

/// The initialised EAL. Dropping it calls `rte_eal_cleanup`, so it must outlive every
/// pool and port (declare it first, drop it last).
pub struct Eal {
    _not_send: core::marker::PhantomData<*const ()>,
}

impl fmt::Debug for Eal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Eal")
    }
}

/// Hugepages of any size on this host that a new process can still get, from sysfs: the
/// free pages less those reserved by other processes' mappings (`resv_hugepages`), which
/// count as free but are promised to their owners. Pages reserved that way survive
/// `nr_hugepages = 0`, so counting them would let the EAL start and then fail to build its
/// pools.
pub fn available_hugepages() -> u64 {
    let Ok(sizes) = std::fs::read_dir("/sys/kernel/mm/hugepages") else { return 0 };
    let read = |path: std::path::PathBuf| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    sizes
        .filter_map(Result::ok)
        .filter_map(|size| {
            let free = read(size.path().join("free_hugepages"))?;
            let reserved = read(size.path().join("resv_hugepages")).unwrap_or(0);
            Some(free.saturating_sub(reserved))
        })
        .sum()
}

impl Eal {
    /// Starts the EAL with `args` (without a program name). Checks what it can first, so
    /// the common failures get a specific fix instead of DPDK's log lines alone.
    pub fn init(args: &[String]) -> Result<Self, DpdkError> {
        let no_huge = args.iter().any(|arg| arg == "--no-huge");
        if !no_huge && available_hugepages() == 0 {
            return Err(DpdkError::Eal {
                reason: "no free hugepages on this host (pages other processes have reserved do not count)".into(),
                fix: "reserve some (`echo 512 > /proc/sys/vm/nr_hugepages`) or set hugepages = \"off\" to run DPDK on \
                      normal pages"
                    .into(),
            });
        }
        let hugetlbfs_mounted = std::fs::read_to_string("/proc/mounts")
            .map(|mounts| mounts.lines().any(|line| line.split(' ').nth(2) == Some("hugetlbfs")))
            .unwrap_or(false);
        if !no_huge && !hugetlbfs_mounted {
            return Err(DpdkError::Eal {
                reason: "no hugetlbfs is mounted".into(),
                fix: "mount one (`mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages`) or set \
                      hugepages = \"off\""
                    .into(),
            });
        }
        if EAL_STARTED.swap(true, Ordering::AcqRel) {
            return Err(DpdkError::Eal {
                reason: "the EAL is already running in this process".into(),
                fix: "run one dpdk node per process".into(),
            });
        }
        let mut owned: Vec<CString> = Vec::with_capacity(args.len() + 1);
        for arg in core::iter::once("beeline").chain(args.iter().map(String::as_str)) {
            owned.push(CString::new(arg).map_err(|_| DpdkError::Eal {
                reason: format!("argument {arg:?} contains a NUL byte"),
                fix: "remove it from dpdk_eal_args or dpdk_devices".into(),
            })?);
        }
        // The EAL keeps pointers into argv (e.g. for `rte_eal_cleanup` and its log), so the
        // strings live for the rest of the process: this runs once per process.
        let argv: &'static mut [*mut c_char] =
            Box::leak(owned.into_iter().map(CString::into_raw).collect::<Vec<_>>().into_boxed_slice());
        let argc = argv.len() as i32;
        // SAFETY: argv holds `argc` valid NUL-terminated strings that are never freed; the
        // EAL is initialised at most once per process (EAL_STARTED above).
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            let reason = last_error();
            let devices: Vec<&str> = args
                .windows(2)
                .filter(|pair| pair[0] == "--vdev" || pair[0] == "-a")
                .map(|pair| pair[1].as_str())
                .collect();
            return Err(DpdkError::Eal {
                reason,
                fix: format!(
                    "check dpdk_devices {devices:?} and dpdk_eal_args (DPDK's own log lines above say which \
                     argument it refused); a stale process using the same dpdk_file_prefix also stops it"
                ),
            });
        }
        Ok(Self { _not_send: core::marker::PhantomData })
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: every pool and port was dropped before (documented contract of `Eal`);
        // cleanup releases the EAL's hugepage memory and runtime files.
        unsafe { sys::rte_eal_cleanup() };
    }
}

/// Where the pool's frames are: what [`DpdkIo`] needs of a [`DpdkMemory`] while the
/// arena borrows the memory itself.
#[derive(Debug, Clone, Copy)]
pub struct PoolLayout {
    pool: NonNull<sys::rte_mempool>,
    base: NonNull<u8>,
    frame_bytes: usize,
    frames: u32,
    object_header_bytes: usize,
}

impl PoolLayout {
    /// Bytes in front of a datagram in every frame: object header, mbuf, mbuf headroom.
    pub fn headroom(&self) -> usize {
        self.object_header_bytes + MBUF_BYTES + MBUF_HEADROOM_BYTES
    }

    /// Frame offset of an mbuf's buffer start (`buf_addr`): where its `data_off` counts from.
    fn buffer_start(&self) -> usize {
        self.object_header_bytes + MBUF_BYTES
    }

    fn mbuf_of(&self, index: u32) -> *mut sys::rte_mbuf {
        debug_assert!(index < self.frames);
        (self.base.as_ptr() as usize + index as usize * self.frame_bytes + self.object_header_bytes)
            as *mut sys::rte_mbuf
    }

    /// The frame an mbuf of this pool lives in; `None` for any other pointer.
    fn frame_index_of(&self, mbuf: *const sys::rte_mbuf) -> Option<u32> {
        let offset = (mbuf as usize).checked_sub(self.base.as_ptr() as usize + self.object_header_bytes)?;
        let index = offset / self.frame_bytes;
        (offset % self.frame_bytes == 0 && index < self.frames as usize).then_some(index as u32)
    }
}

/// The mbuf pool whose memory is the arena.
pub struct DpdkMemory {
    layout: PoolLayout,
    zone: NonNull<sys::rte_memzone>,
    free: Box<[u32]>,
    allocated: Box<[u64]>,
}

impl fmt::Debug for DpdkMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpdkMemory").field("layout", &self.layout).finish_non_exhaustive()
    }
}

unsafe extern "C" fn collect_object(
    _pool: *mut sys::rte_mempool,
    opaque: *mut c_void,
    object: *mut c_void,
    _index: u32,
) {
    // SAFETY: `opaque` is the `&mut Vec<usize>` that `DpdkMemory::create` passes to
    // `rte_mempool_obj_iter`, alive and unaliased for the duration of that call.
    let objects = unsafe { &mut *(opaque as *mut Vec<usize>) };
    objects.push(object as usize);
}

impl DpdkMemory {
    /// Builds the pool: `frames` mbufs, each exactly `frame_bytes` apart in one memzone.
    // Long on purpose: one pool build sequence (empty pool, memzone, populate, layout checks) in which every failure frees what the steps before it made; split up, that unwinding would span functions.
    pub fn create(_eal: &Eal, name: &str, frames: u32, frame_bytes: usize) -> Result<Self, DpdkError> {
        let pool_error = |reason: String| DpdkError::Pool { frames, frame_bytes, reason };
        let name_pool = CString::new(format!("{name}-pool")).map_err(|_| pool_error("bad name".into()))?;
        let name_zone = CString::new(format!("{name}-zone")).map_err(|_| pool_error("bad name".into()))?;
        // The object header is one cache line (no debug cookies in distribution builds);
        // checked against the pool below.
        let object_header_bytes = 64;
        let data_room = frame_bytes
            .checked_sub(object_header_bytes + MBUF_BYTES)
            .filter(|room| *room > MBUF_HEADROOM_BYTES)
            .ok_or_else(|| pool_error("frame too small".into()))?;
        let elt_size = (MBUF_BYTES + data_room) as u32;
        // SAFETY: a valid pool name and sizes; the pool is freed in Drop (or below on error).
        let pool = unsafe {
            sys::rte_mempool_create_empty(
                name_pool.as_ptr(),
                frames,
                elt_size,
                0,
                core::mem::size_of::<sys::rte_pktmbuf_pool_private>() as u32,
                -1, // SOCKET_ID_ANY
                sys::RTE_MEMPOOL_F_NO_SPREAD,
            )
        };
        let pool = NonNull::new(pool).ok_or_else(|| pool_error(last_error()))?;
        let free_pool = |pool: NonNull<sys::rte_mempool>| {
            // SAFETY: the pool was created above and nothing else refers to it yet.
            unsafe { sys::rte_mempool_free(pool.as_ptr()) }
        };
        // SAFETY: `pool` is a valid, empty pool; "ring_mp_mc" is DPDK's default handler.
        let rc =
            unsafe { sys::rte_mempool_set_ops_byname(pool.as_ptr(), c"ring_mp_mc".as_ptr(), core::ptr::null_mut()) };
        if rc != 0 {
            free_pool(pool);
            return Err(pool_error(errno_text(rc)));
        }
        let mut private =
            sys::rte_pktmbuf_pool_private { mbuf_data_room_size: data_room as u16, mbuf_priv_size: 0, flags: 0 };
        // SAFETY: the pool has room for this private struct (private_data_size above), and
        // `private` outlives the call, which copies it.
        unsafe {
            sys::rte_pktmbuf_pool_init(pool.as_ptr(), (&mut private as *mut sys::rte_pktmbuf_pool_private).cast())
        };
        // SAFETY: `pool` is valid; these fields are set at creation and never change.
        let (header, element, trailer) = unsafe {
            let p = pool.as_ref();
            (p.header_size as usize, p.elt_size as usize, p.trailer_size as usize)
        };
        if header != object_header_bytes || header + element + trailer != frame_bytes {
            free_pool(pool);
            return Err(pool_error(format!(
                "mempool elements are {header}+{element}+{trailer} B, not {frame_bytes} B frames"
            )));
        }
        let zone_bytes = frames as usize * frame_bytes;
        // SAFETY: a valid name; alignment is a power of two (frame_bytes is one, >= 2048).
        let zone = unsafe {
            sys::rte_memzone_reserve_aligned(name_zone.as_ptr(), zone_bytes, -1, 0, frame_bytes.max(4096) as u32)
        };
        let Some(zone) = NonNull::new(zone as *mut sys::rte_memzone) else {
            free_pool(pool);
            return Err(pool_error(last_error()));
        };
        // SAFETY: `zone` is a reserved memzone; its address and sizes are fixed.
        let (zone_addr, page_bytes) = unsafe { (zone.as_ref().__bindgen_anon_1.addr, zone.as_ref().hugepage_sz) };
        let free_zone = |zone: NonNull<sys::rte_memzone>| {
            // SAFETY: the zone was reserved above and nothing refers to it any more.
            unsafe { sys::rte_memzone_free(zone.as_ptr()) };
        };
        // SAFETY: the memzone is `zone_bytes` long, lives until Drop frees it after the
        // pool, and nothing else uses it.
        let populated = unsafe {
            sys::rte_mempool_populate_virt(
                pool.as_ptr(),
                zone_addr.cast(),
                zone_bytes,
                page_bytes as usize,
                None,
                core::ptr::null_mut(),
            )
        };
        // SAFETY: `pool` is valid.
        let populated_size = unsafe { pool.as_ref().populated_size };
        // Several chunks are fine (one per IOVA-contiguous run in PA mode): they are still
        // back to back in the memzone's virtual range, which the layout check proves.
        if populated < 0 || populated_size != frames {
            free_pool(pool);
            free_zone(zone);
            let reason =
                if populated < 0 { errno_text(populated) } else { format!("{populated_size} of {frames} mbufs fit") };
            return Err(pool_error(reason));
        }
        // SAFETY: every object of the pool is an mbuf-sized element; `rte_pktmbuf_init` is
        // DPDK's own per-mbuf constructor for a pool set up by `rte_pktmbuf_pool_init`.
        unsafe { sys::rte_mempool_obj_iter(pool.as_ptr(), Some(sys::rte_pktmbuf_init), core::ptr::null_mut()) };

        // The layout the whole backend relies on: object i at base + i * frame_bytes + 64.
        let base = zone_addr as usize;
        let mut objects: Vec<usize> = Vec::with_capacity(frames as usize);
        // SAFETY: `collect_object` only pushes into `objects`, which outlives the call.
        unsafe {
            sys::rte_mempool_obj_iter(pool.as_ptr(), Some(collect_object), (&mut objects as *mut Vec<usize>).cast())
        };
        objects.sort_unstable();
        let laid_out = objects.len() == frames as usize
            && objects.iter().enumerate().all(|(i, at)| *at == base + i * frame_bytes + object_header_bytes);
        if !laid_out {
            free_pool(pool);
            free_zone(zone);
            return Err(pool_error("the pool did not lay its mbufs out one per frame".into()));
        }
        let base = NonNull::new(zone_addr.cast::<u8>()).ok_or_else(|| pool_error("null memzone".into()))?;
        Ok(Self {
            layout: PoolLayout { pool, base, frame_bytes, frames, object_header_bytes },
            zone,
            free: vec![0u32; frames as usize].into_boxed_slice(),
            allocated: vec![0u64; (frames as usize).div_ceil(64)].into_boxed_slice(),
        })
    }

    /// Bytes in front of a datagram in every frame: object header, mbuf, mbuf headroom.
    pub fn headroom(&self) -> usize {
        self.layout().headroom()
    }

    pub fn layout(&self) -> PoolLayout {
        self.layout
    }

    /// The arena over the pool's memory, with its headroom moved behind the mbufs.
    pub fn arena(&mut self) -> Result<Arena<'_>, DpdkError> {
        let PoolLayout { base, frame_bytes, frames, .. } = self.layout;
        let len = frames as usize * frame_bytes;
        // SAFETY: the memzone holds `len` bytes at `base`, alive until `self` drops (the
        // arena borrows `self`). DPDK writes into it only through mbufs whose frames the
        // backend has handed to it (the ownership bit of `DpdkIo`), and the node only
        // writes frames it owns, behind the headroom: the same sharing as a NIC DMAing
        // into an AF_XDP UMEM.
        let memory = unsafe { core::slice::from_raw_parts_mut(base.as_ptr(), len) };
        let headroom = self.headroom();
        let mut arena =
            Arena::new(memory, frame_bytes, &mut self.free, &mut self.allocated).map_err(DpdkError::Arena)?;
        arena.set_headroom(headroom);
        Ok(arena)
    }
}

impl Drop for DpdkMemory {
    fn drop(&mut self) {
        // SAFETY: every port using the pool was stopped and closed before (DpdkIo borrows
        // nothing, so the caller drops it first: see the daemon); the memzone is freed
        // after the pool that lived in it.
        unsafe {
            sys::rte_mempool_free(self.layout.pool.as_ptr());
            sys::rte_memzone_free(self.zone.as_ptr());
        }
    }
}

/// What the DPDK port serves.
#[derive(Debug, Clone)]
pub struct DpdkConfig {
    /// RX/TX queue pairs; RSS spreads flows over the RX queues, one thread polls them all.
    pub queues: u16,
    pub rx_ring_size: u16,
    pub tx_ring_size: u16,
    pub mtu: u16,
    /// The node's address on the port: ARP is answered for it, datagrams to it are taken.
    pub ip: IpAddr,
    pub udp_port: u16,
    /// Peers whose routes are remembered.
    pub peers: usize,
}

/// Counters of the DPDK backend (the port's own statistics come from `rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DpdkCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub arp_replies: u64,
    pub echo_replies: u64,
    /// IPv6 Neighbor Advertisements sent in answer to solicitations for the link-local.
    pub nd_replies: u64,
    pub echo6_replies: u64,
    /// Frames that were neither ARP, ND, ping nor UDP (LLDP, router solicitations, ...):
    /// dropped.
    pub rx_not_udp: u64,
    /// UDP to another port or address: dropped.
    pub rx_not_ours: u64,
    /// Scattered (multi-segment) packets: never sent by Beeline peers; dropped.
    pub rx_multi_segment: u64,
    pub tx_no_route: u64,
    pub tx_ring_full: u64,
    pub tx_bad_packet: u64,
    /// Frames handed to the pool for the RX rings, and taken back out of it.
    pub pool_refilled: u64,
    pub pool_drained: u64,
}

/// The port's statistics as DPDK counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
    /// Packets received per RX queue (the first 16), where the PMD counts them.
    pub queue_ipackets: [u64; 16],
}

/// One DPDK port serving the node, over the pool of a [`DpdkMemory`].
pub struct DpdkIo {
    port: u16,
    layout: PoolLayout,
    config: DpdkConfig,
    /// The port's MAC and the addresses ARP, ND and pings are answered for.
    local: LocalAddrs,
    driver: String,
    name: String,
    /// One bit per frame, set while DPDK owns it (pool, RX ring or TX ring).
    dpdk_owned: Box<[u64]>,
    /// The pool is topped up below `pool_low` and drained above `pool_high`.
    pool_low: u32,
    pool_high: u32,
    /// Free frames the node keeps for replies; the pool never takes these.
    reserve: usize,
    rx_mbufs: [*mut sys::rte_mbuf; BATCH_MAX],
    tx_mbufs: [*mut sys::rte_mbuf; BATCH_MAX],
    next_queue: u16,
    /// When a packet last arrived: how deep `wait` may sleep.
    last_rx: std::time::Instant,
    peers: PeerTable,
    ip_id: u16,
    counters: DpdkCounters,
}

impl fmt::Debug for DpdkIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpdkIo").field("port", &self.port).field("driver", &self.driver).finish_non_exhaustive()
    }
}

fn c_text(bytes: &[c_char]) -> String {
    let bytes: Vec<u8> = bytes.iter().take_while(|byte| **byte != 0).map(|byte| *byte as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl DpdkIo {
    /// Configures and starts the first port the EAL brought up, over `memory`'s pool, and
    /// hands every frame not needed by the RX rings back to `arena`.
    // Long on purpose: one port bring-up sequence (configure, ring sizes, frame budget,
    // start, MAC and link) in the order DPDK requires, kept together so the order is visible.
    pub fn open(
        memory: PoolLayout,
        arena: &mut Arena<'_>,
        config: DpdkConfig,
        devices: &str,
    ) -> Result<Self, DpdkError> {
        let IpAddr::V4(ip) = config.ip else { return Err(DpdkError::NotIpv4) };
        assert_eq!(arena.free_frames(), arena.frame_count() as usize, "open the port on a fresh arena");
        assert_eq!(arena.frame_count(), memory.frames, "the arena must be the pool's");
        // SAFETY: plain query of the EAL's port table.
        let port = unsafe { sys::rte_eth_find_next(0) };
        if u32::from(port) >= sys::RTE_MAX_ETHPORTS {
            return Err(DpdkError::NoPort { devices: devices.into() });
        }
        let port_error = |op: &'static str, rc: i32| DpdkError::Port { port, op, reason: errno_text(rc) };
        let (info, driver) = device_info(port)?;
        let mut name_buf = [0 as c_char; 64];
        // SAFETY: the buffer is RTE_ETH_NAME_MAX_LEN (64) bytes, as the call requires.
        unsafe { sys::rte_eth_dev_get_name_by_port(port, name_buf.as_mut_ptr()) };
        let name = c_text(&name_buf);

        let packet_max = memory.frame_bytes - memory.headroom();
        let frame_max = usize::from(config.mtu) + netstack::ETHERNET_LEN + netstack::VLAN_LEN;
        if frame_max > packet_max {
            return Err(DpdkError::MtuTooLarge { mtu: config.mtu, frame_bytes: memory.frame_bytes, max: packet_max });
        }
        let queues = config.queues.min(info.max_rx_queues).min(info.max_tx_queues).max(1);
        if queues != config.queues {
            return Err(DpdkError::Port {
                port,
                op: "configuring queues",
                reason: format!(
                    "{driver} offers {} RX / {} TX queues, {} were asked for: lower queues",
                    info.max_rx_queues, info.max_tx_queues, config.queues
                ),
            });
        }
        let mut conf = sys::rte_eth_conf::default();
        // SAFETY: the shim only returns DPDK's RSS flag constants.
        let rss_wanted = unsafe { sys::beeline_rss_hf_ip_udp() } & info.flow_type_rss_offloads;
        if queues > 1 && rss_wanted != 0 {
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_wanted;
        }
        if info.max_mtu >= config.mtu {
            conf.rxmode.mtu = u32::from(config.mtu);
        }
        // SAFETY: valid port and a fully initialised configuration.
        let rc = unsafe { sys::rte_eth_dev_configure(port, queues, queues, &conf) };
        if rc != 0 {
            return Err(port_error("configure", rc));
        }
        let (mut rx_ring, mut tx_ring) = (config.rx_ring_size, config.tx_ring_size);
        // SAFETY: valid, configured port; both values are writable.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(port, &mut rx_ring, &mut tx_ring) };
        if rc != 0 {
            return Err(port_error("sizing the rings", rc));
        }
        let needed = u32::from(rx_ring) * u32::from(queues) + u32::from(tx_ring) + 4 * BATCH_MAX as u32;
        if memory.frames < needed + 1024 {
            return Err(DpdkError::TooFewFrames { frames: memory.frames, in_rings: needed, needed: needed + 1024 });
        }
        // SAFETY: valid port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port) }.max(0) as u32;
        start_port(port, queues, rx_ring, tx_ring, socket, memory.pool)?;
        // What the device really set up (a vring's size is fixed by its device, whatever
        // was asked for): reported on the status line.
        let mut queue_info = sys::rte_eth_rxq_info::default();
        // SAFETY: started port, queue 0 exists, writable info.
        if unsafe { sys::rte_eth_rx_queue_info_get(port, 0, &mut queue_info) } == 0 && queue_info.nb_desc > 0 {
            rx_ring = queue_info.nb_desc;
        }
        let mut tx_info = sys::rte_eth_txq_info::default();
        // SAFETY: as above, for the TX side.
        if unsafe { sys::rte_eth_tx_queue_info_get(port, 0, &mut tx_info) } == 0 && tx_info.nb_desc > 0 {
            tx_ring = tx_info.nb_desc;
        }
        // The poll thread sleeps in short slices when idle: ask the kernel to wake it on
        // time instead of up to 50 µs late.
        // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: started port, writable address.
        unsafe { sys::rte_eth_macaddr_get(port, &mut mac) };

        let pool_low = 2 * BATCH_MAX as u32 + 64;
        let mut io = Self {
            port,
            layout: memory,
            local: LocalAddrs::new(mac.addr_bytes, ip),
            driver,
            name,
            dpdk_owned: vec![0u64; (memory.frames as usize).div_ceil(64)].into_boxed_slice(),
            pool_low,
            pool_high: 2 * pool_low,
            reserve: 4 * BATCH_MAX,
            rx_mbufs: [core::ptr::null_mut(); BATCH_MAX],
            tx_mbufs: [core::ptr::null_mut(); BATCH_MAX],
            next_queue: 0,
            last_rx: std::time::Instant::now(),
            peers: PeerTable::new(config.peers),
            ip_id: 0,
            counters: DpdkCounters::default(),
            config: DpdkConfig { queues, rx_ring_size: rx_ring, tx_ring_size: tx_ring, ..config },
        };
        // Every frame starts out as DPDK's (the pool was created full and the RX rings took
        // their mbufs from it); frames beyond what the pool should keep come back out.
        for _ in 0..memory.frames {
            let frame = arena.alloc().expect("a fresh arena has every frame free");
            io.give(frame);
        }
        io.balance_pool(arena);
        Ok(io)
    }

    /// Hands a frame to DPDK and returns its mbuf. The token is dropped: the frame stays
    /// allocated in the arena until its mbuf comes back.
    fn give(&mut self, frame: FrameId) -> *mut sys::rte_mbuf {
        let index = frame.index();
        let (word, bit) = (index as usize / 64, index % 64);
        assert!(self.dpdk_owned[word] & (1 << bit) == 0, "frame {index} given to DPDK twice");
        self.dpdk_owned[word] |= 1 << bit;
        self.layout.mbuf_of(index)
    }

    /// Takes a frame back from DPDK by its mbuf.
    fn take(&mut self, arena: &mut Arena<'_>, mbuf: *const sys::rte_mbuf) -> Option<FrameId> {
        let index = self.layout.frame_index_of(mbuf)?;
        let (word, bit) = (index as usize / 64, index % 64);
        if self.dpdk_owned[word] & (1 << bit) == 0 {
            return None;
        }
        let frame = arena.reclaim_by_offset(u64::from(index) * self.layout.frame_bytes as u64)?;
        self.dpdk_owned[word] &= !(1 << bit);
        Some(frame)
    }

    fn pool_available(&self) -> u32 {
        // SAFETY: the pool outlives the port (see `DpdkMemory`).
        unsafe { sys::beeline_mempool_avail(self.layout.pool.as_ptr()) }
    }

    /// Keeps the pool between its watermarks: enough mbufs for the PMDs to refill their RX
    /// rings, without holding frames the node needs.
    fn balance_pool(&mut self, arena: &mut Arena<'_>) {
        let available = self.pool_available();
        if available < self.pool_low {
            let room = arena.free_frames().saturating_sub(self.reserve) as u32;
            for _ in 0..(self.pool_high - available).min(room) {
                let Some(frame) = arena.alloc() else { break };
                let mbuf = self.give(frame);
                // SAFETY: the mbuf is ours (its frame was the arena's until `give`), in no
                // ring and no pool, with the refcount of 1 it had when it left DPDK; freeing
                // it puts it into its pool.
                unsafe { sys::beeline_pktmbuf_free(mbuf) };
                self.counters.pool_refilled += 1;
            }
        } else if available > self.pool_high {
            for _ in 0..available - self.pool_high {
                // SAFETY: the pool outlives the port.
                let mbuf = unsafe { sys::beeline_pktmbuf_alloc(self.layout.pool.as_ptr()) };
                if mbuf.is_null() {
                    break;
                }
                let frame = self.take(arena, mbuf);
                let frame = frame.expect("every mbuf in the pool sits in a frame DPDK owns");
                arena.free(frame);
                self.counters.pool_drained += 1;
            }
        }
    }

    /// Points a frame's mbuf at `len` bytes starting `start` bytes into the frame, and
    /// hands the frame to DPDK for sending.
    fn prepare_tx(&mut self, frame: FrameId, start: usize, len: usize) -> *mut sys::rte_mbuf {
        let data_off = start - self.layout.buffer_start();
        let mbuf = self.give(frame);
        // SAFETY: the mbuf is ours (just given, not yet in any ring); `data_off + len` lies
        // inside its buffer (checked by the callers against the frame size).
        unsafe { sys::beeline_mbuf_prepare_tx(mbuf, data_off as u16, len as u16) };
        mbuf
    }

    /// Sends `count` prepared mbufs from `tx_mbufs` on queue 0; what the ring will not take
    /// after a few tries goes back to the pool, counted.
    fn transmit(&mut self, count: usize) {
        let mut sent = 0;
        let mut stalls = 0;
        while sent < count && stalls < TX_STALLS_MAX {
            // SAFETY: `tx_mbufs[sent..count]` are prepared mbufs of this port's pool.
            let n = unsafe {
                sys::beeline_tx_burst(self.port, 0, self.tx_mbufs.as_mut_ptr().add(sent), (count - sent) as u16)
            };
            if n == 0 {
                // The ring is full until the device (or the vhost-user peer, which may
                // need this very core) takes descriptors: let it run.
                stalls += 1;
                std::thread::yield_now();
            }
            sent += usize::from(n);
        }
        for mbuf in &self.tx_mbufs[sent..count] {
            // SAFETY: the ring did not take this mbuf; it is still ours to free, and freeing
            // returns it (and its DPDK-owned frame) to the pool.
            unsafe { sys::beeline_pktmbuf_free(*mbuf) };
        }
        self.counters.tx_ring_full += (count - sent) as u64;
        self.counters.tx_packets += sent as u64;
    }

    /// The frame offset of the packet an RX mbuf holds, and its length.
    fn rx_span(&self, mbuf: *const sys::rte_mbuf) -> (usize, usize) {
        // SAFETY: the mbuf is one of ours, just returned by an RX burst.
        let (data_off, len) = unsafe { (sys::beeline_mbuf_data_off(mbuf), sys::beeline_mbuf_pkt_len(mbuf)) };
        (self.layout.buffer_start() + usize::from(data_off), len as usize)
    }

    fn receive_one(&mut self, arena: &mut Arena<'_>, mbuf: *mut sys::rte_mbuf, out: &mut RxBatch) -> bool {
        // SAFETY: an mbuf the RX burst just returned.
        if unsafe { sys::beeline_mbuf_nb_segs(mbuf) } != 1 {
            self.counters.rx_multi_segment += 1;
            // SAFETY: ours to free; every segment returns to the pool.
            unsafe { sys::beeline_pktmbuf_free(mbuf) };
            return false;
        }
        let (start, len) = self.rx_span(mbuf);
        let frame = self.take(arena, mbuf).expect("an RX mbuf sits in a frame DPDK owned");
        if start + len > self.layout.frame_bytes {
            self.counters.rx_multi_segment += 1;
            arena.free(frame);
            return false;
        }
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += len as u64;
        let local = self.local;
        let answered = match responder::answer_in_place(&mut arena.frame_mut(&frame)[start..start + len], &local) {
            Answer::ArpReply { len } => Some((&mut self.counters.arp_replies, len)),
            Answer::EchoReply { len } => Some((&mut self.counters.echo_replies, len)),
            Answer::NeighborAdvert { len } => Some((&mut self.counters.nd_replies, len)),
            Answer::Echo6Reply { len } => Some((&mut self.counters.echo6_replies, len)),
            Answer::NotMine => None,
        };
        if let Some((counter, len)) = answered {
            *counter += 1;
            self.tx_mbufs[0] = self.prepare_tx(frame, start, len);
            self.transmit(1);
            return false;
        }
        let ip = local.ipv4;
        let datagram = match netstack::parse(&arena.frame(&frame)[start..start + len]) {
            Ok(datagram) => datagram,
            Err(_) => {
                self.counters.rx_not_udp += 1;
                arena.free(frame);
                return false;
            }
        };
        let for_us =
            datagram.dst.port() == self.config.udp_port && (datagram.dst.ip() == IpAddr::V4(ip) || ip.is_unspecified());
        if !for_us {
            self.counters.rx_not_ours += 1;
            arena.free(frame);
            return false;
        }
        let packet = self.peers.accept(frame, start, &datagram);
        match out.push(packet) {
            Ok(()) => true,
            Err(packet) => {
                arena.free(packet.frame);
                false
            }
        }
    }

    /// The port's own statistics.
    pub fn port_stats(&self) -> PortStats {
        let mut stats = sys::rte_eth_stats::default();
        // SAFETY: valid port, writable stats.
        unsafe { sys::rte_eth_stats_get(self.port, &mut stats) };
        PortStats {
            ipackets: stats.ipackets,
            opackets: stats.opackets,
            imissed: stats.imissed,
            ierrors: stats.ierrors,
            oerrors: stats.oerrors,
            rx_nombuf: stats.rx_nombuf,
            queue_ipackets: core::array::from_fn(|queue| stats.q_ipackets.get(queue).copied().unwrap_or(0)),
        }
    }

    pub fn counters(&self) -> DpdkCounters {
        self.counters
    }

    /// Frames DPDK holds (pool, RX and TX rings) and mbufs waiting in the pool.
    pub fn frames_in_dpdk(&self) -> (u32, u32) {
        let owned = self.dpdk_owned.iter().map(|word| word.count_ones()).sum();
        (owned, self.pool_available())
    }

    pub fn mac(&self) -> MacAddr {
        self.local.mac
    }

    /// The port's IPv6 link-local address, answered for ND and ping6.
    pub fn ipv6_link_local(&self) -> Ipv6Addr {
        self.local.ipv6_link_local
    }

    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The port's name as the EAL knows it (the device string's name part).
    pub fn port_name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &DpdkConfig {
        &self.config
    }
}

impl Drop for DpdkIo {
    fn drop(&mut self) {
        // SAFETY: the port was started by `open`; stopping and closing it returns every
        // mbuf in its rings to the pool, which outlives it.
        unsafe {
            sys::rte_eth_dev_stop(self.port);
            sys::rte_eth_dev_close(self.port);
        }
    }
}

impl PacketIo for DpdkIo {
    type Error = DpdkError;

    fn recv_batch(&mut self, arena: &mut Arena<'_>, out: &mut RxBatch) -> Result<usize, DpdkError> {
        self.balance_pool(arena);
        let mut appended = 0;
        for turn in 0..self.config.queues {
            let want = out.capacity() - out.len();
            if want == 0 {
                break;
            }
            let queue = (self.next_queue + turn) % self.config.queues;
            // SAFETY: `rx_mbufs` has room for BATCH_MAX >= want pointers.
            let received = unsafe { sys::beeline_rx_burst(self.port, queue, self.rx_mbufs.as_mut_ptr(), want as u16) };
            if received > 0 {
                self.last_rx = std::time::Instant::now();
            }
            for n in 0..usize::from(received) {
                let mbuf = self.rx_mbufs[n];
                appended += usize::from(self.receive_one(arena, mbuf, out));
            }
        }
        self.next_queue = (self.next_queue + 1) % self.config.queues;
        Ok(appended)
    }

    fn send_batch(&mut self, arena: &mut Arena<'_>, batch: &mut TxBatch) -> Result<(), DpdkError> {
        let mut count = 0;
        // Headers go into the mbuf's headroom, never over the mbuf itself.
        let floor = self.layout.buffer_start();
        for packet in batch.drain(..) {
            self.ip_id = self.ip_id.wrapping_add(1);
            let (start, frame_len) = match self.peers.address(arena, &packet, floor, self.ip_id) {
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
            self.counters.tx_bytes += frame_len as u64;
            self.tx_mbufs[count] = self.prepare_tx(packet.frame, start, frame_len);
            count += 1;
        }
        if count > 0 {
            self.transmit(count);
        }
        Ok(())
    }

    fn wait(&mut self, timeout_us: u32) -> Readiness {
        // No descriptor to sleep on: yield right after traffic, then sleep slices that grow
        // with the quiet, and let the poll loop look at the rings after each.
        let idle = self.last_rx.elapsed();
        if idle.as_micros() < u128::from(IDLE_SPIN_US) {
            std::thread::yield_now();
            return Readiness::TimedOut;
        }
        let cap =
            if idle.as_millis() < u128::from(IDLE_LONG_AFTER_MS) { IDLE_SLEEP_US_MAX } else { IDLE_SLEEP_LONG_US };
        std::thread::sleep(core::time::Duration::from_micros(u64::from(timeout_us.min(cap))));
        Readiness::TimedOut
    }

    fn dropped(&self) -> u64 {
        let c = &self.counters;
        c.rx_not_udp + c.rx_not_ours + c.rx_multi_segment + c.tx_no_route + c.tx_ring_full + c.tx_bad_packet
    }
}
