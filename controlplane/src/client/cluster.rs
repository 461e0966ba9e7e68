//! The client side of a replicated cluster: the namespace and membership come from the
//! Redis metadata cluster, chunks go to the nodes rendezvous hashing picks. `put` writes
//! every replica of a chunk in parallel and records the file only when every chunk has
//! its full set of replicas; `get` reads each chunk from a live replica and fails over to
//! the next on timeout; `repair` restores the replication factor after nodes leave.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use beeline_dataplane::client::Timing;
use beeline_dataplane::wire::ClusterKey;

use crate::client::file::fill_chunk;
use crate::client::{Client, ClientError, ClientOptions};
use crate::cluster::{BadReplica, FileLayout, Member, MemberState, NodeRecord, RedisMetadata, now_unix_ms};
use crate::control::{FileRecord, chunk_id, validate_name};
use crate::metadata::{Metadata, MetadataError};

use crate::cluster::placement::{NodeId, rank};

mod chunks;
mod gc;

/// How often a put whose reader has no bytes yet refreshes its registration meanwhile (the
/// garbage collector claims puts not refreshed for its grace period, a minute or more).
const PUT_TOUCH_WHILE_WAITING: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a put waits before it asks such a reader again (a write-behind's spool has
/// waited for its writer already).
const READER_IDLE: std::time::Duration = std::time::Duration::from_millis(5);

pub use gc::{ClusterGcReport, GcOptions};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("no file named {0:?} in the cluster: `beeline ls` lists the files")]
    NotFound(String),
    #[error(
        "only {live} live node(s) for a replication factor of {replicas}: start more nodes, or lower it with `beeline cluster configure --replication-factor`"
    )]
    TooFewNodes { live: usize, replicas: usize },
    #[error(
        "chunk {index} of {name} could be stored on only {stored} of {replicas} nodes ({reason}); nothing was recorded, retry when the nodes are back"
    )]
    WriteQuorum { name: String, index: u64, stored: usize, replicas: usize, reason: String },
    #[error(
        "chunk {index} of {name} is unavailable: every replica ({nodes}) is down or lost it; restart one of those nodes"
    )]
    ChunkUnavailable { name: String, index: u64, nodes: String },
    #[error(
        "chunk {index} of {name} has no good copy left: {copies}; restart any node that is down and retry, else the chunk is lost"
    )]
    ChunkCorrupt { name: String, index: u64, copies: String },
    #[error(
        "{name} came back with different content than was stored (BLAKE3 mismatch); run `beeline cluster scrub` to find the bad copy"
    )]
    Corrupt { name: String },
    #[error("{path}: {source}")]
    LocalIo { path: String, source: std::io::Error },
    #[error("{0}")]
    BadName(String),
    #[error(
        "the put of {name} stalled longer than the cluster's garbage-collection grace period and its chunks were reclaimed; nothing was recorded, put it again"
    )]
    PutReclaimed { name: String },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// How healthy the cluster's replication is.
#[derive(Debug, Clone, Default)]
pub struct ReplicationHealth {
    pub files: u64,
    pub chunks: u64,
    /// Chunks with fewer live replicas than the replication factor (but at least one).
    pub under_replicated: u64,
    /// Chunks with no good live replica at all, by `file#index (why)`.
    pub unavailable: Vec<String>,
    /// Listed copies known bad (did not match the chunk's hash, or their node lost them).
    pub bad_replicas: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    pub chunks_checked: u64,
    pub replicas_added: u64,
    /// Of `replicas_added`, those that replaced a bad copy.
    pub bad_replaced: u64,
    pub files_updated: u64,
    /// Chunks no replica has a good copy of, by `file#index (nodes)`.
    pub lost: Vec<String>,
    /// Chunks that could not be repaired this pass (source or target unreachable).
    pub failed: Vec<String>,
    /// Copies found bad by this pass (and marked so in the metadata).
    pub found_bad: Vec<BadReplica>,
}

#[derive(Debug, Clone, Default)]
pub struct ScrubReport {
    pub files: u64,
    pub chunks: u64,
    /// Copies read back and checked, and their bytes.
    pub copies_checked: u64,
    pub bytes_checked: u64,
    /// Bad copies found (and marked), as `file#index corrupt|missing on NODE`.
    pub bad: Vec<String>,
    /// Copies on live nodes that did not answer.
    pub unreadable: u64,
    /// Files stored before chunk hashes were recorded: not checked.
    pub files_without_chunk_hashes: u64,
}

/// A chunk to store: its position in the batch, its id and its bytes.
type PutItem = (usize, u128, Arc<[u8]>);
/// Chunks bound for each node.
type PutWork = BTreeMap<NodeId, Vec<(u128, Arc<[u8]>)>>;

pub struct ClusterClient {
    metadata: RedisMetadata,
    key: ClusterKey,
    timing: Timing,
    fragment_bytes: Option<u16>,
    clients: HashMap<NodeId, Client>,
    live: Vec<NodeRecord>,
    replicas: usize,
    /// Chunks per batch: read, placed and written together.
    pub parallel_chunks: usize,
    pub chunk_bytes: u32,
    /// Said by `take_warnings`.
    warnings: Vec<String>,
}

fn resolve(address: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    address.to_socket_addrs().ok()?.next()
}

impl ClusterClient {
    pub fn connect(
        url: &str,
        prefix: &str,
        key: ClusterKey,
        fragment_bytes: Option<u16>,
    ) -> Result<Self, ClusterError> {
        let mut metadata = RedisMetadata::connect(url, prefix)?;
        let replicas = metadata.replication_factor()?;
        let mut client = Self {
            metadata,
            key,
            // Fail over quickly: five timeouts, about 1.2 s, before trying the next replica.
            timing: Timing { rto_initial_ms: 40, rto_max_ms: 640, timeouts_max: 5 },
            fragment_bytes,
            clients: HashMap::new(),
            live: Vec::new(),
            replicas,
            parallel_chunks: 4,
            chunk_bytes: 4 << 20,
            warnings: Vec::new(),
        };
        client.refresh()?;
        Ok(client)
    }

    pub fn metadata(&mut self) -> &mut RedisMetadata {
        &mut self.metadata
    }

    pub fn replication_factor(&self) -> usize {
        self.replicas
    }

    /// Re-reads the live membership and the replication factor.
    pub fn refresh(&mut self) -> Result<(), ClusterError> {
        self.live = self.metadata.live_nodes()?;
        self.replicas = self.metadata.replication_factor()?;
        Ok(())
    }

    fn live_ids(&self) -> Vec<NodeId> {
        self.live.iter().map(|node| node.id).collect()
    }

    fn take_client(&mut self, node: NodeId) -> Result<Client, ClientError> {
        if let Some(client) = self.clients.remove(&node) {
            return Ok(client);
        }
        let record = self.live.iter().find(|record| record.id == node);
        let address = record.and_then(|record| resolve(&record.address)).ok_or_else(|| ClientError::Failed {
            node: "0.0.0.0:0".parse().expect("constant"),
            reason: format!("node {node:016x} has no usable address"),
        })?;
        let mut options = ClientOptions::new(address, self.key.clone());
        options.timing = self.timing;
        options.fragment_bytes = self.fragment_bytes;
        Client::new(options)
    }

    /// Runs one batch of per-node work on every node in parallel (one thread per node).
    fn per_node<T: Send, R: Send>(
        &mut self,
        work: BTreeMap<NodeId, Vec<T>>,
        run: impl Fn(&mut Client, &[T]) -> Vec<R> + Sync,
    ) -> BTreeMap<NodeId, Vec<R>> {
        let mut taken: Vec<(NodeId, Result<Client, ClientError>, Vec<T>)> =
            work.into_iter().map(|(node, items)| (node, self.take_client(node), items)).collect();
        let results: Vec<(NodeId, Option<Client>, Vec<R>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = taken
                .drain(..)
                .map(|(node, client, items)| {
                    let run = &run;
                    scope.spawn(move || match client {
                        Ok(mut client) => {
                            let results = run(&mut client, &items);
                            (node, Some(client), results)
                        }
                        Err(_) => (node, None, Vec::new()),
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().expect("per-node worker panicked")).collect()
        });
        let mut out = BTreeMap::new();
        for (node, client, node_results) in results {
            if let Some(client) = client {
                self.clients.insert(node, client);
            }
            out.insert(node, node_results);
        }
        out
    }

    /// Stores `chunks` with `replicas` copies each, trying further nodes in rank order when
    /// one fails; returns where each chunk landed.
    fn store_chunks(
        &mut self,
        name: &str,
        first_index: u64,
        chunks: &[(u128, Arc<[u8]>)],
    ) -> Result<Vec<Vec<NodeId>>, ClusterError> {
        let live = self.live_ids();
        if live.len() < self.replicas {
            return Err(ClusterError::TooFewNodes { live: live.len(), replicas: self.replicas });
        }
        let rankings: Vec<Vec<NodeId>> = chunks.iter().map(|(id, _)| rank(*id, &live)).collect();
        let mut stored: Vec<Vec<NodeId>> = vec![Vec::new(); chunks.len()];
        let mut next_candidate: Vec<usize> = vec![self.replicas; chunks.len()];
        let mut failed_nodes: HashSet<NodeId> = HashSet::new();
        let mut last_error: Vec<String> = vec![String::new(); chunks.len()];
        let mut pending: Vec<(usize, NodeId)> = Vec::new();
        for (index, ranking) in rankings.iter().enumerate() {
            pending.extend(ranking.iter().take(self.replicas).map(|node| (index, *node)));
        }
        // Bounded: every round either stores or moves each pending chunk to a new node.
        while !pending.is_empty() {
            let mut work: BTreeMap<NodeId, Vec<PutItem>> = BTreeMap::new();
            for (index, node) in pending.drain(..) {
                work.entry(node).or_default().push((index, chunks[index].0, chunks[index].1.clone()));
            }
            let jobs = work;
            let results = self.per_node(jobs.clone(), |client, items| {
                let batch: Vec<(u128, Arc<[u8]>)> = items.iter().map(|(_, id, data)| (*id, data.clone())).collect();
                client.put_chunks(&batch)
            });
            for (node, items) in jobs {
                let node_results = results.get(&node).map(Vec::as_slice).unwrap_or(&[]);
                for (position, (index, _, _)) in items.iter().enumerate() {
                    match node_results.get(position) {
                        Some(Ok(())) => stored[*index].push(node),
                        outcome => {
                            failed_nodes.insert(node);
                            last_error[*index] = match outcome {
                                Some(Err(error)) => error.to_string(),
                                _ => format!("node {node:016x} is unreachable"),
                            };
                            // The next node in this chunk's ranking that has not failed.
                            while next_candidate[*index] < rankings[*index].len() {
                                let candidate = rankings[*index][next_candidate[*index]];
                                next_candidate[*index] += 1;
                                if !failed_nodes.contains(&candidate) && !stored[*index].contains(&candidate) {
                                    pending.push((*index, candidate));
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
        for (index, nodes) in stored.iter().enumerate() {
            if nodes.len() < self.replicas {
                return Err(ClusterError::WriteQuorum {
                    name: name.to_owned(),
                    index: first_index + index as u64,
                    stored: nodes.len(),
                    replicas: self.replicas,
                    reason: last_error[index].clone(),
                });
            }
        }
        Ok(stored)
    }

    /// Stores everything `reader` yields as file `name`, batch by batch. `on_progress` is
    /// told the bytes from the start of the file stored durable on every replica so far.
    pub fn put_reader(
        &mut self,
        name: &str,
        reader: &mut dyn Read,
        source: &str,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<FileLayout, ClusterError> {
        validate_name(name).map_err(ClusterError::BadName)?;
        self.refresh()?;
        let file_id = rand::random::<u64>() | 1;
        // Before any chunk exists: garbage collection leaves a registered put alone while
        // it is refreshed (after every batch), and a put it claimed can never commit.
        self.metadata.register_put(file_id)?;
        let mut hasher = blake3::Hasher::new();
        let mut replicas: Vec<Vec<NodeId>> = Vec::new();
        let mut chunk_blake3: Vec<[u8; 32]> = Vec::new();
        let mut size_bytes = 0u64;
        let mut index = 0u64;
        let mut eof = false;
        // When the put's registration was last refreshed while its reader had no bytes.
        let mut touched = std::time::Instant::now();
        while !eof {
            let mut batch: Vec<(u128, Arc<[u8]>)> = Vec::with_capacity(self.parallel_chunks);
            while batch.len() < self.parallel_chunks.max(1) {
                let mut buffer = Vec::new();
                // A reader with no bytes yet (a file still being written, read by a
                // write-behind) is waited for; meanwhile the put stays registered, so that
                // garbage collection leaves it alone.
                let on_would_block = || -> Result<(), ClusterError> {
                    std::thread::sleep(READER_IDLE);
                    if touched.elapsed() >= PUT_TOUCH_WHILE_WAITING {
                        if !self.metadata.touch_put(file_id)? {
                            return Err(ClusterError::PutReclaimed { name: name.to_owned() });
                        }
                        touched = std::time::Instant::now();
                    }
                    Ok(())
                };
                let read_error = |error| ClusterError::LocalIo { path: source.to_owned(), source: error };
                fill_chunk(reader, &mut buffer, self.chunk_bytes as usize, on_would_block, read_error)?;
                if buffer.len() < self.chunk_bytes as usize {
                    eof = true;
                }
                if buffer.is_empty() {
                    break;
                }
                hasher.update(&buffer);
                chunk_blake3.push(*blake3::hash(&buffer).as_bytes());
                size_bytes += buffer.len() as u64;
                batch.push((chunk_id(file_id, index + batch.len() as u64), Arc::from(buffer)));
                if eof {
                    break;
                }
            }
            if batch.is_empty() {
                break;
            }
            let placed = self.store_chunks(name, index, &batch)?;
            if !self.metadata.touch_put(file_id)? {
                return Err(ClusterError::PutReclaimed { name: name.to_owned() });
            }
            index += batch.len() as u64;
            replicas.extend(placed);
            on_progress(size_bytes);
        }
        let record = FileRecord {
            name: name.to_owned(),
            file_id,
            size_bytes,
            chunk_bytes: self.chunk_bytes,
            blake3: *hasher.finalize().as_bytes(),
            created_unix_ms: now_unix_ms(),
        };
        let layout = FileLayout { record, replicas, chunk_blake3 };
        // Only now, with every replica acknowledged durable, does the file exist.
        let replaced =
            self.metadata.commit_put(&layout)?.map_err(|()| ClusterError::PutReclaimed { name: name.to_owned() })?;
        if let Some(old) = replaced {
            if old.record.file_id != layout.record.file_id {
                self.delete_chunks_of(&old);
            }
        }
        Ok(layout)
    }

    pub fn layout(&mut self, name: &str) -> Result<FileLayout, ClusterError> {
        self.metadata.get_layout(name)?.ok_or_else(|| ClusterError::NotFound(name.to_owned()))
    }

    // Long on purpose: one streaming loop (fetch chunks from a live replica, verify each, fail over, write in order) whose local state every step shares.
    /// Writes file `name` to `writer` in order. Each chunk is checked against its hash
    /// (when the layout records chunk hashes) before any of its bytes are written; a
    /// copy that does not match, or a node that no longer has it, is marked bad in the
    /// metadata (see [`ClusterClient::take_warnings`]) and the next replica is asked. The
    /// whole-file hash is checked at the end as well.
    pub fn get_writer(
        &mut self,
        name: &str,
        writer: &mut dyn Write,
        destination: &str,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<FileLayout, ClusterError> {
        self.refresh()?;
        let layout = self.layout(name)?;
        let record = &layout.record;
        let live: HashSet<NodeId> = self.live_ids().into_iter().collect();
        // Copies already known bad are asked last, in case every other one is gone too.
        let known_bad: HashSet<(u64, NodeId)> = self
            .metadata
            .bad_replicas()
            .map(|bad| bad.into_iter().filter(|b| b.file_id == record.file_id).map(|b| (b.index, b.node)).collect())
            .unwrap_or_default();
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        let chunk_count = record.chunk_count();
        let mut start = 0u64;
        while start < chunk_count {
            let end = (start + self.parallel_chunks.max(1) as u64).min(chunk_count);
            // Candidates per chunk: live replicas in recorded order, known-bad ones last.
            let candidates: Vec<Vec<NodeId>> = (start..end)
                .map(|index| {
                    let recorded = layout.replicas.get(index as usize).cloned().unwrap_or_default();
                    let (mut good, bad): (Vec<NodeId>, Vec<NodeId>) = recorded
                        .into_iter()
                        .filter(|node| live.contains(node))
                        .partition(|node| !known_bad.contains(&(index, *node)));
                    good.extend(bad);
                    good
                })
                .collect();
            let chunks::VerifiedChunks { data, found_bad, new_bad, failure } =
                self.read_verified(&layout, start, candidates);
            self.note_bad(name, &new_bad, &found_bad, start, &data);
            // Verified chunks go out in order, up to the first one that has no good copy.
            for bytes in data.into_iter().map_while(|bytes| bytes) {
                hasher.update(&bytes);
                writer
                    .write_all(&bytes)
                    .map_err(|source| ClusterError::LocalIo { path: destination.to_owned(), source })?;
                written += bytes.len() as u64;
            }
            if let Some(failure) = failure {
                let _ = writer.flush();
                return Err(failure);
            }
            on_progress(written);
            start = end;
        }
        writer.flush().map_err(|source| ClusterError::LocalIo { path: destination.to_owned(), source })?;
        if *hasher.finalize().as_bytes() != layout.record.blake3 {
            return Err(ClusterError::Corrupt { name: name.to_owned() });
        }
        Ok(layout)
    }

    /// Why chunk `index` could not be read: no good copy among the ones that answered,
    /// or every replica down.
    fn no_good_copy(&self, layout: &FileLayout, index: u64, bad: &[(NodeId, &'static str)]) -> ClusterError {
        let recorded = layout.replicas.get(index as usize).cloned().unwrap_or_default();
        let name = layout.record.name.clone();
        if bad.is_empty() {
            let nodes = recorded.iter().map(|n| format!("{n:016x}")).collect::<Vec<_>>().join(", ");
            return ClusterError::ChunkUnavailable { name, index, nodes };
        }
        let mut copies: Vec<String> = bad.iter().map(|(node, what)| format!("{what} on {node:016x}")).collect();
        copies.extend(
            recorded.iter().filter(|node| !bad.iter().any(|(b, _)| b == *node)).map(|node| format!("{node:016x} down")),
        );
        ClusterError::ChunkCorrupt { name, index, copies: copies.join(", ") }
    }

    /// Records the copies a get found bad, and says which ones, for the caller to show.
    fn note_bad(
        &mut self,
        name: &str,
        new_bad: &[BadReplica],
        found_bad: &[Vec<(NodeId, &'static str)>],
        start: u64,
        data: &[Option<Vec<u8>>],
    ) {
        if new_bad.is_empty() {
            return;
        }
        let recorded = self.metadata.mark_bad(new_bad);
        for (offset, bad) in found_bad.iter().enumerate() {
            let served = if data[offset].is_some() { "read it from another replica" } else { "no other copy answered" };
            for (node, what) in bad {
                self.warnings.push(format!(
                    "chunk {} of {name} is {what} on node {node:016x} ({served}); `beeline cluster repair` replaces that copy",
                    start + offset as u64
                ));
            }
        }
        if let Err(error) = recorded {
            self.warnings.push(format!("could not record the bad copies in the metadata: {error}"));
        }
    }

    /// What the last operations found that the user should know (bad copies read around).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Best-effort removal of a file's chunks from the live nodes holding them; chunks on
    /// nodes that are down stay as orphaned space on those nodes.
    fn delete_chunks_of(&mut self, layout: &FileLayout) {
        let live: HashSet<NodeId> = self.live_ids().into_iter().collect();
        let mut work: BTreeMap<NodeId, Vec<u128>> = BTreeMap::new();
        for (index, nodes) in layout.replicas.iter().enumerate().take(layout.record.chunk_count() as usize) {
            for node in nodes.iter().filter(|node| live.contains(node)) {
                work.entry(*node).or_default().push(layout.record.chunk_id(index as u64));
            }
        }
        let _ = self.per_node(work, |client, ids| client.delete_chunks(ids));
        // Its bad-copy marks mean nothing any more (best effort: they are ignored anyway).
        let file_id = layout.record.file_id;
        if let Ok(bad) = self.metadata.bad_replicas() {
            let stale: Vec<BadReplica> = bad.into_iter().filter(|mark| mark.file_id == file_id).collect();
            let _ = self.metadata.clear_bad(&stale);
        }
    }

    pub fn remove(&mut self, name: &str) -> Result<FileLayout, ClusterError> {
        self.refresh()?;
        let Some(layout) = self.metadata.remove_layout(name)? else {
            return Err(ClusterError::NotFound(name.to_owned()));
        };
        self.delete_chunks_of(&layout);
        Ok(layout)
    }

    pub fn list(&mut self) -> Result<Vec<FileRecord>, ClusterError> {
        let mut files = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.metadata.list(after.as_deref(), 500)?;
            let done = page.len() < 500;
            after = page.last().map(|record| record.name.clone());
            files.extend(page);
            if done {
                return Ok(files);
            }
        }
    }

    pub fn members(&mut self) -> Result<Vec<Member>, ClusterError> {
        Ok(self.metadata.members()?)
    }

    /// Counts chunks by how many good live replicas they have: a copy marked bad (by a
    /// get or a repair that read it) does not count.
    pub fn health(&mut self) -> Result<ReplicationHealth, ClusterError> {
        self.refresh()?;
        let live: HashSet<NodeId> = self.live_ids().into_iter().collect();
        let bad = self.metadata.bad_replicas()?;
        let mut health = ReplicationHealth::default();
        for record in self.list()? {
            let Some(layout) = self.metadata.get_layout(&record.name)? else { continue };
            health.files += 1;
            for (index, nodes) in layout.replicas.iter().enumerate().take(layout.record.chunk_count() as usize) {
                health.chunks += 1;
                let is_bad = |node: &NodeId| {
                    bad.contains(&BadReplica { file_id: record.file_id, index: index as u64, node: *node })
                };
                let corrupt = nodes.iter().filter(|node| is_bad(node)).count();
                health.bad_replicas += corrupt as u64;
                let up = nodes.iter().filter(|node| live.contains(node) && !is_bad(node)).count();
                if up == 0 {
                    let why = if corrupt == nodes.len() { "no good copy" } else { "no good copy on a live node" };
                    health.unavailable.push(format!("{}#{index} ({why})", record.name));
                } else if up < self.replicas {
                    health.under_replicated += 1;
                }
            }
        }
        Ok(health)
    }

    /// Restores the replication factor of every chunk that needs it (a replica down,
    /// marked bad, or too few), always from a copy whose bytes were read back and matched
    /// the chunk's hash. The copies on live nodes are verified first; a copy that does not
    /// match, or that its node no longer has, is replaced (deleted there, then written
    /// again from the verified copy, on that node or the next in the chunk's ranking).
    /// A replica list never loses a node unless at least `replication_factor` verified
    /// copies remain without it: while there are fewer, nodes that are down stay listed,
    /// since they may hold the only good copy.
    pub fn repair(&mut self) -> Result<RepairReport, ClusterError> {
        self.refresh()?;
        let live_ids = self.live_ids();
        let live: HashSet<NodeId> = live_ids.iter().copied().collect();
        let bad = self.metadata.bad_replicas()?;
        let mut report = RepairReport::default();
        for record in self.list()? {
            let Some(layout) = self.metadata.get_layout(&record.name)? else { continue };
            let mut updated = layout.clone();
            let mut settled: Vec<BadReplica> = Vec::new();
            let first_found = report.found_bad.len();
            for (index, nodes) in layout.replicas.iter().enumerate().take(layout.record.chunk_count() as usize) {
                report.chunks_checked += 1;
                let index = index as u64;
                let marked: Vec<NodeId> = nodes
                    .iter()
                    .copied()
                    .filter(|node| bad.contains(&BadReplica { file_id: record.file_id, index, node: *node }))
                    .collect();
                let readable: Vec<NodeId> =
                    nodes.iter().copied().filter(|node| live.contains(node) && !marked.contains(node)).collect();
                let complete = readable.len() == nodes.len() && readable.len() >= self.replicas.min(live_ids.len());
                // Nothing to do, or nothing that could be done: a list is never shortened
                // without somewhere to put the copies it would lose.
                let chunk = record.chunk_id(index);
                let room = rank(chunk, &live_ids).iter().any(|node| !readable.contains(node));
                if complete || (marked.is_empty() && !room && readable.len() < self.replicas) {
                    continue;
                }
                let outcome = self.repair_chunk(&layout, index, nodes, (&readable, &marked), &live_ids, &mut report);
                if let Some(replicas) = outcome {
                    settled.extend(nodes.iter().chain(&replicas).map(|node| BadReplica {
                        file_id: record.file_id,
                        index,
                        node: *node,
                    }));
                    updated.replicas[index as usize] = replicas;
                }
            }
            // Only if nobody changed the file meanwhile; otherwise the next pass sees it.
            let changed = updated != layout;
            if changed && !self.metadata.swap_layout(&layout, &updated)? {
                continue;
            }
            if changed {
                report.files_updated += 1;
                let found_bad = &report.found_bad[first_found..];
                // The bad copies no longer listed are garbage now: free their space.
                let mut work: BTreeMap<NodeId, Vec<u128>> = BTreeMap::new();
                for (index, (old, new)) in layout.replicas.iter().zip(&updated.replicas).enumerate() {
                    for node in old.iter().filter(|node| !new.contains(node) && live.contains(node)) {
                        let mark = BadReplica { file_id: record.file_id, index: index as u64, node: *node };
                        if bad.contains(&mark) || found_bad.contains(&mark) {
                            work.entry(*node).or_default().push(record.chunk_id(index as u64));
                        }
                    }
                }
                let _ = self.per_node(work, |client, ids| client.delete_chunks(ids));
            }
            self.metadata.clear_bad(&settled)?;
        }
        Ok(report)
    }

    /// Reads every copy of every chunk on the live nodes listed for it and checks it
    /// against the chunk's hash; marks the copies that do not match, or that their node
    /// no longer has, as bad (so that `health` counts them and `repair` replaces them).
    /// Files stored before chunk hashes were recorded cannot be checked copy by copy and
    /// are only counted.
    pub fn scrub(&mut self) -> Result<ScrubReport, ClusterError> {
        self.refresh()?;
        let live: HashSet<NodeId> = self.live_ids().into_iter().collect();
        let mut report = ScrubReport::default();
        for record in self.list()? {
            let Some(layout) = self.metadata.get_layout(&record.name)? else { continue };
            report.files += 1;
            if layout.chunk_blake3.is_empty() && record.size_bytes > 0 {
                report.files_without_chunk_hashes += 1;
                continue;
            }
            let chunk_count = record.chunk_count();
            let mut start = 0u64;
            while start < chunk_count {
                let end = (start + self.parallel_chunks.max(1) as u64).min(chunk_count);
                let mut work: BTreeMap<NodeId, Vec<(u64, u128, u32)>> = BTreeMap::new();
                for index in start..end {
                    report.chunks += 1;
                    let nodes = layout.replicas.get(index as usize).map(Vec::as_slice).unwrap_or(&[]);
                    for node in nodes.iter().filter(|node| live.contains(node)) {
                        work.entry(*node).or_default().push((index, record.chunk_id(index), record.chunk_len(index)));
                    }
                }
                let results = self.per_node(work.clone(), |client, items| {
                    let wants: Vec<(u128, u32)> = items.iter().map(|(_, id, len)| (*id, *len)).collect();
                    client.get_chunks(&wants)
                });
                let mut bad = Vec::new();
                for (node, items) in work {
                    let mut node_results = results.get(&node).map(|results| results.iter()).into_iter().flatten();
                    for (index, _, _) in items {
                        let what = match node_results.next() {
                            Some(Ok(bytes)) => {
                                report.copies_checked += 1;
                                report.bytes_checked += bytes.len() as u64;
                                match layout.chunk_hash(index) {
                                    Some(hash) if blake3::hash(bytes).as_bytes() != hash => "corrupt",
                                    _ => continue,
                                }
                            }
                            Some(Err(error)) if is_not_found(error) => "missing",
                            Some(Err(error)) if is_corrupt_copy(error) => "corrupt",
                            _ => {
                                report.unreadable += 1;
                                continue;
                            }
                        };
                        report.bad.push(format!("{}#{index} {what} on {node:016x}", record.name));
                        bad.push(BadReplica { file_id: record.file_id, index, node });
                    }
                }
                self.metadata.mark_bad(&bad)?;
                start = end;
            }
        }
        Ok(report)
    }

    /// Repairs chunk `index`: verifies its `readable` copies, then writes the verified
    /// bytes to as many nodes as it takes to reach the replication factor. Returns the new
    /// replica list, or `None` when it must stay as it is (no verified copy).
    fn repair_chunk(
        &mut self,
        layout: &FileLayout,
        index: u64,
        nodes: &[NodeId],
        (readable, marked): (&[NodeId], &[NodeId]),
        live_ids: &[NodeId],
        report: &mut RepairReport,
    ) -> Option<Vec<NodeId>> {
        let record = &layout.record;
        let label = format!("{}#{index}", record.name);
        let chunk = record.chunk_id(index);
        let len = record.chunk_len(index);
        let work: BTreeMap<NodeId, Vec<(u128, u32)>> =
            readable.iter().map(|node| (*node, vec![(chunk, len)])).collect();
        let fetched = self.per_node(work, |client, wants| client.get_chunks(wants));
        let mut verified: Vec<NodeId> = Vec::new();
        let mut source: Option<Arc<[u8]>> = None;
        let mut found_bad: Vec<NodeId> = marked.to_vec();
        let mut unknown: Vec<NodeId> = Vec::new();
        for node in readable {
            match fetched.get(node).and_then(|results| results.first()) {
                Some(Ok(bytes))
                    if layout.chunk_hash(index).is_none_or(|hash| blake3::hash(bytes).as_bytes() == hash) =>
                {
                    verified.push(*node);
                    source.get_or_insert_with(|| Arc::from(bytes.as_slice()));
                }
                Some(Ok(_)) => found_bad.push(*node),
                Some(Err(error)) if is_not_found(error) || is_corrupt_copy(error) => found_bad.push(*node),
                _ => unknown.push(*node),
            }
        }
        let newly_bad: Vec<BadReplica> = found_bad
            .iter()
            .filter(|node| !marked.contains(node))
            .map(|node| BadReplica { file_id: record.file_id, index, node: *node })
            .collect();
        if let Err(error) = self.metadata.mark_bad(&newly_bad) {
            report.failed.push(format!("{label}: could not record its bad copies: {error}"));
        }
        report.found_bad.extend(newly_bad);
        // Listed nodes that may still hold a good copy: down, or did not answer.
        unknown.extend(nodes.iter().filter(|node| !readable.contains(node) && !marked.contains(node)));
        let show = |nodes: &[NodeId]| nodes.iter().map(|n| format!("{n:016x}")).collect::<Vec<_>>().join(", ");
        let Some(source) = source else {
            if readable.is_empty() && marked.is_empty() {
                report.lost.push(format!("{label} (was on {}, none of them live)", show(nodes)));
            } else if unknown.is_empty() {
                report.lost.push(format!("{label} (corrupt or missing on {})", show(&found_bad)));
            } else {
                let bad = if found_bad.is_empty() { String::new() } else { format!("bad on {}; ", show(&found_bad)) };
                report.failed.push(format!(
                    "{label}: no verified copy on a live node ({bad}{} down or not answering): bring it back and repair again",
                    show(&unknown)
                ));
            }
            return None;
        };
        let targets: Vec<NodeId> = rank(chunk, live_ids)
            .into_iter()
            .filter(|node| !verified.contains(node))
            .take(self.replicas.saturating_sub(verified.len()))
            .collect();
        let mut replicas = verified.clone();
        if !targets.is_empty() {
            // Chunk ids are write-once on a node: a bad copy must go before the good one
            // can be written. Deleting where there is none does nothing.
            let deletes: BTreeMap<NodeId, Vec<u128>> = targets.iter().map(|node| (*node, vec![chunk])).collect();
            let deleted = self.per_node(deletes, |client, ids| client.delete_chunks(ids));
            let work: PutWork = targets
                .iter()
                .filter(|node| matches!(deleted.get(node).and_then(|r| r.first()), Some(Ok(()))))
                .map(|node| (*node, vec![(chunk, source.clone())]))
                .collect();
            let results = self.per_node(work, |client, items| client.put_chunks(items));
            for target in &targets {
                if matches!(results.get(target).and_then(|r| r.first()), Some(Ok(()))) {
                    replicas.push(*target);
                    report.replicas_added += 1;
                    if found_bad.contains(target) {
                        report.bad_replaced += 1;
                    }
                } else {
                    report.failed.push(format!("{label}: could not copy it to {target:016x}"));
                }
            }
        }
        // Fewer good copies than wanted: keep listing the nodes that may hold one.
        if replicas.len() < self.replicas {
            replicas.extend(unknown.iter().filter(|node| !replicas.contains(node)).collect::<Vec<_>>());
        }
        Some(replicas)
    }
}

/// Whether a node answered that it does not have the chunk.
fn is_not_found(error: &ClientError) -> bool {
    matches!(error, ClientError::Rejected { status: beeline_dataplane::wire::Status::NotFound, .. })
}

/// Whether a node refused to serve its copy because it failed the node's checksum.
fn is_corrupt_copy(error: &ClientError) -> bool {
    matches!(error, ClientError::CorruptCopy { .. })
}

/// Summarises members for display.
pub fn describe(member: &Member) -> String {
    let age_ms = now_unix_ms().saturating_sub(member.record.heartbeat_unix_ms);
    format!(
        "{:016x}  {:<8} {:<22} {:<6} used {:>12} / {:>14}  heartbeat {:.1}s ago",
        member.record.id,
        member.state.name(),
        member.record.address,
        member.record.backend,
        member.record.used_bytes,
        member.record.capacity_bytes,
        age_ms as f64 / 1000.0
    )
}

pub fn is_live(member: &Member) -> bool {
    member.state == MemberState::Live
}
