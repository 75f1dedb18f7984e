//! Evaluation of the sentiment model on a labelled set (`label<TAB>lang<TAB>text` lines):
//! confusion matrix, accuracy, per-class precision/recall/F1 and macro-F1, overall and per
//! language. Used by the accuracy tests and by `cargo run -p analysis --example sentiment_eval`.

use std::fmt;

use crate::{score_utterance, Label};

/// The labelled evaluation set written for this crate (see `docs/sentiment.md`).
pub const EVAL_SET: &str = include_str!("../data/sentiment_eval.tsv");
/// A second set, written after the model was frozen and never used to tune it.
pub const HOLDOUT_SET: &str = include_str!("../data/sentiment_holdout.tsv");

/// One labelled utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Example<'a> {
    pub label: Label,
    pub lang: &'a str,
    pub text: &'a str,
}

/// Parses `label<TAB>lang<TAB>text` lines; blank lines and lines starting with `#` are skipped.
pub fn parse(tsv: &str) -> Result<Vec<Example<'_>>, String> {
    let mut out = Vec::new();
    for (n, line) in tsv.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (Some(label), Some(lang), Some(text)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("line {}: expected label<TAB>lang<TAB>text", n + 1));
        };
        let label = Label::parse(label).ok_or_else(|| format!("line {}: bad label", n + 1))?;
        out.push(Example {
            label,
            lang: lang.trim(),
            text: text.trim(),
        });
    }
    Ok(out)
}

fn index(label: Label) -> usize {
    match label {
        Label::Negative => 0,
        Label::Neutral => 1,
        Label::Positive => 2,
    }
}

/// Counts of (gold, predicted) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confusion {
    /// `matrix[gold][predicted]`, in the order negative, neutral, positive.
    pub matrix: [[u32; 3]; 3],
}

impl Confusion {
    pub fn add(&mut self, gold: Label, predicted: Label) {
        self.matrix[index(gold)][index(predicted)] += 1;
    }

    pub fn total(&self) -> u32 {
        self.matrix.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u32 = (0..3).map(|i| self.matrix[i][i]).sum();
        f64::from(correct) / f64::from(self.total().max(1))
    }

    /// (precision, recall, F1) of one class; 0 where undefined.
    pub fn class_scores(&self, label: Label) -> (f64, f64, f64) {
        let i = index(label);
        let tp = f64::from(self.matrix[i][i]);
        let predicted: u32 = (0..3).map(|g| self.matrix[g][i]).sum();
        let gold: u32 = self.matrix[i].iter().sum();
        let p = if predicted == 0 {
            0.0
        } else {
            tp / f64::from(predicted)
        };
        let r = if gold == 0 { 0.0 } else { tp / f64::from(gold) };
        let f = if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        };
        (p, r, f)
    }

    /// Unweighted mean of the three classes' F1.
    pub fn macro_f1(&self) -> f64 {
        Label::ALL
            .iter()
            .map(|l| self.class_scores(*l).2)
            .sum::<f64>()
            / 3.0
    }
}

impl fmt::Display for Confusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "gold \\ predicted   negative   neutral  positive")?;
        for gold in Label::ALL {
            let row = &self.matrix[index(gold)];
            writeln!(
                f,
                "{:<17} {:>9} {:>9} {:>9}",
                gold.as_str(),
                row[0],
                row[1],
                row[2]
            )?;
        }
        Ok(())
    }
}

/// The outcome of evaluating the model on a set.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub overall: Confusion,
    /// Per language tag, in first-seen order.
    pub by_lang: Vec<(String, Confusion)>,
    /// (gold, predicted, polarity, text) of every miss.
    pub misses: Vec<(Label, Label, f64, String)>,
}

/// Scores every example and tallies the results. With `use_hint`, each example's language tag
/// is passed as the locale hint (as a worker passes the establishment's locale); without it
/// the language is guessed from the text alone.
pub fn evaluate(examples: &[Example<'_>], use_hint: bool) -> Report {
    let mut report = Report::default();
    for ex in examples {
        let score = score_utterance(ex.text, use_hint.then_some(ex.lang));
        report.overall.add(ex.label, score.label);
        let slot = match report.by_lang.iter().position(|(l, _)| l == ex.lang) {
            Some(i) => i,
            None => {
                report
                    .by_lang
                    .push((ex.lang.to_string(), Confusion::default()));
                report.by_lang.len() - 1
            }
        };
        report.by_lang[slot].1.add(ex.label, score.label);
        if score.label != ex.label {
            report
                .misses
                .push((ex.label, score.label, score.score, ex.text.to_string()));
        }
    }
    report
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.overall;
        writeln!(
            f,
            "n = {}   accuracy = {:.3}   macro-F1 = {:.3}",
            c.total(),
            c.accuracy(),
            c.macro_f1()
        )?;
        writeln!(f)?;
        write!(f, "{c}")?;
        writeln!(f)?;
        writeln!(f, "class        precision  recall     F1")?;
        for l in Label::ALL {
            let (p, r, f1) = c.class_scores(l);
            writeln!(f, "{:<12} {p:>9.3} {r:>7.3} {f1:>6.3}", l.as_str())?;
        }
        writeln!(f)?;
        for (lang, c) in &self.by_lang {
            writeln!(
                f,
                "{lang:<6} n = {:>3}   accuracy = {:.3}   macro-F1 = {:.3}",
                c.total(),
                c.accuracy(),
                c.macro_f1()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_a_hand_computed_confusion_matrix() {
        let mut c = Confusion::default();
        // gold negative: 3 right, 1 called neutral; gold neutral: 2 right; gold positive: 1 right, 1 called neutral.
        for (g, p, n) in [
            (Label::Negative, Label::Negative, 3),
            (Label::Negative, Label::Neutral, 1),
            (Label::Neutral, Label::Neutral, 2),
            (Label::Positive, Label::Positive, 1),
            (Label::Positive, Label::Neutral, 1),
        ] {
            for _ in 0..n {
                c.add(g, p);
            }
        }
        assert_eq!(c.total(), 8);
        assert!((c.accuracy() - 6.0 / 8.0).abs() < 1e-9);
        let (p, r, _) = c.class_scores(Label::Neutral);
        assert!((p - 0.5).abs() < 1e-9 && (r - 1.0).abs() < 1e-9);
        // F1: negative 2·1·.75/1.75, neutral 2/3, positive 2·1·.5/1.5.
        let expected = (1.5 / 1.75 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0;
        assert!((c.macro_f1() - expected).abs() < 1e-9);
    }

    #[test]
    fn the_model_meets_its_accuracy_bar_on_the_evaluation_set() {
        let examples = parse(EVAL_SET).unwrap();
        assert!(examples.len() >= 300, "{} utterances", examples.len());
        let report = evaluate(&examples, true);
        println!("{report}");
        // Measured 0.993 / 0.993 (see docs/sentiment.md). The lexicon was written by the
        // author of this set, so this figure is optimistic; the held-out set is the fair one.
        assert!(report.overall.accuracy() >= 0.95, "{report}");
        assert!(report.overall.macro_f1() >= 0.95, "{report}");
        for (lang, c) in &report.by_lang {
            assert!(c.accuracy() >= 0.90, "{lang}: {report}");
        }
    }

    #[test]
    fn the_model_meets_its_accuracy_bar_on_the_held_out_set() {
        let examples = parse(HOLDOUT_SET).unwrap();
        assert!(examples.len() >= 150, "{} utterances", examples.len());
        let report = evaluate(&examples, true);
        println!("{report}");
        // Measured 0.920 accuracy / 0.922 macro-F1 on first and only scoring (docs/sentiment.md).
        assert!(report.overall.accuracy() >= 0.88, "{report}");
        assert!(report.overall.macro_f1() >= 0.88, "{report}");
    }

    #[test]
    fn the_evaluation_set_is_balanced_enough_to_mean_something() {
        let examples = parse(EVAL_SET).unwrap();
        for label in Label::ALL {
            let share =
                examples.iter().filter(|e| e.label == label).count() as f64 / examples.len() as f64;
            assert!((0.25..=0.42).contains(&share), "{label:?}: {share}");
        }
        let other_langs = examples.iter().filter(|e| e.lang != "en").count() as f64;
        assert!(other_langs / examples.len() as f64 >= 0.2);
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        assert!(parse("positive\ten\tGreat\n# comment\n\nneutral\ten\tOkay").is_ok());
        assert_eq!(
            parse("positive\ten\tGreat\nhappy\ten\tYay").unwrap_err(),
            "line 2: bad label"
        );
        assert!(parse("positive only-two").is_err());
    }
}
