//! `jit ssh-config`: trust the servers' host certificates, so that no one accepts an unknown
//! host key on first use.
//!
//! Enrolled servers present a host certificate signed by the CA. This command writes
//! `<state>/known_hosts` with one `@cert-authority * <key>` line per trusted CA key and prints
//! a `Host` block for `~/.ssh/config` that uses it with `StrictHostKeyChecking yes`. Once the
//! file exists, `jit ssh` uses it by itself, checking the certificate against the host name the
//! grant names (`HostKeyAlias`), even when `HostName` points elsewhere.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

use super::ssh::ssh_config_path;
use super::{print_line, CommandError, Context};
use crate::state::StateDir;

/// File name of the managed known_hosts file in the state directory.
pub const KNOWN_HOSTS_FILE: &str = "known_hosts";

/// Arguments of `jit ssh-config`.
#[derive(Clone, Debug, Args)]
pub struct SshConfigCli {
    /// Host patterns for the printed `Host` block (as in ssh_config), e.g. `*.prod.example.com`.
    #[arg(value_name = "PATTERN")]
    pub hosts: Vec<String>,
}

/// The managed known_hosts file.
pub fn known_hosts_path(state: &StateDir) -> PathBuf {
    state.root().join(KNOWN_HOSTS_FILE)
}

/// The known_hosts text trusting `ca_keys` as host certificate authorities for every host.
pub fn known_hosts_text(ca_keys: &[String]) -> String {
    let mut text =
        String::from("# Written by `jit ssh-config`: host certificates the jit CA signed.\n");
    for key in ca_keys {
        text.push_str("@cert-authority * ");
        text.push_str(key.trim());
        text.push('\n');
    }
    text
}

/// Runs `jit ssh-config`.
pub async fn run(context: &Context, args: &SshConfigCli) -> Result<(), CommandError> {
    let state = context.state()?;
    let ca = context.ca()?;
    let ca_keys = ca.ca_keys().await?;
    if ca_keys.is_empty() {
        return Err(CommandError::BadArgument(
            "the CA published no keys; nothing to trust".into(),
        ));
    }

    let path = known_hosts_path(&state);
    state.write_private_file(&path, known_hosts_text(&ca_keys).as_bytes())?;
    let shown = ssh_config_path(&path)?;
    eprintln!(
        "wrote {} ({} CA key(s)); `jit ssh` uses it from now on",
        path.display(),
        ca_keys.len()
    );

    if args.hosts.is_empty() {
        eprintln!("for plain ssh, add to ~/.ssh/config (with your hosts' patterns):");
    }
    let patterns = if args.hosts.is_empty() {
        "PATTERN".to_owned()
    } else {
        args.hosts.join(" ")
    };
    print_line(&format!(
        "Host {patterns}\n    UserKnownHostsFile {shown}\n    StrictHostKeyChecking yes"
    ));
    Ok(())
}

/// The ssh options `jit ssh` adds when the managed known_hosts file exists: only that file,
/// strict checking, and the certificate checked for `host` as the grant names it.
pub fn known_hosts_options(state: &StateDir, host: &str) -> Result<Vec<OsString>, CommandError> {
    let path = known_hosts_path(state);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let shown = ssh_config_path(&path)?;
    Ok(vec![
        "-o".into(),
        format!("UserKnownHostsFile={shown}").into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("HostKeyAlias={host}").into(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ca_key_becomes_a_cert_authority_line() {
        let text = known_hosts_text(&[
            "ssh-ed25519 AAAA1 jit-ca".into(),
            "ssh-ed25519 AAAA2 jit-ca\n".into(),
        ]);

        let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "@cert-authority * ssh-ed25519 AAAA1 jit-ca",
                "@cert-authority * ssh-ed25519 AAAA2 jit-ca"
            ]
        );
    }

    #[test]
    fn jit_ssh_adds_nothing_until_the_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("jit")).unwrap();

        assert!(known_hosts_options(&state, "db-1").unwrap().is_empty());
        state
            .write_private_file(&known_hosts_path(&state), b"@cert-authority * k\n")
            .unwrap();
        let options = known_hosts_options(&state, "db-1").unwrap();

        assert!(options.contains(&OsString::from("StrictHostKeyChecking=yes")));
        assert!(options.contains(&OsString::from("HostKeyAlias=db-1")));
    }
}
