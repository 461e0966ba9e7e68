//! The file-tag graph in the mount: the `user.disgrafs.tags` extended attribute and the
//! read-only `.tags/` tree of directories (a tag's files as symlinks to them).

use std::collections::BTreeSet;

use super::state::State;
use super::store::{StoreError, StoreResult};
use crate::metadata::{FileTag, validate_tag};

/// The extended attribute holding a file's tags.
pub const TAGS_XATTR: &str = "user.disgrafs.tags";
/// The top-level directory of the tag tree.
pub const TAGS_DIR: &str = ".tags";
/// Tags `.tags/` lists at most.
pub const TAGS_LISTED_MAX: usize = 100_000;
/// Tags one `.tags/<a>+<b>+.../` directory may combine.
pub const TAGS_COMBINED_MAX: usize = 8;

/// A name as a directory entry: `%` and `/` (and `+`, which combines tags in `.tags/`)
/// percent-encoded, so that any stored name or tag is one entry.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '+' => out.push_str("%2B"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`encode`]; other `%` sequences stay as they are.
pub fn decode(entry: &str) -> String {
    entry.replace("%2F", "/").replace("%2f", "/").replace("%2B", "+").replace("%2b", "+").replace("%25", "%")
}

/// The attribute's value: user tags as `tag`, automatic ones as `tag(extractor)`, in tag
/// order, comma-separated.
pub fn format_tags(tags: &[FileTag]) -> String {
    tags.iter()
        .map(|tag| if tag.is_user() { tag.tag.clone() } else { format!("{}({})", tag.tag, tag.source) })
        .collect::<Vec<_>>()
        .join(",")
}

/// The user tags a value sets: comma-separated, blanks around them ignored; a
/// `tag(extractor)` item (as read back) names an automatic tag and is left as it is.
pub fn parse_tags(value: &[u8]) -> StoreResult<BTreeSet<String>> {
    let text = std::str::from_utf8(value)
        .map_err(|_| StoreError::new(libc::EINVAL, "the tags are not UTF-8: give a comma-separated list"))?;
    let mut tags = BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        if item.ends_with(')') && item.contains('(') {
            continue;
        }
        validate_tag(item).map_err(|message| StoreError::new(libc::EINVAL, message))?;
        tags.insert(item.to_owned());
    }
    Ok(tags)
}

impl State {
    pub fn tags_value(&mut self, name: &str) -> StoreResult<String> {
        if !self.files()?.contains_key(name) && self.open_files.contains_key(name) {
            return Ok(String::new());
        }
        Ok(format_tags(&self.store.tags_of(name)?))
    }

    /// Makes the user tags of `name` exactly `wanted`; automatic tags stay.
    pub fn set_user_tags(&mut self, name: &str, wanted: &BTreeSet<String>) -> StoreResult<()> {
        self.store_pending(name)?;
        let current = self.store.tags_of(name)?;
        let stale: Vec<String> =
            current.iter().filter(|tag| tag.is_user() && !wanted.contains(&tag.tag)).map(|t| t.tag.clone()).collect();
        if !stale.is_empty() {
            self.store.meta().remove_tags(name, &stale)?;
        }
        let new: Vec<FileTag> = wanted
            .iter()
            .filter(|tag| !current.iter().any(|have| have.is_user() && &have.tag == *tag))
            .map(FileTag::user)
            .collect();
        if !new.is_empty() {
            self.store.meta().add_tags(name, &new)?;
        }
        Ok(())
    }

    /// Every tag, for `.tags/` (bounded).
    pub fn all_tags(&mut self) -> StoreResult<Vec<String>> {
        let mut tags: Vec<String> = Vec::new();
        while tags.len() < TAGS_LISTED_MAX {
            let page = self.store.meta().tags_by_prefix("", tags.last().map(String::as_str), 1000)?;
            if page.is_empty() {
                break;
            }
            tags.extend(page.into_iter().map(|count| count.tag));
        }
        Ok(tags)
    }

    fn tag_exists(&mut self, tag: &str) -> StoreResult<bool> {
        Ok(!self.store.meta().files_tagged(tag, None, 1)?.is_empty())
    }

    /// The tags a `.tags/` entry names: one tag, or tags joined by `+`.
    pub fn tag_dir(&mut self, entry: &str) -> StoreResult<Vec<String>> {
        let whole = decode(entry);
        if validate_tag(&whole).is_ok() && self.tag_exists(&whole)? {
            return Ok(vec![whole]);
        }
        let parts: Vec<String> = entry.split('+').map(decode).collect();
        if parts.len() < 2 || parts.len() > TAGS_COMBINED_MAX {
            return Err(StoreError::new(libc::ENOENT, format!("no tag {whole}")));
        }
        for part in &parts {
            if validate_tag(part).is_err() || !self.tag_exists(part)? {
                return Err(StoreError::new(libc::ENOENT, format!("no tag {part}")));
            }
        }
        Ok(parts)
    }

    /// The files carrying every tag of `tags`.
    pub fn files_with(&mut self, tags: &[String]) -> StoreResult<BTreeSet<String>> {
        let mut files: Option<BTreeSet<String>> = None;
        for tag in tags {
            let tagged = crate::graph::files_tagged(self.store.meta(), tag)?;
            files = Some(match files {
                None => tagged,
                Some(so_far) => so_far.intersection(&tagged).cloned().collect(),
            });
        }
        Ok(files.unwrap_or_default())
    }

    /// Whether file `name` carries every tag of `tags`.
    pub fn carries(&mut self, name: &str, tags: &[String]) -> StoreResult<bool> {
        let have = self.store.tags_of(name)?;
        Ok(tags.iter().all(|tag| have.iter().any(|t| &t.tag == tag)))
    }
}

/// Where a tag directory's entry for `name` points: back up out of `.tags/<tags>/`.
pub fn link_target(name: &str) -> String {
    format!("../../{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_round_trip() {
        for name in ["a", "dir/sub/file.txt", "100%", "a+b", "%2F literal"] {
            let entry = encode(name);
            assert!(!entry.contains('/'), "{entry}");
            assert_eq!(decode(&entry), name);
        }
    }

    #[test]
    fn the_attribute_shows_sources_and_sets_user_tags_only() {
        let tags = vec![FileTag::user("draft"), FileTag::new("type:pdf", "magic")];
        let value = format_tags(&tags);
        assert_eq!(value, "draft,type:pdf(magic)");
        let parsed = parse_tags(value.as_bytes()).unwrap();
        assert_eq!(parsed.into_iter().collect::<Vec<_>>(), vec!["draft".to_owned()]);
        assert_eq!(parse_tags(b" a , b,,").unwrap().len(), 2);
        assert_eq!(parse_tags(b"has space").unwrap_err().errno, libc::EINVAL);
    }
}
