//! The data directory's format version: a `FORMAT` file (`beeline-data <version>`) that a
//! node writes into a directory it starts with, and checks on every start, so that a
//! directory written by a newer Beeline with another layout is refused in one line
//! instead of misread.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The layout this Beeline writes and reads: segment logs under `chunks/`, the embedded
/// namespace in `metadata.redb`, `node-id`, `cluster-epoch`.
pub const DATA_FORMAT: u32 = 1;
const FILE_NAME: &str = "FORMAT";
const PREFIX: &str = "beeline-data ";

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "data directory {dir} has format {found} (in {file}), and this beeline reads format {DATA_FORMAT}: run the beeline that wrote it, or a newer one"
    )]
    Newer { dir: PathBuf, file: PathBuf, found: u32 },
    #[error(
        "data directory {dir}: {file} does not say `{PREFIX}<version>`: it was not written by beeline; point --data-dir at a beeline data directory or an empty one"
    )]
    Unreadable { dir: PathBuf, file: PathBuf },
    #[error("data directory {dir}: cannot read or write {file}: {source}")]
    Io { dir: PathBuf, file: PathBuf, source: std::io::Error },
}

/// Checks the directory's format, writing [`DATA_FORMAT`] into one that has none (a new
/// directory, or one from before format versions, whose layout is format 1).
pub fn check_or_write(dir: &Path) -> Result<u32, FormatError> {
    let file = dir.join(FILE_NAME);
    let io = |source| FormatError::Io { dir: dir.to_owned(), file: file.clone(), source };
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let version = text
                .trim()
                .strip_prefix(PREFIX)
                .and_then(|version| version.parse::<u32>().ok())
                .ok_or_else(|| FormatError::Unreadable { dir: dir.to_owned(), file: file.clone() })?;
            if version > DATA_FORMAT {
                return Err(FormatError::Newer { dir: dir.to_owned(), file, found: version });
            }
            // Older formats would be migrated here; format 1 is the first.
            Ok(version)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // Written beside and renamed into place: a crash never leaves half a file.
            let temporary = dir.join(format!("{FILE_NAME}.tmp"));
            let mut out = std::fs::File::create(&temporary).map_err(io)?;
            out.write_all(format!("{PREFIX}{DATA_FORMAT}\n").as_bytes()).map_err(io)?;
            out.sync_all().map_err(io)?;
            std::fs::rename(&temporary, &file).map_err(io)?;
            Ok(DATA_FORMAT)
        }
        Err(error) => Err(io(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_the_format_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_or_write(dir.path()).unwrap(), DATA_FORMAT);
        assert_eq!(std::fs::read_to_string(dir.path().join("FORMAT")).unwrap(), "beeline-data 1\n");
        assert_eq!(check_or_write(dir.path()).unwrap(), DATA_FORMAT);
    }

    #[test]
    fn a_newer_or_foreign_format_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("FORMAT"), "beeline-data 7\n").unwrap();
        let error = check_or_write(dir.path()).unwrap_err().to_string();
        assert!(error.contains("format 7") && error.contains("reads format 1") && !error.contains('\n'), "{error}");
        std::fs::write(dir.path().join("FORMAT"), "something else\n").unwrap();
        let error = check_or_write(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not written by beeline") && !error.contains('\n'), "{error}");
    }
}
