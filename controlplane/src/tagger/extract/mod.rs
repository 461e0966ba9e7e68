//! Content extractors: a file's name and (a prefix of) its bytes in, tags out. Pure
//! functions of their input plus the limits, so the tagger that reads files and records
//! tags (and its tests) can call them anywhere; hostile or truncated input yields fewer
//! tags and a reason, never a panic.

/// Where a tag came from: the user, or the extractor that made it.
pub const SOURCE_USER: &str = "user";
/// The type-by-content extractor (magic bytes).
pub const SOURCE_MAGIC: &str = "magic";

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
        return "mp4";
    }
    if !bytes.is_empty() && std::str::from_utf8(bytes).is_ok() {
        let extension = name.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase());
        return match extension.as_deref() {
            Some("md" | "markdown") => "markdown",
            Some("html" | "htm") => "html",
            _ => "text",
        };
    }
    "binary"
}

/// Every tag the extractors find for one file.
pub fn extract(name: &str, bytes: &[u8], limits: &Limits) -> Extraction {
    let bytes = &bytes[..bytes.len().min(usize::try_from(limits.bytes_max).unwrap_or(usize::MAX))];
    let mut extraction = Extraction::default();
    extraction.tags.push(Tag { name: format!("type:{}", content_type(name, bytes)), source: SOURCE_MAGIC });
    extraction.tags.sort();
    extraction.tags.dedup_by(|a, b| a.name == b.name);
    extraction
}

#[cfg(test)]
mod tests {
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
