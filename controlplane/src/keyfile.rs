//! The cluster key: 32 random bytes, stored hex-encoded in a file readable only by its
//! owner. A node creates it when none exists; clients and other nodes read the same file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use beeline_dataplane::wire::ClusterKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no cluster key at {0}: start `beeline node run` on this machine (it creates one), copy the node's key file here, or pass --key-file"
    )]
    Missing(PathBuf),
    #[error(
        "cluster key file {path} is unreadable: {reason}; it must hold 64 hex digits (as written by `beeline node run`)"
    )]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write cluster key file {path}: {source}; pass --key-file with a writable path")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Where the key lives when no `--key-file` is given: `$BEELINE_KEY_FILE`, else
/// `$HOME/.config/beeline/cluster.key`.
pub fn default_key_path() -> PathBuf {
    if let Some(path) = std::env::var_os("BEELINE_KEY_FILE") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".config/beeline/cluster.key")
}

/// Reads the key; warns on stderr (and goes on) when others than its owner may read or
/// change the file.
pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
    let (text, mode) = match read_with_mode(path) {
        Ok(read) => read,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(KeyError::Missing(path.to_owned())),
        Err(error) => return Err(KeyError::Invalid { path: path.to_owned(), reason: error.to_string() }),
    };
    let key = parse_hex_key(text.trim()).map_err(|reason| KeyError::Invalid { path: path.to_owned(), reason })?;
    if let Some(warning) = loose_permissions_warning(path, mode) {
        eprintln!("beeline: warning: {warning}");
    }
    Ok(ClusterKey::new(key))
}

/// The content and the mode of the same open file.
fn read_with_mode(path: &Path) -> std::io::Result<(String, u32)> {
    let mut file = fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)?;
    Ok((text, mode))
}

/// One line saying what is wrong and the command that fixes it, when group or others have
/// any access: whoever reads the key can forge requests every node accepts.
fn loose_permissions_warning(path: &Path, mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "cluster key file {} is open to group or others (mode {:04o}): anyone who reads it can forge requests to the nodes; run: chmod 600 {}",
            path.display(),
            mode & 0o7777,
            shell_quoted(path)
        )
    })
}

/// `path` as a shell word, quoted only when it needs to be.
fn shell_quoted(path: &Path) -> String {
    let text = path.display().to_string();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b)) {
        text
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Loads the key, creating a fresh random one (mode 0600) when the file does not exist.
/// Returns whether it was created.
///
/// Race-free: the key is written to a private temporary file beside `path` and linked into
/// place with `link(2)`, which never replaces an existing file. Of several processes that
/// start at once on one fresh path, exactly one link succeeds; the others see `EEXIST`
/// and load the winner's key, which is complete on disk before its link exists.
pub fn load_or_create(path: &Path) -> Result<(ClusterKey, bool), KeyError> {
    match load(path) {
        Ok(key) => Ok((key, false)),
        Err(KeyError::Missing(_)) => create(path),
        Err(error) => Err(error),
    }
}

fn create(path: &Path) -> Result<(ClusterKey, bool), KeyError> {
    let key: [u8; 32] = rand::random();
    let write_error = |source| KeyError::Write { path: path.to_owned(), source };
    let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(write_error)?;
    let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = parent.join(format!(".{file_name}.{}.{:016x}.tmp", std::process::id(), rand::random::<u64>()));
    let written = write_private(&temporary, &key).and_then(|()| fs::hard_link(&temporary, path));
    // The temporary name is ours alone; whatever happened, it must not stay behind.
    let _ = fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            fs::File::open(parent).and_then(|directory| directory.sync_all()).map_err(write_error)?;
            Ok((ClusterKey::new(key), true))
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok((load(path)?, false)),
        Err(error) => Err(write_error(error)),
    }
}

fn write_private(path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(file, "{}", to_hex(key))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    file.sync_all()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_hex_key(text: &str) -> Result<[u8; 32], String> {
    if text.len() != 64 {
        return Err(format!("found {} characters, expected 64", text.len()));
    }
    let mut key = [0u8; 32];
    for (index, byte) in key.iter_mut().enumerate() {
        let pair = text.get(index * 2..index * 2 + 2).ok_or("not ASCII hex")?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| format!("`{pair}` is not hex"))?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_loads_back_and_bad_keys_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cluster.key");
        let (key, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(key.bytes(), again.bytes());
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(&path, "zz").unwrap();
        let message = load(&path).unwrap_err().to_string();
        assert!(message.contains("64 hex digits"), "{message}");
        let missing = load(&dir.path().join("nope")).unwrap_err().to_string();
        assert!(missing.contains("beeline node run"), "{missing}");
    }

    #[test]
    fn keys_open_to_others_get_a_warning_with_the_fix() {
        let path = Path::new("/etc/beeline/cluster.key");
        assert_eq!(loose_permissions_warning(path, 0o100600), None);
        assert_eq!(loose_permissions_warning(path, 0o100400), None);
        for mode in [0o100644, 0o100640, 0o100604, 0o100620, 0o100602, 0o100700 | 0o001] {
            let warning = loose_permissions_warning(path, mode).unwrap();
            assert!(warning.contains(&format!("(mode {:04o})", mode & 0o7777)), "{warning}");
            assert!(warning.ends_with("chmod 600 /etc/beeline/cluster.key") && !warning.contains('\n'), "{warning}");
        }
        let odd = loose_permissions_warning(Path::new("/tmp/my key's"), 0o644).unwrap();
        assert!(odd.ends_with(r"chmod 600 '/tmp/my key'\''s'"), "{odd}");
    }

    /// Threads released by one barrier race to create one fresh key path, many rounds:
    /// every one of them ends with the same key, exactly one reports creating it, and no
    /// temporary file is left behind. (`tests/keyfile_race.rs` does the same with processes.)
    #[test]
    fn concurrent_creators_agree_on_one_key() {
        const CREATORS: usize = 8;
        const ROUNDS: usize = 50;
        let dir = tempfile::tempdir().unwrap();
        for round in 0..ROUNDS {
            let path = dir.path().join(format!("round-{round}/cluster.key"));
            let barrier = std::sync::Barrier::new(CREATORS);
            let results: Vec<([u8; 32], bool)> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..CREATORS)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            let (key, created) = load_or_create(&path).unwrap();
                            (*key.bytes(), created)
                        })
                    })
                    .collect();
                handles.into_iter().map(|handle| handle.join().unwrap()).collect()
            });
            assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1, "round {round}: {results:?}");
            assert!(results.iter().all(|(key, _)| *key == results[0].0), "round {round}: keys differ");
            let leftovers: Vec<_> =
                fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(leftovers, vec![std::ffi::OsString::from("cluster.key")], "round {round}");
        }
    }
}
