//! Where the agent keeps what it writes, and the two small JSON files that carry its settings
//! (`agent.json`) and its last contact with the CA (`sync.json`) between runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{self, FileError, PUBLIC_FILE};

/// The files under the state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    state_dir: PathBuf,
}

impl Layout {
    /// The layout under `state_dir`.
    pub fn new(state_dir: &Path) -> Layout {
        Layout {
            state_dir: state_dir.to_path_buf(),
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `TrustedUserCAKeys`.
    pub fn ca_keys(&self) -> PathBuf {
        self.state_dir.join("trusted_user_ca_keys")
    }

    /// `RevokedKeys`.
    pub fn krl(&self) -> PathBuf {
        self.state_dir.join("revoked_keys.krl")
    }

    /// The directory of `AuthorizedPrincipalsFile <dir>/%u`.
    pub fn principals_dir(&self) -> PathBuf {
        self.state_dir.join("principals")
    }

    /// The host key created when absent.
    pub fn default_host_key(&self) -> PathBuf {
        self.state_dir.join("ssh_host_ed25519_key")
    }

    /// The agent's settings.
    pub fn agent_file(&self) -> PathBuf {
        self.state_dir.join("agent.json")
    }

    /// The last contact with the CA.
    pub fn sync_file(&self) -> PathBuf {
        self.state_dir.join("sync.json")
    }
}

/// `<key>-cert.pub`, where sshd and ssh look for a key's certificate.
pub fn certificate_path(host_key: &Path) -> PathBuf {
    let mut name = host_key.as_os_str().to_owned();
    name.push("-cert.pub");
    PathBuf::from(name)
}

/// `<key>.pub`.
pub fn public_key_path(host_key: &Path) -> PathBuf {
    let mut name = host_key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// How sshd is told to re-read its configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reload {
    /// `kill -HUP` the pid in this file.
    PidFile(PathBuf),
    /// Run this through `sh -c`.
    Command(String),
}

/// What `jit-host setup` decided, for `run` and `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The CA's base URL.
    pub server: String,
    /// This host's inventory name.
    pub name: String,
    /// The host key (its certificate is beside it).
    pub host_key: PathBuf,
    /// The sshd binary, for `sshd -t`.
    pub sshd_binary: PathBuf,
    /// sshd's main configuration, which includes the drop-in.
    pub sshd_config: PathBuf,
    /// The drop-in the agent wrote.
    pub dropin: PathBuf,
    /// How to reload sshd.
    pub reload: Reload,
    /// Extra roots (PEM) trusted for the CA's TLS certificate, besides the built-in ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
}

/// The last contact with the CA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// Version of the installed KRL.
    pub krl_version: u64,
    /// Last time the CA answered a KRL poll, Unix seconds.
    pub last_contact: i64,
    /// Last time the CA keys and principals were refreshed, Unix seconds.
    pub last_refresh: i64,
    /// The last failure, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Reads a JSON file, or `None` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, FileError> {
    let Some(bytes) = files::read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| FileError {
            action: "parse",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
        })
}

/// Writes a JSON file atomically, readable by all (it holds no secret).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    let mut text = serde_json::to_vec_pretty(value).unwrap_or_default();
    text.push(b'\n');
    files::write_atomically(path, &text, PUBLIC_FILE)
}
