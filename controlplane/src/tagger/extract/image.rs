//! Images: `size:WIDTHxHEIGHT` from the header (imagesize), and from EXIF (kamadak-exif:
//! JPEG, PNG's eXIf, TIFF, WebP, HEIF) `camera:` (make and model), `date:` (when it was
//! taken, YYYY-MM-DD) and `has-location` when it carries GPS coordinates.

use std::io::Cursor;

use exif::{In, Tag as ExifTag, Value};

use super::{Found, SOURCE_IMAGE};

pub(super) fn extract(kind: &str, bytes: &[u8], found: &mut Found) {
    match imagesize::blob_size(bytes) {
        Ok(size) if size.width > 0 && size.height > 0 => {
            found.tag(SOURCE_IMAGE, format!("size:{}x{}", size.width, size.height));
        }
        Ok(_) => found.fail("image: the header gives no dimensions".to_string()),
        Err(error) => found.fail(format!("image: no dimensions: {error}")),
    }
    if matches!(kind, "gif") {
        return; // no EXIF in GIF
    }
    let exif = match exif::Reader::new().read_from_container(&mut Cursor::new(bytes)) {
        Ok(exif) => exif,
        Err(exif::Error::NotFound(_)) => return,
        Err(error) => return found.fail(format!("image: unreadable EXIF: {error}")),
    };
    let ascii = |tag: ExifTag| -> Option<String> {
        let field = exif.get_field(tag, In::PRIMARY)?;
        match &field.value {
            Value::Ascii(values) => values.first().map(|value| String::from_utf8_lossy(value).trim().to_string()),
            _ => None,
        }
    };
    let make = ascii(ExifTag::Make).unwrap_or_default();
    let model = ascii(ExifTag::Model).unwrap_or_default();
    // Most models already begin with the make ("Canon EOS 5D"); some don't ("NIKON" + "D750").
    let camera = if model.to_lowercase().starts_with(&make.to_lowercase()) { model } else { format!("{make} {model}") };
    found.tag_value(SOURCE_IMAGE, "camera", &camera);
    let date = ascii(ExifTag::DateTimeOriginal).or_else(|| ascii(ExifTag::DateTime)).and_then(|date| exif_date(&date));
    if let Some(date) = date {
        found.tag(SOURCE_IMAGE, format!("date:{date}"));
    }
    let has = |tag| exif.get_field(tag, In::PRIMARY).is_some();
    if has(ExifTag::GPSLatitude) && has(ExifTag::GPSLongitude) {
        found.tag(SOURCE_IMAGE, "has-location".to_string());
    }
}

/// `YYYY-MM-DD` from EXIF's `YYYY:MM:DD HH:MM:SS`; `None` for a blank or odd one.
fn exif_date(value: &str) -> Option<String> {
    let date = value.get(..10)?.replace(':', "-");
    super::pdf::iso_date(&date).filter(|date| !date.starts_with("0000")).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exif_dates_become_iso_dates() {
        assert_eq!(exif_date("2024:05:01 12:30:00").as_deref(), Some("2024-05-01"));
        assert_eq!(exif_date("0000:00:00 00:00:00"), None);
        assert_eq!(exif_date("    :  :     :  :  "), None);
        assert_eq!(exif_date("2024"), None);
    }
}
