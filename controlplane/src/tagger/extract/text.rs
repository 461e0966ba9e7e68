//! Text: plain, Markdown, source code and HTML (tags, scripts, styles and comments
//! stripped). Tags: `lang:` (whatlang; ISO 639-1 where the language has such a code, else
//! 639-3), `title:` (HTML `<title>`, a Markdown document's first `# ` heading) and up to
//! [`keywords::KEYWORDS_MAX`] `keyword:`s by YAKE ([`keywords`]).

use whatlang::Lang;

use super::keywords::{self, KEYWORDS_MAX, TEXT_BYTES_MAX};
use super::{Found, SOURCE_TEXT};

/// Bytes of text language detection reads.
const LANG_BYTES_MAX: usize = 16 * 1024;
/// Bytes of HTML read: the text left after stripping is at most this long.
const HTML_BYTES_MAX: usize = 4 * TEXT_BYTES_MAX;

pub(super) fn extract(kind: &str, bytes: &[u8], found: &mut Found) {
    let text = String::from_utf8_lossy(bytes);
    let (text, title) = match kind {
        "html" => {
            let (text, title) = strip_html(keywords::cut_at_char(&text, HTML_BYTES_MAX));
            (text, title)
        }
        "markdown" => {
            let title = markdown_title(&text).map(str::to_string);
            (text.into_owned(), title)
        }
        _ => (text.into_owned(), None),
    };
    if let Some(title) = title {
        found.tag_value(SOURCE_TEXT, "title", &title);
    }
    tag_text(&text, kind == "source", SOURCE_TEXT, found);
}

/// Tags a text's language and keywords as made by `source` (text, or a PDF's text).
pub(super) fn tag_text(text: &str, source_code: bool, source: &'static str, found: &mut Found) {
    let lang = if source_code { None } else { detect(text) };
    if let Some(lang) = lang {
        found.tag(source, format!("lang:{}", lang_code(lang)));
    }
    for keyword in keywords::keywords(text, lang, source_code, KEYWORDS_MAX) {
        found.tag(source, format!("keyword:{keyword}"));
    }
}

/// The language of a text, when whatlang is confident of it.
pub(super) fn detect(text: &str) -> Option<Lang> {
    let info = whatlang::detect(keywords::cut_at_char(text, LANG_BYTES_MAX))?;
    info.is_reliable().then_some(info.lang())
}

/// ISO 639-1 for the languages that have a two-letter code, ISO 639-3 for the others.
pub(super) fn lang_code(lang: Lang) -> &'static str {
    match lang {
        Lang::Epo => "eo",
        Lang::Eng => "en",
        Lang::Rus => "ru",
        Lang::Cmn => "zh",
        Lang::Spa => "es",
        Lang::Por => "pt",
        Lang::Ita => "it",
        Lang::Ben => "bn",
        Lang::Fra => "fr",
        Lang::Deu => "de",
        Lang::Ukr => "uk",
        Lang::Kat => "ka",
        Lang::Ara => "ar",
        Lang::Hin => "hi",
        Lang::Jpn => "ja",
        Lang::Heb => "he",
        Lang::Yid => "yi",
        Lang::Pol => "pl",
        Lang::Amh => "am",
        Lang::Jav => "jv",
        Lang::Kor => "ko",
        Lang::Nob => "nb",
        Lang::Dan => "da",
        Lang::Swe => "sv",
        Lang::Fin => "fi",
        Lang::Tur => "tr",
        Lang::Nld => "nl",
        Lang::Hun => "hu",
        Lang::Ces => "cs",
        Lang::Ell => "el",
        Lang::Bul => "bg",
        Lang::Bel => "be",
        Lang::Mar => "mr",
        Lang::Kan => "kn",
        Lang::Ron => "ro",
        Lang::Slv => "sl",
        Lang::Hrv => "hr",
        Lang::Srp => "sr",
        Lang::Mkd => "mk",
        Lang::Lit => "lt",
        Lang::Lav => "lv",
        Lang::Est => "et",
        Lang::Tam => "ta",
        Lang::Vie => "vi",
        Lang::Urd => "ur",
        Lang::Tha => "th",
        Lang::Guj => "gu",
        Lang::Uzb => "uz",
        Lang::Pan => "pa",
        Lang::Aze => "az",
        Lang::Ind => "id",
        Lang::Tel => "te",
        Lang::Pes => "fa",
        Lang::Mal => "ml",
        Lang::Ori => "or",
        Lang::Mya => "my",
        Lang::Nep => "ne",
        Lang::Sin => "si",
        Lang::Khm => "km",
        Lang::Tuk => "tk",
        Lang::Aka => "ak",
        Lang::Zul => "zu",
        Lang::Sna => "sn",
        Lang::Afr => "af",
        Lang::Lat => "la",
        Lang::Slk => "sk",
        Lang::Cat => "ca",
        Lang::Tgl => "tl",
        Lang::Hye => "hy",
    }
}

/// A Markdown document's title: its first level-one ATX heading in the first 50 lines.
fn markdown_title(text: &str) -> Option<&str> {
    text.lines()
        .take(50)
        .find_map(|line| line.strip_prefix("# "))
        .map(|title| title.trim().trim_end_matches('#').trim())
}

/// Elements whose tags do not break a sentence.
const INLINE: &[&str] = &[
    "a", "abbr", "b", "bdi", "bdo", "cite", "code", "em", "font", "i", "kbd", "mark", "q", "s", "samp", "small",
    "span", "strong", "sub", "sup", "time", "u", "var",
];

/// The text of an HTML document (elements' text with entities decoded; scripts, styles and
/// comments dropped) and its `<title>`. One pass, no allocation beyond the output.
fn strip_html(html: &str) -> (String, Option<String>) {
    let lower = html.to_ascii_lowercase(); // same byte offsets as `html`
    let mut text = String::with_capacity(html.len() / 2);
    let mut title = None;
    let mut position = 0;
    while position < html.len() {
        let Some(open) = lower[position..].find('<').map(|offset| position + offset) else {
            decode_entities(&html[position..], &mut text);
            break;
        };
        decode_entities(&html[position..open], &mut text);
        let rest = &lower[open..];
        if rest.starts_with("<!--") {
            position = rest.find("-->").map_or(html.len(), |end| open + end + 3);
            continue;
        }
        let name_end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '!'))
            .map_or(rest.len(), |end| end + 1);
        let name = &rest[1..name_end];
        let tag_end = rest.find('>').map_or(html.len(), |end| open + end + 1);
        position = tag_end;
        match name {
            "script" | "style" | "title" | "textarea" => {
                let close = format!("</{name}");
                let content_end = lower[position..].find(&close).map_or(html.len(), |end| position + end);
                if name == "title" && title.is_none() {
                    let mut decoded = String::new();
                    decode_entities(&html[position..content_end], &mut decoded);
                    title = Some(decoded);
                }
                position = lower[content_end..].find('>').map_or(html.len(), |end| content_end + end + 1);
                text.push('\n');
            }
            _ if INLINE.contains(&name.trim_start_matches('/')) => text.push(' '),
            _ => text.push('\n'),
        }
    }
    (text, title)
}

/// Appends `text` with its character references decoded (the common named ones and
/// numeric ones; an unknown one becomes a space).
fn decode_entities(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semicolon) = rest.bytes().take(12).position(|byte| byte == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semicolon];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|decimal| decimal.parse().ok()))
                .and_then(char::from_u32),
        };
        out.push(decoded.unwrap_or(' '));
        rest = &rest[semicolon + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_loses_its_markup_scripts_and_comments() {
        let html = "<!DOCTYPE html><html><head><title>Storage &amp; Graphs</title><style>.zebra{}</style>\
            <script>var quokka = '<p>';</script></head><body><!-- wombat --><p>Chunks are <b>replicated</b>\
            &lt;safely&gt;&#33;</p><p>Next</body>";
        let (text, title) = strip_html(html);
        assert_eq!(title.as_deref(), Some("Storage & Graphs"));
        for hidden in ["zebra", "quokka", "wombat", "<p>"] {
            assert!(!text.contains(hidden), "{hidden} in {text:?}");
        }
        assert!(text.contains("Chunks are  replicated <safely>!"), "{text:?}");
        assert!(text.contains("Next"));
    }

    #[test]
    fn broken_html_and_entities_do_not_panic() {
        for html in
            ["<", "<script>", "<title>x", "<!--", "&", "&#xffffffff;", "&#1114112;", "a<b", "<é>", "&é;", "<p é"]
        {
            let _ = strip_html(html);
        }
        let mut out = String::new();
        decode_entities("a &amp b &#x41; &bogus; &", &mut out);
        assert_eq!(out, "a &amp b A   &");
    }

    #[test]
    fn a_markdown_title_is_its_first_heading() {
        assert_eq!(markdown_title("intro\n# The Title #\n## sub"), Some("The Title"));
        assert_eq!(markdown_title("## sub only"), None);
    }
}
