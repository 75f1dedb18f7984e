//! Value types shared by the aggregates: parsed once at the boundary, trusted afterwards.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// Role of a user inside one establishment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            _ => Err(ParseError::new(
                "role",
                "must be one of admin, operator, viewer",
            )),
        }
    }
}

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

macro_rules! string_newtype_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

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

/// A phone number in E.164 form, validated with libphonenumber's metadata.
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

impl FromStr for E164 {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if !t.starts_with('+') {
            return Err(ParseError::new(
                "e164",
                format!("{t:?} must be in international form, starting with +"),
            ));
        }
        if t.len() > 32 {
            return Err(ParseError::new("e164", "is too long"));
        }
        let n = phonenumber::parse(None, t)
            .map_err(|e| ParseError::new("e164", format!("{t:?} is not a phone number: {e}")))?;
        if !phonenumber::is_valid(&n) {
            return Err(ParseError::new(
                "e164",
                format!("{t:?} is not a valid phone number"),
            ));
        }
        Ok(E164(n.format().mode(phonenumber::Mode::E164).to_string()))
    }
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
