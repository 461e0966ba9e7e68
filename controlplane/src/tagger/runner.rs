//! What every tagger does with one file, wherever it runs (the node's own thread for a
//! single node, `beeline tagger run` on a Redis Stream): read at most the first
//! [`Limits::bytes_max`] bytes back through the client library, run the extractors,
//! make their tags valid tag names, and count what happened for `/metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::proto::{MetricFamily, MetricType};
use tracing::warn;

use crate::exposition::{counter, family, gauge};
use crate::metadata::{FileTag, sanitize_tag};
use crate::tagger::extract::{self, Limits};

/// What the taggers of one process did.
#[derive(Debug, Default)]
pub struct TaggerStats {
    /// Files whose tags were recorded.
    pub files_tagged: AtomicU64,
    /// Bytes read back to tag them.
    pub bytes_read: AtomicU64,
    /// Files that could not be read whole or that an extractor gave up on (each also
    /// logged with its reason).
    pub failures: AtomicU64,
    /// Files dropped because they were replaced or removed before their tags were in.
    pub files_gone: AtomicU64,
    /// Stream entries taken over from a tagger that stopped mid-file (XAUTOCLAIM).
    pub entries_claimed: AtomicU64,
    /// Files waiting: the consumer group's lag plus its pending entries on Redis, the
    /// untagged list on a single node.
    pub lag: AtomicU64,
    /// Tags recorded, by source (extractor).
    pub tags_by_source: Mutex<BTreeMap<String, u64>>,
}

impl TaggerStats {
    fn count_tags(&self, tags: &[FileTag]) {
        if let Ok(mut by_source) = self.tags_by_source.lock() {
            for tag in tags {
                *by_source.entry(tag.source.clone()).or_default() += 1;
            }
        }
    }

    /// Counts a file whose tags were recorded.
    pub fn tagged(&self, tags: &[FileTag]) {
        self.files_tagged.fetch_add(1, Ordering::Relaxed);
        self.count_tags(tags);
    }

    /// The metric families of these counters (`beeline_tagger_*`).
    pub fn families(&self) -> Vec<MetricFamily> {
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let by_source = self.tags_by_source.lock().map(|map| map.clone()).unwrap_or_default();
        vec![
            family(
                "beeline_tagger_files_tagged_total",
                "Files whose automatic tags were recorded.",
                MetricType::COUNTER,
                vec![counter(load(&self.files_tagged), &[])],
            ),
            family(
                "beeline_tagger_bytes_read_total",
                "Bytes read back to tag files.",
                MetricType::COUNTER,
                vec![counter(load(&self.bytes_read), &[])],
            ),
            family(
                "beeline_tagger_tags_total",
                "Automatic tags recorded, by the extractor that made them.",
                MetricType::COUNTER,
                by_source.iter().map(|(source, count)| counter(*count, &[("extractor", source)])).collect(),
            ),
            family(
                "beeline_tagger_failures_total",
                "Files that could not be read or that an extractor gave up on (tagged with what was found; the reason is logged).",
                MetricType::COUNTER,
                vec![counter(load(&self.failures), &[])],
            ),
            family(
                "beeline_tagger_files_gone_total",
                "Files replaced or removed before their tags were recorded (their tags dropped).",
                MetricType::COUNTER,
                vec![counter(load(&self.files_gone), &[])],
            ),
            family(
                "beeline_tagger_entries_claimed_total",
                "Stream entries taken over from a tagger that stopped mid-file.",
                MetricType::COUNTER,
                vec![counter(load(&self.entries_claimed), &[])],
            ),
            family(
                "beeline_tagger_lag_files",
                "Files waiting to be tagged (stream lag plus pending entries, or the node's untagged list).",
                MetricType::GAUGE,
                vec![gauge(load(&self.lag) as f64, &[])],
            ),
        ]
    }
}

/// What the reader was told when it had enough.
const ENOUGH: &str = "beeline-tagger: prefix read";

/// Keeps the first `max` bytes written and then refuses more, which stops a download
/// early: the tagger never holds more than its limit of a file. And once the first
/// [`extract::SNIFF_BYTES`] are in, it refuses more of a file whose type no extractor reads
/// (a random binary, an archive): its type tag comes from those bytes alone, so reading on
/// would cost the node and the network for nothing.
pub struct PrefixWriter {
    pub bytes: Vec<u8>,
    max: usize,
    /// The file's name while its type is undecided.
    sniffing: Option<String>,
}

impl PrefixWriter {
    pub fn new(name: &str, max: u64) -> Self {
        Self { bytes: Vec::new(), max: usize::try_from(max).unwrap_or(usize::MAX), sniffing: Some(name.to_owned()) }
    }

    /// Whether `error`'s text is this writer saying it had enough.
    pub fn had_enough(error: &dyn std::fmt::Display) -> bool {
        error.to_string().contains(ENOUGH)
    }
}

impl Write for PrefixWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.max - self.bytes.len();
        if room == 0 {
            return Err(std::io::Error::other(ENOUGH));
        }
        let take = room.min(data.len());
        self.bytes.extend_from_slice(&data[..take]);
        if self.bytes.len() >= extract::SNIFF_BYTES {
            if let Some(name) = self.sniffing.take() {
                if !extract::wants_more_than(&name, &self.bytes[..extract::SNIFF_BYTES]) {
                    self.max = self.bytes.len();
                }
            }
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The tags of one file from what could be read of it: `read` is the bytes (or, when
/// reading failed, what arrived before and why). Never fails: a file that cannot be
/// read is still tagged by type from what is there, and the reason counted and logged.
pub fn tags_for(
    name: &str,
    read: Result<Vec<u8>, (Vec<u8>, String)>,
    limits: &Limits,
    stats: &TaggerStats,
) -> Vec<FileTag> {
    let (bytes, read_failure) = match read {
        Ok(bytes) => (bytes, None),
        Err((bytes, reason)) => (bytes, Some(reason)),
    };
    stats.bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let extraction = extract::extract(name, &bytes, limits);
    let failure = match (read_failure, extraction.failure) {
        (Some(read), _) => Some(format!("cannot read it: {read}")),
        (None, Some(extractor)) => Some(extractor),
        (None, None) => None,
    };
    if let Some(reason) = failure {
        stats.failures.fetch_add(1, Ordering::Relaxed);
        warn!(file = name, reason, "tagged partly");
    }
    let mut tags: Vec<FileTag> = extraction
        .tags
        .into_iter()
        .filter_map(|tag| Some(FileTag::new(sanitize_tag(&tag.name)?, tag.source)))
        .collect();
    tags.sort();
    tags.dedup_by(|a, b| a.tag == b.tag);
    tags.truncate(crate::metadata::TAGS_PER_FILE_MAX);
    tags
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::PrefixWriter;
    use crate::tagger::extract::SNIFF_BYTES;

    /// Writes chunks of `chunk` bytes of `byte` until the writer refuses; returns the bytes
    /// it kept.
    fn fill(name: &str, byte: u8, chunk: usize) -> usize {
        let mut writer = PrefixWriter::new(name, 64 << 20);
        let data = vec![byte; chunk];
        for _ in 0..64 {
            if let Err(error) = writer.write_all(&data) {
                assert!(PrefixWriter::had_enough(&error));
                break;
            }
        }
        writer.bytes.len()
    }

    #[test]
    fn a_type_no_extractor_reads_stops_after_its_first_write() {
        // 0x80 is not UTF-8 and no magic number: "binary", tagged by type alone.
        assert_eq!(fill("noise.bin", 0x80, 1 << 20), 1 << 20);
        // Text has an extractor: read on to the limit.
        assert_eq!(fill("notes.txt", b'a', 1 << 20), 64 << 20);
        // Small writes: decided at SNIFF_BYTES, not before.
        assert_eq!(fill("noise.bin", 0x80, 4096), SNIFF_BYTES);
    }
}
