//! The DisGraFS metadata cluster on Redis: the namespace (files, their chunks and
//! replicas, tags), node membership with leases, and the cluster's configuration.
//! The key schema is in `docs/metadata.md`. Every key carries the same hash tag, so the
//! whole schema lives in one hash slot and the multi-key writes that must agree (a
//! file's record, its replicas and the name index) run in one Lua script, on a single
//! Redis or on Redis Cluster alike.

pub mod placement;

use std::time::{SystemTime, UNIX_EPOCH};

use redis::{Commands, Connection, Script};
use serde::{Deserialize, Serialize};

use crate::cluster::placement::NodeId;
use crate::control::FileRecord;
use crate::metadata::{
    FileTag, Metadata, MetadataError, SOURCE_USER, TAGS_PER_FILE_MAX, TagCount, validate_source, validate_tag,
};

/// The version of the metadata layout (the key schema in `docs/metadata.md`) this
/// Beeline reads and writes, kept in `{prefix}:format`.
pub const METADATA_FORMAT: u64 = 1;

/// Default key prefix (also the hash tag).
pub const DEFAULT_PREFIX: &str = "beeline";
pub const DEFAULT_REPLICATION_FACTOR: usize = 2;

pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn redis_error(url: &str) -> impl Fn(redis::RedisError) -> MetadataError + '_ {
    move |error| {
        let hint = if error.kind() == redis::ErrorKind::AuthenticationFailed {
            "check the user and password in the URL (redis://USER:PASSWORD@HOST:PORT)"
        } else if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
            "is redis-server running there and reachable?"
        } else {
            "see the Redis server's log"
        };
        MetadataError::Remote(format!("Redis at {}: {error}; {hint}", redact(url)))
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// Address clients reach its storage port at.
    pub address: String,
    pub backend: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub health: String,
    pub heartbeat_unix_ms: u64,
    /// `false` once it left cleanly.
    pub serving: bool,
    pub metrics_address: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Its lease is current.
    Live,
    /// Its lease expired: presumed dead.
    Expired,
    /// It deregistered on shutdown.
    Left,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Live => "live",
            MemberState::Expired => "expired",
            MemberState::Left => "left",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub record: NodeRecord,
    pub state: MemberState,
}

/// A file's record plus where each of its chunks is stored.
///
/// Stored as postcard `(record, replicas)` followed, when there are chunk hashes, by
/// postcard `chunk_blake3`: a layout written before chunk hashes existed has no tail and
/// reads back with none (and encodes back to the very same bytes, which the
/// compare-and-swap of repair relies on), and a reader that predates them ignores the tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    pub record: FileRecord,
    /// `replicas[i]`: the nodes holding chunk `i`.
    pub replicas: Vec<Vec<NodeId>>,
    /// `chunk_blake3[i]`: BLAKE3 of chunk `i`'s bytes; empty for files stored before
    /// chunk hashes were recorded (only the whole-file hash can be checked then).
    pub chunk_blake3: Vec<[u8; 32]>,
}

impl FileLayout {
    /// The hash chunk `index` must have, when the layout records one.
    pub fn chunk_hash(&self, index: u64) -> Option<&[u8; 32]> {
        usize::try_from(index).ok().and_then(|index| self.chunk_blake3.get(index))
    }

    pub fn encode(&self) -> Result<Vec<u8>, MetadataError> {
        let storage = |error: postcard::Error| MetadataError::Storage(error.to_string());
        let mut bytes = postcard::to_stdvec(&(&self.record, &self.replicas)).map_err(storage)?;
        if !self.chunk_blake3.is_empty() {
            bytes.extend(postcard::to_stdvec(&self.chunk_blake3).map_err(storage)?);
        }
        Ok(bytes)
    }

    pub fn decode(name: &str, bytes: &[u8]) -> Result<Self, MetadataError> {
        let corrupt =
            |error: postcard::Error| MetadataError::Corrupt { name: name.to_owned(), reason: error.to_string() };
        let ((record, replicas), tail): ((FileRecord, Vec<Vec<NodeId>>), &[u8]) =
            postcard::take_from_bytes(bytes).map_err(corrupt)?;
        let chunk_blake3: Vec<[u8; 32]> =
            if tail.is_empty() { Vec::new() } else { postcard::from_bytes(tail).map_err(corrupt)? };
        if !chunk_blake3.is_empty() && chunk_blake3.len() as u64 != record.chunk_count() {
            return Err(MetadataError::Corrupt {
                name: name.to_owned(),
                reason: format!("{} chunk hashes for {} chunks", chunk_blake3.len(), record.chunk_count()),
            });
        }
        Ok(Self { record, replicas, chunk_blake3 })
    }
}

/// A copy of a chunk found bad (its bytes do not match the chunk's hash, or the node
/// no longer has it) on a node that the file's layout lists for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BadReplica {
    pub file_id: u64,
    pub index: u64,
    pub node: NodeId,
}

impl BadReplica {
    fn member(&self) -> String {
        format!("{:016x}:{}:{:016x}", self.file_id, self.index, self.node)
    }

    fn parse(member: &str) -> Option<Self> {
        let mut parts = member.split(':');
        let file_id = u64::from_str_radix(parts.next()?, 16).ok()?;
        let index = parts.next()?.parse().ok()?;
        let node = u64::from_str_radix(parts.next()?, 16).ok()?;
        parts.next().is_none().then_some(Self { file_id, index, node })
    }
}

pub struct RedisMetadata {
    url: String,
    client: redis::Client,
    connection: Option<Connection>,
    prefix: String,
}

/// The Lua function the tag scripts share: drops a file's tag edges (every one, or only
/// the automatic ones), keeping `tag:<tag>` sets and the `tagnames` index in step.
/// Tags without a source in `tagsrc:<name>` (written before sources existed) are the
/// user's. `tag:<tag>` keys are built from the prefix: they share the hash tag, so they
/// live in the same slot as the declared keys.
const DROP_TAGS_LUA: &str = r"
local function drop_tags(name, tags_key, src_key, names_key, tag_prefix, only_auto)
  local removed = {}
  for _, tag in ipairs(redis.call('SMEMBERS', tags_key)) do
    local source = redis.call('HGET', src_key, tag) or 'user'
    if not only_auto or source ~= 'user' then
      redis.call('SREM', tags_key, tag)
      redis.call('HDEL', src_key, tag)
      redis.call('SREM', tag_prefix .. tag, name)
      if redis.call('SCARD', tag_prefix .. tag) == 0 then redis.call('ZREM', names_key, tag) end
      table.insert(removed, tag)
      table.insert(removed, source)
    end
  end
  return removed
end
";

/// Records a file (KEYS: file, names, tags, tagsrc, tagnames, tagging stream; ARGV:
/// layout, name, file id, tag key prefix, stream length bound). A replaced file of
/// another id loses its automatic tags; the new one goes on the tagging stream.
const PUT_FILE_BODY: &str = r"
local old = redis.call('HGET', KEYS[1], 'layout')
local old_id = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'layout', ARGV[1], 'id', ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
if old and old_id ~= ARGV[3] then drop_tags(ARGV[2], KEYS[3], KEYS[4], KEYS[5], ARGV[4], true) end
if old_id ~= ARGV[3] then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[5], '*', 'name', ARGV[2], 'id', ARGV[3])
end
return old";

/// Removes a file and its tag edges (KEYS: file, names, tags, tagsrc, tagnames; ARGV:
/// name, tag key prefix).
const REMOVE_FILE_BODY: &str = r"
local old = redis.call('HGET', KEYS[1], 'layout')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if old then drop_tags(ARGV[1], KEYS[3], KEYS[4], KEYS[5], ARGV[2], false) end
return old";

/// Adds tags (KEYS: file, tags, tagsrc, tagnames; ARGV: name, tag key prefix, cap,
/// `capped` (1: drop tags past the cap instead of failing), the file id the tags are for
/// or '' for any, then tag, source pairs). Returns how many edges are new.
const ADD_TAGS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('BEELINE_NO_SUCH_FILE') end
if ARGV[5] ~= '' and redis.call('HGET', KEYS[1], 'id') ~= ARGV[5] then return -1 end
local have = redis.call('SCARD', KEYS[2])
local added = 0
for i = 6, #ARGV, 2 do
  local tag, source = ARGV[i], ARGV[i + 1]
  if redis.call('SISMEMBER', KEYS[2], tag) == 1 then
    local old = redis.call('HGET', KEYS[3], tag)
    if old and old ~= 'user' and source == 'user' then redis.call('HSET', KEYS[3], tag, 'user') end
  elseif have >= tonumber(ARGV[3]) then
    if ARGV[4] == '0' then return redis.error_reply('BEELINE_TOO_MANY_TAGS') end
  else
    redis.call('SADD', KEYS[2], tag)
    redis.call('HSET', KEYS[3], tag, source)
    redis.call('SADD', ARGV[2] .. tag, ARGV[1])
    redis.call('ZADD', KEYS[4], 0, tag)
    have = have + 1
    added = added + 1
  end
end
return added";

/// Removes the named tags of a file (KEYS: tags, tagsrc, tagnames; ARGV: name, tag key
/// prefix, tags...); returns tag, source pairs of those removed.
const REMOVE_TAGS: &str = r"
local removed = {}
for i = 3, #ARGV do
  local tag = ARGV[i]
  if redis.call('SREM', KEYS[1], tag) == 1 then
    local source = redis.call('HGET', KEYS[2], tag) or 'user'
    redis.call('HDEL', KEYS[2], tag)
    redis.call('SREM', ARGV[2] .. tag, ARGV[1])
    if redis.call('SCARD', ARGV[2] .. tag) == 0 then redis.call('ZREM', KEYS[3], tag) end
    table.insert(removed, tag)
    table.insert(removed, source)
  end
end
return removed";

/// Entries the tagging stream keeps (`XADD MAXLEN ~`): a bound on Redis memory when no
/// tagger runs; older entries beyond it are trimmed untagged.
pub const TAGGING_STREAM_LEN_MAX: u64 = 100_000;

/// Replaces a file's layout only if it still is the version the caller read.
const SWAP_LAYOUT: &str = r"
local current = redis.call('HGET', KEYS[1], 'layout')
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'layout', ARGV[2])
return 1";

/// Registers a put before its first chunk is written, at Redis's own clock.
const REGISTER_PUT: &str = r"
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'NX', t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
return 1";

/// Refreshes a put's entry unless garbage collection claimed it (then 0).
const TOUCH_PUT: &str = r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'XX', t[1] * 1000 + math.floor(t[2] / 1000), ARGV[1])
return 1";

/// Records a put's file only while its entry stands (garbage collection did not claim
/// its chunks), and ends the entry, in one step (KEYS: those of [`PUT_FILE_BODY`], then
/// puts; ARGV: those of [`PUT_FILE_BODY`]).
const COMMIT_PUT_HEAD: &str = r"
if not redis.call('ZSCORE', KEYS[7], ARGV[3]) then return redis.error_reply('BEELINE_PUT_RECLAIMED') end
redis.call('ZREM', KEYS[7], ARGV[3])
";

/// Claims a stale put for garbage collection: removes its entry if it was not refreshed
/// since it was read (then 1), so that the put can no longer commit.
const CLAIM_PUT: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) return 1 end
return 0";

/// Writes the format version into metadata that has none (a new cluster, one from before
/// format versions, or a Redis restarted empty), and returns the version stored.
const CLAIM_FORMAT: &str = r"
local stored = redis.call('GET', KEYS[1])
if stored then return stored end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]";

/// The marker [`RedisMetadata::commit_put`] fails with when the put was claimed.
pub const PUT_RECLAIMED: &str = "BEELINE_PUT_RECLAIMED";

impl RedisMetadata {
    /// Connects to `url` (`redis://[USER:PASSWORD@]HOST:PORT[/DB]`).
    pub fn connect(url: &str, prefix: &str) -> Result<Self, MetadataError> {
        let client = redis::Client::open(url).map_err(|error| {
            MetadataError::Remote(format!(
                "bad metadata URL {}: {error}; use redis://[USER:PASSWORD@]HOST:PORT",
                redact(url)
            ))
        })?;
        let mut metadata = Self { url: url.to_owned(), client, connection: None, prefix: prefix.to_owned() };
        metadata.connection()?;
        Ok(metadata)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn connection(&mut self) -> Result<&mut Connection, MetadataError> {
        if self.connection.is_none() {
            let mut connection = self
                .client
                .get_connection_with_timeout(std::time::Duration::from_secs(3))
                .map_err(redis_error(&self.url))?;
            connection.set_read_timeout(Some(std::time::Duration::from_secs(5))).map_err(redis_error(&self.url))?;
            connection.set_write_timeout(Some(std::time::Duration::from_secs(5))).map_err(redis_error(&self.url))?;
            self.check_format(&mut connection)?;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("just set"))
    }

    /// Checks the metadata's format version on every new connection (so also after Redis
    /// restarted): absent is written as this version, a newer or unknown one is refused
    /// before anything is read or written.
    fn check_format(&self, connection: &mut Connection) -> Result<(), MetadataError> {
        let key = self.key("format");
        let stored: String = Script::new(CLAIM_FORMAT)
            .key(&key)
            .arg(METADATA_FORMAT)
            .invoke(connection)
            .map_err(redis_error(&self.url))?;
        match stored.parse::<u64>() {
            Ok(METADATA_FORMAT) => Ok(()),
            Ok(found) if found > METADATA_FORMAT => {
                Err(MetadataError::NewerFormat { url: redact(&self.url), key, found, supported: METADATA_FORMAT })
            }
            _ => Err(MetadataError::ForeignFormat { url: redact(&self.url), key, found: stored }),
        }
    }

    /// Runs one operation; a failed connection is dropped so the next call reconnects
    /// (after a Redis restart, say).
    fn with<T>(
        &mut self,
        operation: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, MetadataError> {
        let url = self.url.clone();
        let connection = self.connection()?;
        match operation(connection) {
            Ok(value) => Ok(value),
            Err(error) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error() {
                    self.connection = None;
                }
                Err(redis_error(&url)(error))
            }
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{{{}}}:{rest}", self.prefix)
    }

    fn file_key(&self, name: &str) -> String {
        self.key(&format!("file:{name}"))
    }

    fn names_key(&self) -> String {
        self.key("names")
    }

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, MetadataError> {
        postcard::to_stdvec(value).map_err(|error| MetadataError::Storage(error.to_string()))
    }

    fn decode_layout(name: &str, bytes: &[u8]) -> Result<FileLayout, MetadataError> {
        FileLayout::decode(name, bytes)
    }

    /// The keys of a file's tag edges: `tags:<name>`, `tagsrc:<name>`, `tagnames`.
    fn tag_keys(&self, name: &str) -> [String; 3] {
        [self.key(&format!("tags:{name}")), self.key(&format!("tagsrc:{name}")), self.key("tagnames")]
    }

    /// The prefix of `tag:<tag>` keys.
    fn tag_prefix(&self) -> String {
        self.key("tag:")
    }

    /// The stream new files wait on for the taggers.
    pub fn tagging_key(&self) -> String {
        self.key("tagging")
    }

    /// The recording script: `head` (commit_put's check) then [`PUT_FILE_BODY`], with the
    /// shared Lua function.
    fn put_script(head: &str) -> Script {
        Script::new(&format!("{DROP_TAGS_LUA}{head}{PUT_FILE_BODY}"))
    }

    fn put_invocation<'s>(
        &self,
        script: &'s Script,
        layout: &FileLayout,
        bytes: Vec<u8>,
    ) -> redis::ScriptInvocation<'s> {
        let name = &layout.record.name;
        let mut invocation = script.prepare_invoke();
        invocation.key(self.file_key(name)).key(self.names_key());
        for key in self.tag_keys(name) {
            invocation.key(key);
        }
        invocation
            .key(self.tagging_key())
            .arg(bytes)
            .arg(name)
            .arg(format!("{:016x}", layout.record.file_id))
            .arg(self.tag_prefix())
            .arg(TAGGING_STREAM_LEN_MAX);
        invocation
    }

    /// Records a file with its replicas atomically; returns the layout it replaced.
    pub fn put_layout(&mut self, layout: &FileLayout) -> Result<Option<FileLayout>, MetadataError> {
        let bytes = layout.encode()?;
        let name = layout.record.name.clone();
        let script = Self::put_script("");
        let invocation = self.put_invocation(&script, layout, bytes);
        let old: Option<Vec<u8>> = self.with(|c| invocation.invoke(c))?;
        old.map(|old| Self::decode_layout(&name, &old)).transpose()
    }

    pub fn get_layout(&mut self, name: &str) -> Result<Option<FileLayout>, MetadataError> {
        let key = self.file_key(name);
        let bytes: Option<Vec<u8>> = self.with(|c| c.hget(&key, "layout"))?;
        bytes.map(|bytes| Self::decode_layout(name, &bytes)).transpose()
    }

    /// Replaces `old` with `new` unless someone changed the file meanwhile; returns
    /// whether it was replaced.
    pub fn swap_layout(&mut self, old: &FileLayout, new: &FileLayout) -> Result<bool, MetadataError> {
        assert_eq!(old.record.name, new.record.name);
        let (old_bytes, new_bytes) = (old.encode()?, new.encode()?);
        let key = self.file_key(&new.record.name);
        let swapped: i64 = self.with(|c| Script::new(SWAP_LAYOUT).key(&key).arg(old_bytes).arg(new_bytes).invoke(c))?;
        Ok(swapped == 1)
    }

    /// Removes a file, and its tag edges with it.
    pub fn remove_layout(&mut self, name: &str) -> Result<Option<FileLayout>, MetadataError> {
        let (file_key, names_key) = (self.file_key(name), self.names_key());
        let [tags, src, names] = self.tag_keys(name);
        let prefix = self.tag_prefix();
        let script = Script::new(&format!("{DROP_TAGS_LUA}{REMOVE_FILE_BODY}"));
        let old: Option<Vec<u8>> = self.with(|c| {
            script.key(&file_key).key(&names_key).key(&tags).key(&src).key(&names).arg(name).arg(&prefix).invoke(c)
        })?;
        old.map(|old| Self::decode_layout(name, &old)).transpose()
    }

    fn puts_key(&self) -> String {
        self.key("puts")
    }

    /// Says a put of `file_id` is under way (before any of its chunks is written), so that
    /// garbage collection leaves its chunks alone while it is refreshed.
    pub fn register_put(&mut self, file_id: u64) -> Result<(), MetadataError> {
        let key = self.puts_key();
        self.with(|c| Script::new(REGISTER_PUT).key(&key).arg(format!("{file_id:016x}")).invoke::<i64>(c))?;
        Ok(())
    }

    /// Refreshes a put's entry; `false` when garbage collection claimed it (the put
    /// stalled longer than the grace period and can no longer commit).
    pub fn touch_put(&mut self, file_id: u64) -> Result<bool, MetadataError> {
        let key = self.puts_key();
        let touched: i64 = self.with(|c| Script::new(TOUCH_PUT).key(&key).arg(format!("{file_id:016x}")).invoke(c))?;
        Ok(touched == 1)
    }

    /// Records the layout of a registered put and ends its entry; `Ok(Err(()))` when the
    /// entry was claimed by garbage collection (nothing recorded).
    #[allow(clippy::type_complexity)]
    pub fn commit_put(&mut self, layout: &FileLayout) -> Result<Result<Option<FileLayout>, ()>, MetadataError> {
        let bytes = layout.encode()?;
        let name = layout.record.name.clone();
        let script = Self::put_script(COMMIT_PUT_HEAD);
        let mut invocation = self.put_invocation(&script, layout, bytes);
        invocation.key(self.puts_key());
        let outcome: Result<Option<Vec<u8>>, MetadataError> = self.with(|c| invocation.invoke(c));
        match outcome {
            Ok(old) => Ok(Ok(old.map(|old| Self::decode_layout(&name, &old)).transpose()?)),
            Err(MetadataError::Remote(text)) if text.contains(PUT_RECLAIMED) => Ok(Err(())),
            Err(error) => Err(error),
        }
    }

    /// Redis's clock (ms since the epoch) and every registered put as (file id, last
    /// refreshed at, on that clock).
    pub fn pending_puts(&mut self) -> Result<(u64, Vec<(u64, u64)>), MetadataError> {
        let key = self.puts_key();
        let ((seconds, micros), entries): ((u64, u64), Vec<(String, u64)>) =
            self.with(|c| redis::pipe().cmd("TIME").zrange_withscores(&key, 0, -1).query(c))?;
        let puts = entries
            .into_iter()
            .filter_map(|(member, score)| Some((u64::from_str_radix(&member, 16).ok()?, score)))
            .collect();
        Ok((seconds * 1000 + micros / 1000, puts))
    }

    /// Claims a stale put (see [`CLAIM_PUT`]); `true` when it is now garbage.
    pub fn claim_put(&mut self, file_id: u64, refreshed_at: u64) -> Result<bool, MetadataError> {
        let key = self.puts_key();
        let claimed: i64 =
            self.with(|c| Script::new(CLAIM_PUT).key(&key).arg(format!("{file_id:016x}")).arg(refreshed_at).invoke(c))?;
        Ok(claimed == 1)
    }

    /// The layout of every file recorded, by file id, read a page of names at a time.
    pub fn referenced_layouts(&mut self) -> Result<std::collections::HashMap<u64, FileLayout>, MetadataError> {
        let mut referenced = std::collections::HashMap::new();
        let mut after: Option<String> = None;
        // Bounded: every page moves `after` forward.
        loop {
            let names = self.list_names(after.as_deref(), 1000)?;
            // An empty pipeline is a client error in redis-rs ("empty command"): a cluster
            // with no files has no layouts to read.
            if names.is_empty() {
                return Ok(referenced);
            }
            let keys: Vec<String> = names.iter().map(|name| self.file_key(name)).collect();
            let layouts: Vec<Option<Vec<u8>>> = self.with(|c| {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.hget(key, "layout");
                }
                pipe.query(c)
            })?;
            for (name, bytes) in names.iter().zip(layouts) {
                if let Some(bytes) = bytes {
                    let layout = Self::decode_layout(name, &bytes)?;
                    referenced.insert(layout.record.file_id, layout);
                }
            }
            match names.last() {
                Some(last) if names.len() == 1000 => after = Some(last.clone()),
                _ => return Ok(referenced),
            }
        }
    }

    fn epoch_key(&self) -> String {
        self.key("cluster")
    }

    /// The cluster's identity in this metadata store, created (at random) if it has none:
    /// a Redis restarted empty comes back with a new one.
    pub fn cluster_epoch(&mut self) -> Result<u64, MetadataError> {
        let key = self.epoch_key();
        let fresh = format!("{:016x}", rand::random::<u64>() | 1);
        let (_, epoch): (bool, String) =
            self.with(|c| redis::pipe().hset_nx(&key, "epoch", &fresh).hget(&key, "epoch").query(c))?;
        u64::from_str_radix(&epoch, 16)
            .map_err(|_| MetadataError::Corrupt { name: "the cluster epoch".into(), reason: epoch.clone() })
    }

    fn forget_key(&self, node: NodeId) -> String {
        self.key(&format!("forget:{node:016x}"))
    }

    /// An operator's go-ahead for `node` to drop its claim on `old_epoch` (its chunks from
    /// before the metadata was lost become ordinary garbage).
    pub fn allow_forget(&mut self, node: NodeId, old_epoch: u64) -> Result<(), MetadataError> {
        let key = self.forget_key(node);
        self.with(|c| c.set(&key, format!("{old_epoch:016x}")))
    }

    /// Whether an operator allowed `node` to forget `old_epoch`; consumes the permission.
    pub fn take_forget(&mut self, node: NodeId, old_epoch: u64) -> Result<bool, MetadataError> {
        let key = self.forget_key(node);
        let value: Option<String> = self.with(|c| c.get(&key))?;
        let allowed = value.is_some_and(|value| u64::from_str_radix(&value, 16) == Ok(old_epoch));
        if allowed {
            self.with(|c| c.del::<_, ()>(&key))?;
        }
        Ok(allowed)
    }

    fn bad_key(&self) -> String {
        self.key("bad")
    }

    /// Records copies found bad, so that `cluster status` counts them and repair replaces
    /// them.
    pub fn mark_bad(&mut self, bad: &[BadReplica]) -> Result<(), MetadataError> {
        if bad.is_empty() {
            return Ok(());
        }
        let key = self.bad_key();
        let members: Vec<String> = bad.iter().map(BadReplica::member).collect();
        self.with(|c| c.sadd(&key, members))
    }

    /// Forgets marks (the copy was replaced, or the node left the chunk's replica list).
    pub fn clear_bad(&mut self, bad: &[BadReplica]) -> Result<(), MetadataError> {
        if bad.is_empty() {
            return Ok(());
        }
        let key = self.bad_key();
        let members: Vec<String> = bad.iter().map(BadReplica::member).collect();
        self.with(|c| c.srem(&key, members))
    }

    /// Every copy marked bad (unreadable marks are skipped).
    pub fn bad_replicas(&mut self) -> Result<std::collections::BTreeSet<BadReplica>, MetadataError> {
        let key = self.bad_key();
        let members: Vec<String> = self.with(|c| c.smembers(&key))?;
        Ok(members.iter().filter_map(|member| BadReplica::parse(member)).collect())
    }

    /// Names in order after `after`, at most `limit`.
    pub fn list_names(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, MetadataError> {
        let key = self.names_key();
        let min = match after {
            Some(after) => format!("({after}"),
            None => "-".to_owned(),
        };
        self.with(|c| c.zrangebylex_limit(&key, &min, "+", 0, limit as isize))
    }

    pub fn replication_factor(&mut self) -> Result<usize, MetadataError> {
        let key = self.key("config");
        let value: Option<usize> = self.with(|c| c.hget(&key, "replication_factor"))?;
        Ok(value.unwrap_or(DEFAULT_REPLICATION_FACTOR).max(1))
    }

    pub fn set_replication_factor(&mut self, factor: usize) -> Result<(), MetadataError> {
        assert!(factor >= 1);
        let key = self.key("config");
        self.with(|c| c.hset(&key, "replication_factor", factor))
    }

    /// Registers or refreshes a node: its record, and a lease that expires after `ttl_ms`
    /// unless refreshed. Idempotent, so it also re-registers after Redis lost its data.
    pub fn heartbeat(&mut self, record: &NodeRecord, ttl_ms: u64) -> Result<(), MetadataError> {
        let bytes = Self::encode(record)?;
        let (node_key, lease_key, nodes_key) = (
            self.key(&format!("node:{:016x}", record.id)),
            self.key(&format!("lease:{:016x}", record.id)),
            self.key("nodes"),
        );
        let id = record.id;
        self.with(|c| {
            redis::pipe()
                .atomic()
                .hset(&node_key, "record", bytes)
                .ignore()
                .set_options(&lease_key, 1, redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl_ms)))
                .ignore()
                .sadd(&nodes_key, format!("{id:016x}"))
                .ignore()
                .query::<()>(c)
        })
    }

    /// Deregisters cleanly: the lease goes, the record says it left.
    pub fn leave(&mut self, record: &NodeRecord) -> Result<(), MetadataError> {
        let left = NodeRecord { serving: false, heartbeat_unix_ms: now_unix_ms(), ..record.clone() };
        let bytes = Self::encode(&left)?;
        let (node_key, lease_key) =
            (self.key(&format!("node:{:016x}", record.id)), self.key(&format!("lease:{:016x}", record.id)));
        self.with(|c| {
            redis::pipe().atomic().hset(&node_key, "record", bytes).ignore().del(&lease_key).ignore().query::<()>(c)
        })
    }

    /// Removes a node from the membership entirely (an operator's decision).
    pub fn forget_node(&mut self, id: NodeId) -> Result<(), MetadataError> {
        let (node_key, lease_key, nodes_key) =
            (self.key(&format!("node:{id:016x}")), self.key(&format!("lease:{id:016x}")), self.key("nodes"));
        self.with(|c| {
            redis::pipe()
                .atomic()
                .del(&node_key)
                .ignore()
                .del(&lease_key)
                .ignore()
                .srem(&nodes_key, format!("{id:016x}"))
                .ignore()
                .query::<()>(c)
        })
    }

    pub fn members(&mut self) -> Result<Vec<Member>, MetadataError> {
        let nodes_key = self.key("nodes");
        let mut ids: Vec<String> = self.with(|c| c.smembers(&nodes_key))?;
        ids.sort();
        let mut members = Vec::with_capacity(ids.len());
        for id in ids {
            let (node_key, lease_key) = (self.key(&format!("node:{id}")), self.key(&format!("lease:{id}")));
            let (bytes, lease): (Option<Vec<u8>>, bool) =
                self.with(|c| redis::pipe().hget(&node_key, "record").exists(&lease_key).query(c))?;
            let Some(bytes) = bytes else { continue };
            let record: NodeRecord = postcard::from_bytes(&bytes)
                .map_err(|error| MetadataError::Corrupt { name: format!("node {id}"), reason: error.to_string() })?;
            let state = match (lease, record.serving) {
                (true, _) => MemberState::Live,
                (false, true) => MemberState::Expired,
                (false, false) => MemberState::Left,
            };
            members.push(Member { record, state });
        }
        Ok(members)
    }

    pub fn live_nodes(&mut self) -> Result<Vec<NodeRecord>, MetadataError> {
        Ok(self.members()?.into_iter().filter(|m| m.state == MemberState::Live).map(|m| m.record).collect())
    }

    /// Adds tags for the file `name` only while it is the file `file_id` (a tagger's
    /// result for content since replaced is dropped); tags past the per-file cap are
    /// dropped. `Ok(None)` when the file changed or went.
    pub fn add_tags_for(&mut self, name: &str, file_id: u64, tags: &[FileTag]) -> Result<Option<usize>, MetadataError> {
        match self.add_tags_script(name, Some(file_id), tags) {
            Ok(added) => Ok((added >= 0).then_some(added as usize)),
            Err(MetadataError::NoSuchFile(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn add_tags_script(&mut self, name: &str, file_id: Option<u64>, tags: &[FileTag]) -> Result<i64, MetadataError> {
        for tag in tags {
            validate_tag(&tag.tag).and_then(|()| validate_source(&tag.source)).map_err(MetadataError::BadTag)?;
        }
        let file_key = self.file_key(name);
        let [tags_key, src_key, names_key] = self.tag_keys(name);
        let prefix = self.tag_prefix();
        let outcome = self.with(|c| {
            let script = Script::new(ADD_TAGS);
            let mut invocation = script.key(&file_key);
            invocation.key(&tags_key).key(&src_key).key(&names_key);
            invocation.arg(name).arg(&prefix).arg(TAGS_PER_FILE_MAX).arg(if file_id.is_some() { 1 } else { 0 });
            invocation.arg(file_id.map(|id| format!("{id:016x}")).unwrap_or_default());
            for tag in tags {
                invocation.arg(&tag.tag).arg(&tag.source);
            }
            invocation.invoke::<i64>(c)
        });
        match outcome {
            Err(MetadataError::Remote(text)) if text.contains("BEELINE_NO_SUCH_FILE") => {
                Err(MetadataError::NoSuchFile(name.to_owned()))
            }
            Err(MetadataError::Remote(text)) if text.contains("BEELINE_TOO_MANY_TAGS") => {
                Err(MetadataError::TooManyTags { name: name.to_owned() })
            }
            other => other,
        }
    }

    fn all_tags_of(&mut self, name: &str) -> Result<Vec<FileTag>, MetadataError> {
        let [tags_key, src_key, _] = self.tag_keys(name);
        let (tags, sources): (Vec<String>, std::collections::HashMap<String, String>) =
            self.with(|c| redis::pipe().smembers(&tags_key).hgetall(&src_key).query(c))?;
        let mut tags: Vec<FileTag> = tags
            .into_iter()
            .map(|tag| {
                let source = sources.get(&tag).cloned().unwrap_or_else(|| SOURCE_USER.to_owned());
                FileTag { tag, source }
            })
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// Runs raw commands (the tagging stream's consumer group, for `beeline tagger run`),
    /// with the same reconnection and error wording as every other call.
    pub fn raw<T>(
        &mut self,
        operation: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, MetadataError> {
        self.with(operation)
    }
}

/// The page of `sorted` after `after`, at most `limit` long.
fn page_after<T: Clone>(sorted: &[T], key: impl Fn(&T) -> &str, after: Option<&str>, limit: usize) -> Vec<T> {
    let start = after.map_or(0, |after| sorted.partition_point(|item| key(item) <= after));
    sorted[start..].iter().take(limit).cloned().collect()
}

impl Metadata for RedisMetadata {
    fn put_file(&mut self, record: &FileRecord) -> Result<Option<FileRecord>, MetadataError> {
        let layout = FileLayout { record: record.clone(), replicas: Vec::new(), chunk_blake3: Vec::new() };
        Ok(self.put_layout(&layout)?.map(|old| old.record))
    }

    fn get_file(&mut self, name: &str) -> Result<Option<FileRecord>, MetadataError> {
        Ok(self.get_layout(name)?.map(|layout| layout.record))
    }

    fn list(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<FileRecord>, MetadataError> {
        let names = self.list_names(after, limit)?;
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            // A name removed between the two reads is simply skipped.
            if let Some(layout) = self.get_layout(&name)? {
                files.push(layout.record);
            }
        }
        Ok(files)
    }

    fn remove_file(&mut self, name: &str) -> Result<Option<FileRecord>, MetadataError> {
        Ok(self.remove_layout(name)?.map(|layout| layout.record))
    }

    fn file_count(&mut self) -> Result<u64, MetadataError> {
        let key = self.names_key();
        self.with(|c| c.zcard(&key))
    }

    fn names(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, MetadataError> {
        self.list_names(after, limit)
    }

    fn add_tags(&mut self, name: &str, tags: &[FileTag]) -> Result<usize, MetadataError> {
        Ok(self.add_tags_script(name, None, tags)?.max(0) as usize)
    }

    fn remove_tags(&mut self, name: &str, tags: &[String]) -> Result<Vec<FileTag>, MetadataError> {
        let [tags_key, src_key, names_key] = self.tag_keys(name);
        let prefix = self.tag_prefix();
        let pairs: Vec<String> = self.with(|c| {
            let script = Script::new(REMOVE_TAGS);
            let mut invocation = script.key(&tags_key);
            invocation.key(&src_key).key(&names_key).arg(name).arg(&prefix);
            for tag in tags {
                invocation.arg(tag);
            }
            invocation.invoke(c)
        })?;
        Ok(pairs.chunks_exact(2).map(|pair| FileTag::new(pair[0].clone(), pair[1].clone())).collect())
    }

    fn tags_of(&mut self, name: &str, after: Option<&str>, limit: usize) -> Result<Vec<FileTag>, MetadataError> {
        let tags = self.all_tags_of(name)?;
        Ok(page_after(&tags, |tag| tag.tag.as_str(), after, limit))
    }

    /// Reads the tag's whole set (SMEMBERS) and pages it in name order.
    fn files_tagged(&mut self, tag: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, MetadataError> {
        let key = self.key(&format!("tag:{tag}"));
        let mut names: Vec<String> = self.with(|c| c.smembers(&key))?;
        names.sort();
        Ok(page_after(&names, |name| name.as_str(), after, limit))
    }

    fn tags_by_prefix(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TagCount>, MetadataError> {
        let key = self.key("tagnames");
        let min = match after {
            Some(after) if after >= prefix => format!("({after}"),
            _ => format!("[{prefix}"),
        };
        let tags: Vec<String> = self.with(|c| c.zrangebylex_limit(&key, &min, "+", 0, limit as isize))?;
        let tags: Vec<String> = tags.into_iter().take_while(|tag| tag.starts_with(prefix)).collect();
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = tags.iter().map(|tag| self.key(&format!("tag:{tag}"))).collect();
        let counts: Vec<u64> = self.with(|c| {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.scard(key);
            }
            pipe.query(c)
        })?;
        Ok(tags.into_iter().zip(counts).map(|(tag, files)| TagCount { tag, files }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout as it was stored before chunk hashes.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct LayoutV1 {
        record: FileRecord,
        replicas: Vec<Vec<NodeId>>,
    }

    fn record(size_bytes: u64) -> FileRecord {
        FileRecord { name: "f".into(), file_id: 9, size_bytes, chunk_bytes: 4, blake3: [3; 32], created_unix_ms: 1 }
    }

    #[test]
    fn a_layout_without_chunk_hashes_reads_and_encodes_back_byte_for_byte() {
        let old = LayoutV1 { record: record(10), replicas: vec![vec![1, 2], vec![2, 3], vec![3, 1]] };
        let bytes = postcard::to_stdvec(&old).unwrap();
        let layout = FileLayout::decode("f", &bytes).unwrap();
        assert!(layout.chunk_blake3.is_empty() && layout.chunk_hash(0).is_none());
        assert_eq!((&layout.record, &layout.replicas), (&old.record, &old.replicas));
        // Repair's compare-and-swap compares encodings: they must be the same bytes.
        assert_eq!(layout.encode().unwrap(), bytes);
    }

    #[test]
    fn chunk_hashes_round_trip_and_an_older_reader_ignores_them() {
        let layout = FileLayout {
            record: record(10),
            replicas: vec![vec![1, 2], vec![2, 3], vec![3, 1]],
            chunk_blake3: vec![[7; 32], [8; 32], [9; 32]],
        };
        let bytes = layout.encode().unwrap();
        assert_eq!(FileLayout::decode("f", &bytes).unwrap(), layout);
        assert_eq!(layout.chunk_hash(2), Some(&[9; 32]));
        assert_eq!(layout.chunk_hash(3), None);
        let old: LayoutV1 = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(old.replicas, layout.replicas);
        // A hash count that does not match the chunk count is refused, not misread.
        let short = FileLayout { chunk_blake3: vec![[7; 32]], ..layout.clone() };
        let error = FileLayout::decode("f", &short.encode().unwrap()).unwrap_err();
        assert!(error.to_string().contains("1 chunk hashes for 3 chunks"), "{error}");
        let error = FileLayout::decode("f", &bytes[..bytes.len() - 5]).unwrap_err();
        assert!(matches!(error, MetadataError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn bad_replica_marks_parse_back_and_refuse_garbage() {
        let mark = BadReplica { file_id: u64::MAX, index: 12, node: 0xabc };
        assert_eq!(BadReplica::parse(&mark.member()), Some(mark));
        for garbage in ["", "x:1:2", "1:2", "1:2:3:4", "1:-1:3"] {
            assert_eq!(BadReplica::parse(garbage), None, "{garbage}");
        }
    }
}
