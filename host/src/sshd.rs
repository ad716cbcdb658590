//! sshd's side: the drop-in the agent owns, the checks before sshd is told to use it, and the
//! reload.
//!
//! sshd keeps the first value it reads for most options, and distributions include
//! `sshd_config.d/*.conf` before their own settings, so the drop-in is named to sort early.
//! After `sshd -t` accepts the configuration, `sshd -T` (the effective settings) must show the
//! agent's files: an earlier file setting the same options would otherwise silently win.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::layout::{certificate_path, Layout, Reload};

/// File name of the drop-in.
pub const DROPIN_NAME: &str = "10-jit-host.conf";

/// How long `sshd -t`, `sshd -T` or a reload command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why sshd would not take the configuration, or could not be reloaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshdError {
    /// `sshd -t` refused the configuration.
    #[error("sshd -t refused {config}: {output}")]
    Invalid {
        /// The main configuration checked.
        config: String,
        /// What sshd said, on one line.
        output: String,
    },
    /// Another file sets an option first, so sshd would not use the agent's value.
    #[error("sshd would use {option} {effective}, not {wanted}: an earlier configuration file sets it; remove that line")]
    Overridden {
        /// The option.
        option: &'static str,
        /// The value sshd would use.
        effective: String,
        /// The agent's value.
        wanted: String,
    },
    /// A command could not be run or timed out.
    #[error("cannot run {command}: {message}")]
    Command {
        /// The command.
        command: String,
        /// What failed.
        message: String,
    },
    /// The reload failed.
    #[error("reloading sshd failed: {0}")]
    Reload(String),
}

/// The drop-in naming the agent's files, for the host key at `host_key`.
pub fn render_dropin(layout: &Layout, host_key: &Path) -> String {
    format!(
        "# Written by jit-host setup; rewritten at each setup, do not edit.\n\
         # Trust certificates from the jit-ca CA, refuse what its KRL revokes, and let each Unix\n\
         # user in only with the principals listed in its file.\n\
         TrustedUserCAKeys {ca_keys}\n\
         RevokedKeys {krl}\n\
         AuthorizedPrincipalsFile {principals}/%u\n\
         ExposeAuthInfo yes\n\
         HostKey {host_key}\n\
         HostCertificate {certificate}\n",
        ca_keys = layout.ca_keys().display(),
        krl = layout.krl().display(),
        principals = layout.principals_dir().display(),
        host_key = host_key.display(),
        certificate = certificate_path(host_key).display(),
    )
}

/// Runs `sshd -t -f <main config>`, then checks with `sshd -T` that the effective settings
/// are the drop-in's.
pub async fn validate(
    sshd_binary: &Path,
    main_config: &Path,
    layout: &Layout,
) -> Result<(), SshdError> {
    let checked = run(sshd_binary, &["-t", "-f"], main_config).await?;
    if !checked.0 {
        return Err(SshdError::Invalid {
            config: main_config.display().to_string(),
            output: one_line(&checked.1),
        });
    }

    let (dumped, output) = run(sshd_binary, &["-T", "-f"], main_config).await?;
    if !dumped {
        return Err(SshdError::Invalid {
            config: main_config.display().to_string(),
            output: one_line(&output),
        });
    }
    let wanted = [
        ("TrustedUserCAKeys", path_text(&layout.ca_keys())),
        ("RevokedKeys", path_text(&layout.krl())),
        (
            "AuthorizedPrincipalsFile",
            format!("{}/%u", layout.principals_dir().display()),
        ),
    ];
    for (option, value) in wanted {
        let effective = effective_value(&output, option).unwrap_or_default();
        if effective != value {
            return Err(SshdError::Overridden {
                option,
                effective: if effective.is_empty() {
                    "nothing".into()
                } else {
                    effective
                },
                wanted: value,
            });
        }
    }
    Ok(())
}

/// The value `sshd -T` reports for `option` (it prints lowercase names).
fn effective_value(dump: &str, option: &str) -> Option<String> {
    let wanted = option.to_ascii_lowercase();
    dump.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == wanted).then(|| value.trim().to_owned())
    })
}

/// Tells sshd to re-read its configuration. A pid file that does not exist means sshd is not
/// running, which is no failure: it reads the configuration when it starts. Returns whether a
/// running sshd was signalled (or the command ran).
pub async fn reload(reload: &Reload) -> Result<bool, SshdError> {
    match reload {
        Reload::Command(command) => {
            let (succeeded, output) = run_command("sh", &["-c", command.as_str()]).await?;
            if !succeeded {
                return Err(SshdError::Reload(one_line(&output)));
            }
            Ok(true)
        }
        Reload::PidFile(pid_file) => {
            let text = match std::fs::read_to_string(pid_file) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(error) => {
                    return Err(SshdError::Reload(format!(
                        "cannot read {}: {error}",
                        pid_file.display()
                    )))
                }
            };
            let pid: u32 = text.trim().parse().map_err(|_| {
                SshdError::Reload(format!("{} holds no process id", pid_file.display()))
            })?;
            let pid = pid.to_string();
            let (succeeded, output) = run_command("kill", &["-HUP", pid.as_str()]).await?;
            if !succeeded {
                return Err(SshdError::Reload(one_line(&output)));
            }
            Ok(true)
        }
    }
}

async fn run(binary: &Path, args: &[&str], file: &Path) -> Result<(bool, String), SshdError> {
    let mut all: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    all.push(path_text(file));
    let words: Vec<&str> = all.iter().map(String::as_str).collect();
    run_command(&path_text(binary), &words).await
}

/// Runs a command with no input, bounded in time; returns whether it succeeded and its output.
async fn run_command(program: &str, args: &[&str]) -> Result<(bool, String), SshdError> {
    let shown = format!("{program} {}", args.join(" "));
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| SshdError::Command {
            command: shown.clone(),
            message: error.to_string(),
        })?;
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| SshdError::Command {
            command: shown.clone(),
            message: format!("no answer within {}s", COMMAND_TIMEOUT.as_secs()),
        })?
        .map_err(|error| SshdError::Command {
            command: shown,
            message: error.to_string(),
        })?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

fn one_line(text: &str) -> String {
    let joined: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    joined.join(" / ")
}

/// The drop-in path in `dir`.
pub fn dropin_path(dir: &Path) -> PathBuf {
    dir.join(DROPIN_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dropin_names_every_file_the_agent_keeps() {
        let layout = Layout::new(Path::new("/etc/ssh/jit"));

        let text = render_dropin(&layout, Path::new("/etc/ssh/jit/ssh_host_ed25519_key"));

        for line in [
            "TrustedUserCAKeys /etc/ssh/jit/trusted_user_ca_keys",
            "RevokedKeys /etc/ssh/jit/revoked_keys.krl",
            "AuthorizedPrincipalsFile /etc/ssh/jit/principals/%u",
            "ExposeAuthInfo yes",
            "HostKey /etc/ssh/jit/ssh_host_ed25519_key",
            "HostCertificate /etc/ssh/jit/ssh_host_ed25519_key-cert.pub",
        ] {
            assert!(
                text.lines().any(|candidate| candidate == line),
                "{line} missing:\n{text}"
            );
        }
    }

    #[test]
    fn effective_values_are_read_from_sshd_dump() {
        let dump = "port 22\nrevokedkeys /etc/ssh/jit/revoked_keys.krl\ntrustedusercakeys none\n";

        assert_eq!(
            effective_value(dump, "RevokedKeys").as_deref(),
            Some("/etc/ssh/jit/revoked_keys.krl")
        );
        assert_eq!(
            effective_value(dump, "TrustedUserCAKeys").as_deref(),
            Some("none")
        );
        assert_eq!(effective_value(dump, "AuthorizedPrincipalsFile"), None);
    }

    #[tokio::test]
    async fn a_missing_pid_file_means_nothing_to_reload() {
        let dir = tempfile::tempdir().unwrap();

        let signalled = reload(&Reload::PidFile(dir.path().join("sshd.pid")))
            .await
            .unwrap();

        assert!(!signalled);
    }

    #[tokio::test]
    async fn a_failing_reload_command_is_reported() {
        let error = reload(&Reload::Command("echo nope >&2; exit 3".into()))
            .await
            .unwrap_err();

        assert!(error.to_string().contains("nope"), "{error}");
    }
}
