//! Google: OAuth 2.0 authorisation code with offline access (hand-written form POSTs, see
//! docs/adr/0010-oauth-by-hand.md) and Calendar `events.insert`.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{http_client, send, ProviderAnswer, ProviderError};
use crate::config::Config;

/// The scope Calendar integrations ask for.
pub const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar.events";

/// Tokens from the token endpoint (sealed at once; never logged).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    /// Present on the code exchange with `access_type=offline`; a refresh may omit it.
    pub refresh_token: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet(expires_at={}, ..)", self.expires_at)
    }
}

/// The port: Google's OAuth endpoints.
#[async_trait]
pub trait GoogleOAuth: Send + Sync {
    /// Whether a client id and secret are configured.
    fn configured(&self) -> bool;
    /// Where the browser is sent to authorise (`state` is the single-use state).
    fn authorization_url(&self, state: &str) -> String;
    async fn exchange_code(&self, code: &str) -> Result<TokenSet, ProviderError>;
    /// `invalid_grant` (the refresh token is dead) is `code == "invalid_grant"`.
    async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, ProviderError>;
}

/// The port: Calendar's `events.insert`.
#[async_trait]
pub trait CalendarApi: Send + Sync {
    async fn insert_event(
        &self,
        access_token: &str,
        calendar_id: &str,
        event: &Value,
    ) -> Result<ProviderAnswer, ProviderError>;
}

pub struct GoogleClient {
    http: reqwest::Client,
    client_id: Option<String>,
    client_secret: Option<String>,
    auth_url: String,
    token_url: String,
    calendar_base: String,
    redirect_uri: String,
}

impl GoogleClient {
    pub fn from_config(config: &Config) -> Self {
        let c = &config.integrations;
        Self {
            http: http_client(c.timeout()),
            client_id: c.google_client_id.clone(),
            client_secret: c.google_client_secret.clone(),
            auth_url: c.google_oauth_auth_url.clone(),
            token_url: c.google_oauth_token_url.clone(),
            calendar_base: c
                .google_calendar_api_base_url
                .trim_end_matches('/')
                .to_string(),
            redirect_uri: redirect_uri(config),
        }
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenSet, ProviderError> {
        let answer = send(self.http.post(&self.token_url).form(form))
            .await
            .map_err(|e| match e.body.get("error").and_then(Value::as_str) {
                Some("invalid_grant") => ProviderError {
                    code: "invalid_grant".into(),
                    message: "the provider refused the grant (revoked, expired or reused)".into(),
                    ..e
                },
                _ => e,
            })?;
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            expires_in: i64,
            refresh_token: Option<String>,
            #[serde(default)]
            scope: String,
        }
        let a: Answer = serde_json::from_value(answer.body).map_err(|e| {
            ProviderError::new("bad_response", format!("the token endpoint's answer: {e}"))
        })?;
        Ok(TokenSet {
            access_token: a.access_token,
            refresh_token: a.refresh_token,
            expires_at: Utc::now() + Duration::seconds(a.expires_in.clamp(0, 86_400)),
            scopes: a.scope.split_whitespace().map(str::to_string).collect(),
        })
    }

    fn credentials(&self) -> Result<(&str, &str), ProviderError> {
        match (&self.client_id, &self.client_secret) {
            (Some(id), Some(secret)) => Ok((id, secret)),
            _ => Err(ProviderError::new(
                "not_configured",
                "GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET are not set",
            )),
        }
    }
}

/// The OAuth redirect URI: this server's callback.
pub fn redirect_uri(config: &Config) -> String {
    format!("{}/integrations/oauth/callback", config.public_base_url())
}

#[async_trait]
impl GoogleOAuth for GoogleClient {
    fn configured(&self) -> bool {
        self.client_id.is_some() && self.client_secret.is_some()
    }

    fn authorization_url(&self, state: &str) -> String {
        let mut url = url::Url::parse(&self.auth_url).expect("GOOGLE_OAUTH_AUTH_URL is a URL");
        url.query_pairs_mut()
            .append_pair("client_id", self.client_id.as_deref().unwrap_or(""))
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", CALENDAR_SCOPE)
            .append_pair("access_type", "offline")
            .append_pair("prompt", "consent")
            .append_pair("include_granted_scopes", "true")
            .append_pair("state", state);
        url.to_string()
    }

    async fn exchange_code(&self, code: &str) -> Result<TokenSet, ProviderError> {
        let (id, secret) = self.credentials()?;
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, ProviderError> {
        let (id, secret) = self.credentials()?;
        self.token_request(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .await
    }
}

#[async_trait]
impl CalendarApi for GoogleClient {
    async fn insert_event(
        &self,
        access_token: &str,
        calendar_id: &str,
        event: &Value,
    ) -> Result<ProviderAnswer, ProviderError> {
        let mut url = url::Url::parse(&self.calendar_base)
            .map_err(|e| ProviderError::new("not_configured", e.to_string()))?;
        url.path_segments_mut()
            .map_err(|_| ProviderError::new("not_configured", "bad calendar base URL"))?
            .extend(["calendar", "v3", "calendars", calendar_id, "events"]);
        url.query_pairs_mut().append_pair("sendUpdates", "all");
        send(self.http.post(url).bearer_auth(access_token).json(event)).await
    }
}

/// Lowercase base32hex (`0-9a-v`, no padding), the alphabet Calendar event ids use.
pub fn base32hex(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The Calendar event id of a tool call: SHA-256 of (call, tool call id) in base32hex (52
/// characters), so a retried booking names the same event and cannot book twice.
pub fn event_id(call_id: &str, tool_call_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{call_id}\u{0}{tool_call_id}").as_bytes());
    base32hex(&digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32hex_matches_rfc_4648_test_vectors_in_lowercase() {
        for (input, expected) in [
            ("", ""),
            ("f", "co"),
            ("fo", "cpng"),
            ("foo", "cpnmu"),
            ("foob", "cpnmuog"),
            ("fooba", "cpnmuoj1"),
            ("foobar", "cpnmuoj1e8"),
        ] {
            assert_eq!(base32hex(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn event_ids_are_stable_per_tool_call_and_in_googles_alphabet() {
        let a = event_id("call_1", "tc_1");
        assert_eq!(a, event_id("call_1", "tc_1"));
        assert_ne!(a, event_id("call_1", "tc_2"));
        assert_ne!(a, event_id("call_2", "tc_1"));
        assert!((5..=1024).contains(&a.len()));
        assert!(a.chars().all(|c| matches!(c, '0'..='9' | 'a'..='v')));
    }
}
