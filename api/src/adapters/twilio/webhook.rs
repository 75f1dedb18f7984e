//! Parsing of Twilio's webhook forms (incoming call, status callback, async AMD) into the Call
//! aggregate's types. Pure functions: the HTTP handlers check the signature first, then parse.

use aggregates::call::{AnsweredBy, CallSid, Direction, Party, StatusCallback, TwilioCallStatus};
use aggregates::common::ParseError;
use chrono::{DateTime, Utc};

/// Form parameters of a webhook, in arrival order.
pub type Params = [(String, String)];

fn get<'a>(p: &'a Params, name: &'static str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn required<'a>(p: &'a Params, name: &'static str) -> Result<&'a str, ParseError> {
    get(p, name).ok_or_else(|| ParseError::new(name, "is required"))
}

fn number<T: std::str::FromStr>(p: &Params, name: &'static str) -> Result<Option<T>, ParseError> {
    get(p, name)
        .map(|v| {
            v.parse()
                .map_err(|_| ParseError::new(name, "must be a non-negative integer"))
        })
        .transpose()
}

/// The parties and identity of a call, common to every voice webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallParams {
    pub call_sid: CallSid,
    pub account_sid: Option<String>,
    pub from: Party,
    pub to: Party,
    pub direction: Direction,
    pub status: TwilioCallStatus,
}

/// `CallSid`, `From`, `To`, `Direction`, `CallStatus` (incoming call and status callbacks).
pub fn call_params(p: &Params) -> Result<CallParams, ParseError> {
    Ok(CallParams {
        call_sid: required(p, "CallSid")?.parse()?,
        account_sid: get(p, "AccountSid").map(str::to_string),
        from: required(p, "From")
            .or_else(|_| required(p, "Caller"))?
            .parse()?,
        to: required(p, "To")
            .or_else(|_| required(p, "Called"))?
            .parse()?,
        direction: Direction::from_twilio(required(p, "Direction")?)?,
        status: required(p, "CallStatus")?.parse()?,
    })
}

/// A status callback (`SequenceNumber`, RFC 2822 `Timestamp`, `CallDuration`, `AnsweredBy`...).
pub fn status_callback(
    p: &Params,
    received_at: DateTime<Utc>,
) -> Result<StatusCallback, ParseError> {
    let timestamp = get(p, "Timestamp")
        .map(|t| {
            let t = DateTime::parse_from_rfc2822(t)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| ParseError::new("Timestamp", "must be an RFC 2822 date"))?;
            aggregates::common::plausible_instant("Timestamp", t, received_at)?;
            Ok::<_, ParseError>(t)
        })
        .transpose()?;
    Ok(StatusCallback {
        call_sid: required(p, "CallSid")?.parse()?,
        sequence_number: number(p, "SequenceNumber")?,
        status: required(p, "CallStatus")?.parse()?,
        timestamp,
        call_duration: number(p, "CallDuration")?,
        answered_by: get(p, "AnsweredBy").map(str::parse).transpose()?,
        machine_detection_duration_ms: number(p, "MachineDetectionDuration")?,
        sip_response_code: number(p, "SipResponseCode")?,
        received_at,
    })
}

/// The async answering-machine-detection callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdResult {
    pub call_sid: CallSid,
    pub answered_by: AnsweredBy,
    pub detection_duration_ms: Option<u32>,
}

pub fn amd_result(p: &Params) -> Result<AmdResult, ParseError> {
    Ok(AmdResult {
        call_sid: required(p, "CallSid")?.parse()?,
        answered_by: required(p, "AnsweredBy")?.parse()?,
        detection_duration_ms: number(p, "MachineDetectionDuration")?,
    })
}

/// A finished provider-side recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingDone {
    pub call_sid: CallSid,
    pub recording_sid: String,
    /// Twilio's media URL (no extension).
    pub recording_url: String,
}

/// The recording-status callback: `None` unless `RecordingStatus=completed`.
pub fn recording_status(p: &Params) -> Result<Option<RecordingDone>, ParseError> {
    let call_sid = required(p, "CallSid")?.parse()?;
    if get(p, "RecordingStatus") != Some("completed") {
        return Ok(None);
    }
    let recording_sid = get(p, "RecordingSid")
        .filter(|s| {
            s.len() <= 64 && s.starts_with("RE") && s.chars().all(|c| c.is_ascii_alphanumeric())
        })
        .ok_or_else(|| ParseError::new("RecordingSid", "must be a Twilio recording SID"))?
        .to_string();
    let recording_url = get(p, "RecordingUrl")
        .filter(|u| {
            u.starts_with("https://")
                && u.len() <= 2048
                && !u.chars().any(|c| c.is_control() || c.is_whitespace())
        })
        .ok_or_else(|| ParseError::new("RecordingUrl", "must be an https URL"))?
        .to_string();
    Ok(Some(RecordingDone {
        call_sid,
        recording_sid,
        recording_url,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_terminal_status_callback_parses_with_its_duration_and_amd_result() {
        let p = params(&[
            ("CallSid", SID),
            ("CallStatus", "completed"),
            ("SequenceNumber", "3"),
            ("Timestamp", "Sat, 10 Jan 2026 00:03:22 +0000"),
            ("CallDuration", "202"),
            ("AnsweredBy", "machine_end_beep"),
            ("SipResponseCode", "200"),
            ("CallbackSource", "call-progress-events"),
        ]);
        let now = Utc::now();
        let cb = status_callback(&p, now).unwrap();
        assert_eq!(cb.call_sid.as_str(), SID);
        assert_eq!(cb.sequence_number, Some(3));
        assert_eq!(cb.status, TwilioCallStatus::Completed);
        assert_eq!(
            cb.timestamp.unwrap().to_rfc3339(),
            "2026-01-10T00:03:22+00:00"
        );
        assert_eq!(cb.call_duration, Some(202));
        assert_eq!(cb.answered_by, Some(AnsweredBy::MachineEndBeep));
        assert_eq!(cb.sip_response_code, Some(200));
        assert_eq!(cb.received_at, now);
    }

    #[test]
    fn bad_status_callbacks_name_the_offending_field() {
        let base = [("CallSid", SID), ("CallStatus", "ringing")];
        for (extra, field) in [
            (("SequenceNumber", "-1"), "SequenceNumber"),
            (("Timestamp", "yesterday"), "Timestamp"),
            (("AnsweredBy", "robot"), "AnsweredBy"),
            (
                ("Timestamp", "Fri, 31 Dec 1999 23:00:00 +0000"),
                "Timestamp",
            ),
            (
                ("Timestamp", "Sat, 10 Jan 2099 00:03:22 +0000"),
                "Timestamp",
            ),
        ] {
            let mut p = params(&base);
            p.push((extra.0.into(), extra.1.into()));
            assert_eq!(status_callback(&p, Utc::now()).unwrap_err().field, field);
        }
        let p = params(&[("CallSid", SID), ("CallStatus", "exploded")]);
        assert_eq!(
            status_callback(&p, Utc::now()).unwrap_err().field,
            "CallStatus"
        );
        let p = params(&[("CallStatus", "ringing")]);
        assert_eq!(
            status_callback(&p, Utc::now()).unwrap_err().field,
            "CallSid"
        );
    }

    #[test]
    fn an_incoming_call_gives_its_parties_and_direction() {
        let p = params(&[
            ("CallSid", SID),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Direction", "inbound"),
            ("CallStatus", "ringing"),
        ]);
        let c = call_params(&p).unwrap();
        assert_eq!(c.direction, Direction::Inbound);
        assert_eq!(c.to.e164().unwrap().as_str(), "+18005551212");
        let anonymous = params(&[
            ("CallSid", SID),
            ("Caller", "anonymous"),
            ("Called", "+18005551212"),
            ("Direction", "inbound"),
            ("CallStatus", "ringing"),
        ]);
        assert_eq!(call_params(&anonymous).unwrap().from.as_str(), "anonymous");
    }

    #[test]
    fn an_async_amd_callback_parses() {
        let p = params(&[
            ("CallSid", SID),
            ("AnsweredBy", "human"),
            ("MachineDetectionDuration", "2350"),
        ]);
        let r = amd_result(&p).unwrap();
        assert_eq!(r.answered_by, AnsweredBy::Human);
        assert_eq!(r.detection_duration_ms, Some(2350));
    }
}
