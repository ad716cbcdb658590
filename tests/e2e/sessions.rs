//! Live sessions end to end: a real sshd on loopback kept by the real `jit-host run`, real
//! `ssh` clients holding sessions open with background processes inside them, the real CA and
//! the real `jit`. Revoking a grant closes its session within five seconds and leaves another
//! person's session and a plain-key session running; a grant that expires is warned on its
//! terminal and closed at its end; nothing started inside a closed session survives; `jit
//! sessions` shows who is logged in while they are, and the audit log has each start and end
//! with its cause.
//!
//! sshd run by anyone but root can only log in the user running it, and only root may signal
//! other users' processes, so these tests need root (CI runs as root); elsewhere they say so
//! and pass without running.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::ca::{
    run_bounded, stderr, stdout, test_profiles, workspace_binary, Ca, Client, TEST_RULES,
};
use crate::support::host::ManagedHost;
use crate::support::oidc::{OidcProvider, TestUser, JIT_CLIENT_ID};
use crate::support::openssh::{generate_ed25519_key, poll_until};
use crate::support::sshd::Sshd;

/// The bound the issue sets between a revocation and the end of the sessions it reaches.
const TERMINATION_DEADLINE: Duration = Duration::from_secs(5);

/// Approvers of read-only grants see the sessions opened with them.
const APPROVER_RULE: &str = r#"
@id("approvers-review-read-only")
permit (principal in Group::"approvers", action == Action::"approve", resource)
when { context.profile == "read-only" };
"#;

fn frank() -> TestUser {
    TestUser::new("frank", &["engineers"])
}

fn audrey() -> TestUser {
    TestUser::new("audrey", &["auditors"])
}

struct World {
    provider: OidcProvider,
    ca: Ca,
    scratch: tempfile::TempDir,
}

/// The CA and its provider, or `None` (said on stderr) when the tests cannot run here.
fn world() -> Option<World> {
    let user = Sshd::login_user();
    if user != "root" {
        eprintln!(
            "skipping: session tests log in as root and signal its processes; running as {user}"
        );
        return None;
    }
    let mut cast = TestUser::cast();
    cast.extend([frank(), audrey()]);
    let provider = OidcProvider::start(&cast);
    let rules = format!("{TEST_RULES}{APPROVER_RULE}");
    let ca = Ca::start(
        provider.issuer(),
        JIT_CLIENT_ID,
        &test_profiles(&user),
        &rules,
    );
    Some(World {
        provider,
        ca,
        scratch: tempfile::tempdir().expect("tempdir"),
    })
}

impl World {
    fn client(&self, user: &TestUser) -> Client {
        let client = Client::new(self.ca.url());
        let token = self
            .provider
            .device_flow_id_token(JIT_CLIENT_ID, user, false);
        client.login_with_token(&token);
        client
    }

    /// db-1 enrolled and kept by `jit-host run` with `agent_args`; root may also log in with
    /// the plain key whose private half is returned.
    fn managed_db_1(&self, agent_args: &[&str]) -> (ManagedHost, PathBuf) {
        let mut host = ManagedHost::start();
        let (plain_key, plain_public) = generate_ed25519_key(self.scratch.path(), "plain_key");
        let authorized = self.scratch.path().join("authorized_keys");
        std::fs::create_dir(&authorized).unwrap();
        std::fs::write(authorized.join("root"), format!("{plain_public}\n")).unwrap();
        // Sorted before the agent's drop-in and read before the main file's `none`.
        std::fs::write(
            host.dropin_dir().join("05-test-keys.conf"),
            format!("AuthorizedKeysFile {}/%u\n", authorized.display()),
        )
        .unwrap();

        let mut command = Command::new(workspace_binary("jit-ca"));
        command
            .args(["host", "enroll", "db-1", "--config"])
            .arg(self.ca.config());
        let enrolled = run_bounded(command, None, Duration::from_secs(30));
        assert!(enrolled.status.success(), "{}", stderr(&enrolled));
        let token = stdout(&enrolled).trim().to_owned();
        let output = host.setup(self.ca.url(), "db-1", &token, &[]);
        assert!(output.status.success(), "setup failed: {}", stderr(&output));
        host.start_agent(agent_args);
        (host, plain_key)
    }
}

/// `jit request read-only --host db-1 … --json`, with extra arguments.
fn grant(client: &Client, extra: &[&str]) -> Value {
    let mut args = vec!["read-only", "--host", "db-1", "--reason", "session suite"];
    args.extend_from_slice(extra);
    client.request_json(&args)
}

fn path_of(granted: &Value, field: &str) -> PathBuf {
    PathBuf::from(granted[field].as_str().expect(field))
}

/// An `ssh` client holding a session open; killed on drop.
struct Held {
    child: Child,
    output: Arc<Mutex<String>>,
    _stdin: Option<std::process::ChildStdin>,
}

impl Held {
    /// Logs in as root to `host` with `identity` (and `certificate`, if given), on a terminal
    /// when `tty`, and runs `remote`.
    fn open(
        host: &ManagedHost,
        identity: &Path,
        certificate: Option<&Path>,
        tty: bool,
        remote: &str,
    ) -> Held {
        let mut command = host.ssh_command("db-1", identity, certificate, None);
        if tty {
            command.arg("-tt");
        }
        command.arg("root@db-1").arg(remote);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ssh");

        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buffer = [0u8; 1024];
                while let Ok(read) = pipe.read(&mut buffer) {
                    if read == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..read]));
                }
            });
        }
        let stdin = child.stdin.take();
        Held {
            child,
            output,
            _stdin: stdin,
        }
    }

    fn is_open(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the session printed (remote output and ssh's own messages).
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for the session to close; returns when it did.
    fn wait_closed(&mut self, timeout: Duration) -> Option<Instant> {
        poll_until(timeout, || (!self.is_open()).then(Instant::now))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three processes a session starts, told apart by their `sleep` durations (unique to this
/// test process, so a concurrent or earlier run cannot be mistaken for them): the foreground
/// command, a background child in the session, and one that left it with `setsid`. Whatever is
/// left of them is killed on drop, so a failed test leaves nothing behind.
struct Sleepers {
    base: u32,
}

impl Sleepers {
    fn new(slot: u32) -> Sleepers {
        Sleepers {
            base: 1_000_000 + (std::process::id() % 10_000) * 100 + slot * 10,
        }
    }

    /// The remote command that starts them.
    fn command(&self) -> String {
        let base = self.base;
        format!(
            "sleep {} & setsid sleep {} & exec sleep {base}",
            base + 1,
            base + 2
        )
    }

    /// The pids of each of the three still running.
    fn running(&self) -> [Vec<u32>; 3] {
        [0, 1, 2].map(|offset| sleeping(self.base + offset))
    }

    fn all_running(&self) -> bool {
        self.running().iter().all(|pids| !pids.is_empty())
    }

    fn none_running(&self) -> bool {
        self.running().iter().all(Vec::is_empty)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        let pids: Vec<String> = self.running().concat().iter().map(u32::to_string).collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&pids).status();
        }
    }
}

/// The pids of processes running exactly `sleep SECONDS`.
fn sleeping(seconds: u32) -> Vec<u32> {
    let wanted = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline")).unwrap_or_default() == wanted.as_bytes()
        })
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// `jit sessions --json` as `client`.
fn sessions(client: &Client) -> Vec<Value> {
    let output = client.run(&["sessions", "--host", "db-1", "--json"]);
    assert!(output.status.success(), "jit sessions: {}", stderr(&output));
    let parsed: Value = serde_json::from_slice(&output.stdout).expect("jit sessions --json");
    parsed["sessions"].as_array().cloned().unwrap_or_default()
}

fn grants_of(list: &[Value]) -> Vec<String> {
    let mut grants: Vec<String> = list
        .iter()
        .map(|session| session["grant_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    grants.sort();
    grants
}

/// The audit records of `grant_id`, as the auditor lists them.
fn audit_of(auditor: &Client, grant_id: &str) -> Vec<Value> {
    let output = auditor.run(&["audit", "list", "--grant", grant_id, "--json"]);
    assert!(
        output.status.success(),
        "jit audit list: {}",
        stderr(&output)
    );
    stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record a line"))
        .collect()
}

/// The audit records of `grant_id` once one of them is an `event` (the agent reports a moment
/// after it acts); panics after ten seconds without one.
fn audit_until(auditor: &Client, grant_id: &str, event: &str) -> Vec<Value> {
    poll_until(Duration::from_secs(10), || {
        let records = audit_of(auditor, grant_id);
        records
            .iter()
            .any(|record| record["event"] == event)
            .then_some(records)
    })
    .unwrap_or_else(|| panic!("no {event} recorded for {grant_id}"))
}

/// The one record of `event` among `records`.
fn the_record<'a>(records: &'a [Value], event: &str) -> &'a Value {
    let matching: Vec<&Value> = records
        .iter()
        .filter(|record| record["event"] == event)
        .collect();
    assert_eq!(matching.len(), 1, "{event} in {records:#?}");
    matching[0]
}

#[test]
fn revoking_a_grant_closes_its_session_within_five_seconds_and_nothing_else() {
    let Some(world) = world() else { return };
    let (host, plain_key) = world.managed_db_1(&["--poll-wait", "20s", "--grace", "10s"]);
    let alice = world.client(&TestUser::alice());
    let frank_client = world.client(&frank());
    let auditor = world.client(&audrey());
    let approver = world.client(&TestUser::carol());
    let outsider = world.client(&TestUser::mallory());

    let alice_grant = grant(&alice, &[]);
    let frank_grant = grant(&frank_client, &[]);
    let alice_id = alice_grant["grant_id"].as_str().unwrap().to_owned();
    let frank_id = frank_grant["grant_id"].as_str().unwrap().to_owned();
    let [alice_sleepers, frank_sleepers, plain_sleepers] = [0, 1, 2].map(Sleepers::new);
    let mut alice_session = Held::open(
        &host,
        &path_of(&alice_grant, "key_path"),
        Some(&path_of(&alice_grant, "cert_path")),
        false,
        &alice_sleepers.command(),
    );
    let mut frank_session = Held::open(
        &host,
        &path_of(&frank_grant, "key_path"),
        Some(&path_of(&frank_grant, "cert_path")),
        true,
        &frank_sleepers.command(),
    );
    let mut plain_session = Held::open(&host, &plain_key, None, false, &plain_sleepers.command());

    // Both certificate sessions are found and reported; the plain one is not the CA's.
    let mut expected = vec![alice_id.clone(), frank_id.clone()];
    expected.sort();
    let listed = poll_until(Duration::from_secs(15), || {
        let seen = sessions(&auditor);
        (grants_of(&seen) == expected).then_some(seen)
    });
    let listed = listed.unwrap_or_else(|| {
        panic!(
            "the auditor never saw both sessions; agent log:\n{}",
            host.agent_log()
        )
    });
    // The remote shells start their processes a moment after the sessions open.
    let all_started = poll_until(Duration::from_secs(5), || {
        [&alice_sleepers, &frank_sleepers, &plain_sleepers]
            .iter()
            .all(|sleepers| sleepers.all_running())
            .then_some(())
    });
    assert!(
        all_started.is_some(),
        "the sessions' processes never all ran"
    );
    let alice_row = listed
        .iter()
        .find(|session| session["grant_id"] == alice_id.as_str())
        .unwrap();
    assert_eq!(alice_row["holder"], "alice@example.com");
    assert_eq!(alice_row["unix_user"], "root");
    assert_eq!(alice_row["serial"], alice_grant["serial"]);
    assert!(
        alice_row["source_address"]
            .as_str()
            .is_some_and(|source| source.starts_with("127.0.0.1:")),
        "{alice_row}"
    );
    assert!(frank_session.is_open() && plain_session.is_open());

    // Each person sees their own; approvers and auditors see both; others none.
    assert_eq!(grants_of(&sessions(&alice)), [alice_id.as_str()]);
    assert_eq!(grants_of(&sessions(&frank_client)), [frank_id.as_str()]);
    assert_eq!(grants_of(&sessions(&approver)), expected);
    assert!(sessions(&outsider).is_empty());
    let table = alice.run(&["sessions"]);
    assert!(
        stdout(&table).contains(&alice_id) && stdout(&table).contains("alice@example.com"),
        "{}",
        stdout(&table)
    );

    // The holder revokes; the session and everything started in it end within five seconds.
    let asked_at = Instant::now();
    let revoked = alice.run(&["revoke", &alice_id, "--reason", "task done"]);
    assert!(revoked.status.success(), "jit revoke: {}", stderr(&revoked));
    let recorded_at = Instant::now();
    let closed_at = alice_session.wait_closed(TERMINATION_DEADLINE);
    let closed_at = closed_at.unwrap_or_else(|| {
        panic!(
            "alice's session outlived the revocation by {TERMINATION_DEADLINE:?}; agent log:\n{}",
            host.agent_log()
        )
    });
    let emptied = poll_until(Duration::from_secs(1), || {
        alice_sleepers.none_running().then(Instant::now)
    });
    let emptied = emptied.unwrap_or_else(|| {
        panic!(
            "processes of alice's session survived: {:?}",
            alice_sleepers.running()
        )
    });
    eprintln!(
        "revocation → session closed {:?}, its processes gone {:?} (jit revoke itself took {:?})",
        closed_at - recorded_at,
        emptied.saturating_duration_since(recorded_at),
        recorded_at - asked_at
    );
    assert!(emptied.saturating_duration_since(recorded_at) <= TERMINATION_DEADLINE);
    assert!(
        alice_session
            .output()
            .contains("was revoked; closing this session"),
        "alice was not told why: {}",
        alice_session.output()
    );

    // Frank's session and the plain-key session are untouched.
    std::thread::sleep(Duration::from_secs(2));
    assert!(frank_session.is_open(), "{}", frank_session.output());
    assert!(plain_session.is_open(), "{}", plain_session.output());
    assert!(frank_sleepers.all_running() && plain_sleepers.all_running());
    let still_listed = poll_until(Duration::from_secs(5), || {
        (grants_of(&sessions(&auditor)) == [frank_id.as_str()]).then_some(())
    });
    assert!(still_listed.is_some(), "{:?}", sessions(&auditor));

    // The audit log tells alice's session from start to end, with the cause.
    let records = audit_until(&auditor, &alice_id, "session_terminated");
    let started = &the_record(&records, "session_started")["data"];
    let terminated = &the_record(&records, "session_terminated")["data"];
    assert_eq!(started["host"], "db-1");
    assert_eq!(started["unix_user"], "root");
    assert_eq!(started["serial"], alice_grant["serial"]);
    assert_eq!(started["holder"]["email"], "alice@example.com");
    assert_eq!(terminated["reason"], "revoked");
    assert_eq!(terminated["session_id"], started["session_id"]);
    assert!(terminated["ended_at"].is_string(), "{terminated}");
    let frank_records = audit_of(&auditor, &frank_id);
    the_record(&frank_records, "session_started");
    assert!(!frank_records
        .iter()
        .any(|record| record["event"] == "session_terminated"));

    // Frank logs out; his session ends on its own and is recorded as such.
    drop(frank_session);
    let records = audit_until(&auditor, &frank_id, "session_ended");
    assert_eq!(
        the_record(&records, "session_ended")["data"]["reason"],
        "ended"
    );
    assert!(plain_session.is_open());
}

#[test]
fn a_grant_that_expires_is_warned_then_closed_at_its_end() {
    let Some(world) = world() else { return };
    let (host, _) = world.managed_db_1(&["--poll-wait", "20s", "--grace", "10s"]);
    let alice = world.client(&TestUser::alice());
    let auditor = world.client(&audrey());

    let short = grant(&alice, &["--for", "20s"]);
    let grant_id = short["grant_id"].as_str().unwrap().to_owned();
    let valid_before: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(short["valid_before"].clone()).unwrap();
    let sleepers = Sleepers::new(3);
    let mut session = Held::open(
        &host,
        &path_of(&short, "key_path"),
        Some(&path_of(&short, "cert_path")),
        true,
        &sleepers.command(),
    );
    let seen = poll_until(Duration::from_secs(10), || {
        (grants_of(&sessions(&auditor)) == [grant_id.as_str()]).then_some(())
    });
    assert!(
        seen.is_some(),
        "never listed; agent log:\n{}",
        host.agent_log()
    );
    let started = poll_until(Duration::from_secs(5), || {
        sleepers.all_running().then_some(())
    });
    assert!(started.is_some(), "the session's processes never all ran");

    // The warning comes on the session's terminal, within the grace, before the end.
    let warned = poll_until(Duration::from_secs(20), || {
        session.output().contains("ends in").then(chrono::Utc::now)
    });
    let warned = warned.unwrap_or_else(|| {
        panic!(
            "no warning on the terminal: {:?}; agent log:\n{}",
            session.output(),
            host.agent_log()
        )
    });
    let warned_before = (valid_before - warned).num_milliseconds();
    assert!(
        (0..=11_000).contains(&warned_before),
        "warned {warned_before} ms before the end"
    );
    assert!(session.is_open(), "closed before its end");

    // Closed when the certificate expires, not before, with everything inside it.
    let closed = session.wait_closed(Duration::from_secs(20));
    assert!(
        closed.is_some(),
        "still open after its end: {}",
        host.agent_log()
    );
    let closed_at = chrono::Utc::now();
    let after_end = (closed_at - valid_before).num_milliseconds();
    eprintln!("warned {warned_before} ms before the end; closed {after_end} ms after it");
    assert!(
        (-1_000..=4_000).contains(&after_end),
        "closed {after_end} ms after valid_before"
    );
    let emptied = poll_until(Duration::from_secs(1), || {
        sleepers.none_running().then_some(())
    });
    assert!(
        emptied.is_some(),
        "processes of the session survived its end"
    );
    assert!(
        session
            .output()
            .contains("has expired; closing this session"),
        "{}",
        session.output()
    );

    let records = audit_until(&auditor, &grant_id, "session_terminated");
    the_record(&records, "session_started");
    let terminated = &the_record(&records, "session_terminated")["data"];
    assert_eq!(terminated["reason"], "expired");
    assert_eq!(terminated["holder"]["email"], "alice@example.com");
    let listed = poll_until(Duration::from_secs(5), || {
        sessions(&auditor).is_empty().then_some(())
    });
    assert!(listed.is_some(), "the closed session is still listed");
}
