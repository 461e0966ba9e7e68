//! Reading chunks of a file with failover: each chunk from a live replica, checked against
//! its recorded hash, and on a bad, missing or refused copy from the next replica. Used by
//! `get_writer` (the whole file, batch by batch) and by the mount's ranged reads.

use std::collections::{BTreeMap, HashSet};

use super::{ClusterClient, ClusterError, is_corrupt_copy, is_not_found};
use crate::cluster::placement::NodeId;
use crate::cluster::{BadReplica, FileLayout};

/// What reading chunks `first..first + data.len()` found.
pub(super) struct VerifiedChunks {
    /// Each chunk's checked bytes; `None` from the first chunk that has no good copy on.
    pub data: Vec<Option<Vec<u8>>>,
    /// Per chunk, the copies found bad (node, "corrupt" or "missing").
    pub found_bad: Vec<Vec<(NodeId, &'static str)>>,
    /// The same, as marks for the metadata.
    pub new_bad: Vec<BadReplica>,
    /// The first chunk no candidate could serve, and why.
    pub failure: Option<ClusterError>,
}

impl ClusterClient {
    /// Reads chunks `first..first + candidates.len()` of `layout`'s file, chunk `first + i`
    /// from `candidates[i]` in order (each node's share in one batch, the nodes at once).
    pub(super) fn read_verified(
        &mut self,
        layout: &FileLayout,
        first: u64,
        mut candidates: Vec<Vec<NodeId>>,
    ) -> VerifiedChunks {
        let record = &layout.record;
        let mut found = VerifiedChunks {
            data: vec![None; candidates.len()],
            found_bad: vec![Vec::new(); candidates.len()],
            new_bad: Vec::new(),
            failure: None,
        };
        // Bounded: each round drops one candidate for every chunk still missing.
        loop {
            let mut work: BTreeMap<NodeId, Vec<(usize, u128, u32)>> = BTreeMap::new();
            for (offset, nodes) in candidates.iter().enumerate() {
                if found.data[offset].is_some() {
                    continue;
                }
                let index = first + offset as u64;
                let Some(node) = nodes.first() else {
                    found.failure = Some(self.no_good_copy(layout, index, &found.found_bad[offset]));
                    return found;
                };
                work.entry(*node).or_default().push((offset, record.chunk_id(index), record.chunk_len(index)));
            }
            if work.is_empty() {
                return found;
            }
            let results = self.per_node(work.clone(), |client, items| {
                let wants: Vec<(u128, u32)> = items.iter().map(|(_, id, len)| (*id, *len)).collect();
                client.get_chunks(&wants)
            });
            for (node, items) in work {
                let mut node_results = results.get(&node).map(|results| results.iter()).into_iter().flatten();
                for (offset, _, _) in &items {
                    let index = first + *offset as u64;
                    let verdict = match node_results.next() {
                        Some(Ok(bytes)) => match layout.chunk_hash(index) {
                            Some(hash) if blake3::hash(bytes).as_bytes() != hash => Err(Some("corrupt")),
                            _ => Ok(bytes.clone()),
                        },
                        Some(Err(error)) if is_not_found(error) => Err(Some("missing")),
                        Some(Err(error)) if is_corrupt_copy(error) => Err(Some("corrupt")),
                        _ => Err(None),
                    };
                    match verdict {
                        Ok(bytes) => found.data[*offset] = Some(bytes),
                        Err(bad) => {
                            if let Some(what) = bad {
                                found.found_bad[*offset].push((node, what));
                                found.new_bad.push(BadReplica { file_id: record.file_id, index, node });
                            }
                            candidates[*offset].retain(|candidate| *candidate != node);
                        }
                    }
                }
            }
        }
    }

    /// Chunks `first..first + count` of the file `layout` describes (cut at its end), in
    /// order. A copy that does not match its hash or is missing is skipped for the next
    /// replica (and reported by [`ClusterClient::take_warnings`]); a chunk no live
    /// replica serves fails the whole call.
    pub fn read_chunks(&mut self, layout: &FileLayout, first: u64, count: u64) -> Result<Vec<Vec<u8>>, ClusterError> {
        let record = &layout.record;
        let end = first.saturating_add(count).min(record.chunk_count());
        if first >= end {
            return Ok(Vec::new());
        }
        let live: HashSet<NodeId> = self.live_ids().into_iter().collect();
        let candidates: Vec<Vec<NodeId>> = (first..end)
            .map(|index| {
                let recorded = layout.replicas.get(index as usize).cloned().unwrap_or_default();
                recorded.into_iter().filter(|node| live.contains(node)).collect()
            })
            .collect();
        let found = self.read_verified(layout, first, candidates);
        for (offset, bad) in found.found_bad.iter().enumerate() {
            for (node, what) in bad {
                self.warnings.push(format!(
                    "chunk {} of {} is {what} on node {node:016x} (read it from another replica); `beeline cluster repair` replaces that copy",
                    first + offset as u64,
                    record.name
                ));
            }
        }
        if let Some(failure) = found.failure {
            return Err(failure);
        }
        Ok(found.data.into_iter().map(|bytes| bytes.unwrap_or_default()).collect())
    }
}
