//! The approval workflow end to end, through the real `jit` client against the real OIDC
//! provider and CA: N-of-M approval by people the rules admit, never the requester; denial,
//! expiry and cancellation; the grant's clock starting at the final approval; extensions;
//! MFA step-up; break-glass with a signed webhook alert and a review afterwards; and
//! notifications that never hold up issuance.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::support::api::{http, send};
use crate::support::ca::{device_login, run_bounded, stderr, stdout, workspace_binary, Ca, Client};
use crate::support::oidc::{OidcProvider, TestUser, ACR_MFA, JIT_CLIENT_ID};
use crate::support::openssh::{inspect_certificate, SshAgent};

/// The Unix user every test profile carries; no sshd is involved here.
const UNIX_USER: &str = "jituser";

/// The CA back-dates certificates by this much for clock skew.
const BACKDATE: TimeDelta = TimeDelta::seconds(30);

/// How long any one `jit` run in the background may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn profiles() -> String {
    format!(
        r#"
[hosts]
db-1 = {{ groups = ["db-prod"] }}
web-1 = {{ groups = ["web"] }}

[profiles.db-root]
unix_users = ["{UNIX_USER}"]
host_groups = ["db-prod"]
default_duration = "15m"
max_duration = "1h"
approvals = 2

[profiles.db-read]
unix_users = ["{UNIX_USER}"]
host_groups = ["db-prod"]
default_duration = "15m"
max_duration = "1h"

[profiles.quick-expiry]
unix_users = ["{UNIX_USER}"]
host_groups = ["db-prod"]
default_duration = "15m"
max_duration = "1h"
request_ttl = "2s"

[profiles.routine]
unix_users = ["{UNIX_USER}"]
any_host = true
default_duration = "10m"
max_duration = "1h"

[profiles.mfa-shell]
unix_users = ["{UNIX_USER}"]
host_groups = ["web"]
default_duration = "10m"
max_duration = "1h"
require_amr = ["otp"]
max_auth_age = "5m"
step_up_acr_values = "{ACR_MFA}"

[profiles.emergency]
unix_users = ["{UNIX_USER}"]
host_groups = ["db-prod"]
default_duration = "15m"
max_duration = "30m"
break_glass = true
require_ticket = true
ticket_pattern = "INC-[0-9]+"
"#
    )
}

const RULES: &str = r#"
@id("dba-request-db")
permit (principal in Group::"dba", action == Action::"request", resource in HostGroup::"db-prod")
when { context.profile == "db-root" || context.profile == "db-read" || context.profile == "quick-expiry" };

@id("dba-routine")
permit (principal in Group::"dba", action in [Action::"request", Action::"auto_approve"], resource)
when { context.profile == "routine" || context.profile == "mfa-shell" };

@id("responders-break-glass")
permit (principal in Group::"responders", action == Action::"request", resource in HostGroup::"db-prod")
when { context.profile == "emergency" };

@id("own-revoke")
permit (principal, action == Action::"revoke", resource) when { context.own };

@id("approvers-review-db")
permit (principal in Group::"approvers", action == Action::"approve", resource in HostGroup::"db-prod")
when { ["db-root", "db-read", "quick-expiry", "emergency"].contains(context.profile) };
"#;

fn dave() -> TestUser {
    TestUser::new("dave", &["approvers"])
}

fn frank() -> TestUser {
    TestUser::new("frank", &["approvers"])
}

/// Bob requests (and, being in `approvers`, would approve anyone else's); carol, dave and frank
/// approve; mallory is in no group; erin responds to incidents.
fn cast() -> Vec<TestUser> {
    vec![
        TestUser::bob(),
        TestUser::carol(),
        dave(),
        frank(),
        TestUser::mallory(),
        TestUser::erin(),
    ]
}

struct World {
    provider: OidcProvider,
    ca: Ca,
}

impl World {
    fn start() -> World {
        World::start_with_config("")
    }

    /// A world whose CA configuration ends with `extra_config` (a `[notifications]` table).
    fn start_with_config(extra_config: &str) -> World {
        let provider = OidcProvider::start(&cast());
        let ca = Ca::start_configured(
            provider.issuer(),
            JIT_CLIENT_ID,
            &profiles(),
            RULES,
            "",
            extra_config,
        );
        World { provider, ca }
    }

    /// An ID token for `user`, from a real device flow at the provider.
    fn token(&self, user: &TestUser) -> String {
        self.provider
            .device_flow_id_token(JIT_CLIENT_ID, user, false)
    }

    /// A `jit` client logged in as `user` (with a token handed over, the quick way).
    fn client(&self, user: &TestUser) -> Client {
        let client = Client::new(self.ca.url());
        client.login_with_token(&self.token(user));
        client
    }
}

/// Splits a command line into words at spaces; `'…'` keeps spaces inside one word.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    for (index, part) in line.split('\'').enumerate() {
        if index % 2 == 1 {
            words.push(part.to_owned());
        } else {
            words.extend(part.split_whitespace().map(str::to_owned));
        }
    }
    words
}

/// `jit LINE` with the client's environment, not yet run.
fn command(client: &Client, line: &str) -> Command {
    let words = words(line);
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    client.command(&args)
}

/// Runs `jit LINE` to completion (bounded to 60 s).
fn run(client: &Client, line: &str) -> Output {
    run_bounded(command(client, line), None, RUN_LIMIT)
}

/// Runs `jit LINE --json`, expects success and returns the JSON it printed.
fn jit_json(client: &Client, line: &str) -> Value {
    let output = run(client, &format!("{line} --json"));
    assert!(
        output.status.success(),
        "jit {line} failed: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("jit {line} printed no JSON ({error}): {}", stdout(&output)))
}

/// Runs `jit LINE`, expects failure with one `jit: …` line on stderr naming `expected`, and
/// returns the whole stderr.
fn jit_fails(client: &Client, line: &str, expected: &str) -> String {
    let output = run(client, line);
    let error = stderr(&output);
    assert!(
        !output.status.success(),
        "jit {line} succeeded: {}",
        stdout(&output)
    );
    assert_one_error_line(&error, expected);
    error
}

fn assert_one_error_line(error: &str, expected: &str) {
    let lines: Vec<&str> = error
        .lines()
        .filter(|line| line.starts_with("jit: "))
        .collect();
    assert_eq!(lines.len(), 1, "not one error line: {error}");
    assert!(
        lines[0].contains(expected),
        "expected `{expected}` in: {error}"
    );
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no `{field}` in {value}"))
}

fn instant(value: &Value, field: &str) -> DateTime<Utc> {
    text(value, field)
        .parse()
        .unwrap_or_else(|error| panic!("`{field}` in {value} is not a time: {error}"))
}

/// The request ids on a reviewer's `jit pending --json` list.
fn pending_ids(client: &Client) -> Vec<String> {
    let listing = jit_json(client, "pending");
    listing["requests"]
        .as_array()
        .expect("a requests array")
        .iter()
        .map(|request| text(request, "request_id").to_owned())
        .collect()
}

/// The kinds and actors of a request's history, oldest first.
fn history(client: &Client, request_id: &str) -> Vec<(String, String)> {
    let shown = jit_json(client, &format!("show {request_id}"));
    shown["events"]
        .as_array()
        .expect("an events array")
        .iter()
        .map(|event| {
            (
                text(event, "kind").to_owned(),
                text(event, "actor").to_owned(),
            )
        })
        .collect()
}

/// A `jit` command running in the background, its stderr read line by line as it comes.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr_seen: String,
    stdout: JoinHandle<Vec<u8>>,
}

impl Background {
    fn start(client: &Client, line: &str) -> Background {
        let mut child = command(client, line)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn jit");
        let mut stdout_pipe = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            let mut buffer = Vec::new();
            let _ = stdout_pipe.read_to_end(&mut buffer);
            buffer
        });
        let stderr_pipe = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Background {
            child,
            lines,
            stderr_seen: String::new(),
            stdout,
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + RUN_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push_str(&line);
                    self.stderr_seen.push('\n');
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no `{needle}` on jit's stderr:\n{}", self.stderr_seen),
            }
        }
    }

    /// Waits for the login URL the device flow prints and returns it.
    fn wait_for_login_url(&mut self) -> String {
        loop {
            let line = self.wait_for_line("http://");
            let start = line.find("http://").unwrap_or_default();
            let url = line[start..].split_whitespace().next().unwrap_or_default();
            if url.contains("user_code=") {
                return url.to_owned();
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal would.
    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the command to end; returns its status, stdout and all of its stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for jit") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("jit did not finish; stderr so far:\n{}", self.stderr_seen);
            }
            thread::sleep(Duration::from_millis(20));
        };
        for line in self.lines.iter() {
            self.stderr_seen.push_str(&line);
            self.stderr_seen.push('\n');
        }
        let stdout = String::from_utf8_lossy(&self.stdout.join().unwrap_or_default()).into_owned();
        (status, stdout, self.stderr_seen)
    }
}

/// The request id at the start of a `jit` status line (`r-…: pending, …`).
fn request_id_in(status_line: &str) -> String {
    status_line
        .split(':')
        .next()
        .filter(|id| id.starts_with("r-"))
        .unwrap_or_else(|| panic!("no request id in {status_line:?}"))
        .to_owned()
}

#[test]
fn two_distinct_approvers_are_needed_and_the_grant_starts_at_the_last_approval() {
    let world = World::start();
    let bob = world.client(&TestUser::bob());
    let carol = world.client(&TestUser::carol());
    let dave_client = world.client(&dave());
    let mallory = world.client(&TestUser::mallory());

    // Bob asks and waits; the status line shows the state and the approvals so far.
    let mut waiting = Background::start(
        &bob,
        "request db-root --host db-1 --reason 'rotate WAL' --for 20m --wait --json",
    );
    let request_id = request_id_in(&waiting.wait_for_line("pending, 0 of 2 approvals"));

    // Bob is in `approvers`, yet never counts for his own request; mallory is in no group.
    jit_fails(
        &bob,
        &format!("approve {request_id}"),
        "cannot review your own request",
    );
    jit_fails(&mallory, &format!("approve {request_id}"), "may not review");
    assert!(pending_ids(&mallory).is_empty());

    // One approval counts once, however often it is given.
    let first = jit_json(
        &carol,
        &format!("approve {request_id} --comment 'looks fine'"),
    );
    assert_eq!(first["status"], "pending");
    assert_eq!(first["approvals"], json!(["carol@example.com"]));
    jit_fails(&carol, &format!("approve {request_id}"), "already reviewed");
    waiting.wait_for_line("1 of 2 approvals (carol@example.com)");

    // The second approver sees what they decide on.
    let listing = jit_json(&dave_client, "pending");
    let listed = &listing["requests"][0];
    assert_eq!(listed["request_id"], request_id.as_str());
    assert_eq!(listed["requester"], "bob@example.com");
    assert_eq!(listed["profile"], "db-root");
    assert_eq!(listed["host"], "db-1");
    assert_eq!(listed["duration_secs"], 1200);
    assert_eq!(listed["reason"], "rotate WAL");
    assert_eq!(listed["approvals"], json!(["carol@example.com"]));
    let requested_at = instant(listed, "created_at");

    // A gap, so that "starts at the approval" and "starts at the request" differ.
    thread::sleep(Duration::from_millis(1200));
    let approved_from = Utc::now().trunc_subsecs(0);
    let last = jit_json(&dave_client, &format!("approve {request_id}"));
    assert_eq!(last["status"], "approved");
    assert_eq!(world.ca.count("grants"), 1);

    // Bob's wait ends with the certificate installed.
    let (status, printed, waited_stderr) = waiting.finish();
    assert!(
        status.success(),
        "jit request --wait failed:\n{waited_stderr}"
    );
    let granted: Value = serde_json::from_str(&printed).expect("JSON from jit request --wait");
    assert_eq!(granted["status"], "approved");
    assert_eq!(granted["request_id"], request_id.as_str());
    let valid_after = instant(&granted, "valid_after");
    let valid_before = instant(&granted, "valid_before");
    assert!(
        valid_after + BACKDATE >= approved_from,
        "certificate valid from {valid_after}, approval at {approved_from}"
    );
    assert!(valid_after + BACKDATE > requested_at);
    assert_eq!(
        valid_before - valid_after,
        TimeDelta::minutes(20) + BACKDATE
    );
    let listing = inspect_certificate(Path::new(text(&granted, "cert_path")));
    assert_eq!(
        listing.valid_from.expect("valid_from").local_time,
        valid_after.naive_utc()
    );

    // Nothing is left to review, and the history has every step.
    assert!(pending_ids(&carol).is_empty());
    let steps = history(&bob, &request_id);
    let kinds: Vec<&str> = steps.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["requested", "approved", "approved", "granted"],
        "{steps:?}"
    );
    assert_eq!(steps[1].1, "carol@example.com");
    assert_eq!(steps[2].1, "dave@example.com");
    let shown = run(&bob, &format!("show {request_id}"));
    assert!(stdout(&shown).contains("looks fine"), "{}", stdout(&shown));
}

#[test]
fn concurrent_approvals_of_one_request_make_exactly_one_grant() {
    let world = World::start();
    let bob = world.client(&TestUser::bob());
    let pending = jit_json(
        &bob,
        "request db-root --host db-1 --reason 'failover drill'",
    );
    let request_id = text(&pending, "request_id").to_owned();

    // Three approvers, each sending three approvals at the same moment.
    let tokens: Vec<String> = [TestUser::carol(), dave(), frank()]
        .iter()
        .map(|user| world.token(user))
        .collect();
    let url = format!("{}/v1/requests/{request_id}/approve", world.ca.url());
    let barrier = Arc::new(Barrier::new(tokens.len() * 3));
    let senders: Vec<_> = tokens
        .iter()
        .flat_map(|token| std::iter::repeat_n(token.clone(), 3))
        .map(|token| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                let request = http().post(url).json(&json!({}));
                barrier.wait();
                send(request, Some(&token))
            })
        })
        .collect();
    let answers: Vec<_> = senders
        .into_iter()
        .map(|sender| sender.join().unwrap())
        .collect();

    // Exactly two approvals counted; every other one was refused as a repeat or as late.
    let accepted = answers.iter().filter(|answer| answer.status == 200).count();
    assert_eq!(accepted, 2, "{answers:#?}");
    for refused in answers.iter().filter(|answer| answer.status != 200) {
        assert_eq!(refused.status, 409, "{refused:?}");
        let code = refused.body["error"].as_str().unwrap_or_default();
        assert!(
            ["already_reviewed", "not_pending"].contains(&code),
            "{refused:?}"
        );
    }
    assert_eq!(world.ca.count("grants"), 1);
    assert_eq!(world.ca.count("certificates"), 1);
    let steps = history(&bob, &request_id);
    let approvals = steps.iter().filter(|(kind, _)| kind == "approved").count();
    let grants = steps.iter().filter(|(kind, _)| kind == "granted").count();
    assert_eq!((approvals, grants), (2, 1), "{steps:?}");

    // And bob gets that one grant.
    let fetched = jit_json(&bob, &format!("fetch {request_id}"));
    assert_eq!(fetched["status"], "approved");
}

#[test]
fn the_final_approval_racing_the_requesters_polls_signs_one_certificate() {
    const ROUNDS: usize = 4;
    const POLLERS: usize = 6;
    let world = World::start();
    let bob = world.client(&TestUser::bob());
    let bob_token = world.token(&TestUser::bob());
    let carol_token = world.token(&TestUser::carol());

    for round in 0..ROUNDS {
        let pending = jit_json(&bob, "request db-read --host db-1 --reason 'race check'");
        let request_id = text(&pending, "request_id").to_owned();

        // The requester's reads also finish an approved request whose grant is missing, so
        // they race the approval for the right to sign. Each poller stops at the grant, or
        // after 10 s.
        let request_url = format!("{}/v1/requests/{request_id}", world.ca.url());
        let start = Arc::new(Barrier::new(POLLERS + 1));
        let pollers: Vec<_> = (0..POLLERS)
            .map(|_| {
                let (url, token, start) = (request_url.clone(), bob_token.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < deadline {
                        let answer = send(http().get(&url), Some(&token));
                        assert_eq!(answer.status, 200, "{answer:?}");
                        if answer.body["status"] == "approved" {
                            return answer.body["grant"]["certificate"]["serial"].as_u64();
                        }
                    }
                    None
                })
            })
            .collect();
        start.wait();
        let approval = http()
            .post(format!("{request_url}/approve"))
            .json(&json!({}));
        let approved = send(approval, Some(&carol_token));
        assert_eq!(approved.status, 200, "round {round}: {approved:?}");

        let serials: Vec<Option<u64>> = pollers
            .into_iter()
            .map(|poller| poller.join().unwrap())
            .collect();
        let first = serials[0];
        assert!(
            first.is_some() && serials.iter().all(|serial| *serial == first),
            "round {round}: the polls saw serials {serials:?}"
        );
        let signed = world.ca.sql(&format!(
            "SELECT COUNT(*) FROM audit_records WHERE event = 'certificate_issued' AND grant_id IN \
             (SELECT grant_id FROM audit_records WHERE request_id = '{request_id}')"
        ));
        assert_eq!(signed.trim(), "1", "round {round}: certificates signed");
    }
    assert_eq!(world.ca.count("grants") as usize, ROUNDS);
}

#[test]
fn a_denial_wins_and_closed_requests_cannot_be_reviewed() {
    let world = World::start();
    let bob = world.client(&TestUser::bob());
    let carol = world.client(&TestUser::carol());
    let dave_client = world.client(&dave());
    let frank_client = world.client(&frank());

    // One approval, then one denial: the denial ends it, and bob's wait fails with the reason.
    let mut waiting = Background::start(
        &bob,
        "request db-root --host db-1 --reason 'drop a table' --wait",
    );
    let request_id = request_id_in(&waiting.wait_for_line("0 of 2 approvals"));
    jit_json(&carol, &format!("approve {request_id}"));
    jit_fails(
        &dave_client,
        &format!("deny {request_id} --reason ' '"),
        "--reason",
    );
    let denied = jit_json(
        &dave_client,
        &format!("deny {request_id} --reason 'no change ticket'"),
    );
    assert_eq!(denied["status"], "denied");
    let (status, _, waited_stderr) = waiting.finish();
    assert!(!status.success());
    assert_one_error_line(&waited_stderr, &format!("request {request_id} is denied"));
    jit_fails(
        &frank_client,
        &format!("approve {request_id}"),
        "denied, not pending",
    );
    jit_fails(
        &carol,
        &format!("deny {request_id} --reason x"),
        "not pending",
    );
    jit_fails(&bob, &format!("fetch {request_id}"), "is denied");
    assert_eq!(world.ca.count("grants"), 0);

    // A request that waited past its TTL is expired for everyone.
    let lapsing = jit_json(
        &bob,
        "request quick-expiry --host db-1 --reason 'quick look'",
    );
    let lapsing_id = text(&lapsing, "request_id").to_owned();
    thread::sleep(Duration::from_millis(2500));
    jit_fails(
        &carol,
        &format!("approve {lapsing_id}"),
        "expired, not pending",
    );
    assert!(!pending_ids(&carol).contains(&lapsing_id));
    jit_fails(&bob, &format!("fetch {lapsing_id}"), "is expired");

    // The requester, and only the requester, may cancel; a cancelled request is closed.
    let withdrawn = jit_json(
        &bob,
        "request db-root --host db-1 --reason 'changed my mind'",
    );
    let withdrawn_id = text(&withdrawn, "request_id").to_owned();
    jit_fails(&carol, &format!("cancel {withdrawn_id}"), "no request");
    let cancelled = jit_json(&bob, &format!("cancel {withdrawn_id}"));
    assert_eq!(cancelled["status"], "cancelled");
    assert!(!bob
        .state_dir()
        .join("requests")
        .join(&withdrawn_id)
        .exists());
    jit_fails(
        &carol,
        &format!("approve {withdrawn_id}"),
        "cancelled, not pending",
    );
    jit_fails(&bob, &format!("cancel {withdrawn_id}"), "not pending");
    assert_eq!(world.ca.count("grants"), 0);

    // The history keeps every step, also of closed requests.
    let kinds: Vec<String> = history(&bob, &request_id)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(kinds, ["requested", "approved", "denied"]);
}

#[test]
fn ctrl_c_keeps_the_request_and_extensions_reissue_the_certificate() {
    let world = World::start();
    let agent = SshAgent::start();
    let mut bob = world.client(&TestUser::bob());
    bob.use_agent(agent.socket());
    let carol = world.client(&TestUser::carol());

    // A planned start two minutes out; Ctrl-C stops the wait but not the request.
    let asked_from = Utc::now().trunc_subsecs(0);
    let mut waiting = Background::start(
        &bob,
        "request db-read --host db-1 --reason 'maintenance window' --for 30m --at +2m --wait",
    );
    let request_id = request_id_in(&waiting.wait_for_line("0 of 1 approvals"));
    waiting.interrupt();
    let (status, _, interrupted) = waiting.finish();
    assert!(!status.success());
    assert_one_error_line(&interrupted, &format!("jit wait {request_id}"));
    assert_eq!(pending_ids(&carol), [request_id.as_str()]);

    jit_json(&carol, &format!("approve {request_id}"));
    let granted = jit_json(&bob, &format!("wait {request_id}"));
    let starts_at = instant(&granted, "starts_at");
    assert!(starts_at >= asked_from + TimeDelta::minutes(2), "{granted}");
    assert!(starts_at <= Utc::now() + TimeDelta::minutes(2), "{granted}");
    assert_eq!(instant(&granted, "valid_after"), starts_at - BACKDATE);
    let grant_id = text(&granted, "grant_id").to_owned();
    let cert_path = PathBuf::from(text(&granted, "cert_path"));
    let before = inspect_certificate(&cert_path);

    // An extension of a profile with approvers waits for one, then replaces the certificate
    // of the same key with one that ends later.
    let mut extending = Background::start(
        &bob,
        &format!("extend {grant_id} --for 10m --reason 'window overran' --wait --json"),
    );
    let extension_id = request_id_in(&extending.wait_for_line("0 of 1 approvals"));
    assert_ne!(extension_id, request_id);
    jit_json(&carol, &format!("approve {extension_id}"));
    let (status, printed, extend_stderr) = extending.finish();
    assert!(status.success(), "jit extend failed:\n{extend_stderr}");
    let extended: Value = serde_json::from_str(&printed).expect("JSON from jit extend");
    assert_eq!(extended["grant_id"], grant_id.as_str());
    assert_eq!(extended["extends_grant"], grant_id.as_str());
    assert_eq!(
        instant(&extended, "valid_before") - instant(&granted, "valid_before"),
        TimeDelta::minutes(10)
    );
    let after = inspect_certificate(&cert_path);
    assert_eq!(after.public_key_fingerprint, before.public_key_fingerprint);
    assert_ne!(after.serial, before.serial);
    assert_eq!(extended["agent"], true, "{extended}");
    let loaded = ssh_add_listing(&agent);
    let new_certificate = std::fs::read_to_string(&cert_path).unwrap();
    let new_blob = new_certificate.split_whitespace().nth(1).unwrap();
    assert!(
        loaded.contains(new_blob),
        "the agent lacks the new certificate"
    );

    // An auto-approved profile extends at once.
    let routine = jit_json(
        &bob,
        "request routine --host web-1 --reason deploy --for 10m",
    );
    let routine_grant = text(&routine, "grant_id").to_owned();
    let extended_now = jit_json(
        &bob,
        &format!("extend {routine_grant} --for 5m --reason 'slow deploy'"),
    );
    assert_eq!(
        instant(&extended_now, "valid_before") - instant(&routine, "valid_before"),
        TimeDelta::minutes(5)
    );

    // A revoked grant stays ended: no extension signs it a new certificate.
    let certificates = world.ca.count("certificates");
    let revoked = run(
        &bob,
        &format!("revoke {routine_grant} --reason 'deploy done'"),
    );
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    jit_fails(
        &bob,
        &format!("extend {routine_grant} --for 5m --reason 'one more thing'"),
        "revoked",
    );
    assert_eq!(world.ca.count("certificates"), certificates);

    let kinds: Vec<String> = history(&bob, &request_id)
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(kinds, ["requested", "approved", "granted", "extended"]);
}

/// What `ssh-add -L` prints: every identity's public key or certificate line.
fn ssh_add_listing(agent: &SshAgent) -> String {
    let output = Command::new("ssh-add")
        .arg("-L")
        .env("SSH_AUTH_SOCK", agent.socket())
        .output()
        .expect("run ssh-add -L");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn step_up_is_demanded_then_satisfied() {
    let world = World::start();
    let bob = Client::new(world.ca.url());
    // An ordinary device login: a password, no second factor.
    device_login(&world.provider, &bob, &TestUser::bob());
    let ask = "request mfa-shell --host web-1 --reason 'read logs'";

    // The CA asks for a second factor; a new login without one does not satisfy the client,
    // which asked the provider for the MFA class.
    let mut first = Background::start(&bob, &format!("{ask} --json"));
    first.wait_for_line("The CA asks for a new login");
    let url = first.wait_for_login_url();
    world
        .provider
        .complete_device_login(&url, &TestUser::bob(), false);
    let (status, _, refused) = first.finish();
    assert!(!status.success());
    assert_one_error_line(&refused, "failed verification");
    assert!(
        refused.contains("requires a login with one of: otp"),
        "{refused}"
    );
    assert_eq!(world.ca.count("grants"), 0);

    // Asked again, the user logs in with the second factor, and the request goes through.
    let mut second = Background::start(&bob, &format!("{ask} --json"));
    let url = second.wait_for_login_url();
    world
        .provider
        .complete_device_login(&url, &TestUser::bob(), true);
    let (status, printed, stepped_up) = second.finish();
    assert!(status.success(), "jit request failed:\n{stepped_up}");
    let granted: Value = serde_json::from_str(&printed).expect("JSON from jit request");
    assert_eq!(granted["status"], "approved");
    assert_eq!(world.ca.count("grants"), 1);

    // The stronger login is cached, so the next request needs no new one.
    let again = jit_json(&bob, ask);
    assert_eq!(again["status"], "approved");
}

/// One webhook delivery as the receiver read it.
struct Delivery {
    headers: HashMap<String, String>,
    body: String,
}

/// A webhook receiver on loopback that answers 200 to every delivery and hands it over.
fn start_receiver() -> (String, mpsc::Receiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (sender, deliveries) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let Some(delivery) = read_delivery(&stream) else {
                continue;
            };
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if sender.send(delivery).is_err() {
                break;
            }
        }
    });
    (url, deliveries)
}

/// Reads one HTTP request: its headers (lowercase names) and a `content-length` body.
fn read_delivery(stream: &TcpStream) -> Option<Delivery> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut headers = HashMap::new();
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Delivery {
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, computed here independently.
fn expected_signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A `[notifications]` table sending to `url`, signed with a secret kept in a 0600 file in
/// `dir`.
fn notifications(dir: &Path, url: &str, secret: &str, timeout_secs: u64) -> String {
    let path = dir.join("webhook-secret");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    file.write_all(secret.as_bytes()).unwrap();
    format!(
        "\n[notifications]\nurl = \"{url}\"\nsecret_file = \"{}\"\ntimeout_secs = {timeout_secs}\n",
        path.display()
    )
}

#[test]
fn break_glass_issues_at_once_alerts_with_a_signature_and_waits_for_review() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = "webhook-secret-for-the-test";
    let (url, deliveries) = start_receiver();
    let world = World::start_with_config(&notifications(secret_dir.path(), &url, secret, 3));
    let erin = world.client(&TestUser::erin());
    let carol = world.client(&TestUser::carol());
    let mallory = world.client(&TestUser::mallory());

    // Break-glass needs its ticket; then it is granted at once, with nobody's approval.
    jit_fails(
        &erin,
        "request emergency --host db-1 --reason 'primary down'",
        "requires a ticket",
    );
    let granted = jit_json(
        &erin,
        "request emergency --host db-1 --reason 'primary down' --ticket INC-42 --for 20m",
    );
    assert_eq!(granted["status"], "approved");
    assert_eq!(
        instant(&granted, "valid_before") - instant(&granted, "valid_after"),
        TimeDelta::minutes(20) + BACKDATE
    );
    let request_id = text(&granted, "request_id").to_owned();

    // The alert arrives, signed over its timestamp and body with the shared secret.
    let (alert, body) = next_break_glass_alert(&deliveries);
    let alert_text = text(&body, "text");
    assert!(
        alert_text.contains("BREAK-GLASS") && alert_text.contains("INC-42"),
        "{alert_text}"
    );
    assert_eq!(body["details"]["request_id"], request_id.as_str());
    let timestamp = &alert.headers["x-jit-timestamp"];
    let signature = &alert.headers["x-jit-signature"];
    assert_eq!(
        signature,
        &expected_signature(secret, timestamp, &alert.body)
    );
    assert_ne!(
        signature,
        &expected_signature("another-secret", timestamp, &alert.body)
    );
    let sent_at: i64 = timestamp.parse().unwrap();
    assert!((Utc::now().timestamp() - sent_at).abs() < 60);

    // Approvers see an open review; others see nothing.
    let listing = jit_json(&carol, "pending");
    let open = &listing["requests"][0];
    assert_eq!(open["request_id"], request_id.as_str());
    assert_eq!(open["break_glass"], true);
    assert_eq!(open["ticket"], "INC-42");
    let listed = run(&carol, "pending");
    assert!(
        stdout(&listed).contains("BREAK-GLASS"),
        "{}",
        stdout(&listed)
    );
    assert!(pending_ids(&mallory).is_empty());
    jit_fails(&mallory, &format!("approve {request_id}"), "may not review");

    // Acknowledging closes the review, once.
    let acknowledged = run(
        &carol,
        &format!("approve {request_id} --comment 'restart was right'"),
    );
    assert!(acknowledged.status.success(), "{}", stderr(&acknowledged));
    assert!(
        stdout(&acknowledged).contains("Acknowledged break-glass"),
        "{}",
        stdout(&acknowledged)
    );
    assert!(pending_ids(&carol).is_empty());
    jit_fails(
        &carol,
        &format!("approve {request_id}"),
        "already acknowledged",
    );
    let shown = jit_json(&erin, &format!("show {request_id}"));
    assert_eq!(shown["request"]["acknowledged_by"], "carol@example.com");
    let steps = history(&erin, &request_id);
    assert!(
        steps.contains(&("acknowledged".to_owned(), "carol@example.com".to_owned())),
        "{steps:?}"
    );

    // More time is break-glass again: granted at once but cut to the short maximum from now,
    // alerted, and open for review until acknowledged.
    let grant_id = text(&granted, "grant_id");
    let extended = jit_json(
        &erin,
        &format!("extend {grant_id} --for 2h --reason 'still down' --ticket INC-42"),
    );
    let extended_by = Utc::now();
    let new_end = instant(&extended, "valid_before");
    assert!(new_end > instant(&granted, "valid_before"), "{extended}");
    assert!(
        new_end <= extended_by + TimeDelta::minutes(30),
        "{extended}"
    );
    let extension_id = text(&extended, "request_id").to_owned();
    let (_, body) = next_break_glass_alert(&deliveries);
    assert_eq!(body["details"]["request_id"], extension_id.as_str());
    assert_eq!(body["details"]["extends_grant"], grant_id);
    assert_eq!(pending_ids(&carol), [extension_id.as_str()]);
    jit_json(&carol, &format!("approve {extension_id}"));
    assert!(pending_ids(&carol).is_empty());
}

/// The next delivery of a `break_glass` event, and its body as JSON.
fn next_break_glass_alert(deliveries: &mpsc::Receiver<Delivery>) -> (Delivery, Value) {
    loop {
        let delivery = deliveries
            .recv_timeout(Duration::from_secs(15))
            .expect("a break-glass alert at the receiver");
        let body: Value = serde_json::from_str(&delivery.body).expect("a JSON body");
        if body["event"] == "break_glass" {
            return (delivery, body);
        }
    }
}

#[test]
fn a_dead_webhook_receiver_does_not_slow_issuance() {
    // Accepts connections and never answers: each delivery attempt runs into its timeout.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (accepted_sender, accepted) = mpsc::channel();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
            let _ = accepted_sender.send(());
        }
    });
    let secret_dir = tempfile::tempdir().unwrap();
    let notifier_timeout = Duration::from_secs(10);
    let world = World::start_with_config(&notifications(
        secret_dir.path(),
        &url,
        "secret",
        notifier_timeout.as_secs(),
    ));
    let erin = world.client(&TestUser::erin());
    let bob = world.client(&TestUser::bob());

    // Far less than one delivery attempt may take, let alone its retries.
    let bound = notifier_timeout / 2;
    let started = Instant::now();
    let break_glass = run_bounded(
        command(
            &erin,
            "request emergency --host db-1 --reason 'disk full' --ticket INC-7 --json",
        ),
        None,
        bound,
    );
    assert!(
        break_glass.status.success(),
        "break-glass not issued within {bound:?}: {}",
        stderr(&break_glass)
    );
    let pending = run_bounded(
        command(&bob, "request db-root --host db-1 --reason vacuum"),
        None,
        bound,
    );
    assert!(pending.status.success(), "{}", stderr(&pending));
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
    assert_eq!(world.ca.count("grants"), 1);

    // The notifier did try the receiver.
    accepted
        .recv_timeout(Duration::from_secs(5))
        .expect("the CA connected to the webhook receiver");
}

#[test]
fn policy_explain_names_the_approvals_needed_and_who_may_give_them() {
    let world = World::start();
    let explain = |line: &str| {
        let mut command = Command::new(workspace_binary("jit-ca"));
        command
            .args(["policy", "explain", "--config"])
            .arg(world.ca.config())
            .args(words(line));
        let output = run_bounded(command, None, Duration::from_secs(30));
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let db_root = "--email bob@example.com --groups dba --profile db-root --host db-1";

    let plain = explain(db_root);
    assert!(plain.contains("pending: needs 2 approval(s)"), "{plain}");
    assert!(
        plain.contains(
            "approvals:  2, by rules: approvers-review-db (principal in Group::\"approvers\")"
        ),
        "{plain}"
    );

    let approver = explain(&format!("{db_root} --approver-groups approvers"));
    assert!(
        approver.contains("groups approvers may approve it (rules: approvers-review-db)"),
        "{approver}"
    );
    let engineer = explain(&format!("{db_root} --approver-groups engineers"));
    assert!(
        engineer.contains("groups engineers may not approve it: no rule permits it"),
        "{engineer}"
    );

    let emergency = explain(
        "--email erin@example.com --groups responders --profile emergency --host db-1 \
         --ticket INC-1",
    );
    assert!(
        emergency.contains("approvals:  none before access; one approver acknowledges it"),
        "{emergency}"
    );

    // An auto-approved profile needs nobody.
    let routine = explain("--email bob@example.com --groups dba --profile routine --host web-1");
    assert!(
        routine.contains("auto-approved (rules: dba-routine)"),
        "{routine}"
    );
    assert!(!routine.contains("approvals:"), "{routine}");
}
