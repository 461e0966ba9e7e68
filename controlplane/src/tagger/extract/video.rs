//! Video (MP4/MOV, Matroska/WebM, AVI), read by `ffprobe` (Debian's `ffmpeg`) run as a
//! process under the deadline with JSON output: `duration-s:`, `size:WIDTHxHEIGHT` and
//! `codec:` of the first video stream, `audio-codec:` of the first audio stream, and from
//! the container's tags `title:` and `date:` (creation, YYYY-MM-DD).

use std::ffi::OsStr;

use serde_json::Value;

use super::process::{self, FFPROBE};
use super::{Found, SOURCE_VIDEO};

/// Bytes of ffprobe's report kept (a report cut there is not JSON, and gives a failure).
const REPORT_BYTES_MAX: usize = 1 << 20;

pub(super) fn extract(bytes: &[u8], found: &mut Found) {
    let file = match process::temp_file(bytes, ".video") {
        Ok(file) => file,
        Err(error) => return found.fail(format!("video: cannot write a temporary file: {error}")),
    };
    let args: [&OsStr; 7] = [
        "-v".as_ref(),
        "error".as_ref(),
        "-print_format".as_ref(),
        "json".as_ref(),
        "-show_format".as_ref(),
        "-show_streams".as_ref(),
        file.path().as_os_str(),
    ];
    let output = match process::run(FFPROBE, &args, found.deadline, REPORT_BYTES_MAX) {
        Ok(output) => output,
        Err(error) => return found.fail(format!("video: {error}")),
    };
    if !output.succeeded() {
        return found.fail(format!("video: {}", output.failure()));
    }
    match serde_json::from_slice::<Value>(&output.stdout) {
        Ok(report) => tag_report(&report, found),
        Err(error) => found.fail(format!("video: ffprobe's report is not JSON: {error}")),
    }
}

/// Tags from ffprobe's `-show_format -show_streams` JSON.
fn tag_report(report: &Value, found: &mut Found) {
    let streams = report["streams"].as_array().map(Vec::as_slice).unwrap_or_default();
    let is = |stream: &&Value, kind: &str| {
        stream["codec_type"] == kind && stream["disposition"]["attached_pic"].as_u64() != Some(1)
    };
    let video = streams.iter().find(|stream| is(stream, "video"));
    if let Some(video) = video {
        if let (Some(width), Some(height)) = (video["width"].as_u64(), video["height"].as_u64())
            && width > 0
            && height > 0
        {
            found.tag(SOURCE_VIDEO, format!("size:{width}x{height}"));
        }
        if let Some(codec) = video["codec_name"].as_str() {
            found.tag_value(SOURCE_VIDEO, "codec", &codec.to_lowercase());
        }
    } else {
        found.fail("video: no video stream".to_string());
    }
    if let Some(codec) =
        streams.iter().find(|stream| is(stream, "audio")).and_then(|audio| audio["codec_name"].as_str())
    {
        found.tag_value(SOURCE_VIDEO, "audio-codec", &codec.to_lowercase());
    }
    let format = &report["format"];
    let duration = format["duration"].as_str().and_then(|duration| duration.parse::<f64>().ok());
    if let Some(duration) = duration.filter(|duration| *duration > 0.0) {
        found.tag(SOURCE_VIDEO, format!("duration-s:{}", super::audio::seconds(duration)));
    }
    if let Some(title) = format["tags"]["title"].as_str() {
        found.tag_value(SOURCE_VIDEO, "title", title);
    }
    if let Some(date) = format["tags"]["creation_time"].as_str().and_then(super::pdf::iso_date) {
        found.tag(SOURCE_VIDEO, format!("date:{date}"));
    }
}
