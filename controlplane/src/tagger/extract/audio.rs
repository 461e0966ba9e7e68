//! Audio: `duration-s:` and the file's tags (ID3v1/v2, Vorbis comments, RIFF INFO, MP4
//! atoms, APE), read by lofty: `title:`, `artist:`, `album:`, `genre:` (lowercase) and
//! `year:`. A recording with neither album nor genre may be speech, and is handed on to
//! [`super::speech`].

use std::io::Cursor;

use lofty::config::{ParseOptions, ParsingMode};
use lofty::file::{AudioFile, TaggedFileExt};
use lofty::probe::Probe;
use lofty::tag::Accessor;

use super::{Found, SOURCE_AUDIO};

/// Whether a recording is worth transcribing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Speech {
    /// Its tags say music (an album or a genre).
    No,
    Maybe,
}

/// The recording's tags, then its transcript's keywords when it may be speech.
pub(super) fn extract(bytes: &[u8], found: &mut Found) {
    if read(bytes, found) == Speech::Maybe {
        super::speech::extract(bytes, found);
    }
}

/// Duration and tags.
fn read(bytes: &[u8], found: &mut Found) -> Speech {
    let options = ParseOptions::new().read_cover_art(false).parsing_mode(ParsingMode::BestAttempt);
    let probed = Probe::new(Cursor::new(bytes)).options(options).guess_file_type();
    let file = match probed.map_err(lofty::error::LoftyError::from).and_then(Probe::read) {
        Ok(file) => file,
        Err(error) => {
            found.fail(format!("audio: unreadable: {error}"));
            return Speech::Maybe;
        }
    };
    let duration = file.properties().duration();
    if !duration.is_zero() {
        found.tag(SOURCE_AUDIO, format!("duration-s:{}", seconds(duration.as_secs_f64())));
    }
    let Some(tag) = file.primary_tag().or_else(|| file.first_tag()) else { return Speech::Maybe };
    if let Some(title) = tag.title() {
        found.tag_value(SOURCE_AUDIO, "title", &title);
    }
    if let Some(artist) = tag.artist() {
        found.tag_value(SOURCE_AUDIO, "artist", &artist);
    }
    let album = tag.album();
    if let Some(album) = &album {
        found.tag_value(SOURCE_AUDIO, "album", album);
    }
    let genre = tag.genre();
    if let Some(genre) = &genre {
        found.tag_value(SOURCE_AUDIO, "genre", &genre.to_lowercase());
    }
    if let Some(year) = tag.year().filter(|year| (1000..=9999).contains(year)) {
        found.tag(SOURCE_AUDIO, format!("year:{year}"));
    }
    if album.is_some_and(|album| !album.trim().is_empty()) || genre.is_some_and(|genre| !genre.trim().is_empty()) {
        Speech::No
    } else {
        Speech::Maybe
    }
}

/// Whole seconds, rounded to the nearest (a value too large or not a number gives 0).
pub(super) fn seconds(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 && value < 1e15 { value.round() as u64 } else { 0 }
}
