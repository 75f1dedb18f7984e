//! The conversation a simulated call plays: alternating agent/customer turns and one tool call,
//! generated deterministically from the CallSid (same CallSid, same words), so replays and
//! reruns are comparable.

use serde_json::{json, Value};

/// Who speaks a turn (B.2 `transcript_segment.speaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Agent,
    Customer,
}

impl Speaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Agent => "agent",
            Speaker::Customer => "customer",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
    /// Speech-to-text confidence in [0, 1] (the agent's own words are near 1).
    pub confidence: f64,
    /// Relative length of the turn (1.0 = an average turn), from its word count; scales the
    /// call's pace so long sentences take longer than short ones.
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolPlan {
    /// Run right after this turn (0-based) was spoken.
    pub after_turn: usize,
    pub tool_name: String,
    pub arguments: Value,
    pub result: Value,
    /// Simulated latency of the tool, in milliseconds (bounded by the pace at run time).
    pub latency_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub scenario: &'static str,
    pub turns: Vec<Turn>,
    pub tool: ToolPlan,
}

struct Scenario {
    name: &'static str,
    /// Opening turns, agent first, alternating.
    opening: &'static [&'static str],
    /// The agent turn (index into the call) after which the tool runs.
    tool_after: usize,
    tool_name: &'static str,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "plan_change",
        opening: &[
            "Thank you for calling Helios Energy, this is Nova. How can I help you today?",
            "Hi, I need to update my service plan. My bill has been way too high the last two months and I'm pretty frustrated.",
            "I'm sorry to hear that. Let me look up your account so we can find a better plan for you.",
            "Sure, the account is under the number I'm calling from.",
            "Thanks, I found it. You're on the flexible rate, and a fixed plan would save you about fifteen percent.",
            "That sounds great, please switch me to the fixed plan.",
            "Done. The new plan starts with your next billing cycle, and I've emailed you the confirmation.",
            "Perfect, thank you so much, that really helps.",
        ],
        tool_after: 2,
        tool_name: "lookup_account",
    },
    Scenario {
        name: "appointment",
        opening: &[
            "Good morning, you've reached the Helios service desk. This is Nova, how can I help?",
            "Hello, I'd like to book a technician visit to check my solar panels.",
            "Of course. Let me check the calendar for the next available slots.",
            "Thanks. Mornings work best for me if possible.",
            "I have Thursday at nine or Friday at ten thirty. Which one would you prefer?",
            "Thursday at nine is ideal.",
            "Great, you're booked for Thursday at nine. You'll get a reminder the day before.",
            "Wonderful, I appreciate the quick help.",
        ],
        tool_after: 2,
        tool_name: "check_calendar",
    },
    Scenario {
        name: "outage_report",
        opening: &[
            "Helios Energy support, this is Nova speaking. What can I do for you?",
            "My power has been out since this morning and nobody told us anything. This is really annoying.",
            "I understand, that is frustrating. Let me check whether there is a known outage in your area.",
            "Okay. I'm on Harbor Street, near the old library.",
            "There is a repair crew on site already. Power should be back within two hours.",
            "Alright, that's good to know at least.",
            "I've also sent you a text message so you get an update as soon as it's restored.",
            "Okay, thanks, that's helpful.",
        ],
        tool_after: 2,
        tool_name: "check_outage",
    },
];

const FILLER_AGENT: [&str; 8] = [
    "Let me make a note of that on your account.",
    "Could you confirm the email address we have on file for you?",
    "I can also set up paperless billing if you like.",
    "Just a moment while I double check that for you.",
    "That's a good question. The change applies to all future invoices.",
    "You can also manage this any time in our mobile app.",
    "I've updated your contact preferences as you asked.",
    "Is the best number to reach you still the one you're calling from?",
];

const FILLER_CUSTOMER: [&str; 8] = [
    "Yes, that's right.",
    "It's the same email as before, the one ending in example dot com.",
    "Sure, paperless billing is fine with me.",
    "No problem, take your time.",
    "Okay, and will that also change my autopay amount?",
    "Good, I do use the app sometimes.",
    "Thanks, I appreciate that.",
    "Yes, this number is best.",
];

const CLOSING_AGENT: &str =
    "Is there anything else I can help you with today? Thank you for calling Helios, goodbye!";
const CLOSING_CUSTOMER: &str = "No, that's everything. Thanks again for your help, bye!";

/// FNV-1a: a stable 64-bit hash of the CallSid.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64: small, deterministic, good enough for picking lines and jitter.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: &str) -> Self {
        Rng(fnv1a(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + unit * (hi - lo)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn speaker_of(index: usize) -> Speaker {
    if index.is_multiple_of(2) {
        Speaker::Agent
    } else {
        Speaker::Customer
    }
}

/// Average words per turn: a turn of this many words has weight 1.
const AVERAGE_WORDS: f64 = 12.0;

impl Script {
    /// `segments` turns (agent first, alternating), generated from `call_sid`. Calls of three
    /// turns or more end with the closing exchange; longer calls get filler turns between the
    /// scenario's opening and the closing.
    pub fn generate(call_sid: &str, segments: usize, caller: &str) -> Script {
        let mut rng = Rng::seeded(call_sid);
        let scenario = &SCENARIOS[rng.below(SCENARIOS.len())];
        let texts: Vec<String> = (0..segments)
            .map(|i| {
                let speaker = speaker_of(i);
                let closing = segments >= 3 && i + 2 >= segments;
                if closing {
                    // The last two turns: the agent's goodbye and the customer's thanks, in
                    // whichever order the parity gives.
                    return match speaker {
                        Speaker::Agent => CLOSING_AGENT,
                        Speaker::Customer => CLOSING_CUSTOMER,
                    }
                    .to_string();
                }
                if let Some(t) = scenario.opening.get(i) {
                    return t.to_string();
                }
                match speaker {
                    Speaker::Agent => FILLER_AGENT[rng.below(FILLER_AGENT.len())],
                    Speaker::Customer => FILLER_CUSTOMER[rng.below(FILLER_CUSTOMER.len())],
                }
                .to_string()
            })
            .collect();
        let turns = texts
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let speaker = speaker_of(i);
                let confidence = match speaker {
                    Speaker::Agent => rng.range_f64(0.97, 1.0),
                    Speaker::Customer => rng.range_f64(0.78, 0.97),
                };
                let words = text.split_whitespace().count() as f64;
                Turn {
                    speaker,
                    confidence: (confidence * 100.0).round() / 100.0,
                    weight: (words / AVERAGE_WORDS).clamp(0.4, 2.5),
                    text,
                }
            })
            .collect();
        let suffix = &call_sid[call_sid.len().saturating_sub(8)..];
        let (arguments, result) = match scenario.tool_name {
            "lookup_account" => (
                json!({"phone_e164": caller}),
                json!({"ok": true, "account_id": format!("acc_{suffix}"), "plan": "flexible"}),
            ),
            "check_calendar" => (
                json!({"service": "solar_inspection", "days_ahead": 7}),
                json!({"ok": true, "slots": ["thursday 09:00", "friday 10:30"]}),
            ),
            _ => (
                json!({"phone_e164": caller, "street": "Harbor Street"}),
                json!({"ok": true, "outage": true, "eta_minutes": 120}),
            ),
        };
        Script {
            scenario: scenario.name,
            turns,
            tool: ToolPlan {
                after_turn: scenario.tool_after,
                tool_name: scenario.tool_name.to_string(),
                arguments,
                result,
                latency_ms: 80 + rng.below(320) as u64,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    #[test]
    fn the_same_call_sid_always_gives_the_same_conversation() {
        let a = Script::generate(SID, 30, "+15550100000");
        let b = Script::generate(SID, 30, "+15550100000");
        assert_eq!(a, b);
        let other = Script::generate("CAffffffffffffffffffffffffffffffff", 30, "+15550100000");
        assert_ne!(a.turns, other.turns);
    }

    #[test]
    fn turns_alternate_agent_first_and_the_call_ends_with_the_closing_exchange() {
        for n in [0, 1, 2, 3, 4, 8, 9, 12, 31, 200] {
            let s = Script::generate(SID, n, "+15550100000");
            assert_eq!(s.turns.len(), n);
            for (i, t) in s.turns.iter().enumerate() {
                let want = if i % 2 == 0 {
                    Speaker::Agent
                } else {
                    Speaker::Customer
                };
                assert_eq!(t.speaker, want, "turn {i} of {n}");
                assert!(!t.text.is_empty());
                assert!((0.0..=1.0).contains(&t.confidence));
                assert!((0.4..=2.5).contains(&t.weight));
            }
            if n >= 3 {
                let last_two: Vec<&str> =
                    s.turns[n - 2..].iter().map(|t| t.text.as_str()).collect();
                assert!(last_two.contains(&CLOSING_AGENT) && last_two.contains(&CLOSING_CUSTOMER));
            }
        }
    }

    #[test]
    fn the_tool_runs_after_the_agent_says_it_will_look_something_up() {
        for seed in 0..20 {
            let sid = format!("CA{seed:032x}");
            let s = Script::generate(&sid, 12, "+15550100000");
            assert_eq!(s.turns[s.tool.after_turn].speaker, Speaker::Agent);
            assert!(s.turns[s.tool.after_turn].text.contains("Let me"));
            assert!((80..400).contains(&s.tool.latency_ms));
            assert_eq!(s.tool.result["ok"], true);
        }
    }
}
