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

use crate::client::{Client, ClientError, ClientOptions};
use crate::cluster::{FileLayout, Member, MemberState, NodeRecord, RedisMetadata, now_unix_ms};
use crate::control::{FileRecord, chunk_id, validate_name};
use crate::metadata::{Metadata, MetadataError};

use crate::cluster::placement::{NodeId, rank};

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
    #[error("{name} came back with different content than was stored (BLAKE3 mismatch)")]
    Corrupt { name: String },
    #[error("{path}: {source}")]
    LocalIo { path: String, source: std::io::Error },
    #[error("{0}")]
    BadName(String),
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
    /// Chunks with no live replica at all, by `file#index`.
    pub unavailable: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    pub chunks_checked: u64,
    pub replicas_added: u64,
    pub files_updated: u64,
    /// Chunks whose replicas are all gone, by `file#index (nodes)`.
    pub lost: Vec<String>,
    /// Chunks that could not be repaired this pass (source or target unreachable).
    pub failed: Vec<String>,
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
        let mut hasher = blake3::Hasher::new();
        let mut replicas: Vec<Vec<NodeId>> = Vec::new();
        let mut size_bytes = 0u64;
        let mut index = 0u64;
        let mut eof = false;
        while !eof {
            let mut batch: Vec<(u128, Arc<[u8]>)> = Vec::with_capacity(self.parallel_chunks);
            while batch.len() < self.parallel_chunks.max(1) {
                let mut buffer = Vec::with_capacity(self.chunk_bytes as usize);
                Read::take(&mut *reader, u64::from(self.chunk_bytes))
                    .read_to_end(&mut buffer)
                    .map_err(|source_error| ClusterError::LocalIo { path: source.to_owned(), source: source_error })?;
                if buffer.len() < self.chunk_bytes as usize {
                    eof = true;
                }
                if buffer.is_empty() {
                    break;
                }
                hasher.update(&buffer);
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
        let layout = FileLayout { record, replicas };
        // Only now, with every replica acknowledged durable, does the file exist.
        if let Some(old) = self.metadata.put_layout(&layout)? {
            if old.record.file_id != layout.record.file_id {
                self.delete_chunks_of(&old);
            }
        }
        Ok(layout)
    }

    pub fn layout(&mut self, name: &str) -> Result<FileLayout, ClusterError> {
        self.metadata.get_layout(name)?.ok_or_else(|| ClusterError::NotFound(name.to_owned()))
    }

    // Long on purpose: one streaming loop (fetch chunks from a live replica, fail over, verify, write in order) whose local state every step shares.
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
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        let chunk_count = record.chunk_count();
        let mut start = 0u64;
        while start < chunk_count {
            let end = (start + self.parallel_chunks.max(1) as u64).min(chunk_count);
            // Candidates per chunk: live replicas first, in recorded order.
            let mut candidates: Vec<Vec<NodeId>> = (start..end)
                .map(|index| {
                    let recorded = layout.replicas.get(index as usize).cloned().unwrap_or_default();
                    recorded.into_iter().filter(|node| live.contains(node)).collect::<Vec<NodeId>>()
                })
                .collect();
            let mut data: Vec<Option<Vec<u8>>> = vec![None; (end - start) as usize];
            // Bounded: each round drops one candidate for every chunk still missing.
            loop {
                let mut work: BTreeMap<NodeId, Vec<(usize, u128, u32)>> = BTreeMap::new();
                for (offset, nodes) in candidates.iter().enumerate() {
                    if data[offset].is_some() {
                        continue;
                    }
                    let index = start + offset as u64;
                    let Some(node) = nodes.first() else {
                        let recorded = layout
                            .replicas
                            .get(index as usize)
                            .map(|nodes| nodes.iter().map(|n| format!("{n:016x}")).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default();
                        return Err(ClusterError::ChunkUnavailable { name: name.to_owned(), index, nodes: recorded });
                    };
                    work.entry(*node).or_default().push((offset, record.chunk_id(index), record.chunk_len(index)));
                }
                if work.is_empty() {
                    break;
                }
                let results = self.per_node(work.clone(), |client, items| {
                    let wants: Vec<(u128, u32)> = items.iter().map(|(_, id, len)| (*id, *len)).collect();
                    client.get_chunks(&wants)
                });
                for (node, items) in work {
                    let mut node_results = results.get(&node).cloned_results();
                    for (position, (offset, _, _)) in items.iter().enumerate() {
                        match node_results.get_mut(position).and_then(Option::take) {
                            Some(bytes) => data[*offset] = Some(bytes),
                            None => {
                                candidates[*offset].retain(|candidate| *candidate != node);
                            }
                        }
                    }
                }
            }
            for bytes in data.into_iter().flatten() {
                hasher.update(&bytes);
                writer
                    .write_all(&bytes)
                    .map_err(|source| ClusterError::LocalIo { path: destination.to_owned(), source })?;
                written += bytes.len() as u64;
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

    /// Best-effort removal of a file's chunks from the live nodes holding them; chunks on
    /// nodes that are down stay as orphaned space on those nodes.
    fn delete_chunks_of(&mut self, layout: &FileLayout) {
        let live: HashSet<NodeId> = self.live_ids().into_iter().collect();
        let mut work: BTreeMap<NodeId, Vec<u128>> = BTreeMap::new();
        for (index, nodes) in layout.replicas.iter().enumerate() {
            for node in nodes.iter().filter(|node| live.contains(node)) {
                work.entry(*node).or_default().push(layout.record.chunk_id(index as u64));
            }
        }
        let _ = self.per_node(work, |client, ids| client.delete_chunks(ids));
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

    /// Counts chunks by how many live replicas they have.
    pub fn health(&mut self) -> Result<ReplicationHealth, ClusterError> {
        self.refresh()?;
        let live: HashSet<NodeId> = self.live_ids().into_iter().collect();
        let mut health = ReplicationHealth::default();
        for record in self.list()? {
            let Some(layout) = self.metadata.get_layout(&record.name)? else { continue };
            health.files += 1;
            for (index, nodes) in layout.replicas.iter().enumerate() {
                health.chunks += 1;
                let up = nodes.iter().filter(|node| live.contains(node)).count();
                if up == 0 {
                    health.unavailable.push(format!("{}#{index}", record.name));
                } else if up < self.replicas {
                    health.under_replicated += 1;
                }
            }
        }
        Ok(health)
    }

    /// Restores the replication factor of every chunk that has at least one live replica,
    /// copying it to the next nodes in its ranking; reports chunks with none by name.
    pub fn repair(&mut self) -> Result<RepairReport, ClusterError> {
        self.refresh()?;
        let live_ids = self.live_ids();
        let live: HashSet<NodeId> = live_ids.iter().copied().collect();
        let mut report = RepairReport::default();
        for record in self.list()? {
            let Some(layout) = self.metadata.get_layout(&record.name)? else { continue };
            let mut updated = layout.clone();
            let mut changed = false;
            for (index, nodes) in layout.replicas.iter().enumerate() {
                report.chunks_checked += 1;
                let up: Vec<NodeId> = nodes.iter().copied().filter(|node| live.contains(node)).collect();
                if up.len() >= self.replicas.min(live_ids.len()) && up.len() == nodes.len() {
                    continue;
                }
                let label = format!("{}#{index}", record.name);
                let Some(source) = up.first().copied() else {
                    let nodes = nodes.iter().map(|n| format!("{n:016x}")).collect::<Vec<_>>().join(", ");
                    report.lost.push(format!("{label} (was on {nodes})"));
                    continue;
                };
                let chunk = record.chunk_id(index as u64);
                let len = record.chunk_len(index as u64);
                let targets: Vec<NodeId> = rank(chunk, &live_ids)
                    .into_iter()
                    .filter(|node| !up.contains(node))
                    .take(self.replicas.saturating_sub(up.len()))
                    .collect();
                let mut have = up.clone();
                if !targets.is_empty() {
                    let fetched = self.per_node(BTreeMap::from([(source, vec![(chunk, len)])]), |client, wants| {
                        client.get_chunks(wants)
                    });
                    let Some(Some(Ok(bytes))) = fetched.get(&source).map(|results| results.first().map(clone_result))
                    else {
                        report.failed.push(format!("{label}: could not read it from {source:016x}"));
                        continue;
                    };
                    let data: Arc<[u8]> = Arc::from(bytes);
                    let work: PutWork = targets.iter().map(|node| (*node, vec![(chunk, data.clone())])).collect();
                    let results = self.per_node(work, |client, items| client.put_chunks(items));
                    for target in &targets {
                        if matches!(results.get(target).and_then(|r| r.first()), Some(Ok(()))) {
                            have.push(*target);
                            report.replicas_added += 1;
                        } else {
                            report.failed.push(format!("{label}: could not copy it to {target:016x}"));
                        }
                    }
                }
                if have != *nodes {
                    updated.replicas[index] = have;
                    changed = true;
                }
            }
            // Only if nobody changed the file meanwhile; otherwise the next pass sees it.
            if changed && self.metadata.swap_layout(&layout, &updated)? {
                report.files_updated += 1;
            }
        }
        Ok(report)
    }
}

fn clone_result(result: &Result<Vec<u8>, ClientError>) -> Result<Vec<u8>, ()> {
    result.as_ref().cloned().map_err(|_| ())
}

trait ClonedResults {
    fn cloned_results(self) -> Vec<Option<Vec<u8>>>;
}

impl ClonedResults for Option<&Vec<Result<Vec<u8>, ClientError>>> {
    fn cloned_results(self) -> Vec<Option<Vec<u8>>> {
        self.map(|results| results.iter().map(|result| result.as_ref().ok().cloned()).collect()).unwrap_or_default()
    }
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
