//! Reading some chunks of a file rather than all of it (the mount's ranged reads): each
//! chunk from a live replica, checked against its recorded hash, failing over to the next
//! replica as `get_writer` does.

use std::collections::{BTreeMap, HashSet};

use super::{ClusterClient, ClusterError, is_not_found};
use crate::cluster::FileLayout;
use crate::cluster::placement::NodeId;

impl ClusterClient {
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
        let mut candidates: Vec<Vec<NodeId>> = (first..end)
            .map(|index| {
                let recorded = layout.replicas.get(index as usize).cloned().unwrap_or_default();
                recorded.into_iter().filter(|node| live.contains(node)).collect()
            })
            .collect();
        let mut data: Vec<Option<Vec<u8>>> = vec![None; (end - first) as usize];
        let mut found_bad: Vec<Vec<(NodeId, &'static str)>> = vec![Vec::new(); data.len()];
        // Bounded: each round drops one candidate for every chunk still missing.
        loop {
            let mut work: BTreeMap<NodeId, Vec<(usize, u128, u32)>> = BTreeMap::new();
            for (offset, nodes) in candidates.iter().enumerate() {
                if data[offset].is_some() {
                    continue;
                }
                let index = first + offset as u64;
                let Some(node) = nodes.first() else {
                    return Err(self.no_good_copy(layout, index, &found_bad[offset]));
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
                let mut node_results = results.get(&node).map(|results| results.iter()).into_iter().flatten();
                for (offset, _, _) in &items {
                    let index = first + *offset as u64;
                    let verdict = match node_results.next() {
                        Some(Ok(bytes)) => match layout.chunk_hash(index) {
                            Some(hash) if blake3::hash(bytes).as_bytes() != hash => Err(Some("corrupt")),
                            _ => Ok(bytes.clone()),
                        },
                        Some(Err(error)) if is_not_found(error) => Err(Some("missing")),
                        _ => Err(None),
                    };
                    match verdict {
                        Ok(bytes) => data[*offset] = Some(bytes),
                        Err(bad) => {
                            if let Some(what) = bad {
                                found_bad[*offset].push((node, what));
                            }
                            candidates[*offset].retain(|candidate| *candidate != node);
                        }
                    }
                }
            }
        }
        for (offset, bad) in found_bad.iter().enumerate() {
            for (node, what) in bad {
                self.warnings.push(format!(
                    "chunk {} of {} is {what} on node {node:016x} (read it from another replica); `beeline cluster repair` replaces that copy",
                    first + offset as u64,
                    record.name
                ));
            }
        }
        Ok(data.into_iter().map(|bytes| bytes.unwrap_or_default()).collect())
    }
}
