//! OpenSSH key revocation lists (KRLs), as described in OpenSSH's `PROTOCOL.krl`.
//!
//! A KRL names what sshd must refuse: certificates by serial number or key ID under a given CA
//! (or under any CA), and plain public keys either in full or by SHA-256 hash. This module
//! builds them ([`KrlBuilder`] then [`encode`]) and reads them back ([`parse`]). Everything is
//! plain data in and bytes out: no file access and no clock, the caller passes the generation
//! time.
//!
//! The writer chooses, per CA, the cheapest mix of serial list, serial range and serial bitmap
//! subsections for the revoked serials, keeping every bitmap within the 16384 bits OpenSSH is
//! able to load. Its output is therefore never larger than a loadable KRL `ssh-keygen -k`
//! writes for the same serials. (`ssh-keygen` 9.2 can write longer bitmaps, which it then
//! refuses to read; splitting them costs about 1% more.)
//!
//! The parser is strict: it enforces each "must" of `PROTOCOL.krl` and the limits OpenSSH
//! applies when loading (no serial zero, bounded bitmaps, no NUL inside strings), refuses
//! unknown section types, unknown critical extensions, unknown header flags, leftover bytes in
//! any section and trailing bytes after the last one. Non-critical extensions are skipped, as
//! the format allows, though OpenSSH before 9.4 refuses any extension section (this writer
//! never emits one). It also refuses signature sections:
//! OpenSSH 9.4 and later refuse signed KRLs, and a KRL should be authenticated out of band
//! (for instance with `ssh-keygen -Y sign`). Its memory use is bounded by [`MAX_KRL_LEN`],
//! [`MAX_SERIAL_RUNS`] and [`MAX_ENTRY_BYTES`].
//!
//! Limitation: SHA-1 fingerprint entries are read, kept, listed and written back, but
//! [`Krl::is_key_revoked`] cannot match keys against them because this crate carries no SHA-1
//! implementation; [`Krl::sha1_hashes`] tells whether a KRL holds any.

mod builder;
mod encode;
mod parse;
mod segment;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use ssh_key::public::KeyData;
use ssh_key::{Certificate, HashAlg, PublicKey};

pub use builder::KrlBuilder;
pub use encode::encode;
pub use parse::parse;

/// Largest input [`parse`] accepts, in bytes (256 MiB).
pub const MAX_KRL_LEN: usize = 256 << 20;

/// Largest number of runs of consecutive revoked serials a [`Krl`] may hold, all CAs together.
///
/// [`parse`] counts the runs as they are written, before merging overlaps.
pub const MAX_SERIAL_RUNS: usize = 1 << 22;

/// Largest total size of a [`Krl`]'s variable entries: comment, CA keys, key IDs, revoked keys
/// and hashes, each counted with its four-byte length prefix.
pub const MAX_ENTRY_BYTES: usize = 16 << 20;

/// Why a KRL could not be built or parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KrlError {
    /// The input to [`parse`] is longer than [`MAX_KRL_LEN`].
    #[error("KRL is {len} bytes long, more than the {limit} bytes accepted")]
    InputTooLong {
        /// Length of the input.
        len: usize,
        /// The limit, [`MAX_KRL_LEN`].
        limit: usize,
    },

    /// The input does not start with the KRL magic `SSHKRL\n\0`.
    #[error("not a KRL: the SSHKRL magic is missing")]
    BadMagic,

    /// The header names a format version other than 1.
    #[error("KRL format version {0} is not supported, only version 1 is")]
    UnsupportedFormatVersion(u32),

    /// The header sets flags, and the format defines none.
    #[error("KRL header sets flags {0:#x}, but no flags are defined")]
    UnknownFlags(u64),

    /// The input ends inside the named field.
    #[error("KRL ends inside the {0}")]
    Truncated(&'static str),

    /// The named section or field holds bytes after its last element.
    #[error("the {what} has {len} unparsed bytes after its contents")]
    TrailingData {
        /// Which section or field.
        what: &'static str,
        /// How many bytes are left over.
        len: usize,
    },

    /// A top-level section type this parser does not know.
    #[error("unknown KRL section type {0:#04x}")]
    UnknownSection(u8),

    /// A certificate subsection type this parser does not know.
    #[error("unknown KRL certificate subsection type {0:#04x}")]
    UnknownCertificateSubsection(u8),

    /// The KRL carries a signature section, which this parser refuses.
    #[error("KRL signature sections are not supported; authenticate the KRL out of band")]
    SignatureUnsupported,

    /// An extension marked critical that this parser does not implement.
    #[error("KRL requires the unsupported critical extension {0:?}")]
    UnsupportedCriticalExtension(String),

    /// The named section must hold at least one entry but holds none.
    #[error("the {0} must hold at least one entry")]
    EmptySection(&'static str),

    /// Serial number zero appears; OpenSSH cannot revoke it and refuses such KRLs.
    #[error("serial number 0 cannot be revoked")]
    SerialZero,

    /// A serial range whose first serial is above its last.
    #[error("serial range {first}-{last} is reversed")]
    ReversedSerialRange {
        /// First serial of the range.
        first: u64,
        /// Last serial of the range.
        last: u64,
    },

    /// A serial bitmap encoded as a negative mpint.
    #[error("serial bitmap is a negative number")]
    BitmapNegative,

    /// A serial bitmap longer than the 16384 bits OpenSSH accepts.
    #[error("serial bitmap is longer than 16384 bits")]
    BitmapTooLarge,

    /// A serial bitmap whose bits reach past the largest serial number.
    #[error("serial bitmap at offset {offset} reaches past the largest serial number")]
    BitmapOverflow {
        /// The bitmap's first serial.
        offset: u64,
    },

    /// A boolean field holding a byte other than 0 or 1.
    #[error("boolean field holds {0}, not 0 or 1")]
    InvalidBoolean(u8),

    /// A fingerprint entry of the wrong length for its hash.
    #[error("{hash} hash entry is {len} bytes long, not {expected}")]
    BadHashLength {
        /// The hash algorithm of the section.
        hash: &'static str,
        /// Length found.
        len: usize,
        /// Length the hash has.
        expected: usize,
    },

    /// Fingerprint entries not in ascending order, as the format requires.
    #[error("{0} hashes are not in ascending order")]
    HashesOutOfOrder(&'static str),

    /// A text field containing a NUL byte, which OpenSSH refuses.
    #[error("the {0} contains a NUL byte")]
    NulInString(&'static str),

    /// A text field that is not UTF-8.
    #[error("the {0} is not valid UTF-8")]
    NotUtf8(&'static str),

    /// A key blob that does not decode, or a key that does not encode.
    #[error("the {what} is not a usable public key: {source}")]
    InvalidKey {
        /// Which key.
        what: &'static str,
        /// The decoding or encoding error.
        #[source]
        source: ssh_key::Error,
    },

    /// A key blob that decodes, but not from its one proper wire encoding.
    #[error("the {0} blob is not a well-formed key encoding")]
    NonCanonicalKey(&'static str),

    /// A certificate where the format requires a plain public key.
    #[error("the {0} is a certificate, but must be a plain public key")]
    CertificateNotAllowed(&'static str),

    /// More runs of revoked serials than [`MAX_SERIAL_RUNS`].
    #[error("KRL holds more than {limit} runs of revoked serials")]
    TooManySerialRuns {
        /// The limit, [`MAX_SERIAL_RUNS`].
        limit: usize,
    },

    /// Variable entries larger than [`MAX_ENTRY_BYTES`] in total.
    #[error("KRL entries take more than {limit} bytes")]
    TooLarge {
        /// The limit, [`MAX_ENTRY_BYTES`].
        limit: usize,
    },
}

/// The certificates a set of serial and key ID revocations applies to.
///
/// `PROTOCOL.krl` section 2: a certificate section names the CA key that signed the revoked
/// certificates, or leaves it empty to cover certificates from every CA.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaScope {
    /// Certificates signed by any CA (an empty CA key on the wire).
    AnyCa,
    /// Certificates signed by this CA key.
    Key(KeyData),
}

impl From<KeyData> for CaScope {
    fn from(key: KeyData) -> Self {
        Self::Key(key)
    }
}

impl From<&KeyData> for CaScope {
    fn from(key: &KeyData) -> Self {
        Self::Key(key.clone())
    }
}

impl From<&PublicKey> for CaScope {
    fn from(key: &PublicKey) -> Self {
        Self::Key(key.key_data().clone())
    }
}

impl From<PublicKey> for CaScope {
    fn from(key: PublicKey) -> Self {
        Self::Key(key.key_data().clone())
    }
}

/// An inclusive run of revoked serial numbers, `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SerialRange {
    /// First revoked serial.
    pub first: u64,
    /// Last revoked serial, at least `first`.
    pub last: u64,
}

impl SerialRange {
    /// Whether `serial` lies in this range.
    pub fn contains(&self, serial: u64) -> bool {
        self.first <= serial && serial <= self.last
    }
}

/// What one [`CaScope`] revokes: serial numbers and key IDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaRevocations {
    scope: CaScope,
    serials: Vec<SerialRange>,
    key_ids: BTreeSet<String>,
}

impl CaRevocations {
    /// The CA (or every CA) these revocations apply to.
    pub fn scope(&self) -> &CaScope {
        &self.scope
    }

    /// Revoked serials as sorted, disjoint, non-adjacent ranges.
    pub fn serial_ranges(&self) -> &[SerialRange] {
        &self.serials
    }

    /// Revoked key IDs, in byte order.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.key_ids.iter().map(String::as_str)
    }

    /// Whether `serial` is revoked; serial zero never is, as OpenSSH ignores it.
    pub fn is_serial_revoked(&self, serial: u64) -> bool {
        let candidate = self.serials.partition_point(|range| range.last < serial);
        self.serials
            .get(candidate)
            .is_some_and(|range| range.contains(serial))
    }

    /// Whether the key ID is revoked.
    pub fn is_key_id_revoked(&self, key_id: &str) -> bool {
        self.key_ids.contains(key_id)
    }

    fn is_empty(&self) -> bool {
        self.serials.is_empty() && self.key_ids.is_empty()
    }
}

/// A key revocation list: its header and everything it revokes.
///
/// Built by [`KrlBuilder::build`] or [`parse`], written by [`encode`]. Equal contents compare
/// equal however they were built or encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Krl {
    version: u64,
    generated_at: u64,
    comment: String,
    /// Keyed by the CA key's wire blob; the empty blob is the any-CA scope.
    authorities: BTreeMap<Vec<u8>, CaRevocations>,
    /// Keyed by the key's wire blob.
    explicit_keys: BTreeMap<Vec<u8>, KeyData>,
    sha256_hashes: BTreeSet<[u8; 32]>,
    sha1_hashes: BTreeSet<[u8; 20]>,
}

impl Krl {
    /// The KRL version number, which grows each time the list changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the KRL was generated, in seconds since the Unix epoch.
    pub fn generated_at(&self) -> u64 {
        self.generated_at
    }

    /// The free-form comment of the header.
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// Whether the KRL revokes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.authorities.is_empty()
            && self.explicit_keys.is_empty()
            && self.sha256_hashes.is_empty()
            && self.sha1_hashes.is_empty()
    }

    /// Certificate revocations per CA scope; the any-CA scope, if present, comes first.
    pub fn authorities(&self) -> impl Iterator<Item = &CaRevocations> {
        self.authorities.values()
    }

    /// Plain public keys revoked in full.
    pub fn explicit_keys(&self) -> impl Iterator<Item = &KeyData> {
        self.explicit_keys.values()
    }

    /// SHA-256 hashes of revoked public key blobs, in ascending order.
    pub fn sha256_hashes(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.sha256_hashes.iter()
    }

    /// SHA-1 hashes of revoked public key blobs, in ascending order (see the module's
    /// limitation: they are listed but not matched).
    pub fn sha1_hashes(&self) -> impl Iterator<Item = &[u8; 20]> {
        self.sha1_hashes.iter()
    }

    /// Whether a certificate with this serial and key ID, signed by `ca_key`, is revoked by
    /// serial or key ID, under that CA or under the any-CA scope.
    ///
    /// This does not look at the certificate's keys; [`Krl::revokes_certificate`] does.
    /// A CA key that cannot be serialised counts as revoked.
    pub fn is_certificate_revoked(&self, ca_key: &PublicKey, serial: u64, key_id: &str) -> bool {
        self.is_revoked_under(ca_key.key_data(), serial, key_id)
    }

    /// Whether a plain public key is revoked, in full or by SHA-256 hash.
    ///
    /// A key that cannot be serialised counts as revoked.
    pub fn is_key_revoked(&self, key: &PublicKey) -> bool {
        self.is_key_data_revoked(key.key_data())
    }

    /// Whether sshd would refuse this certificate: revoked by serial or key ID, or its subject
    /// key or its CA key revoked as plain keys.
    pub fn revokes_certificate(&self, certificate: &Certificate) -> bool {
        let ca_key = certificate.signature_key();

        self.is_revoked_under(ca_key, certificate.serial(), certificate.key_id())
            || self.is_key_data_revoked(certificate.public_key())
            || self.is_key_data_revoked(ca_key)
    }

    fn is_revoked_under(&self, ca_key: &KeyData, serial: u64, key_id: &str) -> bool {
        let Ok(ca_blob) = key_blob(ca_key, "CA key") else {
            return true;
        };

        // PROTOCOL.krl section 2: revocations apply under the signing CA and under any-CA.
        let scopes = [ca_blob.as_slice(), &[]];
        let revoked = scopes
            .into_iter()
            .filter_map(|blob| self.authorities.get(blob))
            .any(|revoked| revoked.is_key_id_revoked(key_id) || revoked.is_serial_revoked(serial));
        revoked
    }

    fn is_key_data_revoked(&self, key: &KeyData) -> bool {
        let Ok(blob) = key_blob(key, "key") else {
            return true;
        };
        let hash: [u8; 32] = Sha256::digest(&blob).into();

        self.explicit_keys.contains_key(&blob) || self.sha256_hashes.contains(&hash)
    }
}

/// SHA-256 over a public key's wire blob, the hash a KRL_SECTION_FINGERPRINT_SHA256 entry holds
/// (the same digest `ssh-keygen -l -E sha256` prints in base64).
pub fn sha256_fingerprint_blob(key: &PublicKey) -> [u8; 32] {
    // ssh-key hashes the key data's wire encoding; asking for SHA-256 always yields SHA-256,
    // so the fallback is never taken.
    key.fingerprint(HashAlg::Sha256)
        .sha256()
        .unwrap_or_default()
}

/// The wire blob of a key, as CA keys and explicit keys appear in a KRL.
fn key_blob(key: &KeyData, what: &'static str) -> Result<Vec<u8>, KrlError> {
    PublicKey::from(key.clone())
        .to_bytes()
        .map_err(|source| KrlError::InvalidKey { what, source })
}
