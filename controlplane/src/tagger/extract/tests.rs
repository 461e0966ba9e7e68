//! Each extractor on files the tests make themselves (by hand, or with espeak-ng and
//! ffmpeg, which ci/setup.sh installs; a missing tool is a reported skip), and truncated and
//! hostile files of each kind.

use std::io::Cursor;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

const STORAGE: &str = "Beeline is a distributed storage system. Files are split into chunks, and every chunk \
    is replicated on several storage nodes. Replication keeps the chunks safe when a node fails; repair copies \
    the chunks of a failed node to other nodes. The storage nodes speak a small protocol over UDP. Clients \
    store files and read them back; a stored file is tagged by its content, and tags make a graph of files.";

/// Generous time: the tools' fixtures must not fail on a loaded machine (the time limit has
/// tests of its own).
fn limits() -> Limits {
    Limits { bytes_max: 64 << 20, time_ms_max: 120_000 }
}

fn names(extraction: &Extraction) -> Vec<&str> {
    extraction.tags.iter().map(|tag| tag.name.as_str()).collect()
}

fn has(extraction: &Extraction, name: &str, source: &str) -> bool {
    extraction.tags.iter().any(|tag| tag.name == name && tag.source == source)
}

fn assert_tags(extraction: &Extraction, expected: &[(&str, &str)]) {
    for (name, source) in expected {
        assert!(has(extraction, name, source), "no {name} from {source} in {extraction:?}");
    }
}

/// Whether every program is on PATH; reports a skip for `test` when one is not.
fn tools(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|program| !process::installed(program)).collect();
    if !missing.is_empty() {
        beeline_dataplane::testkit::skip(
            test,
            &format!("{} not installed (ci/setup.sh installs them)", missing.join(", ")),
        );
        return false;
    }
    true
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

// ---- text ----

#[test]
fn tagger_text_gets_language_and_keywords() {
    let extraction = extract("notes.txt", STORAGE.as_bytes(), &limits());
    assert_eq!(extraction.failure, None);
    assert_tags(
        &extraction,
        &[
            ("type:text", SOURCE_MAGIC),
            ("lang:en", SOURCE_TEXT),
            ("keyword:storage", SOURCE_TEXT),
            ("keyword:chunks", SOURCE_TEXT),
        ],
    );
    let keywords = names(&extraction).into_iter().filter(|name| name.starts_with("keyword:")).count();
    assert!((3..=keywords::KEYWORDS_MAX).contains(&keywords), "{extraction:?}");
    // Deduplicated by stem: "store"/"stored"/"storage" are not three keywords... at most two stems of them.
    assert!(!(has(&extraction, "keyword:nodes", SOURCE_TEXT) && has(&extraction, "keyword:node", SOURCE_TEXT)));
}

#[test]
fn tagger_markdown_and_html_give_titles_and_only_visible_words() {
    let markdown = format!("# Storage Notes\n\n{STORAGE}\n\n```\ncode\n```\n");
    let extraction = extract("notes.md", markdown.as_bytes(), &limits());
    assert_tags(
        &extraction,
        &[("type:markdown", SOURCE_MAGIC), ("title:Storage Notes", SOURCE_TEXT), ("keyword:storage", SOURCE_TEXT)],
    );

    let html = format!(
        "<!doctype html><html><head><title>Beeline &amp; storage</title><script>giraffe giraffe giraffe giraffe</script>\
         <style>giraffe {{}}</style></head><body><p>{STORAGE}</p><!-- giraffe giraffe --></body></html>"
    );
    let extraction = extract("page", html.as_bytes(), &limits());
    assert_tags(
        &extraction,
        &[("type:html", SOURCE_MAGIC), ("title:Beeline & storage", SOURCE_TEXT), ("lang:en", SOURCE_TEXT)],
    );
    assert!(
        !names(&extraction).iter().any(|name| name.contains("giraffe") || name.contains("script")),
        "{extraction:?}"
    );
}

#[test]
fn tagger_source_code_keywords_skip_the_language_s_words() {
    let source = "pub fn replicate_chunk(chunk: &Chunk, nodes: &[Node]) -> Result<()> {\n    for node in nodes {\n        \
        node.store(chunk)?;\n    }\n    Ok(())\n}\n";
    let extraction = extract("replica.rs", source.as_bytes(), &limits());
    assert!(has(&extraction, "type:source", SOURCE_MAGIC), "{extraction:?}");
    assert!(
        has(&extraction, "keyword:chunk", SOURCE_TEXT) || has(&extraction, "keyword:node", SOURCE_TEXT),
        "{extraction:?}"
    );
    assert!(
        !names(&extraction).iter().any(|name| *name == "keyword:pub" || *name == "keyword:result"),
        "{extraction:?}"
    );
    assert!(!names(&extraction).iter().any(|name| name.starts_with("lang:")));
}

#[test]
fn tagger_a_file_over_bytes_max_is_tagged_from_its_start() {
    let text = format!("{STORAGE}\n\n{}", "Giraffes eat leaves. Giraffe herds roam the savanna. ".repeat(50));
    let limits = Limits { bytes_max: STORAGE.len() as u64, ..limits() };
    let extraction = extract("long.txt", text.as_bytes(), &limits);
    assert!(has(&extraction, "keyword:storage", SOURCE_TEXT), "{extraction:?}");
    assert!(!names(&extraction).iter().any(|name| name.contains("giraffe")), "{extraction:?}");
}

// ---- PDF ----

/// A one-page PDF written by hand: Helvetica text lines, and an Info dictionary.
pub(super) fn make_pdf(title: &str, author: &str, lines: &[&str]) -> Vec<u8> {
    let escape = |text: &str| text.replace('\\', "\\\\").replace('(', "\\(").replace(')', "\\)");
    let mut content = String::from("BT /F1 11 Tf 50 750 Td 14 TL\n");
    for line in lines {
        content.push_str(&format!("({}) Tj T*\n", escape(line)));
    }
    content.push_str("ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
        format!("<< /Title ({}) /Author ({}) /CreationDate (D:20240501120000Z) >>", escape(title), escape(author)),
    ];
    let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", index + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1)
            .as_bytes(),
    );
    pdf
}

fn storage_lines() -> Vec<&'static str> {
    vec![
        "Beeline is a distributed storage system. Files are split into chunks,",
        "and every chunk is replicated on several storage nodes. Replication keeps",
        "the chunks safe when a node fails; repair copies the chunks of a failed",
        "node to other nodes. The storage nodes speak a small protocol over UDP.",
        "Clients store files and read them back; a stored file is tagged by its",
        "content, and tags make a graph of files.",
    ]
}

#[test]
fn tagger_pdf_gets_title_author_and_keywords_of_its_text() {
    if !tools("tagger_pdf_gets_title_author_and_keywords_of_its_text", &["pdftotext", "pdfinfo"]) {
        return;
    }
    let pdf = make_pdf("Storage (draft)", "Ada Lovelace", &storage_lines());
    let extraction = extract("paper.bin", &pdf, &limits());
    assert_eq!(extraction.failure, None, "{extraction:?}");
    assert_tags(
        &extraction,
        &[
            ("type:pdf", SOURCE_MAGIC),
            ("title:Storage (draft)", SOURCE_PDF),
            ("author:Ada Lovelace", SOURCE_PDF),
            ("pages:1", SOURCE_PDF),
            ("date:2024-05-01", SOURCE_PDF),
            ("lang:en", SOURCE_PDF),
            ("keyword:storage", SOURCE_PDF),
            ("keyword:chunks", SOURCE_PDF),
        ],
    );
}

// ---- images ----

/// EXIF (a TIFF structure) naming a camera, a date and a location.
pub(super) fn make_exif() -> Vec<u8> {
    use exif::{Field, In, Rational, Tag as ExifTag, Value};
    let ascii =
        |tag, text: &str| Field { tag, ifd_num: In::PRIMARY, value: Value::Ascii(vec![text.as_bytes().to_vec()]) };
    let degrees = |tag, d: u32, m: u32| Field {
        tag,
        ifd_num: In::PRIMARY,
        value: Value::Rational(vec![
            Rational { num: d, denom: 1 },
            Rational { num: m, denom: 1 },
            Rational { num: 0, denom: 1 },
        ]),
    };
    let fields = [
        ascii(ExifTag::Make, "Canon"),
        ascii(ExifTag::Model, "Canon EOS 5D Mark IV"),
        ascii(ExifTag::DateTimeOriginal, "2024:05:01 12:30:00"),
        ascii(ExifTag::GPSLatitudeRef, "N"),
        degrees(ExifTag::GPSLatitude, 46, 3),
        ascii(ExifTag::GPSLongitudeRef, "E"),
        degrees(ExifTag::GPSLongitude, 14, 30),
    ];
    let mut writer = exif::experimental::Writer::new();
    for field in &fields {
        writer.push_field(field);
    }
    let mut tiff = Cursor::new(Vec::new());
    writer.write(&mut tiff, false).unwrap();
    tiff.into_inner()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A valid RGB PNG (a gradient, stored uncompressed in its zlib stream), with `exif` in an
/// eXIf chunk when given.
pub(super) fn make_png(width: u32, height: u32, exif: Option<&[u8]>) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &header);
    if let Some(exif) = exif {
        chunk(b"eXIf", exif);
    }
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            raw.extend_from_slice(&[(x * 4) as u8, (y * 8) as u8, 128]);
        }
    }
    assert!(raw.len() < 65_536, "one stored deflate block");
    let (mut a, mut b) = (1u32, 0u32);
    for byte in &raw {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    zlib.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    chunk(b"IDAT", &zlib);
    chunk(b"IEND", &[]);
    png
}

/// A JPEG's header: SOI, EXIF in APP1, a baseline frame header (SOF0) giving its size, EOI.
pub(super) fn make_jpeg(width: u16, height: u16, exif: &[u8]) -> Vec<u8> {
    let mut jpeg = vec![0xff, 0xd8, 0xff, 0xe1];
    jpeg.extend_from_slice(&((exif.len() + 8) as u16).to_be_bytes());
    jpeg.extend_from_slice(b"Exif\0\0");
    jpeg.extend_from_slice(exif);
    jpeg.extend_from_slice(&[0xff, 0xc0, 0, 11, 8]);
    jpeg.extend_from_slice(&height.to_be_bytes());
    jpeg.extend_from_slice(&width.to_be_bytes());
    jpeg.extend_from_slice(&[1, 1, 0x11, 0, 0xff, 0xd9]);
    jpeg
}

#[test]
fn tagger_png_and_jpeg_give_size_camera_date_and_location() {
    let exif = make_exif();
    for (name, bytes, kind) in
        [("photo.png", make_png(64, 32, Some(&exif)), "type:png"), ("photo.jpg", make_jpeg(64, 32, &exif), "type:jpeg")]
    {
        let extraction = extract(name, &bytes, &limits());
        assert_eq!(extraction.failure, None, "{name}: {extraction:?}");
        assert_tags(
            &extraction,
            &[
                (kind, SOURCE_MAGIC),
                ("size:64x32", SOURCE_IMAGE),
                ("camera:Canon EOS 5D Mark IV", SOURCE_IMAGE),
                ("date:2024-05-01", SOURCE_IMAGE),
                ("has-location", SOURCE_IMAGE),
            ],
        );
    }
    // A real encoder's JPEG (JFIF, tables, scan) with the EXIF spliced in after its SOI.
    if tools("tagger_png_and_jpeg_give_size_camera_date_and_location", &["ffmpeg"]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frame.jpg");
        run(
            "ffmpeg",
            &[
                "-nostdin",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=96x48",
                "-frames:v",
                "1",
                path.to_str().unwrap(),
            ],
        );
        let encoded = std::fs::read(&path).unwrap();
        let mut jpeg = make_jpeg(1, 1, &exif);
        jpeg.truncate(jpeg.len() - 15); // keep SOI and APP1, drop the hand-made SOF0 and EOI
        jpeg.extend_from_slice(&encoded[2..]);
        let extraction = extract("frame.jpg", &jpeg, &limits());
        assert_eq!(extraction.failure, None, "{extraction:?}");
        assert_tags(
            &extraction,
            &[
                ("size:96x48", SOURCE_IMAGE),
                ("camera:Canon EOS 5D Mark IV", SOURCE_IMAGE),
                ("has-location", SOURCE_IMAGE),
            ],
        );
    }
    let plain = extract("plain.png", &make_png(3, 2, None), &limits());
    assert_eq!(names(&plain), ["size:3x2", "type:png"], "{plain:?}");
    assert_eq!(plain.failure, None);
}

// ---- audio ----

#[test]
fn tagger_speech_spoken_by_espeak_is_transcribed_into_keywords() {
    let test = "tagger_speech_spoken_by_espeak_is_transcribed_into_keywords";
    if !tools(test, &["espeak-ng", "ffmpeg", "pocketsphinx_continuous"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speech.wav");
    let sentence = "the computer network connects every server in the building";
    // The Klatt voice: PocketSphinx's model hears it far better than espeak-ng's default.
    run("espeak-ng", &["-v", "en-us+klatt", "-s", "150", "-w", wav.to_str().unwrap(), sentence]);
    let bytes = std::fs::read(&wav).unwrap();
    let extraction = extract("speech.wav", &bytes, &limits());
    assert_eq!(extraction.failure, None, "{extraction:?}");
    assert!(has(&extraction, "type:wav", SOURCE_MAGIC), "{extraction:?}");
    assert!(extraction.tags.iter().any(|tag| tag.name.starts_with("duration-s:") && tag.source == SOURCE_AUDIO));
    let heard: Vec<&str> = extraction
        .tags
        .iter()
        .filter(|tag| tag.source == SOURCE_SPEECH)
        .filter_map(|tag| tag.name.strip_prefix("keyword:"))
        .collect();
    eprintln!("speech keywords: {heard:?}");
    let spoken = ["computer", "network", "connects", "server", "building"];
    assert!(heard.iter().any(|word| spoken.contains(word)), "heard {heard:?} of {spoken:?}");
}

#[test]
fn tagger_speech_recognition_stops_at_the_time_limit() {
    let test = "tagger_speech_recognition_stops_at_the_time_limit";
    if !tools(test, &["espeak-ng", "ffmpeg", "pocketsphinx_continuous"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("long.wav");
    run("espeak-ng", &["-v", "en-us+klatt", "-w", wav.to_str().unwrap(), &STORAGE.repeat(3)]);
    let bytes = std::fs::read(&wav).unwrap();
    let started = Instant::now();
    let extraction = extract("long.wav", &bytes, &Limits { bytes_max: 64 << 20, time_ms_max: 1500 });
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let failure = extraction.failure.unwrap_or_default();
    assert!(failure.contains("time limit") || failure.contains("no time left"), "{failure}");
}

#[test]
fn tagger_music_gets_duration_and_its_tags_and_no_transcript() {
    if !tools("tagger_music_gets_duration_and_its_tags_and_no_transcript", &["ffmpeg"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flac = dir.path().join("tone.flac");
    run(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=3",
            "-metadata",
            "title=Test Tone",
            "-metadata",
            "artist=Beeline Band",
            "-metadata",
            "album=Fixtures",
            "-metadata",
            "genre=Ambient",
            "-metadata",
            "date=2024",
            flac.to_str().unwrap(),
        ],
    );
    let extraction = extract("tone.flac", &std::fs::read(&flac).unwrap(), &limits());
    assert_eq!(extraction.failure, None, "{extraction:?}");
    assert_tags(
        &extraction,
        &[
            ("type:flac", SOURCE_MAGIC),
            ("duration-s:3", SOURCE_AUDIO),
            ("title:Test Tone", SOURCE_AUDIO),
            ("artist:Beeline Band", SOURCE_AUDIO),
            ("album:Fixtures", SOURCE_AUDIO),
            ("genre:ambient", SOURCE_AUDIO),
            ("year:2024", SOURCE_AUDIO),
        ],
    );
    assert!(!extraction.tags.iter().any(|tag| tag.source == SOURCE_SPEECH), "{extraction:?}");
}

// ---- video ----

fn make_video(dir: &Path) -> Vec<u8> {
    let mp4 = dir.join("clip.mp4");
    run(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=2:size=320x240:rate=10",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=2",
            "-c:v",
            "mpeg4",
            "-c:a",
            "aac",
            "-shortest",
            "-metadata",
            "title=Test Pattern",
            mp4.to_str().unwrap(),
        ],
    );
    std::fs::read(&mp4).unwrap()
}

#[test]
fn tagger_video_gets_duration_size_and_codecs() {
    if !tools("tagger_video_gets_duration_size_and_codecs", &["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let extraction = extract("clip", &make_video(dir.path()), &limits());
    assert_eq!(extraction.failure, None, "{extraction:?}");
    assert_tags(
        &extraction,
        &[
            ("type:mp4", SOURCE_MAGIC),
            ("size:320x240", SOURCE_VIDEO),
            ("codec:mpeg4", SOURCE_VIDEO),
            ("audio-codec:aac", SOURCE_VIDEO),
            ("duration-s:2", SOURCE_VIDEO),
            ("title:Test Pattern", SOURCE_VIDEO),
        ],
    );
}

// ---- hostile and truncated files ----

/// Deterministic noise.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Checks one hostile input: it gets its type tag, no extractor panicked, it took bounded time.
fn survive(name: &str, bytes: &[u8]) -> Extraction {
    let limits = Limits { bytes_max: 64 << 20, time_ms_max: 10_000 };
    let started = Instant::now();
    let extraction = extract(name, bytes, &limits);
    let kind = content_type(name, &bytes[..bytes.len().min(limits.bytes_max as usize)]);
    assert!(has(&extraction, &format!("type:{kind}"), SOURCE_MAGIC), "{name}: {extraction:?}");
    let failure = extraction.failure.clone().unwrap_or_default();
    assert!(!failure.contains("panicked"), "{name} ({} bytes): {failure}", bytes.len());
    assert!(started.elapsed() < Duration::from_secs(12), "{name}: {:?}", started.elapsed());
    extraction
}

/// Hostile variants of a valid file: cut at several points, its bytes flipped, and its
/// signature followed by noise.
fn survive_variants(name: &str, valid: &[u8], magic: &[u8]) {
    for cut in [valid.len() / 2, valid.len() / 5, 64, 16, magic.len()] {
        survive(name, &valid[..cut.min(valid.len())]);
    }
    for seed in 1..4u64 {
        let mut flipped = valid.to_vec();
        for (index, byte) in noise(seed, valid.len()).iter().enumerate() {
            if index % 7 == seed as usize && index > magic.len() {
                flipped[index] ^= byte;
            }
        }
        survive(name, &flipped);
        let mut garbage = magic.to_vec();
        garbage.extend_from_slice(&noise(seed, 4096));
        survive(name, &garbage);
    }
}

#[test]
fn tagger_hostile_text_and_images_never_panic() {
    survive_variants("notes.txt", STORAGE.as_bytes(), b"");
    survive_variants("page.html", b"<html><title>x</title><script>a</script><p>text &amp; more</p></html>", b"<html>");
    survive("deep.html", "<".repeat(100_000).as_bytes());
    survive("entities.html", "&#x1;&#0;&#99999999;&".repeat(10_000).as_bytes());
    survive("one-word.txt", "x".repeat(1_000_000).as_bytes());
    let exif = make_exif();
    survive_variants("photo.png", &make_png(64, 32, Some(&exif)), b"\x89PNG\r\n\x1a\n");
    survive_variants("photo.jpg", &make_jpeg(64, 32, &exif), b"\xff\xd8\xff");
    // A PNG whose header claims 0x0 and an eXIf chunk longer than the file.
    let mut png = make_png(0, 0, None);
    png.truncate(33);
    png.extend_from_slice(&[0xff, 0xff, 0xff, 0xf0]);
    png.extend_from_slice(b"eXIfMM\0*");
    survive("zero.png", &png);
    // A JPEG whose APP1 length is shorter than its own header, and EXIF whose IFD points at itself.
    survive("short.jpg", b"\xff\xd8\xff\xe1\x00\x01Exif\0\0");
    survive("loop.jpg", b"\xff\xd8\xff\xe1\x00\x16Exif\0\0II*\0\x08\0\0\0\x01\0\x0f\x01");
    survive("tiff", b"II*\0\x08\0\0\0\xff\xff");
}

#[test]
fn tagger_hostile_pdfs_never_panic() {
    let valid = make_pdf("T", "A", &storage_lines());
    survive_variants("paper.pdf", &valid, b"%PDF-");
    // A stream claiming a huge length, and an xref pointing outside the file.
    survive(
        "huge.pdf",
        b"%PDF-1.4\n1 0 obj << /Length 99999999999 >> stream\nabc\nendstream endobj\nstartxref\n999999\n%%EOF",
    );
}

#[test]
fn tagger_hostile_audio_and_video_never_panic() {
    let mut wav =
        b"RIFF\xff\xff\xff\xffWAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0data\xff\xff\xff\xff"
            .to_vec();
    wav.extend_from_slice(&noise(9, 32_000));
    survive_variants("speech.wav", &wav, b"RIFF");
    survive("zero-rate.wav", b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0data\0\0\0\0");
    survive("tag.mp3", b"ID3\x04\0\0\x7f\x7f\x7f\x7fTIT2\x7f\x7f\x7f\x7f\0\0\x03abc");
    survive("frames.mp3", &[0xff, 0xfb, 0x90, 0x64].repeat(1000));
    survive("x.flac", b"fLaC\0\0\0\x22");
    survive("x.ogg", b"OggS\0\x02\0\0\0\0\0\0\0\0");
    let mut mp4 = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
    mp4.extend_from_slice(b"\xff\xff\xff\xffmoov\0\0\0\x08trak");
    survive("box.mp4", &mp4);
    survive("x.mkv", b"\x1a\x45\xdf\xa3\x01\0\0\0\0\0\0\x1f");
    if process::installed("ffmpeg") {
        let dir = tempfile::tempdir().unwrap();
        let video = make_video(dir.path());
        survive_variants("clip.mp4", &video, b"\0\0\0\x20ftyp");
        let flac = dir.path().join("tone.flac");
        run("ffmpeg", &["-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", flac.to_str().unwrap()]);
        survive_variants("tone.flac", &std::fs::read(&flac).unwrap(), b"fLaC");
    } else {
        beeline_dataplane::testkit::skip(
            "tagger_hostile_audio_and_video_never_panic",
            "ffmpeg not installed: no real video to cut",
        );
    }
}

// ---- throughput ----

/// Tagging throughput per extractor on one core: files/s and MB/s over fixtures made here.
/// Prints a table and each fixture's tags; run as docs/benchmarks.md ("Content extractors") says.
#[test]
#[ignore = "a benchmark: prints figures, asserts nothing about speed"]
fn tagger_bench_throughput_per_extractor() {
    let dir = tempfile::tempdir().unwrap();
    let mut fixtures: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let text = STORAGE.repeat(64 * 1024 / STORAGE.len());
    fixtures.push(("text", "notes.txt".into(), text.clone().into_bytes()));
    fixtures.push((
        "text (html)",
        "page.html".into(),
        format!("<html><title>Notes</title><body><p>{text}</p></body></html>").into_bytes(),
    ));
    let lines: Vec<&str> = storage_lines().into_iter().cycle().take(50).collect();
    fixtures.push(("pdf", "paper.pdf".into(), make_pdf("Storage", "Ada", &lines)));
    let exif = make_exif();
    fixtures.push(("image (png)", "photo.png".into(), make_png(128, 128, Some(&exif))));
    fixtures.push(("image (jpeg)", "photo.jpg".into(), make_jpeg(4000, 3000, &exif)));
    if process::installed("ffmpeg") {
        let flac = dir.path().join("tone.flac");
        run(
            "ffmpeg",
            &[
                "-nostdin",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=duration=30",
                "-metadata",
                "album=A",
                flac.to_str().unwrap(),
            ],
        );
        fixtures.push(("audio (flac, 30 s)", "tone.flac".into(), std::fs::read(&flac).unwrap()));
        fixtures.push(("video (mp4, 2 s)", "clip.mp4".into(), make_video(dir.path())));
    }
    if process::installed("espeak-ng") {
        let wav = dir.path().join("speech.wav");
        run(
            "espeak-ng",
            &[
                "-v",
                "en-us+klatt",
                "-s",
                "150",
                "-w",
                wav.to_str().unwrap(),
                "the computer network connects every server in the building",
            ],
        );
        fixtures.push(("audio + speech (wav, 4 s)", "speech.wav".into(), std::fs::read(&wav).unwrap()));
    }
    println!("\n| extractor | file bytes | runs | files/s | MB/s |");
    println!("|---|---:|---:|---:|---:|");
    let mut report = Vec::new();
    for (label, name, bytes) in &fixtures {
        let started = Instant::now();
        let mut runs = 0u32;
        let mut extraction = Extraction::default();
        while runs < 3 || (started.elapsed() < Duration::from_secs(3) && runs < 100_000) {
            extraction = extract(name, bytes, &limits());
            runs += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        let files = f64::from(runs) / seconds;
        println!("| {label} | {} | {runs} | {files:.1} | {:.2} |", bytes.len(), files * bytes.len() as f64 / 1e6);
        report.push(format!("{label}: {:?} failure={:?}", names(&extraction), extraction.failure));
    }
    for line in report {
        println!("{line}");
    }
}
