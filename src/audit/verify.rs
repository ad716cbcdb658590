//! `jit-ca audit verify`: the live store checked with the client's offline verifier, plus the
//! one thing only the store has, its filter columns, checked against each record's body.

use chrono::DateTime;
use jit_proto::audit::{AuditPublicKey, ChainVerifier, Completeness, Verified};
use serde_json::Value;

use super::{AuditError, AuditEvent};
use crate::store::audit::{AuditFilter, AuditRow, AuditStore};

/// Records read per query.
const PAGE: u32 = 1000;

/// Verifies the whole stored log against every stored checkpoint and `key`. Names the first
/// record at fault.
pub async fn verify_store(
    store: &dyn AuditStore,
    key: &AuditPublicKey,
) -> Result<Verified, AuditError> {
    let checkpoints = store.audit_checkpoints().await?;
    let mut verifier = ChainVerifier::new(Completeness::Complete, &checkpoints, key)?;

    let mut filter = AuditFilter {
        limit: PAGE,
        ..AuditFilter::default()
    };
    loop {
        let rows = store.audit_rows(&filter).await?;
        for row in &rows {
            let record = exported(row)?;
            verifier.push(&record)?;
            check_index(row, &record)?;
        }
        match rows.last() {
            Some(last) if rows.len() == PAGE as usize => filter.after_seq = last.seq,
            _ => break,
        }
    }
    Ok(verifier.finish()?)
}

fn exported(row: &AuditRow) -> Result<Value, AuditError> {
    let damaged = || AuditError::Damaged(format!("record {} is not valid JSON", row.seq));
    let mut record: Value = serde_json::from_str(&row.body).map_err(|_| damaged())?;
    let fields = record.as_object_mut().ok_or_else(damaged)?;
    fields.insert("hash".into(), Value::from(row.hash.clone()));
    Ok(record)
}

/// The filter columns must say what the (already verified) body says, or a filter could hide
/// the record.
fn check_index(row: &AuditRow, record: &Value) -> Result<(), AuditError> {
    let mismatch = |what: &str| {
        AuditError::Damaged(format!(
            "record {}: the stored {what} does not match its content",
            row.seq
        ))
    };
    let event = serde_json::json!({ "event": record["event"], "data": record["data"] });
    let parsed: AuditEvent = serde_json::from_value(event).map_err(|_| mismatch("event"))?;
    if parsed.index() != row.index {
        return Err(mismatch("filter columns"));
    }
    if record["event"].as_str() != Some(row.event.as_str()) {
        return Err(mismatch("event type"));
    }
    let time = record["time"]
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.timestamp_micros());
    if time != Some(row.time.timestamp_micros()) {
        return Err(mismatch("time"));
    }
    Ok(())
}
