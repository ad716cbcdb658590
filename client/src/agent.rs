//! Loading a grant's key and certificate into the running `ssh-agent`.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Environment;

/// What happened when adding the key to the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentOutcome {
    /// `ssh-add` loaded the key for `lifetime`; `certificate` says whether it also reported
    /// loading the certificate beside it.
    Added {
        /// How long the agent keeps the key.
        lifetime: Duration,
        /// Whether `ssh-add` reported adding the certificate.
        certificate: bool,
    },
    /// `SSH_AUTH_SOCK` is not set.
    NoAgent,
    /// The certificate has no time left, so there is nothing to add.
    Expired,
    /// `ssh-add` could not be run or failed.
    Failed {
        /// Its complaint, on one line.
        reason: String,
    },
}

impl AgentOutcome {
    /// Whether the key is now in the agent.
    pub fn added(&self) -> bool {
        matches!(self, AgentOutcome::Added { .. })
    }
}

/// How long the agent should keep a key whose certificate ends at `valid_before`, seen at
/// `now`: the whole remaining validity, and `None` when none is left.
pub fn agent_lifetime(valid_before: DateTime<Utc>, now: DateTime<Utc>) -> Option<Duration> {
    let remaining = (valid_before - now).num_seconds();
    (remaining > 0).then(|| Duration::from_secs(remaining.unsigned_abs()))
}

/// Runs `ssh-add -t <seconds> <key>` when an agent is running; `ssh-add` picks up the
/// `-cert.pub` file beside the key by itself.
pub async fn add_to_agent(
    env: &Environment,
    key_path: &Path,
    valid_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AgentOutcome {
    if env.ssh_auth_sock.is_none() {
        return AgentOutcome::NoAgent;
    }
    let Some(lifetime) = agent_lifetime(valid_before, now) else {
        return AgentOutcome::Expired;
    };

    let output = tokio::process::Command::new("ssh-add")
        .arg("-t")
        .arg(lifetime.as_secs().to_string())
        .arg(key_path)
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match output {
        Ok(output) if output.status.success() => {
            let report = String::from_utf8_lossy(&output.stderr);
            AgentOutcome::Added {
                lifetime,
                certificate: report.contains("Certificate added"),
            }
        }
        Ok(output) => AgentOutcome::Failed {
            reason: crate::api::one_line(&String::from_utf8_lossy(&output.stderr)),
        },
        Err(error) => AgentOutcome::Failed {
            reason: format!("cannot run ssh-add: {error}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_instants::at;

    #[test]
    fn lifetime_is_the_remaining_validity() {
        assert_eq!(
            agent_lifetime(at(1798), at(0)),
            Some(Duration::from_secs(1798))
        );
        assert_eq!(agent_lifetime(at(0), at(0)), None);
        assert_eq!(agent_lifetime(at(-5), at(0)), None);
    }

    #[tokio::test]
    async fn without_an_agent_nothing_is_run() {
        let outcome = add_to_agent(
            &Environment::default(),
            Path::new("/nonexistent/key"),
            at(60),
            at(0),
        )
        .await;

        assert_eq!(outcome, AgentOutcome::NoAgent);
    }
}
