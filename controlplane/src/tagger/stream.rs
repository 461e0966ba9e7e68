//! `beeline tagger run`: taggers for a cluster, sharing the work of one Redis Stream.
//!
//! Recording a file (`crate::cluster`'s put scripts) adds an entry `name`, `id` (the file
//! id, 16 hex digits) to `{prefix}:tagging` (`XADD MAXLEN ~ 100000`). Every tagger is a
//! consumer of the group `taggers` (created at the stream's start, so entries added
//! before any tagger ran are tagged too): it first takes over entries another consumer
//! has held longer than `claim_idle_ms` (`XAUTOCLAIM`: a tagger killed mid-file leaves
//! its entries pending, and they move on), then reads new ones (`XREADGROUP ... >`),
//! reads each file back through the cluster client, records the tags only if the file is
//! still that file id, and only then acknowledges the entry (`XACK`). Delivery is at least
//! once; recording tags is idempotent (sets), so a file tagged twice ends the same.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beeline_dataplane::wire::ClusterKey;
use tracing::{info, warn};

use crate::client::cluster::{ClusterClient, ClusterError};
use crate::metadata::MetadataError;
use crate::tagger::extract::Limits;
use crate::tagger::runner::{PrefixWriter, TaggerStats, tags_for};

/// The consumer group every tagger joins.
pub const GROUP: &str = "taggers";
/// Longest wait for new entries before looking at the stop flag and stale entries again.
const BLOCK_MS: u64 = 1000;
/// Entries read or claimed at a time, at most.
pub const BATCH_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TaggerError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// How one `beeline tagger run` works.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub url: String,
    pub prefix: String,
    pub key: ClusterKey,
    /// This consumer's name in the group (unique per process).
    pub consumer: String,
    /// Entries another consumer held longer than this are taken over.
    pub claim_idle_ms: u64,
    /// Entries taken at a time (1 to [`BATCH_MAX`]).
    pub batch: usize,
    pub limits: Limits,
    /// A test hook: the file of this name is held, not tagged, until the tagger stops
    /// (so that a test can kill a tagger mid-file). Set from `BEELINE_TAGGER_HOLD`.
    pub hold: Option<String>,
}

/// One stream entry: its id, the file's name and id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    name: String,
    file_id: Option<u64>,
}

fn entry(id: String, fields: Vec<String>) -> Entry {
    let mut name = String::new();
    let mut file_id = None;
    for pair in fields.chunks_exact(2) {
        match pair[0].as_str() {
            "name" => name = pair[1].clone(),
            "id" => file_id = u64::from_str_radix(&pair[1], 16).ok(),
            _ => {}
        }
    }
    Entry { id, name, file_id }
}

type RawEntries = Vec<(String, Vec<String>)>;

struct Stream {
    key: String,
    consumer: String,
    claim_idle_ms: u64,
    batch: usize,
    /// Where the next XAUTOCLAIM scan starts.
    cursor: String,
}

impl Stream {
    fn create_group(&self, cluster: &mut ClusterClient) -> Result<(), MetadataError> {
        let created = cluster.metadata().raw(|c| {
            redis::cmd("XGROUP").arg("CREATE").arg(&self.key).arg(GROUP).arg("0").arg("MKSTREAM").query::<()>(c)
        });
        match created {
            Err(MetadataError::Remote(text)) if text.contains("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// Entries held too long by a consumer that stopped, taken over.
    fn claim(&mut self, cluster: &mut ClusterClient) -> Result<Vec<Entry>, MetadataError> {
        let (next, entries, _deleted): (String, RawEntries, Vec<String>) = cluster.metadata().raw(|c| {
            redis::cmd("XAUTOCLAIM")
                .arg(&self.key)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(self.claim_idle_ms)
                .arg(&self.cursor)
                .arg("COUNT")
                .arg(self.batch)
                .query(c)
        })?;
        self.cursor = next;
        Ok(entries.into_iter().map(|(id, fields)| entry(id, fields)).collect())
    }

    /// New entries, waiting at most [`BLOCK_MS`] for some.
    fn read(&self, cluster: &mut ClusterClient) -> Result<Vec<Entry>, MetadataError> {
        let reply: Option<Vec<(String, RawEntries)>> = cluster.metadata().raw(|c| {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(self.batch)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(">")
                .query(c)
        })?;
        Ok(reply.into_iter().flatten().flat_map(|(_, entries)| entries).map(|(id, fields)| entry(id, fields)).collect())
    }

    fn ack(&self, cluster: &mut ClusterClient, id: &str) -> Result<(), MetadataError> {
        cluster.metadata().raw(|c| redis::cmd("XACK").arg(&self.key).arg(GROUP).arg(id).query::<i64>(c))?;
        Ok(())
    }

    /// Entries not yet delivered plus those delivered and not acknowledged.
    fn lag(&self, cluster: &mut ClusterClient) -> Result<u64, MetadataError> {
        let groups: Vec<redis::Value> =
            cluster.metadata().raw(|c| redis::cmd("XINFO").arg("GROUPS").arg(&self.key).query(c))?;
        let mut waiting = 0;
        for group in groups {
            let fields: std::collections::HashMap<String, redis::Value> =
                redis::from_redis_value(group).unwrap_or_default();
            let is_ours = fields.get("name").and_then(|name| redis::from_redis_value::<String>(name.clone()).ok())
                == Some(GROUP.to_owned());
            if is_ours {
                for field in ["pending", "lag"] {
                    if let Some(value) = fields.get(field) {
                        waiting += redis::from_redis_value::<Option<u64>>(value.clone()).ok().flatten().unwrap_or(0);
                    }
                }
            }
        }
        Ok(waiting)
    }
}

/// Tags files from the stream until `stop` is set.
pub fn run(options: &StreamOptions, stop: &AtomicBool, stats: &TaggerStats) -> Result<(), TaggerError> {
    let mut cluster = ClusterClient::connect(&options.url, &options.prefix, options.key.clone(), None)?;
    let mut stream = Stream {
        key: cluster.metadata().tagging_key(),
        consumer: options.consumer.clone(),
        claim_idle_ms: options.claim_idle_ms.max(1),
        batch: options.batch.clamp(1, BATCH_MAX),
        cursor: "0-0".into(),
    };
    stream.create_group(&mut cluster)?;
    info!(consumer = options.consumer, stream = stream.key, "tagger running");
    // Bounded by `stop`; every turn blocks at most BLOCK_MS in Redis or tags a batch.
    while !stop.load(Ordering::Acquire) {
        match turn(options, &mut stream, &mut cluster, stop, stats) {
            Ok(()) => {}
            Err(_) if stop.load(Ordering::Acquire) => break,
            Err(error) => {
                warn!(%error, "the tagger will retry");
                // Redis away: wait a little before trying again, still answering stop.
                for _ in 0..10 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    info!(consumer = options.consumer, "tagger stopped");
    Ok(())
}

fn turn(
    options: &StreamOptions,
    stream: &mut Stream,
    cluster: &mut ClusterClient,
    stop: &AtomicBool,
    stats: &TaggerStats,
) -> Result<(), TaggerError> {
    if let Ok(lag) = stream.lag(cluster) {
        stats.lag.store(lag, Ordering::Relaxed);
    }
    let mut entries = stream.claim(cluster)?;
    if !entries.is_empty() {
        stats.entries_claimed.fetch_add(entries.len() as u64, Ordering::Relaxed);
        info!(entries = entries.len(), "took over entries another tagger held too long");
    } else {
        entries = stream.read(cluster)?;
    }
    for entry in entries {
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        if options.hold.as_deref() == Some(entry.name.as_str()) {
            info!(file = entry.name, "holding this file until stopped (BEELINE_TAGGER_HOLD)");
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        tag_entry(options, cluster, &entry, stats)?;
        stream.ack(cluster, &entry.id)?;
    }
    Ok(())
}

/// Tags one file; `Ok` also when the file went or changed (nothing to do), `Err` only
/// when Redis failed (the entry stays pending and is retried).
fn tag_entry(
    options: &StreamOptions,
    cluster: &mut ClusterClient,
    entry: &Entry,
    stats: &TaggerStats,
) -> Result<(), TaggerError> {
    let Some(file_id) = entry.file_id else {
        warn!(entry = entry.id, "a tagging entry without a file id; skipped");
        return Ok(());
    };
    let mut prefix = PrefixWriter::new(&entry.name, options.limits.bytes_max);
    let read = match cluster.get_writer(&entry.name, &mut prefix, "the tagger", &mut |_| {}) {
        Ok(layout) if layout.record.file_id != file_id => {
            stats.files_gone.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        Ok(_) => Ok(prefix.bytes),
        Err(ClusterError::NotFound(_)) => {
            stats.files_gone.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        Err(ClusterError::Metadata(error)) => return Err(error.into()),
        Err(error) if PrefixWriter::had_enough(&error) => Ok(prefix.bytes),
        Err(error) => Err((prefix.bytes, error.to_string())),
    };
    let tags = tags_for(&entry.name, read, &options.limits, stats);
    match cluster.metadata().add_tags_for(&entry.name, file_id, &tags)? {
        Some(_) => stats.tagged(&tags),
        None => {
            stats.files_gone.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
