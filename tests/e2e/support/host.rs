//! A server managed by the real `jit-host`: a real sshd on 127.0.0.1 whose main configuration
//! only includes a drop-in directory, `jit-host setup` writing into it, and `jit-host run`
//! keeping it current.
//!
//! The main configuration holds what any server would have (port, a bootstrap host key, no
//! passwords) and nothing about the CA: everything sshd learns about certificates comes from
//! the files the agent writes.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::ca::{run_bounded, workspace_binary};
use super::openssh::{generate_ed25519_key, isolated_ssh, poll_until};

const SSHD: &str = "/usr/sbin/sshd";

/// How long sshd may take to start or restart.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What one `ssh` run did.
#[derive(Clone, Debug)]
pub struct Login {
    /// Whether `ssh` exited 0.
    pub success: bool,
    /// Remote standard output.
    pub stdout: String,
    /// ssh's own messages.
    pub stderr: String,
}

/// A running sshd whose CA trust is managed by `jit-host`; everything is killed on drop.
pub struct ManagedHost {
    dir: TempDir,
    sshd: Child,
    port: u16,
    agent: Option<Child>,
    agent_log: Arc<Mutex<String>>,
}

impl ManagedHost {
    /// Starts sshd with a main configuration that includes `sshd_config.d/*.conf` (empty for
    /// now) and waits until it listens.
    pub fn start() -> ManagedHost {
        fs::create_dir_all("/run/sshd").expect("create sshd's privilege separation dir");

        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            fs::create_dir(dir.path().join("sshd_config.d")).unwrap();
            let (bootstrap_key, _) = generate_ed25519_key(dir.path(), "bootstrap_host_key");
            let port = free_port();
            let config = main_config(dir.path(), port, &bootstrap_key);
            fs::write(dir.path().join("sshd_config"), config).unwrap();

            let log = File::create(dir.path().join("sshd.log")).unwrap();
            let sshd = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(dir.path().join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start sshd");
            let mut host = ManagedHost {
                dir,
                sshd,
                port,
                agent: None,
                agent_log: Arc::new(Mutex::new(String::new())),
            };
            if host.wait_listening(1) {
                return host;
            }
            last_log = host.sshd_log();
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("sshd did not start:\n{last_log}");
    }

    /// Waits until sshd has logged "Server listening" `times` times (it does so again after
    /// each reload).
    fn wait_listening(&mut self, times: usize) -> bool {
        let needle = format!("Server listening on 127.0.0.1 port {}.", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.sshd_log().matches(&needle).count() >= times {
                return true;
            }
            if let Ok(Some(_)) = self.sshd.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// sshd's main configuration.
    pub fn sshd_config(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    /// The drop-in directory.
    pub fn dropin_dir(&self) -> PathBuf {
        self.dir.path().join("sshd_config.d")
    }

    /// The agent's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("jit")
    }

    /// The installed KRL.
    pub fn krl(&self) -> PathBuf {
        self.state_dir().join("revoked_keys.krl")
    }

    /// Everything sshd logged.
    pub fn sshd_log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.path().join("sshd.log")).unwrap_or_default())
            .into_owned()
    }

    /// Everything `jit-host run` logged.
    pub fn agent_log(&self) -> String {
        self.agent_log.lock().unwrap().clone()
    }

    /// Runs `jit-host setup` against `server` with `token`, the sshd pid file for reloads and
    /// `extra` arguments; when it succeeds, waits until sshd has restarted with the drop-in.
    pub fn setup(&mut self, server: &str, name: &str, token: &str, extra: &[&str]) -> Output {
        let restarts_before = self.sshd_log().matches("Server listening on").count();
        let mut command = Command::new(workspace_binary("jit-host"));
        command
            .arg("setup")
            .args(["--server", server, "--name", name])
            .env("JIT_HOST_TOKEN", token)
            .arg("--sshd-config-dir")
            .arg(self.dropin_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--sshd-config")
            .arg(self.sshd_config())
            .arg("--sshd-pid-file")
            .arg(self.dir.path().join("sshd.pid"))
            .args(extra);
        let output = run_bounded(command, None, Duration::from_secs(60));
        if output.status.success() {
            assert!(
                self.wait_listening(restarts_before + 1),
                "sshd did not restart after setup:\n{}",
                self.sshd_log()
            );
        }
        output
    }

    /// Starts `jit-host run` with `extra` arguments (e.g. `--refresh-every 1s`).
    pub fn start_agent(&mut self, extra: &[&str]) {
        let mut child = Command::new(workspace_binary("jit-host"))
            .arg("run")
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(extra)
            .env("JIT_HOST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start jit-host run");
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&self.agent_log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        self.agent = Some(child);
    }

    /// Runs `jit-host status`.
    pub fn status(&self) -> Output {
        let mut command = Command::new(workspace_binary("jit-host"));
        command
            .arg("status")
            .arg("--state-dir")
            .arg(self.state_dir());
        run_bounded(command, None, Duration::from_secs(30))
    }

    /// Logs in with the real `ssh` as `user@host_alias`, offering `identity` with
    /// `certificate` and nothing else, trusting host keys as `known_hosts` says (strictly)
    /// or, without one, any host key. Runs `echo logged-in`.
    pub fn ssh(
        &self,
        user: &str,
        host_alias: &str,
        identity: &Path,
        certificate: &Path,
        known_hosts: Option<&Path>,
    ) -> Login {
        let mut command = self.ssh_command(host_alias, identity, Some(certificate), known_hosts);
        command
            .arg(format!("{user}@{host_alias}"))
            .arg("echo logged-in");
        let output = run_bounded(command, None, Duration::from_secs(20));
        Login {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The real `ssh` with its options set for this host (as [`ManagedHost::ssh`] describes;
    /// without `certificate`, `identity` is offered as a plain key), before the destination.
    pub fn ssh_command(
        &self,
        host_alias: &str,
        identity: &Path,
        certificate: Option<&Path>,
        known_hosts: Option<&Path>,
    ) -> Command {
        let mut command = isolated_ssh(&[], identity, certificate);
        match known_hosts {
            Some(file) => {
                command
                    .arg("-o")
                    .arg(format!("UserKnownHostsFile={}", file.display()));
                command.args(["-o", "StrictHostKeyChecking=yes"]);
                command.arg("-o").arg(format!("HostKeyAlias={host_alias}"));
            }
            None => {
                command.args(["-o", "StrictHostKeyChecking=no"]);
                command.args(["-o", "UserKnownHostsFile=/dev/null"]);
            }
        }
        command.args(["-o", "HostName=127.0.0.1", "-o", "ConnectTimeout=5"]);
        command.arg("-p").arg(self.port.to_string());
        command
    }

    /// Waits (at most `timeout`) until `ready` holds for the agent's state, returning whether
    /// it did.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&ManagedHost) -> bool,
    ) -> bool {
        poll_until(timeout, || ready(self).then_some(())).is_some()
    }
}

impl Drop for ManagedHost {
    fn drop(&mut self) {
        if let Some(agent) = &mut self.agent {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

/// What any server has, and an `Include` of the drop-in directory first, as Debian's default
/// configuration does. `StrictModes no` because the temporary directory is not root's alone;
/// `UsePAM no` because the test runs sshd outside a login session.
fn main_config(dir: &Path, port: u16, bootstrap_key: &Path) -> String {
    format!(
        "Include {dropins}/*.conf\n\
         ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {bootstrap_key}\n\
         PidFile {pid_file}\n\
         AuthorizedKeysFile none\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         LogLevel VERBOSE\n\
         StrictModes no\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         MaxStartups 50\n\
         LoginGraceTime 30\n",
        dropins = dir.join("sshd_config.d").display(),
        bootstrap_key = bootstrap_key.display(),
        pid_file = dir.join("sshd.pid").display(),
    )
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
