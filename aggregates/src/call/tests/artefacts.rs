//! Runtime artefacts and the small state: segments, tools, sentiment, summary, snapshots.

use super::*;

#[test]
fn segments_are_numbered_and_the_state_stays_small_however_many_arrive() {
    let mut call = replay(in_progress());
    let mut size_after_first = 0;
    for n in 1..=10_000u32 {
        let events = call.decide(runtime(n, segment(n))).unwrap();
        assert_eq!(events.len(), 1);
        assert!(
            matches!(&events[0], E::TranscriptSegmentAdded { ordinal, .. } if *ordinal == n as u64)
        );
        for e in events {
            call.apply(e);
        }
        if n == 1 {
            size_after_first = serde_json::to_string(&call).unwrap().len();
        }
    }
    let size = serde_json::to_string(&call).unwrap().len();
    assert_eq!(call.runtime.segments, 10_000);
    // Only the counter's digits grow (1 → 10000).
    assert!(size <= size_after_first + 4, "{size_after_first} → {size}");
    eprintln!("state after 1 segment: {size_after_first} bytes, after 10,000: {size} bytes");
    assert!(size < 2048, "state is {size} bytes");
}

#[test]
fn segments_arriving_after_the_end_are_kept_and_complete_the_transcript() {
    let ended = RuntimeEvent::CallEnded {
        ended_at: t(60),
        duration_seconds: Some(58),
        final_status: TerminalStatus::Completed,
        hangup_by: Some(HangupBy::Agent),
        segment_count: Some(2),
    };
    let call = run(
        replay(in_progress()),
        [runtime(3, segment(3)), runtime(60, ended)],
    )
    .unwrap();
    assert!(call.is_terminal());
    assert!(!call.transcript_complete());
    let call = run(call, [runtime(4, segment(4))]).unwrap();
    assert_eq!(call.runtime.segments, 2);
    assert!(call.transcript_complete());
}

#[test]
fn tool_results_pair_with_the_oldest_open_call_of_the_same_tool() {
    let called = |n: u32, name: &str| {
        runtime(
            n,
            RuntimeEvent::ToolCalled {
                tool_name: name.into(),
                arguments: json!({"n": n}),
            },
        )
    };
    let result = |n: u32, name: &str| {
        runtime(
            n,
            RuntimeEvent::ToolResult {
                tool_name: name.into(),
                result: json!({"ok": true}),
                error: Value::Null,
            },
        )
    };
    let call = run(
        replay(in_progress()),
        [
            called(1, "send_email"),
            called(2, "lookup"),
            called(3, "send_email"),
        ],
    )
    .unwrap();
    let events = call.decide(result(4, "send_email")).unwrap();
    assert!(matches!(
        &events[0],
        E::ToolResultReceived {
            invocation: Some(1),
            ..
        }
    ));
    let call = run(call, [result(4, "send_email")]).unwrap();
    let events = call.decide(result(5, "send_email")).unwrap();
    assert!(matches!(
        &events[0],
        E::ToolResultReceived {
            invocation: Some(3),
            ..
        }
    ));
    let events = call.decide(result(5, "unknown_tool")).unwrap();
    assert!(matches!(
        &events[0],
        E::ToolResultReceived {
            invocation: None,
            ..
        }
    ));
}

#[test]
fn sentiment_and_summary_are_recorded_only_for_new_segments() {
    let sentiment = |n: u64| C::RecordSentiment {
        label: SentimentLabel::Positive,
        score: SentimentScore::try_from(0.72).unwrap(),
        windows: vec![],
        segments_considered: n,
        computed_at: t(n as i64),
    };
    let summary = |n: u64| C::RecordSummary {
        summary: "Customer updated the service plan.".into(),
        generator: "extractive".into(),
        segments_covered: n,
        generated_at: t(n as i64),
    };
    let call = run(replay(in_progress()), [sentiment(3), summary(3)]).unwrap();
    assert_eq!(call.decide(sentiment(3)).unwrap(), vec![]);
    assert_eq!(call.decide(sentiment(2)).unwrap(), vec![]);
    assert_eq!(call.decide(sentiment(4)).unwrap().len(), 1);
    assert_eq!(call.decide(summary(3)).unwrap(), vec![]);
    assert_eq!(call.decide(summary(5)).unwrap().len(), 1);
    assert!(SentimentScore::try_from(1.5).is_err());
    assert!(SentimentScore::try_from(f64::NAN).is_err());
}

#[test]
fn commands_other_than_openers_need_an_existing_call() {
    for c in [
        C::RequestPlacement { at: t(0) },
        handoff(),
        reap(0),
        C::BindCallSid {
            call_sid: sid(),
            at: t(0),
        },
    ] {
        assert_eq!(Call::default().decide(c).unwrap_err(), CallError::NotFound);
    }
}

#[test]
fn the_state_survives_a_snapshot_round_trip() {
    let call = run(
        replay(in_progress()),
        [
            runtime(3, segment(3)),
            runtime(
                4,
                RuntimeEvent::ToolCalled {
                    tool_name: "lookup".into(),
                    arguments: json!({}),
                },
            ),
            status(70, TwilioCallStatus::Ringing),
            handoff(),
        ],
    )
    .unwrap();
    let json = serde_json::to_value(&call).unwrap();
    assert_eq!(serde_json::from_value::<Call>(json.clone()).unwrap(), call);
    assert_eq!(json["twilio"]["seen"], json!([70]));
}

#[test]
fn events_round_trip_through_json() {
    let mut all = in_progress();
    all.extend(replay(in_progress()).decide(handoff()).unwrap());
    all.extend(outbound_requested());
    all.push(E::TwilioStatusReceived {
        callback: cb(3, TwilioCallStatus::NoAnswer),
    });
    for e in all {
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(serde_json::from_value::<E>(v).unwrap(), e);
    }
}
