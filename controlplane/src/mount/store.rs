//! What the mount asks of the storage, on one node or on the cluster alike: the same
//! client library the CLI uses (UDP today; a faster local transport slots in under
//! [`Client`] without this file changing), with every failure mapped to an `errno`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use crate::client::cluster::{ClusterClient, ClusterError};
use crate::client::{Client, ClientError, ClientOptions};
use crate::cluster::FileLayout;
use crate::control::FileRecord;
use crate::metadata::{FileTag, Metadata, MetadataError};
use beeline_dataplane::wire::ClusterKey;

/// How to reach the storage: one node, or the cluster whose metadata is in Redis.
#[derive(Clone)]
pub enum Target {
    Node(ClientOptions),
    Cluster { url: String, prefix: String, key: ClusterKey, fragment_bytes: Option<u16> },
}

/// A file as the mount reads it: its record, and in a cluster where its chunks are.
#[derive(Clone)]
pub enum Source {
    Node(FileRecord),
    Cluster(FileLayout),
}

impl Source {
    pub fn record(&self) -> &FileRecord {
        match self {
            Source::Node(record) => record,
            Source::Cluster(layout) => &layout.record,
        }
    }
}

/// A store failure, with the errno the kernel passes on and the message for the log.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub errno: i32,
    pub message: String,
}

impl StoreError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        StoreError { errno, message: message.into() }
    }
}

fn client_errno(error: &ClientError) -> i32 {
    match error {
        ClientError::NotFound { .. } => libc::ENOENT,
        ClientError::DiskFull { .. } => libc::ENOSPC,
        ClientError::BadName(_) => libc::EINVAL,
        ClientError::Busy { .. } => libc::EAGAIN,
        ClientError::Failed { reason, .. } if reason.contains("disk is full") => libc::ENOSPC,
        _ => libc::EIO,
    }
}

impl From<ClientError> for StoreError {
    fn from(error: ClientError) -> Self {
        StoreError::new(client_errno(&error), error.to_string())
    }
}

impl From<ClusterError> for StoreError {
    fn from(error: ClusterError) -> Self {
        let errno = match &error {
            ClusterError::NotFound(_) => libc::ENOENT,
            ClusterError::BadName(_) => libc::EINVAL,
            ClusterError::Client(inner) => client_errno(inner),
            ClusterError::Metadata(inner) => metadata_errno(inner),
            // The replicas are written in parallel and a full node's error is carried as
            // text: it is the one reason a write quorum fails that more space fixes.
            ClusterError::WriteQuorum { reason, .. } if reason.contains("disk is full") => libc::ENOSPC,
            _ => libc::EIO,
        };
        StoreError::new(errno, error.to_string())
    }
}

fn metadata_errno(error: &MetadataError) -> i32 {
    match error {
        MetadataError::NoSuchFile(_) => libc::ENOENT,
        MetadataError::TooManyTags { .. } => libc::ENOSPC,
        MetadataError::BadTag(_) => libc::EINVAL,
        _ => libc::EIO,
    }
}

impl From<MetadataError> for StoreError {
    fn from(error: MetadataError) -> Self {
        StoreError::new(metadata_errno(&error), error.to_string())
    }
}

impl From<crate::graph::GraphError> for StoreError {
    fn from(error: crate::graph::GraphError) -> Self {
        let errno = match &error {
            crate::graph::GraphError::NotFound(_) => libc::ENOENT,
            crate::graph::GraphError::Metadata(inner) => metadata_errno(inner),
            _ => libc::EIO,
        };
        StoreError::new(errno, error.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A connection to the storage.
pub enum Store {
    Node(Box<Client>),
    Cluster(Box<ClusterClient>),
}

impl Store {
    pub fn open(target: &Target) -> StoreResult<Store> {
        Ok(match target {
            Target::Node(options) => Store::Node(Box::new(Client::new(options.clone())?)),
            Target::Cluster { url, prefix, key, fragment_bytes } => {
                Store::Cluster(Box::new(ClusterClient::connect(url, prefix, key.clone(), *fragment_bytes)?))
            }
        })
    }

    /// Checks that the storage answers (before mounting, so that a wrong address fails at
    /// once rather than on the first `ls`).
    pub fn check(&mut self) -> StoreResult<()> {
        match self {
            Store::Node(client) => client.ping().map(|_| ()).map_err(StoreError::from),
            Store::Cluster(cluster) => cluster.refresh().map_err(StoreError::from),
        }
    }

    pub fn list(&mut self) -> StoreResult<Vec<FileRecord>> {
        match self {
            Store::Node(client) => Ok(client.list()?),
            Store::Cluster(cluster) => Ok(cluster.list()?),
        }
    }

    /// The file to read, `None` when there is no such file.
    pub fn source(&mut self, name: &str) -> StoreResult<Option<Source>> {
        let found = match self {
            Store::Node(client) => client.lookup(name).map(Source::Node).map_err(StoreError::from),
            Store::Cluster(cluster) => {
                cluster.refresh()?;
                cluster.layout(name).map(Source::Cluster).map_err(StoreError::from)
            }
        };
        match found {
            Ok(source) => Ok(Some(source)),
            Err(error) if error.errno == libc::ENOENT => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Chunks `first..first + count` of `source` (cut at its end), fetched together.
    pub fn read_chunks(&mut self, source: &Source, first: u64, count: u64) -> StoreResult<Vec<Vec<u8>>> {
        match (self, source) {
            (Store::Node(client), Source::Node(record)) => {
                let end = first.saturating_add(count).min(record.chunk_count());
                let wants: Vec<(u128, u32)> =
                    (first..end).map(|index| (record.chunk_id(index), record.chunk_len(index))).collect();
                client.get_chunks(&wants).into_iter().map(|chunk| chunk.map_err(StoreError::from)).collect()
            }
            (Store::Cluster(cluster), Source::Cluster(layout)) => {
                let chunks = cluster.read_chunks(layout, first, count);
                for warning in cluster.take_warnings() {
                    tracing::warn!("{warning}");
                }
                Ok(chunks?)
            }
            _ => Err(StoreError::new(libc::EIO, "a file looked up on one kind of store was read from another")),
        }
    }

    /// The whole file into `writer`, checked against its hash.
    pub fn get(&mut self, name: &str, writer: &mut dyn Write) -> StoreResult<()> {
        match self {
            Store::Node(client) => client.get_writer(name, writer, "the spool file", &mut |_| {}).map(|_| ())?,
            Store::Cluster(cluster) => cluster.get_writer(name, writer, "the spool file", &mut |_| {}).map(|_| ())?,
        }
        Ok(())
    }

    /// Stores what `reader` yields as `name`, replacing any file of that name.
    pub fn put(&mut self, name: &str, reader: &mut dyn Read) -> StoreResult<FileRecord> {
        match self {
            Store::Node(client) => Ok(client.put_reader(name, reader, "the spool file", &mut |_| {})?),
            Store::Cluster(cluster) => {
                Ok(cluster.put_reader(name, reader, "the spool file", &mut |_| {}).map(|layout| layout.record)?)
            }
        }
    }

    /// [`Store::put`] of a file being written, telling `on_durable` how many bytes from its
    /// start are durable so far, each time that grows. To a single node the chunks go under
    /// `file_id` (from [`crate::client::new_file_id`]), so that [`Store::restore_durable`]
    /// can read them back should the put fail before its commit. A cluster picks its own
    /// file id and reports nothing: restoring would need the replicas of a put that never
    /// committed its layout.
    pub fn put_behind(
        &mut self,
        name: &str,
        file_id: u64,
        reader: &mut dyn Read,
        on_durable: &mut dyn FnMut(u64),
    ) -> StoreResult<FileRecord> {
        match self {
            Store::Node(client) => Ok(client.put_reader_as(name, file_id, reader, "the spool file", on_durable)?),
            Store::Cluster(_) => self.put(name, reader),
        }
    }

    /// The single node's garbage-collection grace period (`None` for a cluster).
    pub fn gc_grace_ms(&mut self) -> StoreResult<Option<u64>> {
        match self {
            Store::Node(client) => Ok(Some(client.node_status()?.gc_grace_ms)),
            Store::Cluster(_) => Ok(None),
        }
    }

    /// Writes into `spool`, at their offsets, the chunks covering its first `len_bytes`
    /// that a [`Store::put_behind`] of `file_id` made durable before it failed (the file
    /// being `size_bytes` long then). Each chunk comes checked by the node's checksums.
    pub fn restore_durable(&mut self, file_id: u64, size_bytes: u64, len_bytes: u64, spool: &File) -> StoreResult<()> {
        assert!(len_bytes <= size_bytes, "{len_bytes} bytes to restore of a {size_bytes}-byte file");
        let Store::Node(client) = self else {
            return Err(StoreError::new(libc::EIO, "a cluster's write-behind keeps its spool whole"));
        };
        let chunk_bytes = client.put_chunk_bytes()?;
        let record =
            FileRecord { name: String::new(), file_id, size_bytes, chunk_bytes, blake3: [0; 32], created_unix_ms: 0 };
        let chunk_count = len_bytes.div_ceil(u64::from(chunk_bytes));
        for index in 0..chunk_count {
            let want = (record.chunk_id(index), record.chunk_len(index));
            let chunk = client.get_chunks(&[want]).pop().expect("one answer per chunk asked")?;
            spool.write_all_at(&chunk, index * u64::from(chunk_bytes)).map_err(super::state::io_error)?;
        }
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> StoreResult<()> {
        match self {
            Store::Node(client) => client.remove(name).map(|_| ())?,
            Store::Cluster(cluster) => cluster.remove(name).map(|_| ())?,
        }
        Ok(())
    }

    pub fn meta(&mut self) -> &mut dyn Metadata {
        match self {
            Store::Node(client) => client.as_mut(),
            Store::Cluster(cluster) => cluster.metadata(),
        }
    }

    pub fn tags_of(&mut self, name: &str) -> StoreResult<Vec<FileTag>> {
        Ok(crate::graph::tags_of(self.meta(), name)?)
    }
}
