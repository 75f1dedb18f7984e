//! Integration credentials at rest: envelope encryption (docs/adr/0009-integration-secrets.md).
//!
//! - Each integration has a random 256-bit **data key**, stored only wrapped (AES-256-GCM) by a
//!   **master key** (`SECRETS_KEY`), with the master key's id (the first 16 hex digits of its
//!   SHA-256) beside it: `integration_data_keys`.
//! - Credentials are sealed with the data key (AES-256-GCM, bound to the integration and the
//!   row id) into `integration_secrets`, one row per version; events reference a row by id.
//! - Master-key rotation re-wraps the data keys only (`control-plane secrets rotate`); sealed
//!   credentials and events are untouched. Keys named in `SECRETS_KEY_PREVIOUS` still unwrap,
//!   so a process that has not got the new key yet keeps working.
//!
//! A sealed row is written *before* the event that references it; a row no event references
//! (the append failed) is garbage and holds nothing anyone can reach.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use parking_lot::Mutex;
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::config::Config;
use crate::crypto::SecretBox;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A master key and its id.
pub struct MasterKey {
    pub id: String,
    cipher: SecretBox,
}

impl MasterKey {
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            id: hex::encode(&Sha256::digest(key)[..8]),
            cipher: SecretBox::new(key),
        }
    }

    /// Parses base64 of 32 bytes.
    pub fn parse(b64: &str) -> anyhow::Result<Self> {
        let raw = B64
            .decode(b64.trim())
            .map_err(|_| anyhow::anyhow!("a master key must be base64 of 32 bytes"))?;
        let key: [u8; 32] = raw
            .try_into()
            .map_err(|_| anyhow::anyhow!("a master key must be base64 of exactly 32 bytes"))?;
        Ok(Self::new(&key))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

/// The current master key (wraps new data keys) and earlier ones (still unwrap).
#[derive(Debug)]
pub struct Keyring {
    pub current: MasterKey,
    pub previous: Vec<MasterKey>,
}

impl Keyring {
    /// `SECRETS_KEY` (in development without it: a fixed, publicly known key, as for the
    /// other secrets) and `SECRETS_KEY_PREVIOUS`.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let current = match config.secrets_key.as_deref().map(str::trim) {
            Some(k) if !k.is_empty() => MasterKey::parse(k)?,
            _ if config.is_production() => {
                anyhow::bail!("SECRETS_KEY is required in production (base64 of 32 random bytes)")
            }
            _ => MasterKey::new(
                &Sha256::digest(b"control-plane development integration master key").into(),
            ),
        };
        let previous = config
            .integrations
            .secrets_key_previous
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(MasterKey::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { current, previous })
    }

    fn by_id(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }
}

fn wrap_context(integration_id: &str) -> String {
    format!("integration-data-key:{integration_id}")
}

fn seal_context(integration_id: &str, secret_id: &str) -> String {
    format!("integration-secret:{integration_id}:{secret_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("integration {integration_id}: its data key is wrapped by master key {key_id}, which is neither SECRETS_KEY nor in SECRETS_KEY_PREVIOUS")]
    UnknownMasterKey {
        integration_id: String,
        key_id: String,
    },
    #[error("sealed material does not open: {0}")]
    Crypto(String),
    #[error("no sealed credentials {0}")]
    Missing(String),
}

/// Seals and opens integration credentials.
pub struct Vault {
    pool: PgPool,
    keyring: Keyring,
    /// Opened data keys (a rotation re-wraps them but never changes them).
    data_keys: Mutex<HashMap<String, Arc<SecretBox>>>,
}

impl Vault {
    pub fn new(pool: PgPool, keyring: Keyring) -> Self {
        Self {
            pool,
            keyring,
            data_keys: Mutex::default(),
        }
    }

    async fn data_key(&self, integration_id: &str) -> Result<Arc<SecretBox>, VaultError> {
        if let Some(k) = self.data_keys.lock().get(integration_id) {
            return Ok(k.clone());
        }
        let mut row = self.wrapped(integration_id).await?;
        if row.is_none() {
            let mut dk = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut dk);
            let wrapped = self
                .keyring
                .current
                .cipher
                .seal(&wrap_context(integration_id), &dk);
            sqlx::query(
                "INSERT INTO integration_data_keys (integration_id, master_key_id, wrapped_key)
                 VALUES ($1, $2, $3) ON CONFLICT (integration_id) DO NOTHING",
            )
            .bind(integration_id)
            .bind(&self.keyring.current.id)
            .bind(wrapped)
            .execute(&self.pool)
            .await?;
            row = self.wrapped(integration_id).await?;
        }
        let (key_id, wrapped) = row.ok_or_else(|| VaultError::Missing(integration_id.into()))?;
        let dk = unwrap(&self.keyring, integration_id, &key_id, &wrapped)?;
        let k = Arc::new(SecretBox::new(&dk));
        self.data_keys
            .lock()
            .insert(integration_id.to_string(), k.clone());
        Ok(k)
    }

    async fn wrapped(&self, integration_id: &str) -> Result<Option<(String, String)>, VaultError> {
        Ok(sqlx::query_as(
            "SELECT master_key_id, wrapped_key FROM integration_data_keys WHERE integration_id = $1",
        )
        .bind(integration_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Seals `value` for `integration_id` into a new row; returns the row's id (what events
    /// reference).
    pub async fn seal(&self, integration_id: &str, value: &Value) -> Result<String, VaultError> {
        let dk = self.data_key(integration_id).await?;
        let secret_id = crate::ids::new_id("sec");
        let sealed = dk.seal(
            &seal_context(integration_id, &secret_id),
            value.to_string().as_bytes(),
        );
        sqlx::query(
            "INSERT INTO integration_secrets (id, integration_id, sealed) VALUES ($1, $2, $3)",
        )
        .bind(&secret_id)
        .bind(integration_id)
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        Ok(secret_id)
    }

    /// Opens the sealed row `secret_id` of `integration_id`.
    pub async fn open(&self, integration_id: &str, secret_id: &str) -> Result<Value, VaultError> {
        let sealed: Option<String> = sqlx::query_scalar(
            "SELECT sealed FROM integration_secrets WHERE id = $1 AND integration_id = $2",
        )
        .bind(secret_id)
        .bind(integration_id)
        .fetch_optional(&self.pool)
        .await?;
        let sealed = sealed.ok_or_else(|| VaultError::Missing(secret_id.into()))?;
        let dk = self.data_key(integration_id).await?;
        let raw = dk
            .open(&seal_context(integration_id, secret_id), &sealed)
            .map_err(|e| VaultError::Crypto(e.to_string()))?;
        serde_json::from_slice(&raw).map_err(|e| VaultError::Crypto(e.to_string()))
    }
}

fn unwrap(
    keyring: &Keyring,
    integration_id: &str,
    key_id: &str,
    wrapped: &str,
) -> Result<[u8; 32], VaultError> {
    let key = keyring
        .by_id(key_id)
        .ok_or_else(|| VaultError::UnknownMasterKey {
            integration_id: integration_id.into(),
            key_id: key_id.into(),
        })?;
    let raw = key
        .cipher
        .open(&wrap_context(integration_id), wrapped)
        .map_err(|e| VaultError::Crypto(e.to_string()))?;
    raw.try_into()
        .map_err(|_| VaultError::Crypto("a data key is not 32 bytes".into()))
}

/// What a master-key rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub rewrapped: usize,
    pub already_current: usize,
}

/// Re-wraps every data key under `new` (unwrapping with any key of `keyring`), one row per
/// statement so a crash leaves every row readable by one of the two keys. Sealed credentials
/// and events are not touched.
pub async fn rotate_master_key(
    pool: &PgPool,
    keyring: &Keyring,
    new: &MasterKey,
) -> Result<Rotation, VaultError> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT integration_id, master_key_id, wrapped_key FROM integration_data_keys
         ORDER BY integration_id",
    )
    .fetch_all(pool)
    .await?;
    let mut done = Rotation {
        rewrapped: 0,
        already_current: 0,
    };
    for (integration_id, key_id, wrapped) in rows {
        if key_id == new.id {
            done.already_current += 1;
            continue;
        }
        let dk = unwrap(keyring, &integration_id, &key_id, &wrapped)?;
        let rewrapped = new.cipher.seal(&wrap_context(&integration_id), &dk);
        sqlx::query(
            "UPDATE integration_data_keys SET master_key_id = $2, wrapped_key = $3,
                 rewrapped_at = now()
             WHERE integration_id = $1 AND master_key_id = $4",
        )
        .bind(&integration_id)
        .bind(&new.id)
        .bind(rewrapped)
        .bind(&key_id)
        .execute(pool)
        .await?;
        done.rewrapped += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_name_keys_without_revealing_them() {
        let a = MasterKey::new(&[1; 32]);
        let b = MasterKey::new(&[2; 32]);
        assert_eq!(a.id.len(), 16);
        assert_ne!(a.id, b.id);
        let ring = Keyring {
            current: b,
            previous: vec![a],
        };
        let wrapped = MasterKey::new(&[1; 32])
            .cipher
            .seal(&wrap_context("int_1"), &[9; 32]);
        let id = MasterKey::new(&[1; 32]).id;
        assert_eq!(unwrap(&ring, "int_1", &id, &wrapped).unwrap(), [9; 32]);
        assert!(
            unwrap(&ring, "int_2", &id, &wrapped).is_err(),
            "bound to the integration"
        );
        assert!(matches!(
            unwrap(&ring, "int_1", "0000", &wrapped),
            Err(VaultError::UnknownMasterKey { .. })
        ));
    }

    #[test]
    fn the_keyring_takes_the_current_key_and_earlier_ones_from_the_configuration() {
        let mut config = Config::for_database("postgres://x/y");
        config.secrets_key = Some(B64.encode([3u8; 32]));
        config.integrations.secrets_key_previous = Some(format!(
            "{}, {}",
            B64.encode([1u8; 32]),
            B64.encode([2u8; 32])
        ));
        let ring = Keyring::from_config(&config).unwrap();
        assert_eq!(ring.current.id, MasterKey::new(&[3; 32]).id);
        assert_eq!(ring.previous.len(), 2);
        assert!(ring.by_id(&MasterKey::new(&[2; 32]).id).is_some());
        config.integrations.secrets_key_previous = Some("not base64".into());
        assert!(Keyring::from_config(&config).is_err());
        config.app_env = "production".into();
        config.secrets_key = None;
        config.integrations.secrets_key_previous = None;
        assert!(
            Keyring::from_config(&config).is_err(),
            "production needs SECRETS_KEY"
        );
    }
}
