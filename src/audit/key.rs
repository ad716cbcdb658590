//! The audit key: an Ed25519 key of its own, separate from the CA key, that signs checkpoints.
//!
//! Kept as an unencrypted OpenSSH private key file, mode 0600, created on first start when
//! absent and refused when group or others can read it. Its public half is published as an
//! `ssh-ed25519` line (`GET /v1/audit/key`) for auditors to verify exports with.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use ed25519_dalek::{Signer, SigningKey};
use jit_proto::audit::{AuditPublicKey, ChainHash, Checkpoint};
use rand::rngs::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use super::AuditError;
use crate::signer::read_secret_file;

/// The checkpoint-signing key. Its `Debug` shows the fingerprint only.
pub struct AuditKey {
    signing_key: SigningKey,
    public_key: AuditPublicKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuditKey")
            .field("fingerprint", &self.public_key.fingerprint())
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// Loads the key at `path`, creating it first when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<(AuditKey, bool), AuditError> {
        if path.exists() {
            return AuditKey::load(path).map(|key| (key, false));
        }
        AuditKey::create(path).map(|key| (key, true))
    }

    /// Creates a new key at `path` (mode 0600 from the start, never overwriting).
    pub fn create(path: &Path) -> Result<AuditKey, AuditError> {
        let key_error = |message: String| AuditError::Key {
            path: path.display().to_string(),
            message,
        };
        let private_key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
            .map_err(|error| key_error(error.to_string()))?;
        let text = private_key
            .to_openssh(LineEnding::LF)
            .map_err(|error| key_error(error.to_string()))?;

        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|error| key_error(error.to_string()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|error| key_error(error.to_string()))?;

        AuditKey::from_private_key(&private_key).map_err(key_error)
    }

    /// Loads the key at `path`; refuses a file others can read, an encrypted key, or a key
    /// that is not Ed25519.
    pub fn load(path: &Path) -> Result<AuditKey, AuditError> {
        let key_error = |message: String| AuditError::Key {
            path: path.display().to_string(),
            message,
        };
        let text = read_secret_file(path).map_err(key_error)?;
        let private_key = PrivateKey::from_openssh(text.as_str())
            .map_err(|error| key_error(format!("not an OpenSSH private key: {error}")))?;
        if private_key.is_encrypted() {
            return Err(key_error("the audit key must not be encrypted".into()));
        }
        AuditKey::from_private_key(&private_key).map_err(key_error)
    }

    fn from_private_key(private_key: &PrivateKey) -> Result<AuditKey, String> {
        let keypair = private_key
            .key_data()
            .ed25519()
            .ok_or("the audit key must be Ed25519")?;
        Ok(AuditKey::from_seed(keypair.private.to_bytes()))
    }

    /// The key whose secret scalar seed is `seed` (tests use fixed ones).
    pub fn from_seed(seed: [u8; 32]) -> AuditKey {
        let signing_key = SigningKey::from_bytes(&seed);
        let public_key = AuditPublicKey::from(signing_key.verifying_key());
        AuditKey {
            signing_key,
            public_key,
        }
    }

    /// The public half.
    pub fn public_key(&self) -> &AuditPublicKey {
        &self.public_key
    }

    /// Signs a checkpoint over `record_count` records ending in `head_hash`, at `now` (cut to
    /// whole seconds, which is what the signature covers).
    pub fn sign_checkpoint(
        &self,
        record_count: u64,
        head_hash: &ChainHash,
        now: DateTime<Utc>,
    ) -> Checkpoint {
        let signed_at = now.trunc_subsecs(0);
        let message = Checkpoint::signed_bytes(record_count, head_hash, signed_at.timestamp());
        let signature = self.signing_key.sign(&message);
        Checkpoint {
            record_count,
            head_hash: head_hash.to_string(),
            signed_at,
            signature: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
        }
    }
}
