//! `beeline bench`: throughput, latency and CPU cost of a node on the `udp` backend, with
//! the in-run baselines that say what the numbers mean (raw kernel UDP on loopback, a
//! plain file write + fdatasync). Every figure comes from one run on one machine; compare
//! rows with each other, not with other machines. See `docs/benchmarks.md`.
//!
//! Without `--node`, a node is started in-process on 127.0.0.1 (random port) with a fresh
//! data directory and key, and removed afterwards. With `--node ADDR --key-file F`, an
//! existing node is measured: the bench stores one file there and removes it at the end.
//! With `--node-pid`, the CPU time of that node process (all threads, from
//! `/proc/PID/stat`) is read around every phase as well.
//!
//! Everything is bounded: sizes come from the flags (capped), every protocol operation
//! gives up after the client's retries, and the raw-UDP receiver stops once the sender is
//! done and its socket is drained (or after a hard deadline).

mod baseline;
mod report;

use baseline::*;
use report::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use beeline_dataplane::io::udp::DEFAULT_SOCKET_BUFFER_BYTES;
use beeline_dataplane::wire::{ClusterKey, HEADER_LEN};

use crate::client::{Client, ClientOptions};
use crate::config::NodeFlags;
use crate::control::FileRecord;
use crate::keyfile;
use crate::output::Output;

const CHUNK_BYTES: u32 = 4 << 20;
const CHUNKS_MAX: u32 = 4096;
const OPS_MAX: u32 = 10_000_000;
/// Generated content repeats with this period (a whole number of chunks).
const POOL_CHUNKS_MAX: u32 = 16;
/// The raw-UDP receiver gives up after this long whatever happens.
const UDP_DEADLINE: Duration = Duration::from_secs(60);
/// How long the raw-UDP receiver blocks before looking at the sender's flag again.
const UDP_RECV_TIMEOUT: Duration = Duration::from_millis(100);
const UDP_BATCH: usize = 64;
/// Small gets done before the timed ones.
const WARM_UP_OPS: u32 = 200;
const GB: f64 = 1e9;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Node to measure (HOST:PORT) [default: start one in-process on 127.0.0.1].
    #[arg(long)]
    pub node: Option<String>,
    /// Cluster key file of --node [default: $BEELINE_KEY_FILE or ~/.config/beeline/cluster.key].
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// 4 MiB chunks to put and then get (64 = 256 MiB).
    #[arg(long, default_value_t = 64)]
    pub chunks: u32,
    /// Small gets to time, one after another.
    #[arg(long, default_value_t = 20_000)]
    pub ops: u32,
    /// Bytes per small get; one fragment each when the node's frames allow it.
    #[arg(long, default_value_t = 4096)]
    pub op_bytes: u32,
    /// Fragment payload per datagram, for every phase [default: the node's largest on loopback, else 1372].
    #[arg(long)]
    pub fragment_bytes: Option<u16>,
    /// Chunks in flight at once during the bulk put and get (the client's default).
    #[arg(long, default_value_t = ClientOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), ClusterKey::new([0; 32])).parallel_chunks)]
    pub parallel_chunks: usize,
    /// Frame size of the in-process node: 8192 lets a 4 KiB read travel as one datagram.
    #[arg(long, default_value_t = 8192)]
    pub frame_bytes: u32,
    /// Directory under which the in-process node's data and the file-write baseline go (a
    /// fresh subdirectory, removed afterwards) [default: $TMPDIR or /tmp].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Skip the baselines (raw UDP, file write).
    #[arg(long)]
    pub no_baselines: bool,
    /// Also write the report to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// Also put and then get --ops small chunks of --op-bytes with this many in flight at
    /// once (batches of this many; 0 = skip; the chunks are deleted afterwards).
    #[arg(long, default_value_t = 0)]
    pub in_flight: usize,
    /// Process id of --node on this machine: its CPU time is read around every phase.
    #[arg(long)]
    pub node_pid: Option<u32>,
    /// How the bench's clients reach the node: udp (the protocol on loopback, the
    /// default, comparable with earlier runs), shm (shared memory: the node must be on
    /// this host) or auto.
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: crate::client::Transport,
}

pub fn run(args: BenchArgs) -> Result<(), String> {
    validate(&args)?;
    let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut report = Report {
        date: crate::cli::format_time(started_unix_ms),
        command: command_line(),
        machine: machine_line(),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        target: String::new(),
        settings: String::new(),
        phases: Vec::new(),
        node_counters: Vec::new(),
    };
    // Opened first, so that a bad --output fails now rather than after the whole run.
    let output = args.output.as_deref().map(|path| Output::open(path, None)).transpose()?;
    let workdir = WorkDir::create(args.dir.as_deref())?;
    let outcome = measure(&args, &workdir, &mut report);
    drop(workdir);
    outcome?;
    let text = if args.json { report.json() } else { report.markdown() };
    print!("{text}");
    std::io::stdout().flush().map_err(|e| format!("standard output: {e}"))?;
    if let Some(mut output) = output {
        output.writer().write_all(text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", output.shown()))?;
        output.finish()?;
    }
    Ok(())
}

fn validate(args: &BenchArgs) -> Result<(), String> {
    if !(1..=CHUNKS_MAX).contains(&args.chunks) {
        return Err(format!("--chunks {} is out of range: use 1 to {CHUNKS_MAX}", args.chunks));
    }
    if args.ops > OPS_MAX {
        return Err(format!("--ops {} is out of range: use 0 to {OPS_MAX}", args.ops));
    }
    if !(1..=CHUNK_BYTES).contains(&args.op_bytes) {
        return Err(format!("--op-bytes {} is out of range: use 1 to {CHUNK_BYTES}", args.op_bytes));
    }
    if !(1..=64).contains(&args.parallel_chunks) {
        return Err(format!("--parallel-chunks {} is out of range: use 1 to 64", args.parallel_chunks));
    }
    if args.in_flight > 64 {
        return Err(format!("--in-flight {} is out of range: use 0 to 64", args.in_flight));
    }
    if args.node_pid.is_some() && args.node.is_none() {
        return Err("--node-pid needs --node: the in-process node's CPU is the bench's own".into());
    }
    if let Some(pid) = args.node_pid {
        if process_cpu_ticks(pid).is_none() {
            return Err(format!("--node-pid {pid}: cannot read /proc/{pid}/stat; pass the pid of the running node"));
        }
    }
    if args.fragment_bytes == Some(0) {
        return Err("--fragment-bytes must be at least 1".into());
    }
    if args.key_file.is_some() && args.node.is_none() {
        return Err("--key-file needs --node: without --node the bench starts its own node with a fresh key".into());
    }
    Ok(())
}

/// A fresh directory of ours, removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(parent: Option<&Path>) -> Result<Self, String> {
        let parent = parent.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = parent.join(format!("beeline-bench-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}; pass --dir with a writable directory", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("beeline: could not remove {}: {error}", self.path.display());
        }
    }
}

fn measure(args: &BenchArgs, workdir: &WorkDir, report: &mut Report) -> Result<(), String> {
    let pool = Pool::new(args.chunks);
    let mut node = None;
    let (addr, key) = match &args.node {
        Some(text) => {
            let addr = resolve_node(text)?;
            let key_path = args.key_file.clone().unwrap_or_else(keyfile::default_key_path);
            let key = keyfile::load(&key_path).map_err(|e| e.to_string())?;
            (addr, key)
        }
        None => {
            let key_path = workdir.path.join("cluster.key");
            let flags = NodeFlags {
                listen: Some("127.0.0.1:0".into()),
                data_dir: Some(workdir.path.join("node")),
                key_file: Some(key_path.clone()),
                frame_bytes: Some(args.frame_bytes),
                // The node's own tagger would read the benchmark's file back while it is
                // measured.
                auto_tag: Some(false),
                ..NodeFlags::default()
            };
            let settings = flags.resolve().map_err(|e| e.to_string())?;
            let handle = crate::node::start(settings).map_err(|e| format!("cannot start the in-process node: {e}"))?;
            let key = keyfile::load(&key_path).map_err(|e| e.to_string())?;
            let addr = handle.local_addr;
            node = Some(handle);
            (addr, key)
        }
    };
    let outcome = measure_node(args, addr, &key, &pool, node.is_some(), report);
    let stopped = node.map(|handle| handle.stop().map_err(|e| format!("the in-process node failed to stop: {e}")));
    outcome?;
    stopped.transpose()?;
    if !args.no_baselines {
        let fragment =
            report.phases.first().map(|phase| phase.fragment_bytes).unwrap_or(crate::client::NETWORK_FRAGMENT_BYTES);
        measure_baselines(args, workdir, &pool, fragment, report)?;
    }
    Ok(())
}

fn resolve_node(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("bad --node {text}: not an address that resolves; use HOST:PORT, e.g. 127.0.0.1:7777"))
}

fn client(
    addr: SocketAddr,
    key: &ClusterKey,
    fragment_bytes: Option<u16>,
    parallel_chunks: usize,
    transport: crate::client::Transport,
) -> Result<Client, String> {
    let mut options = ClientOptions::new(addr, key.clone());
    options.transport = transport;
    options.fragment_bytes = fragment_bytes;
    options.parallel_chunks = parallel_chunks;
    options.chunk_bytes = CHUNK_BYTES;
    Client::new(options).map_err(|e| e.to_string())
}

/// The fragment length a client with these options will use (mirrors `Client`).
fn bulk_fragment(addr: SocketAddr, requested: Option<u16>, node_max: u16) -> u16 {
    let preferred = match requested {
        Some(bytes) => bytes,
        None if addr.ip().is_loopback() => node_max,
        None => crate::client::NETWORK_FRAGMENT_BYTES,
    };
    let floor = CHUNK_BYTES.div_ceil(beeline_dataplane::bitmap::FRAGMENTS_MAX) as u16;
    let cap = node_max.min((beeline_dataplane::client::DATAGRAM_BYTES_MAX - HEADER_LEN) as u16);
    preferred.clamp(floor.min(cap), cap)
}

// Long on purpose: the benchmark against one node in the order it runs (ping, the durable
// put, the phases that need the file, then its removal whatever happened).
fn measure_node(
    args: &BenchArgs,
    addr: SocketAddr,
    key: &ClusterKey,
    pool: &Pool,
    in_process: bool,
    report: &mut Report,
) -> Result<(), String> {
    let mut bulk = client(addr, key, args.fragment_bytes, args.parallel_chunks, args.transport)?;
    let info = bulk.ping().map_err(|e| e.to_string())?;
    let fragment = bulk_fragment(addr, args.fragment_bytes, info.fragment_bytes_max);
    let fragments_per_chunk = u64::from(CHUNK_BYTES.div_ceil(u32::from(fragment)));
    report.settings = format!(
        "{}: {} × 4 MiB chunks = {} MiB per direction, {}-byte fragments ({}-byte datagrams), {} chunks in flight, window {} fragments; {} gets of {} bytes one at a time",
        if bulk.uses_shm() { "shared memory" } else { "UDP" },
        args.chunks,
        u64::from(args.chunks) * 4,
        fragment,
        usize::from(fragment) + HEADER_LEN,
        args.parallel_chunks,
        info.window_fragments,
        args.ops,
        args.op_bytes,
    );
    let name = format!(
        "beeline-bench-{}-{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
    );
    let total = u64::from(args.chunks) * u64::from(CHUNK_BYTES);
    let mut node = NodeCounters::read(&mut bulk)?;
    let run_start = node.clone();

    eprintln!("beeline bench: put {total} bytes as {name}");
    let mut reader = pool.reader(total);
    let mut record = None;
    let phase = timed(&mut bulk, total, args.node_pid, |client| {
        record = Some(client.put_reader(&name, &mut reader, "generated data", &mut |_| {}).map_err(|e| e.to_string())?);
        Ok(None)
    })?;
    let record = record.expect("set by the phase");
    let delta = node.advance(&mut bulk)?;
    let needed = u64::from(args.chunks) * fragments_per_chunk;
    let note = format!(
        "node received {} fragment copies for {needed} fragments ({} resent)",
        delta.get("fragments_stored") + delta.get("fragments_duplicate"),
        delta.get("fragments_duplicate")
    );
    report.phases.push(Phase {
        name: "Put 4 MiB chunks (durable)".into(),
        fragment_bytes: fragment,
        notes: vec![note],
        ..phase
    });
    // From here on the file exists on the node: remove it whatever happens next.
    let measured = read_back(args, addr, key, pool, &mut bulk, &mut node, &record, fragment, needed, report);
    let removed = bulk.remove(&name).map_err(|e| format!("could not remove the bench file {name} from the node: {e}"));
    measured?;
    removed?;
    let end = NodeCounters::read(&mut bulk)?;
    let status = bulk.node_status().map_err(|e| e.to_string())?;
    report.target = if in_process {
        format!(
            "in-process node on {addr} (udp backend, frame_bytes {}, arena {} frames on {} pages), fresh data dir and key",
            args.frame_bytes, status.arena_frames, status.page_backing
        )
    } else {
        format!(
            "node {addr} (beeline {}, {} backend, arena {} frames on {} pages)",
            status.node_version, status.backend, status.arena_frames, status.page_backing
        )
    };
    report.node_counters = end.since(&run_start).values.into_iter().collect();
    Ok(())
}

/// The get phases, on the file the put phase stored.
#[allow(clippy::too_many_arguments)]
fn read_back(
    args: &BenchArgs,
    addr: SocketAddr,
    key: &ClusterKey,
    pool: &Pool,
    bulk: &mut Client,
    node: &mut NodeCounters,
    record: &FileRecord,
    fragment: u16,
    needed: u64,
    report: &mut Report,
) -> Result<(), String> {
    let total = record.size_bytes;
    let name = &record.name;
    // Read once, untimed, so that the timed gets of every transport find the node's page
    // cache warm, as nginx's do: a put over shared memory is written with O_DIRECT and
    // leaves nothing cached, one over UDP leaves it all.
    eprintln!("beeline bench: warm the node's page cache with {total} bytes (untimed)");
    bulk.get_writer(name, &mut std::io::sink(), "/dev/null", &mut |_| {}).map_err(|e| e.to_string())?;
    node.advance(bulk)?;
    eprintln!("beeline bench: get {total} bytes");
    let phase = timed(bulk, total, args.node_pid, |client| {
        client.get_writer(name, &mut std::io::sink(), "/dev/null", &mut |_| {}).map_err(|e| e.to_string())?;
        Ok(None)
    })?;
    let delta = node.advance(bulk)?;
    let note = format!(
        "node sent {} fragments for {needed} ({} re-sent)",
        delta.get("fragments_served"),
        delta.get("fragments_served").saturating_sub(needed)
    );
    report.phases.push(Phase {
        name: "Get 4 MiB chunks (page-cache warm)".into(),
        fragment_bytes: fragment,
        notes: vec![note],
        ..phase
    });

    if args.ops > 0 {
        eprintln!("beeline bench: {} gets of {} bytes", args.ops, args.op_bytes);
        let fragment_max = bulk.ping().map_err(|e| e.to_string())?.fragment_bytes_max;
        let mut phase = small_gets(args, addr, key, fragment_max, record, pool)?;
        let delta = node.advance(bulk)?;
        let warm_up = u64::from(args.ops.min(WARM_UP_OPS));
        let requests = delta.get("gets").saturating_sub(warm_up);
        if requests > u64::from(args.ops) {
            phase.notes.push(format!("{} requests re-sent after a timeout", requests - u64::from(args.ops)));
        }
        report.phases.push(phase);
    }

    if args.in_flight > 0 && args.ops > 0 {
        eprintln!("beeline bench: {} puts and gets of {} bytes, {} in flight", args.ops, args.op_bytes, args.in_flight);
        let fragment_max = bulk.ping().map_err(|e| e.to_string())?.fragment_bytes_max;
        let phases = small_ops_in_flight(args, addr, key, fragment_max, pool)?;
        node.advance(bulk)?;
        report.phases.extend(phases);
    }

    Ok(())
}

/// `--ops` puts, then `--ops` gets, of distinct `--op-bytes` chunks, `--in-flight` at a
/// time: each batch starts that many on one client and waits for all of them, so between
/// batches fewer are in flight. The chunks are deleted afterwards (untimed).
fn small_ops_in_flight(
    args: &BenchArgs,
    addr: SocketAddr,
    key: &ClusterKey,
    node_max: u16,
    pool: &Pool,
) -> Result<Vec<Phase>, String> {
    let op_bytes = args.op_bytes;
    // Off loopback the path (a 1500-byte MTU), not the node's frames, caps the small gets too.
    let fragment = op_bytes.min(u32::from(bulk_fragment(addr, args.fragment_bytes, node_max))) as u16;
    let mut client = client(addr, key, Some(fragment), 1, args.transport)?;
    client.set_chunk_bytes(op_bytes);
    let file_id = rand::random::<u64>();
    let ids: Vec<u128> = (0..u64::from(args.ops)).map(|index| crate::control::chunk_id(file_id, index)).collect();
    // A few distinct contents, built before the clock starts; chunk i holds contents[i % n].
    let contents: Vec<Arc<[u8]>> = (0..u64::from(args.ops.min(1024)))
        .map(|index| Arc::from(pool.at(index * u64::from(op_bytes), op_bytes as usize)))
        .collect();
    let content = |index: usize| contents[index % contents.len()].clone();
    let batches = || ids.chunks(args.in_flight).enumerate().map(|(batch, ids)| (batch * args.in_flight, ids));
    let bytes = u64::from(args.ops) * u64::from(op_bytes);
    let size = human_bytes(u64::from(op_bytes));

    let put = timed(&mut client, bytes, args.node_pid, |client| {
        for (first, ids) in batches() {
            let chunks: Vec<(u128, Arc<[u8]>)> =
                ids.iter().enumerate().map(|(i, id)| (*id, content(first + i))).collect();
            for result in client.put_chunks(&chunks) {
                result.map_err(|e| format!("a {size} put with {} in flight failed: {e}", args.in_flight))?;
            }
        }
        Ok(None)
    });
    let mut get = Err(String::new());
    if put.is_ok() {
        get = timed(&mut client, bytes, args.node_pid, |client| {
            for (first, ids) in batches() {
                let wanted: Vec<(u128, u32)> = ids.iter().map(|id| (*id, op_bytes)).collect();
                for (i, result) in client.get_chunks(&wanted).into_iter().enumerate() {
                    let data =
                        result.map_err(|e| format!("a {size} get with {} in flight failed: {e}", args.in_flight))?;
                    if *data != *content(first + i) {
                        return Err(format!(
                            "a {size} chunk came back different from what was put; the node or the protocol is broken"
                        ));
                    }
                }
            }
            Ok(None)
        });
    }
    // Whatever happened, remove what may have been stored.
    let mut deleted = Ok(());
    for ids in ids.chunks(64) {
        for result in client.delete_chunks(ids) {
            if let Err(error) = result {
                deleted = Err(format!("could not delete a bench chunk from the node: {error}"));
            }
        }
    }
    let (mut put, mut get) = (put?, get?);
    deleted?;
    put.name = format!("Put {size} chunks, {} in flight (durable)", args.in_flight);
    get.name = format!("Get {size} chunks, {} in flight (page-cache warm)", args.in_flight);
    for phase in [&mut put, &mut get] {
        phase.fragment_bytes = fragment;
        phase.ops = Some(u64::from(args.ops));
    }
    Ok(vec![put, get])
}

/// The node's data-path counters, as its status reports them.
#[derive(Clone)]
struct NodeCounters {
    values: BTreeMap<String, u64>,
}

impl NodeCounters {
    /// The node publishes its counters every 100 ms, so a status right after a phase may
    /// predate its end. Every status request itself moves `rx_packets`, so the first
    /// answer that differs from the first one comes from a snapshot taken after this call
    /// began. Polled every 2 ms, for at most a second.
    fn read(client: &mut Client) -> Result<Self, String> {
        let first = counters(&client.node_status().map_err(|e| e.to_string())?.counters);
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            std::thread::sleep(Duration::from_millis(2));
            let values = counters(&client.node_status().map_err(|e| e.to_string())?.counters);
            if values != first || Instant::now() >= deadline {
                return Ok(Self { values });
            }
        }
    }

    fn get(&self, name: &str) -> u64 {
        self.values.get(name).copied().unwrap_or(0)
    }

    fn since(&self, before: &NodeCounters) -> NodeCounters {
        let values =
            self.values.iter().map(|(name, value)| (name.clone(), value.saturating_sub(before.get(name)))).collect();
        NodeCounters { values }
    }

    /// Reads the counters again; returns what changed since the last read.
    fn advance(&mut self, client: &mut Client) -> Result<NodeCounters, String> {
        let now = Self::read(client)?;
        let delta = now.since(self);
        *self = now;
        Ok(delta)
    }
}

fn counters(pairs: &[(String, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().cloned().collect()
}

/// Runs one measured phase: wall time, CPU of the machine, the process and its threads,
/// and the kernel's UDP counters around `body`. `body` may return latency samples.
fn timed<C>(
    context: &mut C,
    bytes: u64,
    node_pid: Option<u32>,
    body: impl FnOnce(&mut C) -> Result<Option<Latencies>, String>,
) -> Result<Phase, String> {
    let before = CpuSnapshot::take(node_pid);
    let udp_before = udp_counters();
    let start = Instant::now();
    let latencies = body(context)?;
    let wall = start.elapsed().as_secs_f64();
    let after = CpuSnapshot::take(node_pid);
    let udp_after = udp_counters();
    let udp = udp_after
        .iter()
        .map(|(name, value)| (name.clone(), value.saturating_sub(udp_before.get(name).copied().unwrap_or(0))))
        .collect();
    Ok(Phase {
        name: String::new(),
        fragment_bytes: 0,
        bytes,
        wall,
        ops: None,
        latencies,
        cpu: after.since(&before),
        udp,
        notes: Vec::new(),
    })
}

fn small_gets(
    args: &BenchArgs,
    addr: SocketAddr,
    key: &ClusterKey,
    node_max: u16,
    record: &FileRecord,
    pool: &Pool,
) -> Result<Phase, String> {
    let op_bytes = args.op_bytes;
    // Off loopback the path (a 1500-byte MTU), not the node's frames, caps the small gets too.
    let fragment = op_bytes.min(u32::from(bulk_fragment(addr, args.fragment_bytes, node_max))) as u16;
    let mut client = client(addr, key, Some(fragment), 1, args.transport)?;
    let chunk_count = record.chunk_count();
    let slots_per_chunk = CHUNK_BYTES / op_bytes;
    let mut rng = pool.seed | 1;
    let mut pick = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let chunk = rng % chunk_count;
        let slot = (rng >> 32) % u64::from(slots_per_chunk);
        (chunk, slot as u32 * op_bytes)
    };
    let check = |chunk: u64, offset: u32, data: &[u8]| -> Result<(), String> {
        if data != pool.at(chunk * u64::from(CHUNK_BYTES) + u64::from(offset), op_bytes as usize) {
            return Err(format!(
                "a {op_bytes}-byte get of chunk {chunk} at {offset} came back different from what was put; the node or the protocol is broken"
            ));
        }
        Ok(())
    };
    let get = |client: &mut Client, chunk: u64, offset: u32| {
        client
            .get_chunk_range(record.chunk_id(chunk), record.chunk_len(chunk), offset, op_bytes)
            .map_err(|e| e.to_string())
    };
    // Warm-up, untimed: caches, the node's back-off state, the client's first ping.
    for _ in 0..args.ops.min(WARM_UP_OPS) {
        let (chunk, offset) = pick();
        check(chunk, offset, &get(&mut client, chunk, offset)?)?;
    }
    let ops = args.ops;
    let mut phase = timed(&mut client, u64::from(ops) * u64::from(op_bytes), args.node_pid, |client| {
        let mut samples = Vec::with_capacity(ops as usize);
        for _ in 0..ops {
            let (chunk, offset) = pick();
            let start = Instant::now();
            let data = get(client, chunk, offset);
            samples.push(start.elapsed());
            check(chunk, offset, &data?)?;
        }
        Ok(Some(Latencies::from_samples(samples)))
    })?;
    phase.name = format!("Get {} one at a time (page-cache warm)", human_bytes(u64::from(op_bytes)));
    phase.fragment_bytes = fragment;
    phase.ops = Some(u64::from(ops));
    let fragments_per_op = op_bytes.div_ceil(u32::from(fragment));
    if fragments_per_op > 1 {
        phase.notes.push(format!(
            "the node's frames hold at most {node_max}-byte fragments: each op is {fragments_per_op} fragments"
        ));
    }
    Ok(phase)
}

/// Generated content: `pool` repeats every `POOL_CHUNKS_MAX` chunks at most.
struct Pool {
    bytes: Vec<u8>,
    seed: u64,
}

impl Pool {
    fn new(chunks: u32) -> Self {
        let len = chunks.min(POOL_CHUNKS_MAX) as usize * CHUNK_BYTES as usize;
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
        let mut state = seed;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        Self { bytes, seed }
    }

    /// `len` bytes at file offset `offset`; never wraps (the period is whole chunks).
    fn at(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % self.bytes.len() as u64) as usize;
        &self.bytes[start..start + len]
    }

    fn reader(&self, total: u64) -> PoolReader<'_> {
        PoolReader { pool: &self.bytes, position: 0, total }
    }
}

struct PoolReader<'a> {
    pool: &'a [u8],
    position: u64,
    total: u64,
}

impl Read for PoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = (self.position % self.pool.len() as u64) as usize;
        let len = buf.len().min((self.total - self.position) as usize).min(self.pool.len() - start);
        buf[..len].copy_from_slice(&self.pool[start..start + len]);
        self.position += len as u64;
        Ok(len)
    }
}

struct Latencies {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

impl Latencies {
    fn from_samples(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        // Nearest rank: the smallest sample with at least q of all samples at or below it.
        let rank = |q: f64| {
            samples.get(((q * samples.len() as f64).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default()
        };
        Self { p50: rank(0.50), p99: rank(0.99), p999: rank(0.999), max: samples.last().copied().unwrap_or_default() }
    }
}

/// CPU time seen from three places: the whole machine (`/proc/stat`), this process
/// (`getrusage`), and each of its threads (`/proc/self/task/*/schedstat`).
struct CpuSnapshot {
    machine_busy_ticks: u64,
    machine_steal_ticks: u64,
    process: Duration,
    threads: BTreeMap<String, Duration>,
    /// utime + stime of `--node-pid`, in clock ticks.
    node_ticks: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct CpuDelta {
    machine_busy: f64,
    machine_steal: f64,
    process: f64,
    threads: BTreeMap<String, f64>,
    /// CPU-seconds of the `--node-pid` process.
    node: Option<f64>,
}

impl CpuSnapshot {
    fn take(node_pid: Option<u32>) -> Self {
        let (machine_busy_ticks, machine_steal_ticks) = machine_ticks();
        Self {
            machine_busy_ticks,
            machine_steal_ticks,
            process: process_cpu(),
            threads: thread_cpu(),
            node_ticks: node_pid.and_then(process_cpu_ticks),
        }
    }

    fn since(&self, before: &CpuSnapshot) -> CpuDelta {
        let tick = clock_tick_seconds();
        let threads = self
            .threads
            .iter()
            .map(|(name, after)| {
                (
                    name.clone(),
                    after.saturating_sub(before.threads.get(name).copied().unwrap_or_default()).as_secs_f64(),
                )
            })
            .filter(|(_, seconds)| *seconds > 0.0)
            .collect();
        CpuDelta {
            machine_busy: self.machine_busy_ticks.saturating_sub(before.machine_busy_ticks) as f64 * tick,
            machine_steal: self.machine_steal_ticks.saturating_sub(before.machine_steal_ticks) as f64 * tick,
            process: self.process.saturating_sub(before.process).as_secs_f64(),
            threads,
            node: match (before.node_ticks, self.node_ticks) {
                (Some(before), Some(after)) => Some(after.saturating_sub(before) as f64 * tick),
                _ => None,
            },
        }
    }
}

/// (user + nice + system + irq + softirq, steal) jiffies of all CPUs since boot.
fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|line| line.starts_with("cpu ")) else { return (0, 0) };
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|field| field.parse().unwrap_or(0)).collect();
    let field = |index: usize| fields.get(index).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    (field(0) + field(1) + field(2) + field(5) + field(6), field(7))
}

/// utime + stime (clock ticks, all threads) of process `pid`, from `/proc/PID/stat`.
fn process_cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields 14 and 15 of a `/proc/PID/stat` line; the command name (field 2) may hold
/// spaces and parentheses, so counting starts after its last `)`.
fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_tick_seconds() -> f64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { 1.0 / ticks as f64 } else { 0.01 }
}

fn process_cpu() -> Duration {
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage that outlives the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time per thread role, from the scheduler's nanosecond counters.
fn thread_cpu() -> BTreeMap<String, Duration> {
    let mut roles = BTreeMap::new();
    let pid = std::process::id().to_string();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return roles };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Some(nanos) = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|text| text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        else {
            continue;
        };
        let role = match comm.trim() {
            _ if tid == pid => "main thread (client, udp sender)",
            "beeline-datapla" => "node poll loop",
            "beeline-group-c" => "node group commit",
            _ => "other threads",
        };
        *roles.entry(role.to_owned()).or_insert(Duration::ZERO) += Duration::from_nanos(nanos);
    }
    roles
}

/// The kernel's UDP counters of this network namespace (`/proc/net/snmp`).
fn udp_counters() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = text.lines().filter(|line| line.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return BTreeMap::new() };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let latencies = Latencies::from_samples(samples);
        assert_eq!(latencies.p50, Duration::from_micros(500));
        assert_eq!(latencies.p99, Duration::from_micros(990));
        assert_eq!(latencies.p999, Duration::from_micros(999));
        assert_eq!(latencies.max, Duration::from_micros(1000));
    }

    #[test]
    fn dates_and_numbers_format() {
        assert_eq!(crate::cli::format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(crate::cli::format_time(1_709_251_200_000), "2024-03-01 00:00:00Z");
        assert_eq!(group_digits(1234567.4), "1,234,567");
        assert_eq!(group_digits(999.0), "999");
        assert_eq!(human_bytes(4096), "4 KiB");
        assert_eq!(json_string("a\"b\n"), "\"a\\\"b\\u000a\"");
    }

    #[test]
    fn stat_cpu_ticks_skip_the_command_name() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 3 0 99 0 0\n";
        assert_eq!(parse_stat_cpu_ticks(line), Some(1234 + 567));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert!(process_cpu_ticks(std::process::id()).is_some());
    }

    #[test]
    fn node_flags_need_a_node() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from([&["bench"], args].concat()).unwrap().bench;
        let own = std::process::id().to_string();
        assert!(validate(&parse(&["--node-pid", &own])).unwrap_err().contains("--node-pid needs --node"));
        assert!(validate(&parse(&["--node", "127.0.0.1:1", "--node-pid", &own, "--in-flight", "32"])).is_ok());
        assert!(validate(&parse(&["--node", "127.0.0.1:1", "--node-pid", "4294967295"])).is_err());
        assert!(validate(&parse(&["--in-flight", "65"])).unwrap_err().contains("--in-flight"));
    }

    #[test]
    fn pool_reader_yields_the_pool_cyclically() {
        let pool = Pool::new(1);
        let mut reader = pool.reader(u64::from(CHUNK_BYTES) + 10);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), CHUNK_BYTES as usize + 10);
        assert_eq!(&all[CHUNK_BYTES as usize..], pool.at(u64::from(CHUNK_BYTES), 10));
        assert_eq!(&all[..10], &pool.bytes[..10]);
    }
}
