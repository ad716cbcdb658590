//! Start-up of the audit log: key, sink, writer, the `config_loaded` record and the
//! checkpoint loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{AuditError, AuditEvent, AuditKey, Auditor, ConfigLoaded, FileDigest, JsonlSink};
use crate::config::Config;
use crate::store::audit::AuditStore;

fn digest(role: &str, path: &Path) -> Result<FileDigest, AuditError> {
    let bytes = std::fs::read(path)
        .map_err(|error| AuditError::Encode(format!("cannot hash {}: {error}", path.display())))?;
    Ok(FileDigest {
        role: role.to_owned(),
        path: path.display().to_string(),
        sha256: jit_proto::audit::sha256_hex(&bytes),
    })
}

/// Opens the audit log of `config` on `store`: loads (or creates) the audit key, opens the
/// JSON Lines copy, starts the writer, records `config_loaded` with the digests of the files
/// read, signs a checkpoint, and starts signing them periodically. Fails, naming the file, when any of it cannot be done.
pub async fn start_audit(
    config: &Config,
    store: Arc<dyn AuditStore>,
    ca_key_fingerprint: &str,
) -> Result<Arc<Auditor>, AuditError> {
    let (key, created) = AuditKey::load_or_create(&config.audit.key_file)?;
    let audit_key_fingerprint = key.public_key().fingerprint();
    if created {
        tracing::info!(
            target: "security",
            path = %config.audit.key_file.display(),
            fingerprint = %audit_key_fingerprint,
            "created audit key"
        );
    }
    let sink = config
        .audit
        .jsonl
        .as_deref()
        .map(JsonlSink::open)
        .transpose()?;
    let auditor = Arc::new(Auditor::start(store, key, sink).await?);

    let files = vec![
        digest("config", &config.source)?,
        digest("profiles", &config.policy.profiles)?,
        digest("cedar", &config.policy.cedar)?,
    ];
    let loaded = AuditEvent::ConfigLoaded(ConfigLoaded {
        files,
        ca_key_fingerprint: ca_key_fingerprint.to_owned(),
        audit_key_fingerprint,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    auditor.record(loaded, Utc::now()).await?;
    // A checkpoint at every start: whatever was committed before (a crash included) is then
    // vouched for at once, and a stored log without any checkpoint means they were removed.
    auditor.checkpoint(Utc::now()).await?;

    let interval = Duration::from_secs(config.audit.checkpoint_interval_secs.max(1));
    Arc::clone(&auditor).spawn_checkpoints(interval);
    Ok(auditor)
}
