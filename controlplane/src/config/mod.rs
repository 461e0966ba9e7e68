//! Node configuration: one TOML file per node, every key also a command-line flag (the
//! flag wins). Errors name the file (or flag), the key and the fix, on one line.

pub mod afxdp;
mod backend;
pub mod dpdk;
pub mod shm;

pub use backend::{BackendKind, BackendSettings};

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use beeline_dataplane::node::allow::{Allowlist, PREFIXES_MAX, Prefix};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {reason}; check the path given to --config")]
    Read { path: PathBuf, reason: String },
    #[error("bad config {path}{line}: {reason}; fix or remove that key (see docs/operations.md)")]
    Syntax { path: String, line: String, reason: String },
    #[error("bad config {source_name}: key `{key}` = {value}: {fix}")]
    Value { source_name: String, key: &'static str, value: String, fix: String },
}

/// Default grace period of garbage collection: a chunk of a file nobody recorded is
/// reclaimed once the file's youngest chunk is this old (ten minutes).
pub const GC_GRACE_MS_DEFAULT: u64 = 600_000;

/// Default rate of the background scrub: a 100 GB node is read once in under two hours,
/// at a fraction of one disk's bandwidth.
pub const SCRUB_BYTES_PER_S_DEFAULT: u64 = 16 << 20;
/// Fastest background scrub accepted (1 GiB/s): beyond that it would compete with serving.
pub const SCRUB_BYTES_PER_S_MAX: u64 = 1 << 30;

/// The file's keys; all optional, unknown keys are an error.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub backend: Option<String>,
    pub interface: Option<String>,
    pub xdp_mode: Option<String>,
    pub queues: Option<u32>,
    pub require_zero_copy: Option<bool>,
    pub allow: Option<Vec<String>>,
    pub arena_frames: Option<u32>,
    pub frame_bytes: Option<u32>,
    pub hugepages: Option<String>,
    pub put_slots: Option<u32>,
    pub window_fragments: Option<u16>,
    pub chunk_bytes_max: Option<u32>,
    pub put_idle_timeout_ms: Option<u64>,
    pub sessions_max: Option<u32>,
    pub session_lifetime_ms: Option<u64>,
    pub segment_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
    pub metadata: Option<String>,
    pub metadata_prefix: Option<String>,
    pub advertise: Option<String>,
    pub lease_ttl_ms: Option<u64>,
    pub metrics_listen: Option<String>,
    pub repair_interval_ms: Option<u64>,
    pub gc_grace_ms: Option<u64>,
    pub scrub_bytes_per_s: Option<u64>,
    pub dpdk_devices: Option<Vec<String>>,
    pub dpdk_cores: Option<String>,
    pub dpdk_file_prefix: Option<String>,
    pub dpdk_eal_args: Option<Vec<String>>,
    pub rx_ring_size: Option<u16>,
    pub tx_ring_size: Option<u16>,
    pub mtu: Option<u16>,
    pub auto_tag: Option<bool>,
    pub drop_written_pages: Option<bool>,
    pub direct_writes: Option<bool>,
    pub shm: Option<bool>,
    pub shm_socket: Option<PathBuf>,
    pub shm_socket_mode: Option<String>,
    pub shm_clients_max: Option<u32>,
    pub shm_ring_slots: Option<u32>,
}

/// The same keys as flags of `beeline node run`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct NodeFlags {
    /// Node config file (TOML); flags override its keys.
    #[arg(long, env = "BEELINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address and UDP port to serve the storage protocol on [default: 127.0.0.1:7777].
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory for chunk segments and metadata [default: ./beeline-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Cluster key file (created if missing) [default: ~/.config/beeline/cluster.key].
    #[arg(long, env = "BEELINE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Packet I/O backend: udp, afxdp or dpdk (built with the `dpdk` feature) [default: udp].
    #[arg(long)]
    pub backend: Option<String>,
    /// afxdp: the network interface to serve on (its XDP classifier and AF_XDP socket).
    #[arg(long)]
    pub interface: Option<String>,
    /// afxdp: attach the XDP classifier natively in the driver or generically [default: native].
    #[arg(long)]
    pub xdp_mode: Option<String>,
    /// afxdp: RX queues served, from queue 0 (only 1 so far); dpdk: RSS queues [default: 1].
    #[arg(long)]
    pub queues: Option<u32>,
    /// afxdp: refuse to start unless the AF_XDP socket binds zero-copy [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub require_zero_copy: Option<bool>,
    /// Source prefixes allowed to talk to the node, e.g. 10.0.0.0/8 (repeatable) [default: any].
    #[arg(long)]
    pub allow: Vec<String>,
    /// Frames in the buffer arena [default: 16384].
    #[arg(long)]
    pub arena_frames: Option<u32>,
    /// Bytes per arena frame, a power of two from 2048 to 65536 [default: 4096].
    #[arg(long)]
    pub frame_bytes: Option<u32>,
    /// Back the arena with 2 MiB hugepages: prefer, require or off [default: prefer].
    #[arg(long)]
    pub hugepages: Option<String>,
    /// Puts in flight at once [default: 64].
    #[arg(long)]
    pub put_slots: Option<u32>,
    /// Fragments a client may send or request per window [default: 256].
    #[arg(long)]
    pub window_fragments: Option<u16>,
    /// Largest chunk accepted in bytes [default: 4194304].
    #[arg(long)]
    pub chunk_bytes_max: Option<u32>,
    /// Abandon a put idle for this long [default: 30000].
    #[arg(long)]
    pub put_idle_timeout_ms: Option<u64>,
    /// Client sessions held at once; the least recently heard-from one makes room
    /// [default: 1024].
    #[arg(long)]
    pub sessions_max: Option<u32>,
    /// End a client session this long after its handshake (clients rekey at half of it)
    /// [default: 240000].
    #[arg(long)]
    pub session_lifetime_ms: Option<u64>,
    /// Size of one on-disk segment file [default: 67108864].
    #[arg(long)]
    pub segment_bytes: Option<u64>,
    /// Refuse puts beyond this many stored bytes [default: the disk's free space].
    #[arg(long)]
    pub capacity_bytes: Option<u64>,
    /// Metadata cluster: redis://[USER:PASSWORD@]HOST:PORT [default: embedded, single node].
    #[arg(long, env = "BEELINE_METADATA")]
    pub metadata: Option<String>,
    /// Prefix (and hash tag) of every metadata key [default: beeline].
    #[arg(long)]
    pub metadata_prefix: Option<String>,
    /// Address clients and other nodes reach this node at [default: the listen address].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Membership lease; heartbeats renew it every third of it [default: 3000].
    #[arg(long)]
    pub lease_ttl_ms: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9777 [default: off].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Background repair of under-replicated chunks every this often; 0 = off [default: 5000].
    #[arg(long)]
    pub repair_interval_ms: Option<u64>,
    /// Reclaim chunks no file references once the youngest chunk of their file is this
    /// old; 0 = no background garbage collection [default: 600000].
    #[arg(long)]
    pub gc_grace_ms: Option<u64>,
    /// Background scrub: re-read and verify every stored chunk at this many bytes per
    /// second; 0 = off [default: 16777216].
    #[arg(long)]
    pub scrub_bytes_per_s: Option<u64>,
    /// dpdk: the port to serve, a PCI address (0000:00:06.0) or a virtual device
    /// (net_af_xdp0,iface=eth1); repeatable, the first one is served.
    #[arg(long)]
    pub dpdk_devices: Vec<String>,
    /// dpdk: the EAL's cores (`-l`), e.g. 1 or 2-3 [default: 0].
    #[arg(long)]
    pub dpdk_cores: Option<String>,
    /// dpdk: the EAL's --file-prefix, unique per process on a host [default: beeline-PORT].
    #[arg(long)]
    pub dpdk_file_prefix: Option<String>,
    /// dpdk: more EAL arguments, e.g. --single-file-segments (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub dpdk_eal_args: Vec<String>,
    /// dpdk: RX descriptors per queue, a power of two from 64 to 16384 [default: 1024].
    #[arg(long)]
    pub rx_ring_size: Option<u16>,
    /// dpdk: TX descriptors per queue, a power of two from 64 to 16384 [default: 1024].
    #[arg(long)]
    pub tx_ring_size: Option<u16>,
    /// dpdk: the port's MTU, from 576 to 9000 [default: 1500].
    #[arg(long)]
    pub mtu: Option<u16>,
    /// A single udp node tags the files put to it itself, reading them back [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub auto_tag: Option<bool>,
    /// Drop what a put wrote from the page cache once it is durable: faster large writes
    /// where fresh memory is dear (a VM), but a chunk read right after its put then comes
    /// from the disk [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub drop_written_pages: Option<bool>,
    /// Write large chunks from a local client's shared memory to the disk with O_DIRECT,
    /// so the node copies none of their bytes; a chunk read right after its put then comes
    /// from the disk. Off: every put goes through the page cache [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub direct_writes: Option<bool>,
    /// Serve clients on this host over shared memory (a Unix socket) [default: true].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub shm: Option<bool>,
    /// The shared-memory Unix socket [default: /run/beeline/shm-PORT.sock].
    #[arg(long)]
    pub shm_socket: Option<PathBuf>,
    /// File mode of the shared-memory socket, octal: who may connect [default: 0660].
    #[arg(long)]
    pub shm_socket_mode: Option<String>,
    /// Shared-memory clients served at once [default: 16].
    #[arg(long)]
    pub shm_clients_max: Option<u32>,
    /// Slots of each shared-memory ring, a power of two; a client's region is 2 x slots
    /// frames [default: 2048].
    #[arg(long)]
    pub shm_ring_slots: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugepagePolicy {
    Prefer,
    Require,
    Off,
}

/// Fully resolved and validated node settings.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    pub backend: BackendSettings,
    pub allow: Allowlist,
    pub arena_frames: u32,
    pub frame_bytes: u32,
    pub hugepages: HugepagePolicy,
    pub put_slots: u32,
    pub window_fragments: u16,
    pub chunk_bytes_max: u32,
    pub put_idle_timeout_ms: u64,
    pub sessions_max: u32,
    pub session_lifetime_ms: u64,
    pub segment_bytes: u64,
    pub capacity_bytes: Option<u64>,
    pub cluster: Option<ClusterSettings>,
    pub metrics_listen: Option<SocketAddr>,
    /// Grace period of garbage collection; 0 = no background collection.
    pub gc_grace_ms: u64,
    /// Rate of the background scrub; 0 = off.
    pub scrub_bytes_per_s: u64,
    /// The shared-memory transport to local clients; `None` when `shm = false`.
    pub shm: Option<shm::ShmNodeSettings>,
    /// Whether a single udp node runs its own tagger (`auto_tag`).
    pub auto_tag: bool,
    /// Whether a put's pages leave the page cache once durable (`drop_written_pages`).
    pub drop_written_pages: bool,
    /// Whether large aligned puts are written with `O_DIRECT` (`direct_writes`).
    pub direct_writes: bool,
}

/// Settings for joining the metadata cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub metadata_url: String,
    pub prefix: String,
    pub advertise: String,
    pub lease_ttl_ms: u64,
    pub repair_interval_ms: u64,
    /// The node's `gc_grace_ms`.
    pub gc_grace_ms: u64,
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::Read { path: path.to_owned(), reason: error.to_string() })?;
    parse_file(&path.display().to_string(), &text)
}

pub fn parse_file(name: &str, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|error| {
        let line = error
            .span()
            .map(|span| format!(" line {}", text[..span.start.min(text.len())].matches('\n').count() + 1))
            .unwrap_or_default();
        ConfigError::Syntax { path: name.to_owned(), line, reason: error.message().replace('\n', " ") }
    })
}

/// Where a value came from, for error messages.
struct Origin<'a> {
    file: &'a str,
}

impl Origin<'_> {
    /// The picked value when `accept` takes it, else the error naming its key and the fix.
    fn checked<T: std::fmt::Display + Copy>(
        &self,
        (value, from_flag): (T, bool),
        key: &'static str,
        accept: impl FnOnce(T) -> bool,
        fix: impl Into<String>,
    ) -> Result<T, ConfigError> {
        if accept(value) { Ok(value) } else { Err(self.error(from_flag, key, value, fix)) }
    }

    fn error(
        &self,
        from_flag: bool,
        key: &'static str,
        value: impl std::fmt::Display,
        fix: impl Into<String>,
    ) -> ConfigError {
        let source_name = if from_flag { format!("flag --{}", key.replace('_', "-")) } else { self.file.to_owned() };
        ConfigError::Value { source_name, key, value: value.to_string(), fix: fix.into() }
    }
}

fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>, default: T) -> (T, bool) {
    match (flag, file) {
        (Some(value), _) => (value.clone(), true),
        (None, Some(value)) => (value.clone(), false),
        (None, None) => (default, false),
    }
}

pub fn parse_prefix(text: &str) -> Option<Prefix> {
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = addr.trim().parse().ok()?;
    let len_max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(len) => len.trim().parse::<u8>().ok().filter(|len| *len <= len_max)?,
        None => len_max,
    };
    Some(Prefix { addr, len })
}

/// The sizes and limits of a node's arena, put slots and store, validated together.
struct Limits {
    arena_frames: u32,
    frame_bytes: u32,
    hugepages: HugepagePolicy,
    put_slots: u32,
    window_fragments: u16,
    chunk_bytes_max: u32,
    put_idle_timeout_ms: u64,
    sessions_max: u32,
    session_lifetime_ms: u64,
    segment_bytes: u64,
}

impl NodeFlags {
    /// Merges flags over the config file over defaults, and validates the result.
    pub fn resolve(&self) -> Result<NodeSettings, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let file_name =
            self.config.as_ref().map(|path| path.display().to_string()).unwrap_or_else(|| "(defaults)".into());
        let origin = Origin { file: &file_name };

        let (listen_text, from_flag) = pick(&self.listen, &file.listen, "127.0.0.1:7777".to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            origin.error(from_flag, "listen", &listen_text, "use IP:PORT, e.g. 127.0.0.1:7777 or [::1]:7777")
        })?;

        let (data_dir, _) = pick(&self.data_dir, &file.data_dir, PathBuf::from("beeline-data"));
        let (key_file, _) = pick(&self.key_file, &file.key_file, crate::keyfile::default_key_path());
        let (allow, allow_from_flags) = self.resolve_allow(&file, &origin)?;
        let backend = self.resolve_backend(&file, &origin, listen, allow_from_flags)?;
        let limits = self.resolve_limits(&file, &origin)?;
        let capacity_bytes = self.capacity_bytes.or(file.capacity_bytes);
        let (metrics_text, from_flag) = pick(&self.metrics_listen, &file.metrics_listen, String::new());
        let metrics_listen = if metrics_text.is_empty() {
            None
        } else {
            Some(metrics_text.parse::<SocketAddr>().map_err(|_| {
                origin.error(from_flag, "metrics_listen", &metrics_text, "use IP:PORT, e.g. 127.0.0.1:9777")
            })?)
        };
        let gc_grace_ms = origin.checked(
            pick(&self.gc_grace_ms, &file.gc_grace_ms, GC_GRACE_MS_DEFAULT),
            "gc_grace_ms",
            |grace_ms| grace_ms == 0 || (1_000..=604_800_000).contains(&grace_ms),
            "must be 0 (no background garbage collection) or from 1000 to 604800000 (a week); longer than any put may stall",
        )?;
        let scrub_bytes_per_s = origin.checked(
            pick(&self.scrub_bytes_per_s, &file.scrub_bytes_per_s, SCRUB_BYTES_PER_S_DEFAULT),
            "scrub_bytes_per_s",
            |rate| rate == 0 || (4096..=SCRUB_BYTES_PER_S_MAX).contains(&rate),
            format!("must be 0 (no background scrub) or from 4096 to {SCRUB_BYTES_PER_S_MAX} bytes per second"),
        )?;
        let shm = shm::resolve(
            self.shm.or(file.shm).unwrap_or(true),
            self.shm_socket.clone().or(file.shm_socket.clone()),
            self.shm_socket_mode.clone().or(file.shm_socket_mode.clone()),
            self.shm_clients_max.or(file.shm_clients_max),
            self.shm_ring_slots.or(file.shm_ring_slots),
            listen.port(),
        )
        .map_err(|(key, value, fix)| {
            let from_flag = match key {
                "shm_socket_mode" => self.shm_socket_mode.is_some(),
                "shm_clients_max" => self.shm_clients_max.is_some(),
                _ => self.shm_ring_slots.is_some(),
            };
            origin.error(from_flag, key, value, fix)
        })?;
        let mut cluster = self.resolve_cluster(&file, &origin, listen)?;
        if let Some(cluster) = cluster.as_mut() {
            cluster.gc_grace_ms = gc_grace_ms;
        }
        let Limits {
            arena_frames,
            frame_bytes,
            hugepages,
            put_slots,
            window_fragments,
            chunk_bytes_max,
            put_idle_timeout_ms,
            sessions_max,
            session_lifetime_ms,
            segment_bytes,
        } = limits;
        Ok(NodeSettings {
            listen,
            data_dir,
            key_file,
            backend,
            allow,
            arena_frames,
            frame_bytes,
            hugepages,
            put_slots,
            window_fragments,
            chunk_bytes_max,
            put_idle_timeout_ms,
            sessions_max,
            session_lifetime_ms,
            segment_bytes,
            capacity_bytes,
            cluster,
            metrics_listen,
            gc_grace_ms,
            scrub_bytes_per_s,
            shm,
            auto_tag: self.auto_tag.or(file.auto_tag).unwrap_or(true),
            drop_written_pages: self.drop_written_pages.or(file.drop_written_pages).unwrap_or(false),
            direct_writes: self.direct_writes.or(file.direct_writes).unwrap_or(true),
        })
    }

    /// The source allowlist, and whether it came from flags (a SIGHUP reload then cannot
    /// change it).
    fn resolve_allow(&self, file: &FileConfig, origin: &Origin<'_>) -> Result<(Allowlist, bool), ConfigError> {
        let flag_allow = (!self.allow.is_empty()).then(|| self.allow.clone());
        let (allow_texts, from_flag) = pick(&flag_allow, &file.allow, Vec::new());
        let mut allow = Allowlist::allow_all();
        for text in &allow_texts {
            let prefix = parse_prefix(text).ok_or_else(|| {
                origin.error(from_flag, "allow", text, "use an address or prefix such as 10.0.0.0/8 or fd00::/8")
            })?;
            allow.push(prefix).map_err(|_| {
                origin.error(from_flag, "allow", allow_texts.len(), format!("at most {PREFIXES_MAX} prefixes"))
            })?;
        }
        Ok((allow, flag_allow.is_some()))
    }

    fn resolve_backend(
        &self,
        file: &FileConfig,
        origin: &Origin<'_>,
        listen: SocketAddr,
        allow_from_flags: bool,
    ) -> Result<BackendSettings, ConfigError> {
        let (backend_name, from_flag) = pick(&self.backend, &file.backend, "udp".to_owned());
        let backend = BackendKind::parse(&backend_name)
            .ok_or_else(|| origin.error(from_flag, "backend", &backend_name, "use udp, afxdp or dpdk"))?;
        let afxdp = afxdp::resolve_settings(
            if backend == BackendKind::Dpdk { BackendKind::Udp } else { backend },
            self.interface.clone().or(file.interface.clone()),
            self.xdp_mode.clone().or(file.xdp_mode.clone()),
            self.queues.or(file.queues).filter(|_| backend != BackendKind::Dpdk),
            self.require_zero_copy.or(file.require_zero_copy),
            self.config.clone().filter(|_| !allow_from_flags),
        )
        .map_err(|(key, value, fix)| {
            let from_flag = match key {
                "interface" => self.interface.is_some(),
                "xdp_mode" => self.xdp_mode.is_some(),
                _ => self.queues.is_some(),
            };
            origin.error(from_flag, key, value, fix)
        })?;

        let dpdk = dpdk::resolve(backend, self, file, listen.port())
            .map_err(|(key, value, fix, from_flag)| origin.error(from_flag, key, value, fix))?;
        if dpdk.is_some() && (!listen.is_ipv4() || listen.ip().is_unspecified()) {
            return Err(origin.error(
                self.listen.is_some(),
                "listen",
                listen,
                "backend = \"dpdk\" answers ARP for its address: listen on the port's own IPv4 address, e.g. \
                 10.0.0.2:7777",
            ));
        }

        Ok(match (afxdp, dpdk) {
            (Some(afxdp), _) => BackendSettings::Afxdp(afxdp),
            (None, Some(dpdk)) => BackendSettings::Dpdk(dpdk),
            (None, None) => BackendSettings::Udp,
        })
    }

    fn resolve_limits(&self, file: &FileConfig, origin: &Origin<'_>) -> Result<Limits, ConfigError> {
        let frame_bytes = origin.checked(
            pick(&self.frame_bytes, &file.frame_bytes, 4096),
            "frame_bytes",
            |bytes: u32| bytes.is_power_of_two() && (2048..=65536).contains(&bytes),
            "must be a power of two from 2048 to 65536",
        )?;
        let arena_frames = origin.checked(
            pick(&self.arena_frames, &file.arena_frames, 16384),
            "arena_frames",
            |frames| (1024..=1 << 22).contains(&frames),
            "must be from 1024 to 4194304",
        )?;
        let (hugepages_text, from_flag) = pick(&self.hugepages, &file.hugepages, "prefer".to_owned());
        let hugepages = match hugepages_text.as_str() {
            "prefer" => HugepagePolicy::Prefer,
            "require" => HugepagePolicy::Require,
            "off" => HugepagePolicy::Off,
            _ => return Err(origin.error(from_flag, "hugepages", &hugepages_text, "use prefer, require or off")),
        };
        let put_slots = origin.checked(
            pick(&self.put_slots, &file.put_slots, 64),
            "put_slots",
            |slots| (1..=4096).contains(&slots),
            "must be from 1 to 4096",
        )?;
        let window_max = (beeline_dataplane::node::TX_QUEUE_MAX / 2) as u16;
        let window_fragments = origin.checked(
            pick(&self.window_fragments, &file.window_fragments, 256),
            "window_fragments",
            |window| (1..=window_max).contains(&window),
            format!("must be from 1 to {window_max}"),
        )?;
        let fragment_max =
            frame_bytes as usize - beeline_dataplane::arena::HEADROOM_BYTES - beeline_dataplane::wire::HEADER_LEN;
        let chunk_limit = (fragment_max * beeline_dataplane::bitmap::FRAGMENTS_MAX as usize).min(64 << 20) as u32;
        let chunk_bytes_max = origin.checked(
            pick(&self.chunk_bytes_max, &file.chunk_bytes_max, 4 << 20),
            "chunk_bytes_max",
            |bytes| (1..=chunk_limit).contains(&bytes),
            format!("must be from 1 to {chunk_limit} with frame_bytes = {frame_bytes}"),
        )?;
        let put_idle_timeout_ms = origin.checked(
            pick(&self.put_idle_timeout_ms, &file.put_idle_timeout_ms, 30_000),
            "put_idle_timeout_ms",
            |timeout_ms| (100..=3_600_000).contains(&timeout_ms),
            "must be from 100 to 3600000",
        )?;
        let sessions_limit = beeline_dataplane::node::sessions::SESSIONS_MAX as u32;
        let sessions_max = origin.checked(
            pick(&self.sessions_max, &file.sessions_max, 1024),
            "sessions_max",
            |sessions| (1..=sessions_limit).contains(&sessions),
            format!("must be from 1 to {sessions_limit}"),
        )?;
        let session_lifetime_ms = origin.checked(
            pick(&self.session_lifetime_ms, &file.session_lifetime_ms, 240_000),
            "session_lifetime_ms",
            |lifetime_ms| (1_000..=86_400_000).contains(&lifetime_ms),
            "must be from 1000 to 86400000",
        )?;
        let segment_bytes = origin.checked(
            pick(&self.segment_bytes, &file.segment_bytes, 64 << 20),
            "segment_bytes",
            |bytes| bytes >= 2 * u64::from(chunk_bytes_max) && bytes <= 1 << 40,
            "must hold at least two chunks (2 x chunk_bytes_max) and be at most 1 TiB",
        )?;
        Ok(Limits {
            arena_frames,
            frame_bytes,
            hugepages,
            put_slots,
            window_fragments,
            chunk_bytes_max,
            put_idle_timeout_ms,
            sessions_max,
            session_lifetime_ms,
            segment_bytes,
        })
    }

    fn resolve_cluster(
        &self,
        file: &FileConfig,
        origin: &Origin<'_>,
        listen: SocketAddr,
    ) -> Result<Option<ClusterSettings>, ConfigError> {
        Ok(match self.metadata.clone().or(file.metadata.clone()) {
            None => None,
            Some(url) => {
                let from_flag = self.metadata.is_some();
                if !url.starts_with("redis://") {
                    return Err(origin.error(
                        from_flag,
                        "metadata",
                        crate::cluster::redact(&url),
                        "use redis://[USER:PASSWORD@]HOST:PORT (rediss:// TLS is not built in)",
                    ));
                }
                let (prefix, from_flag) =
                    pick(&self.metadata_prefix, &file.metadata_prefix, crate::cluster::DEFAULT_PREFIX.to_owned());
                if prefix.is_empty() || prefix.contains(['{', '}', ':', ' ']) {
                    return Err(origin.error(
                        from_flag,
                        "metadata_prefix",
                        &prefix,
                        "use letters, digits, - and _ only",
                    ));
                }
                let (advertise, from_flag) = pick(&self.advertise, &file.advertise, listen.to_string());
                let advertised: Option<SocketAddr> = advertise.parse().ok();
                if advertised.is_some_and(|addr| addr.ip().is_unspecified()) {
                    return Err(origin.error(
                        from_flag,
                        "advertise",
                        &advertise,
                        "a node listening on 0.0.0.0 must advertise a reachable IP:PORT",
                    ));
                }
                let (lease_ttl_ms, from_flag) = pick(&self.lease_ttl_ms, &file.lease_ttl_ms, 3000);
                if !(300..=600_000).contains(&lease_ttl_ms) {
                    return Err(origin.error(from_flag, "lease_ttl_ms", lease_ttl_ms, "must be from 300 to 600000"));
                }
                let (repair_interval_ms, _) = pick(&self.repair_interval_ms, &file.repair_interval_ms, 5000);
                Some(ClusterSettings {
                    metadata_url: url,
                    prefix,
                    advertise,
                    lease_ttl_ms,
                    repair_interval_ms,
                    gc_grace_ms: GC_GRACE_MS_DEFAULT,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str) -> (tempfile::TempDir, NodeFlags) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        (dir, NodeFlags { config: Some(path), ..NodeFlags::default() })
    }

    #[test]
    fn defaults_without_any_config() {
        let settings = NodeFlags::default().resolve().unwrap();
        assert_eq!(settings.listen, "127.0.0.1:7777".parse().unwrap());
        assert_eq!(settings.data_dir, PathBuf::from("beeline-data"));
        assert_eq!(settings.backend, BackendSettings::Udp);
        assert!(settings.allow.is_empty());
    }

    #[test]
    fn flags_override_file() {
        let (_dir, mut flags) =
            with_file("listen = \"127.0.0.1:9000\"\nframe_bytes = 8192\nallow = [\"10.0.0.0/8\"]\n");
        flags.listen = Some("127.0.0.1:9001".into());
        let settings = flags.resolve().unwrap();
        assert_eq!(settings.listen.port(), 9001);
        assert_eq!(settings.frame_bytes, 8192);
        assert_eq!(settings.allow.prefixes().len(), 1);
    }

    #[test]
    fn errors_name_file_key_and_fix_on_one_line() {
        let (_dir, flags) = with_file("frame_bytes = 3000\n");
        let message = flags.resolve().unwrap_err().to_string();
        assert!(
            message.contains("node.toml") && message.contains("`frame_bytes`") && message.contains("power of two"),
            "{message}"
        );
        assert!(!message.contains('\n'));

        let (_dir, flags) = with_file("listen = \"127.0.0.1:1\"\nlisten_typo = 3\n");
        let message = flags.resolve().unwrap_err().to_string();
        assert!(message.contains("line 2") && message.contains("listen_typo"), "{message}");
        assert!(!message.contains('\n'), "{message}");

        let flags = NodeFlags { listen: Some("nowhere".into()), ..NodeFlags::default() };
        let message = flags.resolve().unwrap_err().to_string();
        assert!(message.contains("flag --listen") && message.contains("IP:PORT"), "{message}");

        let flags = NodeFlags { allow: vec!["10.0.0.0/40".into()], ..NodeFlags::default() };
        assert!(flags.resolve().unwrap_err().to_string().contains("`allow`"));

        let (_dir, flags) = with_file("gc_grace_ms = 500\n");
        let message = flags.resolve().unwrap_err().to_string();
        assert!(message.contains("`gc_grace_ms` = 500") && message.contains("from 1000"), "{message}");
        let (_dir, flags) = with_file("gc_grace_ms = 0\n");
        assert_eq!(flags.resolve().unwrap().gc_grace_ms, 0);
        assert_eq!(NodeFlags::default().resolve().unwrap().gc_grace_ms, 600_000);

        assert!(!NodeFlags::default().resolve().unwrap().drop_written_pages, "kept by default");
        let (_dir, flags) = with_file("drop_written_pages = true\n");
        assert!(flags.resolve().unwrap().drop_written_pages);
        let flags = NodeFlags { drop_written_pages: Some(false), ..flags };
        assert!(!flags.resolve().unwrap().drop_written_pages, "the flag wins over the file");

        assert!(NodeFlags::default().resolve().unwrap().direct_writes, "on by default");
        let (_dir, flags) = with_file("direct_writes = false\n");
        assert!(!flags.resolve().unwrap().direct_writes);
        let flags = NodeFlags { direct_writes: Some(true), ..flags };
        assert!(flags.resolve().unwrap().direct_writes, "the flag wins over the file");

        let (_dir, flags) = with_file("scrub_bytes_per_s = 100\n");
        let message = flags.resolve().unwrap_err().to_string();
        assert!(message.contains("`scrub_bytes_per_s` = 100") && message.contains("from 4096"), "{message}");
        assert!(message.contains("node.toml"), "names the file: {message}");
        let (_dir, flags) = with_file("scrub_bytes_per_s = 0\n");
        assert_eq!(flags.resolve().unwrap().scrub_bytes_per_s, 0);
        assert_eq!(NodeFlags::default().resolve().unwrap().scrub_bytes_per_s, 16 << 20);
    }

    #[test]
    fn prefixes_parse() {
        assert_eq!(parse_prefix("10.1.0.0/16").unwrap().len, 16);
        assert_eq!(parse_prefix("::1").unwrap().len, 128);
        assert!(parse_prefix("10.0.0.0/33").is_none());
        assert!(parse_prefix("banana").is_none());
    }
}
