//! Prints the sentiment model's accuracy, macro-F1 and confusion matrix on the labelled
//! evaluation set and on the held-out set. `--misses` also lists every misclassified utterance.
//!
//! cargo run -p analysis --example sentiment_eval [-- --misses]

use analysis::eval::{evaluate, parse, EVAL_SET, HOLDOUT_SET};

fn main() {
    let show_misses = std::env::args().any(|a| a == "--misses");
    for (name, set) in [
        ("evaluation set (data/sentiment_eval.tsv)", EVAL_SET),
        ("held-out set (data/sentiment_holdout.tsv)", HOLDOUT_SET),
    ] {
        let examples = match parse(set) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("{name}: {e}");
                std::process::exit(1);
            }
        };
        let report = evaluate(&examples, true);
        let unhinted = evaluate(&examples, false).overall;
        println!("== {name}");
        println!("{report}");
        println!(
            "without the locale hint: accuracy = {:.3}   macro-F1 = {:.3}",
            unhinted.accuracy(),
            unhinted.macro_f1()
        );
        println!();
        if show_misses {
            for (gold, predicted, score, text) in &report.misses {
                println!(
                    "  {:<8} -> {:<8} {score:>6.3}  {text}",
                    gold.as_str(),
                    predicted.as_str()
                );
            }
            println!();
        }
    }
}
