//! Speech-to-text of a recording with CMU PocketSphinx (Debian's `pocketsphinx` and its
//! US English model `pocketsphinx-en-us`, offline, as DisGraFS used Sphinx), then
//! `keyword:`s of the transcript by YAKE. The first [`SPEECH_SECONDS_MAX`] seconds are
//! converted by `ffmpeg` to what the model wants (16 kHz mono 16-bit PCM) and recognised
//! with the model's general language model; both tools are killed at the deadline, and a
//! recognition stopped there keeps the utterances it finished.

use std::ffi::OsStr;

use super::keywords::{self, KEYWORDS_MAX};
use super::process::{self, FFMPEG, POCKETSPHINX};
use super::{Found, SOURCE_SPEECH};

/// Seconds of a recording transcribed (PocketSphinx runs near real time on one core).
pub const SPEECH_SECONDS_MAX: u32 = 120;
/// Where `pocketsphinx-en-us` installs the model.
const MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";
/// Bytes of transcript kept.
const TRANSCRIPT_BYTES_MAX: usize = 256 * 1024;

pub(super) fn extract(bytes: &[u8], found: &mut Found) {
    match transcribe(bytes, found) {
        Ok(transcript) => {
            for keyword in keywords::keywords(&transcript, Some(whatlang::Lang::Eng), false, KEYWORDS_MAX) {
                found.tag(SOURCE_SPEECH, format!("keyword:{keyword}"));
            }
        }
        Err(reason) => found.fail(format!("speech: {reason}")),
    }
}

/// The transcript of the recording's first [`SPEECH_SECONDS_MAX`] seconds, one utterance a
/// line. A recognition stopped at the deadline returns what it finished and records why.
pub(super) fn transcribe(bytes: &[u8], found: &mut Found) -> Result<String, String> {
    let model = std::path::Path::new(MODEL_DIR);
    if !process::installed(POCKETSPHINX.program) || !model.join("en-us").is_dir() {
        return Err(format!("{} not installed: apt-get install {}", POCKETSPHINX.program, POCKETSPHINX.packages));
    }
    let input =
        process::temp_file(bytes, ".audio").map_err(|error| format!("cannot write a temporary file: {error}"))?;
    let wav = tempfile::Builder::new()
        .prefix("beeline-speech-")
        .suffix(".wav")
        .tempfile()
        .map_err(|error| format!("cannot make a temporary file: {error}"))?;
    let seconds = SPEECH_SECONDS_MAX.to_string();
    let convert: [&OsStr; 17] = [
        "-nostdin".as_ref(),
        "-v".as_ref(),
        "error".as_ref(),
        "-y".as_ref(),
        "-i".as_ref(),
        input.path().as_os_str(),
        "-t".as_ref(),
        seconds.as_ref(),
        "-vn".as_ref(),
        "-ac".as_ref(),
        "1".as_ref(),
        "-ar".as_ref(),
        "16000".as_ref(),
        "-c:a".as_ref(),
        "pcm_s16le".as_ref(),
        "-f".as_ref(),
        "wav".as_ref(),
    ];
    let mut args = convert.to_vec();
    args.push(wav.path().as_os_str());
    let output = process::run(FFMPEG, &args, found.deadline, 0).map_err(|error| error.to_string())?;
    if !output.succeeded() {
        return Err(output.failure());
    }
    let hmm = model.join("en-us");
    let lm = model.join("en-us.lm.bin");
    let dict = model.join("cmudict-en-us.dict");
    let args: [&OsStr; 12] = [
        "-infile".as_ref(),
        wav.path().as_os_str(),
        "-hmm".as_ref(),
        hmm.as_os_str(),
        "-lm".as_ref(),
        lm.as_os_str(),
        "-dict".as_ref(),
        dict.as_os_str(),
        "-logfn".as_ref(),
        "/dev/null".as_ref(),
        "-samprate".as_ref(),
        "16000".as_ref(),
    ];
    let output =
        process::run(POCKETSPHINX, &args, found.deadline, TRANSCRIPT_BYTES_MAX).map_err(|error| error.to_string())?;
    let transcript = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.is_none() {
        found.fail(format!("speech: {} (kept the utterances it finished)", output.failure()));
    } else if !output.succeeded() {
        return Err(output.failure());
    }
    Ok(transcript)
}
