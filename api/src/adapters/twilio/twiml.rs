//! A small TwiML builder: the documents the webhooks answer with and the `<Dial>` used to hand a
//! live call to a human. Every text and attribute value is XML-escaped.

use std::fmt::Write;

/// Content type of a TwiML answer.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// `<Reject reason=...>`: what the caller hears. Twilio ends the call as `no-answer` for
/// `rejected` (the default) and as `busy` for `busy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Rejected,
    Busy,
}

impl RejectReason {
    fn as_str(self) -> &'static str {
        match self {
            RejectReason::Rejected => "rejected",
            RejectReason::Busy => "busy",
        }
    }
}

/// `<Connect action=...><Stream .../></Connect>`: a bidirectional media stream to a runtime.
/// Routing context goes in `parameters` (they arrive in the stream's `start.customParameters`),
/// never in the stream URL's query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connect {
    /// Requested when the stream ends (then the call continues with its TwiML).
    pub action: Option<String>,
    pub stream_url: String,
    pub stream_name: Option<String>,
    pub status_callback: Option<String>,
    pub parameters: Vec<(String, String)>,
}

/// `<Dial>` to one number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dial {
    pub number: String,
    pub caller_id: Option<String>,
    /// Seconds to let the number ring.
    pub timeout: Option<u32>,
    /// Maximum seconds of the dialled call.
    pub time_limit: Option<u32>,
    /// Requested when the dialled call ends.
    pub action: Option<String>,
}

impl Dial {
    pub fn number(number: impl Into<String>) -> Self {
        Dial {
            number: number.into(),
            ..Dial::default()
        }
    }
}

/// `<Say>` with optional voice and language.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Say {
    pub text: String,
    pub voice: Option<String>,
    pub language: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Connect(Connect),
    Say(Say),
    Dial(Dial),
    Reject(Option<RejectReason>),
    Hangup,
}

/// A `<Response>` document, built verb by verb.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    verbs: Vec<Verb>,
}

impl Response {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn verb(mut self, verb: Verb) -> Self {
        self.verbs.push(verb);
        self
    }

    pub fn connect(self, connect: Connect) -> Self {
        self.verb(Verb::Connect(connect))
    }

    pub fn say(self, text: impl Into<String>) -> Self {
        self.verb(Verb::Say(Say {
            text: text.into(),
            ..Say::default()
        }))
    }

    pub fn dial(self, dial: Dial) -> Self {
        self.verb(Verb::Dial(dial))
    }

    pub fn reject(self, reason: Option<RejectReason>) -> Self {
        self.verb(Verb::Reject(reason))
    }

    pub fn hangup(self) -> Self {
        self.verb(Verb::Hangup)
    }

    /// The XML document.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#);
        for verb in &self.verbs {
            match verb {
                Verb::Connect(c) => {
                    out.push_str("<Connect");
                    attr(&mut out, "action", c.action.as_deref());
                    out.push_str("><Stream");
                    attr(&mut out, "url", Some(&c.stream_url));
                    attr(&mut out, "name", c.stream_name.as_deref());
                    attr(&mut out, "statusCallback", c.status_callback.as_deref());
                    if c.parameters.is_empty() {
                        out.push_str("/>");
                    } else {
                        out.push('>');
                        for (name, value) in &c.parameters {
                            out.push_str("<Parameter");
                            attr(&mut out, "name", Some(name));
                            attr(&mut out, "value", Some(value));
                            out.push_str("/>");
                        }
                        out.push_str("</Stream>");
                    }
                    out.push_str("</Connect>");
                }
                Verb::Say(s) => {
                    out.push_str("<Say");
                    attr(&mut out, "voice", s.voice.as_deref());
                    attr(&mut out, "language", s.language.as_deref());
                    out.push('>');
                    out.push_str(&escape_text(&s.text));
                    out.push_str("</Say>");
                }
                Verb::Dial(d) => {
                    out.push_str("<Dial");
                    attr(&mut out, "callerId", d.caller_id.as_deref());
                    if let Some(t) = d.timeout {
                        attr(&mut out, "timeout", Some(&t.to_string()));
                    }
                    if let Some(t) = d.time_limit {
                        attr(&mut out, "timeLimit", Some(&t.to_string()));
                    }
                    attr(&mut out, "action", d.action.as_deref());
                    out.push('>');
                    out.push_str(&escape_text(&d.number));
                    out.push_str("</Dial>");
                }
                Verb::Reject(reason) => {
                    out.push_str("<Reject");
                    attr(&mut out, "reason", reason.map(RejectReason::as_str));
                    out.push_str("/>");
                }
                Verb::Hangup => out.push_str("<Hangup/>"),
            }
        }
        out.push_str("</Response>");
        out
    }
}

fn attr(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        let _ = write!(out, r#" {name}="{}""#, escape_attr(v));
    }
}

/// Characters XML 1.0 cannot carry at all (most C0 controls, lone surrogates cannot occur in
/// a Rust string, U+FFFE/U+FFFF) are dropped.
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Escapes element text.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| allowed(*c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes an attribute value (quoted with `"`); whitespace characters become character
/// references so attribute-value normalisation does not change them.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| allowed(*c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

/// Answer to an incoming call the agent takes: a media stream to the runtime.
pub fn stream(connect: Connect) -> String {
    Response::new().connect(connect).render()
}

/// `<Reject/>` (unknown number): not answered, not billed.
pub fn reject() -> String {
    Response::new().reject(None).render()
}

/// `<Reject reason="rejected"/>` (blacklisted caller).
pub fn reject_rejected() -> String {
    Response::new()
        .reject(Some(RejectReason::Rejected))
        .render()
}

/// A short message, then the call goes to the handoff number.
pub fn say_then_dial(message: &str, dial: Dial) -> String {
    Response::new().say(message).dial(dial).render()
}

/// A short message, then hang up (no handoff number configured).
pub fn say_then_hangup(message: &str) -> String {
    Response::new().say(message).hangup().render()
}

/// `<Hangup/>` alone.
pub fn hangup() -> String {
    Response::new().hangup().render()
}

/// The TwiML a live call is updated with to hand it to a human (`Twiml` of the call update).
pub fn handoff(dial: Dial) -> String {
    Response::new().dial(dial).render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event;
    use quick_xml::Reader;

    const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    /// Parses a document with an independent parser: (element, attributes) in order, plus the
    /// text of each element that has some.
    type Element = (String, Vec<(String, String)>);

    fn parse(xml: &str) -> (Vec<Element>, Vec<String>) {
        let mut reader = Reader::from_str(xml);
        let (mut elements, mut texts) = (Vec::new(), Vec::new());
        let mut text = String::new();
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Start(e) | Event::Empty(e) => {
                    let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                    let attrs = e
                        .attributes()
                        .map(|a| {
                            let a = a.expect("attribute");
                            (
                                String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                                a.normalized_value(quick_xml::XmlVersion::Explicit1_0)
                                    .expect("escaped value")
                                    .into_owned(),
                            )
                        })
                        .collect();
                    elements.push((name, attrs));
                }
                Event::Text(t) => text.push_str(&t.decode().unwrap()),
                Event::GeneralRef(r) => {
                    if let Some(c) = r.resolve_char_ref().unwrap() {
                        text.push(c);
                    } else {
                        let name = r.decode().unwrap();
                        text.push_str(match name.as_ref() {
                            "amp" => "&",
                            "lt" => "<",
                            "gt" => ">",
                            "quot" => "\"",
                            "apos" => "'",
                            other => panic!("unknown entity {other}"),
                        });
                    }
                }
                Event::End(_) if !text.is_empty() => texts.push(std::mem::take(&mut text)),
                Event::Eof => break,
                _ => {}
            }
        }
        (elements, texts)
    }

    #[test]
    fn a_stream_answer_carries_the_runtime_url_and_routing_parameters() {
        let xml = stream(Connect {
            action: Some(
                "https://cp.example.com/webhooks/twilio/connect-ended?call_id=call_1".into(),
            ),
            stream_url: "wss://rt-1.example.com/media-stream".into(),
            stream_name: None,
            status_callback: Some("https://cp.example.com/webhooks/twilio/stream-status".into()),
            parameters: vec![
                ("call_id".into(), "call_1".into()),
                ("agent_version_id".into(), "agv_3".into()),
            ],
        });
        assert_eq!(
            xml,
            format!(
                "{HEAD}<Response><Connect action=\"https://cp.example.com/webhooks/twilio/connect-ended?call_id=call_1\">\
                 <Stream url=\"wss://rt-1.example.com/media-stream\" statusCallback=\"https://cp.example.com/webhooks/twilio/stream-status\">\
                 <Parameter name=\"call_id\" value=\"call_1\"/><Parameter name=\"agent_version_id\" value=\"agv_3\"/>\
                 </Stream></Connect></Response>"
            )
        );
    }

    #[test]
    fn rejections_hangups_and_dials_render_as_twilio_expects() {
        assert_eq!(reject(), format!("{HEAD}<Response><Reject/></Response>"));
        assert_eq!(
            reject_rejected(),
            format!(r#"{HEAD}<Response><Reject reason="rejected"/></Response>"#)
        );
        assert_eq!(
            Response::new().reject(Some(RejectReason::Busy)).render(),
            format!(r#"{HEAD}<Response><Reject reason="busy"/></Response>"#)
        );
        assert_eq!(hangup(), format!("{HEAD}<Response><Hangup/></Response>"));
        assert_eq!(
            say_then_hangup("We are closed."),
            format!("{HEAD}<Response><Say>We are closed.</Say><Hangup/></Response>")
        );
        assert_eq!(
            say_then_dial("Connecting you.", Dial::number("+14158675310")),
            format!(
                "{HEAD}<Response><Say>Connecting you.</Say><Dial>+14158675310</Dial></Response>"
            )
        );
        assert_eq!(
            handoff(Dial {
                number: "+14158675310".into(),
                caller_id: Some("+18005551212".into()),
                timeout: Some(20),
                time_limit: Some(3600),
                action: None,
            }),
            format!(
                r#"{HEAD}<Response><Dial callerId="+18005551212" timeout="20" timeLimit="3600">+14158675310</Dial></Response>"#
            )
        );
    }

    #[test]
    fn hostile_values_are_escaped_and_round_trip() {
        let hostile = r#"a"b'c<d>e&f&amp;g</Stream><Hangup/>"#;
        let url = "wss://rt.example.com/ms?x=1&y=\"2\"";
        let xml = Response::new()
            .say(format!("Hello {hostile}\n"))
            .connect(Connect {
                action: Some(format!("https://cp.example.com/a?b={hostile}")),
                stream_url: url.into(),
                stream_name: Some("tab\there".into()),
                status_callback: None,
                parameters: vec![(hostile.into(), format!("{hostile}\r\nline"))],
            })
            .dial(Dial::number(hostile))
            .render();
        // Nothing hostile survives raw: no injected element, no broken attribute.
        assert!(!xml.contains("</Stream><Hangup/>"));
        let (elements, texts) = parse(&xml);
        let names: Vec<&str> = elements.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["Response", "Say", "Connect", "Stream", "Parameter", "Dial"]
        );
        assert_eq!(
            elements[2].1,
            vec![(
                "action".into(),
                format!("https://cp.example.com/a?b={hostile}")
            )]
        );
        assert_eq!(
            elements[3].1,
            vec![
                ("url".into(), url.into()),
                ("name".into(), "tab\there".into())
            ]
        );
        assert_eq!(
            elements[4].1,
            vec![
                ("name".into(), hostile.into()),
                ("value".into(), format!("{hostile}\r\nline"))
            ]
        );
        assert_eq!(
            texts,
            vec![format!("Hello {hostile}\n"), hostile.to_string()]
        );
    }

    #[test]
    fn characters_xml_cannot_carry_are_dropped() {
        let xml = Response::new().say("bell\u{7} null\u{0} ok").render();
        let (_, texts) = parse(&xml);
        assert_eq!(texts, vec!["bell null ok".to_string()]);
    }
}
