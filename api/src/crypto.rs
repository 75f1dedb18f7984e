//! Secrets at rest: AES-256-GCM under `SECRETS_KEY`, stored as base64(nonce || ciphertext).
//! Each sealed value is bound to a context string (e.g. the runtime it belongs to), so a
//! ciphertext copied onto another record does not open there.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::Config;

const NONCE_LEN: usize = 12;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the sealed value is not valid base64 of nonce and ciphertext")]
    Malformed,
    #[error("the sealed value does not open with this key (SECRETS_KEY changed?) or context")]
    WrongKeyOrContext,
}

impl SecretBox {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// The key from `SECRETS_KEY` (base64 of 32 bytes). Production requires it; development
    /// without it uses a fixed, publicly known key (so a restart can still read old values)
    /// and says so loudly.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        match config.secrets_key.as_deref().map(str::trim) {
            Some(k) if !k.is_empty() => {
                let raw = B64
                    .decode(k)
                    .map_err(|_| anyhow::anyhow!("SECRETS_KEY must be base64 of 32 bytes"))?;
                let key: [u8; 32] = raw.try_into().map_err(|_| {
                    anyhow::anyhow!("SECRETS_KEY must be base64 of exactly 32 bytes")
                })?;
                Ok(Self::new(&key))
            }
            _ if config.is_production() => {
                anyhow::bail!("SECRETS_KEY is required in production (base64 of 32 random bytes)")
            }
            _ => {
                tracing::warn!(
                    "SECRETS_KEY is not set: secrets are encrypted with a fixed DEVELOPMENT key \
                     that anyone can derive; set SECRETS_KEY (head -c 32 /dev/urandom | base64) \
                     before storing real secrets"
                );
                Ok(Self::new(&Self::development_key()))
            }
        }
    }

    fn development_key() -> [u8; 32] {
        Sha256::digest(b"control-plane development secrets key; never use in production").into()
    }

    /// Encrypts `plaintext` bound to `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        B64.encode(out)
    }

    /// Decrypts what `seal` produced for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let raw = B64.decode(sealed).map_err(|_| CryptoError::Malformed)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::WrongKeyOrContext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let a = SecretBox::new(&[7u8; 32]);
        let sealed = a.seal("runtime-env:rt_1", b"{\"KEY\":\"s3cret\"}");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(
            a.open("runtime-env:rt_1", &sealed).unwrap(),
            b"{\"KEY\":\"s3cret\"}"
        );
        assert!(matches!(
            a.open("runtime-env:rt_2", &sealed),
            Err(CryptoError::WrongKeyOrContext)
        ));
        let b = SecretBox::new(&[8u8; 32]);
        assert!(b.open("runtime-env:rt_1", &sealed).is_err());
        assert!(matches!(
            a.open("runtime-env:rt_1", "bm9wZQ"),
            Err(CryptoError::Malformed)
        ));
        assert_ne!(
            sealed,
            a.seal("runtime-env:rt_1", b"{\"KEY\":\"s3cret\"}"),
            "fresh nonce every time"
        );
    }

    #[test]
    fn production_refuses_to_start_without_a_key() {
        let mut config = Config::for_database("postgres://x/y");
        config.app_env = "production".into();
        assert!(SecretBox::from_config(&config).is_err());
        config.secrets_key = Some(B64.encode([1u8; 16]));
        assert!(
            SecretBox::from_config(&config).is_err(),
            "16 bytes is too short"
        );
        config.secrets_key = Some(B64.encode([1u8; 32]));
        assert!(SecretBox::from_config(&config).is_ok());
    }
}
