//! The namespace: which files exist and how they map to chunks. Behind a trait so that
//! the embedded store used by a single node can be swapped for the DisGraFS metadata
//! cluster (Redis).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTableMetadata, TableDefinition};

use crate::control::FileRecord;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("cannot open metadata store {path}: {source}; check the data directory's permissions and free space")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("metadata store failed: {0}; the node's data directory may be damaged or full")]
    Storage(String),
    /// The cluster's metadata store (Redis) failed; the text says where and what to check.
    #[error("cluster metadata unavailable: {0}")]
    Remote(String),
    #[error("metadata record for {name} is unreadable: {reason}")]
    Corrupt { name: String, reason: String },
    /// The cluster's metadata was written by a newer Beeline, in a layout this one would
    /// misread.
    #[error(
        "the cluster metadata at {url} has format {found} (key {key}), newer than this beeline's {supported}: upgrade beeline to the version the cluster runs"
    )]
    NewerFormat { url: String, key: String, found: u64, supported: u64 },
    /// The format key holds something Beeline never writes.
    #[error(
        "key {key} at {url} holds {found:?}, not a Beeline metadata format: is another program using the prefix? give this cluster its own --metadata-prefix"
    )]
    ForeignFormat { url: String, key: String, found: String },
}

fn storage<E: std::fmt::Display>(error: E) -> MetadataError {
    MetadataError::Storage(error.to_string())
}

pub trait Metadata: Send {
    /// Records a file; returns the record it replaced, if any.
    fn put_file(&mut self, record: &FileRecord) -> Result<Option<FileRecord>, MetadataError>;
    fn get_file(&mut self, name: &str) -> Result<Option<FileRecord>, MetadataError>;
    /// Up to `limit` files in name order after `after`.
    fn list(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<FileRecord>, MetadataError>;
    fn remove_file(&mut self, name: &str) -> Result<Option<FileRecord>, MetadataError>;
    fn file_count(&mut self) -> Result<u64, MetadataError>;
}

const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");

/// Embedded metadata in one redb file; every write is durable when it returns.
pub struct EmbeddedMetadata {
    db: Database,
}

impl EmbeddedMetadata {
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        let db = Database::create(path).map_err(|source| MetadataError::Open { path: path.to_owned(), source })?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(FILES).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(Self { db })
    }
}

fn decode(name: &str, bytes: &[u8]) -> Result<FileRecord, MetadataError> {
    postcard::from_bytes(bytes)
        .map_err(|error| MetadataError::Corrupt { name: name.to_owned(), reason: error.to_string() })
}

impl Metadata for EmbeddedMetadata {
    fn put_file(&mut self, record: &FileRecord) -> Result<Option<FileRecord>, MetadataError> {
        let bytes = postcard::to_stdvec(record).map_err(storage)?;
        let txn = self.db.begin_write().map_err(storage)?;
        let replaced = {
            let mut table = txn.open_table(FILES).map_err(storage)?;
            let old = table.insert(record.name.as_str(), bytes.as_slice()).map_err(storage)?;
            old.map(|old| decode(&record.name, old.value())).transpose()?
        };
        txn.commit().map_err(storage)?;
        Ok(replaced)
    }

    fn get_file(&mut self, name: &str) -> Result<Option<FileRecord>, MetadataError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(FILES).map_err(storage)?;
        let value = table.get(name).map_err(storage)?;
        value.map(|value| decode(name, value.value())).transpose()
    }

    fn list(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<FileRecord>, MetadataError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(FILES).map_err(storage)?;
        let mut files = Vec::with_capacity(limit.min(1024));
        let range = match after {
            Some(after) => table.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => table.range::<&str>(..),
        }
        .map_err(storage)?;
        for entry in range.take(limit) {
            let (name, value) = entry.map_err(storage)?;
            files.push(decode(name.value(), value.value())?);
        }
        Ok(files)
    }

    fn remove_file(&mut self, name: &str) -> Result<Option<FileRecord>, MetadataError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let removed = {
            let mut table = txn.open_table(FILES).map_err(storage)?;
            let old = table.remove(name).map_err(storage)?;
            old.map(|old| decode(name, old.value())).transpose()?
        };
        txn.commit().map_err(storage)?;
        Ok(removed)
    }

    fn file_count(&mut self) -> Result<u64, MetadataError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(FILES).map_err(storage)?;
        table.len().map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, file_id: u64) -> FileRecord {
        FileRecord { name: name.into(), file_id, size_bytes: 10, chunk_bytes: 4, blake3: [1; 32], created_unix_ms: 5 }
    }

    #[test]
    fn files_survive_reopen_and_list_paginates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let mut meta = EmbeddedMetadata::open(&path).unwrap();
            for (i, name) in ["b", "a", "c", "d"].iter().enumerate() {
                assert_eq!(meta.put_file(&record(name, i as u64)).unwrap(), None);
            }
            assert_eq!(meta.put_file(&record("a", 9)).unwrap().unwrap().file_id, 1);
            assert_eq!(meta.remove_file("d").unwrap().unwrap().name, "d");
            assert_eq!(meta.remove_file("d").unwrap(), None);
        }
        let mut meta = EmbeddedMetadata::open(&path).unwrap();
        assert_eq!(meta.get_file("a").unwrap().unwrap().file_id, 9);
        let first: Vec<_> = meta.list(None, 2).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(first, ["a", "b"]);
        let rest: Vec<_> = meta.list(Some("b"), 10).unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(rest, ["c"]);
        assert_eq!(meta.file_count().unwrap(), 3);
    }
}
