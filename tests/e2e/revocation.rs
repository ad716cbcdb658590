//! Ending access early, end to end: the CA's KRL read by the real `ssh-keygen`, the revocation
//! API and `jit revoke`, and a real sshd kept current by the real `jit-host` — a revoked grant
//! stops opening the server within two seconds, a CA outage leaves the last KRL in force, a
//! CA key rotation keeps certificates from both keys working, and the client checks the
//! server's host certificate with `StrictHostKeyChecking=yes`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::api::{self, Answer};
use crate::support::ca::{
    run_bounded, stderr, stdout, test_profiles, workspace_binary, Ca, Client, TEST_RULES,
};
use crate::support::host::ManagedHost;
use crate::support::oidc::{OidcProvider, TestUser, JIT_CLIENT_ID};
use crate::support::openssh::{
    inspect_certificate, poll_until, run_checked, CertificateType, SshAgent,
};
use crate::support::sshd::Sshd;

/// The bound the issue sets between a revocation and the first refused login.
const REVOCATION_DEADLINE: Duration = Duration::from_secs(2);

struct World {
    provider: OidcProvider,
    ca: Ca,
    login_user: String,
    scratch: tempfile::TempDir,
}

fn world() -> World {
    let provider = OidcProvider::start(&TestUser::cast());
    let login_user = Sshd::login_user();
    let ca = Ca::start(
        provider.issuer(),
        JIT_CLIENT_ID,
        &test_profiles(&login_user),
        TEST_RULES,
    );
    World {
        provider,
        ca,
        login_user,
        scratch: tempfile::tempdir().expect("tempdir"),
    }
}

impl World {
    fn token(&self, user: &TestUser) -> String {
        self.provider
            .device_flow_id_token(JIT_CLIENT_ID, user, false)
    }

    fn client(&self, user: &TestUser) -> Client {
        let client = Client::new(self.ca.url());
        client.login_with_token(&self.token(user));
        client
    }

    /// `jit-ca host enroll NAME`, returning the token it prints.
    fn enrolment_token(&self, name: &str) -> String {
        let mut command = Command::new(workspace_binary("jit-ca"));
        command
            .args(["host", "enroll", name, "--config"])
            .arg(self.ca.config());
        let output = run_bounded(command, None, Duration::from_secs(30));
        assert!(
            output.status.success(),
            "host enroll failed: {}",
            stderr(&output)
        );
        let token = stdout(&output).trim().to_owned();
        assert!(token.starts_with("jit-enroll-"), "{token}");
        token
    }

    /// A server enrolled as db-1 and kept current by `jit-host run` with `agent_args`.
    fn managed_db_1(&self, agent_args: &[&str]) -> ManagedHost {
        let mut host = ManagedHost::start();
        let token = self.enrolment_token("db-1");
        let output = host.setup(self.ca.url(), "db-1", &token, &[]);
        assert!(output.status.success(), "setup failed: {}", stderr(&output));
        host.start_agent(agent_args);
        host
    }

    /// A copy of a grant's key and certificate, which `jit revoke` cannot take away.
    fn keep(&self, granted: &Value) -> (PathBuf, PathBuf) {
        let serial = granted["serial"].as_u64().expect("serial");
        let key = self.scratch.path().join(format!("key-{serial}"));
        let certificate = self.scratch.path().join(format!("key-{serial}-cert.pub"));
        std::fs::copy(path_of(granted, "key_path"), &key).unwrap();
        std::fs::copy(path_of(granted, "cert_path"), &certificate).unwrap();
        (key, certificate)
    }
}

fn path_of(value: &Value, field: &str) -> PathBuf {
    PathBuf::from(
        value[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {value}")),
    )
}

fn grant(client: &Client, host: &str) -> Value {
    client.request_json(&["read-only", "--host", host, "--reason", "revocation suite"])
}

fn krl_answer(ca: &Ca, if_none_match: Option<&str>, wait: Option<u64>) -> (u16, String, Vec<u8>) {
    let url = match wait {
        Some(seconds) => format!("{}/v1/krl?wait={seconds}", ca.url()),
        None => format!("{}/v1/krl", ca.url()),
    };
    let mut request = api::http().get(url);
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    let response = request.send().expect("GET /v1/krl");
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, etag, response.bytes().unwrap_or_default().to_vec())
}

fn post_revocation(ca: &Ca, token: Option<&str>, body: &Value) -> Answer {
    let request = api::http()
        .post(format!("{}/v1/revocations", ca.url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    api::send(request, token)
}

/// Whether `ssh-keygen -Q -f KRL CERT` reports the certificate revoked.
fn ssh_keygen_says_revoked(krl: &Path, certificate: &Path) -> bool {
    let output = Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(krl)
        .arg(certificate)
        .output()
        .expect("run ssh-keygen -Q");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains(": ok") || report.contains("REVOKED"),
        "ssh-keygen -Q said: {report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    report.contains("REVOKED")
}

#[test]
fn the_served_krl_agrees_with_ssh_keygen_and_answers_long_polls() {
    let world = world();
    let alice = world.client(&TestUser::alice());
    let erin = world.token(&TestUser::erin());
    let granted: Vec<Value> = ["db-1", "db-2", "web-1", "web-1"]
        .iter()
        .map(|host| grant(&alice, host))
        .collect();
    let kept: Vec<(PathBuf, PathBuf)> = granted.iter().map(|one| world.keep(one)).collect();

    // Nothing revoked yet: version 1, and 304 for whoever has it.
    let (status, etag, body) = krl_answer(&world.ca, None, None);
    assert_eq!((status, etag.as_str()), (200, "\"1\""));
    assert!(body.starts_with(b"SSHKRL\n\0"));
    assert_eq!(krl_answer(&world.ca, Some("\"1\""), None).0, 304);

    // A long-poll naming version 1 answers as soon as a revocation lands.
    let ca_url = world.ca.url().to_owned();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let response = api::http()
            .get(format!("{ca_url}/v1/krl?wait=10"))
            .header("if-none-match", "\"1\"")
            .send()
            .expect("long-poll");
        (response.status().as_u16(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let grant_id = granted[0]["grant_id"].as_str().unwrap();
    let revoked = alice.run(&["revoke", grant_id, "--reason", "task done"]);
    assert!(
        revoked.status.success(),
        "jit revoke failed: {}",
        stderr(&revoked)
    );
    assert!(
        stdout(&revoked).contains("KRL version 2"),
        "{}",
        stdout(&revoked)
    );
    let (status, waited) = waiter.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        waited < Duration::from_secs(3),
        "long-poll answered after {waited:?}"
    );
    eprintln!("long-poll answered {waited:?} after it was made (revocation at ~300 ms)");

    // A responder revokes one certificate by serial and another one's key outright.
    let serial = granted[1]["serial"].as_u64().unwrap();
    let by_serial = post_revocation(
        &world.ca,
        Some(&erin),
        &json!({ "serial": serial, "reason": "laptop left unlocked" }),
    );
    assert_eq!(by_serial.status, 201, "{by_serial:?}");
    let blocked_key = run_checked(
        Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&kept[3].0),
    );
    let blocked_key = String::from_utf8_lossy(&blocked_key.stdout)
        .trim()
        .to_owned();
    let by_key = post_revocation(
        &world.ca,
        Some(&erin),
        &json!({ "public_key": blocked_key, "reason": "key compromised" }),
    );
    assert_eq!(by_key.status, 201, "{by_key:?}");

    // ssh-keygen reads the served KRL exactly as the CA meant it.
    let (status, etag, body) = krl_answer(&world.ca, Some("\"2\""), None);
    assert_eq!((status, etag.as_str()), (200, "\"4\""));
    let krl_file = world.scratch.path().join("served.krl");
    std::fs::write(&krl_file, &body).unwrap();
    let verdicts: Vec<bool> = kept
        .iter()
        .map(|(_, certificate)| ssh_keygen_says_revoked(&krl_file, certificate))
        .collect();
    assert_eq!(verdicts, [true, true, false, true]);

    // `jit status` agrees: one grant still opens something; the other three are revoked.
    let status = alice.run(&["status", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let ids = |list: &Value| -> Vec<String> {
        let list = list.as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|item| {
                item.get("grant_id")
                    .unwrap_or(item)
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let grant_ids: Vec<String> = granted
        .iter()
        .map(|one| one["grant_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids(&status["grants"]), [grant_ids[2].clone()], "{status}");
    let mut revoked_ids = ids(&status["revoked"]);
    revoked_ids.sort();
    let mut expected = vec![
        grant_ids[0].clone(),
        grant_ids[1].clone(),
        grant_ids[3].clone(),
    ];
    expected.sort();
    assert_eq!(revoked_ids, expected, "{status}");

    // Without a change, a long-poll ends in 304 once its wait is over.
    let started = Instant::now();
    assert_eq!(krl_answer(&world.ca, Some("\"4\""), Some(1)).0, 304);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // The version lives in the store: it survives a restart and only grows.
    let mut ca = world.ca;
    assert!(ca.restart());
    assert_eq!(krl_answer(&ca, None, None).1, "\"4\"");
}

#[test]
fn a_fleet_of_waiting_long_polls_leaves_the_request_slots_to_everyone_else() {
    const WAITERS: usize = 6;
    let provider = OidcProvider::start(&TestUser::cast());
    let ca = Ca::start_configured(
        provider.issuer(),
        JIT_CLIENT_ID,
        &test_profiles("jituser"),
        TEST_RULES,
        "",
        "max_concurrent_requests = 2\n",
    );
    let alice = Client::new(ca.url());
    alice.login_with_token(&provider.device_flow_id_token(
        JIT_CLIENT_ID,
        &TestUser::alice(),
        false,
    ));
    let granted = grant(&alice, "db-1");
    let (_, etag, _) = krl_answer(&ca, None, None);

    // More hosts wait for a new KRL than the CA serves requests at once.
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (url, etag) = (format!("{}/v1/krl?wait=20", ca.url()), etag.clone());
            std::thread::spawn(move || {
                let answer = api::http().get(url).header("if-none-match", etag).send();
                answer.map(|response| response.status().as_u16()).ok()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // The engineer is served at once, and the revocation wakes every waiter with the new KRL.
    let started = Instant::now();
    let grant_id = granted["grant_id"].as_str().unwrap();
    let revoked = alice.run(&["revoke", grant_id, "--reason", "fleet check"]);
    assert!(
        revoked.status.success(),
        "jit revoke failed: {}",
        stderr(&revoked)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "jit revoke waited {:?} behind the long-polls",
        started.elapsed()
    );
    let answers: Vec<Option<u16>> = waiters
        .into_iter()
        .map(|waiter| waiter.join().unwrap())
        .collect();
    assert_eq!(answers, vec![Some(200); WAITERS]);
}

#[test]
fn a_revoked_grant_stops_opening_the_server_within_two_seconds_and_outages_change_nothing() {
    let mut world = world();
    let host = world.managed_db_1(&["--poll-wait", "20s"]);
    let user = world.login_user.clone();

    // setup wrote the principals the inventory gives db-1, and the drop-in.
    let principals =
        std::fs::read_to_string(host.state_dir().join("principals").join(&user)).unwrap();
    assert_eq!(principals, format!("{user}@db-1\n{user}@group:db-prod\n"));
    let dropin = std::fs::read_to_string(host.dropin_dir().join("10-jit-host.conf")).unwrap();
    assert!(dropin.contains("RevokedKeys "), "{dropin}");
    let host_certificate = host.state_dir().join("ssh_host_ed25519_key-cert.pub");
    let listing = inspect_certificate(&host_certificate);
    assert_eq!(listing.certificate_type, CertificateType::Host);
    assert_eq!(listing.principals, ["db-1"]);
    let valid_from = listing.valid_from.expect("a start").local_time;
    let valid_to = listing.valid_to.expect("an end").local_time;
    assert_eq!((valid_to - valid_from).num_seconds(), 30 * 24 * 3600 + 300);

    // The client trusts the CA's host certificates, and nothing else; its keys go to an agent.
    let agent = SshAgent::start();
    let mut alice = world.client(&TestUser::alice());
    alice.use_agent(agent.socket());
    let configured = alice.run(&["ssh-config", "db-1"]);
    assert!(configured.status.success(), "{}", stderr(&configured));
    let known_hosts = alice.state_dir().join("known_hosts");
    let granted = grant(&alice, "db-1");
    let port = host.port().to_string();
    let destination = format!("{user}@db-1");
    let jit_ssh = [
        "ssh",
        &destination,
        "-o",
        "HostName=127.0.0.1",
        "-p",
        &port,
        "-o",
        "BatchMode=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "--",
        "echo",
        "logged-in",
    ];
    let connected = alice.run(&jit_ssh);
    assert!(
        connected.status.success() && stdout(&connected).contains("logged-in"),
        "jit ssh with StrictHostKeyChecking=yes failed: {}",
        stderr(&connected)
    );
    let (key, certificate) = world.keep(&granted);
    let grant_id = granted["grant_id"].as_str().unwrap();
    assert!(
        agent.list().contains(&format!("jit {grant_id}")),
        "{}",
        agent.list()
    );
    let empty_known_hosts = world.scratch.path().join("empty_known_hosts");
    std::fs::write(&empty_known_hosts, "").unwrap();
    let unknown_host = host.ssh(&user, "db-1", &key, &certificate, Some(&empty_known_hosts));
    assert!(
        !unknown_host.success,
        "strict checking let an unknown host key through"
    );
    assert!(
        unknown_host.stderr.contains("Host key verification failed"),
        "{}",
        unknown_host.stderr
    );
    assert!(
        host.ssh(&user, "db-1", &key, &certificate, Some(&known_hosts))
            .success
    );

    // The holder revokes the grant; the next login is refused within two seconds.
    let krl_before = std::fs::read(host.krl()).unwrap();
    let requested_at = Instant::now();
    let revoked = alice.run(&["revoke", grant_id, "--reason", "task done"]);
    assert!(
        revoked.status.success(),
        "jit revoke failed: {}",
        stderr(&revoked)
    );
    let revoked_at = Instant::now();
    let krl_replaced = poll_until(REVOCATION_DEADLINE, || {
        let now_installed = std::fs::read(host.krl()).unwrap_or_default();
        (now_installed != krl_before).then(|| revoked_at.elapsed())
    });
    eprintln!(
        "jit revoke took {:?}; the host's KRL was replaced {krl_replaced:?} after it returned",
        revoked_at - requested_at
    );
    let refused_after = poll_until(
        REVOCATION_DEADLINE.saturating_sub(revoked_at.elapsed()),
        || {
            let login = host.ssh(&user, "db-1", &key, &certificate, None);
            (!login.success).then(|| revoked_at.elapsed())
        },
    );
    let refused_after = refused_after.unwrap_or_else(|| {
        panic!(
            "still logging in {REVOCATION_DEADLINE:?} after the revocation; agent log:\n{}",
            host.agent_log()
        )
    });
    eprintln!("revocation → refused login: {refused_after:?}");
    let sshd_log = host.sshd_log();
    assert!(
        sshd_log.contains("revoked"),
        "sshd did not say why:\n{sshd_log}"
    );
    assert!(ssh_keygen_says_revoked(&host.krl(), &certificate));
    assert!(
        !path_of(&granted, "key_path").exists(),
        "jit revoke left the key behind"
    );
    let in_agent = format!("jit {grant_id}");
    assert!(
        !agent.list().contains(&in_agent),
        "still in the agent:\n{}",
        agent.list()
    );

    // With the CA down, the last KRL stays in force and valid grants keep working.
    let still_valid = grant(&alice, "db-1");
    let (valid_key, valid_certificate) = world.keep(&still_valid);
    world.ca.kill();
    let noticed = host.wait_until(Duration::from_secs(15), |host| {
        host.agent_log().contains("KRL poll failed")
    });
    assert!(
        noticed,
        "the agent never noticed the outage:\n{}",
        host.agent_log()
    );
    assert!(!host.ssh(&user, "db-1", &key, &certificate, None).success);
    assert!(
        host.ssh(&user, "db-1", &valid_key, &valid_certificate, None)
            .success
    );
    assert!(ssh_keygen_says_revoked(&host.krl(), &certificate));
    let status = host.status();
    assert!(!status.status.success());
    assert!(
        stdout(&status).contains("unreachable"),
        "{}",
        stdout(&status)
    );

    // Once the CA is back, the agent is in sync again.
    assert!(world.ca.restart());
    let in_sync = host.wait_until(Duration::from_secs(40), |host| {
        host.status().status.success()
    });
    assert!(in_sync, "{}", stdout(&host.status()));
}

#[test]
fn a_key_rotation_keeps_certificates_from_both_keys_working() {
    let mut world = world();
    let host = world.managed_db_1(&["--poll-wait", "20s", "--refresh-every", "1s"]);
    let user = world.login_user.clone();
    let alice = world.client(&TestUser::alice());
    let old = grant(&alice, "db-1");
    let (old_key, old_certificate) = world.keep(&old);
    let old_ca_line = world.ca.trusted_keys().trim().to_owned();

    // Rotate: a new signing key, the old one still trusted.
    world.ca.kill();
    let new_key_file = world.ca.dir().join("ca_key_2");
    run_checked(
        Command::new(workspace_binary("jit-ca"))
            .arg("keygen")
            .arg("--out")
            .arg(&new_key_file),
    );
    let config = std::fs::read_to_string(world.ca.config()).unwrap().replace(
        "key_file = \"ca_key\"",
        &format!("key_file = \"ca_key_2\"\nprevious_public_keys = [\"{old_ca_line}\"]"),
    );
    std::fs::write(world.ca.config(), config).unwrap();
    assert!(world.ca.restart(), "{}", world.ca.log());
    let published = world.ca.trusted_keys();
    assert_eq!(published.lines().count(), 2, "{published}");
    let ca_pub = api::http()
        .get(format!("{}/v1/ca.pub", world.ca.url()))
        .send()
        .and_then(|response| response.text())
        .expect("GET /v1/ca.pub");
    assert_eq!(ca_pub, published);

    // The agent trusts both, and gets a host certificate from the new key.
    let ca_keys_file = host.state_dir().join("trusted_user_ca_keys");
    let both_trusted = host.wait_until(Duration::from_secs(40), |_| {
        std::fs::read_to_string(&ca_keys_file).is_ok_and(|text| text.lines().count() == 2)
    });
    assert!(
        both_trusted,
        "the agent never installed both keys:\n{}",
        host.agent_log()
    );
    let renewed = host.wait_until(Duration::from_secs(10), |host| {
        host.agent_log()
            .contains("installed a new host certificate")
    });
    assert!(renewed, "{}", host.agent_log());

    let new = grant(&alice, "db-1");
    let (new_key, new_certificate) = world.keep(&new);
    assert_ne!(
        inspect_certificate(&old_certificate).signing_ca_fingerprint,
        inspect_certificate(&new_certificate).signing_ca_fingerprint
    );
    assert!(
        host.ssh(&user, "db-1", &old_key, &old_certificate, None)
            .success
    );
    assert!(
        host.ssh(&user, "db-1", &new_key, &new_certificate, None)
            .success
    );

    // The client learns both keys and still checks the host strictly.
    let configured = alice.run(&["ssh-config", "db-1"]);
    assert!(configured.status.success(), "{}", stderr(&configured));
    let known_hosts = alice.state_dir().join("known_hosts");
    let restarted = host.wait_until(Duration::from_secs(10), |host| {
        host.ssh(
            &user,
            "db-1",
            &new_key,
            &new_certificate,
            Some(&known_hosts),
        )
        .success
    });
    assert!(
        restarted,
        "strict host checking failed after the rotation:\n{}",
        host.sshd_log()
    );

    // The KRL covers the old key too: revoking its certificate by serial takes effect.
    let serial = old["serial"].as_u64().unwrap().to_string();
    let revoked = alice.run(&["revoke", "--serial", &serial, "--reason", "rotated away"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let refused = poll_until(REVOCATION_DEADLINE, || {
        (!host
            .ssh(&user, "db-1", &old_key, &old_certificate, None)
            .success)
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "the old key's certificate still opens db-1"
    );
    assert!(
        host.ssh(&user, "db-1", &new_key, &new_certificate, None)
            .success
    );
}

#[test]
fn only_permitted_people_revoke_and_refusals_record_nothing() {
    let world = world();
    let alice = world.client(&TestUser::alice());
    let on_web = grant(&alice, "web-1");
    let on_db = grant(&alice, "db-1");
    let on_db_2 = grant(&alice, "db-2");
    let [web_id, db_id, db_2_id] =
        [&on_web, &on_db, &on_db_2].map(|granted| granted["grant_id"].as_str().unwrap().to_owned());
    let mallory = world.token(&TestUser::mallory());
    let bob = world.token(&TestUser::bob());
    let erin = world.token(&TestUser::erin());
    let alice_token = world.token(&TestUser::alice());

    let recorded = || world.ca.count("revocations");
    let version = || krl_answer(&world.ca, None, None).1;
    let revoke_web = json!({ "grant_id": web_id, "reason": "not mine but why not" });

    // No rule lets mallory, or a DBA outside db-prod, revoke alice's grant.
    let denied_before = api::security_events(&world.ca, "revocation denied");
    let by_mallory = post_revocation(&world.ca, Some(&mallory), &revoke_web);
    assert_eq!(by_mallory.status, 403, "{by_mallory:?}");
    api::assert_error_body(&by_mallory, "policy_denied", "mallory");
    api::wait_for_event(&world.ca, "revocation denied", denied_before, "mallory");
    let by_bob_on_web = post_revocation(&world.ca, Some(&bob), &revoke_web);
    assert_eq!(by_bob_on_web.status, 403, "{by_bob_on_web:?}");
    assert_eq!((recorded(), version()), (0, "\"1\"".to_owned()));

    // The DBA may for db-prod hosts.
    let by_bob = post_revocation(
        &world.ca,
        Some(&bob),
        &json!({ "grant_id": db_id, "reason": "maintenance over" }),
    );
    assert_eq!(by_bob.status, 201, "{by_bob:?}");
    assert_eq!(by_bob.body["grant_ids"], json!([db_id]));
    assert_eq!(by_bob.body["actor"], "bob@example.com");

    // Malformed, unknown and redundant revocations: each refused, none recorded.
    let cases = [
        (json!({ "reason": "which one?" }), 400, "invalid_request"),
        (
            json!({ "grant_id": web_id, "serial": 1, "reason": "two" }),
            400,
            "invalid_request",
        ),
        (json!({ "grant_id": web_id }), 400, "invalid_request"),
        (
            json!({ "grant_id": web_id, "reason": " " }),
            400,
            "invalid_request",
        ),
        (
            json!({ "grant_id": web_id, "reason": "r", "colour": "red" }),
            400,
            "invalid_request",
        ),
        (
            json!({ "grant_id": "g-nosuchgrant", "reason": "r" }),
            404,
            "not_found",
        ),
        (
            json!({ "serial": 999_999, "reason": "r" }),
            404,
            "not_found",
        ),
        (
            json!({ "public_key": "ssh-ed25519 junk", "reason": "r" }),
            400,
            "invalid_request",
        ),
        (
            json!({ "grant_id": db_id, "reason": "again" }),
            409,
            "nothing_to_revoke",
        ),
    ];
    for (body, status, code) in cases {
        let answer = post_revocation(&world.ca, Some(&alice_token), &body);
        assert_eq!(answer.status, status, "{body}: {answer:?}");
        api::assert_error_body(&answer, code, &body.to_string());
    }
    let anonymous = post_revocation(&world.ca, None, &revoke_web);
    assert_eq!(anonymous.status, 401);
    assert_eq!((recorded(), version()), (1, "\"2\"".to_owned()));

    // A responder offboards alice: every grant of hers still active ends.
    let offboarded = post_revocation(
        &world.ca,
        Some(&erin),
        &json!({ "user": "alice@example.com", "reason": "left the company" }),
    );
    assert_eq!(offboarded.status, 201, "{offboarded:?}");
    let mut ended: Vec<String> =
        serde_json::from_value(offboarded.body["grant_ids"].clone()).unwrap();
    ended.sort();
    let mut expected = vec![web_id.clone(), db_2_id.clone()];
    expected.sort();
    assert_eq!(ended, expected);
    let again = post_revocation(
        &world.ca,
        Some(&erin),
        &json!({ "user": "alice@example.com", "reason": "twice" }),
    );
    assert_eq!(again.status, 404, "{again:?}");

    // Each recorded revocation keeps its actor, time and reason.
    let rows = world
        .ca
        .sql("SELECT kind, actor_email, reason, krl_version FROM revocations ORDER BY krl_version");
    assert_eq!(
        rows,
        "grant|bob@example.com|maintenance over|2\nuser|erin@example.com|left the company|3"
    );
    api::assert_log_holds_no_token(&world.ca, &[&mallory, &bob, &erin, &alice_token]);
}

#[test]
fn setup_refuses_to_leave_sshd_misconfigured() {
    let world = world();
    let mut host = ManagedHost::start();
    let dropin = host.dropin_dir().join("10-jit-host.conf");

    // A wrong token enrols nothing and writes no drop-in.
    let wrong = host.setup(world.ca.url(), "db-1", "jit-enroll-not-a-token", &[]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("enrolment token refused"),
        "{}",
        stderr(&wrong)
    );
    assert!(!dropin.exists());

    // An unreachable CA fails the setup before the token is spent.
    let token = world.enrolment_token("db-1");
    let unreachable = host.setup("http://127.0.0.1:9", "db-1", &token, &[]);
    assert!(!unreachable.status.success());
    assert!(
        stderr(&unreachable).contains("cannot reach the CA"),
        "{}",
        stderr(&unreachable)
    );
    assert!(!dropin.exists());

    // An earlier line that would override the drop-in is found by `sshd -T`, and the drop-in
    // is taken back.
    let original = std::fs::read_to_string(host.sshd_config()).unwrap();
    std::fs::write(
        host.sshd_config(),
        format!("AuthorizedPrincipalsFile /nonexistent/%u\n{original}"),
    )
    .unwrap();
    let overridden = host.setup(world.ca.url(), "db-1", &token, &[]);
    assert!(!overridden.status.success());
    assert!(
        stderr(&overridden).contains("AuthorizedPrincipalsFile"),
        "{}",
        stderr(&overridden)
    );
    assert!(
        !dropin.exists(),
        "a drop-in sshd would not honour was left in place"
    );

    // The token was used by then; a fresh one, with the configuration fixed, succeeds.
    std::fs::write(host.sshd_config(), original).unwrap();
    let reused = host.setup(world.ca.url(), "db-1", &token, &[]);
    assert!(!reused.status.success(), "a token worked twice");
    let fresh = world.enrolment_token("db-1");
    let fixed = host.setup(world.ca.url(), "db-1", &fresh, &[]);
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    assert!(dropin.exists());
    assert!(
        stdout(&fixed).contains("sshd reloaded"),
        "{}",
        stdout(&fixed)
    );
}
