//! Where `beeline get -o OUT` and `beeline bench --output OUT` write, decided as `cp`
//! decides, without ever harming what is already at `OUT`:
//!
//! - `-` is standard output.
//! - A character device, block device or FIFO (`/dev/null`, `/dev/stdout`, a named pipe)
//!   is opened as it is and written in place, never replaced: renaming a regular file over
//!   it once turned `/dev/null` into a file when run as root.
//! - A directory receives the file under the stored name's base name (the part after the
//!   last `/`), as `cp FILE DIR` does.
//! - A regular file, or nothing, is written to a temporary file created exclusively
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`, a random name, beside the destination) and renamed over
//!   the destination once everything was written, verified and synced. Every error, and
//!   SIGINT/SIGTERM/SIGHUP, removes the temporary file, so `OUT` holds the old content or
//!   the whole new one, and nothing else is left behind.
//! - A symbolic link is written through, as `cp` does: the link stays and the regular file
//!   it points to is replaced as above. A link to nothing is refused, as GNU `cp` refuses.
//! - A replaced file keeps its permission bits (not its owner, nor its other hard links);
//!   a new file gets 0666 minus the umask.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, Ordering};

const BUFFER_BYTES: usize = 1 << 20;
/// Longest file name most file systems take, in bytes.
const FILE_NAME_BYTES_MAX: usize = 255;
const TEMP_SUFFIX: &str = ".beeline-partial";

/// An open destination: write the content to [`Output::writer`], then [`Output::finish`].
/// Dropped without `finish`, it leaves the destination as it was.
pub struct Output {
    sink: Sink,
    shown: String,
}

enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    Direct { writer: BufWriter<File>, sync: bool },
    Replace { writer: BufWriter<File>, temp: TempFile, destination: PathBuf },
}

/// What a path turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Stdout,
    /// A device or FIFO, written in place; `sync` for block devices.
    Direct {
        path: PathBuf,
        sync: bool,
    },
    /// A regular file (`mode` is its permission bits) or nothing yet.
    Replace {
        destination: PathBuf,
        mode: Option<u32>,
    },
}

impl Output {
    /// Opens `path` for writing. `base_name` is the name the content goes under when
    /// `path` is a directory; `None` makes a directory an error.
    pub fn open(path: &Path, base_name: Option<&str>) -> Result<Output, String> {
        match resolve(path, base_name)? {
            Kind::Stdout => {
                Ok(Output { sink: Sink::Stdout(std::io::stdout().lock()), shown: "standard output".into() })
            }
            Kind::Direct { path, sync } => open_direct(&path, sync),
            Kind::Replace { destination, mode } => open_replace(destination, mode),
        }
    }

    pub fn is_stdout(&self) -> bool {
        matches!(self.sink, Sink::Stdout(_))
    }

    /// The destination as messages should name it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn writer(&mut self) -> &mut dyn Write {
        match &mut self.sink {
            Sink::Stdout(lock) => lock,
            Sink::Direct { writer, .. } | Sink::Replace { writer, .. } => writer,
        }
    }

    /// Flushes and syncs what was written and, for a regular file, puts it in place.
    pub fn finish(self) -> Result<(), String> {
        let shown = self.shown;
        let error = |e: std::io::Error| format!("cannot write {shown}: {e}");
        match self.sink {
            Sink::Stdout(mut lock) => lock.flush().map_err(error),
            Sink::Direct { writer, sync } => {
                let file = writer.into_inner().map_err(|e| error(e.into_error()))?;
                if sync { file.sync_all().map_err(error) } else { Ok(()) }
            }
            Sink::Replace { writer, temp, destination } => {
                let file = writer.into_inner().map_err(|e| error(e.into_error()))?;
                file.sync_all().map_err(error)?;
                temp.rename_over(&destination).map_err(|e| format!("cannot put {shown} in place: {e}"))
            }
        }
    }
}

/// The part of a stored name after its last `/`, when that names a file (not `.` or `..`).
pub fn base_name(name: &str) -> Option<&str> {
    let base = name.rsplit('/').next().unwrap_or(name);
    (!base.is_empty() && base != "." && base != "..").then_some(base)
}

fn resolve(path: &Path, base_name: Option<&str>) -> Result<Kind, String> {
    if path.as_os_str() == "-" {
        return Ok(Kind::Stdout);
    }
    if !fs::metadata(path).is_ok_and(|meta| meta.is_dir()) {
        return classify(path);
    }
    let base = base_name.ok_or_else(|| format!("{} is a directory: give a file path", path.display()))?;
    let inside = path.join(base);
    if fs::metadata(&inside).is_ok_and(|meta| meta.is_dir()) {
        return Err(format!("{} is a directory: remove it or give another path with -o", inside.display()));
    }
    classify(&inside)
}

fn classify(path: &Path) -> Result<Kind, String> {
    let shown = path.display();
    match fs::metadata(path) {
        Ok(meta) => {
            let kind = meta.file_type();
            if kind.is_char_device() || kind.is_fifo() || kind.is_block_device() {
                Ok(Kind::Direct { path: path.to_owned(), sync: kind.is_block_device() })
            } else if kind.is_file() {
                // Through a symbolic link, the file it points to is the one replaced.
                let destination = fs::canonicalize(path).map_err(|e| format!("cannot resolve {shown}: {e}"))?;
                Ok(Kind::Replace { destination, mode: Some(meta.mode() & 0o777) })
            } else {
                Err(format!("{shown} is not a file, device or pipe: give another path"))
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if fs::symlink_metadata(path).is_ok() {
                return Err(format!(
                    "{shown} is a symbolic link to nothing: not writing through it (as cp does not); remove it or give another path"
                ));
            }
            Ok(Kind::Replace { destination: path.to_owned(), mode: None })
        }
        Err(error) => Err(format!("cannot write {shown}: {error}")),
    }
}

fn open_direct(path: &Path, sync: bool) -> Result<Output, String> {
    let shown = path.display().to_string();
    // No O_CREAT and no O_TRUNC: if the device went away, nothing is created in its place.
    let file = OpenOptions::new().write(true).open(path).map_err(|e| format!("cannot write {shown}: {e}"))?;
    let kind = file.metadata().map_err(|e| format!("cannot write {shown}: {e}"))?.file_type();
    if !(kind.is_char_device() || kind.is_fifo() || kind.is_block_device()) {
        return Err(format!("{shown} changed while being opened: try again"));
    }
    Ok(Output { sink: Sink::Direct { writer: BufWriter::with_capacity(BUFFER_BYTES, file), sync }, shown })
}

fn open_replace(destination: PathBuf, mode: Option<u32>) -> Result<Output, String> {
    let shown = destination.display().to_string();
    let (file, temp) = create_temp(&destination).map_err(|e| format!("cannot write {shown}: {e}"))?;
    if let Some(mode) = mode {
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| format!("cannot write {shown}: {e}"))?;
    }
    let writer = BufWriter::with_capacity(BUFFER_BYTES, file);
    Ok(Output { sink: Sink::Replace { writer, temp, destination }, shown })
}

/// Creates a new file with a random name beside `destination`, never following or
/// reusing anything already there, and removed again unless renamed into place.
pub fn create_temp(destination: &Path) -> std::io::Result<(File, TempFile)> {
    create_temp_with(destination, &mut rand::random)
}

fn create_temp_with(destination: &Path, random: &mut dyn FnMut() -> u64) -> std::io::Result<(File, TempFile)> {
    let file_name = destination
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path does not end in a file name"))?;
    let parent = parent_of(destination);
    let mut attempts = 0;
    loop {
        let path = parent.join(temp_name(file_name.as_bytes(), random()));
        // Registered before it exists: a signal the moment after the file appears must
        // find it (a test caught one arriving between the two). A signal before only
        // unlinks a name that nobody holds, 64 random bits being unguessable.
        let registration = signal_cleanup::register(&path);
        match create_exclusive(&path) {
            Ok(file) => return Ok((file, TempFile { path: Some(path), registration })),
            Err(error) => {
                signal_cleanup::clear(registration);
                // Another file (or link) holds that name: ours are random, so draw again.
                if error.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 {
                    attempts += 1;
                } else {
                    return Err(error);
                }
            }
        }
    }
}

/// A new file at exactly `path`: fails with `AlreadyExists` on anything already there,
/// a symbolic link included, which it never follows.
fn create_exclusive(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o666).custom_flags(libc::O_NOFOLLOW).open(path)
}

fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// `.NAME.RANDOM.beeline-partial`, with NAME shortened so the whole fits one file name.
fn temp_name(file_name: &[u8], random: u64) -> OsString {
    let tail = format!(".{random:016x}{TEMP_SUFFIX}");
    let keep = file_name.len().min(FILE_NAME_BYTES_MAX - 1 - tail.len());
    let mut name = Vec::with_capacity(FILE_NAME_BYTES_MAX);
    name.push(b'.');
    name.extend_from_slice(&file_name[..keep]);
    name.extend_from_slice(tail.as_bytes());
    OsString::from_vec(name)
}

/// A temporary file that is removed when dropped, or when the process is stopped by
/// SIGINT, SIGTERM or SIGHUP, until [`TempFile::rename_over`] puts it in place.
pub struct TempFile {
    path: Option<PathBuf>,
    registration: signal_cleanup::Registration,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("set until renamed or dropped")
    }

    /// Renames it to `destination` if that is still a regular file or nothing, then syncs
    /// the directory so the rename survives a crash.
    pub fn rename_over(mut self, destination: &Path) -> std::io::Result<()> {
        // Checked again at the last moment: what was a file when we started may now be a
        // device or a link, which must not be replaced.
        match fs::symlink_metadata(destination) {
            Ok(meta) if !meta.is_file() => {
                return Err(std::io::Error::other("it is no longer a regular file; nothing was replaced"));
            }
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        fs::rename(self.path(), destination)?;
        self.path = None;
        signal_cleanup::clear(self.registration);
        // The content is in place; a directory that cannot be synced only weakens crash
        // durability, which is not worth failing a complete write over.
        let _ = File::open(parent_of(destination)).and_then(|directory| directory.sync_all());
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            signal_cleanup::clear(self.registration);
            let _ = fs::remove_file(path);
        }
    }
}

/// Removes the latest live temporary file when a signal stops the process, since no
/// destructor runs then. The command line has one at a time; with several (tests), only
/// the latest is covered.
mod signal_cleanup {
    use super::*;

    static PATH: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());
    static INSTALL: Once = Once::new();

    /// Which registration a temporary file made (the address of its path), to clear only
    /// its own.
    #[derive(Clone, Copy)]
    pub(super) struct Registration(usize);

    pub(super) fn register(path: &Path) -> Registration {
        INSTALL.call_once(install);
        let Ok(path) = CString::new(path.as_os_str().as_bytes()) else { return Registration(0) };
        let raw = path.into_raw();
        PATH.store(raw, Ordering::SeqCst);
        Registration(raw as usize)
    }

    /// Forgets the path if it is still the registered one. Its memory is leaked on purpose:
    /// a handler running on another thread may be reading it, and it is one short path per
    /// temporary file.
    pub(super) fn clear(registration: Registration) {
        let _ = PATH.compare_exchange(
            registration.0 as *mut libc::c_char,
            std::ptr::null_mut(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    fn install() {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: `on_signal` only calls async-signal-safe functions (unlink, signal,
            // raise) and reads an atomic; installing a handler has no other precondition.
            unsafe {
                libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
            }
        }
    }

    extern "C" fn on_signal(signal: libc::c_int) {
        let path = PATH.swap(std::ptr::null_mut(), Ordering::SeqCst);
        // SAFETY: `path` is null or a NUL-terminated string that is never freed; unlink,
        // signal and raise are async-signal-safe. Re-raising with the default disposition
        // ends the process as the signal would have.
        unsafe {
            if !path.is_null() {
                libc::unlink(path);
            }
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

#[cfg(test)]
mod tests;
