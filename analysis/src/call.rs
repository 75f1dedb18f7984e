//! Call-level sentiment, updated one customer segment at a time: a recency-weighted overall
//! score (exponential decay, so the end of the call counts more) and per-time-window scores
//! from fixed 15-second buckets. Each update is O(1) amortised; the state is a few numbers
//! plus one small bucket per 15 s of speech, and serialises with serde so a worker can keep it.

use serde::{Deserialize, Serialize};

use crate::sentiment::analyse_utterance;
use crate::text::Lang;
use crate::{Label, Score, Segment, Speaker, NEUTRAL_BAND};

/// Default half-life of a segment's weight in the overall score: what was said three minutes
/// before the latest segment counts half as much as the latest.
pub const DEFAULT_HALF_LIFE_SECS: f64 = 180.0;
/// Width of the buckets windows are built from; windows are whole numbers of buckets.
pub const BUCKET_SECS: f64 = 15.0;
/// Segments later than this (4 hours) fall into the last bucket, bounding the state.
pub const MAX_OFFSET_SECS: f64 = 4.0 * 3600.0;
/// Weight of a segment with no sentiment cue ("My number is 555…") relative to one with cues:
/// it pulls the call towards neutral a little, without drowning what was felt.
const NO_CUE_WEIGHT: f64 = 0.3;

/// Sentiment of one time window of the call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowScore {
    /// Offsets from the start of the call, in seconds: `start <= started_at < end`.
    pub start: f64,
    pub end: f64,
    /// Unweighted-by-time mean of the window's customer segments.
    pub score: Score,
    pub segments: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Bucket {
    /// Bucket number: covers `[i * BUCKET_SECS, (i + 1) * BUCKET_SECS)`.
    i: u32,
    /// Σ weight × polarity and Σ weight of its segments.
    sum: f64,
    weight: f64,
    n: u32,
}

/// Incremental call sentiment over customer segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSentiment {
    /// The establishment's language, the prior of the language guess.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lang: Option<Lang>,
    half_life_secs: f64,
    /// Latest segment start seen; the decayed sums are expressed at this time.
    ref_time: f64,
    /// Σ wᵢ·sᵢ·2^(-(ref_time - tᵢ)/half_life) and Σ wᵢ·2^(…).
    decayed_sum: f64,
    decayed_weight: f64,
    /// Σ wᵢ without decay: how much evidence the call has.
    evidence: f64,
    segments: u32,
    /// Non-empty buckets, ordered by `i`.
    buckets: Vec<Bucket>,
}

impl CallSentiment {
    /// An empty aggregate; `locale` (e.g. `pt-BR`) is the language prior for every segment.
    pub fn new(locale: Option<&str>) -> Self {
        CallSentiment {
            lang: locale.and_then(Lang::from_tag),
            half_life_secs: DEFAULT_HALF_LIFE_SECS,
            ref_time: 0.0,
            decayed_sum: 0.0,
            decayed_weight: 0.0,
            evidence: 0.0,
            segments: 0,
            buckets: Vec::new(),
        }
    }

    /// The same with another half-life (seconds, at least 1).
    pub fn with_half_life(mut self, secs: f64) -> Self {
        self.half_life_secs = if secs.is_finite() {
            secs.max(1.0)
        } else {
            DEFAULT_HALF_LIFE_SECS
        };
        self
    }

    /// Folds one segment in and returns its own score. Segments not spoken by the customer,
    /// or with no words, change nothing and return `None`. Segments may arrive out of order.
    pub fn add(&mut self, segment: &Segment) -> Option<Score> {
        if segment.speaker != Speaker::Customer || !segment.text.chars().any(char::is_alphanumeric)
        {
            return None;
        }
        let analysis = analyse_utterance(&segment.text, self.lang);
        let t = if segment.started_at.is_finite() {
            segment.started_at.clamp(0.0, MAX_OFFSET_SECS)
        } else {
            0.0
        };
        let asr = segment
            .confidence
            .filter(|c| c.is_finite())
            .map_or(1.0, |c| f64::from(c).clamp(0.3, 1.0));
        let cue = if analysis.hits > 0 {
            1.0
        } else {
            NO_CUE_WEIGHT
        };
        let w = cue * asr;
        let s = analysis.score.score;

        let rate = std::f64::consts::LN_2 / self.half_life_secs;
        if self.segments == 0 {
            self.ref_time = t;
        } else if t > self.ref_time {
            let decay = (-rate * (t - self.ref_time)).exp();
            self.decayed_sum *= decay;
            self.decayed_weight *= decay;
            self.ref_time = t;
        }
        let d = (-rate * (self.ref_time - t)).exp();
        self.decayed_sum += w * s * d;
        self.decayed_weight += w * d;
        self.evidence += w;
        self.segments += 1;

        let i = (t / BUCKET_SECS) as u32;
        match self.buckets.last_mut() {
            Some(b) if b.i == i => b.add(w, s),
            Some(b) if b.i > i => match self.buckets.binary_search_by_key(&i, |b| b.i) {
                Ok(at) => self.buckets[at].add(w, s),
                Err(at) => self.buckets.insert(at, Bucket::new(i, w, s)),
            },
            _ => self.buckets.push(Bucket::new(i, w, s)),
        }
        Some(analysis.score)
    }

    /// Number of customer segments folded in.
    pub fn segments(&self) -> u32 {
        self.segments
    }

    /// The call's sentiment so far, weighted towards its latest segments. Neutral with
    /// confidence 0 before any customer segment.
    pub fn overall(&self) -> Score {
        if self.segments == 0 || self.decayed_weight <= 0.0 {
            return Score::NEUTRAL_EMPTY;
        }
        let mean = self.decayed_sum / self.decayed_weight;
        Score::new(mean, aggregate_confidence(mean, self.evidence))
    }

    /// Sentiment per window of `window_secs` (rounded up to a multiple of 15 s), for the
    /// windows that have customer speech, in time order.
    pub fn windows(&self, window_secs: f64) -> Vec<WindowScore> {
        let k = if window_secs.is_finite() && window_secs > BUCKET_SECS {
            (window_secs / BUCKET_SECS).ceil() as u32
        } else {
            1
        };
        let mut out: Vec<(u32, f64, f64, u32)> = Vec::new();
        for b in &self.buckets {
            let g = b.i / k;
            match out.last_mut() {
                Some(last) if last.0 == g => {
                    last.1 += b.sum;
                    last.2 += b.weight;
                    last.3 += b.n;
                }
                _ => out.push((g, b.sum, b.weight, b.n)),
            }
        }
        let width = f64::from(k) * BUCKET_SECS;
        out.into_iter()
            .map(|(g, sum, weight, n)| {
                let mean = if weight > 0.0 { sum / weight } else { 0.0 };
                WindowScore {
                    start: f64::from(g) * width,
                    end: f64::from(g + 1) * width,
                    score: Score::new(mean, aggregate_confidence(mean, weight)),
                    segments: n,
                }
            })
            .collect()
    }
}

impl Bucket {
    fn new(i: u32, w: f64, s: f64) -> Self {
        Bucket {
            i,
            sum: w * s,
            weight: w,
            n: 1,
        }
    }

    fn add(&mut self, w: f64, s: f64) {
        self.sum += w * s;
        self.weight += w;
        self.n += 1;
    }
}

/// Confidence of an aggregate: grows with the evidence (segment weights), times how clearly
/// the mean sits inside its label's range.
fn aggregate_confidence(mean: f64, evidence: f64) -> f64 {
    let amount = 1.0 - (-evidence / 2.0).exp();
    let clarity = match Label::from_polarity(mean) {
        Label::Neutral => 0.5 + 0.5 * (1.0 - mean.abs() / NEUTRAL_BAND),
        _ => 0.5 + 0.5 * (mean.abs() / 0.5).min(1.0),
    };
    amount * clarity
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(t: f64, text: &str) -> Segment {
        Segment::new(Speaker::Customer, text, t)
    }

    fn fold(segments: &[Segment]) -> CallSentiment {
        let mut c = CallSentiment::new(Some("en-US"));
        for s in segments {
            c.add(s);
        }
        c
    }

    #[test]
    fn an_empty_call_is_neutral_with_no_confidence() {
        let c = CallSentiment::new(None);
        assert_eq!(c.overall(), Score::NEUTRAL_EMPTY);
        assert!(c.windows(60.0).is_empty());
    }

    #[test]
    fn only_customer_segments_with_words_count() {
        let mut c = CallSentiment::new(None);
        assert!(c
            .add(&Segment::new(
                Speaker::Agent,
                "This is terrible news, sorry.",
                1.0
            ))
            .is_none());
        assert!(c.add(&customer(2.0, "  ... ")).is_none());
        assert_eq!(c.segments(), 0);
        assert_eq!(
            c.add(&customer(3.0, "Thanks, that's great!"))
                .map(|s| s.label),
            Some(Label::Positive)
        );
        assert_eq!(c.segments(), 1);
    }

    #[test]
    fn the_end_of_the_call_counts_more_than_its_start() {
        let angry_then_happy = fold(&[
            customer(5.0, "This is ridiculous, it's still not working."),
            customer(20.0, "I've been waiting for weeks."),
            customer(400.0, "Oh brilliant, it works now."),
            customer(420.0, "Thank you so much, you've been great."),
        ]);
        let happy_then_angry = fold(&[
            customer(5.0, "Oh brilliant, it works now."),
            customer(20.0, "Thank you so much, you've been great."),
            customer(400.0, "This is ridiculous, it's still not working."),
            customer(420.0, "I've been waiting for weeks."),
        ]);
        assert_eq!(angry_then_happy.overall().label, Label::Positive);
        assert_eq!(happy_then_angry.overall().label, Label::Negative);
    }

    #[test]
    fn neutral_chatter_does_not_wash_out_a_complaint() {
        let c = fold(&[
            customer(1.0, "Hi, I'm calling about my bill."),
            customer(
                10.0,
                "I was charged twice this month, this is unacceptable.",
            ),
            customer(20.0, "The account number is 4 4 7 1."),
            customer(30.0, "It's the one ending in 9 9."),
            customer(40.0, "My postcode is SW1A 1AA."),
        ]);
        assert_eq!(c.overall().label, Label::Negative);
    }

    #[test]
    fn windows_group_segments_by_time_and_round_up_to_whole_buckets() {
        let c = fold(&[
            customer(3.0, "This is terrible."),
            customer(50.0, "Still broken."),
            customer(70.0, "Okay."),
            customer(130.0, "Perfect, thank you!"),
        ]);
        let w = c.windows(60.0);
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].start, w[0].end, w[0].segments), (0.0, 60.0, 2));
        assert_eq!(w[0].score.label, Label::Negative);
        assert_eq!((w[1].start, w[1].segments), (60.0, 1));
        assert_eq!(w[1].score.label, Label::Neutral);
        assert_eq!((w[2].start, w[2].end), (120.0, 180.0));
        assert_eq!(w[2].score.label, Label::Positive);
        // 40 s rounds up to 45 s; silly widths fall back to one bucket.
        assert_eq!(c.windows(40.0)[1].start, 45.0);
        assert_eq!(c.windows(0.0).len(), 4);
        assert_eq!(c.windows(f64::NAN).len(), 4);
    }

    #[test]
    fn out_of_order_segments_give_the_same_result_as_in_order_ones() {
        let segs = [
            customer(10.0, "I'm not happy with this."),
            customer(200.0, "Thanks, that helps."),
            customer(95.0, "The bill is wrong again."),
            customer(12.0, "Hello?"),
        ];
        let shuffled = fold(&segs);
        let mut sorted_segs = segs.to_vec();
        sorted_segs.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
        let sorted = fold(&sorted_segs);
        assert!((shuffled.overall().score - sorted.overall().score).abs() < 1e-3);
        assert_eq!(shuffled.windows(30.0), sorted.windows(30.0));
    }

    #[test]
    fn the_state_survives_a_serde_round_trip_mid_call() {
        let mut live = fold(&[
            customer(5.0, "The internet keeps dropping."),
            customer(30.0, "Okay, I'll try that."),
        ]);
        let json = serde_json::to_string(&live).unwrap();
        let mut restored: CallSentiment = serde_json::from_str(&json).unwrap();
        let next = customer(90.0, "Great, it's working now, thanks!");
        live.add(&next);
        restored.add(&next);
        assert_eq!(live, restored);
        assert_eq!(live.overall(), restored.overall());
    }

    #[test]
    fn the_state_stays_small_however_long_the_call() {
        let mut c = CallSentiment::new(None);
        for i in 0..20_000u32 {
            c.add(&customer(f64::from(i) * 2.0, "Okay, thanks."));
        }
        assert_eq!(c.segments(), 20_000);
        assert!(c.buckets.len() <= (MAX_OFFSET_SECS / BUCKET_SECS) as usize + 1);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.len() < 64 * 1024, "{} bytes", json.len());
        // Weird offsets are clamped, not trusted.
        c.add(&customer(f64::INFINITY, "Awful."));
        c.add(&customer(-5.0, "Awful."));
        assert!(c.overall().score.is_finite());
    }

    #[test]
    fn low_asr_confidence_segments_count_less() {
        let mut sure = customer(10.0, "This is awful.");
        sure.confidence = Some(0.95);
        let mut unsure = customer(20.0, "Brilliant, thanks!");
        unsure.confidence = Some(0.3);
        let c = fold(&[sure, unsure]);
        // Recency favours the positive segment, but its low confidence outweighs that.
        assert_eq!(c.overall().label, Label::Negative);
    }

    #[test]
    fn confidence_grows_with_evidence() {
        let one = fold(&[customer(1.0, "This is awful.")]);
        let many = fold(&[
            customer(1.0, "This is awful."),
            customer(10.0, "Terrible service."),
            customer(20.0, "I'm so angry."),
        ]);
        assert!(many.overall().confidence > one.overall().confidence);
        assert!(one.overall().confidence > 0.0);
    }

    #[test]
    fn the_locale_is_the_language_prior() {
        let mut c = CallSentiment::new(Some("pt-BR"));
        assert_eq!(
            c.add(&customer(1.0, "Legal, valeu.")).map(|s| s.label),
            Some(Label::Positive)
        );
    }
}
