//! `jit-host`, the agent that runs on every server: it enrols the server with the jit-ca CA,
//! then keeps sshd's view of the CA current — trusted CA keys, the KRL, the principals each
//! Unix user accepts and the host certificate — without anyone editing sshd's configuration by
//! hand.
//!
//! What it writes (default state directory `/etc/ssh/jit`):
//!
//! ```text
//! /etc/ssh/sshd_config.d/10-jit-host.conf   0644  the drop-in naming the files below
//! /etc/ssh/jit/                             0755
//!   trusted_user_ca_keys                    0644  TrustedUserCAKeys: the CA's keys
//!   revoked_keys.krl                        0644  RevokedKeys: the CA's KRL, always parsable
//!   principals/<unix user>                  0644  AuthorizedPrincipalsFile %u
//!   ssh_host_ed25519_key                    0600  HostKey (created when absent); it also
//!                                                 signs the agent's requests to the CA
//!   ssh_host_ed25519_key.pub                0644
//!   ssh_host_ed25519_key-cert.pub           0644  HostCertificate, signed by the CA
//!   agent.json                              0644  where the CA is and how to reload sshd
//!   sync.json                               0644  the last contact with the CA, for `status`
//! ```
//!
//! Rules it keeps: every file is replaced atomically (written beside, flushed, renamed), so
//! sshd never reads half a file or a missing one; the drop-in is written only after the files
//! it names exist, and sshd is reloaded only after `sshd -t` accepts the result; a KRL is
//! installed only if it parses and is newer than the installed one (an empty file would read
//! as "nothing revoked"); while the CA is unreachable the last good copies stay in force.
//!
//! The modules go from the bottom up: [`files`] writes atomically, [`layout`] names the files,
//! [`checks`] decides what may be installed and [`install`] installs it, [`ca`] talks to the
//! CA, [`sshd`] validates and reloads, and [`setup`], [`run`] and [`status`] are the three
//! commands. [`sessions`] watches the SSH sessions opened with the CA's certificates while
//! `run` runs, and ends those whose certificate is revoked or expires.

pub mod ca;
pub mod checks;
pub mod files;
pub mod install;
pub mod layout;
pub mod run;
pub mod sessions;
pub mod setup;
pub mod sshd;
pub mod status;

/// Why a command of the agent failed; each variant prints as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file could not be read or written.
    #[error(transparent)]
    File(#[from] files::FileError),
    /// The CA refused or could not be reached.
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    /// Something the CA sent may not be installed.
    #[error(transparent)]
    Refused(#[from] checks::Refusal),
    /// sshd refused the configuration or could not be reloaded.
    #[error(transparent)]
    Sshd(#[from] sshd::SshdError),
    /// The host key could not be created, read or used.
    #[error("host key {path}: {message}")]
    HostKey {
        /// The key file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The state directory was never set up.
    #[error("{0} holds no agent configuration; run `jit-host setup` first")]
    NotSetUp(String),
}
