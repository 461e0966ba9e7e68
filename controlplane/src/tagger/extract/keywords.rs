//! Keywords by YAKE (Campos, Mangaravite, Pasquali, Jorge, Nunes and Jatowt, "YAKE! Keyword
//! extraction from single documents using multiple local features", Information Sciences
//! 509, 2020): an unsupervised, single-document method that scores each term from its
//! casing, position, frequency, the variety of its neighbours and the share of sentences it
//! appears in. Here candidates are single words, and a term is a word's stem
//! (`rust-stemmers`' Snowball stemmers), so "storage" and "stored"... count as one term and
//! give one keyword: the term's most frequent lowercase spelling.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};
use whatlang::Lang;

/// Bytes of text analysed; the rest of a longer text is ignored.
pub const TEXT_BYTES_MAX: usize = 1 << 20;
/// Keywords a text yields at most.
pub const KEYWORDS_MAX: usize = 8;
/// Shortest and longest candidate word, in characters.
const WORD_CHARS_MIN: usize = 3;
const WORD_CHARS_MAX: usize = 30;

/// Words never keywords: English function words, and the debris of URLs and markup.
const STOPWORDS: &str = concat!(
    "a about above after again against all also am an and any are aren as at be because been before ",
    "being below between both but by can cannot could couldn did didn do does doesn doing don down ",
    "during each either else etc even ever every few for from further get gets got had hadn has hasn ",
    "have haven having he her here hers herself him himself his how however i if in into is isn it its ",
    "itself just least less let like made make makes many may me might more most much must mustn my ",
    "myself neither never no nor not now of off often on once one only or other others ought our ours ",
    "ourselves out over own per quite rather same see seen shall shan she should shouldn since so some ",
    "still such than that the their theirs them themselves then there these they this those though ",
    "through thus to too two under until up upon us use used uses using very via was wasn we well were ",
    "weren what when where whether which while who whom whose why will with within without won would ",
    "wouldn yes yet you your yours yourself yourselves http https www com org net html htm nbsp amp quot ",
);

/// Words of programming languages, never keywords of source code.
const SOURCE_STOPWORDS: &str = concat!(
    "fn pub mut impl struct enum trait match return self super crate mod def class import from func ",
    "function var const static void int char bool true false null nil none new public private protected ",
    "package elif while for break continue string str usize u8 u32 u64 i32 i64 f64 some ok err result ",
    "option vec include define ifdef endif typedef unsigned async await try catch throw throws extends ",
    "implements interface lambda yield where type dyn ref loop unsafe use echo then done esac fi ",
);

static STOPWORD_SET: LazyLock<HashSet<&'static str>> = LazyLock::new(|| STOPWORDS.split_whitespace().collect());
static SOURCE_STOPWORD_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| SOURCE_STOPWORDS.split_whitespace().collect());

/// The Snowball stemmer for a language, if it has one.
fn stemmer_for(lang: Lang) -> Option<Algorithm> {
    Some(match lang {
        Lang::Eng => Algorithm::English,
        Lang::Ara => Algorithm::Arabic,
        Lang::Dan => Algorithm::Danish,
        Lang::Nld => Algorithm::Dutch,
        Lang::Fin => Algorithm::Finnish,
        Lang::Fra => Algorithm::French,
        Lang::Deu => Algorithm::German,
        Lang::Ell => Algorithm::Greek,
        Lang::Hun => Algorithm::Hungarian,
        Lang::Ita => Algorithm::Italian,
        Lang::Nob => Algorithm::Norwegian,
        Lang::Por => Algorithm::Portuguese,
        Lang::Ron => Algorithm::Romanian,
        Lang::Rus => Algorithm::Russian,
        Lang::Spa => Algorithm::Spanish,
        Lang::Swe => Algorithm::Swedish,
        Lang::Tam => Algorithm::Tamil,
        Lang::Tur => Algorithm::Turkish,
        _ => return None,
    })
}

/// One word as it appeared.
struct Token {
    /// Index into the term table (stopwords have terms too, never counted as candidates).
    term: usize,
}

/// What YAKE counts of one term (one stem).
#[derive(Default)]
struct Term {
    frequency: u32,
    /// Occurrences starting with a capital letter, not at a sentence's start.
    capitalised: u32,
    /// Occurrences written in capitals (acronyms).
    acronyms: u32,
    /// The sentence of each occurrence, in order.
    sentences: Vec<u32>,
    /// Neighbours on the left and right within a chunk: occurrences, and distinct ones.
    left_total: u32,
    right_total: u32,
    left: HashMap<usize, u32>,
    right: HashMap<usize, u32>,
    spellings: HashMap<String, u32>,
}

/// The top `count` keywords of `text` (its first [`TEXT_BYTES_MAX`] bytes), best first,
/// lowercase, one per stem. `lang` chooses the stemmer (none: the English one);
/// `source_code` also drops the words of programming languages.
pub fn keywords(text: &str, lang: Option<Lang>, source_code: bool, count: usize) -> Vec<String> {
    let text = cut_at_char(text, TEXT_BYTES_MAX);
    let stemmer = Stemmer::create(lang.and_then(stemmer_for).unwrap_or(Algorithm::English));
    let is_stopword = |word: &str| STOPWORD_SET.contains(word) || (source_code && SOURCE_STOPWORD_SET.contains(word));

    let mut terms: Vec<Term> = Vec::new();
    let mut term_of_stem: HashMap<String, usize> = HashMap::new();
    // Every lowercase word's term, and whether it is a candidate (stopwords are neighbours too).
    let mut word_of: HashMap<String, (usize, bool)> = HashMap::new();
    let mut lower = String::new();
    let mut sentence = 0u32;
    let mut sentence_words = 0u32;
    let mut chunk: Vec<Token> = Vec::new();
    let mut previous_newline = false;

    let flush_chunk = |chunk: &mut Vec<Token>, terms: &mut Vec<Term>| {
        for pair in chunk.windows(2) {
            let (left, right) = (pair[0].term, pair[1].term);
            if let Some(term) = terms.get_mut(right) {
                term.left_total += 1;
                *term.left.entry(left).or_default() += 1;
            }
            if let Some(term) = terms.get_mut(left) {
                term.right_total += 1;
                *term.right.entry(right).or_default() += 1;
            }
        }
        chunk.clear();
    };

    let mut words = Words { text, position: 0 };
    while let Some(piece) = words.next() {
        match piece {
            Piece::Word(word) => {
                previous_newline = false;
                lower.clear();
                lower.extend(word.chars().flat_map(char::to_lowercase));
                let (index, candidate) = match word_of.get(lower.as_str()) {
                    Some(known) => *known,
                    None => {
                        let chars = lower.chars().count();
                        let candidate = (WORD_CHARS_MIN..=WORD_CHARS_MAX).contains(&chars)
                            && lower.chars().next().is_some_and(char::is_alphabetic)
                            && !is_stopword(&lower);
                        // A stopword is a neighbour but never a keyword: a term of its own, never counted.
                        let next = terms.len();
                        let index = if candidate {
                            *term_of_stem.entry(stemmer.stem(&lower).into_owned()).or_insert(next)
                        } else {
                            next
                        };
                        if index == next {
                            terms.push(Term::default());
                        }
                        word_of.insert(lower.clone(), (index, candidate));
                        (index, candidate)
                    }
                };
                if candidate && let Some(entry) = terms.get_mut(index) {
                    entry.frequency += 1;
                    let mut letters = word.chars().filter(|c| c.is_alphabetic());
                    let first_upper = word.chars().next().is_some_and(char::is_uppercase);
                    if word.chars().nth(1).is_some() && letters.all(char::is_uppercase) {
                        entry.acronyms += 1;
                    } else if first_upper && sentence_words > 0 {
                        entry.capitalised += 1;
                    }
                    entry.sentences.push(sentence);
                    match entry.spellings.get_mut(lower.as_str()) {
                        Some(count) => *count += 1,
                        None => {
                            entry.spellings.insert(lower.clone(), 1);
                        }
                    }
                }
                chunk.push(Token { term: index });
                sentence_words += 1;
            }
            Piece::SentenceEnd => {
                flush_chunk(&mut chunk, &mut terms);
                if sentence_words > 0 {
                    sentence += 1;
                    sentence_words = 0;
                }
            }
            Piece::Newline => {
                flush_chunk(&mut chunk, &mut terms);
                if previous_newline && sentence_words > 0 {
                    sentence += 1;
                    sentence_words = 0;
                }
                previous_newline = true;
            }
            Piece::ChunkEnd => {
                previous_newline = false;
                flush_chunk(&mut chunk, &mut terms);
            }
            Piece::Space => {}
        }
    }
    flush_chunk(&mut chunk, &mut terms);
    let sentences = f64::from(sentence + u32::from(sentence_words > 0)).max(1.0);

    let candidates: Vec<&Term> = terms.iter().filter(|term| term.frequency > 0).collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let frequencies: Vec<f64> = candidates.iter().map(|term| f64::from(term.frequency)).collect();
    let mean = frequencies.iter().sum::<f64>() / frequencies.len() as f64;
    let deviation =
        (frequencies.iter().map(|frequency| (frequency - mean).powi(2)).sum::<f64>() / frequencies.len() as f64).sqrt();
    let frequency_max = frequencies.iter().copied().fold(1.0, f64::max);

    let mut scored: Vec<(f64, String)> = candidates
        .iter()
        .map(|term| {
            let frequency = f64::from(term.frequency);
            let casing = f64::from(term.capitalised.max(term.acronyms)) / (1.0 + frequency.ln());
            let mut positions = term.sentences.clone();
            positions.sort_unstable();
            let median = match positions.len() {
                0 => 0.0,
                n if n % 2 == 1 => f64::from(positions[n / 2]),
                n => (f64::from(positions[n / 2 - 1]) + f64::from(positions[n / 2])) / 2.0,
            };
            let position = (3.0 + median).ln().ln();
            let normalised = frequency / (mean + deviation).max(f64::MIN_POSITIVE);
            let spread =
                |distinct: usize, total: u32| if total == 0 { 0.0 } else { distinct as f64 / f64::from(total) };
            let relatedness = 1.0
                + (spread(term.left.len(), term.left_total) + spread(term.right.len(), term.right_total)) * frequency
                    / frequency_max;
            positions.dedup();
            let different = positions.len() as f64 / sentences;
            let weight = (relatedness * position)
                / (casing + normalised / relatedness + different / relatedness).max(f64::MIN_POSITIVE);
            // A one-word keyword's score: H / ((1 + H) * TF); lower is better.
            let score = weight / ((1.0 + weight) * frequency);
            let spelling = term
                .spellings
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.len().cmp(&a.0.len())).then_with(|| b.0.cmp(a.0)))
                .map(|(spelling, _)| spelling.clone())
                .unwrap_or_default();
            (score, spelling)
        })
        .filter(|(score, spelling)| score.is_finite() && !spelling.is_empty())
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(count).map(|(_, spelling)| spelling).collect()
}

/// `text` cut to at most `bytes_max` bytes, at a character boundary.
pub fn cut_at_char(text: &str, bytes_max: usize) -> &str {
    if text.len() <= bytes_max {
        return text;
    }
    let mut end = bytes_max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

enum Piece<'a> {
    Word(&'a str),
    /// `.`, `!` or `?`.
    SentenceEnd,
    Newline,
    /// Other punctuation: words on either side are not neighbours.
    ChunkEnd,
    Space,
}

/// Splits text into words (runs of letters and digits) and what separates them.
struct Words<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Words<'a> {
    fn next(&mut self) -> Option<Piece<'a>> {
        let rest = self.text.get(self.position..)?;
        let first = rest.chars().next()?;
        if first.is_alphanumeric() {
            let end = rest.find(|c: char| !c.is_alphanumeric()).unwrap_or(rest.len());
            self.position += end;
            return Some(Piece::Word(&rest[..end]));
        }
        self.position += first.len_utf8();
        Some(match first {
            '.' | '!' | '?' => Piece::SentenceEnd,
            '\n' => Piece::Newline,
            c if c.is_whitespace() => Piece::Space,
            '\'' | '’' | '-' => Piece::Space,
            _ => Piece::ChunkEnd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORAGE: &str = "Beeline is a distributed storage system. Files are split into chunks, and every chunk \
        is replicated on several storage nodes. Replication keeps the chunks safe when a node fails; repair copies \
        the chunks of a failed node to other nodes. The storage nodes speak a small protocol over UDP. Clients \
        store files and read them back; a stored file is tagged by its content, and tags make a graph of files.";

    #[test]
    fn a_text_about_storage_yields_its_topic_words_once_each() {
        let keywords = keywords(STORAGE, Some(Lang::Eng), false, KEYWORDS_MAX);
        assert_eq!(keywords.len(), KEYWORDS_MAX, "{keywords:?}");
        for expected in ["storage", "chunks", "nodes"] {
            assert!(keywords.iter().any(|keyword| keyword == expected), "{expected} not in {keywords:?}");
        }
        // One keyword per stem: "node"/"nodes", "chunk"/"chunks", "file"/"files".
        let stemmer = Stemmer::create(Algorithm::English);
        let mut stems: Vec<_> = keywords.iter().map(|keyword| stemmer.stem(keyword).into_owned()).collect();
        stems.sort();
        stems.dedup();
        assert_eq!(stems.len(), keywords.len(), "{keywords:?}");
        assert!(keywords.iter().all(|keyword| !STOPWORD_SET.contains(keyword.as_str())));
        assert!(keywords.iter().all(|keyword| *keyword == keyword.to_lowercase()));
    }

    #[test]
    fn nothing_to_say_gives_no_keywords() {
        assert!(keywords("", None, false, 8).is_empty());
        assert!(keywords("the and of ... !!! 12 34", None, false, 8).is_empty());
        assert!(keywords(&"\u{fffd}".repeat(1000), None, false, 8).is_empty());
    }

    #[test]
    fn long_words_and_odd_text_are_handled() {
        let text = format!("{} zebra zebra. ÄÖÜ straße STRASSE x\u{301}y", "a".repeat(100_000));
        let keywords = keywords(&text, Some(Lang::Deu), false, 8);
        assert!(keywords.contains(&"zebra".to_string()), "{keywords:?}");
        assert_eq!(cut_at_char("aé", 2), "a");
    }

    #[test]
    fn every_stemmer_survives_words_of_mixed_scripts() {
        let alphabet: Vec<char> =
            "aeiouyäöüßçéèâîñıİşğдеёжиклмнопрстуфыьэюяαβγδεζηθικλ\u{301}\u{308}اليبنتخحجشسصضطظعغفقكلمنهوي தமிழ்"
                .chars()
                .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let mut text = String::new();
        for _ in 0..4_000 {
            let letters = 1 + next(12);
            for _ in 0..letters {
                text.push(alphabet[next(alphabet.len())]);
            }
            text.push(if next(10) == 0 { '.' } else { ' ' });
        }
        let langs = [
            Lang::Eng,
            Lang::Ara,
            Lang::Dan,
            Lang::Nld,
            Lang::Fin,
            Lang::Fra,
            Lang::Deu,
            Lang::Ell,
            Lang::Hun,
            Lang::Ita,
            Lang::Nob,
            Lang::Por,
            Lang::Ron,
            Lang::Rus,
            Lang::Spa,
            Lang::Swe,
            Lang::Tam,
            Lang::Tur,
        ];
        for lang in langs {
            assert!(stemmer_for(lang).is_some());
            let _ = keywords(&text, Some(lang), false, KEYWORDS_MAX);
        }
    }
}
