//! Which stored version each inode's last read-only open read, so that an open of the
//! same version keeps the kernel's page cache (`FOPEN_KEEP_CACHE`, see `State::keep_cache`).

use std::collections::HashMap;

/// Inodes whose last read version is remembered; past it the table starts over (opens
/// then read the node again, once).
const READ_VERSIONS_MAX: usize = 4096;

/// Per inode, the stored version (file id) a read-only open last read: the kernel's page
/// cache of that inode holds nothing else, so an open of the same version keeps it
/// (bounded by [`READ_VERSIONS_MAX`]).
#[derive(Debug, Default)]
pub(super) struct ReadVersions {
    by_ino: HashMap<u64, u64>,
}

impl ReadVersions {
    /// A read-only open of `ino` reading `version` (`None`: a handle with no stored version
    /// behind it); true when the inode's last read-only open read the same version.
    pub(super) fn opened(&mut self, ino: u64, version: Option<u64>) -> bool {
        let Some(version) = version else {
            self.by_ino.remove(&ino);
            return false;
        };
        if self.by_ino.len() >= READ_VERSIONS_MAX && !self.by_ino.contains_key(&ino) {
            self.by_ino.clear();
        }
        let kept = self.by_ino.insert(ino, version) == Some(version);
        assert!(self.by_ino.len() <= READ_VERSIONS_MAX, "the read-version table is over its bound");
        kept
    }

    pub(super) fn forget(&mut self, ino: u64) {
        self.by_ino.remove(&ino);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel keeps an inode's cache only for the version its last read-only open read,
    /// never across a write open or resize (`forget`), a handle without a stored version, or
    /// another version; the table stays bounded, starting over when full.
    #[test]
    fn an_open_keeps_the_cache_only_of_the_version_read_last() {
        let mut versions = ReadVersions::default();
        assert!(!versions.opened(7, Some(100)), "a first open reads the node");
        assert!(versions.opened(7, Some(100)), "the same version again keeps the cache");
        assert!(!versions.opened(7, Some(101)), "another version does not");
        assert!(versions.opened(7, Some(101)));
        versions.forget(7); // opened for writing, or resized
        assert!(!versions.opened(7, Some(101)), "not after a write open, even of the same version");
        assert!(!versions.opened(7, None), "a handle with no stored version");
        assert!(!versions.opened(7, Some(101)), "nor the open after it");
        assert!(versions.opened(7, Some(101)));
        assert!(!versions.opened(8, Some(101)), "versions are per inode");

        for ino in 100..100 + READ_VERSIONS_MAX as u64 {
            versions.opened(ino, Some(ino));
            assert!(versions.by_ino.len() <= READ_VERSIONS_MAX);
        }
        // 4096 more inodes filled the table past its bound and it started over: 7's version
        // is read from the node again, once.
        assert!(!versions.opened(7, Some(101)), "the table started over when full");
        assert!(versions.opened(7, Some(101)));
        assert!(versions.by_ino.len() < 10, "{} entries after starting over", versions.by_ino.len());
    }
}
