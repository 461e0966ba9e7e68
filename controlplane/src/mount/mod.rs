//! `beeline mount DIR`: the store as a FUSE file system, in the foreground until SIGINT,
//! SIGTERM or `beeline umount DIR`. Names with `/` are directories, files are written
//! through a spool file on disk and stored whole on close or fsync, tags are the
//! `user.disgrafs.tags` extended attribute, and `.tags/` walks the file-tag graph.
//! Pure Rust FUSE (fuser without libfuse): the kernel module and `fusermount3` at run
//! time, nothing at build time.

mod behind;
mod chunks;
mod fs;
mod read_versions;
mod state;
pub mod store;
mod tags;

use std::path::{Path, PathBuf};
use std::process::Command;

use fuser::{Config, MountOption};

pub use store::Target;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{dir}: {what}: mount on an empty directory (mkdir it first)")]
    BadDir { dir: String, what: String },
    #[error(
        "cannot use spool directory {dir}: {source}; pass --spool-dir on a disk with room for the files being written"
    )]
    Spool { dir: String, source: std::io::Error },
    #[error("cannot reach the store: {0}")]
    Store(String),
    #[error(
        "cannot mount on {dir}: {source}; is /dev/fuse there and fusermount3 installed (Debian: apt-get install fuse3)?"
    )]
    Mount { dir: String, source: std::io::Error },
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot unmount {dir}: {reason}; close the programs using it, or `fusermount3 -u -z {dir}` detaches it")]
    Unmount { dir: String, reason: String },
}

pub struct MountOptions {
    pub dir: PathBuf,
    pub target: Target,
    /// Where files being written are spooled: on disk, not in memory.
    pub spool_dir: PathBuf,
    /// Reads skip the kernel's page cache too (`--direct-reads`), not only writes.
    pub direct_reads: bool,
}

/// The spool directory used without `--spool-dir`: under /var/tmp, which is on disk
/// where /tmp may be memory.
pub fn default_spool_dir() -> PathBuf {
    Path::new("/var/tmp").join(format!("beeline-spool-{}", std::process::id()))
}

/// Refuses anything but an empty directory, as mounting over files would hide them.
pub fn check_dir(dir: &Path) -> Result<(), MountError> {
    let bad = |what: &str| MountError::BadDir { dir: dir.display().to_string(), what: what.to_owned() };
    let metadata = std::fs::metadata(dir).map_err(|error| bad(&error.to_string()))?;
    if !metadata.is_dir() {
        return Err(bad("not a directory"));
    }
    let mut entries = std::fs::read_dir(dir).map_err(|error| bad(&error.to_string()))?;
    if entries.next().is_some() {
        return Err(bad("not empty"));
    }
    Ok(())
}

/// Mounts and serves until unmounted; SIGINT or SIGTERM unmounts.
pub fn run(options: MountOptions) -> Result<(), MountError> {
    check_dir(&options.dir)?;
    let spool_error = |source| MountError::Spool { dir: options.spool_dir.display().to_string(), source };
    std::fs::create_dir_all(&options.spool_dir).map_err(spool_error)?;
    let target = reads_kept_by_the_kernel(options.target, options.direct_reads);
    let mut store = store::Store::open(&target).map_err(|e| MountError::Store(e.to_string()))?;
    store.check().map_err(|e| MountError::Store(e.to_string()))?;
    let signals = block_signals().map_err(MountError::Signals)?;
    let filesystem =
        fs::BeelineFs::new(state::State::new(store, target, options.spool_dir.clone()), options.direct_reads);
    let mut config = Config::default();
    config.mount_options =
        vec![MountOption::FSName("beeline".into()), MountOption::Subtype("beeline".into()), MountOption::NoAtime];
    let dir = options.dir.display().to_string();
    let mut session = fuser::Session::new(filesystem, &options.dir, &config)
        .map_err(|source| MountError::Mount { dir: dir.clone(), source })?;
    let mut unmounter = session.unmount_callable();
    let mount_dir = options.dir.clone();
    std::thread::spawn(move || {
        let signal = wait_signal(&signals);
        tracing::info!("signal {signal}: unmounting {}", mount_dir.display());
        if let Err(error) = unmounter.unmount() {
            tracing::warn!("unmount failed ({error}); detaching {} lazily", mount_dir.display());
            let _ = lazy_unmount(&mount_dir);
        }
    });
    eprintln!("beeline: mounted on {dir}; Ctrl-C or `beeline umount {dir}` unmounts");
    let result = session.run().map_err(|source| MountError::Mount { dir: dir.clone(), source });
    let _ = std::fs::remove_dir(&options.spool_dir);
    result
}

/// What the mount reads lands in the kernel's page cache of its files, so a single node is
/// told to drop the chunks it read (`gets_not_read_soon`) rather than keep a second copy in
/// fresh memory: a large `cp` out then reuses the node's few pages instead of taking new
/// ones for every chunk. With `--direct-reads` the kernel keeps nothing and the node's cache
/// is the only one, so it is left alone; a cluster's clients take no hints (yet).
fn reads_kept_by_the_kernel(target: Target, direct_reads: bool) -> Target {
    match target {
        Target::Node(options) if !direct_reads => {
            Target::Node(crate::client::ClientOptions { gets_not_read_soon: true, ..options })
        }
        other => other,
    }
}

/// Blocks SIGINT and SIGTERM in this thread and every thread started after, so that the
/// signal thread alone takes them with sigwait.
fn block_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask gets a
    // valid set and a null old-set pointer, which it allows.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        let result = libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        if result != 0 {
            return Err(std::io::Error::from_raw_os_error(result));
        }
        Ok(set)
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // Bounded: returns on the first blocked signal of the set; an error (EINVAL only)
    // ends the wait as if a signal came, which unmounts.
    // SAFETY: `set` is an initialised signal set and `signal` a live int.
    unsafe { libc::sigwait(set, &raw mut signal) };
    signal
}

fn lazy_unmount(dir: &Path) -> Result<(), String> {
    let output = Command::new("fusermount3").arg("-u").arg("-z").arg(dir).output();
    match output {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
        Err(error) => Err(format!("cannot run fusermount3: {error}")),
    }
}

/// `beeline umount DIR`: fusermount3 -u, or umount(2) where fusermount3 is missing.
pub fn umount(dir: &Path) -> Result<(), MountError> {
    let shown = dir.display().to_string();
    match Command::new("fusermount3").arg("-u").arg(dir).output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => {
            Err(MountError::Unmount { dir: shown, reason: String::from_utf8_lossy(&output.stderr).trim().to_owned() })
        }
        Err(_) => {
            use std::os::unix::ffi::OsStrExt;
            let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
                .map_err(|_| MountError::Unmount { dir: shown.clone(), reason: "the path has a NUL byte".into() })?;
            // SAFETY: `path` is a NUL-terminated string that outlives the call.
            if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
                Ok(())
            } else {
                Err(MountError::Unmount { dir: shown, reason: std::io::Error::last_os_error().to_string() })
            }
        }
    }
}
