//! `beeline node run`: the storage node. The data plane runs on its own thread (a
//! run-to-completion poll loop that backs off when idle); this module sets it up from the
//! settings, answers control requests from it, and shuts it down gracefully: on a signal
//! it stops taking requests, finishes every ack whose data is already on its way to disk,
//! and exits.

pub mod format;
pub mod gc;
pub mod membership;
pub mod metrics;
pub mod scrub;
pub mod snapshot;

pub use snapshot::{SharedSnapshot, Snapshot};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use beeline_dataplane::arena::memory::{ArenaMemory, PageBacking, PagePolicy};
use beeline_dataplane::counters::{Counters, DropReason};
use beeline_dataplane::io::PacketIo;
use beeline_dataplane::node::poll::{Backoff, PollLoop};
use beeline_dataplane::node::sessions::{SEEN_PER_SESSION, SeenRandom, SessionMemory, SessionSlot};
use beeline_dataplane::node::{BACKGROUND_TICKET, ControlHandler, Node, NodeConfig, PutSlot};
use beeline_dataplane::store::ChunkStore;
use beeline_dataplane::store::disk::{DiskStore, DiskStoreConfig, SyncLatency};
use beeline_dataplane::wire::Status;
use tracing::{info, warn};

use crate::backend::Backend;
use crate::backend::local::NodeIo;
use crate::config::{HugepagePolicy, NodeSettings};
use crate::control::{ChunkFile, ControlRequest, ControlResponse, GcReport, NodeStatus, validate_name};
use crate::keyfile;
use crate::metadata::{EmbeddedMetadata, FileTag, Metadata, MetadataError};
use crate::node::gc::GcState;
use crate::node::membership::{Identity, Membership};
use crate::shm::server::{ShmServer, ShmSettings};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Key(#[from] keyfile::KeyError),
    #[error("cannot create data directory {path}: {source}; pass --data-dir with a writable directory")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Arena(String),
    #[error("{0}")]
    Socket(String),
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error("the data plane thread failed: {0}")]
    Thread(String),
    #[error(transparent)]
    Format(#[from] format::FormatError),
}

/// Answers control requests from the embedded metadata store.
struct NodeControl<M: Metadata> {
    metadata: M,
    snapshot: SharedSnapshot,
    started: Instant,
    listen: String,
    /// In a cluster the files live in Redis, not in `metadata`: garbage collection is
    /// decided by `beeline cluster gc` (or this node's own background pass), never from
    /// the embedded metadata, which knows none of them.
    cluster: bool,
    gc: Arc<GcState>,
    grace_ms: u64,
    /// The chunk files listed by the last `ChunkFiles { after: None }`, for its next pages.
    chunk_files: Vec<ChunkFile>,
    /// Nudges the node's own tagger after a commit (a single node's; never blocks).
    tagger_nudge: Option<std::sync::mpsc::SyncSender<()>>,
}

fn encode(response: &ControlResponse, out: &mut [u8]) -> Result<usize, Status> {
    postcard::to_slice(response, out).map(|written| written.len()).map_err(|_| Status::TooLarge)
}

impl<M: Metadata> NodeControl<M> {
    fn delete_chunks<S: ChunkStore>(store: &mut S, record: &crate::control::FileRecord) {
        for index in 0..record.chunk_count() {
            // Failure here leaves an orphan chunk: space, not correctness.
            if let Err(error) = store.delete(record.chunk_id(index), BACKGROUND_TICKET) {
                warn!(file = %record.name, ?error, "could not delete a chunk of a replaced or removed file");
            }
        }
    }

    /// The file ids of every file in the embedded metadata.
    fn referenced_files(&mut self) -> Result<std::collections::HashSet<u64>, crate::metadata::MetadataError> {
        let mut referenced = std::collections::HashSet::new();
        let mut after: Option<String> = None;
        // Bounded: every page moves `after` forward, and the namespace is finite.
        loop {
            let page = self.metadata.list(after.as_deref(), 1024)?;
            referenced.extend(page.iter().map(|record| record.file_id));
            match page.last() {
                Some(last) if page.len() == 1024 => after = Some(last.name.clone()),
                _ => return Ok(referenced),
            }
        }
    }

    /// A single node's garbage collection: chunks of file ids its metadata does not know,
    /// whose youngest chunk is at least `grace_ms` old.
    fn local_gc(
        &mut self,
        store: &mut DiskStore,
        grace_ms: u64,
        dry_run: bool,
        everything: bool,
    ) -> Result<GcReport, crate::metadata::MetadataError> {
        let referenced = self.referenced_files()?;
        Ok(run_local_gc(store, &referenced, grace_ms, dry_run, everything, &self.gc))
    }

    fn cluster_gc_refusal(&self) -> Option<ControlResponse> {
        if !self.cluster {
            return Some(ControlResponse::Failed(
                "this node is not in a cluster: run `beeline gc` against it instead".into(),
            ));
        }
        if self.gc.metadata_lost.load(Ordering::Acquire) {
            return Some(ControlResponse::Failed(format!(
                "this node keeps all its chunks: {}; see `beeline cluster forget-lost`",
                self.gc.note()
            )));
        }
        None
    }

    // Long on purpose: one match arm per control request.
    fn respond(&mut self, request: ControlRequest, response_max: usize, store: &mut DiskStore) -> ControlResponse {
        let failed = |error: crate::metadata::MetadataError| ControlResponse::Failed(error.to_string());
        match request {
            ControlRequest::CommitFile(record) => {
                if let Err(reason) = validate_name(&record.name) {
                    return ControlResponse::Failed(reason);
                }
                for index in 0..record.chunk_count() {
                    if store.chunk_len(record.chunk_id(index)) != Some(record.chunk_len(index)) {
                        return ControlResponse::Failed(format!(
                            "chunk {index} of {} is not stored on this node; put the file again",
                            record.name
                        ));
                    }
                }
                match self.metadata.put_file(&record) {
                    Ok(replaced) => {
                        if let Some(nudge) = &self.tagger_nudge {
                            // Full means a nudge is already waiting: the put never waits.
                            let _ = nudge.try_send(());
                        }
                        if let Some(old) = &replaced {
                            if old.file_id != record.file_id {
                                Self::delete_chunks(store, old);
                            }
                        }
                        ControlResponse::Committed { replaced }
                    }
                    Err(error) => failed(error),
                }
            }
            ControlRequest::Lookup { name } => match self.metadata.get_file(&name) {
                Ok(Some(record)) => ControlResponse::File(record),
                Ok(None) => ControlResponse::NotFound,
                Err(error) => failed(error),
            },
            ControlRequest::List { after, limit } => {
                let limit = usize::from(limit.clamp(1, 256));
                match self.metadata.list(after.as_deref(), limit) {
                    Ok(mut files) => {
                        // Keep only what fits one datagram; the client asks for the rest.
                        let mut more = files.len() == limit;
                        while !files.is_empty()
                            && postcard::experimental::serialized_size(&ControlResponse::Listing {
                                files: files.clone(),
                                more: true,
                            })
                            .unwrap_or(usize::MAX)
                                > response_max
                        {
                            files.pop();
                            more = true;
                        }
                        ControlResponse::Listing { files, more }
                    }
                    Err(error) => failed(error),
                }
            }
            ControlRequest::Remove { name } => match self.metadata.remove_file(&name) {
                Ok(Some(record)) => {
                    Self::delete_chunks(store, &record);
                    ControlResponse::Removed(record)
                }
                Ok(None) => ControlResponse::NotFound,
                Err(error) => failed(error),
            },
            ControlRequest::NodeStatus { counters_from } => {
                let snapshot = self.snapshot.lock().map(|s| s.clone()).unwrap_or_default();
                // As published by the poll loop (at most 100 ms old), so that node and
                // backend counters agree with each other.
                let mut counters = counter_pairs(&snapshot.counters);
                let writes = &snapshot.writes;
                counters.extend([
                    ("store_direct_written_bytes".to_owned(), writes.direct_bytes),
                    ("store_page_cache_written_bytes".to_owned(), writes.page_cache_bytes),
                    ("store_padding_bytes".to_owned(), writes.padding_bytes),
                ]);
                counters.extend(snapshot.backend_counters.iter().cloned());
                let from = (counters_from as usize).min(counters.len());
                let mut status = NodeStatus {
                    node_version: env!("CARGO_PKG_VERSION").into(),
                    backend: snapshot.backend.clone(),
                    listen: self.listen.clone(),
                    uptime_ms: self.started.elapsed().as_millis() as u64,
                    files: self.metadata.file_count().unwrap_or(0),
                    chunks: snapshot.chunks,
                    used_bytes: store.used_bytes(),
                    arena_frames: snapshot.arena_frames,
                    arena_frames_free: snapshot.arena_frames_free,
                    puts_in_flight: snapshot.puts_in_flight,
                    sessions_active: snapshot.sessions_active,
                    page_backing: snapshot.page_backing,
                    counters: counters.split_off(from),
                    counters_next: None,
                    metadata: if self.cluster { self.gc.note() } else { "embedded (single node)".into() },
                    gc_grace_ms: self.grace_ms,
                };
                // Keep only what fits one datagram (a link's MTU on kernel-bypass
                // backends); the client asks for the rest.
                let all = status.counters.len();
                while !status.counters.is_empty()
                    && postcard::experimental::serialized_size(&ControlResponse::Status(status.clone()))
                        .unwrap_or(usize::MAX)
                        > response_max
                {
                    status.counters.pop();
                    status.counters_next = Some((from + status.counters.len()) as u32);
                }
                debug_assert!(status.counters.len() == all || status.counters_next.is_some());
                ControlResponse::Status(status)
            }
            ControlRequest::Gc { dry_run, grace_ms } => {
                if self.cluster {
                    return ControlResponse::Failed(
                        "this node is in a cluster, whose files are in Redis: run `beeline cluster gc`".into(),
                    );
                }
                match self.local_gc(store, grace_ms.unwrap_or(self.grace_ms), dry_run, true) {
                    Ok(report) => ControlResponse::Gc(report),
                    Err(error) => failed(error),
                }
            }
            ControlRequest::ChunkFiles { after } => {
                if let Some(refusal) = self.cluster_gc_refusal() {
                    return refusal;
                }
                if after.is_none() {
                    self.chunk_files = gc::chunk_files(store).into_values().collect();
                }
                let start = after.map_or(0, |after| self.chunk_files.partition_point(|file| file.file_id <= after));
                // 24 bytes is more than one encoded entry takes.
                let fit = (response_max.saturating_sub(16) / 24).max(1);
                let end = (start + fit).min(self.chunk_files.len());
                ControlResponse::ChunkFiles {
                    files: self.chunk_files[start..end].to_vec(),
                    more: end < self.chunk_files.len(),
                }
            }
            ControlRequest::AddTags { name, tags } => {
                let tags: Vec<FileTag> = tags.into_iter().map(FileTag::from).collect();
                match self.metadata.add_tags(&name, &tags) {
                    Ok(added) => ControlResponse::TagsAdded { added: added as u32 },
                    Err(MetadataError::NoSuchFile(_)) => ControlResponse::NotFound,
                    Err(error) => failed(error),
                }
            }
            ControlRequest::RemoveTags { name, tags } => match self.metadata.remove_tags(&name, &tags) {
                Ok(removed) => ControlResponse::Tags(removed.into_iter().map(Into::into).collect()),
                Err(error) => failed(error),
            },
            ControlRequest::TagsOf { name, after, limit } => {
                match self.metadata.tags_of(&name, after.as_deref(), usize::from(limit.clamp(1, 1024))) {
                    Ok(tags) => fit(tags.into_iter().map(Into::into).collect(), ControlResponse::Tags, response_max),
                    Err(error) => failed(error),
                }
            }
            ControlRequest::FilesTagged { tag, after, limit } => {
                match self.metadata.files_tagged(&tag, after.as_deref(), usize::from(limit.clamp(1, 1024))) {
                    Ok(names) => fit(names, ControlResponse::Names, response_max),
                    Err(error) => failed(error),
                }
            }
            ControlRequest::TagsByPrefix { prefix, after, limit } => {
                match self.metadata.tags_by_prefix(&prefix, after.as_deref(), usize::from(limit.clamp(1, 1024))) {
                    Ok(counts) => fit(
                        counts.into_iter().map(|count| (count.tag, count.files)).collect(),
                        ControlResponse::TagCounts,
                        response_max,
                    ),
                    Err(error) => failed(error),
                }
            }
            ControlRequest::CollectFiles { file_ids, min_age_ms, dry_run, reclaim } => {
                if let Some(refusal) = self.cluster_gc_refusal() {
                    return refusal;
                }
                let mut report = GcReport::default();
                gc::collect(store, &file_ids, min_age_ms, dry_run, &mut report);
                gc::finish(store, reclaim, &mut report, &self.gc);
                ControlResponse::Gc(report)
            }
        }
    }
}

/// The answer `wrap(items)` with as many of `items` (a page, in order) as fit one
/// datagram; the client asks for the rest after the last one it got.
fn fit<T: Clone>(mut items: Vec<T>, wrap: impl Fn(Vec<T>) -> ControlResponse, response_max: usize) -> ControlResponse {
    let size = |items: &Vec<T>| postcard::experimental::serialized_size(&wrap(items.clone())).unwrap_or(usize::MAX);
    // Halve while far too big, then drop one at a time (bounded by the page length).
    while items.len() > 1 && size(&items) > 2 * response_max {
        items.truncate(items.len() / 2);
    }
    while !items.is_empty() && size(&items) > response_max {
        items.pop();
    }
    wrap(items)
}

/// Collects the chunks of file ids not in `referenced` whose youngest chunk is at least
/// `grace_ms` old, then compacts (`everything`: all dead space, else what is cheap).
fn run_local_gc(
    store: &mut DiskStore,
    referenced: &std::collections::HashSet<u64>,
    grace_ms: u64,
    dry_run: bool,
    everything: bool,
    state: &GcState,
) -> GcReport {
    let files = gc::chunk_files(store);
    let (collect, mut report) = gc::garbage(files.values(), &|file_id| referenced.contains(&file_id), grace_ms);
    gc::collect(store, &collect, grace_ms, dry_run, &mut report);
    report.dry_run = dry_run;
    gc::finish(store, everything, &mut report, state);
    report
}

/// Every data-path counter with its name, for status output and metrics.
pub fn counter_pairs(counters: &Counters) -> Vec<(String, u64)> {
    let c = counters;
    [
        ("rx_packets", c.rx_packets),
        ("tx_packets", c.tx_packets),
        ("rejected_busy", c.rejected_busy),
        ("rejected_bad_request", c.rejected_bad_request),
        ("rejected_not_found", c.rejected_not_found),
        ("rejected_disk_full", c.rejected_disk_full),
        ("rejected_internal", c.rejected_internal),
        ("rejected_corrupt", c.rejected_corrupt),
        ("fragments_stored", c.fragments_stored),
        ("fragments_duplicate", c.fragments_duplicate),
        ("chunks_stored", c.chunks_stored),
        ("bytes_stored", c.bytes_stored),
        ("puts_abandoned", c.puts_abandoned),
        ("fragments_served", c.fragments_served),
        ("bytes_served", c.bytes_served),
        ("gets", c.gets),
        ("pings", c.pings),
        ("control_requests", c.control_requests),
        ("handshake_challenges", c.handshake_challenges),
        ("sessions_established", c.sessions_established),
        ("upgrade_replies", c.upgrade_replies),
        ("local_requests", c.local_requests),
        ("chunks_deleted", c.chunks_deleted),
        ("data_bytes_copied", c.data_bytes_copied),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    // Every drop reason, so that a new one shows up without touching this list.
    .chain(DropReason::ALL.iter().map(|reason| (format!("dropped_{}", reason.name()), c.dropped(*reason))))
    .collect()
}

impl<M: Metadata> ControlHandler<DiskStore> for NodeControl<M> {
    fn handle(
        &mut self,
        _peer: SocketAddr,
        request: &[u8],
        response: &mut [u8],
        store: &mut DiskStore,
    ) -> Result<usize, Status> {
        let Ok(request) = postcard::from_bytes::<ControlRequest>(request) else {
            return Err(Status::BadRequest);
        };
        let answer = self.respond(request, response.len(), store);
        encode(&answer, response)
    }
}

/// A running node: its address, and the way to stop it.
pub struct NodeHandle {
    pub local_addr: SocketAddr,
    pub snapshot: SharedSnapshot,
    pub sync_latency: SyncLatency,
    pub backend: String,
    pub capacity_bytes: u64,
    pub gc: Arc<GcState>,
    /// What the node's own tagger did (a single node's).
    pub tagger: Option<Arc<crate::tagger::runner::TaggerStats>>,
    tagger_thread: Option<crate::tagger::node::NodeTagger>,
    membership: Option<Membership>,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), NodeError>>>,
}

impl NodeHandle {
    /// Asks the node to stop and waits until it has finished its in-flight acks.
    pub fn stop(mut self) -> Result<(), NodeError> {
        // The tagger reads through the node: it stops first.
        if let Some(tagger) = self.tagger_thread.take() {
            tagger.stop();
        }
        // Leave the cluster first, so clients stop choosing this node.
        if let Some(membership) = self.membership.take() {
            membership.stop();
        }
        self.shutdown.store(true, Ordering::Release);
        self.join()
    }

    fn join(&mut self) -> Result<(), NodeError> {
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| NodeError::Thread("panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if let Some(membership) = self.membership.take() {
            membership.stop();
        }
        self.shutdown.store(true, Ordering::Release);
        let _ = self.join();
    }
}

/// Starts a node; returns once it is serving (or failed to start).
pub fn start(settings: NodeSettings) -> Result<NodeHandle, NodeError> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|source| NodeError::DataDir { path: settings.data_dir.clone(), source })?;
    format::check_or_write(&settings.data_dir)?;
    if let Some(cluster) = &settings.cluster {
        // Metadata in a format this node would misread: refuse to start. (Unreachable is
        // fine: the node registers once Redis is up.)
        if let Err(
            error @ (crate::metadata::MetadataError::NewerFormat { .. }
            | crate::metadata::MetadataError::ForeignFormat { .. }),
        ) = crate::cluster::RedisMetadata::connect(&cluster.metadata_url, &cluster.prefix)
        {
            return Err(error.into());
        }
    }
    let (key, created) = keyfile::load_or_create(&settings.key_file)?;
    if created {
        info!(path = %settings.key_file.display(), "created a new cluster key; copy this file to every client and node of the cluster (see README)");
    }
    let node_id = crate::node::membership::node_id(&settings.data_dir)
        .map_err(|source| NodeError::DataDir { path: settings.data_dir.clone(), source })?;
    let capacity_bytes =
        settings.capacity_bytes.or_else(|| crate::node::membership::filesystem_bytes(&settings.data_dir)).unwrap_or(0);
    let (cluster, metrics_listen, backend) =
        (settings.cluster.clone(), settings.metrics_listen, settings.backend.kind().name().to_owned());
    let membership_key = key.clone();
    let shutdown = Arc::new(AtomicBool::new(false));
    let snapshot = SharedSnapshot::default();
    let gc_state = Arc::new(GcState::default());
    let data_dir = settings.data_dir.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    // A single node tags its own files, reading them back over loopback: a kernel-bypass
    // backend's port is not reachable from the host's own stack, so only `udp` has one.
    let single = settings.cluster.is_none() && settings.backend.kind() == crate::config::BackendKind::Udp;
    let single = single && settings.auto_tag;
    if settings.cluster.is_none() && settings.auto_tag && !single {
        info!(
            "no automatic tagging on this backend: the node's tagger reads over the kernel's loopback (see docs/metadata.md)"
        );
    }
    let (nudge_tx, nudge_rx) = crate::tagger::node::nudge_channel();
    let nudge = single.then_some(nudge_tx);
    let tagger_key = key.clone();
    let thread = {
        let shutdown = shutdown.clone();
        let snapshot = snapshot.clone();
        let gc_state = gc_state.clone();
        std::thread::Builder::new()
            .name("beeline-dataplane".into())
            .spawn(move || data_plane_thread(settings, key, shutdown, snapshot, gc_state, nudge, ready_tx))
            .map_err(|error| NodeError::Thread(error.to_string()))?
    };
    match ready_rx.recv() {
        Ok((local_addr, sync_latency, metadata)) => {
            let (tagger, tagger_thread) = if single {
                let stats = Arc::new(crate::tagger::runner::TaggerStats::default());
                let limits = crate::tagger::extract::Limits::default();
                let thread = crate::tagger::node::NodeTagger::start(
                    metadata,
                    local_addr,
                    tagger_key,
                    limits,
                    stats.clone(),
                    nudge_rx,
                )
                .map_err(|error| NodeError::Thread(format!("cannot start the tagger: {error}")))?;
                (Some(stats), Some(thread))
            } else {
                (None, None)
            };
            let mut node = NodeHandle {
                tagger,
                tagger_thread,
                local_addr,
                snapshot,
                sync_latency,
                membership: None,
                backend,
                capacity_bytes,
                gc: gc_state.clone(),
                shutdown,
                thread: Some(thread),
            };
            if let Some(cluster) = cluster {
                let identity = Identity {
                    id: node_id,
                    backend: node.backend.clone(),
                    capacity_bytes,
                    metrics_address: metrics_listen.map(|addr| addr.to_string()),
                };
                let membership = crate::node::membership::start(
                    cluster,
                    identity,
                    membership_key,
                    node.snapshot.clone(),
                    gc_state,
                    &data_dir,
                )
                .map_err(|error| NodeError::Thread(error.to_string()))?;
                node.membership = Some(membership);
            }
            Ok(node)
        }
        // The thread exits before signalling readiness only on a start-up error.
        Err(_) => Err(thread
            .join()
            .map_err(|_| NodeError::Thread("panicked during start-up".into()))?
            .err()
            .unwrap_or_else(|| NodeError::Thread("exited during start-up".into()))),
    }
}

/// Runs a node until `shutdown` resolves, then stops it gracefully.
pub async fn run(settings: NodeSettings, shutdown: impl std::future::Future<Output = ()>) -> Result<(), NodeError> {
    let listen = settings.listen;
    let metrics_listen = settings.metrics_listen;
    let node = tokio::task::spawn_blocking(move || start(settings))
        .await
        .map_err(|error| NodeError::Thread(error.to_string()))??;
    info!(%listen, local = %node.local_addr, "node serving");
    let metrics = match metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address).await.map_err(|error| {
                NodeError::Socket(format!("cannot serve metrics on {address}: {error}; pick another --metrics-listen"))
            })?;
            info!(%address, "serving Prometheus metrics at /metrics");
            let sources = crate::node::metrics::Sources {
                snapshot: node.snapshot.clone(),
                lease_up: node.membership.as_ref().map(|membership| membership.lease_up.clone()),
                sync_latency: node.sync_latency.clone(),
                backend: node.backend.clone(),
                capacity_bytes: node.capacity_bytes,
                gc: node.gc.clone(),
                tagger: node.tagger.clone(),
            };
            Some(tokio::spawn(crate::node::metrics::serve(listener, sources)))
        }
        None => None,
    };
    shutdown.await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    info!("shutting down: finishing in-flight acks");
    tokio::task::spawn_blocking(move || node.stop()).await.map_err(|error| NodeError::Thread(error.to_string()))?
}

fn data_plane_thread(
    settings: NodeSettings,
    key: beeline_dataplane::wire::ClusterKey,
    shutdown: Arc<AtomicBool>,
    snapshot: SharedSnapshot,
    gc_state: Arc<GcState>,
    tagger_nudge: Option<std::sync::mpsc::SyncSender<()>>,
    ready: std::sync::mpsc::SyncSender<(SocketAddr, SyncLatency, EmbeddedMetadata)>,
) -> Result<(), NodeError> {
    // A DPDK node's arena is its mbuf pool, built inside the EAL; every other backend's is
    // an mmap. Declared before the poll loop so the port drops first, then the pool, then
    // the EAL.
    #[cfg(feature = "dpdk")]
    let mut dpdk_runtime = if settings.backend.kind() == crate::config::BackendKind::Dpdk {
        Some(
            crate::backend::dpdk::DpdkRuntime::start(&settings)
                .map_err(|error| NodeError::Socket(error.to_string()))?,
        )
    } else {
        None
    };
    #[cfg(feature = "dpdk")]
    let dpdk_layout = dpdk_runtime.as_ref().map(|runtime| runtime.layout());
    #[cfg(not(feature = "dpdk"))]
    let dpdk_layout: Option<crate::backend::DpdkLayout> = None;
    let mut memory = None;
    #[cfg(feature = "dpdk")]
    let dpdk_arena = match dpdk_runtime.as_mut() {
        Some(runtime) => Some(runtime.arena().map_err(|error| NodeError::Arena(error.to_string()))?),
        None => None,
    };
    #[cfg(not(feature = "dpdk"))]
    let dpdk_arena: Option<beeline_dataplane::arena::Arena<'_>> = None;
    let (mut arena, page_backing) = match dpdk_arena {
        Some(arena) => (arena, "dpdk-mempool"),
        None => mmap_arena(&settings, &mut memory)?,
    };
    let (backend, local_addr) =
        Backend::open(&settings, dpdk_layout, &mut arena).map_err(|error| NodeError::Socket(error.to_string()))?;
    let io = NodeIo::new(backend, open_shm(&settings, local_addr.port())?);
    let store_config = DiskStoreConfig {
        segment_bytes: settings.segment_bytes,
        capacity_bytes: settings.capacity_bytes,
        max_chunk_bytes: settings.chunk_bytes_max,
        max_puts_in_flight: settings.put_slots as usize,
        drop_written_pages: settings.drop_written_pages,
        direct_writes: settings.direct_writes,
        ..DiskStoreConfig::default()
    };
    let store = DiskStore::open(&settings.data_dir.join("chunks"), store_config)
        .map_err(|error| NodeError::Store(error.to_string()))?;
    info!(report = ?store.recovery_report(), "chunk store open");
    let metadata = EmbeddedMetadata::open(&settings.data_dir.join("metadata.redb"))?;
    let tagger_metadata = metadata.clone();
    let control = NodeControl {
        metadata,
        tagger_nudge,
        snapshot: snapshot.clone(),
        started: Instant::now(),
        listen: local_addr.to_string(),
        cluster: settings.cluster.is_some(),
        gc: gc_state.clone(),
        grace_ms: settings.gc_grace_ms,
        chunk_files: Vec::new(),
    };
    // A single node collects its own garbage in the background; a cluster node's pass is
    // run by its membership thread, against Redis.
    let auto_gc = (settings.cluster.is_none() && settings.gc_grace_ms > 0)
        .then_some(AutoGc { grace_ms: settings.gc_grace_ms, state: gc_state });
    let config = NodeConfig {
        key,
        allow: io.node_allowlist(&settings.allow),
        chunk_bytes_max: settings.chunk_bytes_max,
        window_fragments_max: settings.window_fragments,
        put_idle_timeout_ms: settings.put_idle_timeout_ms,
        fragment_bytes_cap: io.fragment_bytes_cap(),
        session_lifetime_ms: settings.session_lifetime_ms,
    };
    let mut slots = vec![PutSlot::default(); settings.put_slots as usize];
    let sessions = settings.sessions_max as usize;
    let mut session_slots: Vec<SessionSlot> = (0..sessions).map(|_| SessionSlot::default()).collect();
    let mut seen = vec![SeenRandom::default(); sessions * SEEN_PER_SESSION];
    // A fresh secret per process: a restart invalidates every cookie handed out before.
    let memory = SessionMemory { slots: &mut session_slots, seen: &mut seen, seed: rand::random() };
    let node = Node::new(config, store, control, &mut slots, memory);
    let mut poll = PollLoop::new(io, arena, node);
    info!(frames = settings.arena_frames, frame_bytes = settings.frame_bytes, page_backing, "arena ready");
    // Status asked for right after start-up already sees the backend and its counters.
    publish(&snapshot, &poll, page_backing);
    let _ = ready.send((local_addr, poll.node.store().sync_latency(), tagger_metadata));

    let scrub = scrub::ScrubPacer::new(settings.scrub_bytes_per_s, 0);
    serve_until_shutdown(&mut poll, &shutdown, &snapshot, page_backing, auto_gc, scrub)
}

/// The background garbage collection of a single node.
struct AutoGc {
    grace_ms: u64,
    state: Arc<GcState>,
}

impl AutoGc {
    /// A pass every quarter of the grace period (from 250 ms to a minute apart), so that
    /// garbage goes at most a quarter of it after it became old enough.
    fn interval_ms(&self) -> u64 {
        (self.grace_ms / 4).clamp(250, 60_000)
    }

    fn run<M: Metadata>(&self, poll: &mut PollLoop<'_, '_, NodeIo, DiskStore, NodeControl<M>>) {
        match poll.node.control_mut().referenced_files() {
            Ok(referenced) => {
                run_local_gc(poll.node.store_mut(), &referenced, self.grace_ms, false, false, &self.state);
            }
            Err(error) => warn!(%error, "garbage collection could not read the metadata; it will be retried"),
        }
    }
}

/// The poll loop with its idle back-off and housekeeping (snapshot, compaction), then a
/// graceful stop that acknowledges everything already going to disk.
fn serve_until_shutdown<M: Metadata>(
    poll: &mut PollLoop<'_, '_, NodeIo, DiskStore, NodeControl<M>>,
    shutdown: &AtomicBool,
    snapshot: &SharedSnapshot,
    page_backing: &str,
    auto_gc: Option<AutoGc>,
    mut scrub: scrub::ScrubPacer,
) -> Result<(), NodeError> {
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    // Idle waits grow to 20 ms: traffic wakes the backend's wait at once (ppoll on the
    // socket), so the cap only bounds housekeeping delay, and keeps an idle node at ~50
    // wake-ups per second instead of 1000.
    let mut backoff = Backoff::new(20_000);
    let mut last_publish_ms = 0;
    let mut last_compaction_ms = 0;
    let mut last_gc_ms = 0;
    let socket_error = |error| NodeError::Socket(format!("{error:?}"));
    while !shutdown.load(Ordering::Acquire) {
        let now = now_ms();
        let turn = poll.run_once(now).map_err(socket_error)?;
        // Between turns, busy or idle: the pacer bounds it to its rate in slices of at
        // most 1 MiB, so a busy node still scrubs and an idle one scrubs no faster.
        if let Some(budget) = scrub.due(now) {
            scrub_step(poll.node.store_mut(), &mut scrub, budget);
        }
        for peer in poll.io.take_departed() {
            poll.node.forget_peer(&peer);
        }
        if now >= last_publish_ms + 100 {
            publish(snapshot, poll, page_backing);
            last_publish_ms = now;
        }
        if !turn.idle() {
            backoff.reset();
            continue;
        }
        let wait_us = backoff.next_wait_us();
        if wait_us == 0 {
            continue;
        }
        // Reclaim space from deleted and replaced chunks while nothing else is going on.
        if now >= last_compaction_ms + 1000 && poll.node.puts_in_flight() == 0 {
            last_compaction_ms = now;
            match poll.node.store_mut().maybe_compact() {
                Ok(report) if report != Default::default() => info!(?report, "compacted the chunk store"),
                Ok(_) => {}
                Err(error) => warn!(%error, "compaction failed; it will be retried"),
            }
        }
        if let Some(auto_gc) = &auto_gc {
            if now >= last_gc_ms + auto_gc.interval_ms() {
                last_gc_ms = now;
                auto_gc.run(poll);
            }
        }
        if poll.node.store().pending_durable() > 0 {
            // A group commit is in flight: come back soon to send its acks.
            poll.node.store_mut().wait_durable(Duration::from_micros(u64::from(wait_us.min(200))));
        } else {
            poll.io.wait(wait_us);
        }
    }
    // Graceful stop: no new requests; acknowledge everything already going to disk.
    let deadline = Instant::now() + Duration::from_secs(10);
    while poll.node.store().pending_durable() > 0 && Instant::now() < deadline {
        poll.node.store_mut().wait_durable(Duration::from_millis(10));
        poll.finish_acks().map_err(socket_error)?;
    }
    poll.finish_acks().map_err(socket_error)?;
    publish(snapshot, poll, page_backing);
    info!("node stopped");
    Ok(())
}

/// One slice of the background scrub, with what it found logged.
fn scrub_step(store: &mut DiskStore, pacer: &mut scrub::ScrubPacer, budget: u64) {
    let step = store.scrub_step(budget);
    pacer.spent(step.bytes_read);
    if let Some(id) = step.found_corrupt {
        warn!(
            chunk = format!("{id:032x}"),
            "scrub: a stored chunk failed its checksum; it is marked and every read of it answers corrupt. In a cluster, `beeline cluster scrub` then `beeline cluster repair` replace it from a good copy; a single node has no other copy: put the file again"
        );
    }
    if let Some(id) = step.unreadable {
        warn!(
            chunk = format!("{id:032x}"),
            "scrub: could not read a stored chunk; check the disk and the kernel log (dmesg)"
        );
    }
    if step.pass_completed {
        let stats = store.integrity_stats();
        info!(passes = stats.scrub_passes, chunks_corrupt = stats.chunks_corrupt, "scrub: pass completed");
    }
}

/// The shared-memory server, unless `shm = false`. A node that cannot create the default
/// socket (not run as root) serves UDP only and says so; an explicit `shm_socket` that
/// fails stops the start.
fn open_shm(settings: &NodeSettings, port: u16) -> Result<Option<ShmServer>, NodeError> {
    let Some(shm) = &settings.shm else { return Ok(None) };
    let socket = if shm.default_socket { crate::shm::default_socket_path(port) } else { shm.socket.clone() };
    let server = ShmServer::bind(ShmSettings {
        socket,
        socket_mode: shm.socket_mode,
        clients_max: shm.clients_max,
        ring_slots: shm.ring_slots,
        frame_bytes: settings.frame_bytes,
        bulk_slots: crate::shm::BULK_SLOTS,
        bulk_slot_bytes: settings.chunk_bytes_max.next_multiple_of(4096),
        prefer_hugepages: settings.hugepages != HugepagePolicy::Off,
        node_port: port,
    });
    match server {
        Ok(server) => Ok(Some(server)),
        Err(error) if shm.default_socket => {
            warn!(%error, "local clients will use UDP");
            Ok(None)
        }
        Err(error) => Err(NodeError::Socket(error.to_string())),
    }
}

/// The arena of every backend but DPDK: an mmap, on hugepages as the policy allows.
fn mmap_arena<'m>(
    settings: &NodeSettings,
    memory: &'m mut Option<ArenaMemory>,
) -> Result<(beeline_dataplane::arena::Arena<'m>, &'static str), NodeError> {
    let policy = match settings.hugepages {
        HugepagePolicy::Prefer => PagePolicy::PreferHuge,
        HugepagePolicy::Require => PagePolicy::Huge,
        HugepagePolicy::Off => PagePolicy::Normal,
    };
    let allocated = ArenaMemory::allocate(settings.arena_frames, settings.frame_bytes as usize, policy)
        .map_err(|error| NodeError::Arena(error.to_string()))?;
    if let Some(warning) = allocated.fallback_warning() {
        warn!("{warning}");
    }
    let page_backing = match allocated.backing() {
        PageBacking::Huge2M => "hugepages-2M",
        PageBacking::Normal => "normal-4K",
    };
    Ok((memory.insert(allocated).arena(), page_backing))
}

fn publish<C: ControlHandler<DiskStore>>(
    snapshot: &SharedSnapshot,
    poll: &PollLoop<'_, '_, NodeIo, DiskStore, C>,
    page_backing: &str,
) {
    let Ok(mut snapshot) = snapshot.lock() else { return };
    snapshot.counters = *poll.node.counters();
    snapshot.arena_frames = poll.arena.frame_count();
    snapshot.arena_frames_free = poll.arena.free_frames() as u32;
    snapshot.puts_in_flight = poll.node.puts_in_flight() as u32;
    snapshot.sessions_active = poll.node.sessions_active() as u32;
    snapshot.used_bytes = poll.node.store().used_bytes();
    snapshot.chunks = poll.node.store().chunk_count() as u64;
    snapshot.integrity = poll.node.store().integrity_stats();
    snapshot.writes = poll.node.store().write_stats();
    snapshot.page_backing = page_backing.to_owned();
    snapshot.backend = poll.io.describe();
    snapshot.backend_counters = poll.io.counters();
}
