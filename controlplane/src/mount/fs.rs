//! The FUSE side: fuser's `Filesystem` calls turned into [`State`] calls, and their
//! answers into replies. One lock around the state: the session runs on one thread, and
//! the lock only makes the state `Sync` as fuser asks.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::state::{Key, ROOT_INO, State, check_new_name, child_path};
use super::store::{StoreError, StoreResult};
use super::tags::{TAGS_DIR, TAGS_XATTR, decode, encode, link_target, parse_tags};

/// How long the kernel may trust an answer: changes made elsewhere show within this.
const TTL: Duration = Duration::from_secs(1);
/// Largest read and write request asked of the kernel.
pub const REQUEST_BYTES_MAX: u32 = 1 << 20;

pub struct BeelineFs {
    state: Mutex<State>,
    uid: u32,
    gid: u32,
    /// `FOPEN_DIRECT_IO` once the kernel allows it (see [`direct_io_flags`]), else nothing:
    /// what a write-only open asks for, and with `--direct-reads` every open.
    direct_io: FopenFlags,
    direct_reads: bool,
}

/// A write-only open bypasses the kernel's page cache for the file (`FOPEN_DIRECT_IO`):
/// a write goes from the writer's buffer straight into the request this process reads,
/// instead of first into fresh page-cache pages of the mounted file, the same bytes the
/// spool holds anyway (a `cp` in spent 2-3 s of its own CPU per GiB there; 0.1 s direct).
/// Each `write` was one request before too (no write-back cache), so small writes lose
/// nothing. Only write-only opens: a read through a direct-I/O handle is one request per
/// `read`, without the kernel's read-ahead (4 KiB reads ran 10x slower), so opens that
/// read keep the page cache. Only when the kernel still lets such a file be mapped
/// (`FUSE_DIRECT_IO_ALLOW_MMAP`, Linux 6.6), so that nothing that worked stops working.
/// `--direct-reads` makes the other trade for readers too.
fn direct_io_flags(config: &mut KernelConfig) -> FopenFlags {
    match config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP) {
        Ok(()) => FopenFlags::FOPEN_DIRECT_IO,
        Err(_) => FopenFlags::empty(),
    }
}

fn errno(error: &StoreError) -> Errno {
    // No such file and no such attribute are answers, not failures: the kernel asks for
    // `security.capability` before every write.
    if !matches!(error.errno, libc::ENOENT | libc::ENODATA) {
        tracing::warn!("{error}");
    }
    Errno::from_i32(error.errno)
}

fn name_of(name: &OsStr) -> StoreResult<&str> {
    name.to_str().ok_or_else(|| StoreError::new(libc::EINVAL, "names are UTF-8"))
}

fn read_only() -> StoreError {
    StoreError::new(libc::EROFS, ".tags is read-only: tag files with setfattr -n user.disgrafs.tags")
}

impl BeelineFs {
    pub fn new(state: State, direct_reads: bool) -> Self {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        BeelineFs { state: Mutex::new(state), uid, gid, direct_io: FopenFlags::empty(), direct_reads }
    }

    /// What an open with `flags` (as `open(2)` got them) asks of the kernel.
    fn open_flags(&self, flags: i32) -> FopenFlags {
        if self.direct_reads || flags & libc::O_ACCMODE == libc::O_WRONLY {
            self.direct_io
        } else {
            FopenFlags::empty()
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn attr(&self, state: &mut State, key: &Key) -> StoreResult<FileAttr> {
        let ino = state.inodes.ino(key);
        let (kind, perm, size, time) = match key {
            Key::Dir(_) => (FileType::Directory, 0o755, 4096, state.mounted_at),
            Key::TagsRoot | Key::TagDir(_) => (FileType::Directory, 0o555, 4096, state.mounted_at),
            Key::File(name) => {
                let (size, time) = state.file_stat(name)?;
                (FileType::RegularFile, 0o644, size, time)
            }
            Key::TagLink(_, name) => (FileType::Symlink, 0o777, link_target(name).len() as u64, state.mounted_at),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: REQUEST_BYTES_MAX,
            flags: 0,
        })
    }

    fn lookup_key(&self, state: &mut State, parent: u64, name: &str) -> StoreResult<Key> {
        match state.inodes.key(parent)? {
            Key::Dir(dir) => {
                if dir.is_empty() && name == TAGS_DIR {
                    return Ok(Key::TagsRoot);
                }
                let path = child_path(&dir, name);
                if name.len() > crate::control::NAME_PART_BYTES_MAX || path.len() > crate::control::NAME_BYTES_MAX {
                    return Err(StoreError::new(libc::ENAMETOOLONG, format!("name too long: {path}")));
                }
                if state.is_file(&path)? {
                    Ok(Key::File(path))
                } else if state.is_dir(&path)? {
                    Ok(Key::Dir(path))
                } else {
                    Err(StoreError::new(libc::ENOENT, format!("no {path}")))
                }
            }
            Key::TagsRoot => Ok(Key::TagDir(state.tag_dir(name)?)),
            Key::TagDir(tags) => {
                let file = decode(name);
                if state.carries(&file, &tags).unwrap_or(false) {
                    Ok(Key::TagLink(tags, file))
                } else {
                    Err(StoreError::new(libc::ENOENT, format!("{file} does not carry {}", tags.join("+"))))
                }
            }
            _ => Err(StoreError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    /// The directory path an entry is made in; `.tags` and below are read-only.
    fn writable_parent(state: &State, parent: u64) -> StoreResult<String> {
        match state.inodes.key(parent)? {
            Key::Dir(dir) => Ok(dir),
            Key::TagsRoot | Key::TagDir(_) => Err(read_only()),
            _ => Err(StoreError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    fn new_path(state: &State, parent: u64, name: &OsStr) -> StoreResult<String> {
        let dir = Self::writable_parent(state, parent)?;
        let name = name_of(name)?;
        if dir.is_empty() && name == TAGS_DIR {
            return Err(read_only());
        }
        let path = child_path(&dir, name);
        check_new_name(&path, name)?;
        Ok(path)
    }

    fn file_name(state: &State, ino: u64) -> StoreResult<String> {
        match state.inodes.key(ino)? {
            Key::File(name) => Ok(name),
            Key::Dir(_) | Key::TagsRoot | Key::TagDir(_) => Err(StoreError::new(libc::EISDIR, "a directory")),
            Key::TagLink(..) => Err(StoreError::new(libc::EPERM, "a link in .tags")),
        }
    }

    fn entries(&self, state: &mut State, ino: u64) -> StoreResult<Vec<(u64, FileType, String)>> {
        let key = state.inodes.key(ino)?;
        let mut out =
            vec![(ino, FileType::Directory, ".".to_owned()), (ROOT_INO, FileType::Directory, "..".to_owned())];
        match key {
            Key::Dir(dir) => {
                if dir.is_empty() {
                    out.push((state.inodes.ino(&Key::TagsRoot), FileType::Directory, TAGS_DIR.to_owned()));
                }
                for (name, is_dir) in state.children(&dir)? {
                    if dir.is_empty() && name == TAGS_DIR {
                        continue;
                    }
                    let path = child_path(&dir, &name);
                    let (key, kind) = if is_dir {
                        (Key::Dir(path), FileType::Directory)
                    } else {
                        (Key::File(path), FileType::RegularFile)
                    };
                    out.push((state.inodes.ino(&key), kind, name));
                }
            }
            // Combinations (`a+b`) are looked up, never listed: `find .tags` stays finite.
            Key::TagsRoot => {
                for tag in state.all_tags()? {
                    let ino = state.inodes.ino(&Key::TagDir(vec![tag.clone()]));
                    out.push((ino, FileType::Directory, encode(&tag)));
                }
            }
            Key::TagDir(tags) => {
                for file in state.files_with(&tags)? {
                    let ino = state.inodes.ino(&Key::TagLink(tags.clone(), file.clone()));
                    out.push((ino, FileType::Symlink, encode(&file)));
                }
            }
            _ => return Err(StoreError::new(libc::ENOTDIR, "not a directory")),
        }
        Ok(out)
    }

    fn do_rename(
        &self,
        state: &mut State,
        from: (u64, &OsStr),
        to: (u64, &OsStr),
        flags: RenameFlags,
    ) -> StoreResult<()> {
        let source = Self::new_path(state, from.0, from.1)?;
        let target = Self::new_path(state, to.0, to.1)?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(StoreError::new(libc::EINVAL, "exchanging names is not supported"));
        }
        let target_exists = state.is_file(&target)? || state.is_dir(&target)?;
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && target_exists {
            return Err(StoreError::new(libc::EEXIST, format!("{target} exists")));
        }
        if source == target {
            return Ok(());
        }
        if state.is_file(&source)? {
            if state.is_dir(&target)? && !state.is_file(&target)? {
                return Err(StoreError::new(libc::EISDIR, format!("{target} is a directory")));
            }
            state.rename_file(&source, &target)
        } else if state.is_dir(&source)? {
            state.rename_dir(&source, &target)
        } else {
            Err(StoreError::new(libc::ENOENT, format!("no {source}")))
        }
    }
}

impl Filesystem for BeelineFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(REQUEST_BYTES_MAX);
        let _ = config.set_max_readahead(REQUEST_BYTES_MAX).or_else(|max| config.set_max_readahead(max));
        let _ = config.set_max_background(64);
        // Each alone: a kernel without one still gets the others.
        for wanted in [InitFlags::FUSE_ATOMIC_O_TRUNC, InitFlags::FUSE_ASYNC_READ, InitFlags::FUSE_BIG_WRITES] {
            let _ = config.add_capabilities(wanted);
        }
        self.direct_io = direct_io_flags(config);
        if self.direct_io.is_empty() {
            let reads = if self.direct_reads { " and reads (--direct-reads)" } else { "" };
            tracing::warn!(
                "writes{reads} go through the page cache: the kernel lacks FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6)"
            );
        } else if self.direct_reads {
            tracing::info!("write-only opens and reads bypass the page cache (direct I/O, --direct-reads)");
        } else {
            tracing::info!("write-only opens bypass the page cache (direct I/O)");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.state().flush_all();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        let result = name_of(name)
            .and_then(|name| self.lookup_key(&mut state, parent.0, name))
            .and_then(|key| self.attr(&mut state, &key));
        match result {
            Ok(attr) => {
                state.inodes.referenced(attr.ino.0);
                reply.entry(&TTL, &attr, Generation(0));
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.state().inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut state = self.state();
        match state.inodes.key(ino.0).and_then(|key| self.attr(&mut state, &key)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        if size.is_some() {
            state.forget_read_version(ino.0);
        }
        let result = state.inodes.key(ino.0).and_then(|key| {
            if let Some(size) = size {
                match &key {
                    Key::File(name) => state.set_size(name, fh.map(|fh| fh.0), size)?,
                    Key::Dir(_) => return Err(StoreError::new(libc::EISDIR, "a directory")),
                    _ => return Err(read_only()),
                }
            }
            // Modes, owners and times are not stored: the answer shows what is.
            self.attr(&mut state, &key)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.state().inodes.key(ino.0) {
            Ok(Key::TagLink(_, name)) => reply.data(link_target(&name).as_bytes()),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        let mut state = self.state();
        let result = Self::new_path(&state, parent.0, name).and_then(|path| {
            state.mkdir(&path)?;
            self.attr(&mut state, &Key::Dir(path))
        });
        match result {
            Ok(attr) => {
                state.inodes.referenced(attr.ino.0);
                reply.entry(&TTL, &attr, Generation(0));
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = Self::new_path(&state, parent.0, name).and_then(|path| {
            if !state.is_file(&path)? {
                let errno = if state.is_dir(&path)? { libc::EISDIR } else { libc::ENOENT };
                return Err(StoreError::new(errno, format!("no file {path}")));
            }
            state.unlink(&path)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        match Self::new_path(&state, parent.0, name).and_then(|path| state.rmdir(&path)) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        match self.do_rename(&mut state, (parent.0, name), (newparent.0, newname), flags) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let truncate = write && flags.0 & libc::O_TRUNC != 0;
        let open_flags = self.open_flags(flags.0);
        if write {
            state.forget_read_version(ino.0);
        }
        match Self::file_name(&state, ino.0).and_then(|name| state.open(&name, write, truncate)) {
            Ok(fh) => {
                let keep = !write && !self.direct_reads && state.keep_cache(ino.0, fh);
                let keep = if keep { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
                reply.opened(FileHandle(fh), open_flags | keep)
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let result = Self::new_path(&state, parent.0, name).and_then(|path| {
            if flags & libc::O_EXCL != 0 && state.is_file(&path)? {
                return Err(StoreError::new(libc::EEXIST, format!("{path} exists")));
            }
            if state.is_dir(&path)? && !state.is_file(&path)? {
                return Err(StoreError::new(libc::EISDIR, format!("{path} is a directory")));
            }
            let fh = state.create(&path)?;
            Ok((fh, self.attr(&mut state, &Key::File(path))?))
        });
        match result {
            Ok((fh, attr)) => {
                state.inodes.referenced(attr.ino.0);
                reply.created(&TTL, &attr, Generation(0), FileHandle(fh), self.open_flags(flags));
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.state().read(fh.0, offset, size) {
            Ok(data) => reply.data(data.as_slice()),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(fh.0, offset, data) {
            Ok(written) => reply.written(written),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        match self.state().flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.state().release(fh.0) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.state().flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut state = self.state();
        match self.entries(&mut state, ino.0) {
            Ok(entries) => {
                for (index, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(ino), index as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The store's space is spread over its nodes: report plenty rather than a number
        // that means nothing; a full node answers ENOSPC on the write itself.
        // Inodes: the ones the table holds now show as used (`df -i`), out of a nominal 2^24.
        let blocks = 1u64 << 32;
        let files = 1u64 << 24;
        let free = files.saturating_sub(self.state().inodes.count() as u64);
        reply.statfs(blocks, blocks, blocks, files, free, 4096, crate::control::NAME_PART_BYTES_MAX as u32, 4096);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = Self::file_name(&state, ino.0).and_then(|file| {
            if name.as_bytes() != TAGS_XATTR.as_bytes() {
                return Err(StoreError::new(libc::EOPNOTSUPP, format!("only {TAGS_XATTR} can be set")));
            }
            let wanted = parse_tags(value)?;
            state.set_user_tags(&file, &wanted)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let mut state = self.state();
        let result = match state.inodes.key(ino.0) {
            Ok(Key::File(file)) if name.as_bytes() == TAGS_XATTR.as_bytes() => state.tags_value(&file),
            Ok(_) => Err(StoreError::new(libc::ENODATA, "no such attribute")),
            Err(error) => Err(error),
        };
        match result {
            Ok(value) => xattr_reply(reply, value.as_bytes(), size),
            Err(error) => reply.error(errno(&error)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names: &[u8] = match self.state().inodes.key(ino.0) {
            Ok(Key::File(_)) => b"user.disgrafs.tags\0",
            Ok(_) => b"",
            Err(error) => return reply.error(errno(&error)),
        };
        xattr_reply(reply, names, size);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = Self::file_name(&state, ino.0).and_then(|file| {
            if name.as_bytes() != TAGS_XATTR.as_bytes() {
                return Err(StoreError::new(libc::ENODATA, "no such attribute"));
            }
            state.set_user_tags(&file, &Default::default())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(errno(&error)),
        }
    }
}

/// The size asked with 0, else the value when it fits.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
