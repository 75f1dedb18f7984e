//! Times the summariser and the call sentiment aggregator on a synthetic 30-minute call
//! (450 segments) and prints the summary. Run it optimised:
//!
//! cargo run --release -p analysis --example analysis_timing

use std::time::{Duration, Instant};

use analysis::{summarize, CallSentiment, Segment, Speaker};

fn main() {
    let call = thirty_minute_call();
    let runs = 50;

    let mut summary_times = Vec::with_capacity(runs);
    let mut summary = None;
    for _ in 0..runs {
        let started = Instant::now();
        summary = Some(summarize(&call, 5));
        summary_times.push(started.elapsed());
    }

    let mut sentiment_times = Vec::with_capacity(runs);
    let mut sentiment = CallSentiment::new(Some("en-GB"));
    for _ in 0..runs {
        let started = Instant::now();
        sentiment = CallSentiment::new(Some("en-GB"));
        for s in &call {
            sentiment.add(s);
        }
        sentiment_times.push(started.elapsed());
    }

    let customer = call
        .iter()
        .filter(|s| s.speaker == Speaker::Customer)
        .count();
    println!(
        "{} segments ({customer} customer), {:.0} minutes",
        call.len(),
        call.last().map_or(0.0, |s| s.started_at) / 60.0
    );
    println!(
        "summarize(5):              median {:?}, max {:?} over {runs} runs",
        median(&mut summary_times),
        summary_times.iter().max().copied().unwrap_or_default()
    );
    let per_segment = median(&mut sentiment_times) / customer.max(1) as u32;
    println!(
        "CallSentiment::add ×{customer}: median {:?} per call, {per_segment:?} per segment",
        median(&mut sentiment_times)
    );
    println!(
        "state: {} bytes of JSON",
        serde_json::to_string(&sentiment).map_or(0, |j| j.len())
    );
    println!();
    println!("overall: {:?}", sentiment.overall());
    for w in sentiment.windows(300.0) {
        println!(
            "  {:>5.0}-{:<5.0} {:<8} {:>6.3} ({} segments)",
            w.start,
            w.end,
            w.score.label.as_str(),
            w.score.score,
            w.segments
        );
    }
    println!();
    if let Some(s) = summary {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// About 450 segments over 30 minutes: a broadband fault call that ends resolved.
fn thirty_minute_call() -> Vec<Segment> {
    let customer = [
        "My router keeps dropping the connection every evening.",
        "I have restarted it {} times already.",
        "The lights on the front are flashing orange.",
        "I work from home so this is costing me money.",
        "Yes, the cable is plugged in properly.",
        "Okay, I'm doing that now.",
        "It says no internet again.",
        "Can you send an engineer on {}?",
        "I was also charged {} pounds for last month's late payment.",
        "That's not fair, the outage was your fault.",
    ];
    let agent = [
        "Let me run a line test for you.",
        "I can see {} disconnections on your line in the last week.",
        "Could you hold the reset button for ten seconds?",
        "I'm going to update the firmware remotely.",
        "The next engineer slot is {} morning.",
        "I've removed the late payment charge of {} pounds.",
        "Is the router on the same socket as before?",
        "I'll note that on your account.",
    ];
    let ending = [
        (
            Speaker::Customer,
            "Oh, it's working now, the light is green!",
        ),
        (
            Speaker::Agent,
            "Great, I've booked the engineer for Thursday anyway to check the line.",
        ),
        (
            Speaker::Customer,
            "Brilliant, thank you so much for your patience.",
        ),
    ];
    let days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"];
    let mut out = Vec::new();
    let mut t = 0.0;
    for i in 0..447usize {
        let fill = |s: &str| match i % 3 {
            0 => s.replace("{}", &(i % 17 + 2).to_string()),
            1 => s.replace("{}", days[i % days.len()]),
            _ => s.replace("{}", &(i * 7 % 90 + 10).to_string()),
        };
        let (speaker, text) = if i % 2 == 0 {
            (Speaker::Customer, fill(customer[(i / 2) % customer.len()]))
        } else {
            (Speaker::Agent, fill(agent[(i / 2) % agent.len()]))
        };
        out.push(Segment::new(speaker, text, t));
        t += 4.0;
    }
    for (speaker, text) in ending {
        out.push(Segment::new(speaker, text, t));
        t += 4.0;
    }
    out
}
