//! `jit-host setup`: enrol this server and point sshd at the CA's files.
//!
//! The order is what keeps sshd working throughout: the KRL is fetched and checked first (an
//! unreachable CA fails the setup before the one-time token is spent), then the token is traded
//! for the host certificate and configuration, every file is written, and only then the
//! drop-in that names them. `sshd -t` (and `sshd -T`) must accept the result before sshd is
//! reloaded; when they do not, the previous drop-in is put back.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_proto::revocation::{HostConfig, HostEnrollRequest};

use crate::ca::{CaClient, CaError, KrlFetch};
use crate::files::{self, PUBLIC_DIR, PUBLIC_FILE};
use crate::install::{install_host_config, install_krl, load_or_create_host_key};
use crate::layout::{write_json, AgentConfig, Layout, Reload, SyncState};
use crate::sshd::{self, dropin_path, render_dropin};
use crate::AgentError;

/// Attempts at reaching the CA before setup gives up.
const ATTEMPTS: u32 = 3;

/// What `jit-host setup` is told.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    /// Base URL of the CA.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// This server's name in the CA's inventory.
    #[arg(long)]
    pub name: String,
    /// The token `jit-ca host enroll NAME` printed (or set JIT_HOST_TOKEN).
    #[arg(long, env = "JIT_HOST_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Where sshd includes drop-in files from.
    #[arg(long, default_value = "/etc/ssh/sshd_config.d")]
    pub sshd_config_dir: PathBuf,
    /// Where the agent keeps the CA keys, KRL, principals and host key.
    #[arg(long, default_value = "/etc/ssh/jit")]
    pub state_dir: PathBuf,
    /// The sshd binary, for `sshd -t`.
    #[arg(long, default_value = "/usr/sbin/sshd")]
    pub sshd_binary: PathBuf,
    /// sshd's main configuration; it must include the drop-in directory.
    #[arg(long, default_value = "/etc/ssh/sshd_config")]
    pub sshd_config: PathBuf,
    /// The host key to certify (default: <state-dir>/ssh_host_ed25519_key, created if absent).
    #[arg(long)]
    pub host_key: Option<PathBuf>,
    /// sshd's pid file, signalled with SIGHUP to reload it.
    #[arg(long, default_value = "/run/sshd.pid")]
    pub sshd_pid_file: PathBuf,
    /// Reload sshd with this shell command instead (e.g. `systemctl reload ssh`).
    #[arg(long, value_name = "COMMAND")]
    pub reload_command: Option<String>,
    /// PEM file of the root(s) that issued the CA's TLS certificate, when that is a private
    /// root; `run` and `status` keep using it.
    #[arg(long, value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,
}

impl SetupArgs {
    /// How sshd is to be reloaded: the command when one is given, else SIGHUP to the pid file.
    pub fn reload(&self) -> Reload {
        match &self.reload_command {
            Some(command) => Reload::Command(command.clone()),
            None => Reload::PidFile(self.sshd_pid_file.clone()),
        }
    }
}

/// What setup did, for the summary it prints.
#[derive(Debug, Clone)]
pub struct SetupReport {
    /// The configuration the CA sent.
    pub config: HostConfig,
    /// The KRL version installed.
    pub krl_version: u64,
    /// The drop-in written.
    pub dropin: PathBuf,
    /// Whether a running sshd was reloaded.
    pub reloaded: bool,
}

/// Runs the setup; `clock` gives the current time at each step that needs it.
pub async fn setup(
    args: &SetupArgs,
    clock: fn() -> DateTime<Utc>,
) -> Result<SetupReport, AgentError> {
    let layout = Layout::new(&args.state_dir);
    files::create_dir(layout.state_dir(), PUBLIC_DIR)?;
    let host_key_path = args
        .host_key
        .clone()
        .unwrap_or_else(|| layout.default_host_key());
    let host_key = load_or_create_host_key(&host_key_path)?;
    // Kept as an absolute path: `run` may start in another directory.
    let ca_bundle = args
        .ca_bundle
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .map_err(|error| {
            CaError::Bundle(jit_trust::BundleError {
                path: args.ca_bundle.clone().unwrap_or_default(),
                reason: error.to_string(),
            })
        })?;
    let ca = CaClient::new(&args.server, ca_bundle.as_deref())?;

    // The KRL first: sshd must never be pointed at a missing or unusable one.
    let krl = with_retries(|| ca.krl(None, Duration::ZERO)).await?;
    let KrlFetch::Changed(krl_bytes) = krl else {
        return Err(CaError::BadResponse {
            url: format!("{}/v1/krl", ca.server()),
            status: 304,
        }
        .into());
    };
    crate::checks::check_krl(&krl_bytes, None)?;

    let request = HostEnrollRequest {
        name: args.name.clone(),
        token: args.token.trim().to_owned(),
        host_public_key: host_key.public_key().to_openssh().map_err(|error| {
            AgentError::HostKey {
                path: host_key_path.display().to_string(),
                message: error.to_string(),
            }
        })?,
    };
    let config = with_retries(|| ca.enroll(&request)).await?;

    let krl_version = install_krl(&layout, &krl_bytes)?;
    install_host_config(
        &layout,
        &config,
        &host_key_path,
        host_key.public_key(),
        clock(),
    )?;
    let dropin = dropin_path(&args.sshd_config_dir);
    let agent = AgentConfig {
        server: ca.server().to_owned(),
        name: config.name.clone(),
        host_key: host_key_path.clone(),
        sshd_binary: args.sshd_binary.clone(),
        sshd_config: args.sshd_config.clone(),
        dropin: dropin.clone(),
        reload: args.reload(),
        ca_bundle,
    };
    write_json(&layout.agent_file(), &agent)?;
    let now = clock().timestamp();
    let sync = SyncState {
        krl_version,
        last_contact: now,
        last_refresh: now,
        last_error: None,
    };
    write_json(&layout.sync_file(), &sync)?;

    // Only now does sshd get told about the files, and only if it accepts them.
    let previous = files::read_optional(&dropin)?;
    files::create_dir(&args.sshd_config_dir, PUBLIC_DIR)?;
    let text = render_dropin(&layout, &host_key_path);
    files::write_atomically(&dropin, text.as_bytes(), PUBLIC_FILE)?;
    if let Err(refusal) = sshd::validate(&args.sshd_binary, &args.sshd_config, &layout).await {
        match previous {
            Some(previous) => files::write_atomically(&dropin, &previous, PUBLIC_FILE)?,
            None => files::remove(&dropin)?,
        }
        return Err(refusal.into());
    }
    let reloaded = sshd::reload(&args.reload()).await?;

    Ok(SetupReport {
        config,
        krl_version,
        dropin,
        reloaded,
    })
}

/// Calls the CA up to [`ATTEMPTS`] times while it is unreachable, waiting 1 s, then 2 s.
/// Refusals are not retried.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, CaError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CaError>>,
{
    let mut pause = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(CaError::Unreachable { .. }) if attempt < ATTEMPTS => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}
