//! Collecting revocations into a [`Krl`], refusing what OpenSSH could not load.

use std::collections::{BTreeMap, BTreeSet};

use ssh_key::public::KeyData;
use ssh_key::PublicKey;

use super::wire::CERT_KEY_TYPE_SUFFIX;
use super::{
    key_blob, sha256_fingerprint_blob, CaRevocations, CaScope, Krl, KrlError, SerialRange,
    MAX_ENTRY_BYTES, MAX_SERIAL_RUNS,
};

/// Collects what a KRL revokes, then [`KrlBuilder::build`]s the [`Krl`] to [`super::encode`].
///
/// Each call refuses, there and then, entries OpenSSH refuses when it loads a KRL: serial zero,
/// reversed ranges, NUL bytes in the comment or a key ID, certificate types where a plain key
/// belongs. Repeated or overlapping revocations merge; the order of calls does not change the
/// result.
#[derive(Clone, Debug)]
pub struct KrlBuilder {
    /// Header, keys and hashes as they will be built; its CA scopes stay empty until then.
    krl: Krl,
    /// CA scopes by CA key blob, with serials not yet merged.
    pending: BTreeMap<Vec<u8>, PendingAuthority>,
}

/// Revocations gathered for one CA scope; serial ranges are merged when built.
#[derive(Clone, Debug)]
pub(super) struct PendingAuthority {
    scope: CaScope,
    ranges: Vec<SerialRange>,
    key_ids: BTreeSet<String>,
}

impl KrlBuilder {
    /// Starts an empty KRL with its version number and generation time (Unix seconds).
    pub fn new(version: u64, generated_at: u64) -> Self {
        Self {
            krl: Krl {
                version,
                generated_at,
                comment: String::new(),
                authorities: BTreeMap::new(),
                explicit_keys: BTreeMap::new(),
                sha256_hashes: BTreeSet::new(),
                sha1_hashes: BTreeSet::new(),
            },
            pending: BTreeMap::new(),
        }
    }

    /// Sets the header comment; refuses one containing a NUL byte.
    pub fn comment(&mut self, comment: impl Into<String>) -> Result<&mut Self, KrlError> {
        let comment = comment.into();
        refuse_nul(&comment, "comment")?;

        self.krl.comment = comment;
        Ok(self)
    }

    /// Revokes one certificate serial under `ca`; refuses serial zero.
    pub fn revoke_serial(
        &mut self,
        ca: impl Into<CaScope>,
        serial: u64,
    ) -> Result<&mut Self, KrlError> {
        self.revoke_serial_range(ca, serial, serial)
    }

    /// Revokes the serials `first..=last` under `ca`; refuses a range starting at zero or
    /// ending before it starts.
    pub fn revoke_serial_range(
        &mut self,
        ca: impl Into<CaScope>,
        first: u64,
        last: u64,
    ) -> Result<&mut Self, KrlError> {
        check_serial_range(first, last)?;

        self.authority(ca.into())?.push_range(first, last)?;
        Ok(self)
    }

    /// Revokes many serials under `ca` at once, in any order and with repeats; refuses the
    /// whole batch, revoking none of it, if it contains serial zero.
    pub fn revoke_serials(
        &mut self,
        ca: impl Into<CaScope>,
        serials: impl IntoIterator<Item = u64>,
    ) -> Result<&mut Self, KrlError> {
        let mut serials: Vec<u64> = serials.into_iter().collect();
        serials.sort_unstable();
        serials.dedup();
        if serials.first() == Some(&0) {
            return Err(KrlError::SerialZero);
        }
        if serials.is_empty() {
            return Ok(self);
        }

        let authority = self.authority(ca.into())?;
        for run in runs_of(&serials) {
            authority.push_range(run.first, run.last)?;
        }
        Ok(self)
    }

    /// Revokes every certificate with this key ID under `ca`; refuses an ID containing a NUL
    /// byte.
    pub fn revoke_key_id(
        &mut self,
        ca: impl Into<CaScope>,
        key_id: impl Into<String>,
    ) -> Result<&mut Self, KrlError> {
        let key_id = key_id.into();
        refuse_nul(&key_id, "key ID")?;

        self.authority(ca.into())?.key_ids.insert(key_id);
        Ok(self)
    }

    /// Revokes a plain public key by the SHA-256 hash of its blob (KRL_SECTION_FINGERPRINT_SHA256).
    pub fn revoke_key_by_sha256(&mut self, key: &PublicKey) -> &mut Self {
        self.revoke_sha256_hash(sha256_fingerprint_blob(key))
    }

    /// Revokes whatever plain public key has this SHA-256 blob hash.
    pub fn revoke_sha256_hash(&mut self, hash: [u8; 32]) -> &mut Self {
        self.krl.sha256_hashes.insert(hash);
        self
    }

    /// Revokes whatever plain public key has this SHA-1 blob hash (KRL_SECTION_FINGERPRINT_SHA1).
    ///
    /// Prefer SHA-256; see the module's limitation on SHA-1 entries.
    pub fn revoke_sha1_hash(&mut self, hash: [u8; 20]) -> &mut Self {
        self.krl.sha1_hashes.insert(hash);
        self
    }

    /// Revokes a plain public key by listing it in full (KRL_SECTION_EXPLICIT_KEY); refuses a
    /// key that does not serialise or whose type is a certificate type.
    pub fn revoke_key_explicit(&mut self, key: &PublicKey) -> Result<&mut Self, KrlError> {
        refuse_certificate_type(key.key_data(), "revoked key")?;
        let blob = key_blob(key.key_data(), "revoked key")?;

        self.krl.explicit_keys.insert(blob, key.key_data().clone());
        Ok(self)
    }

    /// Finishes the KRL: merges serials into sorted ranges and drops CA scopes left empty.
    ///
    /// Refuses more than [`MAX_SERIAL_RUNS`] runs of serials in total, or more than
    /// [`MAX_ENTRY_BYTES`] of comment, keys, key IDs and hashes.
    pub fn build(self) -> Result<Krl, KrlError> {
        let mut krl = self.krl;
        let mut serial_runs = 0usize;
        let mut entry_bytes = prefixed_len(krl.comment.len());

        for (blob, mut pending) in self.pending {
            coalesce(&mut pending.ranges);
            serial_runs = serial_runs.saturating_add(pending.ranges.len());
            entry_bytes = pending
                .key_ids
                .iter()
                .map(|id| prefixed_len(id.len()))
                .fold(entry_bytes, usize::saturating_add)
                .saturating_add(prefixed_len(blob.len()));

            let revocations = CaRevocations {
                scope: pending.scope,
                serials: pending.ranges,
                key_ids: pending.key_ids,
            };
            if !revocations.is_empty() {
                krl.authorities.insert(blob, revocations);
            }
        }

        let key_bytes = krl
            .explicit_keys
            .keys()
            .map(|blob| prefixed_len(blob.len()));
        let hash_bytes = [
            krl.sha256_hashes.len().saturating_mul(prefixed_len(32)),
            krl.sha1_hashes.len().saturating_mul(prefixed_len(20)),
        ];
        entry_bytes = key_bytes
            .chain(hash_bytes)
            .fold(entry_bytes, usize::saturating_add);

        if serial_runs > MAX_SERIAL_RUNS {
            return Err(KrlError::TooManySerialRuns {
                limit: MAX_SERIAL_RUNS,
            });
        }
        if entry_bytes > MAX_ENTRY_BYTES {
            return Err(KrlError::TooLarge {
                limit: MAX_ENTRY_BYTES,
            });
        }
        Ok(krl)
    }

    /// The pending revocations for a CA scope, created on first use.
    pub(super) fn authority(&mut self, scope: CaScope) -> Result<&mut PendingAuthority, KrlError> {
        // PROTOCOL.krl section 2: an empty CA key blob stands for every CA.
        let blob = match &scope {
            CaScope::AnyCa => Vec::new(),
            CaScope::Key(key) => {
                refuse_certificate_type(key, "CA key")?;
                key_blob(key, "CA key")?
            }
        };

        Ok(self
            .pending
            .entry(blob)
            .or_insert_with(|| PendingAuthority {
                scope,
                ranges: Vec::new(),
                key_ids: BTreeSet::new(),
            }))
    }

    /// Sets a comment already checked by the caller.
    pub(super) fn set_comment(&mut self, comment: String) {
        self.krl.comment = comment;
    }
}

impl PendingAuthority {
    /// Adds `first..=last`; refuses serial zero and reversed ranges.
    pub(super) fn push_range(&mut self, first: u64, last: u64) -> Result<(), KrlError> {
        check_serial_range(first, last)?;

        self.ranges.push(SerialRange { first, last });

        // Merge early once the unmerged list grows, so repeats cannot exhaust memory.
        if self.ranges.len() > 2 * MAX_SERIAL_RUNS {
            coalesce(&mut self.ranges);
            if self.ranges.len() > MAX_SERIAL_RUNS {
                return Err(KrlError::TooManySerialRuns {
                    limit: MAX_SERIAL_RUNS,
                });
            }
        }
        Ok(())
    }

    /// Adds a key ID already checked by the caller.
    pub(super) fn insert_key_id(&mut self, key_id: String) {
        self.key_ids.insert(key_id);
    }
}

/// Serial zero is not revocable (`ssh-keygen(1)`, KEY REVOCATION LISTS), and OpenSSH refuses a
/// KRL naming it.
fn check_serial_range(first: u64, last: u64) -> Result<(), KrlError> {
    if first == 0 {
        return Err(KrlError::SerialZero);
    }
    if first > last {
        return Err(KrlError::ReversedSerialRange { first, last });
    }
    Ok(())
}

/// Key IDs and the comment travel as C strings in OpenSSH, which refuses embedded NULs.
fn refuse_nul(text: &str, what: &'static str) -> Result<(), KrlError> {
    if text.contains('\0') {
        return Err(KrlError::NulInString(what));
    }
    Ok(())
}

/// `PROTOCOL.krl` sections 2 and 3: CA keys and explicitly revoked keys are plain keys, never
/// certificates.
fn refuse_certificate_type(key: &KeyData, what: &'static str) -> Result<(), KrlError> {
    if key.algorithm().as_str().ends_with(CERT_KEY_TYPE_SUFFIX) {
        return Err(KrlError::CertificateNotAllowed(what));
    }
    Ok(())
}

/// Sorts ranges and merges those that overlap or touch.
pub(super) fn coalesce(ranges: &mut Vec<SerialRange>) {
    ranges.sort_unstable();
    ranges.dedup_by(|next, kept| {
        let touches = next.first <= kept.last.saturating_add(1);
        if touches {
            kept.last = kept.last.max(next.last);
        }
        touches
    });
}

/// Maximal runs of consecutive serials in a sorted, repeat-free slice.
fn runs_of(serials: &[u64]) -> Vec<SerialRange> {
    let mut runs: Vec<SerialRange> = Vec::new();
    for &serial in serials {
        match runs.last_mut() {
            Some(run) if run.last.checked_add(1) == Some(serial) => run.last = serial,
            _ => runs.push(SerialRange {
                first: serial,
                last: serial,
            }),
        }
    }
    runs
}

/// Bytes an entry takes with its `uint32` length prefix.
fn prefixed_len(len: usize) -> usize {
    len.saturating_add(4)
}
