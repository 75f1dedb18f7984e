//! Value types and runtime payloads: parsing, limits, wire names.

use super::*;

#[test]
fn runtime_events_parse_from_the_appendix_b_envelope() {
    #[derive(Deserialize)]
    struct Envelope {
        #[allow(dead_code)]
        id: String,
        #[allow(dead_code)]
        idempotency_key: String,
        #[serde(flatten)]
        event: RuntimeEvent,
    }
    let e: Envelope = serde_json::from_value(json!({
        "id": "evt_1", "type": "transcript_segment", "occurred_at": "2026-01-10T00:00:05Z",
        "idempotency_key": "rt_1:CA1:seg:000123",
        "payload": {"segment_id": "seg_1", "speaker": "customer", "text": "Hello",
                    "started_at": "2026-01-10T00:00:03Z", "ended_at": "2026-01-10T00:00:05Z",
                    "confidence": 0.91}
    }))
    .unwrap();
    assert_eq!(e.event.type_name(), "transcript_segment");
    assert!(e.event.validate().is_ok());
    let ended: RuntimeEvent = serde_json::from_value(json!({"type": "call_ended", "payload":
        {"ended_at": "2026-01-10T00:10:00Z", "duration_seconds": 600,
         "final_status": "completed", "hangup_by": "customer"}}))
    .unwrap();
    assert!(matches!(
        ended,
        RuntimeEvent::CallEnded {
            final_status: TerminalStatus::Completed,
            ..
        }
    ));
    for bad in [
        json!({"type": "call_ended", "payload": {"ended_at": "2026-01-10T00:10:00Z", "final_status": "in_progress"}}),
        json!({"type": "teleport", "payload": {}}),
        json!({"type": "runtime_error", "payload": {"component": "gpu", "message": "x"}}),
    ] {
        assert!(
            serde_json::from_value::<RuntimeEvent>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn oversized_or_inconsistent_runtime_payloads_are_refused() {
    let mut s = TranscriptSegment {
        segment_id: "seg_1".into(),
        speaker: Speaker::Agent,
        text: "x".repeat(limits::SEGMENT_TEXT + 1),
        started_at: t(0),
        ended_at: t(1),
        confidence: None,
    };
    let err = RuntimeEvent::TranscriptSegment(s.clone())
        .validate()
        .unwrap_err();
    assert_eq!(err.field, "text");
    s.text = "ok".into();
    s.ended_at = t(-1);
    let err = RuntimeEvent::TranscriptSegment(s.clone())
        .validate()
        .unwrap_err();
    assert_eq!(err.field, "ended_at");
    s.ended_at = t(1);
    s.confidence = Some(1.2);
    assert_eq!(
        RuntimeEvent::TranscriptSegment(s)
            .validate()
            .unwrap_err()
            .field,
        "confidence"
    );
    let big = RuntimeEvent::ToolCalled {
        tool_name: "t".into(),
        arguments: json!({"blob": "y".repeat(limits::TOOL_JSON_BYTES)}),
    };
    assert_eq!(big.validate().unwrap_err().field, "arguments");
}

#[test]
fn runtime_payloads_postgres_could_not_store_are_refused_naming_the_field() {
    let segment = |text: &str, id: &str| {
        RuntimeEvent::TranscriptSegment(TranscriptSegment {
            segment_id: id.into(),
            speaker: Speaker::Customer,
            text: text.into(),
            started_at: t(0),
            ended_at: t(1),
            confidence: Some(0.5),
        })
    };
    assert!(segment("line one\nline two\tand a tab", "seg_1")
        .validate()
        .is_ok());
    for (event, field) in [
        (segment("nul \0 inside", "seg_1"), "text"),
        (segment("bell \u{7}", "seg_1"), "text"),
        (segment("ok", "seg\n1"), "segment_id"),
        (
            RuntimeEvent::ToolCalled {
                tool_name: "lookup".into(),
                arguments: json!({"deep": {"x": ["a\0b"]}}),
            },
            "arguments",
        ),
        (
            RuntimeEvent::ToolResult {
                tool_name: "lookup".into(),
                result: json!({"k\0": 1}),
                error: Value::Null,
            },
            "result",
        ),
        (
            RuntimeEvent::ToolCalled {
                tool_name: "look\u{0}up".into(),
                arguments: Value::Null,
            },
            "tool_name",
        ),
        (
            RuntimeEvent::RecordingAvailable(RecordingRef {
                recording_url: "javascript:alert(1)".into(),
                storage_provider: "s3".into(),
                content_type: "audio/wav".into(),
            }),
            "recording_url",
        ),
        (
            RuntimeEvent::RuntimeError {
                component: RuntimeComponent::Llm,
                message: "x\0".into(),
                fatal: false,
            },
            "message",
        ),
        (
            RuntimeEvent::CallEnded {
                ended_at: t(0),
                duration_seconds: None,
                final_status: TerminalStatus::Completed,
                hangup_by: None,
                segment_count: Some(u64::MAX),
            },
            "segment_count",
        ),
    ] {
        assert_eq!(event.validate().unwrap_err().field, field, "{event:?}");
    }
    let mut deep = json!(1);
    for _ in 0..=limits::TOOL_JSON_DEPTH {
        deep = json!([deep]);
    }
    let nested = RuntimeEvent::ToolCalled {
        tool_name: "t".into(),
        arguments: deep,
    };
    assert_eq!(nested.validate().unwrap_err().field, "arguments");
}

#[test]
fn runtime_payload_times_must_lie_in_a_sane_window_around_now() {
    let now = t(0);
    let started = |at| RuntimeEvent::CallStarted { started_at: at };
    assert!(started(t(-3600)).validate_times(now).is_ok());
    assert!(started(t(23 * 3600)).validate_times(now).is_ok());
    assert_eq!(
        started(t(25 * 3600)).validate_times(now).unwrap_err().field,
        "started_at"
    );
    let ancient = DateTime::parse_from_rfc3339("1999-12-31T23:59:59Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        started(ancient).validate_times(now).unwrap_err().field,
        "started_at"
    );
    let segment = RuntimeEvent::TranscriptSegment(TranscriptSegment {
        segment_id: "seg_1".into(),
        speaker: Speaker::Agent,
        text: "hi".into(),
        started_at: t(0),
        ended_at: t(3 * 24 * 3600),
        confidence: None,
    });
    assert_eq!(segment.validate_times(now).unwrap_err().field, "ended_at");
    let ended = RuntimeEvent::CallEnded {
        ended_at: ancient,
        duration_seconds: Some(1),
        final_status: TerminalStatus::Completed,
        hangup_by: None,
        segment_count: None,
    };
    assert_eq!(ended.validate_times(now).unwrap_err().field, "ended_at");
}

#[test]
fn twilio_values_parse_into_domain_values() {
    assert!("CA0123456789abcdef0123456789ABCDEF"
        .parse::<CallSid>()
        .is_ok());
    for bad in [
        "CA123",
        "XX0123456789abcdef0123456789abcdef",
        "CA0123456789abcdef0123456789abcdeg",
    ] {
        assert!(bad.parse::<CallSid>().is_err(), "{bad}");
    }
    assert_eq!(
        Direction::from_twilio("outbound-api").unwrap(),
        Direction::Outbound
    );
    assert_eq!(
        Direction::from_twilio("trunking-terminating").unwrap(),
        Direction::Inbound
    );
    assert!(Direction::from_twilio("sideways").is_err());
    assert_eq!(
        "no-answer"
            .parse::<TwilioCallStatus>()
            .unwrap()
            .to_call_status(),
        CallStatus::NoAnswer
    );
    assert_eq!(
        "in-progress"
            .parse::<TwilioCallStatus>()
            .unwrap()
            .to_call_status(),
        CallStatus::InProgress
    );
    assert_eq!(
        "initiated"
            .parse::<TwilioCallStatus>()
            .unwrap()
            .to_call_status(),
        CallStatus::Queued
    );
    assert_eq!(
        "machine_end_beep".parse::<AnsweredBy>().unwrap(),
        AnsweredBy::MachineEndBeep
    );
    assert_eq!("client:alice".parse::<Party>().unwrap().e164(), None);
    assert!(
        "+1 415 867 5309".parse::<Party>().is_err(),
        "spaces are not part of a provider address"
    );
    assert_eq!(
        serde_json::to_value(CallStatus::NoAnswer).unwrap(),
        json!("no_answer")
    );
    assert!(CallStatus::ALL.iter().filter(|s| s.is_terminal()).count() == 5);
}

#[test]
fn call_enums_keep_their_wire_names() {
    use crate::common::assert_wire_form;
    assert_wire_form(
        CallStatus::ALL,
        &[
            "queued",
            "ringing",
            "in_progress",
            "handoff_initiated",
            "handoff_completed",
            "completed",
            "busy",
            "failed",
            "no_answer",
            "canceled",
        ],
    );
    assert_wire_form(
        TerminalStatus::ALL,
        &["completed", "busy", "failed", "no_answer", "canceled"],
    );
    assert_eq!("no-answer".parse(), Ok(TerminalStatus::NoAnswer));
    assert_wire_form(
        TwilioCallStatus::ALL,
        &[
            "queued",
            "initiated",
            "ringing",
            "in-progress",
            "completed",
            "busy",
            "failed",
            "no-answer",
            "canceled",
        ],
    );
    assert_wire_form(Direction::ALL, &["inbound", "outbound"]);
    assert_wire_form(
        AnsweredBy::ALL,
        &[
            "human",
            "machine_start",
            "machine_end_beep",
            "machine_end_silence",
            "machine_end_other",
            "fax",
            "unknown",
        ],
    );
    assert_wire_form(MachineDetection::ALL, &["enable", "detect_message_end"]);
    assert_eq!(
        "DetectMessageEnd".parse(),
        Ok(MachineDetection::DetectMessageEnd)
    );
    assert_wire_form(Speaker::ALL, &["customer", "agent", "system"]);
    assert_wire_form(HangupBy::ALL, &["customer", "agent", "system", "unknown"]);
    assert_wire_form(RuntimeComponent::ALL, &["stt", "tts", "llm", "transport"]);
    assert_wire_form(SentimentLabel::ALL, &["positive", "neutral", "negative"]);
    assert_wire_form(
        OpenedBy::ALL,
        &[
            "incoming_webhook",
            "status_callback",
            "runtime",
            "outbound_request",
        ],
    );
    assert_wire_form(
        RuntimeUnavailableReason::ALL,
        &["missing", "not_ready", "draining"],
    );
    assert_wire_form(
        Placement::ALL,
        &["not_requested", "requested", "placed", "failed"],
    );
    assert_eq!(
        "ringing".parse::<Direction>().unwrap_err(),
        crate::common::ParseError::new("direction", "\"ringing\" is not one of inbound, outbound")
    );
}

#[test]
fn a_stored_snapshot_still_decodes() {
    // A call's state as snapshotted before the enums shared one macro.
    let stored = json!({
        "id": "call_2", "establishment_id": "est_1", "direction": "outbound", "call_sid": null,
        "agent_id": "agt_1", "agent_version_id": null, "status": "queued",
        "opened_at": "2026-01-10T00:00:00Z", "routing": null, "placement": "requested",
        "handoff": {"phase": "none"},
        "twilio": {"seen": [], "statuses_without_sequence": 0, "callbacks": 0},
        "answered_by": null, "answered_by_final": false, "duration_seconds": null,
        "duration_from_twilio": false,
        "runtime": {"started": false, "connected": false, "ended": false, "segments": 0,
                    "expected_segments": null, "tool_calls": 0, "tool_results": 0,
                    "pending_tools": [], "recordings": 0, "errors": 0},
        "sentiment_segments": null, "summary_segments": null, "reaped": false
    });
    let call: Call = serde_json::from_value(stored.clone()).unwrap();
    // Queued before the call recorded the agent version it is made with.
    let mut expected = replay(outbound_requested());
    expected.agent_version_id = None;
    assert_eq!(call, expected);
    assert_eq!(serde_json::to_value(&call).unwrap(), stored);
}
