//! Text handling shared by the sentiment model and the summariser: accent folding, tokenising,
//! sentence splitting and a cheap language guess among the supported languages.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::hash::FxHashMap;

/// A language the lexicon covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lang {
    #[serde(rename = "en")]
    En,
    #[serde(rename = "pt")]
    Pt,
    #[serde(rename = "es")]
    Es,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::En, Lang::Pt, Lang::Es];

    /// The supported language of a BCP 47 tag (`pt-BR`, `es_MX`, `en`), by its primary subtag.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag
            .trim()
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "pt" => Some(Lang::Pt),
            "es" => Some(Lang::Es),
            _ => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Lowercases and removes diacritics from Latin letters (`não` → `nao`, `Señal` → `senal`), so
/// speech recognisers that drop accents and those that keep them match the same entries.
pub fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        for l in c.to_lowercase() {
            out.push(fold_char(l));
        }
    }
    out
}

fn fold_char(c: char) -> char {
    match c {
        'á' | 'à' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
        'ú' | 'ù' | 'û' | 'ü' => 'u',
        'ç' => 'c',
        'ñ' => 'n',
        '’' | '‘' | '`' | '´' => '\'',
        other => other,
    }
}

/// A token of an utterance: a folded word, or a punctuation mark that ends a clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Folded word (apostrophes removed: `don't` → `dont`), or the punctuation character.
    pub text: String,
    pub punct: Option<char>,
    /// Written in capitals (3+ letters) in an utterance that is not all capitals: emphasis.
    pub shouted: bool,
}

impl Token {
    pub fn is_word(&self) -> bool {
        self.punct.is_none()
    }
}

/// Characters that end a clause (and so the reach of a negation or an intensifier).
pub fn is_clause_punct(c: char) -> bool {
    matches!(c, '.' | ',' | '!' | '?' | ';' | ':' | '…')
}

/// Splits an utterance into word and punctuation tokens. Hyphens split words (`e-mail` gives
/// `e`, `mail`); apostrophes inside words are dropped; other symbols are ignored.
pub fn tokenize(text: &str) -> Vec<Token> {
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    let upper = text.chars().filter(|c| c.is_uppercase()).count();
    let all_caps = letters > 0 && upper * 10 >= letters * 8;
    let mut tokens = Vec::with_capacity(text.len() / 4 + 1);
    let mut word = String::new();
    let mut word_upper = 0usize;
    let mut word_letters = 0usize;
    let flush = |word: &mut String, up: &mut usize, lt: &mut usize, tokens: &mut Vec<Token>| {
        if !word.is_empty() {
            tokens.push(Token {
                text: fold(word),
                punct: None,
                shouted: !all_caps && *lt >= 3 && *up == *lt,
            });
            word.clear();
        }
        *up = 0;
        *lt = 0;
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() {
            if c.is_alphabetic() {
                word_letters += 1;
                if c.is_uppercase() {
                    word_upper += 1;
                }
            }
            word.push(c);
        } else if matches!(fold_char(c), '\'') {
            // An apostrophe inside a word is dropped; elsewhere it is a quote mark.
            let next_is_letter = chars.peek().is_some_and(|n| n.is_alphabetic());
            if word.is_empty() || !next_is_letter {
                flush(&mut word, &mut word_upper, &mut word_letters, &mut tokens);
            }
        } else {
            flush(&mut word, &mut word_upper, &mut word_letters, &mut tokens);
            if is_clause_punct(c) {
                tokens.push(Token {
                    text: c.to_string(),
                    punct: Some(c),
                    shouted: false,
                });
            }
        }
    }
    flush(&mut word, &mut word_upper, &mut word_letters, &mut tokens);
    tokens
}

/// Function words typical of each language (folded), for [`detect_lang`].
const EN_MARKERS: &[&str] = &[
    "the", "i", "you", "is", "my", "to", "and", "it", "this", "that", "im", "its", "was", "for",
    "have", "with", "not", "dont", "can", "what", "your", "me", "been", "thanks", "thank",
    "please", "hi", "hello", "yes", "yeah", "okay", "of", "are", "we", "be", "just",
];
const PT_MARKERS: &[&str] = &[
    "nao", "voce", "voces", "eu", "meu", "minha", "estou", "esta", "obrigado", "obrigada", "muito",
    "isso", "do", "da", "dos", "das", "ja", "ainda", "pode", "tem", "quero", "ninguem", "foi",
    "com", "uma", "um", "sim", "bom", "dia", "valeu", "pra", "para", "ele", "ela", "seu", "sua",
    "gostaria", "entao", "agora", "tudo", "nos", "aqui", "mais", "vou",
];
const ES_MARKERS: &[&str] = &[
    "el", "los", "las", "es", "mi", "muy", "estoy", "gracias", "esto", "eso", "lo", "usted",
    "llamo", "ha", "han", "con", "para", "una", "un", "por", "pero", "quiero", "tengo", "si",
    "buenos", "dias", "vale", "nada", "nadie", "sigue", "ya", "le", "su", "hay", "del", "al",
    "puede", "favor", "quisiera", "mucho", "muchas", "todo",
];

/// For each marker word, one bit per language that uses it.
static MARKERS: LazyLock<FxHashMap<&'static str, u8>> = LazyLock::new(|| {
    let mut map: FxHashMap<&'static str, u8> = FxHashMap::default();
    for (lang, list) in [
        (Lang::En, EN_MARKERS),
        (Lang::Pt, PT_MARKERS),
        (Lang::Es, ES_MARKERS),
    ] {
        for w in list {
            *map.entry(*w).or_default() |= 1 << lang.index();
        }
    }
    map
});

/// Guesses the language of an utterance among the supported ones, by counting function words
/// and a few letters only one language uses. `prior` (the establishment's locale) breaks ties
/// and wins for utterances too short to tell (`Okay.`). Without evidence or prior: English.
pub fn detect_lang(text: &str, tokens: &[Token], prior: Option<Lang>) -> Lang {
    let mut votes = [0.0f32; 3];
    if let Some(p) = prior {
        votes[p.index()] += 1.5;
    }
    for c in text.chars() {
        match c {
            'ã' | 'õ' | 'ç' | 'Ã' | 'Õ' | 'Ç' => votes[Lang::Pt.index()] += 1.0,
            'ñ' | '¿' | '¡' | 'Ñ' => votes[Lang::Es.index()] += 1.0,
            _ => {}
        }
    }
    for t in tokens.iter().filter(|t| t.is_word()) {
        let Some(&bits) = MARKERS.get(t.text.as_str()) else {
            continue;
        };
        // A word several languages share counts for each, split.
        let share = 1.0 / bits.count_ones() as f32;
        for lang in Lang::ALL {
            if bits & (1 << lang.index()) != 0 {
                votes[lang.index()] += share;
            }
        }
    }
    let mut best = prior.unwrap_or(Lang::En);
    for lang in Lang::ALL {
        if votes[lang.index()] > votes[best.index()] {
            best = lang;
        }
    }
    best
}

/// Abbreviations whose trailing dot does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "st", "sr", "sra", "jr", "vs", "etc", "av", "ave", "dept", "approx",
    "ref",
];

/// Splits a segment's text into sentences at `.`, `!`, `?` and `…` followed by a space or the
/// end (not after common abbreviations or between digits). Sentences are trimmed, never empty.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes: Vec<(usize, char)> = text.char_indices().collect();
    let mut start = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        let (pos, c) = bytes[i];
        if matches!(c, '.' | '!' | '?' | '…') {
            // Swallow a run of terminators ("?!", "...").
            let mut j = i;
            while j + 1 < bytes.len() && matches!(bytes[j + 1].1, '.' | '!' | '?' | '…') {
                j += 1;
            }
            let end = bytes.get(j + 1).map_or(text.len(), |b| b.0);
            let at_boundary = bytes.get(j + 1).is_none_or(|b| b.1.is_whitespace());
            let word_before = text[start..pos]
                .rsplit(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("");
            let abbreviation =
                c == '.' && j == i && ABBREVIATIONS.contains(&word_before.to_lowercase().as_str());
            if at_boundary && !abbreviation {
                let s = text[start..end].trim();
                if !s.is_empty() {
                    out.push(s);
                }
                start = end;
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn folding_drops_accents_and_case() {
        assert_eq!(fold("Não ÓTIMO señal Ça"), "nao otimo senal ca");
    }

    #[test]
    fn tokenizing_drops_apostrophes_inside_words_and_keeps_clause_punctuation() {
        assert_eq!(
            words("I don't know, it’s fine!"),
            ["i", "dont", "know", ",", "its", "fine", "!"]
        );
        assert_eq!(words("e-mail 'quoted'"), ["e", "mail", "quoted"]);
    }

    #[test]
    fn capitals_in_a_mixed_case_utterance_are_emphasis() {
        let t = tokenize("This is TERRIBLE");
        assert!(t[2].shouted);
        assert!(!t[0].shouted);
        let all = tokenize("THIS IS TERRIBLE");
        assert!(all.iter().all(|t| !t.shouted));
    }

    #[test]
    fn language_is_guessed_from_function_words_with_the_locale_as_tie_breaker() {
        let guess = |s: &str, p| detect_lang(s, &tokenize(s), p);
        assert_eq!(guess("Eu não sei o número do protocolo.", None), Lang::Pt);
        assert_eq!(guess("No tengo el número de pedido aquí.", None), Lang::Es);
        assert_eq!(guess("I don't have the number with me.", None), Lang::En);
        assert_eq!(guess("Okay.", Some(Lang::Pt)), Lang::Pt);
        assert_eq!(guess("Okay.", None), Lang::En);
        assert_eq!(
            guess(
                "Thank you so much, that was really helpful.",
                Some(Lang::Es)
            ),
            Lang::En
        );
    }

    #[test]
    fn locale_tags_map_to_supported_languages_by_primary_subtag() {
        assert_eq!(Lang::from_tag("pt-BR"), Some(Lang::Pt));
        assert_eq!(Lang::from_tag("es_MX"), Some(Lang::Es));
        assert_eq!(Lang::from_tag("EN"), Some(Lang::En));
        assert_eq!(Lang::from_tag("fr-FR"), None);
    }

    #[test]
    fn sentences_split_at_terminators_but_not_at_abbreviations_or_decimals() {
        assert_eq!(
            split_sentences("I live on Oak St. near Dr. Brown. It costs 4.50 a month! Right?"),
            [
                "I live on Oak St. near Dr. Brown.",
                "It costs 4.50 a month!",
                "Right?"
            ]
        );
        assert_eq!(
            split_sentences("Wait... what?! ok"),
            ["Wait...", "what?!", "ok"]
        );
        assert!(split_sentences("   ").is_empty());
    }
}
