//! Chunk placement: a pure function of the live membership. Rendezvous (highest random
//! weight) hashing ranks every live node for a chunk; the first `replicas` are where the
//! chunk lives. When a node leaves, only the chunks it held move, and each moves to the
//! next node in its own ranking.

/// A node's stable identity (random, kept in its data directory).
pub type NodeId = u64;

/// The weight of `node` for `chunk_id`: BLAKE3 of both, first 8 bytes.
fn weight(node: NodeId, chunk_id: u128) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&node.to_le_bytes());
    hasher.update(&chunk_id.to_le_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(bytes)
}

/// Every node in `live`, best first, for `chunk_id`. Ties (practically impossible) break
/// by node id so the order is total and deterministic.
pub fn rank(chunk_id: u128, live: &[NodeId]) -> Vec<NodeId> {
    let mut ranked: Vec<(u64, NodeId)> = live.iter().map(|node| (weight(*node, chunk_id), *node)).collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.dedup_by_key(|(_, node)| *node);
    ranked.into_iter().map(|(_, node)| node).collect()
}

/// The `replicas` nodes a chunk belongs on (fewer when fewer nodes are live).
pub fn place(chunk_id: u128, live: &[NodeId], replicas: usize) -> Vec<NodeId> {
    let mut ranked = rank(chunk_id, live);
    ranked.truncate(replicas);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_deterministic_and_spreads() {
        let nodes = [11, 22, 33, 44, 55];
        let mut first_counts = std::collections::HashMap::new();
        for chunk in 0..5000u128 {
            let placed = place(chunk, &nodes, 2);
            assert_eq!(placed, place(chunk, &[55, 44, 33, 22, 11], 2), "order of the membership list must not matter");
            assert_eq!(placed.len(), 2);
            assert_ne!(placed[0], placed[1]);
            *first_counts.entry(placed[0]).or_insert(0) += 1;
        }
        for node in nodes {
            let share = first_counts[&node];
            assert!((700..1300).contains(&share), "node {node} leads {share} of 5000 chunks");
        }
    }

    #[test]
    fn losing_a_node_moves_only_its_chunks() {
        let before = [1, 2, 3, 4];
        let after = [1, 2, 4];
        for chunk in 0..2000u128 {
            let old = place(chunk, &before, 2);
            let new = place(chunk, &after, 2);
            if !old.contains(&3) {
                assert_eq!(old, new, "chunk {chunk} moved although its nodes stayed");
            } else {
                // The surviving replica stays; the lost one is replaced by the next in rank.
                let survivor = old.iter().find(|node| **node != 3).unwrap();
                assert!(new.contains(survivor));
            }
        }
    }

    #[test]
    fn fewer_nodes_than_replicas() {
        assert_eq!(place(7, &[9], 2), vec![9]);
        assert!(place(7, &[], 2).is_empty());
    }
}
