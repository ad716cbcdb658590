//! `jit-host run`: keep the KRL, the CA keys, the principals and the host certificate current.
//!
//! The loop long-polls `GET /v1/krl` naming the installed version, so a revocation reaches
//! sshd about as soon as the CA records it, and refreshes the rest (signed with the host key)
//! every `refresh_every`. Each call is bounded in time; failures back off exponentially up to
//! [`MAX_BACKOFF`] and leave the installed files as they are, so the last good KRL stays in
//! force while the CA is unreachable. A new host certificate makes the agent reload sshd, the
//! only file sshd reads once rather than at every login.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::ca::{sign_refresh, CaClient, KrlFetch};
use crate::install::{install_host_config, install_krl, installed_krl, load_or_create_host_key};
use crate::layout::{read_json, write_json, AgentConfig, Layout, SyncState};
use crate::sessions::SessionOptions;
use crate::{sshd, AgentError};

/// The longest pause after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Polls that come back sooner than this are followed by a pause of this length.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The sync state is written at least this often while nothing changes.
const SYNC_WRITE_INTERVAL: Duration = Duration::from_secs(60);

/// How the loop paces itself.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// How long each KRL long-poll asks the CA to wait.
    pub poll_wait: Duration,
    /// How often the CA keys, principals and host certificate are refreshed.
    pub refresh_every: Duration,
    /// How sessions are watched and ended.
    pub sessions: SessionOptions,
}

/// Doubling pauses after consecutive failures, from 1 s to [`MAX_BACKOFF`].
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The pause after one more failure.
    pub fn next_pause(&mut self) -> Duration {
        let pause = Duration::from_secs(1u64 << self.failures.min(5));
        self.failures = self.failures.saturating_add(1);
        pause.min(MAX_BACKOFF)
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Runs until `shutdown` completes. Fails at start when the state directory was never set up
/// or the host key is unusable; afterwards only logs, backs off and carries on.
pub async fn run(
    layout: &Layout,
    options: RunOptions,
    clock: fn() -> DateTime<Utc>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let agent: AgentConfig = read_json(&layout.agent_file())?
        .ok_or_else(|| AgentError::NotSetUp(layout.state_dir().display().to_string()))?;
    let host_key = load_or_create_host_key(&agent.host_key)?;
    let ca = CaClient::new(&agent.server, agent.ca_bundle.as_deref())?;
    let mut sync: SyncState = read_json(&layout.sync_file())?.unwrap_or_default();
    tokio::pin!(shutdown);

    // The session monitor scans again as soon as a new KRL is installed.
    let krl_changes = tokio::sync::watch::Sender::new(installed_krl(layout)?.unwrap_or(0));
    crate::sessions::spawn(
        layout,
        options.sessions,
        ca.clone(),
        host_key.clone(),
        agent.name.clone(),
        clock,
        krl_changes.subscribe(),
    );

    let mut krl_backoff = Backoff::default();
    let mut refresh_backoff = Backoff::default();
    let mut next_refresh = Instant::now();
    let mut sync_written = Instant::now();
    tracing::info!(host = %agent.name, server = %agent.server, "jit-host running");

    loop {
        if Instant::now() >= next_refresh {
            let pause = match refresh(layout, &agent, &ca, &host_key, clock).await {
                Ok(()) => {
                    refresh_backoff.reset();
                    sync.last_refresh = clock().timestamp();
                    options.refresh_every
                }
                Err(error) => {
                    tracing::warn!(%error, "refresh failed; keeping the installed files");
                    sync.last_error = Some(error.to_string());
                    refresh_backoff.next_pause()
                }
            };
            next_refresh = Instant::now() + pause;
        }

        // A long-poll never outlasts the next refresh.
        let installed = installed_krl(layout)?;
        let until_refresh = next_refresh.saturating_duration_since(Instant::now());
        let wait = options
            .poll_wait
            .min(until_refresh)
            .max(Duration::from_secs(1));
        let polled_at = Instant::now();
        let polled = tokio::select! {
            polled = ca.krl(installed, wait) => polled,
            () = &mut shutdown => break,
        };
        // A CA that does not hold long-polls (a proxy cutting them, say) must not make this
        // loop spin.
        let answered_at_once =
            matches!(polled, Ok(KrlFetch::NotModified)) && polled_at.elapsed() < MIN_POLL_INTERVAL;

        let before = sync.clone();
        let failure = match polled {
            Ok(KrlFetch::NotModified) => None,
            Ok(KrlFetch::Changed(bytes)) => match install_krl(layout, &bytes) {
                Ok(version) => {
                    if Some(version) != installed {
                        tracing::info!(krl_version = version, "installed a new KRL");
                    }
                    sync.krl_version = version;
                    None
                }
                Err(error) => {
                    tracing::error!(%error, "the CA sent a KRL that cannot be installed; keeping the installed one");
                    Some(error.to_string())
                }
            },
            Err(error) => {
                tracing::warn!(%error, "KRL poll failed; the installed KRL stays in force");
                Some(error.to_string())
            }
        };
        match failure {
            None => {
                krl_backoff.reset();
                sync.last_contact = clock().timestamp();
                sync.last_error = None;
            }
            Some(message) => sync.last_error = Some(message),
        }

        let changed =
            sync.krl_version != before.krl_version || sync.last_error != before.last_error;
        if sync.krl_version != before.krl_version {
            krl_changes.send_replace(sync.krl_version);
        }
        if changed || sync_written.elapsed() >= SYNC_WRITE_INTERVAL {
            if let Err(error) = write_json(&layout.sync_file(), &sync) {
                tracing::warn!(%error, "cannot record the sync state");
            }
            sync_written = Instant::now();
        }

        let pause = if sync.last_error.is_some() {
            Some(krl_backoff.next_pause())
        } else {
            answered_at_once.then_some(MIN_POLL_INTERVAL)
        };
        if let Some(pause) = pause {
            tokio::select! {
                () = tokio::time::sleep(pause) => {},
                () = &mut shutdown => break,
            }
        }
    }

    tracing::info!("jit-host stopping");
    let _ = write_json(&layout.sync_file(), &sync);
    Ok(())
}

/// One signed refresh: CA keys, principals and host certificate, reloading sshd when the
/// certificate changed.
async fn refresh(
    layout: &Layout,
    agent: &AgentConfig,
    ca: &CaClient,
    host_key: &ssh_key::PrivateKey,
    clock: fn() -> DateTime<Utc>,
) -> Result<(), AgentError> {
    let signed = sign_refresh(host_key, &agent.name, clock())?;
    let config = ca.refresh(&signed).await?;
    let changes = install_host_config(
        layout,
        &config,
        &agent.host_key,
        host_key.public_key(),
        clock(),
    )?;
    if changes.ca_keys || changes.principals {
        tracing::info!(
            ca_keys = changes.ca_keys,
            principals = changes.principals,
            "installed new CA keys or principals"
        );
    }
    if changes.host_certificate {
        let reloaded = sshd::reload(&agent.reload).await?;
        tracing::info!(reloaded, valid_before = %config.host_certificate_valid_before, "installed a new host certificate");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();

        let pauses: Vec<u64> = (0..8).map(|_| backoff.next_pause().as_secs()).collect();
        backoff.reset();

        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff.next_pause(), Duration::from_secs(1));
    }
}
