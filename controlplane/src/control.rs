//! Control messages between the CLI (or any client) and a node: namespace operations
//! and node status, carried as postcard in the payload of `Control`/`ControlReply`
//! datagrams. Every message fits one datagram: names are bounded and listings paginate.

use serde::{Deserialize, Serialize};

/// Longest file name accepted, in bytes: room for a path of several `/`-separated parts,
/// and still one control datagram (a `FileRecord` carrying it is about 1,100 bytes, and the
/// smallest frame a node takes is 2,048).
pub const NAME_BYTES_MAX: usize = 1024;
/// Longest `/`-separated part of a name, in bytes (what most file systems allow one name).
pub const NAME_PART_BYTES_MAX: usize = 255;

/// A file in the namespace. Chunk `i` of the file has id `(file_id << 64) | i`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub name: String,
    pub file_id: u64,
    pub size_bytes: u64,
    pub chunk_bytes: u32,
    /// BLAKE3 of the whole content, checked by `beeline get`.
    pub blake3: [u8; 32],
    pub created_unix_ms: u64,
}

impl FileRecord {
    pub fn chunk_count(&self) -> u64 {
        self.size_bytes.div_ceil(u64::from(self.chunk_bytes.max(1)))
    }

    pub fn chunk_id(&self, index: u64) -> u128 {
        chunk_id(self.file_id, index)
    }

    /// Length of chunk `index` in bytes (0 past the end, rather than a panic on a record
    /// whose replica lists are longer than its chunks).
    pub fn chunk_len(&self, index: u64) -> u32 {
        let start = index.saturating_mul(u64::from(self.chunk_bytes));
        self.size_bytes.saturating_sub(start).min(u64::from(self.chunk_bytes)) as u32
    }
}

pub fn chunk_id(file_id: u64, index: u64) -> u128 {
    (u128::from(file_id) << 64) | u128::from(index)
}

/// Checks a name a file is looked up by (get, stat, rm, tag): bounded, so that every
/// request carrying it fits one datagram. Any name ever stored passes, whatever its
/// characters, so that old files stay reachable.
pub fn check_name_length(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("file name is empty: give a name".into());
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(format!(
            "file name is {} bytes long, more than the {NAME_BYTES_MAX} allowed: use a shorter name",
            name.len()
        ));
    }
    let long_part = name.split('/').enumerate().find(|(_, part)| part.len() > NAME_PART_BYTES_MAX);
    if let Some((index, part)) = long_part {
        return Err(format!(
            "part {} of the file name (\"{}...\") is {} bytes long, more than the {NAME_PART_BYTES_MAX} allowed between two /: shorten it or split it with /",
            index + 1,
            part.chars().take(16).collect::<String>().escape_debug(),
            part.len()
        ));
    }
    Ok(())
}

/// Checks the name of a new file (put): [`check_name_length`], and none of the characters
/// that do not show in a listing, so that two different names never look the same.
pub fn validate_name(name: &str) -> Result<(), String> {
    check_name_length(name)?;
    match name.char_indices().find_map(|(at, c)| Some((at, c, invisible(c)?))) {
        Some((at, c, what)) => Err(format!(
            "file name has U+{:04X} ({what}) at byte {at}: it would not show in listings, so names could look alike; remove it",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// What `c` is when it is one of the characters a name may not contain: controls, the
/// bidirectional embeddings, overrides and isolates, and the zero-width characters.
pub fn invisible(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{202A}' => "LEFT-TO-RIGHT EMBEDDING",
        '\u{202B}' => "RIGHT-TO-LEFT EMBEDDING",
        '\u{202C}' => "POP DIRECTIONAL FORMATTING",
        '\u{202D}' => "LEFT-TO-RIGHT OVERRIDE",
        '\u{202E}' => "RIGHT-TO-LEFT OVERRIDE",
        '\u{2066}' => "LEFT-TO-RIGHT ISOLATE",
        '\u{2067}' => "RIGHT-TO-LEFT ISOLATE",
        '\u{2068}' => "FIRST STRONG ISOLATE",
        '\u{2069}' => "POP DIRECTIONAL ISOLATE",
        '\u{200B}' => "ZERO WIDTH SPACE",
        '\u{200C}' => "ZERO WIDTH NON-JOINER",
        '\u{200D}' => "ZERO WIDTH JOINER",
        '\u{200E}' => "LEFT-TO-RIGHT MARK",
        '\u{200F}' => "RIGHT-TO-LEFT MARK",
        '\u{FEFF}' => "ZERO WIDTH NO-BREAK SPACE",
        c if c.is_control() => "a control character",
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Records a file whose chunks are all durable; replaces a file of the same name.
    CommitFile(FileRecord),
    Lookup {
        name: String,
    },
    /// Names in order, starting after `after`.
    List {
        after: Option<String>,
        limit: u16,
    },
    Remove {
        name: String,
    },
    /// The node's state, with its counters from index `counters_from` on: as many as fit
    /// one datagram (`NodeStatus::counters_next` says where the rest start).
    NodeStatus {
        counters_from: u32,
    },
    /// Single node: collects the chunks no file in the node's metadata references whose
    /// file's youngest chunk is at least `grace_ms` old (the node's grace period when
    /// `None`), then compacts. Refused by a node in a cluster (`beeline cluster gc`).
    Gc {
        dry_run: bool,
        grace_ms: Option<u64>,
    },
    /// Cluster: the file ids this node holds chunks of, after `after`, as many as fit.
    ChunkFiles {
        after: Option<u64>,
    },
    /// Cluster: deletes this node's chunks of `file_ids` that are at least `min_age_ms`
    /// old (the caller found no file referencing them), then, with `reclaim`, compacts.
    CollectFiles {
        file_ids: Vec<u64>,
        min_age_ms: u64,
        dry_run: bool,
        reclaim: bool,
    },
    /// Single node: adds tags (`TagsAdded`, or `NotFound` for no such file).
    AddTags {
        name: String,
        tags: Vec<TagEdge>,
    },
    /// Single node: removes tags by name (`Tags`: those removed).
    RemoveTags {
        name: String,
        tags: Vec<String>,
    },
    /// Single node: a page of a file's tags after `after` (`Tags`).
    TagsOf {
        name: String,
        after: Option<String>,
        limit: u16,
    },
    /// Single node: a page of the names of files carrying `tag` (`Names`).
    FilesTagged {
        tag: String,
        after: Option<String>,
        limit: u16,
    },
    /// Single node: a page of the tags starting with `prefix`, with counts (`TagCounts`).
    TagsByPrefix {
        prefix: String,
        after: Option<String>,
        limit: u16,
    },
}

/// A tag and its source, as control messages carry it (the metadata's `FileTag`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEdge {
    pub tag: String,
    pub source: String,
}

/// The chunks a node holds of one file id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkFile {
    pub file_id: u64,
    pub chunks: u32,
    pub bytes: u64,
    /// Age of the file's youngest chunk on this node.
    pub youngest_age_ms: u64,
}

/// What a garbage collection pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Chunks (and their bytes) deleted, or that would be with `dry_run`.
    pub chunks_collected: u64,
    pub bytes_collected: u64,
    pub files_collected: u64,
    /// Unreferenced chunks kept because they are younger than the grace period.
    pub chunks_kept_young: u64,
    pub bytes_kept_young: u64,
    /// Segment bytes given back to the file system.
    pub disk_bytes_freed: u64,
    /// The pass stopped early (the store's change queue was full): run it again.
    pub more: bool,
}

/// How a client asks again after a garbage collection pass stopped early (`more`): at
/// once while passes delete chunks, with a growing pause while they delete none (the
/// node's change queue drains only as fast as its disk syncs), and never beyond a bound,
/// so `gc` neither spins nor reports success with chunks left.
#[derive(Debug, Default)]
pub struct GcRetry {
    passes: u32,
    idle_pause_ms: u64,
    idle_ms: u64,
}

impl GcRetry {
    /// Passes asked of one node at most.
    pub const PASSES_MAX: u32 = 100_000;
    /// Time spent waiting on passes that deleted nothing, at most.
    pub const IDLE_MS_MAX: u64 = 60_000;
    const IDLE_PAUSE_MS_MAX: u64 = 100;

    /// Called after a pass that reported `more`; waits if it made no progress, or says why
    /// collection must stop unfinished.
    pub fn after(&mut self, report: &GcReport) -> Result<(), String> {
        debug_assert!(report.more, "a finished pass needs no retry");
        self.passes += 1;
        if report.chunks_collected > 0 {
            self.idle_pause_ms = 0;
        } else {
            self.idle_pause_ms = (self.idle_pause_ms * 2).clamp(1, Self::IDLE_PAUSE_MS_MAX);
            self.idle_ms += self.idle_pause_ms;
            std::thread::sleep(std::time::Duration::from_millis(self.idle_pause_ms));
        }
        if self.passes >= Self::PASSES_MAX || self.idle_ms >= Self::IDLE_MS_MAX {
            return Err(format!(
                "garbage collection stopped unfinished after {} passes: the node's change queue stayed full (a slow or failing disk?); check the node's log, then run gc again",
                self.passes
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_version: String,
    pub backend: String,
    pub listen: String,
    pub uptime_ms: u64,
    pub files: u64,
    pub chunks: u64,
    pub used_bytes: u64,
    pub arena_frames: u32,
    pub arena_frames_free: u32,
    pub puts_in_flight: u32,
    pub sessions_active: u32,
    pub page_backing: String,
    /// `(counter name, value)` for the data-path counters from the requested index on.
    pub counters: Vec<(String, u64)>,
    /// Where the counters that did not fit this reply start, if any did not.
    pub counters_next: Option<u32>,
    /// The metadata the node answers to, and, loudly, whether it lost track of it.
    pub metadata: String,
    /// How long chunks no file references are kept while they do not grow in number
    /// (`gc_grace_ms`): a put stalled longer loses its chunks (single node).
    pub gc_grace_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    Committed {
        replaced: Option<FileRecord>,
    },
    File(FileRecord),
    NotFound,
    Listing {
        files: Vec<FileRecord>,
        more: bool,
    },
    Removed(FileRecord),
    Status(NodeStatus),
    Gc(GcReport),
    ChunkFiles {
        files: Vec<ChunkFile>,
        more: bool,
    },
    /// The node could not do it; the text says why and what to do.
    Failed(String),
    TagsAdded {
        added: u32,
    },
    Tags(Vec<TagEdge>),
    Names(Vec<String>),
    TagCounts(Vec<(String, u64)>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_retry_continues_while_passes_progress_and_stops_at_its_bound() {
        let progressing = GcReport { chunks_collected: 3, more: true, ..GcReport::default() };
        let idle = GcReport { more: true, ..GcReport::default() };
        let mut retry = GcRetry::default();
        // Idle passes wait a little, growing; progress resets the pause.
        assert_eq!(retry.after(&idle), Ok(()));
        assert_eq!(retry.after(&idle), Ok(()));
        assert_eq!((retry.idle_pause_ms, retry.idle_ms), (2, 3));
        assert_eq!(retry.after(&progressing), Ok(()));
        assert_eq!(retry.idle_pause_ms, 0);
        while retry.passes < GcRetry::PASSES_MAX - 1 {
            assert_eq!(retry.after(&progressing), Ok(()));
        }
        let stop = retry.after(&progressing).unwrap_err();
        assert!(stop.contains("stopped unfinished") && stop.contains("run gc again"), "{stop}");
    }

    #[test]
    fn chunk_lengths_end_at_the_file_size_and_never_panic_past_it() {
        let record = FileRecord {
            name: "f".into(),
            file_id: 1,
            size_bytes: 10,
            chunk_bytes: 4,
            blake3: [0; 32],
            created_unix_ms: 0,
        };
        assert_eq!(record.chunk_count(), 3);
        assert_eq!((0..5).map(|index| record.chunk_len(index)).collect::<Vec<_>>(), [4, 4, 2, 0, 0]);
        assert_eq!(record.chunk_len(u64::MAX), 0);
    }

    #[test]
    fn names_are_bounded_in_whole_and_per_part() {
        let part = "p".repeat(NAME_PART_BYTES_MAX);
        let longest = format!("{}/{part}/{part}/{part}/f", &part[1..]);
        assert_eq!(longest.len(), NAME_BYTES_MAX);
        assert_eq!(validate_name(&longest), Ok(()));
        let message = validate_name(&format!("{longest}x")).unwrap_err();
        assert!(message.contains("1025 bytes long") && message.contains("1024 allowed"), "{message}");
        let message = validate_name(&format!("dir/{part}x/file")).unwrap_err();
        assert!(message.contains("part 2") && message.contains("256 bytes long"), "{message}");
        for bad in ["", &"a".repeat(4000), &"a".repeat(9000)] {
            assert!(check_name_length(bad).is_err() && validate_name(bad).is_err(), "{}", bad.len());
        }
        // Multi-byte characters count in bytes: 128 x 2 bytes is one byte too many.
        assert!(validate_name(&"\u{e9}".repeat(128)).unwrap_err().contains("256 bytes"));
        assert_eq!(validate_name(&"\u{e9}".repeat(127)), Ok(()));
    }

    #[test]
    fn invisible_characters_are_refused_by_code_point_but_looked_up() {
        let refused = ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}').chain('\u{200B}'..='\u{200F}');
        for c in refused.chain(['\u{FEFF}', '\u{0}', '\u{7}', '\n', '\u{7F}', '\u{9B}']) {
            let name = format!("report{c}.pdf");
            let message = validate_name(&name).unwrap_err();
            assert!(message.contains(&format!("U+{:04X}", u32::from(c))) && message.contains("byte 6"), "{message}");
            assert!(!message.contains(c), "the message repeats the invisible character: {message:?}");
            assert_eq!(check_name_length(&name), Ok(()), "an old name with U+{:04X} must stay reachable", u32::from(c));
        }
        for fine in ["photo.jpg", "images/2026/big.iso", "\u{e9}t\u{e9}.txt", "\u{6587}\u{4ef6}", "\u{1F41D}", "a b"] {
            assert_eq!(validate_name(fine), Ok(()), "{fine}");
        }
    }
}
