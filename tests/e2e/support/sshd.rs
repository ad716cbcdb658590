//! A real OpenSSH server on 127.0.0.1 that trusts user certificates, and the real `ssh` client
//! to log in to it.
//!
//! The server accepts certificates only: no authorized_keys, no passwords. Whom it lets in is
//! decided by three files the test controls: the trusted CA keys, one principals file per
//! Unix user, and optionally a revocation list.
//!
//! Run as root, sshd can log in any local user whose account is not locked. Run as anyone
//! else, it can only log in the user running it: [`Sshd::login_user`] is the user to use.

use std::fs::{self, File, Permissions};
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tempfile::TempDir;

use super::openssh::{generate_ed25519_key, isolated_ssh, poll_until, run_checked, with_suffix};

const SSHD: &str = "/usr/sbin/sshd";

/// Where sshd, run as root, chroots its unprivileged pre-authentication child. It refuses to
/// start without it, and containers often lack it.
const PRIVILEGE_SEPARATION_DIR: &str = "/run/sshd";

/// How often to retry when another process takes the port between picking and binding it.
const PORT_ATTEMPTS: usize = 5;

/// How long sshd may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `ssh` may run before it is killed and the test fails.
const SSH_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`Sshd::wait_for_log`] waits for a line to appear.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server trusts when it starts; each part can be rewritten while it runs, since sshd
/// reads these files anew for every authentication.
#[derive(Clone, Debug, Default)]
pub struct SshdOptions {
    /// `TrustedUserCAKeys` content: one CA public key a line, authorized_keys format.
    pub trusted_ca_keys: String,
    /// For each Unix user, the certificate principals that may log in as that user
    /// (`AuthorizedPrincipalsFile`). A user not listed here cannot log in at all.
    pub principals: Vec<(String, Vec<String>)>,
    /// `RevokedKeys`: a KRL or a list of public keys. When given, the file must exist, or
    /// sshd refuses every key.
    pub revoked_keys: Option<PathBuf>,
}

/// A running `sshd -D` with its configuration, host key and log in a temporary directory;
/// killed on drop.
pub struct Sshd {
    process: Child,
    port: u16,
    directory: TempDir,
}

impl Sshd {
    /// Writes the configuration, checks it with `sshd -t`, starts sshd on a free port of
    /// 127.0.0.1 and waits until it listens.
    ///
    /// Panics with sshd's complaint when the configuration is invalid, when sshd exits or
    /// does not listen in time, or when every port tried was taken by someone else.
    pub fn start(options: SshdOptions) -> Sshd {
        if is_root() {
            ensure_privilege_separation_dir();
        }

        // sshd reads a user's principals file with that user's privileges, so users other
        // than the one running the test need to reach it. Only the host key stays private.
        let directory = tempfile::tempdir().expect("create sshd's directory");
        set_mode(directory.path(), 0o755);
        let principals_dir = directory.path().join("principals");
        fs::create_dir(&principals_dir).expect("create the principals directory");
        set_mode(&principals_dir, 0o755);
        let (host_key, _) = generate_ed25519_key(directory.path(), "ssh_host_ed25519_key");

        let files = SshdFiles {
            directory: directory.path(),
        };
        files.set_trusted_ca_keys(&options.trusted_ca_keys);
        for (unix_user, principals) in &options.principals {
            files.set_principals(unix_user, principals);
        }

        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            files.write_config(port, &host_key, options.revoked_keys.as_deref());
            run_checked(Command::new(SSHD).arg("-t").arg("-f").arg(files.config()));

            let mut process = files.spawn();
            if files.wait_until_listening(&mut process, port).is_ok() {
                return Sshd {
                    process,
                    port,
                    directory,
                };
            }
        }
        panic!(
            "sshd found its port taken {PORT_ATTEMPTS} times:\n{}",
            files.log()
        );
    }

    /// The Unix user tests should log in as: the user running the tests (`id -un`), the only
    /// one a non-root sshd can log in. As root that is `root`, which sshd admits with a
    /// certificate (`PermitRootLogin prohibit-password`) unless root's password is locked
    /// with `!` (sshd without PAM then says "account is locked").
    pub fn login_user() -> String {
        let output = run_checked(Command::new("id").arg("-un"));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The port sshd listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything sshd has logged so far, at `LogLevel VERBOSE`: among others
    /// `Accepted certificate ID "<key id>" (serial <n>) signed by …` for each certificate it
    /// accepts, and the reason for each it refuses.
    pub fn log(&self) -> String {
        self.files().log()
    }

    /// Waits (boundedly) until sshd's log contains `needle`, and returns the log.
    ///
    /// sshd may write a refusal a moment after the client has given up, so tests that check
    /// the reason for a refusal should wait for it rather than read the log once. Panics
    /// with the whole log when `needle` does not show up.
    pub fn wait_for_log(&self, needle: &str) -> String {
        poll_until(LOG_TIMEOUT, || {
            Some(self.log()).filter(|log| log.contains(needle))
        })
        .unwrap_or_else(|| panic!("sshd never logged {needle:?}; its log:\n{}", self.log()))
    }

    /// Replaces the trusted CA keys (authorized_keys lines); takes effect at the next login.
    pub fn set_trusted_ca_keys(&self, authorized_keys_lines: &str) {
        self.files().set_trusted_ca_keys(authorized_keys_lines);
    }

    /// Replaces the principals that may log in as `unix_user`; an empty list locks the user
    /// out. Takes effect at the next login.
    pub fn set_principals(&self, unix_user: &str, principals: &[impl AsRef<str>]) {
        self.files().set_principals(unix_user, principals);
    }

    fn files(&self) -> SshdFiles<'_> {
        SshdFiles {
            directory: self.directory.path(),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// sshd exited because the port it was given was no longer free.
struct PortTaken;

/// The files of one server in its directory.
struct SshdFiles<'a> {
    directory: &'a Path,
}

impl SshdFiles<'_> {
    fn config(&self) -> PathBuf {
        self.directory.join("sshd_config")
    }

    fn log_path(&self) -> PathBuf {
        self.directory.join("sshd.log")
    }

    fn trusted_ca_keys(&self) -> PathBuf {
        self.directory.join("trusted_user_ca_keys")
    }

    fn principals_dir(&self) -> PathBuf {
        self.directory.join("principals")
    }

    fn log(&self) -> String {
        let bytes = fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn set_trusted_ca_keys(&self, authorized_keys_lines: &str) {
        write_readable(&self.trusted_ca_keys(), authorized_keys_lines);
    }

    fn set_principals(&self, unix_user: &str, principals: &[impl AsRef<str>]) {
        let mut content = String::new();
        for principal in principals {
            content.push_str(principal.as_ref());
            content.push('\n');
        }
        write_readable(&self.principals_dir().join(unix_user), &content);
    }

    /// `StrictModes no` because sshd would otherwise judge the temporary directory's owner
    /// and mode; `UsePAM no` because PAM needs root.
    fn write_config(&self, port: u16, host_key: &Path, revoked_keys: Option<&Path>) {
        let mut config = format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {host_key}\n\
             PidFile {pid_file}\n\
             AuthorizedKeysFile none\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             TrustedUserCAKeys {trusted_ca_keys}\n\
             AuthorizedPrincipalsFile {principals_dir}/%u\n\
             ExposeAuthInfo yes\n\
             LogLevel VERBOSE\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             MaxStartups 50\n\
             LoginGraceTime 30\n",
            host_key = host_key.display(),
            pid_file = self.directory.join("sshd.pid").display(),
            trusted_ca_keys = self.trusted_ca_keys().display(),
            principals_dir = self.principals_dir().display(),
        );
        if let Some(revoked_keys) = revoked_keys {
            config.push_str(&format!("RevokedKeys {}\n", revoked_keys.display()));
        }
        fs::write(self.config(), config).expect("write sshd_config");
    }

    /// Starts `sshd -D -e`: in the foreground, logging to stderr, which goes to the log file.
    fn spawn(&self) -> Child {
        let log = File::create(self.log_path()).expect("create sshd's log");
        Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd")
    }

    /// Waits for sshd's "Server listening" line, which it logs right after `listen()`, so
    /// connections are accepted from then on. A probe connection would do the same but leave
    /// a stray entry in the log tests read.
    fn wait_until_listening(&self, process: &mut Child, port: u16) -> Result<(), PortTaken> {
        let listening = format!("Server listening on 127.0.0.1 port {port}.");
        let outcome = poll_until(START_TIMEOUT, || {
            if self.log().contains(&listening) {
                return Some(None);
            }
            process.try_wait().ok().flatten().map(Some)
        });

        match outcome {
            Some(None) => Ok(()),
            Some(Some(_)) if self.log().contains("Address already in use") => Err(PortTaken),
            Some(Some(status)) => panic!("sshd exited with {status}:\n{}", self.log()),
            None => {
                let _ = process.kill();
                let _ = process.wait();
                panic!(
                    "sshd did not listen within {START_TIMEOUT:?}:\n{}",
                    self.log()
                )
            }
        }
    }
}

fn is_root() -> bool {
    let output = run_checked(Command::new("id").arg("-u"));
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

fn ensure_privilege_separation_dir() {
    fs::create_dir_all(PRIVILEGE_SEPARATION_DIR).expect("create sshd's privilege separation dir");
    // sshd insists that it be owned by root and writable by no one else.
    set_mode(Path::new(PRIVILEGE_SEPARATION_DIR), 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("chmod {mode:o} {}: {error}", path.display()));
}

/// Replaces `path` in one step (write beside it, then rename), so that a login racing the
/// rewrite sees the old file or the new one, never half of it.
fn write_readable(path: &Path, content: &str) {
    let staged = with_suffix(path, ".new");
    fs::write(&staged, content)
        .unwrap_or_else(|error| panic!("write {}: {error}", staged.display()));
    set_mode(&staged, 0o644);
    fs::rename(&staged, path).unwrap_or_else(|error| panic!("replace {}: {error}", path.display()));
}

/// A port on 127.0.0.1 that was free a moment ago. Someone may take it before sshd binds it;
/// [`Sshd::start`] retries then.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("read the bound port").port()
}

/// What one run of the `ssh` client did.
#[derive(Clone, Debug)]
pub struct SshOutcome {
    /// Whether `ssh` exited 0: it logged in and the remote command succeeded.
    pub status_success: bool,
    pub stdout: String,
    /// `ssh`'s own messages (e.g. `Permission denied (publickey)`) and the remote stderr.
    pub stderr: String,
}

/// Logs in to `sshd` as `user` with the real `ssh`, offering `identity` with `certificate`,
/// runs `remote_command` and returns what happened.
///
/// `host_alias` is the name `ssh` is given (`user@host_alias`); it connects to 127.0.0.1
/// whatever the alias. The client reads no configuration and no agent, and trusts any host
/// key. `extra` arguments come first, so an `-o` there wins over the defaults (`ssh` keeps
/// the first value it sees), e.g. `-o IdentityAgent=<socket>` to use an agent.
///
/// `ssh` also offers `<identity>-cert.pub` on its own when that file exists; keep other
/// certificates elsewhere. Panics when `ssh` cannot be started or runs longer than 20 s.
pub fn ssh_login(
    sshd: &Sshd,
    user: &str,
    host_alias: &str,
    identity: &Path,
    certificate: &Path,
    extra: &[&str],
    remote_command: &str,
) -> SshOutcome {
    let mut command = isolated_ssh(extra, identity, Some(certificate));
    command.args(["-o", "StrictHostKeyChecking=no"]);
    command.args(["-o", "UserKnownHostsFile=/dev/null"]);
    command.args(["-o", "HostName=127.0.0.1", "-o", "ConnectTimeout=5"]);
    command.arg("-p").arg(sshd.port().to_string());
    command
        .arg(format!("{user}@{host_alias}"))
        .arg(remote_command);

    run_bounded(command, SSH_TIMEOUT)
}

/// Like [`ssh_login`], but the client binds `source_address` (`ssh -b`) so sshd sees the
/// connection come from there, for `source-address` tests. All of 127.0.0.0/8 is local on
/// Linux, so any 127.x.y.z works without configuring an interface.
///
/// For extra arguments as well, pass `-b <address>` in [`ssh_login`]'s `extra`.
pub fn ssh_login_from(
    sshd: &Sshd,
    source_address: Ipv4Addr,
    user: &str,
    host_alias: &str,
    identity: &Path,
    certificate: &Path,
    remote_command: &str,
) -> SshOutcome {
    let source_address = source_address.to_string();
    let extra = ["-b", source_address.as_str()];
    ssh_login(
        sshd,
        user,
        host_alias,
        identity,
        certificate,
        &extra,
        remote_command,
    )
}

/// Runs `command` with its output captured, killing it once `timeout` has passed.
fn run_bounded(mut command: Command, timeout: Duration) -> SshOutcome {
    let mut process = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));

    // Drain both pipes while waiting, so a chatty child cannot block on a full one.
    let stdout = drain(process.stdout.take());
    let stderr = drain(process.stderr.take());
    let status: Option<ExitStatus> = poll_until(timeout, || process.try_wait().ok().flatten());
    if status.is_none() {
        let _ = process.kill();
        let _ = process.wait();
    }
    let (stdout, stderr) = (joined(stdout), joined(stderr));

    match status {
        Some(status) => SshOutcome {
            status_success: status.success(),
            stdout,
            stderr,
        },
        None => panic!("{command:?} ran longer than {timeout:?}:\n{stdout}\n{stderr}"),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn joined(reader: JoinHandle<String>) -> String {
    reader.join().unwrap_or_default()
}
