//! PDF, read by poppler-utils run as processes under the deadline: `pdfinfo` gives
//! `title:`, `author:`, `date:` (creation, YYYY-MM-DD) and `pages:`; `pdftotext` gives the
//! text (its first [`TEXT_BYTES_MAX`] bytes), then `lang:` and `keyword:`s as for text.

use std::ffi::OsStr;

use super::keywords::TEXT_BYTES_MAX;
use super::process::{self, PDFINFO, PDFTOTEXT};
use super::{Found, SOURCE_PDF, text};

/// Bytes of `pdfinfo`'s report kept.
const INFO_BYTES_MAX: usize = 64 * 1024;

pub(super) fn extract(bytes: &[u8], found: &mut Found) {
    let file = match process::temp_file(bytes, ".pdf") {
        Ok(file) => file,
        Err(error) => return found.fail(format!("pdf: cannot write a temporary file: {error}")),
    };
    let path = file.path().as_os_str();
    let args = [OsStr::new("-enc"), OsStr::new("UTF-8"), OsStr::new("-isodates"), path];
    match process::run(PDFINFO, &args, found.deadline, INFO_BYTES_MAX) {
        Ok(output) if output.succeeded() => tag_info(&String::from_utf8_lossy(&output.stdout), found),
        Ok(output) => return found.fail(format!("pdf: {}", output.failure())),
        Err(error) => return found.fail(format!("pdf: {error}")),
    }
    let args = [OsStr::new("-enc"), OsStr::new("UTF-8"), OsStr::new("-q"), path, OsStr::new("-")];
    match process::run(PDFTOTEXT, &args, found.deadline, TEXT_BYTES_MAX) {
        Ok(output) => {
            // Text printed before a failure or the deadline is still the file's text.
            text::tag_text(&String::from_utf8_lossy(&output.stdout), false, SOURCE_PDF, found);
            if !output.succeeded() {
                found.fail(format!("pdf: {}", output.failure()));
            }
        }
        Err(error) => found.fail(format!("pdf: {error}")),
    }
}

/// Tags from `pdfinfo`'s `Key: value` lines.
fn tag_info(info: &str, found: &mut Found) {
    for line in info.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key {
            "Title" => found.tag_value(SOURCE_PDF, "title", value),
            "Author" => found.tag_value(SOURCE_PDF, "author", value),
            "Pages" => {
                if let Ok(pages) = value.parse::<u64>() {
                    found.tag(SOURCE_PDF, format!("pages:{pages}"));
                }
            }
            "CreationDate" => {
                if let Some(date) = iso_date(value) {
                    found.tag(SOURCE_PDF, format!("date:{date}"));
                }
            }
            _ => {}
        }
    }
}

/// `YYYY-MM-DD` from the start of an ISO 8601 date-time, if it is one.
pub(super) fn iso_date(value: &str) -> Option<&str> {
    let date = value.get(..10)?;
    let bytes = date.as_bytes();
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    let shaped = digits(0..4) && bytes[4] == b'-' && digits(5..7) && bytes[7] == b'-' && digits(8..10);
    let month = date.get(5..7)?.parse::<u8>().ok()?;
    let day = date.get(8..10)?.parse::<u8>().ok()?;
    (shaped && (1..=12).contains(&month) && (1..=31).contains(&day)).then_some(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_before_they_become_tags() {
        assert_eq!(iso_date("2024-05-01T10:00:00+02"), Some("2024-05-01"));
        assert_eq!(iso_date("2024-13-01"), None);
        assert_eq!(iso_date("2024-05-0"), None);
        assert_eq!(iso_date("2024:05:01"), None);
        assert_eq!(iso_date("20é4-05-01"), None);
    }
}
