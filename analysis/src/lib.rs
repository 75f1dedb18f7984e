//! Call analysis without IO: an embedded lexicon sentiment model for call-centre speech
//! (English, Brazilian Portuguese, Spanish), an incremental call-level sentiment aggregator with
//! recency weighting and time windows, and a deterministic extractive summariser.
//!
//! Everything here is pure and synchronous: no clock, no network, no threads. Workers in the api
//! crate feed it transcript segments and record what it returns as events, so a rebuild of the
//! read models replays those events instead of recomputing them. See `docs/sentiment.md`.

pub mod call;
pub mod eval;
mod hash;
pub mod lexicon;
pub mod sentiment;
pub mod summary;
pub mod text;

pub use call::{CallSentiment, WindowScore};
pub use sentiment::{analyse_utterance, score_utterance, Analysis};
use serde::{Deserialize, Serialize};
pub use summary::{summarize, Intent, Summary, SummarySentence};

pub use text::Lang;

/// Name and version of the embedded sentiment model, to record next to its outputs.
pub const SENTIMENT_MODEL: &str = "lexicon-v1";
/// Name and version of the embedded summariser, to record next to its outputs.
pub const SUMMARY_MODEL: &str = "extractive-v1";

/// Who spoke a transcript segment (Appendix B.2 `speaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    Customer,
    Agent,
    /// Anything else the runtime reports (a system prompt, hold music, an unknown label).
    #[serde(other)]
    Other,
}

impl Speaker {
    /// Parses the runtime's speaker label; anything but `customer`/`agent` is `Other`.
    pub fn parse(label: &str) -> Self {
        match label.trim().to_ascii_lowercase().as_str() {
            "customer" | "caller" | "user" => Speaker::Customer,
            "agent" | "assistant" | "bot" => Speaker::Agent,
            _ => Speaker::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Customer => "Customer",
            Speaker::Agent => "Agent",
            Speaker::Other => "Other",
        }
    }
}

/// One transcript segment as the analysis needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub speaker: Speaker,
    pub text: String,
    /// Offset of the segment's start from the start of the call, in seconds.
    pub started_at: f64,
    /// The speech recogniser's confidence in 0..=1, when the runtime sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
}

impl Segment {
    pub fn new(speaker: Speaker, text: impl Into<String>, started_at: f64) -> Self {
        Segment {
            speaker,
            text: text.into(),
            started_at,
            confidence: None,
        }
    }
}

/// Sentiment class; serialises lowercase as in Appendix A.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Negative,
    Neutral,
    Positive,
}

impl Label {
    pub const ALL: [Label; 3] = [Label::Negative, Label::Neutral, Label::Positive];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Negative => "negative",
            Label::Neutral => "neutral",
            Label::Positive => "positive",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "negative" | "neg" => Some(Label::Negative),
            "neutral" | "neu" => Some(Label::Neutral),
            "positive" | "pos" => Some(Label::Positive),
            _ => None,
        }
    }

    /// The label a polarity in [-1, 1] falls into: |score| below [`NEUTRAL_BAND`] is neutral.
    pub fn from_polarity(score: f64) -> Self {
        if score >= NEUTRAL_BAND {
            Label::Positive
        } else if score <= -NEUTRAL_BAND {
            Label::Negative
        } else {
            Label::Neutral
        }
    }
}

/// Polarities with an absolute value below this are neutral.
pub const NEUTRAL_BAND: f64 = 0.2;

/// A sentiment judgement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Polarity in [-1, 1] (three decimals): -1 very negative, 0 neutral, 1 very positive.
    pub score: f64,
    pub label: Label,
    /// How sure the model is of `label`, in [0, 1] (two decimals). A heuristic, not a
    /// calibrated probability.
    pub confidence: f64,
}

impl Score {
    /// A score from a polarity and a confidence, rounded for stable serialisation.
    pub fn new(polarity: f64, confidence: f64) -> Score {
        // `+ 0.0` turns a rounded -0.0 into 0.0.
        let score = (polarity.clamp(-1.0, 1.0) * 1000.0).round() / 1000.0 + 0.0;
        Score {
            score,
            label: Label::from_polarity(score),
            confidence: (confidence.clamp(0.0, 1.0) * 100.0).round() / 100.0,
        }
    }

    pub const NEUTRAL_EMPTY: Score = Score {
        score: 0.0,
        label: Label::Neutral,
        confidence: 0.0,
    };

    /// The Appendix A.5 `sentiment.score`: positivity in [0, 1], `(score + 1) / 2`, rounded
    /// to two decimals. 0.5 is neutral; positive labels are ≥ 0.6 and negative ones ≤ 0.4.
    pub fn positivity(&self) -> f64 {
        (((self.score + 1.0) / 2.0).clamp(0.0, 1.0) * 100.0).round() / 100.0
    }

    /// The `{label, score}` part of the A.5 `sentiment` object (the caller adds `computed_at`).
    pub fn to_a5(&self) -> A5Sentiment {
        A5Sentiment {
            label: self.label,
            score: self.positivity(),
        }
    }
}

/// The `label` and `score` fields of the A.5 `sentiment` object.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct A5Sentiment {
    pub label: Label,
    /// Positivity in [0, 1]; see [`Score::positivity`].
    pub score: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_serialise_lowercase_like_appendix_a5() {
        let a5 = Score {
            score: 0.44,
            label: Label::Positive,
            confidence: 0.8,
        }
        .to_a5();
        assert_eq!(
            serde_json::to_value(a5).unwrap(),
            serde_json::json!({"label": "positive", "score": 0.72})
        );
    }

    #[test]
    fn positivity_maps_the_polarity_range_onto_zero_to_one() {
        let at = |score| Score {
            score,
            label: Label::from_polarity(score),
            confidence: 1.0,
        };
        assert_eq!(at(-1.0).positivity(), 0.0);
        assert_eq!(at(0.0).positivity(), 0.5);
        assert_eq!(at(1.0).positivity(), 1.0);
        assert!(at(NEUTRAL_BAND).positivity() >= 0.6);
        assert!(at(-NEUTRAL_BAND).positivity() <= 0.4);
    }

    #[test]
    fn unknown_speaker_labels_parse_as_other() {
        assert_eq!(Speaker::parse("customer"), Speaker::Customer);
        assert_eq!(Speaker::parse("Agent"), Speaker::Agent);
        assert_eq!(Speaker::parse("ivr"), Speaker::Other);
        let s: Speaker = serde_json::from_str("\"hold_music\"").unwrap();
        assert_eq!(s, Speaker::Other);
    }
}
