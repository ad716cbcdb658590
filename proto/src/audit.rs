//! The audit log's record format and its verification, shared by the CA that writes the log and
//! the `jit` client that checks an exported copy offline.
//!
//! A record is a JSON object `{seq, time, event, data, prev_hash}` plus its `hash`. The hash
//! covers the record's *canonical bytes* (the object without `hash`, keys sorted, no spaces,
//! integers only) chained to the record before it:
//!
//! ```text
//! hash(n) = SHA-256( hash(n-1) || canonical(record n) )      hash(0) = 32 zero bytes
//! ```
//!
//! Because the canonical bytes are derived from the parsed value, a record still verifies after
//! a JSON tool re-indents it or reorders its keys, and fails after any change of content. A
//! checkpoint is the record count and the hash of the last record, signed by the CA's audit key
//! (Ed25519); it makes truncation and wholesale rewriting detectable by whoever holds it.
//!
//! [`ChainVerifier`] checks a stream of records against checkpoints and names the first record
//! at fault.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Prefixes the signed bytes of a checkpoint, so a checkpoint signature can never be mistaken
/// for a signature over anything else.
pub const CHECKPOINT_DOMAIN: &[u8] = b"jit-ca audit checkpoint v1\n";

/// The OpenSSH key type of the audit key.
const ED25519_KEY_TYPE: &str = "ssh-ed25519";

/// A SHA-256 value of the chain, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev_hash` of the first record.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// The hash of the record whose canonical bytes are `canonical`, following `self`.
    pub fn next(&self, canonical: &[u8]) -> ChainHash {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(canonical);
        ChainHash(hasher.finalize().into())
    }

    /// Parses 64 hex digits.
    pub fn parse(text: &str) -> Option<ChainHash> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(ChainHash(bytes))
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0
            .iter()
            .try_for_each(|byte| write!(formatter, "{byte:02x}"))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "ChainHash({self})")
    }
}

/// Lowercase hex SHA-256 of `bytes`, for file digests in events.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ChainHash(Sha256::digest(bytes).into()).to_string()
}

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// Records hold integers only: a float's text form is not stable across encoders.
    #[error("a number that is not an integer: {0}")]
    NotAnInteger(String),
}

/// The canonical text of `value`: object keys in byte order, no whitespace, strings escaped as
/// `serde_json` escapes them, integers only.
pub fn canonical_json(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write_canonical(value, &mut out)?;
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => {
            if number.is_f64() {
                return Err(CanonicalError::NotAnInteger(number.to_string()));
            }
            out.push_str(&number.to_string());
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(fields) => {
            // Sorted here, whatever order the map keeps, so the bytes never depend on it.
            let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
            out.push('{');
            for (index, (key, item)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(text: &str, out: &mut String) {
    // Serialising a string cannot fail; the fallback keeps the function total.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()));
}

/// The time format of records: RFC 3339, UTC, microseconds, `Z`.
pub fn record_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A record ready to store: its canonical body and the hash that seals it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Canonical JSON of the record without its hash.
    pub body: String,
    /// The chain hash after this record.
    pub hash: ChainHash,
}

/// Builds and seals record `seq` after the record whose hash is `prev_hash`. `event` is the
/// event type and `data` its fields.
pub fn seal_record(
    seq: u64,
    time: DateTime<Utc>,
    event: &str,
    data: Value,
    prev_hash: &ChainHash,
) -> Result<SealedRecord, CanonicalError> {
    let mut fields = Map::new();
    fields.insert("seq".into(), Value::from(seq));
    fields.insert("time".into(), Value::from(record_time(time)));
    fields.insert("event".into(), Value::from(event));
    fields.insert("data".into(), data);
    fields.insert("prev_hash".into(), Value::from(prev_hash.to_string()));
    let body = canonical_json(&Value::Object(fields))?;
    let hash = prev_hash.next(body.as_bytes());
    Ok(SealedRecord { seq, body, hash })
}

/// The exported (and streamed) form of a record: its body's fields plus `hash`.
pub fn exported_record(body: &str, hash: &ChainHash) -> Result<Value, serde_json::Error> {
    let mut value: Value = serde_json::from_str(body)?;
    if let Value::Object(fields) = &mut value {
        fields.insert("hash".into(), Value::from(hash.to_string()));
    }
    Ok(value)
}

/// A record as an auditor reads it. Unknown fields are kept by [`ChainVerifier`], which works on
/// the raw JSON; this view is for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When the event happened, as the CA saw it.
    pub time: DateTime<Utc>,
    /// Event type, for example `certificate_issued`.
    pub event: String,
    /// The event's fields (documented per type in `docs/audit.md`).
    pub data: Value,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
}

/// A signed statement: "the log had `record_count` records and the last one hashed to
/// `head_hash`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Number of records covered.
    pub record_count: u64,
    /// Hash of record `record_count` (all zeros for an empty log).
    pub head_hash: String,
    /// When it was signed (whole seconds).
    pub signed_at: DateTime<Utc>,
    /// Ed25519 signature over [`Checkpoint::signed_bytes`], base64.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes the audit key signs: domain, count, head hash and unix time, fixed width.
    pub fn signed_bytes(record_count: u64, head_hash: &ChainHash, signed_at: i64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 48);
        bytes.extend_from_slice(CHECKPOINT_DOMAIN);
        bytes.extend_from_slice(&record_count.to_be_bytes());
        bytes.extend_from_slice(&head_hash.0);
        bytes.extend_from_slice(&signed_at.to_be_bytes());
        bytes
    }

    /// Checks the signature with `key`.
    pub fn verify(&self, key: &AuditPublicKey) -> Result<ChainHash, ChainError> {
        let bad = || ChainError::BadCheckpoint {
            record_count: self.record_count,
            signed_at: self.signed_at,
        };
        let head_hash = ChainHash::parse(&self.head_hash).ok_or_else(bad)?;
        let signature_bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| bad())?;
        let signature = Signature::from_slice(&signature_bytes).map_err(|_| bad())?;
        let message =
            Checkpoint::signed_bytes(self.record_count, &head_hash, self.signed_at.timestamp());
        key.0
            .verify_strict(&message, &signature)
            .map_err(|_| bad())?;
        Ok(head_hash)
    }
}

/// One line of an export: a record or a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportLine {
    /// A record, kept as raw JSON so that verification sees exactly what was written.
    Record(Value),
    /// `{"checkpoint": {...}}`.
    Checkpoint(Checkpoint),
}

impl ExportLine {
    /// Parses one line of a JSON Lines export.
    pub fn parse(line: &str) -> Result<ExportLine, String> {
        let value: Value = serde_json::from_str(line).map_err(|error| error.to_string())?;
        match value.get("checkpoint") {
            Some(checkpoint) => serde_json::from_value(checkpoint.clone())
                .map(ExportLine::Checkpoint)
                .map_err(|error| format!("checkpoint: {error}")),
            None => Ok(ExportLine::Record(value)),
        }
    }

    /// The line for `checkpoint`.
    pub fn checkpoint_line(checkpoint: &Checkpoint) -> Value {
        serde_json::json!({ "checkpoint": checkpoint })
    }
}

/// The audit public key, read from its OpenSSH `ssh-ed25519 AAAA… comment` line.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditPublicKey(VerifyingKey);

impl fmt::Debug for AuditPublicKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "AuditPublicKey({})", self.fingerprint())
    }
}

impl From<VerifyingKey> for AuditPublicKey {
    fn from(key: VerifyingKey) -> AuditPublicKey {
        AuditPublicKey(key)
    }
}

impl AuditPublicKey {
    /// Wraps a raw Ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<AuditPublicKey, String> {
        VerifyingKey::from_bytes(bytes)
            .map(AuditPublicKey)
            .map_err(|_| "not a valid Ed25519 public key".to_owned())
    }

    /// Parses an OpenSSH public key line (the output of `GET /v1/audit/key`).
    pub fn parse_openssh(line: &str) -> Result<AuditPublicKey, String> {
        let mut words = line.split_whitespace();
        if words.next() != Some(ED25519_KEY_TYPE) {
            return Err("the audit key must be an `ssh-ed25519 …` line".into());
        }
        let blob = words
            .next()
            .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or("the audit key line has no base64 key")?;

        // RFC 8709 section 4: string "ssh-ed25519", then string holding the 32 key bytes.
        let mut rest = blob.as_slice();
        let key_type = take_ssh_string(&mut rest).ok_or("truncated key blob")?;
        let key = take_ssh_string(&mut rest).ok_or("truncated key blob")?;
        if key_type != ED25519_KEY_TYPE.as_bytes() || !rest.is_empty() {
            return Err("the key blob is not an Ed25519 key".into());
        }
        let key: [u8; 32] = key.try_into().map_err(|_| "wrong Ed25519 key length")?;
        AuditPublicKey::from_bytes(&key)
    }

    /// The key as one OpenSSH line.
    pub fn to_openssh(&self, comment: &str) -> String {
        let mut blob = Vec::with_capacity(51);
        for field in [ED25519_KEY_TYPE.as_bytes(), self.0.as_bytes()] {
            blob.extend_from_slice(&u32::try_from(field.len()).unwrap_or(0).to_be_bytes());
            blob.extend_from_slice(field);
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(&blob);
        format!("{ED25519_KEY_TYPE} {encoded} {comment}")
            .trim_end()
            .to_owned()
    }

    /// `SHA256:…` (unpadded base64), as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        let line = self.to_openssh("");
        let blob = line
            .split_whitespace()
            .nth(1)
            .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .unwrap_or_default();
        let digest = Sha256::digest(blob);
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest);
        format!("SHA256:{encoded}")
    }
}

fn take_ssh_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let length_bytes: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    let length = usize::try_from(u32::from_be_bytes(length_bytes)).ok()?;
    let value = rest.get(4..4 + length)?;
    *rest = &rest[4 + length..];
    Some(value)
}

/// Query of `GET /v1/audit`: every field narrows the result; records come in log order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The acting person's email (or subject when they have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Host or `group:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Event type, for example `certificate_issued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Certificate serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
    /// Grant (`g-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Request (`r-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Events at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Events before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Cursor: records after this sequence number (the previous page's `next_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Page size (default 100, at most [`MAX_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Largest page `GET /v1/audit` returns.
pub const MAX_PAGE: u32 = 1000;

/// Body of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Records in their exported form (body fields plus `hash`), in log order.
    pub records: Vec<Value>,
    /// When more may match: the cursor (`after`) for the next page.
    pub next_after: Option<u64>,
}

/// What a verification found wrong, naming the first record at fault where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A line is not a record of the expected shape.
    #[error("line {line}: not an audit record: {message}")]
    Unreadable {
        /// 1-based line (or row) number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The record's content does not produce its hash: it was edited.
    #[error("record {seq} was altered: its content does not match its hash")]
    Altered {
        /// The record.
        seq: u64,
    },
    /// The record does not point at the record before it.
    #[error("record {seq} does not follow record {previous}: the chain is broken between them")]
    BrokenLink {
        /// The record.
        seq: u64,
        /// The record before it in the log.
        previous: u64,
    },
    /// A record is absent, or records were moved: another one stands where it should be.
    #[error("record {expected} is missing or out of place: record {found} stands in its place")]
    Missing {
        /// The record that should come next.
        expected: u64,
        /// The record found instead.
        found: u64,
    },
    /// In a partial export, a record number does not increase.
    #[error("record {seq} is out of order: it comes after record {previous}")]
    OutOfOrder {
        /// The record.
        seq: u64,
        /// The record before it in the file.
        previous: u64,
    },
    /// A checkpoint's signature does not verify with the audit key (or it is malformed).
    #[error(
        "the checkpoint of {record_count} records signed at {signed_at} does not verify with \
         the audit key"
    )]
    BadCheckpoint {
        /// What it claims to cover.
        record_count: u64,
        /// When it claims to have been signed.
        signed_at: DateTime<Utc>,
    },
    /// The log ends before a record a checkpoint vouches for.
    #[error(
        "the log was truncated: the checkpoint signed at {signed_at} covers {record_count} \
         records, but the log ends at record {last}; record {first_missing} is the first one \
         missing"
    )]
    Truncated {
        /// The checkpoint's count.
        record_count: u64,
        /// When it was signed.
        signed_at: DateTime<Utc>,
        /// The last record present.
        last: u64,
        /// The first record absent.
        first_missing: u64,
    },
    /// The record a checkpoint vouches for has a different hash: the log was rewritten.
    #[error(
        "record {seq} differs from the checkpoint signed at {signed_at}: the log was rewritten"
    )]
    CheckpointMismatch {
        /// The record.
        seq: u64,
        /// The checkpoint's time.
        signed_at: DateTime<Utc>,
    },
    /// No checkpoint at all: a consistent chain alone proves nothing, anyone can compute one.
    #[error("no checkpoint signed by the audit key: the records cannot be vouched for")]
    NoCheckpoint,
}

impl ChainError {
    /// The first record at fault, when the fault is one record's.
    pub fn record(&self) -> Option<u64> {
        match self {
            ChainError::Altered { seq }
            | ChainError::BrokenLink { seq, .. }
            | ChainError::OutOfOrder { seq, .. }
            | ChainError::CheckpointMismatch { seq, .. } => Some(*seq),
            ChainError::Missing { expected, .. } => Some(*expected),
            ChainError::Truncated { first_missing, .. } => Some(*first_missing),
            ChainError::Unreadable { .. }
            | ChainError::BadCheckpoint { .. }
            | ChainError::NoCheckpoint => None,
        }
    }
}

/// Whether every record from 1 on must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// A whole log: records 1..N, no gaps. Proves nothing was removed.
    Complete,
    /// A filtered export: gaps allowed, each record checked against its own `prev_hash`, and
    /// neighbours linked where they are consecutive. Proves what is there is unaltered only.
    Partial,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// The last record's number (0 when none).
    pub last_seq: u64,
    /// Checkpoints whose signatures verified.
    pub checkpoints: usize,
    /// Records covered by the newest checkpoint.
    pub covered: u64,
}

impl Verified {
    /// Records after the newest checkpoint: chained, but not yet vouched for by a signature.
    pub fn unsigned_tail(&self) -> u64 {
        self.last_seq.saturating_sub(self.covered)
    }
}

/// Checks records one at a time, in log order, against checkpoints given up front.
#[derive(Debug)]
pub struct ChainVerifier {
    completeness: Completeness,
    // Count -> (vouched head hash, signing time), for every valid checkpoint.
    anchors: BTreeMap<u64, (ChainHash, DateTime<Utc>)>,
    checkpoint_count: usize,
    last: Option<(u64, ChainHash)>,
    records: u64,
    line: usize,
}

impl ChainVerifier {
    /// Starts a verification. Every checkpoint must verify with `key`; one that does not is
    /// an error, not something to skip.
    pub fn new(
        completeness: Completeness,
        checkpoints: &[Checkpoint],
        key: &AuditPublicKey,
    ) -> Result<ChainVerifier, ChainError> {
        let mut anchors = BTreeMap::new();
        for checkpoint in checkpoints {
            let head_hash = checkpoint.verify(key)?;
            anchors.insert(checkpoint.record_count, (head_hash, checkpoint.signed_at));
        }
        Ok(ChainVerifier {
            completeness,
            anchors,
            checkpoint_count: checkpoints.len(),
            last: None,
            records: 0,
            line: 0,
        })
    }

    /// Checks the next record, given as its exported JSON (body fields plus `hash`).
    pub fn push(&mut self, record: &Value) -> Result<(), ChainError> {
        self.line += 1;
        let line = self.line;
        let unreadable = |message: &str| ChainError::Unreadable {
            line,
            message: message.to_owned(),
        };
        let Value::Object(fields) = record else {
            return Err(unreadable("not a JSON object"));
        };
        let mut body = fields.clone();
        let stated_hash = body
            .remove("hash")
            .as_ref()
            .and_then(Value::as_str)
            .and_then(ChainHash::parse)
            .ok_or_else(|| unreadable("no valid `hash`"))?;
        let seq = body
            .get("seq")
            .and_then(Value::as_u64)
            .filter(|seq| *seq > 0)
            .ok_or_else(|| unreadable("no valid `seq`"))?;
        let prev_hash = body
            .get("prev_hash")
            .and_then(Value::as_str)
            .and_then(ChainHash::parse)
            .ok_or_else(|| unreadable("no valid `prev_hash`"))?;

        // Position first: a record where another belongs says more than its hash would.
        let (previous_seq, previous_hash) = self.last.unwrap_or((0, ChainHash::GENESIS));
        let consecutive = seq == previous_seq + 1;
        match self.completeness {
            Completeness::Complete if !consecutive => {
                return Err(ChainError::Missing {
                    expected: previous_seq + 1,
                    found: seq,
                })
            }
            Completeness::Partial if seq <= previous_seq => {
                return Err(ChainError::OutOfOrder {
                    seq,
                    previous: previous_seq,
                })
            }
            _ => {}
        }
        if consecutive && prev_hash != previous_hash {
            return Err(ChainError::BrokenLink {
                seq,
                previous: previous_seq,
            });
        }

        let canonical =
            canonical_json(&Value::Object(body)).map_err(|_| ChainError::Altered { seq })?;
        let hash = prev_hash.next(canonical.as_bytes());
        if hash != stated_hash {
            return Err(ChainError::Altered { seq });
        }
        if let Some((vouched, signed_at)) = self.anchors.get(&seq) {
            if *vouched != hash {
                return Err(ChainError::CheckpointMismatch {
                    seq,
                    signed_at: *signed_at,
                });
            }
        }

        self.last = Some((seq, hash));
        self.records += 1;
        Ok(())
    }

    /// Also holds the log to records an auditor kept from an earlier, verified export: a
    /// record at the same position with another hash is named as rewritten.
    pub fn hold(&mut self, kept: &[KeptRecord]) {
        for record in kept {
            self.anchors
                .entry(record.seq)
                .or_insert((record.hash, record.signed_at));
        }
    }

    /// Ends the verification: every checkpoint must fall within the records seen.
    pub fn finish(self) -> Result<Verified, ChainError> {
        let last_seq = self.last.map_or(0, |(seq, _)| seq);
        let Some((&newest, &(_, signed_at))) = self.anchors.iter().next_back() else {
            return Err(ChainError::NoCheckpoint);
        };
        // A filtered export may end anywhere; only a whole log must reach every checkpoint.
        if self.completeness == Completeness::Complete && newest > last_seq {
            return Err(ChainError::Truncated {
                record_count: newest,
                signed_at,
                last: last_seq,
                first_missing: last_seq + 1,
            });
        }
        Ok(Verified {
            records: self.records,
            last_seq,
            checkpoints: self.checkpoint_count,
            covered: newest.min(last_seq),
        })
    }
}

/// A record of an earlier export that its checkpoint vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptRecord {
    /// Its number.
    pub seq: u64,
    /// Its hash.
    pub hash: ChainHash,
    /// When the checkpoint that vouches for it was signed.
    pub signed_at: DateTime<Utc>,
}

/// What an auditor kept from an earlier export: its checkpoints, and, when it verifies as a
/// whole log, the records they vouch for. Held against a later export, they expose a truncated
/// or rewritten log and name the first record that differs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kept {
    /// Checkpoints that verified.
    pub checkpoints: Vec<Checkpoint>,
    /// Records covered by them.
    pub records: Vec<KeptRecord>,
}

impl Kept {
    /// Reads an earlier export (or a file of checkpoint lines). Checkpoints are kept when they
    /// verify; records only when the whole file verifies as a complete log.
    pub fn read(text: &str, key: &AuditPublicKey) -> Result<Kept, ChainError> {
        let checkpoints = checkpoints_in(text);
        for checkpoint in &checkpoints {
            checkpoint.verify(key)?;
        }
        let Ok(verified) = verify_export(text, &Kept::default(), key, Completeness::Complete)
        else {
            return Ok(Kept {
                checkpoints,
                records: Vec::new(),
            });
        };
        let newest = checkpoints
            .iter()
            .max_by_key(|checkpoint| checkpoint.record_count)
            .map(|checkpoint| checkpoint.signed_at);
        let records = text
            .lines()
            .filter_map(|line| match ExportLine::parse(line) {
                Ok(ExportLine::Record(record)) => Some(record),
                _ => None,
            })
            .filter_map(|record| {
                let seq = record.get("seq")?.as_u64()?;
                let hash = ChainHash::parse(record.get("hash")?.as_str()?)?;
                (seq <= verified.covered).then_some(KeptRecord {
                    seq,
                    hash,
                    signed_at: newest?,
                })
            })
            .collect();
        Ok(Kept {
            checkpoints,
            records,
        })
    }
}

/// Verifies a whole JSON Lines export: its checkpoint lines, and what the auditor `kept` from
/// before (which is what exposes a truncation).
pub fn verify_export(
    text: &str,
    kept: &Kept,
    key: &AuditPublicKey,
    completeness: Completeness,
) -> Result<Verified, ChainError> {
    let mut records = Vec::new();
    let mut checkpoints = kept.checkpoints.clone();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match ExportLine::parse(line) {
            Ok(ExportLine::Record(record)) => records.push((index + 1, record)),
            Ok(ExportLine::Checkpoint(checkpoint)) => checkpoints.push(checkpoint),
            Err(message) => {
                return Err(ChainError::Unreadable {
                    line: index + 1,
                    message,
                })
            }
        }
    }

    let mut verifier = ChainVerifier::new(completeness, &checkpoints, key)?;
    verifier.hold(&kept.records);
    for (line, record) in &records {
        verifier.line = line - 1;
        verifier.push(record)?;
    }
    verifier.finish()
}

/// The checkpoints in an export (or any JSON Lines file), for `--checkpoint FILE`.
pub fn checkpoints_in(text: &str) -> Vec<Checkpoint> {
    text.lines()
        .filter_map(|line| match ExportLine::parse(line) {
            Ok(ExportLine::Checkpoint(checkpoint)) => Some(checkpoint),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::json;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn signing_key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn public_key() -> AuditPublicKey {
        AuditPublicKey(signing_key().verifying_key())
    }

    fn sign(record_count: u64, head_hash: &ChainHash, signed_at: DateTime<Utc>) -> Checkpoint {
        let message = Checkpoint::signed_bytes(record_count, head_hash, signed_at.timestamp());
        let signature = signing_key().sign(&message);
        Checkpoint {
            record_count,
            head_hash: head_hash.to_string(),
            signed_at,
            signature: base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
        }
    }

    /// Five records and a checkpoint over all of them, as export lines.
    fn log() -> (Vec<Value>, Checkpoint) {
        let mut head = ChainHash::GENESIS;
        let mut records = Vec::new();
        for seq in 1..=5 {
            let data = json!({ "user": format!("user-{seq}"), "serial": seq });
            let sealed = seal_record(seq, at(seq as i64), "request_created", data, &head).unwrap();
            head = sealed.hash;
            records.push(exported_record(&sealed.body, &sealed.hash).unwrap());
        }
        (records, sign(5, &head, at(10)))
    }

    fn verify(records: &[Value], checkpoints: &[Checkpoint]) -> Result<Verified, ChainError> {
        let mut verifier = ChainVerifier::new(Completeness::Complete, checkpoints, &public_key())?;
        for record in records {
            verifier.push(record)?;
        }
        verifier.finish()
    }

    #[test]
    fn canonical_form_sorts_keys_and_refuses_floats() {
        let value = json!({ "b": [1, "x\n"], "a": { "d": null, "c": true } });

        assert_eq!(
            canonical_json(&value).unwrap(),
            r#"{"a":{"c":true,"d":null},"b":[1,"x\n"]}"#
        );
        assert!(canonical_json(&json!({ "x": 1.5 })).is_err());
    }

    #[test]
    fn sealing_is_deterministic_and_pinned() {
        let sealed =
            seal_record(1, at(0), "config_loaded", json!({}), &ChainHash::GENESIS).unwrap();

        assert_eq!(
            sealed.body,
            "{\"data\":{},\"event\":\"config_loaded\",\"prev_hash\":\"".to_owned()
                + &"0".repeat(64)
                + "\",\"seq\":1,\"time\":\"2027-01-15T08:00:00.000000Z\"}"
        );
        assert_eq!(sealed.hash, ChainHash::GENESIS.next(sealed.body.as_bytes()));
    }

    #[test]
    fn an_intact_log_verifies_even_reformatted() {
        let (records, checkpoint) = log();
        let reformatted: Vec<Value> = records
            .iter()
            .map(|record| {
                serde_json::from_str(&serde_json::to_string_pretty(record).unwrap()).unwrap()
            })
            .collect();

        let verified = verify(&reformatted, &[checkpoint]).unwrap();

        assert_eq!(verified.records, 5);
        assert_eq!(verified.covered, 5);
        assert_eq!(verified.unsigned_tail(), 0);
    }

    #[test]
    fn an_edited_record_is_named() {
        let (mut records, checkpoint) = log();
        records[2]["data"]["user"] = json!("mallory");

        let error = verify(&records, &[checkpoint]).unwrap_err();

        assert_eq!(error, ChainError::Altered { seq: 3 });
    }

    #[test]
    fn a_deleted_record_is_named() {
        let (mut records, checkpoint) = log();
        records.remove(1);

        let error = verify(&records, &[checkpoint]).unwrap_err();

        assert_eq!(
            error,
            ChainError::Missing {
                expected: 2,
                found: 3
            }
        );
        assert_eq!(error.record(), Some(2));
    }

    #[test]
    fn swapped_records_are_named() {
        let (mut records, checkpoint) = log();
        records.swap(1, 2);

        let error = verify(&records, &[checkpoint]).unwrap_err();

        assert_eq!(error.record(), Some(2));
    }

    #[test]
    fn a_record_rehashed_after_editing_breaks_the_next_link() {
        let (mut records, checkpoint) = log();
        records[1]["data"]["user"] = json!("mallory");
        let mut body = records[1].as_object().unwrap().clone();
        body.remove("hash");
        let prev = ChainHash::parse(records[0]["hash"].as_str().unwrap()).unwrap();
        let rehashed = prev.next(canonical_json(&Value::Object(body)).unwrap().as_bytes());
        records[1]["hash"] = json!(rehashed.to_string());

        let error = verify(&records, &[checkpoint]).unwrap_err();

        assert_eq!(
            error,
            ChainError::BrokenLink {
                seq: 3,
                previous: 2
            }
        );
    }

    #[test]
    fn truncation_is_caught_against_a_held_checkpoint() {
        let (records, checkpoint) = log();
        let head_3 = ChainHash::parse(records[2]["hash"].as_str().unwrap()).unwrap();
        let later = sign(3, &head_3, at(20));

        // Without the old checkpoint, a log cut to three records with a fresh checkpoint over
        // those three looks whole; with it, the cut shows.
        assert!(verify(&records[..3], std::slice::from_ref(&later)).is_ok());
        let error = verify(&records[..3], &[later, checkpoint]).unwrap_err();

        assert!(matches!(
            error,
            ChainError::Truncated {
                record_count: 5,
                last: 3,
                first_missing: 4,
                ..
            }
        ));
    }

    #[test]
    fn forged_or_missing_checkpoints_are_refused() {
        let (records, mut checkpoint) = log();
        assert_eq!(verify(&records, &[]).unwrap_err(), ChainError::NoCheckpoint);

        checkpoint.record_count = 4;
        let error = verify(&records, &[checkpoint]).unwrap_err();

        assert!(matches!(error, ChainError::BadCheckpoint { .. }));
    }

    #[test]
    fn a_rewritten_log_differs_from_its_checkpoint() {
        let (_, checkpoint) = log();
        let mut head = ChainHash::GENESIS;
        let mut rewritten = Vec::new();
        for seq in 1..=5 {
            let sealed = seal_record(seq, at(0), "request_created", json!({}), &head).unwrap();
            head = sealed.hash;
            rewritten.push(exported_record(&sealed.body, &sealed.hash).unwrap());
        }

        let error = verify(&rewritten, &[checkpoint]).unwrap_err();

        assert!(matches!(
            error,
            ChainError::CheckpointMismatch { seq: 5, .. }
        ));
    }

    #[test]
    fn partial_exports_allow_gaps_but_not_edits() {
        let (records, checkpoint) = log();
        let filtered = [records[0].clone(), records[3].clone()];
        let mut verifier =
            ChainVerifier::new(Completeness::Partial, &[checkpoint], &public_key()).unwrap();
        for record in &filtered {
            verifier.push(record).unwrap();
        }
        assert_eq!(verifier.finish().unwrap().records, 2);

        let mut edited = records[3].clone();
        edited["data"]["serial"] = json!(99);
        let mut verifier = ChainVerifier::new(Completeness::Partial, &[], &public_key()).unwrap();
        assert_eq!(verifier.push(&edited), Err(ChainError::Altered { seq: 4 }));
    }

    #[test]
    fn exports_round_trip_through_text() {
        let (records, checkpoint) = log();
        let mut text: String = records.iter().map(|record| format!("{record}\n")).collect();
        text.push_str(&format!("{}\n", ExportLine::checkpoint_line(&checkpoint)));

        let verified = verify_export(
            &text,
            &Kept::default(),
            &public_key(),
            Completeness::Complete,
        )
        .unwrap();

        assert_eq!(verified.last_seq, 5);
        assert_eq!(checkpoints_in(&text), vec![checkpoint]);
    }

    #[test]
    fn a_kept_export_names_the_first_rewritten_record() {
        let (records, checkpoint) = log();
        let lines = |records: &[Value], checkpoint: &Checkpoint| {
            let mut text: String = records.iter().map(|record| format!("{record}\n")).collect();
            text.push_str(&format!("{}\n", ExportLine::checkpoint_line(checkpoint)));
            text
        };
        let kept = Kept::read(&lines(&records, &checkpoint), &public_key()).unwrap();

        // Cut after record 2 and regrown with other records, under a fresh checkpoint.
        let mut head = ChainHash::parse(records[1]["hash"].as_str().unwrap()).unwrap();
        let mut regrown = records[..2].to_vec();
        for seq in 3..=6 {
            let sealed = seal_record(seq, at(50), "config_loaded", json!({}), &head).unwrap();
            head = sealed.hash;
            regrown.push(exported_record(&sealed.body, &sealed.hash).unwrap());
        }
        let fresh = sign(6, &head, at(60));
        let text = lines(&regrown, &fresh);

        let alone = verify_export(
            &text,
            &Kept::default(),
            &public_key(),
            Completeness::Complete,
        );
        let held = verify_export(&text, &kept, &public_key(), Completeness::Complete);

        assert!(alone.is_ok());
        assert!(
            matches!(held, Err(ChainError::CheckpointMismatch { seq: 3, .. })),
            "{held:?}"
        );
    }

    #[test]
    fn public_keys_round_trip_through_openssh_lines() {
        let key = public_key();
        let line = key.to_openssh("jit-ca-audit");

        assert!(line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"));
        assert_eq!(AuditPublicKey::parse_openssh(&line).unwrap(), key);
        assert!(AuditPublicKey::parse_openssh("ssh-rsa AAAA").is_err());
        assert!(key.fingerprint().starts_with("SHA256:"));
    }
}
