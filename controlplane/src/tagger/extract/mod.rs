//! Content extractors: a file's name and (a prefix of) its bytes in, tags out. Pure
//! functions of their input plus the limits, so the tagger that reads files and records
//! tags (and its tests) can call them anywhere; hostile or truncated input yields fewer
//! tags and a reason, never a panic.

mod audio;
mod image;
mod keywords;
mod pdf;
mod process;
mod speech;
mod text;
mod video;

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Where a tag came from: the user, or the extractor that made it.
pub const SOURCE_USER: &str = "user";
/// The type-by-content extractor (magic bytes).
pub const SOURCE_MAGIC: &str = "magic";
/// Plain text, Markdown, source code and HTML: language, title, keywords.
pub const SOURCE_TEXT: &str = "text";
/// PDF: title, author, date, pages, and its text's language and keywords (poppler-utils).
pub const SOURCE_PDF: &str = "pdf";
/// Images: dimensions, and from EXIF the camera, the date and whether it has a location.
pub const SOURCE_IMAGE: &str = "image";
/// Audio: duration and the ID3 / Vorbis / RIFF / MP4 tags.
pub const SOURCE_AUDIO: &str = "audio";
/// Keywords of the transcript of a speech recording (pocketsphinx).
pub const SOURCE_SPEECH: &str = "speech";
/// Video: duration, resolution, codecs (ffprobe).
pub const SOURCE_VIDEO: &str = "video";

/// Bounds on the work one file may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a file the tagger reads; a longer file is tagged from its first bytes.
    pub bytes_max: u64,
    /// Wall-clock time one file's extraction may take (external tools are killed after it).
    pub time_ms_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { bytes_max: 64 << 20, time_ms_max: 30_000 }
    }
}

/// One tag and the extractor that produced it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag {
    pub name: String,
    pub source: &'static str,
}

/// What extraction found for one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extraction {
    /// Sorted and deduplicated by name.
    pub tags: Vec<Tag>,
    /// Why some extractor gave up (unreadable, truncated, over a limit), if one did.
    pub failure: Option<String>,
}

/// The file's type from its first bytes, falling back to the name's extension only when
/// the content has no signature we know.
pub fn content_type(name: &str, bytes: &[u8]) -> &'static str {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"%PDF-", "pdf"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff", "jpeg"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"ID3", "mp3"),
        (b"fLaC", "flac"),
        (b"OggS", "ogg"),
        (b"\x1a\x45\xdf\xa3", "matroska"),
        (b"PK\x03\x04", "zip"),
        (b"\x1f\x8b", "gzip"),
        (b"\x7fELF", "elf"),
        (b"II*\0", "tiff"),
        (b"MM\0*", "tiff"),
    ];
    if let Some((_, kind)) = SIGNATURES.iter().find(|(magic, _)| bytes.starts_with(magic)) {
        return kind;
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" {
        match &bytes[8..12] {
            b"WAVE" => return "wav",
            b"WEBP" => return "webp",
            b"AVI " => return "avi",
            _ => {}
        }
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        return match &bytes[8..12] {
            b"M4A " | b"M4B " | b"M4P " => "m4a",
            b"heic" | b"heix" | b"mif1" | b"msf1" => "heif",
            b"avif" | b"avis" => "avif",
            _ => "mp4",
        };
    }
    // An MPEG audio frame without an ID3 tag: 11 sync bits, then a layer other than the
    // reserved 00 (which is how AAC's ADTS frames, also 0xFFF..., differ).
    if bytes.len() >= 4 && bytes[0] == 0xff && bytes[1] & 0xe0 == 0xe0 && bytes[1] & 0x06 != 0 {
        return "mp3";
    }
    if !bytes.is_empty() && is_utf8_but_for_a_cut_tail(bytes) {
        let extension = name.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase());
        return match extension.as_deref() {
            Some("md" | "markdown") => "markdown",
            Some("html" | "htm" | "xhtml") => "html",
            Some(
                "rs" | "c" | "h" | "cc" | "cpp" | "hpp" | "py" | "go" | "js" | "ts" | "java" | "kt" | "rb" | "sh"
                | "cs" | "swift" | "scala" | "php" | "lua" | "hs" | "ml" | "sql",
            ) => "source",
            _ if looks_like_html(bytes) => "html",
            _ => "text",
        };
    }
    "binary"
}

/// Valid UTF-8 except, perhaps, for a multi-byte character cut off at the end (as
/// `bytes_max` may cut one).
fn is_utf8_but_for_a_cut_tail(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none() && error.valid_up_to() > 0,
    }
}

/// Text whose first non-blank bytes open an HTML document.
fn looks_like_html(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(256)];
    let start = head.iter().position(|byte| !byte.is_ascii_whitespace()).unwrap_or(head.len());
    let head = head[start..].to_ascii_lowercase();
    head.starts_with(b"<!doctype html") || head.starts_with(b"<html")
}

/// What the extractors of one file collect, and the deadline they share.
pub(crate) struct Found {
    tags: Vec<Tag>,
    failures: Vec<String>,
    deadline: Instant,
}

impl Found {
    fn new(deadline: Instant) -> Self {
        Self { tags: Vec::new(), failures: Vec::new(), deadline }
    }

    /// Adds the tag `name` made by `source`, as it is.
    fn tag(&mut self, source: &'static str, name: String) {
        self.tags.push(Tag { name, source });
    }

    /// Adds `key:value` when the value is worth a tag (see [`tag_value`]).
    fn tag_value(&mut self, source: &'static str, key: &str, value: &str) {
        if let Some(value) = tag_value(value) {
            self.tag(source, format!("{key}:{value}"));
        }
    }

    /// Records why an extractor gave up (in part or in whole).
    fn fail(&mut self, reason: String) {
        self.failures.push(reason);
    }
}

/// Longest value (in characters) a free-text tag such as `title:` keeps.
pub const TAG_VALUE_CHARS_MAX: usize = 80;

/// A free-text value (title, author, camera...) made fit for a tag: control characters
/// and runs of white space become one space, the ends are trimmed, and it is cut to
/// [`TAG_VALUE_CHARS_MAX`] characters; `None` when nothing is left.
fn tag_value(value: &str) -> Option<String> {
    let mut clean = String::with_capacity(value.len().min(TAG_VALUE_CHARS_MAX * 4));
    let mut chars = 0;
    for word in value.split(|c: char| c.is_whitespace() || c.is_control()).filter(|word| !word.is_empty()) {
        let space = (!clean.is_empty()).then_some(' ');
        for c in space.into_iter().chain(word.chars()) {
            if chars == TAG_VALUE_CHARS_MAX {
                return Some(clean.trim_end().to_string());
            }
            clean.push(c);
            chars += 1;
        }
    }
    (!clean.is_empty()).then_some(clean)
}

/// One extractor: the file's type, its bytes, and where its tags and failures go.
type Extractor = fn(&str, &[u8], &mut Found);

/// The extractor that reads files of content type `kind`, and its tag source.
fn extractor_for(kind: &str) -> Option<(&'static str, Extractor)> {
    match kind {
        "text" | "markdown" | "html" | "source" => Some((SOURCE_TEXT, text::extract)),
        "pdf" => Some((SOURCE_PDF, |_, bytes, found| pdf::extract(bytes, found))),
        "png" | "jpeg" | "gif" | "webp" | "tiff" | "heif" | "avif" => Some((SOURCE_IMAGE, image::extract)),
        "mp3" | "flac" | "ogg" | "wav" | "m4a" => Some((SOURCE_AUDIO, |_, bytes, found| audio::extract(bytes, found))),
        "mp4" | "matroska" | "avi" => Some((SOURCE_VIDEO, |_, bytes, found| video::extract(bytes, found))),
        _ => None,
    }
}

/// Bytes of a file's start that decide its content type well enough to know whether an
/// extractor will read more of it.
pub const SNIFF_BYTES: usize = 64 << 10;

/// Whether anything beyond its type tag can come from a file of `name` that starts with
/// `head` (at least [`SNIFF_BYTES`] of it, or all of a shorter file): when not, the tagger
/// reads no more of it.
pub fn wants_more_than(name: &str, head: &[u8]) -> bool {
    extractor_for(content_type(name, head)).is_some()
}

/// Every tag the extractors find for one file: its type by content, and what the
/// extractor for that type reads. A file over `bytes_max` is tagged from its first
/// `bytes_max` bytes; external tools are killed at `time_ms_max`. An extractor that gives up
/// leaves the tags it found and its reason in `failure`, which begins with the extractor's
/// name (`pdf: pdftotext stopped at the time limit`); reasons of several are joined by `; `.
pub fn extract(name: &str, bytes: &[u8], limits: &Limits) -> Extraction {
    let deadline = Instant::now() + Duration::from_millis(limits.time_ms_max);
    let bytes_max = usize::try_from(limits.bytes_max).unwrap_or(usize::MAX);
    let cut = bytes.len() > bytes_max;
    let bytes = &bytes[..bytes.len().min(bytes_max)];
    let kind = content_type(name, bytes);
    let mut found = Found::new(deadline);
    found.tag(SOURCE_MAGIC, format!("type:{kind}"));
    // Our own code does not panic on any input (the tests feed it garbage); this guards
    // against a parser crate that does, so one hostile file costs its tags, not the tagger.
    if let Some((source, run)) = extractor_for(kind)
        && panic::catch_unwind(AssertUnwindSafe(|| run(kind, bytes, &mut found))).is_err()
    {
        found.fail(format!("{source}: panicked"));
    }
    let mut failure = (!found.failures.is_empty()).then(|| found.failures.join("; "));
    if cut && let Some(failure) = failure.as_mut() {
        failure.push_str(&format!(" (read only the first {bytes_max} bytes)"));
    }
    let mut tags = found.tags;
    tags.sort();
    tags.dedup_by(|a, b| a.name == b.name);
    Extraction { tags, failure }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod type_tests {
    use super::*;

    #[test]
    fn type_comes_from_content_before_the_extension() {
        assert_eq!(content_type("report.txt", b"%PDF-1.7\n..."), "pdf");
        assert_eq!(content_type("notes.md", b"# Title\n"), "markdown");
        assert_eq!(content_type("a.wav", b"RIFF\0\0\0\0WAVEfmt "), "wav");
        assert_eq!(content_type("a.pdf", b"plain words"), "text");
        assert_eq!(content_type("x", &[0xff, 0xfe, 0x00]), "binary");
        assert_eq!(content_type("x", b""), "binary");
    }

    #[test]
    fn extraction_tags_the_type_once() {
        let extraction = extract("p.png", b"\x89PNG\r\n\x1a\n", &Limits::default());
        assert_eq!(extraction.tags, vec![Tag { name: "type:png".into(), source: SOURCE_MAGIC }]);
    }
}
