//! Short-lived signed links to call recordings: an `<audio>` element can load them without a
//! bearer token; the signature (keyed from the JWT secret by a separate derivation) and the
//! expiry are the only credentials.

use base64::Engine;
use chrono::Utc;
use sha2::{Digest, Sha256};

/// Signs and checks the short-lived links to recordings.
pub struct RecordingLinks {
    key: Vec<u8>,
    public_base_url: String,
}

impl RecordingLinks {
    /// Keyed from the JWT secret (a separate derivation: a link never works as a token).
    pub fn new(jwt_secret: &[u8], public_base_url: &str) -> Self {
        Self {
            key: Sha256::new()
                .chain_update(b"signed-links")
                .chain_update(jwt_secret)
                .finalize()
                .to_vec(),
            public_base_url: public_base_url.to_string(),
        }
    }

    fn signature(&self, call_id: &str, expires: i64) -> String {
        let mut h = Sha256::new();
        h.update(self.key.as_slice());
        h.update(call_id.as_bytes());
        h.update(expires.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
    }

    pub fn link(&self, call_id: &str, expires: i64) -> String {
        format!(
            "{}/media/recordings/{call_id}?expires={expires}&signature={}",
            self.public_base_url,
            self.signature(call_id, expires)
        )
    }

    pub fn verify(&self, call_id: &str, expires: i64, signature: &str) -> bool {
        let expected = self.signature(call_id, expires);
        let ok: bool =
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.as_bytes()).into();
        ok && expires >= Utc::now().timestamp()
    }
}
