//! `jit-host status`: how old the installed copy is and whether it matches the CA's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use ssh_key::Certificate;

use crate::ca::{CaClient, KrlFetch};
use crate::checks::installed_krl_version;
use crate::files;
use crate::install::installed_krl;
use crate::layout::{certificate_path, read_json, AgentConfig, Layout, SyncState};
use crate::AgentError;

/// Where the installed KRL stands against the CA's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CaComparison {
    /// The CA's current version is installed.
    InSync,
    /// The CA has a newer version.
    Behind {
        /// The CA's version.
        ca_version: u64,
    },
    /// The CA could not be asked.
    Unreachable {
        /// Why.
        reason: String,
    },
}

/// What `status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// This host's name.
    pub name: String,
    /// The CA.
    pub server: String,
    /// Version of the installed KRL; `None` when none is installed (sshd then refuses every
    /// login).
    pub krl_version: Option<u64>,
    /// Last time the CA answered, if ever.
    pub last_contact: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub seconds_since_contact: Option<i64>,
    /// The last failure the agent recorded.
    pub last_error: Option<String>,
    /// The comparison with the CA.
    pub ca: CaComparison,
    /// When the installed host certificate expires.
    pub host_certificate_valid_before: Option<DateTime<Utc>>,
}

impl StatusReport {
    /// Whether everything is as it should be.
    pub fn healthy(&self) -> bool {
        self.krl_version.is_some() && self.ca == CaComparison::InSync
    }
}

/// Gathers the report at `now`, asking the CA (briefly) for its version.
pub async fn status(layout: &Layout, now: DateTime<Utc>) -> Result<StatusReport, AgentError> {
    let agent: AgentConfig = read_json(&layout.agent_file())?
        .ok_or_else(|| AgentError::NotSetUp(layout.state_dir().display().to_string()))?;
    let sync: SyncState = read_json(&layout.sync_file())?.unwrap_or_default();
    let krl_version = installed_krl(layout)?;

    let ca = match CaClient::new(&agent.server, agent.ca_bundle.as_deref()) {
        Ok(client) => compare(&client, krl_version).await,
        Err(error) => CaComparison::Unreachable {
            reason: error.to_string(),
        },
    };
    let last_contact = (sync.last_contact > 0)
        .then(|| DateTime::from_timestamp(sync.last_contact, 0))
        .flatten();
    let certificate_text = files::read_optional(&certificate_path(&agent.host_key))?;
    let host_certificate_valid_before = certificate_text
        .and_then(|bytes| Certificate::from_openssh(String::from_utf8_lossy(&bytes).trim()).ok())
        .and_then(|certificate| i64::try_from(certificate.valid_before()).ok())
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0));

    Ok(StatusReport {
        name: agent.name,
        server: agent.server,
        krl_version,
        seconds_since_contact: last_contact.map(|contact| (now - contact).num_seconds()),
        last_contact,
        last_error: sync.last_error,
        ca,
        host_certificate_valid_before,
    })
}

async fn compare(ca: &CaClient, installed: Option<u64>) -> CaComparison {
    match ca.krl(installed, Duration::ZERO).await {
        Ok(KrlFetch::NotModified) => CaComparison::InSync,
        Ok(KrlFetch::Changed(bytes)) => match installed_krl_version(Some(&bytes)) {
            Some(ca_version) if Some(ca_version) == installed => CaComparison::InSync,
            Some(ca_version) => CaComparison::Behind { ca_version },
            None => CaComparison::Unreachable {
                reason: "the CA sent an unparsable KRL".into(),
            },
        },
        Err(error) => CaComparison::Unreachable {
            reason: error.to_string(),
        },
    }
}

/// The report as lines for a human.
pub fn render(report: &StatusReport) -> Vec<String> {
    let mut lines = vec![format!(
        "host:        {} (CA {})",
        report.name, report.server
    )];
    lines.push(match report.krl_version {
        Some(version) => format!("KRL:         version {version} installed"),
        None => "KRL:         none installed: sshd refuses every login until one is".to_owned(),
    });
    lines.push(match (report.last_contact, report.seconds_since_contact) {
        (Some(contact), Some(age)) => {
            format!("last contact: {} ({age}s ago)", contact.to_rfc3339())
        }
        _ => "last contact: never".to_owned(),
    });
    lines.push(match &report.ca {
        CaComparison::InSync => "CA:          in sync".to_owned(),
        CaComparison::Behind { ca_version } => {
            format!("CA:          behind: the CA is at version {ca_version}")
        }
        CaComparison::Unreachable { reason } => {
            format!("CA:          unreachable ({reason}); the installed KRL stays in force")
        }
    });
    if let Some(error) = &report.last_error {
        lines.push(format!("last error:  {error}"));
    }
    if let Some(valid_before) = report.host_certificate_valid_before {
        lines.push(format!(
            "host cert:   valid until {}",
            valid_before.to_rfc3339()
        ));
    }
    lines
}
