//! The mount's state behind the FUSE glue ([`super::fs`]): the inode table, the namespace
//! as directories, the spool files of files being written, and reads chunk by chunk
//! through a bounded cache with readahead. Every method answers `Result<_, StoreError>`,
//! whose `errno` the glue hands to the kernel.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::behind::{Failed, WRITE_BEHIND_AFTER_BYTES, WriteBehind};
use super::chunks::Chunks;
use super::store::{Source, Store, StoreError, StoreResult, Target};
use crate::control::{FileRecord, NAME_BYTES_MAX, NAME_PART_BYTES_MAX};

/// How long a listing of the namespace is reused before it is read again: changes made
/// elsewhere show within this.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(1);
/// Files a directory operation (a directory rename, a listing) handles at most.
pub const DIR_FILES_MAX: usize = 100_000;

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A directory: a prefix of stored names ("" is the root).
    Dir(String),
    /// A stored (or being written) file, by its full name.
    File(String),
    /// `.tags/`.
    TagsRoot,
    /// `.tags/<a>+<b>/`: the files carrying every one of these tags.
    TagDir(Vec<String>),
    /// An entry of a tag directory: a symlink to the file.
    TagLink(Vec<String>, String),
}

pub const ROOT_INO: u64 = 1;

/// Unreferenced inodes (handed out in a listing, never looked up, or forgotten by the
/// kernel) kept before they are dropped: a listing of a large directory then costs memory
/// only until the next one.
pub const UNREFERENCED_INODES_MAX: usize = 1 << 16;

/// Inode numbers, one per key while the kernel may use it, never reused. The kernel holds
/// a reference per entry it was given (lookup, create, mkdir) and gives them back with
/// `forget`; an inode with none is dropped, so the table follows the kernel's inode cache,
/// not every name ever seen.
pub struct Inodes {
    by_ino: HashMap<u64, Key>,
    by_key: HashMap<Key, u64>,
    /// The kernel's references, by inode (absent: none).
    lookups: HashMap<u64, u64>,
    next: u64,
}

impl Inodes {
    fn new() -> Self {
        let mut inodes =
            Inodes { by_ino: HashMap::new(), by_key: HashMap::new(), lookups: HashMap::new(), next: ROOT_INO + 1 };
        inodes.by_ino.insert(ROOT_INO, Key::Dir(String::new()));
        inodes.by_key.insert(Key::Dir(String::new()), ROOT_INO);
        inodes
    }

    pub fn ino(&mut self, key: &Key) -> u64 {
        if let Some(ino) = self.by_key.get(key) {
            return *ino;
        }
        if self.by_ino.len() > self.lookups.len() + UNREFERENCED_INODES_MAX {
            self.drop_unreferenced();
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(ino, key.clone());
        self.by_key.insert(key.clone(), ino);
        ino
    }

    /// The kernel was given `ino` in an entry (lookup, create, mkdir): one more reference.
    pub fn referenced(&mut self, ino: u64) {
        assert!(self.by_ino.contains_key(&ino), "an entry for inode {ino}, which the table lacks");
        *self.lookups.entry(ino).or_insert(0) += 1;
    }

    /// The kernel gives back `count` references to `ino`; at none it is dropped (the root
    /// never is). More than it holds is the kernel's bug or a stale number: it goes too.
    pub fn forget(&mut self, ino: u64, count: u64) {
        if ino == ROOT_INO {
            return;
        }
        let left = self.lookups.get(&ino).map_or(0, |held| held.saturating_sub(count));
        if left > 0 {
            self.lookups.insert(ino, left);
            return;
        }
        self.lookups.remove(&ino);
        if let Some(key) = self.by_ino.remove(&ino) {
            if self.by_key.get(&key) == Some(&ino) {
                self.by_key.remove(&key);
            }
        }
    }

    /// Inodes in the table, referenced or not (`df -i` shows them as used).
    pub fn count(&self) -> usize {
        self.by_ino.len()
    }

    fn drop_unreferenced(&mut self) {
        let lookups = &self.lookups;
        self.by_ino.retain(|ino, _| *ino == ROOT_INO || lookups.contains_key(ino));
        let by_ino = &self.by_ino;
        self.by_key.retain(|_, ino| by_ino.contains_key(ino));
    }

    /// After a rename the kernel keeps the inodes it knows: they must now name the new
    /// path (and everything under it, for a directory).
    pub fn rename(&mut self, from: &str, to: &str) {
        let prefix = format!("{from}/");
        let moved = |path: &str| -> Option<String> {
            if path == from {
                Some(to.to_owned())
            } else {
                path.strip_prefix(&prefix).map(|rest| format!("{to}/{rest}"))
            }
        };
        let renames: Vec<(Key, Key)> = self
            .by_key
            .keys()
            .filter_map(|key| match key {
                Key::File(path) => moved(path).map(|new| (key.clone(), Key::File(new))),
                Key::Dir(path) if !path.is_empty() => moved(path).map(|new| (key.clone(), Key::Dir(new))),
                _ => None,
            })
            .collect();
        for (old, new) in renames {
            if let Some(ino) = self.by_key.remove(&old) {
                self.by_key.insert(new.clone(), ino);
                self.by_ino.insert(ino, new);
            }
        }
    }

    pub fn key(&self, ino: u64) -> StoreResult<Key> {
        self.by_ino.get(&ino).cloned().ok_or_else(|| StoreError::new(libc::ENOENT, format!("no inode {ino}")))
    }
}

/// A file being written: its content so far in a spool file on disk (never in memory:
/// files may be larger than memory), stored on flush, fsync or the last close: whole, or
/// by then mostly stored already by its write-behind.
pub struct OpenFile {
    pub spool: File,
    pub dirty: bool,
    /// Removed while open: its handles still work, nothing is stored.
    unlinked: bool,
    pub modified: SystemTime,
    /// The spool's length while every write since it was empty continued at its end.
    appended_bytes: Option<u64>,
    /// The put storing the spool behind the writer, if one runs.
    behind: Option<WriteBehind>,
    /// The file was stored and its spool emptied: the store holds what it held. Emptied,
    /// because the kernel would otherwise write the spool's pages to the disk on the next
    /// `sync` (a `cp` followed by `sync` wrote every byte twice); refilled from the store in
    /// the rare case a handle still uses it.
    spool_in_store: bool,
    /// A write or resize of the spool failed (its disk full, say): the spool holds part of
    /// what the writer meant, so the file is never stored from it. Every later write, flush
    /// and close answers this error and the stored file stays as it was, until a truncating
    /// open starts the content over.
    failed: Option<StoreError>,
    /// Part of the spool was freed by a write-behind that then did not store the file: the
    /// rest of the content is nowhere, so reads fail too (with `failed`'s error).
    spool_lost: bool,
}

impl OpenFile {
    fn new(spool: File, dirty: bool, appended_bytes: Option<u64>) -> Self {
        OpenFile {
            spool,
            dirty,
            unlinked: false,
            modified: SystemTime::now(),
            appended_bytes,
            behind: None,
            spool_in_store: false,
            failed: None,
            spool_lost: false,
        }
    }

    /// The error of an earlier failed write, if one failed.
    fn check_not_failed(&self) -> StoreResult<()> {
        match &self.failed {
            Some(error) => Err(StoreError::new(
                error.errno,
                format!("an earlier write failed ({error}): the file is not stored, its stored copy is as it was"),
            )),
            None => Ok(()),
        }
    }

    /// The spool failed to take a write or resize: nothing of this content is stored (and
    /// a write-behind storing it gives up).
    fn spool_failed(&mut self, error: std::io::Error) -> StoreError {
        let error = io_error(error);
        self.failed = Some(error.clone());
        self.written_out_of_order();
        error
    }

    /// A write-behind that had freed part of the spool did not store the file: the file
    /// fails (nothing of this content is stored; reads of it fail as well).
    fn spool_lost(&mut self, error: StoreError) -> StoreError {
        let error = StoreError::new(
            error.errno,
            format!("storing the file behind its writer failed after part of it left the spool ({error})"),
        );
        self.spool_lost = true;
        self.failed.get_or_insert(error).clone()
    }

    /// Reads of the spool fail once part of it is lost.
    fn check_spool_readable(&self) -> StoreResult<()> {
        match (&self.failed, self.spool_lost) {
            (Some(error), true) => Err(error.clone()),
            _ => Ok(()),
        }
    }

    /// Stops the write-behind, if one runs (its put fails). If it had freed part of the
    /// spool, the file is lost: see [`OpenFile::spool_lost`].
    fn drop_behind(&mut self) {
        if let Some(behind) = self.behind.take() {
            if !behind.abandon() {
                self.spool_lost(StoreError::new(libc::EIO, "it was abandoned"));
            }
        }
    }

    /// A truncating open: the content starts over, whatever happened to the old one.
    fn start_over(&mut self) -> StoreResult<()> {
        self.written_out_of_order();
        self.spool.set_len(0).map_err(io_error)?;
        self.failed = None;
        self.spool_lost = false;
        self.spool_in_store = false;
        self.dirty = true;
        self.appended_bytes = Some(0);
        Ok(())
    }

    /// The file `name` was stored as the spool holds it.
    fn stored(&mut self) {
        self.dirty = false;
        self.behind = None;
        if self.spool.set_len(0).is_ok() {
            self.spool_in_store = true;
            self.appended_bytes = None;
        }
    }

    /// Makes the spool hold the file again if it was emptied after being stored.
    fn refill(&mut self, name: &str, store: &mut Store) -> StoreResult<()> {
        if !self.spool_in_store {
            return Ok(());
        }
        self.spool.set_len(0).map_err(io_error)?;
        self.spool.seek(SeekFrom::Start(0)).map_err(io_error)?;
        store.get(name, &mut self.spool)?;
        self.spool_in_store = false;
        Ok(())
    }

    /// Removed, or replaced by another file of its name: nothing of it is stored.
    pub fn mark_unlinked(&mut self) {
        self.unlinked = true;
        self.drop_behind();
    }

    /// Written anywhere but at its end (or resized): the write-behind cannot follow.
    fn written_out_of_order(&mut self) {
        self.appended_bytes = None;
        self.drop_behind();
    }
}

pub type Shared = Arc<Mutex<OpenFile>>;

fn lock(file: &Shared) -> std::sync::MutexGuard<'_, OpenFile> {
    file.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An open file handle.
pub struct Handle {
    pub name: String,
    /// Set for a handle opened for writing.
    pub file: Option<Shared>,
    /// What a read-only handle reads: the file as stored when it was opened, or as this
    /// mount stored it since (`None`: looked up at the next read).
    pub source: Option<Source>,
}

/// Bytes a read answers: its own, or part of a cached chunk.
pub enum ReadBytes {
    Owned(Vec<u8>),
    Chunk(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl ReadBytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReadBytes::Owned(bytes) => bytes,
            ReadBytes::Chunk(chunk, range) => &chunk[range.clone()],
        }
    }
}

pub struct State {
    pub store: Store,
    /// Where write-behind threads connect to, each with a client of its own.
    target: Target,
    /// Write-behinds running (bounded by `WRITE_BEHIND_FILES_MAX`).
    behind_active: Arc<AtomicUsize>,
    pub spool_dir: PathBuf,
    pub inodes: Inodes,
    snapshot: Option<(Instant, BTreeMap<String, FileRecord>)>,
    /// Directories made with mkdir that hold no file yet: they live as long as the mount.
    session_dirs: BTreeSet<String>,
    pub open_files: HashMap<String, Shared>,
    pub handles: HashMap<u64, Handle>,
    next_fh: u64,
    chunks: Chunks,
    pub mounted_at: SystemTime,
    read_versions: super::read_versions::ReadVersions,
}

pub fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}/{name}") }
}

/// The limits the CLI puts on names, as errnos: too long is ENAMETOOLONG, characters that
/// would not show in a listing EINVAL.
pub fn check_new_name(path: &str, part: &str) -> StoreResult<()> {
    if part.len() > NAME_PART_BYTES_MAX || path.len() > NAME_BYTES_MAX {
        return Err(StoreError::new(libc::ENAMETOOLONG, format!("name too long: {path}")));
    }
    crate::control::validate_name(path).map_err(|message| StoreError::new(libc::EINVAL, message))
}

pub(super) fn io_error(error: std::io::Error) -> StoreError {
    StoreError::new(error.raw_os_error().unwrap_or(libc::EIO), format!("spool file: {error}"))
}

impl State {
    pub fn new(store: Store, target: Target, spool_dir: PathBuf) -> Self {
        let chunks = Chunks::new(&target);
        State {
            store,
            target,
            behind_active: Arc::new(AtomicUsize::new(0)),
            spool_dir,
            inodes: Inodes::new(),
            snapshot: None,
            read_versions: super::read_versions::ReadVersions::default(),
            session_dirs: BTreeSet::new(),
            open_files: HashMap::new(),
            handles: HashMap::new(),
            next_fh: 1,
            chunks,
            mounted_at: SystemTime::now(),
        }
    }

    /// The stored files, read again when older than [`SNAPSHOT_TTL`].
    pub fn files(&mut self) -> StoreResult<&BTreeMap<String, FileRecord>> {
        let fresh = self.snapshot.as_ref().is_some_and(|(at, _)| at.elapsed() < SNAPSHOT_TTL);
        if !fresh {
            let files = self.store.list()?;
            self.snapshot = Some((Instant::now(), files.into_iter().map(|r| (r.name.clone(), r)).collect()));
        }
        Ok(&self.snapshot.as_ref().expect("filled above").1)
    }

    fn note_stored(&mut self, record: FileRecord) {
        // Handles reading the name read what was stored now from their next read on: they
        // read the writer's spool while it was open, and must not fall back to the version
        // they were opened on once it closes.
        for handle in self.handles.values_mut().filter(|handle| handle.file.is_none() && handle.name == record.name) {
            handle.source = None;
        }
        if let Some((_, files)) = self.snapshot.as_mut() {
            files.insert(record.name.clone(), record);
        }
    }

    fn note_removed(&mut self, name: &str) {
        if let Some((_, files)) = self.snapshot.as_mut() {
            files.remove(name);
        }
    }

    pub fn is_file(&mut self, path: &str) -> StoreResult<bool> {
        Ok(self.open_files.contains_key(path) || self.files()?.contains_key(path))
    }

    /// The names under directory `path` ("" for the root), bounded.
    fn names_under(&mut self, path: &str) -> StoreResult<Vec<String>> {
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        let mut names: BTreeSet<String> = self
            .files()?
            .range(prefix.clone()..)
            .take_while(|(name, _)| name.starts_with(&prefix))
            .take(DIR_FILES_MAX)
            .map(|(name, _)| name.clone())
            .collect();
        names.extend(self.open_files.keys().filter(|name| name.starts_with(&prefix)).cloned());
        Ok(names.into_iter().collect())
    }

    fn session_dirs_under(&self, path: &str) -> Vec<String> {
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        self.session_dirs.range(prefix.clone()..).take_while(|dir| dir.starts_with(&prefix)).cloned().collect()
    }

    pub fn is_dir(&mut self, path: &str) -> StoreResult<bool> {
        if path.is_empty() || self.session_dirs.contains(path) || !self.session_dirs_under(path).is_empty() {
            return Ok(true);
        }
        let prefix = format!("{path}/");
        if self.open_files.keys().any(|name| name.starts_with(&prefix)) {
            return Ok(true);
        }
        Ok(self.files()?.range(prefix.clone()..).next().is_some_and(|(name, _)| name.starts_with(&prefix)))
    }

    /// The entries of directory `path`: name -> whether it is a directory. A name that is
    /// both a file and a prefix of other names shows as the file.
    pub fn children(&mut self, path: &str) -> StoreResult<BTreeMap<String, bool>> {
        let skip = if path.is_empty() { 0 } else { path.len() + 1 };
        let mut out: BTreeMap<String, bool> = BTreeMap::new();
        let mut all = self.names_under(path)?;
        all.extend(self.session_dirs_under(path).into_iter().map(|dir| format!("{dir}/")));
        for name in all {
            let rest = &name[skip..];
            match rest.split_once('/') {
                Some((first, _)) if !first.is_empty() => {
                    out.entry(first.to_owned()).or_insert(true);
                }
                Some(_) => {}
                None if !rest.is_empty() => {
                    out.insert(rest.to_owned(), false);
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Size and modification time of file `name`.
    pub fn file_stat(&mut self, name: &str) -> StoreResult<(u64, SystemTime)> {
        if let Some(file) = self.open_files.get(name) {
            let file = lock(file);
            if !file.spool_in_store {
                let size = file.spool.metadata().map_err(io_error)?.len();
                return Ok((size, file.modified));
            }
        }
        let record = match self.files()?.get(name) {
            Some(record) => record.clone(),
            None => {
                // Stored since the listing was read (by another client)?
                let source = self.store.source(name)?;
                let record = source.map(|source| source.record().clone());
                record.ok_or_else(|| StoreError::new(libc::ENOENT, format!("no file {name}")))?
            }
        };
        Ok((record.size_bytes, UNIX_EPOCH + Duration::from_millis(record.created_unix_ms)))
    }

    pub fn mkdir(&mut self, path: &str) -> StoreResult<()> {
        if self.is_file(path)? || self.is_dir(path)? {
            return Err(StoreError::new(libc::EEXIST, format!("{path} exists")));
        }
        self.session_dirs.insert(path.to_owned());
        Ok(())
    }

    pub fn rmdir(&mut self, path: &str) -> StoreResult<()> {
        if !self.is_dir(path)? {
            let errno = if self.is_file(path)? { libc::ENOTDIR } else { libc::ENOENT };
            return Err(StoreError::new(errno, format!("{path} is not a directory")));
        }
        if !self.children(path)?.is_empty() {
            return Err(StoreError::new(libc::ENOTEMPTY, format!("{path} is not empty")));
        }
        self.session_dirs.remove(path);
        Ok(())
    }

    fn new_spool(&self) -> StoreResult<File> {
        // Unlinked at once: a crashed mount leaves no spool file behind.
        tempfile::tempfile_in(&self.spool_dir).map_err(io_error)
    }

    fn add_handle(&mut self, handle: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, handle);
        fh
    }

    /// A new file (create): empty, stored on its first flush.
    pub fn create(&mut self, path: &str) -> StoreResult<u64> {
        let spool = self.new_spool()?;
        let file = Arc::new(Mutex::new(OpenFile::new(spool, true, Some(0))));
        if let Some(old) = self.open_files.insert(path.to_owned(), file.clone()) {
            lock(&old).mark_unlinked();
        }
        Ok(self.add_handle(Handle { name: path.to_owned(), file: Some(file), source: None }))
    }

    /// Opens file `name`; for writing its content is copied into a spool file first
    /// (unless `truncate`), or the spool of a handle already writing it is shared.
    pub fn open(&mut self, name: &str, write: bool, truncate: bool) -> StoreResult<u64> {
        if !write {
            let source = if self.open_files.contains_key(name) {
                None
            } else {
                Some(self.store.source(name)?.ok_or_else(|| StoreError::new(libc::ENOENT, format!("no file {name}")))?)
            };
            return Ok(self.add_handle(Handle { name: name.to_owned(), file: None, source }));
        }
        let file = match self.open_files.get(name) {
            Some(file) => file.clone(),
            None => {
                let mut spool = self.new_spool()?;
                if !truncate {
                    self.store.get(name, &mut spool)?;
                }
                let appended = if truncate { Some(0) } else { None };
                let file = Arc::new(Mutex::new(OpenFile::new(spool, truncate, appended)));
                self.open_files.insert(name.to_owned(), file.clone());
                file
            }
        };
        if truncate {
            lock(&file).start_over()?;
        }
        Ok(self.add_handle(Handle { name: name.to_owned(), file: Some(file), source: None }))
    }

    /// Whether read-only handle `fh` of inode `ino` may keep what the kernel cached of the
    /// inode (`FOPEN_KEEP_CACHE`): only if it reads the very version an earlier read-only
    /// open read, and no open for writing or resize came in between (file ids are never
    /// reused, so another version always has another id). Without it, every open has the
    /// kernel drop the inode's pages and read the node again.
    pub fn keep_cache(&mut self, ino: u64, fh: u64) -> bool {
        let version = self.handles.get(&fh).and_then(|handle| handle.source.as_ref()).map(|s| s.record().file_id);
        self.read_versions.opened(ino, version)
    }

    /// Inode `ino` was opened for writing or resized: what the kernel caches of it may be
    /// bytes never stored, so the next read-only open does not keep them.
    pub fn forget_read_version(&mut self, ino: u64) {
        self.read_versions.forget(ino);
    }

    fn handle(&self, fh: u64) -> StoreResult<&Handle> {
        self.handles.get(&fh).ok_or_else(|| StoreError::new(libc::EBADF, format!("no handle {fh}")))
    }

    /// The spool a handle reads or writes: its own, or that of a handle writing the file.
    fn spool_of(&self, fh: u64) -> StoreResult<Option<Shared>> {
        let handle = self.handle(fh)?;
        Ok(handle.file.clone().or_else(|| self.open_files.get(&handle.name).cloned()))
    }

    /// Makes `file`'s spool hold all of file `name` and keep it. A write-behind that freed
    /// part of it already is finished first: the file is stored as written so far (as an
    /// fsync would store it), and the spool refilled from the store. One that freed
    /// nothing frees nothing more. Reads of an open file, writes back into it and resizes
    /// come here; `cp` does none of them.
    fn whole_spool(&mut self, name: &str, file: &mut OpenFile) -> StoreResult<()> {
        file.check_spool_readable()?;
        if file.behind.as_ref().is_some_and(WriteBehind::keep_spool_freed_any) {
            let behind = file.behind.take().expect("checked above");
            match behind.finish() {
                Ok(record) => {
                    file.stored();
                    self.note_stored(record);
                }
                // Whole again, not stored: stored whole on close, as without write-behind.
                Err(failed) => self.restore_freed(file, &failed)?,
            }
        }
        file.refill(name, &mut self.store)
    }

    /// A write-behind failed: what it had freed from the spool is read back from the node
    /// (durable there, under its file id, until garbage collection's grace period ends), so
    /// that the spool holds the whole file again. If that fails as well, the file is lost.
    fn restore_freed(&mut self, file: &mut OpenFile, failed: &Failed) -> StoreResult<()> {
        if failed.freed_bytes == 0 {
            return Ok(());
        }
        self.store.restore_durable(failed.file_id, failed.written_bytes, failed.freed_bytes, &file.spool).map_err(
            |restore| {
                file.spool_lost(StoreError::new(
                    restore.errno,
                    format!("{}; reading back what it had stored failed as well: {restore}", failed.error),
                ))
            },
        )
    }

    pub fn read(&mut self, fh: u64, offset: u64, size: u32) -> StoreResult<ReadBytes> {
        if let Some(file) = self.spool_of(fh)? {
            let name = self.handle(fh)?.name.clone();
            let mut file = lock(&file);
            self.whole_spool(&name, &mut file)?;
            let len = file.spool.metadata().map_err(io_error)?.len();
            let want = (size as u64).min(len.saturating_sub(offset)) as usize;
            let mut out = vec![0u8; want];
            file.spool.read_exact_at(&mut out, offset).map_err(io_error)?;
            return Ok(ReadBytes::Owned(out));
        }
        let handle = self.handle(fh)?;
        let source = match handle.source.clone() {
            Some(source) => source,
            None => {
                // Opened while another handle was writing it, which has closed since: read
                // what that handle stored.
                let name = handle.name.clone();
                let source = self
                    .store
                    .source(&name)?
                    .ok_or_else(|| StoreError::new(libc::ENOENT, format!("no file {name}")))?;
                if let Some(handle) = self.handles.get_mut(&fh) {
                    handle.source = Some(source.clone());
                }
                source
            }
        };
        self.read_stored(&source, offset, size)
    }

    /// Bytes `offset..offset + size` of a stored file, chunk by chunk through the cache.
    /// A read within one chunk (the kernel's 1 MiB reads of 4 MiB chunks, nearly all) is
    /// answered from the cached chunk itself, without a copy.
    fn read_stored(&mut self, source: &Source, offset: u64, size: u32) -> StoreResult<ReadBytes> {
        let record = source.record();
        let end = offset.saturating_add(u64::from(size)).min(record.size_bytes);
        let chunk_bytes = u64::from(record.chunk_bytes.max(1));
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            let index = at / chunk_bytes;
            let chunk = self.chunk(source, index)?;
            let within = (at - index * chunk_bytes) as usize;
            let take = (chunk.len().saturating_sub(within) as u64).min(end - at) as usize;
            if take == 0 {
                return Err(StoreError::new(libc::EIO, format!("chunk {index} of {} is short", record.name)));
            }
            if at == offset && at + take as u64 == end {
                return Ok(ReadBytes::Chunk(chunk, within..within + take));
            }
            out.extend_from_slice(&chunk[within..within + take]);
            at += take as u64;
        }
        Ok(ReadBytes::Owned(out))
    }

    fn chunk(&mut self, source: &Source, index: u64) -> StoreResult<Arc<Vec<u8>>> {
        let key = (source.record().file_id, index);
        // The next chunks are asked for first, so that they come while this one is read.
        self.chunks.prefetch_after(source, index);
        if let Some(chunk) = self.chunks.get(key) {
            return Ok(chunk);
        }
        let chunk = self.store.read_chunks(source, index, 1)?.into_iter().next().map(Arc::new).ok_or_else(|| {
            StoreError::new(libc::EIO, format!("chunk {index} of {} did not come", source.record().name))
        })?;
        self.chunks.insert(key, chunk.clone());
        Ok(chunk)
    }

    pub fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> StoreResult<u32> {
        let file = self.handle(fh)?.file.clone().ok_or_else(|| StoreError::new(libc::EBADF, "not open for writing"))?;
        let name = self.handle(fh)?.name.clone();
        let mut file = lock(&file);
        file.check_not_failed()?;
        if file.appended_bytes != Some(offset) {
            self.whole_spool(&name, &mut file)?;
            file.written_out_of_order();
        }
        if let Err(error) = file.spool.write_all_at(data, offset) {
            return Err(file.spool_failed(error));
        }
        file.dirty = true;
        file.modified = SystemTime::now();
        let Some(end) = file.appended_bytes.map(|end| end + data.len() as u64) else {
            return Ok(data.len() as u32);
        };
        file.appended_bytes = Some(end);
        match &file.behind {
            Some(behind) => behind.written(end),
            None if end >= WRITE_BEHIND_AFTER_BYTES && !file.unlinked => {
                file.behind = WriteBehind::start(&self.target, &name, &file.spool, end, &self.behind_active);
            }
            None => {}
        }
        Ok(data.len() as u32)
    }

    /// Stores a dirty spool as `name` (flush, fsync, last close).
    fn upload(&mut self, name: &str, file: &Shared) -> StoreResult<()> {
        let mut open = lock(file);
        if open.unlinked {
            return Ok(());
        }
        open.check_not_failed()?;
        if !open.dirty {
            return Ok(());
        }
        if let Some(behind) = open.behind.take() {
            match behind.finish() {
                Ok(record) => {
                    open.stored();
                    drop(open);
                    self.note_stored(record);
                    return Ok(());
                }
                Err(failed) => {
                    self.restore_freed(&mut open, &failed)?;
                    // A full disk stays full for a second try of the same bytes.
                    if failed.error.errno == libc::ENOSPC {
                        return Err(failed.error);
                    }
                    tracing::debug!("write-behind of {name} failed ({}): storing it whole", failed.error);
                }
            }
        }
        open.spool.seek(SeekFrom::Start(0)).map_err(io_error)?;
        // Unbuffered: the put reads whole chunks straight into its buffers.
        let record = self.store.put(name, &mut &open.spool)?;
        open.stored();
        drop(open);
        self.note_stored(record);
        Ok(())
    }

    pub fn flush(&mut self, fh: u64) -> StoreResult<()> {
        let handle = self.handle(fh)?;
        let (name, file) = (handle.name.clone(), handle.file.clone());
        match file {
            Some(file) => self.upload(&name, &file),
            None => Ok(()),
        }
    }

    pub fn release(&mut self, fh: u64) -> StoreResult<()> {
        let Some(handle) = self.handles.remove(&fh) else { return Ok(()) };
        let Some(file) = handle.file else { return Ok(()) };
        let result = self.upload(&handle.name, &file);
        let last = !self.handles.values().any(|other| other.file.as_ref().is_some_and(|f| Arc::ptr_eq(f, &file)));
        if last && self.open_files.get(&handle.name).is_some_and(|f| Arc::ptr_eq(f, &file)) {
            self.open_files.remove(&handle.name);
        }
        result
    }

    /// Stores every dirty spool (at unmount).
    pub fn flush_all(&mut self) {
        let files: Vec<(String, Shared)> = self.open_files.iter().map(|(n, f)| (n.clone(), f.clone())).collect();
        for (name, file) in files {
            if let Err(error) = self.upload(&name, &file) {
                tracing::error!("could not store {name} at unmount: {error}");
            }
        }
    }

    /// Truncates or extends file `name` to `size` bytes.
    pub fn set_size(&mut self, name: &str, fh: Option<u64>, size: u64) -> StoreResult<()> {
        let open = match fh.and_then(|fh| self.handles.get(&fh)).and_then(|h| h.file.clone()) {
            Some(file) => Some(file),
            None => self.open_files.get(name).cloned(),
        };
        if let Some(file) = open {
            let mut file = lock(&file);
            file.check_not_failed()?;
            self.whole_spool(name, &mut file)?;
            file.written_out_of_order();
            if let Err(error) = file.spool.set_len(size) {
                return Err(file.spool_failed(error));
            }
            file.dirty = true;
            file.modified = SystemTime::now();
            return Ok(());
        }
        let mut spool = self.new_spool()?;
        if size > 0 {
            self.store.get(name, &mut spool)?;
            spool.set_len(size).map_err(io_error)?;
            spool.seek(SeekFrom::Start(0)).map_err(io_error)?;
        } else if !self.is_file(name)? {
            return Err(StoreError::new(libc::ENOENT, format!("no file {name}")));
        }
        let record = self.store.put(name, &mut &spool)?;
        self.note_stored(record);
        Ok(())
    }

    pub fn unlink(&mut self, name: &str) -> StoreResult<()> {
        let was_open = match self.open_files.remove(name) {
            Some(file) => {
                let mut open = lock(&file);
                // Its handles keep working on what it held.
                if let Err(error) = self.whole_spool(name, &mut open) {
                    tracing::warn!("{name} removed while open: its open handles lost it ({error})");
                }
                open.mark_unlinked();
                true
            }
            None => false,
        };
        match self.store.remove(name) {
            Err(error) if error.errno == libc::ENOENT && was_open => {}
            other => other?,
        }
        self.note_removed(name);
        Ok(())
    }

    /// Renames file `from` to `to`: the metadata has no rename, so the content is stored
    /// again under the new name (with the old one's tags) and the old file removed.
    pub fn rename_file(&mut self, from: &str, to: &str) -> StoreResult<()> {
        if let Some(file) = self.open_files.get(from).cloned() {
            self.upload(from, &file)?;
            self.open_files.remove(from);
            if let Some(old) = self.open_files.insert(to.to_owned(), file) {
                lock(&old).mark_unlinked();
            }
            for handle in self.handles.values_mut().filter(|handle| handle.name == from) {
                handle.name = to.to_owned();
            }
        }
        if self.store.source(from)?.is_some() {
            let mut spool = self.new_spool()?;
            self.store.get(from, &mut spool)?;
            spool.seek(SeekFrom::Start(0)).map_err(io_error)?;
            let tags = self.store.tags_of(from)?;
            let record = self.store.put(to, &mut &spool)?;
            self.note_stored(record);
            if !tags.is_empty() {
                self.store.meta().add_tags(to, &tags)?;
            }
            self.store.remove(from)?;
            self.note_removed(from);
        }
        self.inodes.rename(from, to);
        Ok(())
    }

    /// Renames directory `from` to `to`: every file under it, and the session directories.
    pub fn rename_dir(&mut self, from: &str, to: &str) -> StoreResult<()> {
        if self.is_file(to)? {
            return Err(StoreError::new(libc::ENOTDIR, format!("{to} is a file")));
        }
        if self.is_dir(to)? && !self.children(to)?.is_empty() {
            return Err(StoreError::new(libc::ENOTEMPTY, format!("{to} is not empty")));
        }
        for name in self.names_under(from)? {
            let new_name = format!("{to}{}", &name[from.len()..]);
            self.rename_file(&name, &new_name)?;
        }
        let mut dirs = self.session_dirs_under(from);
        if self.session_dirs.contains(from) {
            dirs.push(from.to_owned());
        }
        for dir in dirs {
            self.session_dirs.remove(&dir);
            self.session_dirs.insert(format!("{to}{}", &dir[from.len()..]));
        }
        self.inodes.rename(from, to);
        Ok(())
    }

    /// Makes sure a file being written exists in the metadata (before tagging it).
    pub fn store_pending(&mut self, name: &str) -> StoreResult<()> {
        if let Some(file) = self.open_files.get(name).cloned() {
            self.upload(name, &file)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inode_lives_while_the_kernel_holds_it() {
        let mut inodes = Inodes::new();
        let file = Key::File("a/b".into());
        let ino = inodes.ino(&file);
        inodes.referenced(ino);
        inodes.referenced(ino);
        inodes.forget(ino, 1);
        assert_eq!(inodes.key(ino).unwrap(), file);
        inodes.forget(ino, 1);
        assert!(inodes.key(ino).is_err());
        assert_eq!(inodes.count(), 1, "only the root is left");
        // Looked up again: a new number, never the old one.
        let again = inodes.ino(&file);
        assert!(again > ino);
        // The root is never forgotten, and forgetting a stale number changes nothing.
        inodes.forget(ROOT_INO, 5);
        inodes.forget(ino, 1);
        assert_eq!(inodes.key(ROOT_INO).unwrap(), Key::Dir(String::new()));
        assert_eq!(inodes.key(again).unwrap(), file);
    }

    #[test]
    fn a_rename_keeps_the_references() {
        let mut inodes = Inodes::new();
        let ino = inodes.ino(&Key::File("old".into()));
        inodes.referenced(ino);
        inodes.rename("old", "new");
        assert_eq!(inodes.key(ino).unwrap(), Key::File("new".into()));
        inodes.forget(ino, 1);
        assert!(inodes.key(ino).is_err());
        assert_eq!(inodes.ino(&Key::File("new".into())), ino + 1);
    }

    #[test]
    fn listed_but_never_looked_up_inodes_are_bounded() {
        let mut inodes = Inodes::new();
        let kept = inodes.ino(&Key::File("kept".into()));
        inodes.referenced(kept);
        for index in 0..3 * UNREFERENCED_INODES_MAX {
            inodes.ino(&Key::File(format!("listed-{index}")));
            assert!(inodes.count() <= UNREFERENCED_INODES_MAX + 3, "{} inodes", inodes.count());
        }
        assert_eq!(inodes.key(kept).unwrap(), Key::File("kept".into()));
        assert_eq!(inodes.key(ROOT_INO).unwrap(), Key::Dir(String::new()));
    }
}
