//! Starts the real `jit-ca` binary on loopback with a configuration written by the test, and
//! runs the real `jit` client against it.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::oidc::{OidcProvider, TestUser, JIT_CLIENT_ID};

/// Profiles used by most tests: `unix_user` is the user the test sshd can log in.
pub fn test_profiles(unix_user: &str) -> String {
    format!(
        r#"
[hosts]
db-1 = {{ groups = ["db-prod"] }}
db-2 = {{ groups = ["db-prod"] }}
web-1 = {{ groups = ["web"] }}

[profiles.read-only]
unix_users = ["{unix_user}"]
any_host = true
default_duration = "30m"
max_duration = "2h"
extensions = ["permit-pty"]

[profiles.pinned]
unix_users = ["{unix_user}"]
host_groups = ["db-prod"]
default_duration = "10m"
max_duration = "1h"
pin_source_address = true

[profiles.one-command]
unix_users = ["{unix_user}"]
host_groups = ["web"]
default_duration = "5m"
max_duration = "5m"
force_command = "echo forced-command-ran"

[profiles.db-root]
unix_users = ["{unix_user}", "postgres"]
host_groups = ["db-prod"]
default_duration = "15m"
max_duration = "1h"
require_ticket = true
ticket_pattern = "CHG-[0-9]+"
approvals = 2
"#
    )
}

/// Rules used by most tests.
pub const TEST_RULES: &str = r#"
@id("engineers-auto")
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource)
when { context.profile == "read-only" || context.profile == "pinned" || context.profile == "one-command" };

@id("dba-request-db-root")
permit (principal in Group::"dba", action == Action::"request", resource in HostGroup::"db-prod")
when { context.profile == "db-root" };

@id("holders-revoke-their-own")
permit (principal, action == Action::"revoke", resource) when { context.own };

@id("dba-revoke-db-prod")
permit (principal in Group::"dba", action == Action::"revoke", resource in HostGroup::"db-prod");

@id("responders-revoke-anything")
permit (principal in Group::"responders", action == Action::"revoke", resource);

@id("auditors-read-the-audit-log")
permit (principal in Group::"auditors", action == Action::"audit", resource);
"#;

/// A running `jit-ca serve`.
pub struct Ca {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    log: Arc<Mutex<String>>,
}

/// Path of a binary built by `cargo build --workspace` next to the test executable.
pub fn workspace_binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing; run `cargo build --workspace --bins` first",
        binary.display()
    );
    binary
}

/// Runs `jit-ca serve --config CONFIG`, collecting its stderr.
fn spawn_ca(config_path: &Path) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new(workspace_binary("jit-ca"))
        .args(["serve", "--config"])
        .arg(config_path)
        .env("JIT_CA_LOG", "info,jit_ca=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start jit-ca");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, log)
}

/// Waits up to 20 s for `/healthz` to answer; false when the CA exited or never answered.
fn wait_healthy(child: &mut Child, url: &str) -> bool {
    // Only asks whether the CA is up; the TLS suite checks its certificate itself.
    let probe = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("health probe client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let healthy = probe
            .get(format!("{url}/healthz"))
            .send()
            .map(|response| response.status().is_success())
            .unwrap_or(false);
        if healthy {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

impl Ca {
    /// Starts a CA trusting `issuer` for audience `client_id`, with the given policy files.
    pub fn start(issuer: &str, client_id: &str, profiles: &str, rules: &str) -> Ca {
        Ca::start_with(issuer, client_id, profiles, rules, "")
    }

    /// Like [`Ca::start`], with extra lines appended to the `[oidc]` section.
    pub fn start_with(
        issuer: &str,
        client_id: &str,
        profiles: &str,
        rules: &str,
        extra_oidc: &str,
    ) -> Ca {
        Ca::start_configured(issuer, client_id, profiles, rules, extra_oidc, "")
    }

    /// A CA trusting `provider` for the `jit` client, with [`test_profiles`] for `jituser` and
    /// [`TEST_RULES`], and `extra_config` as in [`Ca::start_configured`].
    pub fn start_standard(provider: &OidcProvider, extra_config: &str) -> Ca {
        let profiles = test_profiles("jituser");
        let issuer = provider.issuer();
        Ca::start_configured(
            issuer,
            JIT_CLIENT_ID,
            &profiles,
            TEST_RULES,
            "",
            extra_config,
        )
    }

    /// Like [`Ca::start_with`], with `extra_config` appended at the end of the file: its first
    /// lines continue the `[http]` section, and further tables (`[limits]`) may follow.
    pub fn start_configured(
        issuer: &str,
        client_id: &str,
        profiles: &str,
        rules: &str,
        extra_oidc: &str,
        extra_config: &str,
    ) -> Ca {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("profiles.toml"), profiles).unwrap();
        std::fs::write(dir.path().join("policy.cedar"), rules).unwrap();

        // The suites send hundreds of requests from one address; rate limits get their own
        // tests, so elsewhere they are set out of reach.
        let extra_config = if extra_config.contains("[limits]") {
            extra_config.to_owned()
        } else {
            format!("{extra_config}\n[limits]\nper_address_burst = 100000\nper_identity_burst = 100000\n")
        };
        let mut last_log = String::new();
        // The port is picked before the CA binds it; retry on the rare clash.
        for _attempt in 0..5 {
            let port = free_port();
            let config = format!(
                r#"
listen = "127.0.0.1:{port}"
[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
jwks_min_refetch_secs = 1
{extra_oidc}
[ca]
key_file = "ca_key"
[store]
url = "sqlite://jit-ca.db"
[policy]
profiles = "profiles.toml"
cedar = "policy.cedar"
[http]
max_body_bytes = 16384
{extra_config}
"#
            );
            let config_path = dir.path().join("jit-ca.toml");
            std::fs::write(&config_path, config).unwrap();

            let (mut child, log) = spawn_ca(&config_path);
            let scheme = if extra_config.contains("[tls]") {
                "https"
            } else {
                "http"
            };
            let url = format!("{scheme}://127.0.0.1:{port}");
            if wait_healthy(&mut child, &url) {
                return Ca {
                    child,
                    dir,
                    url,
                    log,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(50));
            last_log = log.lock().unwrap().clone();
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("jit-ca did not become healthy; its log:\n{last_log}");
    }

    /// Base URL, `http://127.0.0.1:PORT` (`https://` when `extra_config` has `[tls]`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Directory holding the config, key and database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite database file.
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("jit-ca.db")
    }

    /// Kills the CA with SIGKILL, as a crash would: nothing is flushed or closed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the CA again on the same directory, configuration and port; returns whether it
    /// became healthy. Its log then starts afresh.
    pub fn restart(&mut self) -> bool {
        self.kill();
        let (child, log) = spawn_ca(&self.dir.path().join("jit-ca.toml"));
        self.child = child;
        self.log = log;
        wait_healthy(&mut self.child, &self.url)
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("jit-ca.toml")
    }

    /// Everything the CA logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The CA's public keys as served for `TrustedUserCAKeys`.
    pub fn trusted_keys(&self) -> String {
        reqwest::blocking::get(format!("{}/v1/ca/keys", self.url))
            .and_then(|response| response.text())
            .expect("GET /v1/ca/keys")
    }

    /// Runs `sqlite3 DB SQL` and returns its output (the real CLI, reading the live store).
    pub fn sql(&self, query: &str) -> String {
        let output = Command::new("sqlite3")
            .arg(self.database())
            .arg(query)
            .output()
            .expect("run sqlite3");
        assert!(
            output.status.success(),
            "sqlite3 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Counts rows of a table.
    pub fn count(&self, table: &str) -> u64 {
        self.sql(&format!("SELECT COUNT(*) FROM {table}"))
            .parse()
            .expect("a count")
    }
}

impl Drop for Ca {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `jit` client with its own HOME, config and state directories.
pub struct Client {
    home: tempfile::TempDir,
    server: String,
    agent_socket: Option<PathBuf>,
}

impl Client {
    /// A client for the CA at `server`.
    pub fn new(server: &str) -> Client {
        Client {
            home: tempfile::tempdir().expect("tempdir"),
            server: server.to_owned(),
            agent_socket: None,
        }
    }

    /// Makes later commands use the ssh-agent at `socket`.
    pub fn use_agent(&mut self, socket: &Path) {
        self.agent_socket = Some(socket.to_owned());
    }

    /// The client's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.home.path().join("state/jit")
    }

    /// A `jit` command with the environment set, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(workspace_binary("jit"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("XDG_STATE_HOME", self.home.path().join("state"))
            .env("JIT_SERVER", &self.server)
            .env("TZ", "UTC");
        if let Some(socket) = &self.agent_socket {
            command.env("SSH_AUTH_SOCK", socket);
        }
        command
    }

    /// Runs `jit ARGS` to completion (bounded to 60 s).
    pub fn run(&self, args: &[&str]) -> Output {
        run_bounded(self.command(args), None, Duration::from_secs(60))
    }

    /// Runs `jit ARGS` with `input` on stdin.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        run_bounded(self.command(args), Some(input), Duration::from_secs(60))
    }

    /// Logs in with an ID token handed over on stdin.
    pub fn login_with_token(&self, id_token: &str) {
        let output = self.run_with_input(&["login", "--id-token-file", "-"], id_token);
        assert!(output.status.success(), "login failed: {}", stderr(&output));
    }

    /// Runs `jit request … --json` and returns the parsed object; panics when it fails.
    pub fn request_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["request"];
        full.extend_from_slice(args);
        full.push("--json");
        let output = self.run(&full);
        assert!(
            output.status.success(),
            "jit request failed: {}",
            stderr(&output)
        );
        serde_json::from_slice(&output.stdout).expect("jit request --json prints JSON")
    }
}

/// Runs `command`, feeding `input`, killing it after `limit`.
pub fn run_bounded(mut command: Command, input: Option<&str>, limit: Duration) -> Output {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn command");
    if let Some(input) = input {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stdout.read_to_end(&mut buffer);
        buffer
    });
    let err_thread = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = stderr.read_to_end(&mut buffer);
        buffer
    });

    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// A command's stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A command's stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `jit login --device` and plays the user's part in the provider when it prints the URL.
pub fn device_login(provider: &OidcProvider, client: &Client, user: &TestUser) {
    let mut child = client
        .command(&["login", "--device"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jit login");
    let stderr_pipe = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr_pipe).lines();

    let mut seen = String::new();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("jit login ended before printing a URL:\n{seen}"))
            .expect("read jit login output");
        seen.push_str(&line);
        seen.push('\n');
        if let Some(start) = line.find("http://") {
            let url = line[start..].split_whitespace().next().unwrap_or_default();
            if url.contains("user_code=") {
                break url.to_owned();
            }
        }
    };
    provider.complete_device_login(&url, user, false);

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for jit login") {
            break status;
        }
        assert!(Instant::now() < deadline, "jit login did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        status.success(),
        "jit login failed:\n{seen}{}",
        rest.join("\n")
    );
}
