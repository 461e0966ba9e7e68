//! Garbage collection across the cluster (as `juicefs gc` does for objects): chunks no
//! recorded file references, puts that stalled past the grace period, and copies a file's
//! layout does not list. Split from `cluster.rs`.

use super::*;

/// What `beeline cluster gc` (or a node's background pass) does.
#[derive(Debug, Clone)]
pub struct GcOptions {
    pub dry_run: bool,
    /// Chunks of an unrecorded file stay until the youngest is this old, and a put's entry
    /// until it was not refreshed for this long.
    pub grace_ms: u64,
    /// Only this node (a node's own background pass).
    pub only: Option<NodeId>,
    /// Compact every segment with dead bytes (an operator's pass), not only the cheap ones.
    pub everything: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ClusterGcReport {
    /// Per node: what it collected (or would).
    pub nodes: Vec<(NodeId, crate::control::GcReport)>,
    /// Nodes that refused or did not answer, with why (a node that lost its metadata
    /// refuses until `beeline cluster forget-lost`).
    pub skipped: Vec<(NodeId, String)>,
    /// Puts in progress whose chunks were left alone.
    pub puts_in_progress: u64,
    /// Stale puts claimed (they can no longer commit).
    pub puts_claimed: u64,
    /// Per node: copies of recorded files' chunks that the file's layout does not list on
    /// it (a copy whose ack was lost when the node was killed, so the put went elsewhere):
    /// how many were collected (or would be), and their bytes.
    pub unlisted: Vec<(NodeId, u64, u64)>,
}

impl ClusterClient {
    /// Garbage collection (as `juicefs gc` does for objects): every live node lists the
    /// file ids it holds chunks of; those no recorded file has, that no put in progress
    /// owns, and whose youngest chunk is at least the grace period old are deleted, then
    /// the nodes compact. Puts in progress register in Redis before their first chunk and
    /// refresh after every batch; one not refreshed for the grace period is claimed (it can
    /// no longer commit) and collected. Reads the registry before the files, so a put
    /// that commits meanwhile is seen in one or the other.
    pub fn gc(&mut self, options: &GcOptions) -> Result<ClusterGcReport, ClusterError> {
        self.refresh()?;
        let mut report = ClusterGcReport::default();
        let nodes: Vec<NodeId> =
            self.live_ids().into_iter().filter(|node| options.only.is_none_or(|only| only == *node)).collect();
        // 1. What each node holds.
        let mut held: Vec<(NodeId, Vec<crate::control::ChunkFile>)> = Vec::new();
        for node in nodes {
            match self.chunk_files(node) {
                Ok(files) => held.push((node, files)),
                Err(reason) => report.skipped.push((node, reason)),
            }
        }
        // 2. Puts in progress, then 3. the recorded files.
        let (now_ms, pending) = self.metadata.pending_puts()?;
        let referenced = self.metadata.referenced_layouts()?;
        let pending: HashMap<u64, u64> = pending.into_iter().collect();
        let mut decided: HashMap<u64, bool> = HashMap::new();
        for (node, files) in held {
            let mut doomed = Vec::new();
            let mut unlisted: Vec<(u128, u32)> = Vec::new();
            let mut extra = (0u64, 0u64);
            for file in &files {
                if let Some(layout) = referenced.get(&file.file_id) {
                    if file.youngest_age_ms >= options.grace_ms {
                        let (copies, chunks, bytes) = unlisted_copies(layout, node, file);
                        unlisted.extend(copies);
                        extra = (extra.0 + chunks, extra.1 + bytes);
                    }
                    continue;
                }
                if file.youngest_age_ms < options.grace_ms {
                    continue;
                }
                let collectable = match decided.get(&file.file_id) {
                    Some(collectable) => *collectable,
                    None => {
                        let collectable = match pending.get(&file.file_id) {
                            None => true,
                            Some(&refreshed) if now_ms.saturating_sub(refreshed) < options.grace_ms => {
                                report.puts_in_progress += 1;
                                false
                            }
                            Some(_) if options.dry_run => true,
                            Some(&refreshed) => {
                                let claimed = self.metadata.claim_put(file.file_id, refreshed)?;
                                report.puts_claimed += u64::from(claimed);
                                claimed
                            }
                        };
                        decided.insert(file.file_id, collectable);
                        collectable
                    }
                };
                if collectable {
                    doomed.push(file.file_id);
                }
            }
            match self.collect_on(node, &doomed, options) {
                // Only from a node that takes garbage collection (one that lost its
                // metadata refuses it): then compact again for the space.
                Ok(mut collected) => {
                    if !unlisted.is_empty() {
                        // Deleting a chunk a node does not have also succeeds: the count is
                        // what it held beyond the listed copies.
                        report.unlisted.push((node, extra.0, extra.1));
                        if extra.0 > 0 && !options.dry_run {
                            self.delete_unlisted(node, &unlisted);
                            if let Ok(compacted) = self.collect_on(node, &[], options) {
                                collected.disk_bytes_freed += compacted.disk_bytes_freed;
                            }
                        }
                    }
                    report.nodes.push((node, collected));
                }
                Err(reason) => report.skipped.push((node, reason)),
            }
        }
        Ok(report)
    }

    /// Deletes copies `node` holds that their file's layout does not list on it (asking
    /// for a copy the node does not have deletes nothing; a node that does not answer
    /// keeps them for the next pass).
    fn delete_unlisted(&mut self, node: NodeId, copies: &[(u128, u32)]) {
        let ids: Vec<u128> = copies.iter().map(|(id, _)| *id).collect();
        let _ = self.per_node(BTreeMap::from([(node, ids)]), |client, ids| client.delete_chunks(ids));
    }

    fn chunk_files(&mut self, node: NodeId) -> Result<Vec<crate::control::ChunkFile>, String> {
        use crate::control::{ControlRequest, ControlResponse};
        let mut client = self.take_client(node).map_err(|error| error.to_string())?;
        let mut files = Vec::new();
        let mut after = None;
        let result = loop {
            match client.control(&ControlRequest::ChunkFiles { after }) {
                Ok(ControlResponse::ChunkFiles { files: page, more }) => {
                    after = page.last().map(|file| file.file_id);
                    files.extend(page);
                    if !more || after.is_none() {
                        break Ok(files);
                    }
                }
                Ok(ControlResponse::Failed(reason)) => break Err(reason),
                Ok(other) => break Err(format!("unexpected answer {other:?}")),
                Err(error) => break Err(error.to_string()),
            }
        };
        self.clients.insert(node, client);
        result
    }

    /// Deletes `file_ids`' chunks on `node`, a request's worth at a time, then compacts.
    fn collect_on(
        &mut self,
        node: NodeId,
        file_ids: &[u64],
        options: &GcOptions,
    ) -> Result<crate::control::GcReport, String> {
        use crate::control::{ControlRequest, ControlResponse, GcReport};
        let mut client = self.take_client(node).map_err(|error| error.to_string())?;
        let mut total = GcReport { dry_run: options.dry_run, ..GcReport::default() };
        // 64 ids (at most 10 bytes each) fit the smallest control datagram.
        let batches: Vec<&[u64]> = if file_ids.is_empty() { vec![&[]] } else { file_ids.chunks(64).collect() };
        let last = batches.len() - 1;
        let mut result = Ok(());
        'batches: for (position, batch) in batches.into_iter().enumerate() {
            // A pass that stopped early (the node's change queue was full) is asked again,
            // backing off while passes make no progress, within a bound.
            let mut retry = crate::control::GcRetry::default();
            loop {
                let request = ControlRequest::CollectFiles {
                    file_ids: batch.to_vec(),
                    min_age_ms: options.grace_ms,
                    dry_run: options.dry_run,
                    reclaim: position == last && options.everything,
                };
                match client.control(&request) {
                    Ok(ControlResponse::Gc(part)) => {
                        total.chunks_collected += part.chunks_collected;
                        total.bytes_collected += part.bytes_collected;
                        total.files_collected += part.files_collected;
                        total.chunks_kept_young += part.chunks_kept_young;
                        total.bytes_kept_young += part.bytes_kept_young;
                        total.disk_bytes_freed += part.disk_bytes_freed;
                        if !part.more || options.dry_run {
                            continue 'batches;
                        }
                        if let Err(stop) = retry.after(&part) {
                            result = Err(format!("node {node:016x}: {stop}"));
                            break 'batches;
                        }
                    }
                    Ok(ControlResponse::Failed(reason)) => {
                        result = Err(reason);
                        break 'batches;
                    }
                    Ok(other) => {
                        result = Err(format!("unexpected answer {other:?}"));
                        break 'batches;
                    }
                    Err(error) => {
                        result = Err(error.to_string());
                        break 'batches;
                    }
                }
            }
        }
        self.clients.insert(node, client);
        result.map(|()| total)
    }
}

/// Copies of `layout`'s chunks that `node` holds beyond those the layout lists on it
/// (`file` is what the node reports holding of that file). When it holds more chunks
/// than are listed there: every chunk not listed on it, with its length (the candidates
/// to delete), and how many chunks and bytes it holds beyond the listed ones.
fn unlisted_copies(
    layout: &FileLayout,
    node: NodeId,
    file: &crate::control::ChunkFile,
) -> (Vec<(u128, u32)>, u64, u64) {
    let record = &layout.record;
    let listed = |index: u64| layout.replicas.get(index as usize).is_some_and(|nodes| nodes.contains(&node));
    let (listed_chunks, listed_bytes) = (0..record.chunk_count())
        .filter(|index| listed(*index))
        .fold((0u64, 0u64), |(chunks, bytes), index| (chunks + 1, bytes + u64::from(record.chunk_len(index))));
    if u64::from(file.chunks) <= listed_chunks {
        return (Vec::new(), 0, 0);
    }
    let candidates = (0..record.chunk_count())
        .filter(|index| !listed(*index))
        .map(|index| (record.chunk_id(index), record.chunk_len(index)))
        .collect();
    (candidates, u64::from(file.chunks) - listed_chunks, file.bytes.saturating_sub(listed_bytes))
}
