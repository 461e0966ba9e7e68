//! The namespace: which files exist and how they map to chunks. Behind a trait so that
//! the embedded store used by a single node can be swapped for the DisGraFS metadata
//! cluster (Redis).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::control::FileRecord;

/// The source of a tag a user gave (`beeline tag`); every other source names the
/// extractor that made the tag (the tagger's extractors).
pub const SOURCE_USER: &str = "user";
/// Longest tag name, in bytes.
pub const TAG_BYTES_MAX: usize = 128;
/// Longest source name, in bytes.
pub const SOURCE_BYTES_MAX: usize = 32;
/// Most tags one file may carry.
pub const TAGS_PER_FILE_MAX: usize = 256;
/// The characters a tag may not contain besides controls and whitespace: the operators
/// of the search expression syntax (the graph module's `expr`).
pub const TAG_RESERVED: &[char] = &['&', '|', '!', '(', ')', '"', '\\'];

/// One edge of the file-tag graph seen from the file: the tag and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileTag {
    pub tag: String,
    /// [`SOURCE_USER`], or the extractor that made it.
    pub source: String,
}

impl FileTag {
    pub fn new(tag: impl Into<String>, source: impl Into<String>) -> Self {
        Self { tag: tag.into(), source: source.into() }
    }

    pub fn user(tag: impl Into<String>) -> Self {
        Self::new(tag, SOURCE_USER)
    }

    pub fn is_user(&self) -> bool {
        self.source == SOURCE_USER
    }
}

impl From<crate::control::TagEdge> for FileTag {
    fn from(edge: crate::control::TagEdge) -> Self {
        Self { tag: edge.tag, source: edge.source }
    }
}

impl From<FileTag> for crate::control::TagEdge {
    fn from(tag: FileTag) -> Self {
        Self { tag: tag.tag, source: tag.source }
    }
}

/// A tag and how many files carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagCount {
    pub tag: String,
    pub files: u64,
}

/// Checks a tag name before it is sent or stored: 1 to [`TAG_BYTES_MAX`] bytes, no
/// whitespace, controls, invisible characters or [`TAG_RESERVED`] operators.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("tag is empty: give a tag name".into());
    }
    if tag.len() > TAG_BYTES_MAX {
        return Err(format!(
            "tag \"{}...\" is {} bytes long, more than the {TAG_BYTES_MAX} allowed: use a shorter tag",
            tag.chars().take(16).collect::<String>().escape_debug(),
            tag.len()
        ));
    }
    for (at, c) in tag.char_indices() {
        let what = if let Some(what) = crate::control::invisible(c) {
            what.to_owned()
        } else if c.is_whitespace() {
            "whitespace".to_owned()
        } else if TAG_RESERVED.contains(&c) {
            format!("'{c}', an operator of search expressions")
        } else {
            continue;
        };
        return Err(format!(
            "tag has U+{:04X} ({what}) at byte {at}: tags may not contain whitespace, controls or any of & | ! ( ) \" \\; use - or _ instead",
            u32::from(c)
        ));
    }
    Ok(())
}

/// Checks a tag's source: 1 to [`SOURCE_BYTES_MAX`] bytes of `a-z`, `0-9`, `-`, `_`.
pub fn validate_source(source: &str) -> Result<(), String> {
    let fine = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if source.is_empty() || source.len() > SOURCE_BYTES_MAX || !source.chars().all(fine) {
        return Err(format!(
            "tag source \"{}\" is not 1 to {SOURCE_BYTES_MAX} characters of a-z, 0-9, - and _: name the extractor plainly",
            source.escape_debug()
        ));
    }
    Ok(())
}

/// A tag as an extractor made it, made into a valid one: whitespace and reserved
/// characters become `-`, controls and invisible characters go, and it is cut to
/// [`TAG_BYTES_MAX`] bytes (at a character boundary). `None` when nothing is left.
pub fn sanitize_tag(tag: &str) -> Option<String> {
    let mut out = String::with_capacity(tag.len().min(TAG_BYTES_MAX));
    for c in tag.trim().chars() {
        let c = if c.is_whitespace() || TAG_RESERVED.contains(&c) {
            '-'
        } else if crate::control::invisible(c).is_some() {
            continue;
        } else {
            c
        };
        if out.len() + c.len_utf8() > TAG_BYTES_MAX {
            break;
        }
        out.push(c);
    }
    let out = out.trim_matches('-').to_owned();
    (!out.is_empty()).then_some(out)
}

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
    #[error("no file named {0}: check the name with `beeline ls`")]
    NoSuchFile(String),
    #[error("{name} would carry more than {TAGS_PER_FILE_MAX} tags: remove some first (`beeline untag`)")]
    TooManyTags { name: String },
    #[error("{0}")]
    BadTag(String),
    /// The node holding the metadata failed or could not be reached; the text says which.
    #[error("{0}")]
    Node(String),
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
    /// Up to `limit` file names in order after `after` (what [`Metadata::list`] gives,
    /// without the records, where that is cheaper).
    fn names(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>, MetadataError> {
        Ok(self.list(after, limit)?.into_iter().map(|record| record.name).collect())
    }

    /// Adds tags to the file `name` (idempotent); returns how many edges are new. A tag the
    /// file already carries keeps the user as its source once the user gave it: an
    /// extractor re-adding it leaves it the user's, the user re-adding an automatic one
    /// makes it the user's. Fails with [`MetadataError::NoSuchFile`] for an unknown file
    /// and [`MetadataError::TooManyTags`] past [`TAGS_PER_FILE_MAX`].
    fn add_tags(&mut self, name: &str, tags: &[FileTag]) -> Result<usize, MetadataError>;
    /// Removes tags from the file whatever their source; returns those it removed.
    fn remove_tags(&mut self, name: &str, tags: &[String]) -> Result<Vec<FileTag>, MetadataError>;
    /// Up to `limit` of the file's tags in tag order after `after`.
    fn tags_of(&mut self, name: &str, after: Option<&str>, limit: usize) -> Result<Vec<FileTag>, MetadataError>;
    /// Up to `limit` names of files carrying `tag`, in name order after `after`.
    fn files_tagged(&mut self, tag: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, MetadataError>;
    /// Up to `limit` tags starting with `prefix` (all with ""), in order after `after`,
    /// with how many files carry each.
    fn tags_by_prefix(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TagCount>, MetadataError>;
}

const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
/// (file name, tag) -> source.
const TAGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("tags");
/// (tag, file name) -> (): the same edges by tag.
const TAGGED: TableDefinition<(&str, &str), ()> = TableDefinition::new("tagged");
/// tag -> how many files carry it (absent at 0).
const TAG_FILES: TableDefinition<&str, u64> = TableDefinition::new("tag_files");
/// file name -> file id: files recorded but not tagged yet (the node's own tagger takes
/// them).
const UNTAGGED: TableDefinition<&str, u64> = TableDefinition::new("untagged");

/// Embedded metadata in one redb file; every write is durable when it returns. Clones
/// share the database (the node's tagger thread writes tags through one).
#[derive(Clone)]
pub struct EmbeddedMetadata {
    db: std::sync::Arc<Database>,
}

type TagTable<'t> = redb::Table<'t, (&'static str, &'static str), &'static str>;
type TaggedTable<'t> = redb::Table<'t, (&'static str, &'static str), ()>;
type CountTable<'t> = redb::Table<'t, &'static str, u64>;

impl EmbeddedMetadata {
    pub fn open(path: &Path) -> Result<Self, MetadataError> {
        let db = Database::create(path).map_err(|source| MetadataError::Open { path: path.to_owned(), source })?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(FILES).map_err(storage)?;
        txn.open_table(TAGS).map_err(storage)?;
        txn.open_table(TAGGED).map_err(storage)?;
        txn.open_table(TAG_FILES).map_err(storage)?;
        txn.open_table(UNTAGGED).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(Self { db: std::sync::Arc::new(db) })
    }

    /// Up to `limit` files recorded but not tagged yet, as (name, file id).
    pub fn untagged(&self, limit: usize) -> Result<Vec<(String, u64)>, MetadataError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(UNTAGGED).map_err(storage)?;
        let mut out = Vec::new();
        for entry in table.range::<&str>(..).map_err(storage)?.take(limit) {
            let (name, file_id) = entry.map_err(storage)?;
            out.push((name.value().to_owned(), file_id.value()));
        }
        Ok(out)
    }

    /// How many files wait for the tagger.
    pub fn untagged_count(&self) -> Result<u64, MetadataError> {
        let txn = self.db.begin_read().map_err(storage)?;
        txn.open_table(UNTAGGED).map_err(storage)?.len().map_err(storage)
    }

    /// Applies a tagger's tags to `name` if it is still the file `file_id` (not replaced or
    /// removed meanwhile), and takes it off the untagged list, in one transaction.
    /// Returns whether the tags were applied.
    pub fn finish_tagging(&self, name: &str, file_id: u64, tags: &[FileTag]) -> Result<bool, MetadataError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let applied = {
            let files = txn.open_table(FILES).map_err(storage)?;
            let current = files.get(name).map_err(storage)?.map(|value| decode(name, value.value())).transpose()?;
            let mut untagged = txn.open_table(UNTAGGED).map_err(storage)?;
            let pending = untagged.get(name).map_err(storage)?.map(|value| value.value());
            if pending == Some(file_id) {
                untagged.remove(name).map_err(storage)?;
            }
            match current {
                Some(record) if record.file_id == file_id => {
                    let (mut t, mut by_tag, mut counts) = open_tag_tables(&txn)?;
                    link_all(&mut t, &mut by_tag, &mut counts, name, tags, true)?;
                    true
                }
                _ => false,
            }
        };
        txn.commit().map_err(storage)?;
        Ok(applied)
    }
}

fn open_tag_tables(
    txn: &redb::WriteTransaction,
) -> Result<(TagTable<'_>, TaggedTable<'_>, CountTable<'_>), MetadataError> {
    Ok((
        txn.open_table(TAGS).map_err(storage)?,
        txn.open_table(TAGGED).map_err(storage)?,
        txn.open_table(TAG_FILES).map_err(storage)?,
    ))
}

fn edges_of<T: ReadableTable<(&'static str, &'static str), &'static str>>(
    table: &T,
    name: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<FileTag>, MetadataError> {
    let mut out = Vec::new();
    let start = (std::ops::Bound::Included((name, after.unwrap_or(""))), std::ops::Bound::Unbounded);
    for entry in table.range::<(&str, &str)>(start).map_err(storage)? {
        let (key, source) = entry.map_err(storage)?;
        let (file, tag) = key.value();
        if file != name || out.len() >= limit {
            break;
        }
        if after == Some(tag) {
            continue;
        }
        out.push(FileTag::new(tag, source.value()));
    }
    Ok(out)
}

fn add_count(counts: &mut CountTable<'_>, tag: &str, delta: i64) -> Result<(), MetadataError> {
    let now = counts.get(tag).map_err(storage)?.map(|value| value.value()).unwrap_or(0);
    let next = now.saturating_add_signed(delta);
    if next == 0 {
        counts.remove(tag).map_err(storage)?;
    } else {
        counts.insert(tag, next).map_err(storage)?;
    }
    Ok(())
}

/// Adds edges (see [`Metadata::add_tags`] for the sources); returns how many are new.
fn link_all(
    tags: &mut TagTable<'_>,
    tagged: &mut TaggedTable<'_>,
    counts: &mut CountTable<'_>,
    name: &str,
    new: &[FileTag],
    capped: bool,
) -> Result<usize, MetadataError> {
    let mut have = edges_of(tags, name, None, TAGS_PER_FILE_MAX * 2)?.len();
    let mut added = 0;
    for tag in new {
        let existing = tags.get((name, tag.tag.as_str())).map_err(storage)?.map(|value| value.value().to_owned());
        match existing {
            Some(source) if source == SOURCE_USER || source == tag.source => {}
            Some(_) => {
                if tag.is_user() {
                    tags.insert((name, tag.tag.as_str()), SOURCE_USER).map_err(storage)?;
                }
            }
            None => {
                if have >= TAGS_PER_FILE_MAX {
                    if capped {
                        // A tagger's extra tags past the cap are dropped, not an error.
                        continue;
                    }
                    return Err(MetadataError::TooManyTags { name: name.to_owned() });
                }
                tags.insert((name, tag.tag.as_str()), tag.source.as_str()).map_err(storage)?;
                tagged.insert((tag.tag.as_str(), name), ()).map_err(storage)?;
                add_count(counts, &tag.tag, 1)?;
                have += 1;
                added += 1;
            }
        }
    }
    Ok(added)
}

/// Removes the file's edges that `which` selects; returns them.
fn unlink_where(
    txn: &redb::WriteTransaction,
    name: &str,
    which: impl Fn(&FileTag) -> bool,
) -> Result<Vec<FileTag>, MetadataError> {
    let (mut tags, mut tagged, mut counts) = open_tag_tables(txn)?;
    let removed: Vec<FileTag> = edges_of(&tags, name, None, usize::MAX)?.into_iter().filter(|tag| which(tag)).collect();
    for tag in &removed {
        tags.remove((name, tag.tag.as_str())).map_err(storage)?;
        tagged.remove((tag.tag.as_str(), name)).map_err(storage)?;
        add_count(&mut counts, &tag.tag, -1)?;
    }
    Ok(removed)
}

fn decode(name: &str, bytes: &[u8]) -> Result<FileRecord, MetadataError> {
    postcard::from_bytes(bytes)
        .map_err(|error| MetadataError::Corrupt { name: name.to_owned(), reason: error.to_string() })
}

impl Metadata for EmbeddedMetadata {
    /// A file replaced by a new one keeps the tags its user gave and loses the automatic
    /// ones (the tagger tags the new content); either way it waits for the tagger.
    fn put_file(&mut self, record: &FileRecord) -> Result<Option<FileRecord>, MetadataError> {
        let bytes = postcard::to_stdvec(record).map_err(storage)?;
        let txn = self.db.begin_write().map_err(storage)?;
        let replaced = {
            let mut table = txn.open_table(FILES).map_err(storage)?;
            let old = table.insert(record.name.as_str(), bytes.as_slice()).map_err(storage)?;
            old.map(|old| decode(&record.name, old.value())).transpose()?
        };
        if replaced.as_ref().is_some_and(|old| old.file_id != record.file_id) {
            unlink_where(&txn, &record.name, |tag| !tag.is_user())?;
        }
        txn.open_table(UNTAGGED).map_err(storage)?.insert(record.name.as_str(), record.file_id).map_err(storage)?;
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

    /// The file's tags go with it.
    fn remove_file(&mut self, name: &str) -> Result<Option<FileRecord>, MetadataError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let removed = {
            let mut table = txn.open_table(FILES).map_err(storage)?;
            let old = table.remove(name).map_err(storage)?;
            old.map(|old| decode(name, old.value())).transpose()?
        };
        if removed.is_some() {
            unlink_where(&txn, name, |_| true)?;
            txn.open_table(UNTAGGED).map_err(storage)?.remove(name).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(removed)
    }

    fn file_count(&mut self) -> Result<u64, MetadataError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(FILES).map_err(storage)?;
        table.len().map_err(storage)
    }

    fn add_tags(&mut self, name: &str, tags: &[FileTag]) -> Result<usize, MetadataError> {
        for tag in tags {
            validate_tag(&tag.tag).and_then(|()| validate_source(&tag.source)).map_err(MetadataError::BadTag)?;
        }
        let txn = self.db.begin_write().map_err(storage)?;
        let added = {
            if txn.open_table(FILES).map_err(storage)?.get(name).map_err(storage)?.is_none() {
                return Err(MetadataError::NoSuchFile(name.to_owned()));
            }
            let (mut t, mut by_tag, mut counts) = open_tag_tables(&txn)?;
            link_all(&mut t, &mut by_tag, &mut counts, name, tags, false)?
        };
        txn.commit().map_err(storage)?;
        Ok(added)
    }

    fn remove_tags(&mut self, name: &str, tags: &[String]) -> Result<Vec<FileTag>, MetadataError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let removed = unlink_where(&txn, name, |tag| tags.contains(&tag.tag))?;
        txn.commit().map_err(storage)?;
        Ok(removed)
    }

    fn tags_of(&mut self, name: &str, after: Option<&str>, limit: usize) -> Result<Vec<FileTag>, MetadataError> {
        let txn = self.db.begin_read().map_err(storage)?;
        edges_of(&txn.open_table(TAGS).map_err(storage)?, name, after, limit)
    }

    fn files_tagged(&mut self, tag: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, MetadataError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(TAGGED).map_err(storage)?;
        let mut out = Vec::new();
        let start = (std::ops::Bound::Included((tag, after.unwrap_or(""))), std::ops::Bound::Unbounded);
        for entry in table.range::<(&str, &str)>(start).map_err(storage)? {
            let (key, _) = entry.map_err(storage)?;
            let (edge_tag, name) = key.value();
            if edge_tag != tag || out.len() >= limit {
                break;
            }
            if after != Some(name) {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    fn tags_by_prefix(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TagCount>, MetadataError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(TAG_FILES).map_err(storage)?;
        let start = match after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after),
            _ => std::ops::Bound::Included(prefix),
        };
        let mut out = Vec::new();
        for entry in table.range::<&str>((start, std::ops::Bound::Unbounded)).map_err(storage)? {
            let (tag, files) = entry.map_err(storage)?;
            if !tag.value().starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push(TagCount { tag: tag.value().to_owned(), files: files.value() });
        }
        Ok(out)
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

    fn names(tags: &[FileTag]) -> Vec<(&str, &str)> {
        tags.iter().map(|tag| (tag.tag.as_str(), tag.source.as_str())).collect()
    }

    #[test]
    fn tags_keep_their_source_go_with_the_file_and_user_tags_survive_a_reput() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = EmbeddedMetadata::open(&dir.path().join("meta.redb")).unwrap();
        meta.put_file(&record("a", 1)).unwrap();
        meta.put_file(&record("b", 2)).unwrap();
        let error = meta.add_tags("nope", &[FileTag::user("x")]).unwrap_err();
        assert!(matches!(error, MetadataError::NoSuchFile(_)), "{error}");
        assert_eq!(meta.add_tags("a", &[FileTag::user("mine"), FileTag::new("type:pdf", "magic")]).unwrap(), 2);
        // Idempotent; an extractor re-adding the user's tag leaves it the user's.
        assert_eq!(meta.add_tags("a", &[FileTag::new("mine", "text"), FileTag::new("type:pdf", "magic")]).unwrap(), 0);
        assert!(meta.finish_tagging("b", 2, &[FileTag::new("type:pdf", "magic")]).unwrap());
        assert!(!meta.finish_tagging("b", 99, &[FileTag::new("stale", "magic")]).unwrap());
        assert_eq!(names(&meta.tags_of("a", None, 10).unwrap()), [("mine", "user"), ("type:pdf", "magic")]);
        assert_eq!(names(&meta.tags_of("a", Some("mine"), 10).unwrap()), [("type:pdf", "magic")]);
        assert_eq!(meta.files_tagged("type:pdf", None, 10).unwrap(), ["a", "b"]);
        assert_eq!(meta.files_tagged("type:pdf", Some("a"), 10).unwrap(), ["b"]);
        let counts = meta.tags_by_prefix("ty", None, 10).unwrap();
        assert_eq!(counts, [TagCount { tag: "type:pdf".into(), files: 2 }]);
        assert_eq!(meta.untagged(10).unwrap(), [("a".to_owned(), 1)]);
        // A re-put keeps the user's tags and drops the automatic ones.
        meta.put_file(&record("a", 3)).unwrap();
        assert_eq!(names(&meta.tags_of("a", None, 10).unwrap()), [("mine", "user")]);
        assert_eq!(meta.tags_by_prefix("", None, 10).unwrap().len(), 2);
        assert_eq!(names(&meta.remove_tags("a", &["mine".into()]).unwrap()), [("mine", "user")]);
        assert!(meta.tags_by_prefix("mi", None, 10).unwrap().is_empty());
        meta.remove_file("b").unwrap();
        assert!(meta.files_tagged("type:pdf", None, 10).unwrap().is_empty());
        assert!(meta.tags_by_prefix("", None, 10).unwrap().is_empty());
    }

    #[test]
    fn tag_names_are_bounded_and_plain() {
        assert_eq!(validate_tag("keyword:storage"), Ok(()));
        assert_eq!(validate_tag("caf\u{e9}"), Ok(()));
        for bad in ["", "a b", "a&b", "x|y", "!x", "(x)", "a\u{7}", "a\u{200B}b", &"t".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad:?}");
        }
        assert_eq!(sanitize_tag(" Canon EOS 5D (mk2) "), Some("Canon-EOS-5D--mk2".into()));
        assert_eq!(sanitize_tag("\u{200B}"), None);
        assert_eq!(sanitize_tag(&"\u{e9}".repeat(100)).unwrap().len(), 128);
        assert!(validate_source("magic").is_ok() && validate_source("User").is_err());
    }
}
