//! Value types shared by the aggregates: parsed once at the boundary, trusted afterwards.

use std::str::FromStr;

/// A uniqueness rule that spans aggregates (an e-mail address, a phone number, a host port).
///
/// Events declare the claims they make; the event store takes them in the same transaction as
/// the append, so two concurrent commands can never both hold one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClaimOp {
    /// Take `value` in `scope` for the aggregate that appends the event.
    Claim { scope: &'static str, value: String },
    /// Give `value` in `scope` back (only if this aggregate holds it).
    Release { scope: &'static str, value: String },
}

/// Implemented by every event enum: which cross-aggregate uniqueness claims an event makes.
pub trait UniqueClaims {
    fn unique_claims(&self) -> Vec<ClaimOp> {
        Vec::new()
    }
}

wire_enum!(
    /// Role of a user inside one establishment.
    Role, "role", unknown = (|_| "must be one of admin, operator, viewer".to_string()) {
        Admin => "admin",
        Operator => "operator",
        Viewer => "viewer",
    }
);

/// Why a value could not be parsed; `field` names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParseError {
    pub field: &'static str,
    pub message: String,
}

impl ParseError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// What characters a piece of untrusted text may hold (beyond printable ones). NUL is never
/// allowed: PostgreSQL refuses it in `text` and `jsonb`, so a stored event carrying one could
/// never be projected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// An identifier, name or URL: no control characters and no whitespace but the space.
    Token,
    /// One line of text: no control characters.
    Line,
    /// Free text (a transcript, a message): tabs and line breaks, no other control character.
    Prose,
}

/// Checks untrusted text for the characters `kind` does not allow.
pub fn check_text(field: &'static str, s: &str, kind: TextKind) -> Result<(), ParseError> {
    let bad = |c: char| match kind {
        TextKind::Token => c.is_control() || (c.is_whitespace() && c != ' '),
        TextKind::Line => c.is_control(),
        TextKind::Prose => c.is_control() && !matches!(c, '\t' | '\n' | '\r'),
    };
    if s.contains('\0') {
        return Err(ParseError::new(field, "must not contain NUL characters"));
    }
    if s.chars().any(bad) {
        return Err(ParseError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The earliest instant accepted from outside (runtimes, webhooks).
pub fn earliest_plausible_instant() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01 is representable")
}

/// How far ahead of `now` an instant from outside may be (clock skew, not time travel).
pub const MAX_FUTURE_SKEW_HOURS: i64 = 24;

/// Checks that an instant from outside lies in a sane window: not before 2000-01-01, at most
/// a day after `now` (so projectors and workers never meet dates they cannot store or add to).
pub fn plausible_instant(
    field: &'static str,
    t: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ParseError> {
    if t < earliest_plausible_instant() {
        return Err(ParseError::new(field, "must not be before 2000-01-01"));
    }
    let latest = now.checked_add_signed(chrono::TimeDelta::hours(MAX_FUTURE_SKEW_HOURS));
    if latest.is_some_and(|l| t > l) {
        return Err(ParseError::new(
            field,
            format!("must not be more than {MAX_FUTURE_SKEW_HOURS} hours in the future"),
        ));
    }
    Ok(())
}

/// Serialises a value type as the string `as_str` gives, deserialises it through `FromStr`
/// (the `ParseError` becomes the serde error), and displays it as that string.
macro_rules! string_newtype_serde {
    ($t:ty) => {
        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_newtype_serde;

/// Defines a plain enum with a wire form: `ALL`, `as_str`, `FromStr` (also accepting the
/// aliases after `|`), `Display`, and serde as the wire string (so stored JSON keeps its
/// spelling). An unknown string is a [`ParseError`] on `$field` saying
/// `"x" is not one of a, b`, or the message that the `unknown` closure makes of it.
macro_rules! wire_enum {
    (@unknown $s:ident, [$($w:literal),*]) => {
        format!("{:?} is not one of {}", $s, [$($w),*].join(", "))
    };
    (@unknown $s:ident, [$($w:literal),*], $unknown:expr) => {
        ($unknown)($s)
    };
    ($(#[$m:meta])* $t:ident, $field:literal $(, unknown = ($unknown:expr))? {
        $($(#[$vm:meta])* $v:ident => $s:literal $(| $alias:literal)*),* $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $t { $($(#[$vm])* $v),* }
        impl $t {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$t] = &[$($t::$v),*];
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($t::$v => $s),* }
            }
        }
        impl ::std::str::FromStr for $t {
            type Err = $crate::common::ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s $(| $alias)* => Ok($t::$v),)*
                    _ => Err($crate::common::ParseError::new(
                        $field,
                        $crate::common::wire_enum!(@unknown s, [$($s),*] $(, $unknown)?),
                    )),
                }
            }
        }
        $crate::common::string_newtype_serde!($t);
    };
}
pub(crate) use wire_enum;

/// An e-mail address, trimmed and lower-cased (addresses compare case-insensitively here).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

impl Email {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Email {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let err = |m: &str| ParseError::new("email", m);
        if s.len() > 254 {
            return Err(err("is longer than 254 characters"));
        }
        let (local, domain) = s.split_once('@').ok_or_else(|| err("must contain an @"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(err("has an empty or over-long local part"));
        }
        if domain.contains('@') {
            return Err(err("must contain exactly one @"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.len() > 63
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        {
            return Err(err("has an invalid domain"));
        }
        if local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"(),:;<>[\\]".contains(c))
        {
            return Err(err("has invalid characters"));
        }
        Ok(Email(s))
    }
}
string_newtype_serde!(Email);

/// A phone number in E.164 form: it parses and has a length that numbers of its region can have
/// (libphonenumber's metadata). Whether the range is currently assigned is not asked, so the
/// reserved +1 555 01xx examples and Twilio's test numbers (+1 500 555 …) are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// ISO 3166 region of the number, when libphonenumber knows it.
    pub fn region(&self) -> Option<String> {
        let n = phonenumber::parse(None, &self.0).ok()?;
        n.country().id().map(|id| format!("{id:?}"))
    }
}

impl E164 {
    /// Reads a number as a spreadsheet holds it: international (`+…`, `00…`) or in the
    /// national format of `region` (ISO 3166, e.g. `BR` for `(11) 91234-5678`).
    pub fn parse_in_region(raw: &str, region: Option<&str>) -> Result<E164, ParseError> {
        let t = raw.trim();
        if t.starts_with('+') {
            return t.parse();
        }
        if let Some(rest) = t.strip_prefix("00") {
            return format!("+{rest}").parse();
        }
        if t.is_empty() {
            return Err(ParseError::new("phone", "is empty"));
        }
        if t.len() > 32 || !t.chars().all(|c| c.is_ascii_digit() || " -().".contains(c)) {
            return Err(ParseError::new(
                "phone",
                format!("{t:?} may contain only digits, spaces and - ( ) ."),
            ));
        }
        let Some(id) = region.and_then(|r| r.parse::<phonenumber::country::Id>().ok()) else {
            return Err(ParseError::new(
                "phone",
                format!("{t:?} is not in international form and the establishment has no region"),
            ));
        };
        let n = phonenumber::parse(Some(id), t)
            .map_err(|e| ParseError::new("phone", format!("{t:?} is not a phone number: {e}")))?;
        // Checked here rather than by parsing the formatted number again (imports parse
        // hundreds of thousands of numbers).
        let e164 = n.format().mode(phonenumber::Mode::E164).to_string();
        let code = n.code().value();
        let digits = e164.len() - 1 - code.to_string().len();
        if !possible_length(&n, code, digits) {
            return Err(ParseError::new(
                "phone",
                format!("{t:?} is not a possible phone number: numbers under +{code} do not have {digits} digits"),
            ));
        }
        Ok(E164(e164))
    }
}

impl FromStr for E164 {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let Some(rest) = t.strip_prefix('+') else {
            return Err(ParseError::new(
                "e164",
                format!("{t:?} must be in international form, starting with +"),
            ));
        };
        if t.len() > 32 {
            return Err(ParseError::new("e164", "is too long"));
        }
        // libphonenumber reads letters as keypad digits (vanity numbers); a number here is digits.
        if !rest
            .chars()
            .all(|c| c.is_ascii_digit() || " -().".contains(c))
        {
            return Err(ParseError::new(
                "e164",
                format!("{t:?} may contain only digits, spaces and - ( ) . after the +"),
            ));
        }
        let n = phonenumber::parse(None, t)
            .map_err(|e| ParseError::new("e164", format!("{t:?} is not a phone number: {e}")))?;
        let e164 = n.format().mode(phonenumber::Mode::E164).to_string();
        let code = n.code().value();
        let digits = e164.len() - 1 - code.to_string().len();
        if !possible_length(&n, code, digits) {
            return Err(ParseError::new(
                "e164",
                format!("{t:?} is not a possible phone number: numbers under +{code} do not have {digits} digits"),
            ));
        }
        Ok(E164(e164))
    }
}

/// Whether numbers of `n`'s region can have `digits` national digits when dialled from anywhere
/// (the lengths of every number type; local-only lengths do not count). The region is the one
/// the number's digits point to, else the main region of its country code, as libphonenumber's
/// possible-number check does (the `phonenumber` crate does not expose that check).
fn possible_length(n: &phonenumber::PhoneNumber, code: u16, digits: usize) -> bool {
    use phonenumber::metadata::DATABASE;
    let main = || {
        let regions = DATABASE.by_code(&code)?;
        regions
            .iter()
            .find(|m| m.is_main_country_for_code())
            .or(regions.first())
            .copied()
    };
    let Some(meta) = n.metadata(&DATABASE).or_else(main) else {
        return false;
    };
    let d = meta.descriptors();
    [
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ]
    .into_iter()
    .flatten()
    .any(|kind| {
        kind.possible_length()
            .iter()
            .any(|&l| usize::from(l) == digits)
    })
}
string_newtype_serde!(E164);

/// An IANA time-zone name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timezone(pub chrono_tz::Tz);

impl Timezone {
    pub fn as_str(&self) -> &'static str {
        self.0.name()
    }
}

impl FromStr for Timezone {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<chrono_tz::Tz>().map(Timezone).map_err(|_| {
            ParseError::new(
                "timezone",
                format!("{s:?} is not an IANA time zone (e.g. America/Sao_Paulo)"),
            )
        })
    }
}
string_newtype_serde!(Timezone);

/// A BCP 47 language tag, with conventional casing (`pt-BR`, `zh-Hant-TW`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locale(String);

impl Locale {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Locale {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::new("locale", format!("{s:?} is not a BCP 47 language tag"));
        if s.is_empty() || s.len() > 64 {
            return Err(err());
        }
        let tag = language_tags::LanguageTag::parse(s).map_err(|_| err())?;
        tag.validate().map_err(|_| err())?;
        // Conventional casing: language lower, script title, region upper.
        let mut out = String::with_capacity(s.len());
        let mut after_singleton = false;
        for (i, part) in s.split('-').enumerate() {
            if i > 0 {
                out.push('-');
            }
            let formatted = if i == 0 || after_singleton {
                part.to_ascii_lowercase()
            } else if part.len() == 1 {
                after_singleton = true;
                part.to_ascii_lowercase()
            } else if part.len() == 4 && part.chars().all(|c| c.is_ascii_alphabetic()) {
                let lower = part.to_ascii_lowercase();
                let mut c = lower.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            } else if part.len() == 2
                || (part.len() == 3 && part.chars().all(|c| c.is_ascii_digit()))
            {
                part.to_ascii_uppercase()
            } else {
                part.to_ascii_lowercase()
            };
            out.push_str(&formatted);
        }
        Ok(Locale(out))
    }
}
string_newtype_serde!(Locale);

/// Trimmed free text of 1..=`max` characters without control characters (names, labels).
pub fn bounded_text(field: &'static str, s: &str, max: usize) -> Result<String, ParseError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ParseError::new(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(ParseError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if t.chars().any(|c| c.is_control()) {
        return Err(ParseError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(t.to_string())
}

/// Checks an enum's wire form: `all` displays as `names` in order, and each name parses back
/// to its variant and (de)serialises as that JSON string.
#[cfg(test)]
pub(crate) fn assert_wire_form<T>(all: &[T], names: &[&str])
where
    T: Copy
        + PartialEq
        + std::fmt::Debug
        + std::fmt::Display
        + FromStr<Err = ParseError>
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let shown: Vec<String> = all.iter().map(T::to_string).collect();
    assert_eq!(shown, names);
    for (v, name) in all.iter().zip(names) {
        assert_eq!(name.parse::<T>(), Ok(*v), "{name}");
        let json = serde_json::to_value(v).unwrap();
        assert_eq!(json, serde_json::Value::String(name.to_string()));
        assert_eq!(serde_json::from_value::<T>(json).unwrap(), *v, "{name}");
    }
    assert!("no such name".parse::<T>().is_err());
    assert!(serde_json::from_value::<T>(serde_json::json!("no such name")).is_err());
}

/// Implements `cqrs_es::DomainEvent` for an event enum: `event_type` is the variant name (it
/// never changes once stored) and every variant is at version 1.0 until it gets an upcaster.
#[macro_export]
macro_rules! domain_event {
    ($t:ident { $($v:ident),* $(,)? }) => {
        impl cqrs_es::DomainEvent for $t {
            fn event_type(&self) -> String {
                match self { $( $t::$v { .. } => stringify!($v).to_string(), )* }
            }
            fn event_version(&self) -> String {
                "1.0".to_string()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            " Admin@Example.COM ".parse::<Email>().unwrap().as_str(),
            "admin@example.com"
        );
        for bad in ["", "a", "a@", "@b.c", "a@b", "a@@b.c", "a b@c.d", "a@-b.c"] {
            assert!(bad.parse::<Email>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn phone_numbers_are_normalised_to_e164() {
        assert_eq!(
            "+1 415 867 5309".parse::<E164>().unwrap().as_str(),
            "+14158675309"
        );
        assert_eq!(
            "+55 11 91234-5678".parse::<E164>().unwrap().as_str(),
            "+5511912345678"
        );
        for bad in ["4158675309", "+1", "+999999", "+1415867530912345", "hello"] {
            assert!(bad.parse::<E164>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn possible_numbers_are_accepted_even_when_not_assigned() {
        // The spec's examples (+1 555 01xx is reserved for fiction) and Twilio's test numbers.
        for ok in [
            "+15551234567",
            "+15553012211",
            "+15550102244",
            "+15550001111",
            "+15005550006",
            "+15005550001",
        ] {
            assert_eq!(ok.parse::<E164>().map(|n| n.0), Ok(ok.to_string()));
        }
        assert_eq!(
            " +1 (555) 301-2211 ".parse::<E164>().unwrap().as_str(),
            "+15553012211"
        );
        assert_eq!(
            "+44 20 7183 8750".parse::<E164>().unwrap().as_str(),
            "+442071838750"
        );
        assert_eq!(
            "+39 06 1234 5678".parse::<E164>().unwrap().as_str(),
            "+390612345678",
            "the leading zero of an Italian number is part of it"
        );
    }

    #[test]
    fn malformed_or_impossible_numbers_are_refused() {
        for bad in [
            "+1555",              // too short for +1
            "+15551234567890123", // too long for +1
            "+1555123456",        // 9 digits under +1
            "+1555222",           // 7 digits: only dialable locally
            "+4420718387",        // 8 digits under +44
            "+999123456",         // no such country code
            "15551234567",        // no leading +
            "+1 (555) abc",       // letters
            "+1 555 123 4567 ext. 89",
            "+",
            "",
        ] {
            let err = bad.parse::<E164>().unwrap_err();
            assert_eq!(err.field, "e164", "{bad}");
        }
        assert_eq!(
            "+1555".parse::<E164>().unwrap_err().message,
            "\"+1555\" is not a possible phone number: numbers under +1 do not have 3 digits"
        );
    }

    #[test]
    fn roles_keep_their_wire_names_and_their_message() {
        assert_wire_form(Role::ALL, &["admin", "operator", "viewer"]);
        assert_eq!(
            "owner".parse::<Role>(),
            Err(ParseError::new(
                "role",
                "must be one of admin, operator, viewer"
            ))
        );
        // As stored in an establishment's stream.
        let stored = serde_json::json!(
            {"MemberRoleChanged": {"user_id": "usr_1", "from": "viewer", "to": "admin"}}
        );
        assert_eq!(
            serde_json::from_value::<crate::establishment::EstablishmentEvent>(stored).unwrap(),
            crate::establishment::EstablishmentEvent::MemberRoleChanged {
                user_id: "usr_1".into(),
                from: Role::Viewer,
                to: Role::Admin,
            }
        );
    }

    #[test]
    fn time_zones_come_from_the_iana_database() {
        assert!("America/Sao_Paulo".parse::<Timezone>().is_ok());
        assert!("Mars/Olympus".parse::<Timezone>().is_err());
    }

    #[test]
    fn locales_are_bcp47_with_conventional_casing() {
        assert_eq!("pt-br".parse::<Locale>().unwrap().as_str(), "pt-BR");
        assert_eq!(
            "zh-hant-tw".parse::<Locale>().unwrap().as_str(),
            "zh-Hant-TW"
        );
        assert_eq!("en".parse::<Locale>().unwrap().as_str(), "en");
        for bad in ["", "english please", "e", "pt_BR", "-en"] {
            assert!(bad.parse::<Locale>().is_err(), "{bad} should be rejected");
        }
    }
}
