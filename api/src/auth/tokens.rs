//! Access tokens (HS256 JWTs naming a session) and one-time secrets (invitations, resets).

use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Session id: logging out revokes it, and the token with it.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

const ISSUER: &str = "control-plane";

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn sign(
        &self,
        user_id: &str,
        session_id: &str,
        expires_at: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            iat: Utc::now().timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.to_string(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .ok()
            .map(|d| d.claims)
    }
}

/// A fresh random secret (32 bytes, base64url without padding).
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 hex of a secret: what gets stored instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A one-time token `<id>.<secret>`; the id locates the record, the secret proves possession.
pub fn one_time_token(id: &str) -> (String, String) {
    let secret = new_secret();
    let hash = hash_secret(&secret);
    (format!("{id}.{secret}"), hash)
}

/// Splits a one-time token into its id and the hash of its secret.
pub fn parse_one_time_token(token: &str) -> Option<(String, String)> {
    let (id, secret) = token.trim().rsplit_once('.')?;
    if id.is_empty() || id.len() > 200 || secret.len() < 20 || secret.len() > 100 {
        return None;
    }
    Some((id.to_string(), hash_secret(secret)))
}
