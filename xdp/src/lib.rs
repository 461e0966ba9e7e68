//! Beeline's XDP classifier and its loader.
//!
//! The classifier (`ebpf/beeline_xdp.c`, compiled with clang by this crate's `build.rs`)
//! sits on the node's interface: UDP packets to the storage port from an allowed source go
//! to the AF_XDP socket of their RX queue, storage-port packets from anywhere else (and
//! malformed ones) are dropped in the kernel, and all other traffic passes to the kernel
//! stack. [`Classifier`] loads it with aya, fills its maps, attaches it, reads its per-CPU
//! counters and detaches it. [`AdoptedClassifier`] configures and reads a copy that
//! another loader attached: DPDK's `net_af_xdp` PMD, given `xdp_prog=` with this object,
//! loads it with libbpf, attaches it and puts its own sockets into [`XSKS_MAP`].
//!
//! Lifecycle rules:
//! - Attachment goes through a bpf link held by this process (kernels >= 5.9) and nothing
//!   is pinned, so a node that crashes or is killed leaves nothing behind: the kernel
//!   detaches the program when the process's descriptors close.
//! - A Beeline classifier found attached through netlink (by an older kernel's fallback
//!   path or by hand with `ip link`) is stale: it is replaced.
//! - A Beeline classifier held by a live bpf link belongs to a running node: refused.
//! - Any other XDP program is never replaced: the error names it and says what to do.
//! - An adopted classifier is never detached by this crate: its loader owns the attachment.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, Map, MapData, MapInfo, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader, Pod};

pub mod netlink;

pub use netlink::{AttachedXdp, XdpAttachMode};

/// The classifier object, compiled by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/beeline_xdp.o"));

/// The program's name in the kernel (`bpftool prog` shows it); how a stale Beeline
/// classifier is told apart from another program.
pub const PROGRAM_NAME: &str = "beeline_xdp";

/// The XSKMAP's name. Fixed by DPDK: its `net_af_xdp` PMD, loading a custom program
/// (`xdp_prog=`), looks the map up by this name and inserts each RX queue's socket into it.
pub const XSKS_MAP: &str = "xsks_map";

/// The other maps of the classifier, by name (`ebpf/beeline_xdp.c`).
const CONFIG_MAP: &str = "config";
const ALLOW_V4_MAP: &str = "allow_v4";
const ALLOW_V6_MAP: &str = "allow_v6";
const COUNTERS_MAP: &str = "counters";

/// Longest object name the kernel keeps: `BPF_OBJ_NAME_LEN` (16) less the NUL. Longer map
/// and program names are cut to this by libbpf and aya, and are reported cut.
const KERNEL_NAME_MAX: usize = 15;

/// `name` as the kernel reports it once loaded.
fn kernel_name(name: &str) -> &[u8] {
    &name.as_bytes()[..name.len().min(KERNEL_NAME_MAX)]
}

/// Entries of the XSKMAP: the highest RX queue index a socket can serve, plus one.
pub const QUEUES_MAX: u32 = 64;

/// Prefixes each allowlist trie holds at most.
pub const PREFIXES_MAX: usize = 1024;

/// The classifier's object file, for tools and tests that load it by other means.
pub fn object() -> &'static [u8] {
    OBJECT
}

/// How to attach the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver: the fast path, and what AF_XDP zero-copy needs.
    Native,
    /// In the kernel's generic receive path: works on any interface, slower.
    Generic,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }

    fn aya(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }

    fn netlink(self) -> XdpAttachMode {
        match self {
            AttachMode::Native => XdpAttachMode::Driver,
            AttachMode::Generic => XdpAttachMode::Generic,
        }
    }
}

/// One verdict slot of the classifier's counters (`enum counter` in the C source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    /// Not storage traffic: handed to the kernel stack.
    Pass = 0,
    /// Storage traffic from an allowed source: redirected to the AF_XDP socket.
    Redirect = 1,
    /// Storage-port packet from a source outside the allowlist: dropped.
    DropNotAllowed = 2,
    /// Storage-port packet with bad lengths, fragmented, or not a Beeline datagram: dropped.
    DropMalformed = 3,
    /// Storage traffic on an RX queue no AF_XDP socket serves: dropped.
    DropNoSocket = 4,
}

impl Verdict {
    pub const ALL: [Verdict; 5] =
        [Verdict::Pass, Verdict::Redirect, Verdict::DropNotAllowed, Verdict::DropMalformed, Verdict::DropNoSocket];

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Redirect => "redirect",
            Verdict::DropNotAllowed => "drop_not_allowed",
            Verdict::DropMalformed => "drop_malformed",
            Verdict::DropNoSocket => "drop_no_socket",
        }
    }
}

/// Packets and bytes of one verdict, summed over every CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictCount {
    pub packets: u64,
    pub bytes: u64,
}

/// Every verdict's count, indexed by `Verdict as usize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassifierCounters(pub [VerdictCount; 5]);

impl ClassifierCounters {
    pub fn get(&self, verdict: Verdict) -> VerdictCount {
        self.0[verdict as usize]
    }
}

/// `struct counter_value` in the C source.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct CounterValue {
    packets: u64,
    bytes: u64,
}

// SAFETY: two u64s, `repr(C)`, no padding: every bit pattern is a valid value.
unsafe impl Pod for CounterValue {}

/// `struct beeline_config` in the C source.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct Config {
    port_be: u16,
    reserved: u16,
    flags: u32,
}

// SAFETY: integers only, `repr(C)`, no padding (2 + 2 + 4 bytes): any bits are valid.
unsafe impl Pod for Config {}

/// Why the classifier could not be set up or used. Every message is one line that says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("no network interface named {interface:?} here: check --interface (`ip link` lists them)")]
    UnknownInterface { interface: String },
    #[error(
        "interface {interface} already runs XDP program `{name}` (id {id}, {mode} mode), which Beeline did not \
         load; Beeline does not replace it: detach it (`ip link set dev {interface} xdp off`, or `xdp-loader \
         unload {interface} --all` for xdp-tools programs) or serve on another interface, then start again"
    )]
    ForeignProgram { interface: String, name: String, id: u32, mode: &'static str },
    #[error(
        "interface {interface} already runs Beeline's classifier (program id {id}) through a bpf link that a \
         live process holds: another `beeline node run` serves this interface; stop it first (`bpftool link \
         list` shows the link and its owner)"
    )]
    InUse { interface: String, id: u32 },
    #[error(
        "the driver of {interface} cannot run XDP programs natively ({reason}): set xdp_mode = \"generic\" \
         (--xdp-mode generic; slower, and never zero-copy) or use an interface whose driver supports XDP"
    )]
    NativeUnsupported { interface: String, reason: String },
    #[error(
        "cannot load the XDP classifier into the kernel ({reason}): this needs root (CAP_BPF, CAP_NET_ADMIN) \
         and a kernel with BTF and XDP support (5.10 or newer)"
    )]
    Load { reason: String },
    #[error("cannot attach the XDP classifier to {interface} in {mode} mode: {reason}")]
    Attach { interface: String, mode: &'static str, reason: String },
    #[error("cannot update the classifier's {map} map: {reason}")]
    Map { map: &'static str, reason: String },
    #[error("the allowlist has {count} prefixes; the classifier holds at most {PREFIXES_MAX}: merge prefixes")]
    TooManyPrefixes { count: usize },
    #[error("RX queue {queue} is out of range: the classifier serves queues 0 to {}", QUEUES_MAX - 1)]
    QueueOutOfRange { queue: u32 },
    #[error("cannot {op} the XDP programs of {interface} through netlink: {source}")]
    Netlink { op: &'static str, interface: String, source: std::io::Error },
    #[error(
        "no XDP program is attached to {interface}, so there is no Beeline classifier to configure: start the \
         DPDK net_af_xdp port on it with xdp_prog=<path of Beeline's beeline_xdp.o> first (`ip -d link show dev \
         {interface}` shows what is attached)"
    )]
    NotAttached { interface: String },
    #[error(
        "interface {interface} runs more than one Beeline classifier (program ids {ids}, one per XDP mode), so \
         configuring one would leave the other unconfigured: detach the stray one (`ip link set dev {interface} \
         xdpgeneric off` or `xdpdrv off`), then start again"
    )]
    SeveralPrograms { interface: String, ids: String },
    #[error(
        "cannot open the maps of the Beeline classifier on {interface} (program id {id}): {reason}; this needs \
         root (CAP_SYS_ADMIN) and a program loaded from this build's beeline_xdp.o (beeline_xdp::object())"
    )]
    Adopt { interface: String, id: u32, reason: String },
}

/// Collapses a multi-line error (a verifier log, say) into one line of bounded length.
fn one_line(error: impl std::fmt::Display) -> String {
    let text = error.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() > 400 {
        let cut = (0..=400).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        format!("{}...", &text[..cut])
    } else {
        text
    }
}

/// What [`Classifier::attach`] found and replaced on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replaced {
    pub program_id: u32,
    pub mode: XdpAttachMode,
}

type V4Key = Key<[u8; 4]>;
type V6Key = Key<[u8; 16]>;

/// The classifier loaded, configured and attached to one interface. Dropping it detaches
/// it; [`Classifier::detach`] does so and reports errors.
pub struct Classifier {
    ebpf: Ebpf,
    link: Option<aya::programs::xdp::XdpLinkId>,
    interface: String,
    ifindex: u32,
    mode: AttachMode,
    program_id: u32,
    replaced: Option<Replaced>,
    maps: ClassifierMaps,
    xsks_map: XskMap<MapData>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("interface", &self.interface)
            .field("mode", &self.mode)
            .field("program_id", &self.program_id)
            .finish_non_exhaustive()
    }
}

/// Index of the interface named `interface` in this network namespace.
pub fn interface_index(interface: &str) -> Result<u32, XdpError> {
    let unknown = || XdpError::UnknownInterface { interface: interface.to_owned() };
    let name = CString::new(interface).map_err(|_| unknown())?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call, which only
    // reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 { Err(unknown()) } else { Ok(index) }
}

/// The kernel's information about the loaded BPF program with this id, if it still exists.
fn program_info(id: u32) -> Option<aya::programs::ProgramInfo> {
    aya::programs::loaded_programs().filter_map(Result::ok).find(|info| info.id() == id)
}

/// Name of the loaded BPF program with this id, if it still exists.
fn program_name(id: u32) -> Option<String> {
    program_info(id).map(|info| String::from_utf8_lossy(info.name()).into_owned())
}

/// The XDP programs attached to the interface, through netlink.
fn query_attached(interface: &str, ifindex: u32) -> Result<Vec<AttachedXdp>, XdpError> {
    netlink::attached_programs(ifindex).map_err(|source| XdpError::Netlink {
        op: "query",
        interface: interface.to_owned(),
        source,
    })
}

/// The XDP programs on `interface`, as `(program id, mode, program name)`.
pub fn attached(interface: &str) -> Result<Vec<(AttachedXdp, String)>, XdpError> {
    let ifindex = interface_index(interface)?;
    let programs = query_attached(interface, ifindex)?;
    Ok(programs
        .into_iter()
        .map(|program| (program, program_name(program.program_id).unwrap_or_else(|| "?".to_owned())))
        .collect())
}

/// `(prefix length, network bytes)` keys of one trie.
type KeySet<const N: usize> = BTreeSet<(u32, [u8; N])>;

/// The keys of both tries for an allowlist.
fn trie_keys(prefixes: &[(IpAddr, u8)]) -> (KeySet<4>, KeySet<16>) {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    let mapped_net = u128::from(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped());
    let mask128 = |len: u8| u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
    let mask32 = |len: u8| u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
    let add_v4 = |v4: &mut BTreeSet<_>, v6: &mut BTreeSet<_>, addr: Ipv4Addr, len: u8| {
        let len = len.min(32);
        let net = u32::from(addr) & mask32(len);
        v4.insert((u32::from(len), net.to_be_bytes()));
        // The node's own allowlist matches IPv4 prefixes against IPv4-mapped IPv6 sources too.
        let mapped = u128::from(Ipv4Addr::from(net).to_ipv6_mapped());
        v6.insert((96 + u32::from(len), mapped.to_be_bytes()));
    };
    if prefixes.is_empty() {
        // An empty allowlist admits every source (packets still need a valid MAC).
        add_v4(&mut v4, &mut v6, Ipv4Addr::UNSPECIFIED, 0);
        v6.insert((0, [0; 16]));
        return (v4, v6);
    }
    for &(addr, len) in prefixes {
        match addr {
            IpAddr::V4(addr) => add_v4(&mut v4, &mut v6, addr, len),
            IpAddr::V6(addr) => {
                let len = len.min(128);
                let net = u128::from(addr) & mask128(len);
                v6.insert((u32::from(len), net.to_be_bytes()));
                // An IPv6 prefix that covers IPv4-mapped addresses covers those IPv4 sources.
                if len <= 96 && mapped_net & mask128(len) == net {
                    add_v4(&mut v4, &mut v6, Ipv4Addr::UNSPECIFIED, 0);
                } else if len > 96 && net & mask128(96) == mapped_net {
                    add_v4(&mut v4, &mut v6, Ipv4Addr::from(net as u32), len - 96);
                }
            }
        }
    }
    (v4, v6)
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
    move |error| XdpError::Map { map, reason: one_line(error) }
}

/// The keys an allowlist trie holds now.
fn trie_keys_in<const N: usize>(
    trie: &LpmTrie<MapData, [u8; N], u8>,
    map: &'static str,
) -> Result<KeySet<N>, XdpError> {
    trie.keys().map(|key| key.map(|key| (key.prefix_len(), key.data())).map_err(map_error(map))).collect()
}

/// The maps through which the classifier is configured and observed, whoever loaded it:
/// shared by [`Classifier`] (this crate loaded it) and [`AdoptedClassifier`] (another
/// loader did), so both apply the same port and allowlist semantics.
struct ClassifierMaps {
    config: Array<MapData, Config>,
    allow_v4: LpmTrie<MapData, [u8; 4], u8>,
    allow_v6: LpmTrie<MapData, [u8; 16], u8>,
    /// The keys in each trie, so that a new allowlist removes exactly what is stale.
    keys_v4: KeySet<4>,
    keys_v6: KeySet<16>,
    counters: PerCpuArray<MapData, CounterValue>,
}

impl ClassifierMaps {
    /// Typed handles on the maps `take` hands out by name. The tries' current keys are
    /// read back: a fresh load has none, but an adopted classifier may have been
    /// configured before, and its old prefixes must go when the allowlist is replaced.
    fn open(mut take: impl FnMut(&'static str) -> Result<Map, XdpError>) -> Result<Self, XdpError> {
        let config = Array::try_from(take(CONFIG_MAP)?).map_err(map_error(CONFIG_MAP))?;
        let allow_v4 = LpmTrie::try_from(take(ALLOW_V4_MAP)?).map_err(map_error(ALLOW_V4_MAP))?;
        let allow_v6 = LpmTrie::try_from(take(ALLOW_V6_MAP)?).map_err(map_error(ALLOW_V6_MAP))?;
        let counters = PerCpuArray::try_from(take(COUNTERS_MAP)?).map_err(map_error(COUNTERS_MAP))?;
        let keys_v4 = trie_keys_in(&allow_v4, ALLOW_V4_MAP)?;
        let keys_v6 = trie_keys_in(&allow_v6, ALLOW_V6_MAP)?;
        Ok(ClassifierMaps { config, allow_v4, allow_v6, keys_v4, keys_v6, counters })
    }

    /// See [`Classifier::set_allowlist`].
    fn set_allowlist(&mut self, allow: &[(IpAddr, u8)]) -> Result<(), XdpError> {
        let (v4, v6) = trie_keys(allow);
        if v4.len() > PREFIXES_MAX || v6.len() > PREFIXES_MAX {
            return Err(XdpError::TooManyPrefixes { count: v4.len().max(v6.len()) });
        }
        for &(len, net) in &v4 {
            self.allow_v4.insert(&V4Key::new(len, net), 1, 0).map_err(map_error(ALLOW_V4_MAP))?;
        }
        for &(len, net) in &v6 {
            self.allow_v6.insert(&V6Key::new(len, net), 1, 0).map_err(map_error(ALLOW_V6_MAP))?;
        }
        for &(len, net) in self.keys_v4.difference(&v4) {
            self.allow_v4.remove(&V4Key::new(len, net)).map_err(map_error(ALLOW_V4_MAP))?;
        }
        for &(len, net) in self.keys_v6.difference(&v6) {
            self.allow_v6.remove(&V6Key::new(len, net)).map_err(map_error(ALLOW_V6_MAP))?;
        }
        self.keys_v4 = v4;
        self.keys_v6 = v6;
        Ok(())
    }

    /// See [`Classifier::set_port`].
    fn set_port(&mut self, port: u16) -> Result<(), XdpError> {
        self.config.set(0, Config { port_be: port.to_be(), reserved: 0, flags: 0 }, 0).map_err(map_error(CONFIG_MAP))
    }

    /// See [`Classifier::counters`].
    fn counters(&self) -> Result<ClassifierCounters, XdpError> {
        let mut out = ClassifierCounters::default();
        for verdict in Verdict::ALL {
            let values = self.counters.get(&(verdict as u32), 0).map_err(map_error(COUNTERS_MAP))?;
            let slot = &mut out.0[verdict as usize];
            for value in values.iter() {
                slot.packets += value.packets;
                slot.bytes += value.bytes;
            }
        }
        Ok(out)
    }
}

impl Classifier {
    /// Loads the classifier, configures it for storage `port` and `allow` (empty = every
    /// source), replaces a stale Beeline classifier, and attaches it to `interface`.
    ///
    /// With `port` 0 the classifier passes everything until [`Classifier::set_port`]:
    /// attach that way, register the sockets, then set the port, so no storage packet
    /// arrives before a socket can take it.
    pub fn attach(interface: &str, mode: AttachMode, port: u16, allow: &[(IpAddr, u8)]) -> Result<Self, XdpError> {
        let ifindex = interface_index(interface)?;
        let replaced = Self::clear_stale(interface, ifindex)?;

        let load_error = |error: &dyn std::fmt::Display| XdpError::Load { reason: one_line(error) };
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(|e| load_error(&e))?;
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or(XdpError::Map { map: name, reason: "missing from the object".into() })
        };
        let maps = ClassifierMaps::open(&mut take)?;
        let xsks_map = XskMap::try_from(take(XSKS_MAP)?).map_err(map_error(XSKS_MAP))?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| XdpError::Load { reason: format!("the object has no program {PROGRAM_NAME}") })?
            .try_into()
            .map_err(|e: ProgramError| load_error(&e))?;
        program.load().map_err(|e| load_error(&e))?;
        let program_id = program.info().map_err(|e| load_error(&e))?.id();

        let mut classifier = Classifier {
            link: None,
            interface: interface.to_owned(),
            ifindex,
            mode,
            program_id,
            replaced,
            maps,
            xsks_map,
            ebpf,
        };
        classifier.set_allowlist(allow)?;
        classifier.set_port(port)?;

        let program: &mut Xdp = classifier
            .ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|program| program.try_into().ok())
            .ok_or_else(|| XdpError::Load { reason: format!("program {PROGRAM_NAME} vanished") })?;
        let link = program.attach_to_if_index(ifindex, mode.aya()).map_err(|error| {
            let os_error = match &error {
                ProgramError::SyscallError(syscall) => syscall.io_error.raw_os_error(),
                _ => None,
            };
            let reason = one_line(&error);
            if mode == AttachMode::Native && os_error == Some(libc::EOPNOTSUPP) {
                XdpError::NativeUnsupported { interface: interface.to_owned(), reason }
            } else {
                XdpError::Attach { interface: interface.to_owned(), mode: mode.name(), reason }
            }
        })?;
        classifier.link = Some(link);
        Ok(classifier)
    }

    /// Detaches a stale Beeline classifier; refuses live or foreign programs.
    fn clear_stale(interface: &str, ifindex: u32) -> Result<Option<Replaced>, XdpError> {
        let programs = query_attached(interface, ifindex)?;
        let mut replaced = None;
        for program in programs {
            let name = program_name(program.program_id).unwrap_or_else(|| "?".to_owned());
            if name != PROGRAM_NAME {
                return Err(XdpError::ForeignProgram {
                    interface: interface.to_owned(),
                    name,
                    id: program.program_id,
                    mode: program.mode.name(),
                });
            }
            match netlink::detach(ifindex, program.mode) {
                Ok(()) => replaced = Some(Replaced { program_id: program.program_id, mode: program.mode }),
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(XdpError::InUse { interface: interface.to_owned(), id: program.program_id });
                }
                Err(source) => {
                    return Err(XdpError::Netlink {
                        op: "detach a stale classifier from",
                        interface: interface.to_owned(),
                        source,
                    });
                }
            }
        }
        Ok(replaced)
    }

    /// Replaces the allowlist in the kernel without reloading: new prefixes are added
    /// before old ones are removed, so a source in both lists is never dropped. An empty
    /// list admits every source.
    pub fn set_allowlist(&mut self, allow: &[(IpAddr, u8)]) -> Result<(), XdpError> {
        self.maps.set_allowlist(allow)
    }

    /// Sets the storage UDP port the classifier redirects; 0 makes it pass everything.
    pub fn set_port(&mut self, port: u16) -> Result<(), XdpError> {
        self.maps.set_port(port)
    }

    /// Directs storage traffic arriving on RX `queue` to the AF_XDP socket `socket`.
    pub fn register_socket(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        if queue >= QUEUES_MAX {
            return Err(XdpError::QueueOutOfRange { queue });
        }
        self.xsks_map.set(queue, socket.as_raw_fd(), 0).map_err(map_error(XSKS_MAP))
    }

    /// Stops directing traffic of RX `queue` to a socket (it is then dropped and counted).
    pub fn unregister_socket(&mut self, queue: u32) -> Result<(), XdpError> {
        if queue >= QUEUES_MAX {
            return Err(XdpError::QueueOutOfRange { queue });
        }
        self.xsks_map.unset(queue).map_err(map_error(XSKS_MAP))
    }

    /// The per-verdict counters, summed over every CPU.
    pub fn counters(&self) -> Result<ClassifierCounters, XdpError> {
        self.maps.counters()
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The kernel's id of the loaded program (`bpftool prog show id N`).
    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    /// The stale Beeline classifier this attach replaced, if there was one.
    pub fn replaced(&self) -> Option<Replaced> {
        self.replaced
    }

    /// Detaches the classifier from the interface and unloads it; then checks through
    /// netlink that the interface runs no Beeline program any more.
    pub fn detach(mut self) -> Result<(), XdpError> {
        if let Some(link) = self.link.take() {
            let program: Option<&mut Xdp> =
                self.ebpf.program_mut(PROGRAM_NAME).and_then(|program| program.try_into().ok());
            if let Some(program) = program {
                program.detach(link).map_err(|error| XdpError::Attach {
                    interface: self.interface.clone(),
                    mode: self.mode.name(),
                    reason: format!("detaching failed: {}", one_line(error)),
                })?;
            }
        }
        let still = query_attached(&self.interface, self.ifindex)?;
        if still.iter().any(|program| program.program_id == self.program_id && program.mode == self.mode.netlink()) {
            return Err(XdpError::Attach {
                interface: self.interface.clone(),
                mode: self.mode.name(),
                reason: "the program is still attached after detaching".into(),
            });
        }
        Ok(())
    }
}

/// The classifier as another loader attached it, configured from here.
///
/// DPDK's `net_af_xdp` PMD, given `xdp_prog=<beeline_xdp.o>` (the bytes of [`object`]),
/// loads the object with libbpf, attaches it to the port's interface through netlink and
/// puts its own AF_XDP sockets into [`XSKS_MAP`]. What it cannot do is set the storage
/// port and the allowlist: [`AdoptedClassifier::adopt`] finds that program through
/// netlink and opens its maps by id, so the node configures and reads it the same way as
/// a [`Classifier`] it loaded itself.
///
/// Dropping it only closes this process's map descriptors: the program stays attached,
/// because the PMD owns the attachment and removes it when the port closes.
pub struct AdoptedClassifier {
    interface: String,
    ifindex: u32,
    program_id: u32,
    mode: XdpAttachMode,
    maps: ClassifierMaps,
}

impl std::fmt::Debug for AdoptedClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdoptedClassifier")
            .field("interface", &self.interface)
            .field("mode", &self.mode)
            .field("program_id", &self.program_id)
            .finish_non_exhaustive()
    }
}

impl AdoptedClassifier {
    /// Finds the Beeline classifier attached to `interface` and opens its maps. Changes
    /// nothing: the port stays as the loader left it (0, passing everything, for a fresh
    /// load) until [`AdoptedClassifier::set_port`].
    ///
    /// Fails when nothing is attached ([`XdpError::NotAttached`]), when the attached
    /// program is not Beeline's ([`XdpError::ForeignProgram`]), or when its maps do not
    /// match this build ([`XdpError::Adopt`], [`XdpError::Map`]).
    pub fn adopt(interface: &str) -> Result<Self, XdpError> {
        let ifindex = interface_index(interface)?;
        let mut ours = Vec::new();
        for program in query_attached(interface, ifindex)? {
            let info = program_info(program.program_id);
            let name = info.as_ref().map(|info| info.name().to_vec()).unwrap_or_else(|| b"?".to_vec());
            if name != kernel_name(PROGRAM_NAME) {
                return Err(XdpError::ForeignProgram {
                    interface: interface.to_owned(),
                    name: String::from_utf8_lossy(&name).into_owned(),
                    id: program.program_id,
                    mode: program.mode.name(),
                });
            }
            // Checked above: a program whose info could not be read is named "?".
            if let Some(info) = info {
                ours.push((program, info));
            }
        }
        let (program, info) = match ours.len() {
            0 => return Err(XdpError::NotAttached { interface: interface.to_owned() }),
            1 => ours.remove(0),
            _ => {
                let ids = ours.iter().map(|(program, _)| program.program_id.to_string()).collect::<Vec<_>>();
                return Err(XdpError::SeveralPrograms { interface: interface.to_owned(), ids: ids.join(", ") });
            }
        };
        let id = program.program_id;
        let adopt_error = |reason: String| XdpError::Adopt { interface: interface.to_owned(), id, reason };

        let map_ids = info
            .map_ids()
            .map_err(|error| adopt_error(format!("cannot list its maps: {}", one_line(error))))?
            .ok_or_else(|| adopt_error("the kernel does not report a program's maps (needs 4.15 or newer)".into()))?;
        // Open only the maps wanted, by the name the kernel reports (cut to 15 bytes).
        let wanted = [CONFIG_MAP, ALLOW_V4_MAP, ALLOW_V6_MAP, COUNTERS_MAP];
        let mut found: Vec<(&'static str, MapData)> = Vec::new();
        for map_id in map_ids {
            let map_info = MapInfo::from_id(map_id)
                .map_err(|error| adopt_error(format!("cannot read map id {map_id}: {}", one_line(error))))?;
            let Some(&name) = wanted.iter().find(|name| map_info.name() == kernel_name(name)) else {
                continue;
            };
            let data = MapData::from_id(map_id)
                .map_err(|error| adopt_error(format!("cannot open map `{name}` (id {map_id}): {}", one_line(error))))?;
            found.push((name, data));
        }
        let maps = ClassifierMaps::open(|name| {
            let index = found.iter().position(|(found, _)| *found == name).ok_or_else(|| {
                adopt_error(format!(
                    "it has no map named `{name}`, so it was built from another version of ebpf/beeline_xdp.c"
                ))
            })?;
            Map::from_map_data(found.swap_remove(index).1).map_err(map_error(name))
        })?;
        Ok(AdoptedClassifier { interface: interface.to_owned(), ifindex, program_id: id, mode: program.mode, maps })
    }

    /// Replaces the allowlist, as [`Classifier::set_allowlist`] does.
    pub fn set_allowlist(&mut self, allow: &[(IpAddr, u8)]) -> Result<(), XdpError> {
        self.maps.set_allowlist(allow)
    }

    /// Sets the storage UDP port, as [`Classifier::set_port`] does; 0 passes everything.
    pub fn set_port(&mut self, port: u16) -> Result<(), XdpError> {
        self.maps.set_port(port)
    }

    /// The per-verdict counters, summed over every CPU.
    pub fn counters(&self) -> Result<ClassifierCounters, XdpError> {
        self.maps.counters()
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Where the loader attached the program (the PMD lets the kernel choose: native
    /// when the driver supports XDP, generic otherwise).
    pub fn mode(&self) -> XdpAttachMode {
        self.mode
    }

    /// The kernel's id of the adopted program (`bpftool prog show id N`).
    pub fn program_id(&self) -> u32 {
        self.program_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn object_is_an_elf_with_the_program() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        let needle = PROGRAM_NAME.as_bytes();
        assert!(OBJECT.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn allowlist_keys_are_masked_and_mirrored() {
        let (v4, v6) = trie_keys(&[(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), 16)]);
        assert_eq!(v4.into_iter().collect::<Vec<_>>(), vec![(16, [10, 1, 0, 0])]);
        let mapped = u128::from(Ipv4Addr::new(10, 1, 0, 0).to_ipv6_mapped()).to_be_bytes();
        assert_eq!(v6.into_iter().collect::<Vec<_>>(), vec![(112, mapped)]);

        let (v4, v6) = trie_keys(&[]);
        assert!(v4.contains(&(0, [0; 4])) && v6.contains(&(0, [0; 16])));

        let (v4, _) = trie_keys(&[(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)]);
        assert!(v4.contains(&(0, [0; 4])), "::/0 covers IPv4-mapped sources");
        let (v4, v6) = trie_keys(&[(IpAddr::V6("fd00::".parse().unwrap()), 8)]);
        assert!(v4.is_empty());
        assert_eq!(v6.len(), 1);
    }

    #[test]
    fn map_names_survive_the_kernel_cut() {
        // Names are matched as the kernel reports them; one longer than 15 bytes would be
        // cut and could then collide with another.
        for name in [PROGRAM_NAME, XSKS_MAP, CONFIG_MAP, ALLOW_V4_MAP, ALLOW_V6_MAP, COUNTERS_MAP] {
            assert!(name.len() <= KERNEL_NAME_MAX, "{name}");
            assert_eq!(kernel_name(name), name.as_bytes());
        }
        assert_eq!(kernel_name("a_name_longer_than_fifteen"), b"a_name_longer_t");
        let needle = XSKS_MAP.as_bytes();
        assert!(OBJECT.windows(needle.len()).any(|w| w == needle), "the object names its XSKMAP {XSKS_MAP}");
    }

    #[test]
    fn one_line_errors() {
        assert_eq!(one_line("a\nb\n  c"), "a b c");
        assert!(one_line("x".repeat(1000)).len() <= 403);
    }
}
