//! Command-line interface: `beeline node run`, `beeline put/get/ls/stat/rm`, ...
//! Every failure ends in one line on stderr saying what to do, and a non-zero exit code.

pub mod bench;
pub mod cluster;
mod format;
pub mod graph;

use crate::output::{self, Output};
pub(crate) use format::format_time;

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{Client, ClientOptions};
use crate::config::NodeFlags;
use crate::keyfile;

#[derive(Debug, Parser)]
#[command(name = "beeline", version, about = "Beeline: the storage data plane of DisGraFS")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args, Clone)]
pub struct ClientFlags {
    /// Node to talk to (HOST:PORT).
    #[arg(long, env = "BEELINE_NODE", default_value = "127.0.0.1:7777", global = true)]
    node: String,
    /// Cluster key file [default: $BEELINE_KEY_FILE or ~/.config/beeline/cluster.key].
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
    /// Fragment payload bytes per datagram [default: node's max on loopback, else 1372:
    /// an 80-byte header, UDP and IPv6 within a 1500-byte MTU].
    #[arg(long, global = true)]
    fragment_bytes: Option<u16>,
    /// Replace the session with the node by a new handshake after this many milliseconds
    /// [default: 120000; the node ends sessions after its session_lifetime_ms].
    #[arg(long, env = "BEELINE_REKEY_AFTER_MS", global = true, value_parser = clap::value_parser!(u64).range(1..))]
    rekey_after_ms: Option<u64>,
    /// Use the replicated cluster whose metadata is at this Redis URL instead of one node.
    #[arg(long, env = "BEELINE_METADATA", global = true)]
    metadata: Option<String>,
    /// Prefix of the cluster's metadata keys.
    #[arg(long, default_value = crate::cluster::DEFAULT_PREFIX, global = true)]
    metadata_prefix: String,
    /// How to reach the node: shared memory when it runs on this host (auto falls back to
    /// UDP with a notice, shm fails instead), or always UDP.
    #[arg(long, value_enum, env = "BEELINE_TRANSPORT", default_value = "auto", global = true)]
    transport: crate::client::Transport,
    /// The node's shared-memory socket [default: /run/beeline/shm-PORT.sock for --node's port].
    #[arg(long, env = "BEELINE_SHM_SOCKET", global = true)]
    shm_socket: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run or inspect a storage node.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Store a file (`-` reads standard input and needs --as).
    Put {
        file: PathBuf,
        /// Name to store it under: up to 1024 bytes, at most 255 between two `/`, no
        /// control, bidi or zero-width characters [default: the file's base name].
        #[arg(long = "as")]
        name: Option<String>,
        /// Chunk size in bytes.
        #[arg(long, default_value_t = 4 << 20)]
        chunk_bytes: u32,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Fetch a file.
    Get {
        name: String,
        /// Where to write it: a file (replaced only once all of it arrived and checked out),
        /// a directory (the file goes in under the name's last `/`-part), a device or FIFO
        /// (written as it is), `-` for standard output [default: the name's last part, here].
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// List the stored files.
    Ls {
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Show one file's record.
    Stat {
        name: String,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Measure throughput, latency and CPU cost (see docs/benchmarks.md).
    Bench {
        #[command(flatten)]
        args: crate::cli::bench::BenchArgs,
    },
    /// Inspect and maintain the replicated cluster (needs --metadata).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Tag a file (source `user`): the edges of the DisGraFS file-tag graph. Tags are up
    /// to 128 bytes, without whitespace, controls or & | ! ( ) " \.
    Tag {
        name: String,
        #[arg(required = true)]
        tags: Vec<String>,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Remove tags from a file, whatever made them.
    Untag {
        name: String,
        tags: Vec<String>,
        /// Also remove every tag an extractor made, keeping the user's.
        #[arg(long)]
        automatic: bool,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// A file's tags with their sources, or (--prefix) the tags starting with a prefix
    /// and how many files carry each.
    Tags {
        name: Option<String>,
        /// Complete this prefix (`--prefix ""` lists every tag).
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Find files by tags: TAG, a & b (and; also a b), a | b (or), !a (not), parentheses;
    /// e.g. 'type:pdf & (keyword:storage | keyword:disk) & !draft'. Several arguments are
    /// ANDed.
    Search {
        expr: Vec<String>,
        /// Only names containing this (case-insensitive).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Files sharing tags with NAME, best first: each shared tag weighs ln(1 + N/df), so
    /// rare tags count for more. Prints score, name and the shared tags.
    Related {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// The file-tag graph, or the neighbourhood of a file or tag, as JSON or Graphviz DOT.
    Graph {
        /// A file name, or a tag when no file has that name.
        #[arg(long)]
        around: Option<String>,
        /// Edges away from --around (a file's tags are 1 away, files sharing them 2).
        #[arg(long, default_value_t = 2)]
        depth: u32,
        /// Cut the graph at this many nodes (at most 5000).
        #[arg(long, default_value_t = 200)]
        max_nodes: usize,
        #[arg(long, value_enum, default_value = "json")]
        format: crate::cli::graph::GraphFormat,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Remove a file and free its chunks.
    Rm {
        name: String,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Reclaim the space of chunks no file references (a single node; `beeline cluster gc`
    /// for a cluster): those of puts that never completed, once their file's youngest
    /// chunk is older than the grace period.
    Gc {
        /// Only say what would be reclaimed.
        #[arg(long)]
        dry_run: bool,
        /// Keep chunks of a file whose youngest chunk is younger than this [default: 60000].
        #[arg(long, default_value_t = ON_DEMAND_GRACE_MS)]
        grace_ms: u64,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Serve a web page to upload, find, tag and download files, with the file-tag graph
    /// and the cluster's state. Localhost only unless --listen says otherwise, and then
    /// every request needs the access token it prints.
    Web {
        /// Address to serve on; any address but 127.0.0.1 or ::1 needs the printed token.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Largest upload accepted.
        #[arg(long, default_value_t = 1 << 30)]
        upload_bytes_max: u64,
        /// Nodes (files and tags) the graph shows at most.
        #[arg(long, default_value_t = 300)]
        graph_nodes_max: usize,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Mount the store as a directory (FUSE) in the foreground until Ctrl-C, SIGTERM or
    /// `beeline umount DIR`: names with / are directories, tags are the extended
    /// attribute user.disgrafs.tags, DIR/.tags/TAG/ lists a tag's files (see README).
    Mount {
        /// An empty directory to mount on.
        dir: PathBuf,
        /// Where files being written are kept until they are stored (on close or fsync);
        /// needs room for them [default: /var/tmp/beeline-spool-PID].
        #[arg(long)]
        spool_dir: Option<PathBuf>,
        /// Reads skip the kernel's page cache (Linux 6.6+): large reads (cp, cat of big
        /// files) run 2-3x faster, small ones (4 KiB) about 10x slower, with no read-ahead.
        #[arg(long)]
        direct_reads: bool,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Unmount a `beeline mount` (fusermount3 -u, else umount(2)).
    Umount { dir: PathBuf },
    /// Automatic content tagging for a cluster (a single node tags its own files).
    Tagger {
        #[command(subcommand)]
        command: TaggerCommand,
    },
    /// Check this host against a hardware profile (hw-configs/), or list the profiles.
    Hw {
        #[command(subcommand)]
        command: crate::hw::HwCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Every node with its state and last heartbeat, and the replication health.
    Status {
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Restore the replication factor of every chunk from a verified copy, replacing
    /// copies known to be bad; never drops a node that may hold the only good copy.
    Repair {
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Read back every copy of every chunk, check it against the chunk's hash, mark the
    /// bad ones, then repair.
    Scrub {
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Reclaim, on every live node, the space of chunks that no file in the metadata
    /// references (puts that never completed), as `juicefs gc` does for objects.
    Gc {
        /// Only say what would be reclaimed.
        #[arg(long)]
        dry_run: bool,
        /// Keep chunks of a file whose youngest chunk is younger than this, and puts
        /// refreshed within it [default: 60000]. Not shorter than a repair while one may
        /// run: 0 can collect a copy a repair just wrote before it was recorded (it is then
        /// copied again by the next repair; see docs/operations.md).
        #[arg(long, default_value_t = ON_DEMAND_GRACE_MS)]
        grace_ms: u64,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Let the nodes that report METADATA LOST (Redis came back without their cluster)
    /// treat their chunks from before as ordinary garbage: what no file references then
    /// goes with the next garbage collection. Only once nothing can be re-imported.
    ForgetLost {
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Set cluster-wide settings.
    Configure {
        /// Copies of every chunk (default 2).
        #[arg(long)]
        replication_factor: usize,
        #[command(flatten)]
        client: ClientFlags,
    },
}

#[derive(Debug, Subcommand)]
enum TaggerCommand {
    /// Tag the cluster's new files until SIGINT/SIGTERM, sharing the Redis Stream
    /// `{prefix}:tagging` with every other `tagger run` (consumer group `taggers`; needs
    /// --metadata). Run as many as the work needs, anywhere with the cluster key.
    Run {
        /// This tagger's consumer name, unique among the taggers [default: HOST-PID].
        #[arg(long)]
        consumer: Option<String>,
        /// Take over files another tagger has held this long without finishing (it died).
        #[arg(long, default_value_t = 60_000)]
        claim_idle_ms: u64,
        /// Files taken from the stream at a time (1 to 64).
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Bytes of a file read to tag it; a longer file is tagged from its start.
        #[arg(long, default_value_t = 64 << 20)]
        bytes_max: u64,
        /// Time one file's extraction may take.
        #[arg(long, default_value_t = 30_000)]
        time_ms_max: u64,
        /// Serve Prometheus metrics (beeline_tagger_*) at http://ADDR/metrics.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        #[command(flatten)]
        client: ClientFlags,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Run a storage node until SIGINT/SIGTERM.
    Run {
        #[command(flatten)]
        flags: Box<NodeFlags>,
    },
    /// Show a running node's state and counters.
    Status {
        #[command(flatten)]
        client: ClientFlags,
    },
    /// Check that a node answers (exit code 0 when it does).
    Ping {
        #[command(flatten)]
        client: ClientFlags,
    },
}

type CliResult = Result<(), String>;

/// Grace period of a garbage collection an operator asks for.
const ON_DEMAND_GRACE_MS: u64 = 60_000;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node { command: NodeCommand::Run { .. } }) {
        restore_default_sigpipe();
    }
    init_logging();
    if let Command::Hw { command } = cli.command {
        // `hw check` has its own exit codes: 1 = the host is not ready, 2 = bad profile.
        return crate::hw::run(command);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("beeline: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Lets `beeline ls | head` end quietly, as command-line tools do, instead of failing on
/// a closed pipe.
fn restore_default_sigpipe() {
    // SAFETY: called once at start-up before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE and no Rust code relies on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BEELINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

fn run(cli: Cli) -> CliResult {
    // Before anything is sent: an unbounded name would not fit a datagram.
    if let Some(name) = looked_up_name(&cli.command) {
        crate::control::check_name_length(name)?;
    }
    match cli.command {
        Command::Node { command: NodeCommand::Run { flags } } => run_node(*flags),
        Command::Node { command: NodeCommand::Status { client } } => node_status(&client),
        Command::Node { command: NodeCommand::Ping { client } } => {
            let mut client = connect(&client)?;
            let info = client.ping().map_err(|e| e.to_string())?;
            println!(
                "node {} answers: fragment_bytes_max={} window_fragments={} chunk_bytes_max={}",
                client.node(),
                info.fragment_bytes_max,
                info.window_fragments,
                info.chunk_bytes_max
            );
            Ok(())
        }
        Command::Put { file, name, chunk_bytes, client } => put(&file, name, chunk_bytes, &client),
        Command::Get { name, output, client } => get(&name, output, &client),
        Command::Cluster { command } => crate::cli::cluster::run(command_into(command)?),
        Command::Tag { name, tags, client } => crate::cli::graph::tag(&client, &name, &tags),
        Command::Untag { name, tags, automatic, client } => crate::cli::graph::untag(&client, &name, &tags, automatic),
        Command::Tags { name, prefix, limit, client } => {
            crate::cli::graph::tags(&client, name.as_deref(), prefix.as_deref(), limit)
        }
        Command::Search { expr, name, limit, client } => {
            crate::cli::graph::search(&client, &expr, name.as_deref(), limit)
        }
        Command::Related { name, limit, client } => crate::cli::graph::related(&client, &name, limit),
        Command::Graph { around, depth, max_nodes, format, client } => {
            crate::cli::graph::graph(&client, around.as_deref(), depth, max_nodes, format)
        }
        Command::Ls { client } if client.metadata.is_some() => crate::cli::cluster::ls(&cluster_flags(&client)?),
        Command::Stat { name, client } if client.metadata.is_some() => {
            crate::cli::cluster::stat(&cluster_flags(&client)?, &name)
        }
        Command::Rm { name, client } if client.metadata.is_some() => {
            crate::cli::cluster::rm(&cluster_flags(&client)?, &name)
        }
        Command::Ls { client } => {
            let mut client = connect(&client)?;
            let files = client.list().map_err(|e| e.to_string())?;
            for file in &files {
                println!("{:>14}  {}  {}", file.size_bytes, format_time(file.created_unix_ms), file.name);
            }
            Ok(())
        }
        Command::Stat { name, client } => {
            let mut client = connect(&client)?;
            let record = client.lookup(&name).map_err(|e| e.to_string())?;
            println!("name:        {}", record.name);
            println!("size_bytes:  {}", record.size_bytes);
            println!("chunks:      {} x {} bytes", record.chunk_count(), record.chunk_bytes);
            println!("file_id:     {:016x}", record.file_id);
            println!("blake3:      {}", keyfile::to_hex(&record.blake3));
            println!("created:     {}", format_time(record.created_unix_ms));
            Ok(())
        }
        Command::Bench { args } => crate::cli::bench::run(args),
        Command::Gc { client, .. } if client.metadata.is_some() => {
            Err("with --metadata the files are in the cluster: run `beeline cluster gc`".into())
        }
        Command::Gc { dry_run, grace_ms, client } => node_gc(&client, dry_run, grace_ms),
        Command::Web { listen, upload_bytes_max, graph_nodes_max, client } => {
            web(listen, upload_bytes_max, graph_nodes_max, &client)
        }
        Command::Mount { dir, spool_dir, direct_reads, client } => mount(dir, spool_dir, direct_reads, &client),
        Command::Umount { dir } => crate::mount::umount(&dir).map_err(|e| e.to_string()),
        Command::Hw { .. } => Err("`beeline hw` is dispatched before this point; this is a bug".into()),
        Command::Tagger {
            command:
                TaggerCommand::Run { consumer, claim_idle_ms, batch, bytes_max, time_ms_max, metrics_listen, client },
        } => {
            let flags = cluster_flags(&client)?;
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let options = crate::tagger::stream::StreamOptions {
                url: flags.url,
                prefix: flags.prefix,
                key: flags.key,
                consumer: consumer.unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id())),
                claim_idle_ms,
                batch,
                limits: crate::tagger::extract::Limits { bytes_max, time_ms_max },
                hold: std::env::var("BEELINE_TAGGER_HOLD").ok(),
            };
            crate::cli::graph::tagger_run(&options, metrics_listen)
        }
        Command::Rm { name, client } => {
            let mut client = connect(&client)?;
            let record = client.remove(&name).map_err(|e| e.to_string())?;
            println!("removed {} ({} bytes)", record.name, record.size_bytes);
            Ok(())
        }
    }
}

/// The stored name a command looks up. (`put` checks the name it stores under itself,
/// more strictly.)
fn looked_up_name(command: &Command) -> Option<&str> {
    match command {
        Command::Get { name, .. }
        | Command::Stat { name, .. }
        | Command::Rm { name, .. }
        | Command::Tag { name, .. }
        | Command::Untag { name, .. }
        | Command::Related { name, .. } => Some(name),
        Command::Tags { name, .. } => name.as_deref(),
        Command::Graph { around, .. } => around.as_deref(),
        _ => None,
    }
}

fn run_node(flags: NodeFlags) -> CliResult {
    let settings = flags.resolve().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        // Listen for signals before starting anything, so that a SIGTERM during start-up
        // also stops the node gracefully rather than killing it.
        let shutdown = shutdown_signal().map_err(|e| format!("cannot listen for signals: {e}"))?;
        crate::node::run(settings, shutdown).await.map_err(|e| e.to_string())
    })
}

pub(crate) fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

fn resolve_node(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // A bare host name or address gets the default port.
    for candidate in [text.to_owned(), format!("{text}:7777")] {
        if let Some(addr) = candidate.to_socket_addrs().ok().and_then(|mut addrs| addrs.next()) {
            return Ok(addr);
        }
    }
    Err(format!("bad --node {text}: not an address that resolves; use HOST:PORT, e.g. 127.0.0.1:7777"))
}

fn command_into(command: ClusterCommand) -> Result<crate::cli::cluster::Action, String> {
    use crate::cli::cluster::Action;
    Ok(match command {
        ClusterCommand::Status { client } => Action::Status(cluster_flags(&client)?),
        ClusterCommand::Repair { client } => Action::Repair(cluster_flags(&client)?),
        ClusterCommand::Scrub { client } => Action::Scrub(cluster_flags(&client)?),
        ClusterCommand::Gc { dry_run, grace_ms, client } => Action::Gc(cluster_flags(&client)?, dry_run, grace_ms),
        ClusterCommand::ForgetLost { client } => Action::ForgetLost(cluster_flags(&client)?),
        ClusterCommand::Configure { replication_factor, client } => {
            Action::Configure(cluster_flags(&client)?, replication_factor)
        }
    })
}

fn cluster_flags(flags: &ClientFlags) -> Result<crate::cli::cluster::Flags, String> {
    let url = flags.metadata.clone().ok_or(
        "this command needs the cluster's metadata: pass --metadata redis://HOST:PORT (or set BEELINE_METADATA)",
    )?;
    let key_path = flags.key_file.clone().unwrap_or_else(keyfile::default_key_path);
    let key = keyfile::load(&key_path).map_err(|e| e.to_string())?;
    Ok(crate::cli::cluster::Flags {
        url,
        prefix: flags.metadata_prefix.clone(),
        key,
        fragment_bytes: flags.fragment_bytes,
    })
}

fn web(listen: SocketAddr, upload_bytes_max: u64, graph_nodes_max: usize, flags: &ClientFlags) -> CliResult {
    if graph_nodes_max == 0 {
        return Err("--graph-nodes-max must be at least 1".into());
    }
    let opener = if flags.metadata.is_some() {
        let cluster = cluster_flags(flags)?;
        crate::web::Opener::Cluster {
            url: cluster.url,
            prefix: cluster.prefix,
            key: cluster.key,
            fragment_bytes: cluster.fragment_bytes,
        }
    } else {
        crate::web::Opener::Node(client_options(flags)?)
    };
    let mut options = crate::web::WebOptions::new(listen);
    options.upload_bytes_max = upload_bytes_max;
    options.limits.graph_nodes_max = graph_nodes_max;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(options.operations_max + 4)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().map_err(|e| format!("cannot listen for signals: {e}"))?;
        crate::web::serve(options, opener, shutdown).await
    })
}

fn mount(dir: PathBuf, spool_dir: Option<PathBuf>, direct_reads: bool, flags: &ClientFlags) -> CliResult {
    let target = if flags.metadata.is_some() {
        let cluster = cluster_flags(flags)?;
        crate::mount::Target::Cluster {
            url: cluster.url,
            prefix: cluster.prefix,
            key: cluster.key,
            fragment_bytes: cluster.fragment_bytes,
        }
    } else {
        crate::mount::Target::Node(client_options(flags)?)
    };
    let spool_dir = spool_dir.unwrap_or_else(crate::mount::default_spool_dir);
    crate::mount::run(crate::mount::MountOptions { dir, target, spool_dir, direct_reads }).map_err(|e| e.to_string())
}

fn client_options(flags: &ClientFlags) -> Result<ClientOptions, String> {
    let node = resolve_node(&flags.node)?;
    let key_path = flags.key_file.clone().unwrap_or_else(keyfile::default_key_path);
    let key = match keyfile::load(&key_path) {
        Ok(key) => key,
        // Shared memory needs no key (the socket's permission admits the client).
        Err(_) if flags.transport == crate::client::Transport::Shm => beeline_dataplane::wire::ClusterKey::new([0; 32]),
        Err(error) => return Err(error.to_string()),
    };
    let mut options = ClientOptions::new(node, key);
    options.fragment_bytes = flags.fragment_bytes;
    options.transport = flags.transport;
    options.shm_socket = flags.shm_socket.clone();
    if let Some(rekey_after_ms) = flags.rekey_after_ms {
        options.rekey_after_ms = rekey_after_ms;
    }
    Ok(options)
}

pub(crate) fn connect(flags: &ClientFlags) -> Result<Client, String> {
    Client::new(client_options(flags)?).map_err(|e| e.to_string())
}

fn progress_bar(total: Option<u64>, verb: &str, name: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || total.is_some_and(|total| total < 8 << 20) {
        return None;
    }
    let bar = match total {
        Some(total) => indicatif::ProgressBar::new(total),
        None => indicatif::ProgressBar::no_length(),
    };
    let style =
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(format!("{verb} {name}"));
    Some(bar)
}

fn put(file: &Path, name: Option<String>, chunk_bytes: u32, flags: &ClientFlags) -> CliResult {
    let from_stdin = file.as_os_str() == "-";
    let name = match name {
        Some(name) => name,
        None if from_stdin => return Err("reading standard input needs a name: add --as NAME".into()),
        None => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{} has no file name: add --as NAME", file.display()))?,
    };
    crate::control::validate_name(&name)?;
    if chunk_bytes == 0 {
        return Err("--chunk-bytes must be at least 1".into());
    }
    if flags.metadata.is_some() {
        return crate::cli::cluster::put(&cluster_flags(flags)?, file, &name, chunk_bytes);
    }
    let mut client = connect(flags)?;
    client.set_chunk_bytes(chunk_bytes);
    let source = file.display().to_string();
    let (mut reader, total): (Box<dyn std::io::Read>, Option<u64>) = if from_stdin {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let handle = std::fs::File::open(file).map_err(|e| format!("cannot read {source}: {e}"))?;
        if handle.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(format!("{source} is a directory: put files one at a time"));
        }
        let size = handle.metadata().map(|m| m.len()).ok();
        (Box::new(std::io::BufReader::with_capacity(1 << 20, handle)), size)
    };
    let bar = progress_bar(total, "put", &name);
    let mut on_progress = |done: u64| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    };
    let record = client.put_reader(&name, &mut reader, &source, &mut on_progress).map_err(|e| e.to_string())?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!(
        "stored {} ({} bytes, {} chunks, blake3 {})",
        record.name,
        record.size_bytes,
        record.chunk_count(),
        &keyfile::to_hex(&record.blake3)[..16]
    );
    Ok(())
}

fn get(name: &str, output: Option<PathBuf>, flags: &ClientFlags) -> CliResult {
    let mut output = open_output(name, output)?;
    if flags.metadata.is_some() {
        return crate::cli::cluster::get(&cluster_flags(flags)?, name, output);
    }
    let mut client = connect(flags)?;
    let size_hint = if output.is_stdout() { None } else { client.lookup(name).map(|r| r.size_bytes).ok() };
    let bar = progress_bar(size_hint, "get", name);
    let mut on_progress = |done: u64| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    };
    let destination = output.shown().to_owned();
    // On an error `output` is dropped, which leaves the destination as it was.
    let result = client.get_writer(name, output.writer(), &destination, &mut on_progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let record = result.map_err(|e| e.to_string())?;
    finish_output(output, record.size_bytes)
}

/// `-o OUT` (see [`output`] for what each kind of path gets), else the stored name's base
/// name in the working directory.
pub(crate) fn open_output(name: &str, path: Option<PathBuf>) -> Result<Output, String> {
    let base = output::base_name(name);
    match path {
        Some(path) if base.is_none() && path.is_dir() => Err(format!(
            "{} is a directory and \"{name}\" has no file name after its last / to save it under: give a file path with -o",
            path.display()
        )),
        Some(path) => Output::open(&path, base),
        None => {
            let base = base.ok_or_else(|| format!("\"{name}\" has no file name after its last /: pass -o FILE"))?;
            Output::open(Path::new(base), None)
        }
    }
}

/// Puts the written content in place and says where, unless it went to standard output.
pub(crate) fn finish_output(output: Output, size_bytes: u64) -> CliResult {
    let to_stdout = output.is_stdout();
    let shown = output.shown().to_owned();
    output.finish()?;
    if !to_stdout {
        println!("wrote {shown} ({size_bytes} bytes)");
    }
    Ok(())
}

fn node_gc(flags: &ClientFlags, dry_run: bool, grace_ms: u64) -> CliResult {
    use crate::control::{ControlRequest, ControlResponse};
    let mut client = connect(flags)?;
    let mut total = crate::control::GcReport::default();
    // A pass stops early when the node's change queue fills: ask again, backing off while
    // passes make no progress (the queue drains at the disk's sync pace), within a bound.
    let mut retry = crate::control::GcRetry::default();
    loop {
        match client.control(&ControlRequest::Gc { dry_run, grace_ms: Some(grace_ms) }).map_err(|e| e.to_string())? {
            ControlResponse::Gc(report) => {
                total.chunks_collected += report.chunks_collected;
                total.bytes_collected += report.bytes_collected;
                total.files_collected += report.files_collected;
                total.disk_bytes_freed += report.disk_bytes_freed;
                total.chunks_kept_young = report.chunks_kept_young;
                total.bytes_kept_young = report.bytes_kept_young;
                if !report.more || dry_run {
                    break;
                }
                retry.after(&report).map_err(|stop| format!("node {}: {stop}", client.node()))?;
            }
            ControlResponse::Failed(reason) => return Err(reason),
            other => return Err(format!("unexpected answer from the node: {other:?}")),
        }
    }
    crate::cli::cluster::print_gc(client.node().to_string().as_str(), &total, dry_run);
    Ok(())
}

fn node_status(flags: &ClientFlags) -> CliResult {
    let mut client = connect(flags)?;
    let status = client.node_status().map_err(|e| e.to_string())?;
    println!("node:          {} (beeline {})", status.listen, status.node_version);
    println!("backend:       {}", status.backend);
    println!("metadata:      {}", status.metadata);
    println!("uptime:        {:.1} s", status.uptime_ms as f64 / 1000.0);
    println!("files:         {}", status.files);
    println!("chunks:        {}", status.chunks);
    println!("used_bytes:    {}", status.used_bytes);
    println!(
        "arena:         {} frames, {} free, {}",
        status.arena_frames, status.arena_frames_free, status.page_backing
    );
    println!("puts_in_flight: {}", status.puts_in_flight);
    println!("sessions:      {}", status.sessions_active);
    for (name, value) in &status.counters {
        println!("  {name:<22} {value}");
    }
    Ok(())
}
