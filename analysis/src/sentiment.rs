//! Utterance-level sentiment: matches the lexicon's words and phrases, applies negation,
//! intensifiers, contrast, wishes, questions, emphasis and a few call-centre patterns (churn,
//! waiting times, outages, repeat contacts), and squashes the sum into a polarity in [-1, 1].

use std::sync::LazyLock;

use crate::hash::FxHashMap;
use crate::lexicon::{Kind, Lexicon};
use crate::text::{detect_lang, tokenize, Lang, Token};
use crate::{Label, Score, NEUTRAL_BAND};

/// Utterances are cut to this many bytes and then tokens; a transcript segment is far shorter.
pub const MAX_BYTES: usize = 16 * 1024;
pub const MAX_TOKENS: usize = 2_000;

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
fn clip_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The squashing constant: polarity = sum / sqrt(sum² + ALPHA). With 15, one clear word
/// (valence ≥ 0.8) is enough to leave the neutral band; a weak cue alone is not.
const ALPHA: f64 = 15.0;
/// Units before a negated or intensified item that a negator or intensifier may sit in.
const NEGATION_REACH: usize = 3;
const INTENSIFIER_REACH: usize = 2;
const POST_BOOSTER_REACH: usize = 4;

/// Everything the model found in one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub score: Score,
    /// The language the lexicon was read in.
    pub lang: Lang,
    /// Sum of the contributions before squashing.
    pub raw: f32,
    /// Total positive and negative contribution (absolute values).
    pub positive: f32,
    pub negative: f32,
    /// Number of contributions (words, phrases and patterns that carried sentiment).
    pub hits: u32,
}

/// Scores one utterance. `lang_hint` is a locale tag such as `pt-BR`; the language is guessed
/// from the text with the hint as a prior, so a short `Okay.` follows the establishment's locale.
pub fn score_utterance(text: &str, lang_hint: Option<&str>) -> Score {
    analyse_utterance(text, lang_hint.and_then(Lang::from_tag)).score
}

/// Scores one utterance and reports what it found; see [`score_utterance`].
pub fn analyse_utterance(text: &str, prior: Option<Lang>) -> Analysis {
    let text = clip_bytes(text, MAX_BYTES);
    let mut tokens = tokenize(text);
    tokens.truncate(MAX_TOKENS);
    let lang = detect_lang(text, &tokens, prior);
    let units = segment_units(&tokens, lang);
    let contributions = contributions(&tokens, &units, lang);
    let exclamations = tokens.iter().filter(|t| t.punct == Some('!')).count();
    summarise(contributions, exclamations, lang)
}

/// A lexicon match (or an unknown word, or a punctuation mark) over tokens `start..end`.
#[derive(Debug, Clone)]
struct Unit {
    start: usize,
    end: usize,
    kind: Option<Kind>,
    punct: Option<char>,
    shouted: bool,
    clause: usize,
    sentence: usize,
}

impl Unit {
    fn is_punct(&self) -> bool {
        self.punct.is_some()
    }
}

/// Greedy longest-match segmentation of the tokens into lexicon units.
fn segment_units(tokens: &[Token], lang: Lang) -> Vec<Unit> {
    let lex = Lexicon::get();
    let mut units = Vec::with_capacity(tokens.len());
    let mut key = String::new();
    let (mut clause, mut sentence) = (0usize, 0usize);
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if let Some(p) = t.punct {
            units.push(Unit {
                start: i,
                end: i + 1,
                kind: None,
                punct: Some(p),
                shouted: false,
                clause,
                sentence,
            });
            clause += 1;
            if matches!(p, '.' | '!' | '?' | '…') {
                sentence += 1;
            }
            i += 1;
            continue;
        }
        let longest = lex.longest_phrase_from(&t.text);
        let mut matched = None;
        for len in (1..=longest).rev() {
            if i + len > tokens.len() || tokens[i..i + len].iter().any(|t| !t.is_word()) {
                continue;
            }
            let kind = if len == 1 {
                lex.lookup_word(&t.text, lang)
            } else {
                key.clear();
                for (n, w) in tokens[i..i + len].iter().enumerate() {
                    if n > 0 {
                        key.push(' ');
                    }
                    key.push_str(&w.text);
                }
                lex.lookup(&key, lang)
            };
            if let Some(kind) = kind {
                matched = Some((len, kind));
                break;
            }
        }
        let (len, kind) = matched.map_or((1, None), |(l, k)| (l, Some(k)));
        if kind == Some(Kind::Contrast) {
            clause += 1;
        }
        units.push(Unit {
            start: i,
            end: i + len,
            kind,
            punct: None,
            shouted: tokens[i..i + len].iter().any(|t| t.shouted),
            clause,
            sentence,
        });
        i += len;
    }
    units
}

/// One scored piece of evidence, anchored at a unit.
#[derive(Debug, Clone, Copy)]
struct Contribution {
    unit: usize,
    value: f32,
}

/// A sentiment item before modifiers: a lexicon unit or a pattern.
#[derive(Debug, Clone, Copy)]
struct Item {
    unit: usize,
    valence: f32,
    negated: Option<f32>,
    /// Patterns are not negated, intensified or softened.
    fixed: bool,
}

fn contributions(tokens: &[Token], units: &[Unit], lang: Lang) -> Vec<Contribution> {
    let word = |u: &Unit| -> Option<&str> {
        (u.end == u.start + 1 && u.punct.is_none()).then(|| tokens[u.start].text.as_str())
    };
    let mut items: Vec<Item> = Vec::new();
    for (idx, u) in units.iter().enumerate() {
        if let Some(Kind::Sentiment { valence, negated }) = u.kind {
            if word(u).is_some_and(|w| is(w, PROBLEM_NOUNS)) && resolved_before(units, idx, &word) {
                // "fixed my problem", "resolveu o meu problema": the problem is the object.
                continue;
            }
            items.push(Item {
                unit: idx,
                valence,
                negated,
                fixed: false,
            });
        }
    }
    items.extend(patterns(units, lang, &word));
    items.sort_by_key(|i| i.unit);

    let mut used = vec![false; units.len()];
    let mut out: Vec<Contribution> = Vec::with_capacity(items.len() + 2);
    let clause_ends_in_question = |clause: usize| {
        units
            .iter()
            .find(|u| u.clause == clause && u.is_punct())
            .is_some_and(|u| u.punct == Some('?'))
    };
    for item in &items {
        let u = &units[item.unit];
        if item.fixed {
            out.push(Contribution {
                unit: item.unit,
                value: item.valence,
            });
            continue;
        }
        let mut v = item.valence;
        let mut scale = 1.0f32;
        // Intensifiers and diminishers just before the item.
        for back in 1..=INTENSIFIER_REACH.min(item.unit) {
            let prev = &units[item.unit - back];
            if prev.clause != u.clause {
                break;
            }
            if let Some(Kind::Intensifier {
                boost, pre: true, ..
            }) = prev.kind
            {
                scale *= 1.0 + boost;
                used[item.unit - back] = true;
            }
        }
        // Negation within reach in the same clause.
        let mut negated = false;
        for back in 1..=NEGATION_REACH.min(item.unit) {
            let prev = &units[item.unit - back];
            if prev.clause != u.clause {
                break;
            }
            if let Some(Kind::Negator { .. }) = prev.kind {
                negated = true;
                used[item.unit - back] = true;
            }
        }
        if negated {
            v = item.negated.unwrap_or_else(|| flip(v));
        }
        // A wish earlier in the clause turns a positive into a disappointment.
        if v > 0.0
            && units[..item.unit]
                .iter()
                .any(|p| p.clause == u.clause && p.kind == Some(Kind::Irrealis))
        {
            v = flip(v);
        }
        // Questions are not statements: "is it good?" praises nothing.
        if v > 0.0 && clause_ends_in_question(u.clause) {
            v *= 0.5;
        }
        if u.shouted {
            scale *= 1.3;
        }
        out.push(Contribution {
            unit: item.unit,
            value: v * scale,
        });
    }

    for (idx, u) in units.iter().enumerate() {
        match u.kind {
            Some(Kind::Intensifier {
                boost, alone, post, ..
            }) if !used[idx] => {
                // After the thing it boosts ("thanks so much", "ajudou muito").
                if post {
                    if let Some(c) = out.iter_mut().rev().find(|c| {
                        c.unit < idx
                            && idx - c.unit <= POST_BOOSTER_REACH
                            && units[c.unit].sentence == u.sentence
                    }) {
                        c.value *= 1.0 + boost;
                        continue;
                    }
                }
                let ends_clause = units.get(idx + 1).is_none_or(|n| n.is_punct());
                if alone != 0.0 && ends_clause {
                    out.push(Contribution {
                        unit: idx,
                        value: alone,
                    });
                }
            }
            Some(Kind::Negator { alone }) if !used[idx] && alone != 0.0 => {
                out.push(Contribution {
                    unit: idx,
                    value: alone,
                });
            }
            _ => {}
        }
    }
    out.sort_by_key(|c| c.unit);

    // "but": the last contrast decides; what precedes counts half, what follows half again.
    if let Some(c) = units.iter().rposition(|u| u.kind == Some(Kind::Contrast)) {
        for x in &mut out {
            x.value *= if x.unit < c { 0.5 } else { 1.5 };
        }
    } else {
        sarcasm(units, &mut out, &word);
    }
    out
}

/// Default valence of a negated item: a negated positive becomes a milder negative
/// ("not great" is poor, not awful); a negated negative becomes a weak positive ("not bad").
fn flip(v: f32) -> f32 {
    if v > 0.0 {
        -(v * 0.75).min(1.8)
    } else {
        (-v * 0.5).min(1.5)
    }
}

/// "Great, just great, another error": an opening made only of praise interjections, followed
/// by a complaint, is irony. The interjections flip to a mild negative.
fn sarcasm<'a>(
    units: &'a [Unit],
    out: &mut [Contribution],
    word: &impl Fn(&'a Unit) -> Option<&'a str>,
) {
    let mut zone_end = None; // first unit after the opening clauses
    let mut praise = false;
    for (idx, u) in units.iter().enumerate() {
        if u.is_punct() {
            if !praise {
                break;
            }
            zone_end = Some(idx + 1);
            continue;
        }
        let filler = word(u).is_some_and(|w| is(w, INTERJECTION_FILLERS));
        let is_praise = matches!(u.kind, Some(Kind::Sentiment { valence, .. }) if valence >= 1.5);
        praise |= is_praise;
        if !(filler || is_praise) {
            break;
        }
    }
    let Some(end) = zone_end else { return };
    if end >= units.len() {
        return;
    }
    let rest: f32 = out.iter().filter(|c| c.unit >= end).map(|c| c.value).sum();
    if rest < -0.5 {
        for c in out.iter_mut().filter(|c| c.unit < end && c.value > 0.0) {
            c.value *= -0.5;
        }
    }
}

/// Bits of the word lists the patterns use, so each check is one hash lookup.
const PROBLEM_NOUNS: u32 = 1 << 0;
const RESOLUTION_VERBS: u32 = 1 << 1;
const INTERJECTION_FILLERS: u32 = 1 << 2;
const CANCEL_VERBS: u32 = 1 << 3;
const CHURN_OBJECTS: u32 = 1 << 4;
const NUMBER_WORDS: u32 = 1 << 5;
const SINGULAR_COUNTS: u32 = 1 << 6;
const DURATION_UNITS: u32 = 1 << 7;
const DURATION_CUES: u32 = 1 << 8;
const SERVICE_NOUNS: u32 = 1 << 9;
const OUTAGE_MARKERS: u32 = 1 << 10;
const REPEAT_COUNTS: u32 = 1 << 11;
const REPEAT_UNITS: u32 = 1 << 12;
const ORDINALS: u32 = 1 << 13;
const ORDINAL_UNITS: u32 = 1 << 14;

static PATTERN_WORDS: LazyLock<FxHashMap<&'static str, u32>> = LazyLock::new(|| {
    let mut map: FxHashMap<&'static str, u32> = FxHashMap::default();
    for (list, bit) in [
        (PROBLEM_NOUNS_LIST, PROBLEM_NOUNS),
        (RESOLUTION_VERBS_LIST, RESOLUTION_VERBS),
        (INTERJECTION_FILLERS_LIST, INTERJECTION_FILLERS),
        (CANCEL_VERBS_LIST, CANCEL_VERBS),
        (CHURN_OBJECTS_LIST, CHURN_OBJECTS),
        (NUMBER_WORDS_LIST, NUMBER_WORDS),
        (SINGULAR_COUNTS_LIST, SINGULAR_COUNTS),
        (DURATION_UNITS_LIST, DURATION_UNITS),
        (DURATION_CUES_LIST, DURATION_CUES),
        (SERVICE_NOUNS_LIST, SERVICE_NOUNS),
        (OUTAGE_MARKERS_LIST, OUTAGE_MARKERS),
        (REPEAT_COUNTS_LIST, REPEAT_COUNTS),
        (REPEAT_UNITS_LIST, REPEAT_UNITS),
        (ORDINALS_LIST, ORDINALS),
        (ORDINAL_UNITS_LIST, ORDINAL_UNITS),
    ] {
        for w in list {
            *map.entry(*w).or_default() |= bit;
        }
    }
    map
});

fn word_bits(word: &str) -> u32 {
    PATTERN_WORDS.get(word).copied().unwrap_or(0)
}

fn is(word: &str, list: u32) -> bool {
    word_bits(word) & list != 0
}

const INTERJECTION_FILLERS_LIST: &[&str] =
    &["oh", "well", "yeah", "just", "ah", "oh,", "ok", "okay"];

/// Nouns naming a fault, neutralised when a resolution verb governs them.
const PROBLEM_NOUNS_LIST: &[&str] = &[
    "problem",
    "problems",
    "issue",
    "issues",
    "fault",
    "problema",
    "problemas",
    "error",
];
const RESOLUTION_VERBS_LIST: &[&str] = &[
    "solve",
    "solves",
    "solved",
    "solving",
    "fix",
    "fixes",
    "fixed",
    "fixing",
    "resolve",
    "resolves",
    "resolved",
    "sort",
    "sorted",
    "sorting",
    "resolveu",
    "resolver",
    "resolvido",
    "resolvida",
    "resolve",
    "resolvio",
    "resuelto",
    "solucionar",
    "soluciono",
    "solucionado",
    "arreglar",
    "arreglo",
    "consertar",
    "consertou",
];

fn resolved_before<'a>(
    units: &'a [Unit],
    idx: usize,
    word: &impl Fn(&'a Unit) -> Option<&'a str>,
) -> bool {
    let clause = units[idx].clause;
    units[idx.saturating_sub(3)..idx]
        .iter()
        .filter(|u| u.clause == clause)
        .filter_map(word)
        .any(|w| is(w, RESOLUTION_VERBS))
}

const CANCEL_VERBS_LIST: &[&str] = &[
    "cancel",
    "cancelling",
    "canceling",
    "terminate",
    "close",
    "closing",
    "cancelar",
    "cancela",
    "cancele",
    "encerrar",
    "cancelem",
    "cancelen",
];
const CHURN_OBJECTS_LIST: &[&str] = &[
    "account",
    "subscription",
    "contract",
    "service",
    "membership",
    "plan",
    "policy",
    "line",
    "internet",
    "broadband",
    "conta",
    "assinatura",
    "contrato",
    "plano",
    "servico",
    "linha",
    "cuenta",
    "suscripcion",
    "servicio",
    "linea",
    "poliza",
    "apolice",
];
const NUMBER_WORDS_LIST: &[&str] = &[
    "a", "an", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "fifteen", "twenty", "thirty", "forty", "fifty", "sixty", "ninety", "half", "several",
    "couple", "few", "um", "uma", "dois", "duas", "tres", "quatro", "cinco", "seis", "dez",
    "quinze", "vinte", "trinta", "quarenta", "meia", "un", "una", "dos", "cuatro", "diez",
    "veinte", "treinta", "cuarenta", "media", "varios", "varias", "vários",
];
const SINGULAR_COUNTS_LIST: &[&str] = &[
    "a", "an", "one", "half", "um", "uma", "un", "una", "meia", "media",
];
const DURATION_UNITS_LIST: &[&str] = &[
    "minutes", "mins", "minute", "hour", "hours", "hrs", "day", "days", "week", "weeks", "minutos",
    "minuto", "hora", "horas", "dia", "dias", "semana", "semanas",
];
const DURATION_CUES_LIST: &[&str] = &[
    "been",
    "waiting",
    "wait",
    "waited",
    "hold",
    "trying",
    "still",
    "without",
    "no",
    "ha",
    "faz",
    "hace",
    "llevo",
    "llevamos",
    "esperando",
    "esperar",
    "espera",
    "sem",
    "sin",
    "ainda",
];
const ALL_DAY: &[&str] = &[
    "all morning",
    "all day",
    "all afternoon",
    "all week",
    "all night",
    "all evening",
    "o dia todo",
    "a manha toda",
    "a tarde toda",
    "todo el dia",
    "toda la manana",
    "toda la tarde",
];
const SERVICE_NOUNS_LIST: &[&str] = &[
    "internet",
    "signal",
    "service",
    "power",
    "electricity",
    "water",
    "heating",
    "heat",
    "connection",
    "wifi",
    "tv",
    "broadband",
    "coverage",
    "network",
    "sinal",
    "energia",
    "luz",
    "agua",
    "servico",
    "conexao",
    "rede",
    "senal",
    "conexion",
    "red",
    "cobertura",
    "gas",
];
const OUTAGE_MARKERS_LIST: &[&str] = &["without", "no", "sem", "sin"];
const REPEAT_COUNTS_LIST: &[&str] = &[
    "two", "three", "four", "five", "six", "several", "many", "multiple", "duas", "dois", "tres",
    "quatro", "cinco", "varias", "varios", "muitas", "dos", "cuatro", "muchas",
];
const REPEAT_UNITS_LIST: &[&str] = &["times", "vezes", "veces"];
const ORDINALS_LIST: &[&str] = &[
    "second", "third", "fourth", "fifth", "sixth", "segunda", "terceira", "quarta", "tercera",
    "cuarta", "quinta",
];
const ORDINAL_UNITS_LIST: &[&str] = &["time", "vez"];

/// Call-centre patterns spanning several words, each at most once per utterance.
fn patterns<'a>(
    units: &'a [Unit],
    lang: Lang,
    word: &impl Fn(&'a Unit) -> Option<&'a str>,
) -> Vec<Item> {
    let mut items = Vec::new();
    let w = |i: usize| units.get(i).and_then(word);
    let same_clause = |a: usize, b: usize| units[a].clause == units[b].clause;
    let bits: Vec<u32> = units.iter().map(|u| word(u).map_or(0, word_bits)).collect();
    let b = |i: usize| bits.get(i).copied().unwrap_or(0);
    let mut churn = false;
    let mut waited = false;
    let mut outage = false;
    let mut repeated = false;
    for i in 0..units.len() {
        let Some(here) = w(i) else { continue };
        // Churn: "cancel my account", "cancelar a minha assinatura".
        if !churn && b(i) & CANCEL_VERBS != 0 {
            let object = (i + 1..units.len().min(i + 5))
                .take_while(|&j| same_clause(i, j))
                .any(|j| b(j) & CHURN_OBJECTS != 0);
            if object {
                churn = true;
                items.push(Item {
                    unit: i,
                    valence: -2.0,
                    negated: Some(0.0),
                    fixed: false,
                });
            }
        }
        // Waiting time: "on hold for an hour", "há mais de uma hora", "llevo una hora".
        if !waited {
            let duration = (b(i) & NUMBER_WORDS != 0 || here.chars().all(|c| c.is_ascii_digit()))
                && (i + 1..units.len().min(i + 3))
                    .find(|&j| b(j) & DURATION_UNITS != 0)
                    .and_then(w)
                    .is_some_and(|unit| {
                        // A bare singular unit needs a singular count ("an hour").
                        !matches!(
                            unit,
                            "hour"
                                | "day"
                                | "week"
                                | "minute"
                                | "hora"
                                | "dia"
                                | "semana"
                                | "minuto"
                        ) || b(i) & SINGULAR_COUNTS != 0
                    });
            let all_day = ALL_DAY.iter().any(|p| {
                p.split(' ')
                    .enumerate()
                    .all(|(k, part)| w(i + k) == Some(part))
            });
            if duration || all_day {
                let sentence = units[i].sentence;
                let cue = (0..units.len())
                    .filter(|&j| units[j].sentence == sentence && b(j) & DURATION_CUES != 0)
                    .any(|j| !(lang == Lang::Pt && w(j) == Some("no")));
                if cue {
                    waited = true;
                    items.push(Item {
                        unit: i,
                        valence: -1.2,
                        negated: None,
                        fixed: true,
                    });
                }
            }
        }
        // Outage: "no signal", "sem internet", "sin señal".
        if !outage
            && b(i) & OUTAGE_MARKERS != 0
            && !(lang == Lang::Pt && here == "no")
            && (i + 1..units.len().min(i + 4))
                .take_while(|&j| same_clause(i, j))
                .any(|j| b(j) & SERVICE_NOUNS != 0)
        {
            outage = true;
            items.push(Item {
                unit: i,
                valence: -1.6,
                negated: None,
                fixed: true,
            });
        }
        // Repeat contact: "three times", "tres veces", "third time", "terceira vez".
        if !repeated {
            let count = (b(i) & REPEAT_COUNTS != 0
                || here.parse::<u32>().is_ok_and(|n| (2..100).contains(&n)))
                && b(i + 1) & REPEAT_UNITS != 0;
            let ordinal = b(i) & ORDINALS != 0 && b(i + 1) & ORDINAL_UNITS != 0;
            if count || ordinal {
                repeated = true;
                items.push(Item {
                    unit: i,
                    valence: if ordinal { -1.4 } else { -1.2 },
                    negated: None,
                    fixed: true,
                });
            }
        }
        // "Why ...?" opening a clause: on a support line, nearly always a complaint.
        let clause_start = i == 0 || units[i - 1].clause != units[i].clause;
        if clause_start && (here == "why" || (here == "por" && w(i + 1) == Some("que"))) {
            items.push(Item {
                unit: i,
                valence: -0.6,
                negated: None,
                fixed: true,
            });
        }
    }
    items
}

fn summarise(contributions: Vec<Contribution>, exclamations: usize, lang: Lang) -> Analysis {
    let mut raw: f32 = contributions.iter().map(|c| c.value).sum();
    // Exclamation marks amplify whatever was said, up to three of them.
    if raw != 0.0 {
        raw += raw.signum() * 0.3 * exclamations.min(3) as f32;
    }
    let positive: f32 = contributions.iter().map(|c| c.value.max(0.0)).sum();
    let negative: f32 = contributions.iter().map(|c| (-c.value).max(0.0)).sum();
    let hits = contributions
        .iter()
        .filter(|c| c.value.abs() > 0.05)
        .count() as u32;
    let score = squash(raw);
    let label = Label::from_polarity(score);
    let confidence = if hits == 0 {
        0.6
    } else {
        match label {
            Label::Neutral => 0.5 + 0.3 * (1.0 - score.abs() / NEUTRAL_BAND),
            _ => {
                let agreement =
                    f64::from((positive - negative).abs() / (positive + negative).max(1e-6));
                0.5 + 0.45 * agreement * (score.abs() / 0.6).min(1.0)
            }
        }
    };
    Analysis {
        score: Score::new(score, confidence),
        lang,
        raw: (raw * 1000.0).round() / 1000.0,
        positive,
        negative,
        hits,
    }
}

/// Squashes a raw sum into [-1, 1].
fn squash(raw: f32) -> f64 {
    let raw = f64::from(raw);
    raw / (raw * raw + ALPHA).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Score {
        score_utterance(text, None)
    }
    fn pt(text: &str) -> Score {
        score_utterance(text, Some("pt-BR"))
    }
    fn es(text: &str) -> Score {
        score_utterance(text, Some("es-ES"))
    }

    #[test]
    fn plain_sentiment_words_get_their_label() {
        assert_eq!(s("The engineer was wonderful.").label, Label::Positive);
        assert_eq!(s("The engineer was awful.").label, Label::Negative);
        assert_eq!(s("The engineer arrives at nine.").label, Label::Neutral);
    }

    #[test]
    fn negation_flips_and_softens_the_word_it_governs() {
        let happy = s("I am happy with the repair.");
        let not_happy = s("I am not happy with the repair.");
        assert_eq!(happy.label, Label::Positive);
        assert_eq!(not_happy.label, Label::Negative);
        assert!(not_happy.score.abs() < happy.score.abs());
        assert_eq!(s("The new modem is not bad at all.").label, Label::Positive);
        assert_eq!(pt("Não gostei da instalação.").label, Label::Negative);
        assert_eq!(es("No estoy nada satisfecho.").label, Label::Negative);
    }

    #[test]
    fn negation_does_not_reach_across_a_comma() {
        assert_eq!(s("No, the technician was great.").label, Label::Positive);
    }

    #[test]
    fn intensifiers_strengthen_and_diminishers_weaken() {
        let plain = s("The app is slow.").score;
        let very = s("The app is very slow.").score;
        let bit = s("The app is a bit slow.").score;
        assert!(very < plain && plain < bit, "{very} {plain} {bit}");
        assert!(s("really helpful").score > s("helpful").score);
        assert!(pt("muito bom").score > pt("bom").score);
    }

    #[test]
    fn what_follows_but_outweighs_what_precedes_it() {
        assert_eq!(
            s("The price is great but the support is useless.").label,
            Label::Negative
        );
        assert_eq!(
            s("Setup was a pain, but the service itself is excellent.").label,
            Label::Positive
        );
        assert_eq!(
            pt("O preço é bom, mas o atendimento é péssimo.").label,
            Label::Negative
        );
        assert_eq!(
            es("Tardaron un poco, pero el técnico fue muy amable.").label,
            Label::Positive
        );
    }

    #[test]
    fn exclamation_marks_amplify_up_to_a_limit() {
        let calm = s("This is unacceptable.").score;
        let loud = s("This is unacceptable!").score;
        let louder = s("This is unacceptable!!!").score;
        let loudest = s("This is unacceptable!!!!!!").score;
        assert!(loud < calm && louder < loud);
        assert_eq!(louder, loudest);
        assert_eq!(s("Okay!").label, Label::Neutral);
    }

    #[test]
    fn capitals_in_mixed_case_speech_are_emphasis() {
        assert!(s("That is TERRIBLE news").score < s("That is terrible news").score);
    }

    #[test]
    fn common_call_centre_complaints_are_negative() {
        for text in [
            "I'd like to cancel my subscription please.",
            "I want to close my account today.",
            "Honestly this is ridiculous.",
            "The box is still not working after the reset.",
            "I was on hold for an hour before anyone answered.",
            "We've had no internet since Tuesday.",
            "This is the fourth time I've rung about the same fault.",
            "I've called five times this week.",
            "Can I just talk to a real person?",
            "Why do you keep sending me the wrong bill?",
            "Nobody ever gets back to me.",
            "Quero cancelar o meu plano.",
            "Estou sem sinal faz dois dias.",
            "Llevo media hora esperando.",
            "Quiero darme de baja.",
        ] {
            let got = s_or_hint(text);
            assert_eq!(got.label, Label::Negative, "{text}: {got:?}");
        }
    }

    fn s_or_hint(text: &str) -> Score {
        let hint = if text.contains("Quero") || text.contains("Estou") {
            Some("pt-BR")
        } else if text.contains("Llevo") || text.contains("Quiero") {
            Some("es")
        } else {
            None
        };
        score_utterance(text, hint)
    }

    #[test]
    fn common_call_centre_thanks_are_positive() {
        for text in [
            "Thank you so much for your help today.",
            "That's brilliant, cheers.",
            "You've been really patient with me, thanks.",
            "Obrigado, resolveu tudo!",
            "Muchas gracias, muy amable.",
        ] {
            assert_eq!(s(text).label, Label::Positive, "{text}");
        }
    }

    #[test]
    fn politeness_and_business_words_alone_stay_neutral() {
        for text in [
            "Please.",
            "Yes, please.",
            "Could you please check my order number?",
            "Good morning, I'm calling about my appointment.",
            "Can I cancel the appointment on Friday and book Monday instead?",
            "How much is the cancellation fee?",
            "I'm not sure.",
            "Hold on, let me find it.",
            "Bom dia, por favor.",
            "Buenas tardes, por favor.",
            "No, that's everything.",
        ] {
            assert_eq!(s(text).label, Label::Neutral, "{text}: {:?}", s(text));
        }
    }

    #[test]
    fn resolving_a_problem_is_not_a_complaint_about_it() {
        assert_eq!(s("You fixed the problem, great.").label, Label::Positive);
        assert_eq!(s("I have a problem with my router.").label, Label::Negative);
        assert_eq!(s("Nobody fixed the problem.").label, Label::Negative);
    }

    #[test]
    fn praise_opening_a_complaint_reads_as_irony() {
        assert_eq!(s("Oh perfect, it crashed again.").label, Label::Negative);
        assert_eq!(s("Perfect, see you then.").label, Label::Positive);
    }

    #[test]
    fn a_disappointed_wish_is_negative() {
        assert_eq!(s("I was hoping for a quicker fix.").label, Label::Negative);
    }

    #[test]
    fn portuguese_no_is_not_a_negation() {
        // "no" is "in the" in Portuguese.
        assert_eq!(pt("Deu tudo certo no final.").label, Label::Positive);
    }

    #[test]
    fn scores_stay_in_range_and_confidence_is_a_fraction() {
        for text in [
            "",
            "!!!!!!",
            "terrible awful horrible useless worst pathetic disgraceful",
            "great great great excellent perfect wonderful amazing",
        ] {
            let r = s(text);
            assert!((-1.0..=1.0).contains(&r.score), "{text}");
            assert!((0.0..=1.0).contains(&r.confidence), "{text}");
        }
        assert_eq!(s("").label, Label::Neutral);
    }

    #[test]
    fn clipping_respects_char_boundaries() {
        // "ã" takes bytes 1..3.
        assert_eq!(clip_bytes("não", 2), "n");
        assert_eq!(clip_bytes("não", 3), "nã");
        assert_eq!(clip_bytes("não", 4), "não");
        assert_eq!(clip_bytes("ok", 10), "ok");
    }

    #[test]
    fn a_long_utterance_is_cut_not_refused() {
        let text = "bad ".repeat(50_000);
        let r = analyse_utterance(&text, None);
        assert_eq!(r.score.label, Label::Negative);
        assert!(r.hits as usize <= MAX_TOKENS);
    }

    #[test]
    fn clear_cases_are_more_confident_than_mixed_ones() {
        let clear = s("Thank you, that was excellent.");
        let mixed = s("Thank you, but that was a terrible experience overall, really quite awful.");
        assert!(clear.confidence > 0.8, "{clear:?}");
        assert!(mixed.confidence < clear.confidence, "{mixed:?}");
    }
}
