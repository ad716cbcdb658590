//! The audit log, end to end: tampering with the SQLite file is caught by both verifiers (the
//! client's offline one and `jit-ca audit verify`), every certificate a client received
//! survives SIGKILL with its record, and reading the log is policy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::api::{http, post_request, send, valid_body};
use crate::support::ca::{stderr, stdout, test_profiles, workspace_binary, Ca, Client, TEST_RULES};
use crate::support::oidc::{OidcProvider, TestUser, JIT_CLIENT_ID};
use crate::support::openssh::generate_ed25519_key;
use crate::support::sshd::Sshd;

fn auditor() -> TestUser {
    TestUser::new("dave", &["auditors"])
}

/// Provider, CA, and logged-in clients: `alice` requests, `dave` audits.
struct World {
    provider: OidcProvider,
    ca: Ca,
    alice_token: String,
    dave: Client,
    keys: tempfile::TempDir,
}

fn world() -> World {
    let mut users = TestUser::cast();
    users.push(auditor());
    let provider = OidcProvider::start(&users);
    let ca = Ca::start(
        provider.issuer(),
        JIT_CLIENT_ID,
        &test_profiles(&Sshd::login_user()),
        TEST_RULES,
    );
    let alice_token = provider.device_flow_id_token(JIT_CLIENT_ID, &TestUser::alice(), false);
    let dave = Client::new(ca.url());
    dave.login_with_token(&provider.device_flow_id_token(JIT_CLIENT_ID, &auditor(), false));
    World {
        provider,
        ca,
        alice_token,
        dave,
        keys: tempfile::tempdir().unwrap(),
    }
}

impl World {
    /// Asks for a read-only grant as alice over raw HTTP; returns the response body.
    fn issue(&self, name: &str, duration_secs: Option<u64>) -> Value {
        let (_, public_key) = generate_ed25519_key(self.keys.path(), name);
        let mut body = valid_body(&public_key);
        if let Some(seconds) = duration_secs {
            body["duration_secs"] = seconds.into();
        }
        let answer = post_request(&self.ca, Some(&self.alice_token), &body.to_string());
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body
    }

    /// `jit audit export > FILE`, as dave.
    fn export(&self, name: &str) -> PathBuf {
        let output = self.dave.run(&["audit", "export"]);
        assert!(output.status.success(), "export: {}", stderr(&output));
        let path = self.keys.path().join(name);
        std::fs::write(&path, &output.stdout).unwrap();
        path
    }

    /// The audit public key, derived from the private key file by the real `ssh-keygen`.
    fn audit_public_key(&self) -> PathBuf {
        let output = Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(self.ca.dir().join("audit_key"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let path = self.keys.path().join("audit_key.pub");
        std::fs::write(&path, &output.stdout).unwrap();
        path
    }

    /// `jit audit verify FILE --key KEY [--checkpoint HELD]`.
    fn verify_offline(&self, export: &Path, held: Option<&Path>) -> Output {
        let key = self.audit_public_key();
        let mut args = vec![
            "audit".to_owned(),
            "verify".to_owned(),
            export.display().to_string(),
            "--key".to_owned(),
            key.display().to_string(),
        ];
        if let Some(held) = held {
            args.push("--checkpoint".into());
            args.push(held.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.dave.run(&args)
    }

    /// The `seq` of the `index`-th record of type `event`.
    fn seq_of(&self, event: &str, index: usize) -> u64 {
        self.ca
            .sql(&format!(
                "SELECT seq FROM audit_records WHERE event = '{event}' ORDER BY seq \
                 LIMIT 1 OFFSET {index}"
            ))
            .parse()
            .unwrap()
    }
}

/// `jit-ca audit verify --config …` on the live store.
fn verify_live(ca: &Ca) -> Output {
    Command::new(workspace_binary("jit-ca"))
        .args(["audit", "verify", "--config"])
        .arg(ca.config())
        .output()
        .unwrap()
}

/// Runs statements against the live database with the real sqlite3 CLI, as an attacker with
/// the file would: first dropping the triggers that make the tables append-only.
fn tamper(ca: &Ca, statements: &str) {
    ca.sql(&format!(
        "DROP TRIGGER audit_records_no_update; DROP TRIGGER audit_records_no_delete; \
         DROP TRIGGER audit_checkpoints_no_delete; {statements}"
    ));
}

fn assert_names(output: &Output, needle: &str, case: &str) {
    let text = format!("{}{}", stdout(output), stderr(output));
    assert!(
        !output.status.success(),
        "{case}: verification passed:\n{text}"
    );
    assert!(
        text.contains(needle),
        "{case}: expected `{needle}` in:\n{text}"
    );
}

#[test]
fn tampering_with_the_database_is_caught_by_both_verifiers() {
    let cases = ["edit", "delete", "swap", "truncate"];
    for case in cases {
        let mut world = world();
        for name in ["one", "two", "three"] {
            world.issue(&format!("{case}-{name}"), None);
        }
        let before = world.export("before.jsonl");
        let clean = world.verify_offline(&before, None);
        assert!(clean.status.success(), "{case}: {}", stderr(&clean));
        assert!(stdout(&clean).contains("verified:"), "{}", stdout(&clean));
        let live = verify_live(&world.ca);
        assert!(live.status.success(), "{case}: {}", stderr(&live));

        // The second certificate's record, and the one after it.
        let target = world.seq_of("certificate_issued", 1);
        let next = target + 1;
        let expected = match case {
            "edit" => {
                tamper(
                    &world.ca,
                    &format!(
                        "UPDATE audit_records SET body = replace(body, 'alice@example.com', \
                         'mallory@example.com') WHERE seq = {target};"
                    ),
                );
                format!("record {target} was altered")
            }
            "delete" => {
                tamper(
                    &world.ca,
                    &format!("DELETE FROM audit_records WHERE seq = {target};"),
                );
                format!("record {target} is missing")
            }
            "swap" => {
                tamper(
                    &world.ca,
                    &format!(
                        "UPDATE audit_records SET seq = 1000000 WHERE seq = {target}; \
                         UPDATE audit_records SET seq = {target} WHERE seq = {next}; \
                         UPDATE audit_records SET seq = {next} WHERE seq = 1000000;"
                    ),
                );
                format!("record {target} is missing or out of place")
            }
            _ => {
                // A careful attacker stops the CA, cuts the log, removes the checkpoints that
                // would betray the cut, and starts it again: the log and a fresh checkpoint
                // agree. Only a checkpoint the auditor kept shows what happened.
                world.ca.kill();
                tamper(
                    &world.ca,
                    &format!(
                        "DELETE FROM audit_records WHERE seq >= {target}; \
                         DELETE FROM audit_checkpoints;"
                    ),
                );
                assert!(world.ca.restart(), "{}", world.ca.log());
                format!("record {target} differs from the checkpoint")
            }
        };

        let after = world.export("after.jsonl");
        let held = (case == "truncate").then_some(before.as_path());
        assert_names(&world.verify_offline(&after, held), &expected, case);
        if case == "truncate" {
            // Without the earlier export the cut log looks whole, which is why auditors keep
            // their exports; with it, the first record that differs is named.
            let alone = world.verify_offline(&after, None);
            assert!(alone.status.success(), "{}", stderr(&alone));
        } else {
            assert_names(&verify_live(&world.ca), &expected, case);
        }
        drop(world.provider);
    }
}

/// One request the way a client makes it, and what it received when it received anything.
fn request_certificate(url: &str, token: &str, public_key: &str) -> Option<(u64, String)> {
    let request = http()
        .post(format!("{url}/v1/requests"))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(valid_body(public_key).to_string());
    let response = request.send().ok()?;
    if response.status().as_u16() != 201 {
        return None;
    }
    let body: Value = response.json().ok()?;
    let certificate = &body["grant"]["certificate"];
    Some((
        certificate["serial"].as_u64()?,
        certificate["certificate"].as_str()?.to_owned(),
    ))
}

#[test]
fn every_certificate_received_survives_sigkill_with_its_record() {
    let mut world = world();
    let public_keys: Vec<String> = (0..6)
        .map(|index| generate_ed25519_key(world.keys.path(), &format!("crash-{index}")).1)
        .collect();
    let received = Arc::new(Mutex::new(Vec::new()));

    for round in 0..4 {
        let url = world.ca.url().to_owned();
        let stop_at = Instant::now() + Duration::from_millis(700 + 300 * round);
        let workers: Vec<_> = public_keys
            .iter()
            .cloned()
            .map(|public_key| {
                let (url, token) = (url.clone(), world.alice_token.clone());
                let received = Arc::clone(&received);
                std::thread::spawn(move || {
                    // Keep asking until the CA dies under us.
                    while let Some(issued) = request_certificate(&url, &token, &public_key) {
                        received.lock().unwrap().push(issued);
                    }
                })
            })
            .collect();
        while Instant::now() < stop_at {
            std::thread::sleep(Duration::from_millis(20));
        }
        world.ca.kill();
        for worker in workers {
            worker.join().unwrap();
        }
        assert!(world.ca.restart(), "round {round}: {}", world.ca.log());
    }

    let received = received.lock().unwrap().clone();
    assert!(
        received.len() >= 20,
        "only {} certificates issued",
        received.len()
    );
    let serials: BTreeSet<u64> = received.iter().map(|(serial, _)| *serial).collect();
    assert_eq!(serials.len(), received.len(), "a serial was received twice");

    let duplicates = world.ca.sql(
        "SELECT serial FROM audit_records WHERE event = 'certificate_issued' \
         GROUP BY serial HAVING COUNT(*) > 1",
    );
    assert_eq!(duplicates, "", "serials recorded twice");
    for (serial, certificate) in &received {
        let body = world.ca.sql(&format!(
            "SELECT body FROM audit_records WHERE event = 'certificate_issued' AND serial = {serial}"
        ));
        assert!(
            body.contains(certificate.as_str()),
            "certificate {serial} was received but its issuance record is missing or differs"
        );
    }

    let live = verify_live(&world.ca);
    assert!(live.status.success(), "{}{}", stdout(&live), stderr(&live));
    let export = world.export("after-crashes.jsonl");
    let offline = world.verify_offline(&export, None);
    assert!(offline.status.success(), "{}", stderr(&offline));
}

#[test]
fn reading_the_log_is_policy_and_shows_a_grant_story() {
    let world = world();
    let short = world.issue("short", Some(2));
    let grant_id = short["grant"]["grant_id"].as_str().unwrap().to_owned();
    let serial = short["grant"]["certificate"]["serial"].as_u64().unwrap();

    // Outside the auditors group: 403, over HTTP and through the client, and recorded.
    let mallory_token =
        world
            .provider
            .device_flow_id_token(JIT_CLIENT_ID, &TestUser::mallory(), false);
    for path in ["v1/audit", "v1/audit/checkpoint"] {
        let answer = send(
            http().get(format!("{}/{path}", world.ca.url())),
            Some(&mallory_token),
        );
        assert_eq!(answer.status, 403, "{path}: {answer:?}");
        assert_eq!(answer.body["error"], "forbidden");
    }
    let mallory = Client::new(world.ca.url());
    mallory.login_with_token(&mallory_token);
    let refused = mallory.run(&["audit", "list"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("may not read the audit log"),
        "{}",
        stderr(&refused)
    );

    // Inside: the table, filtered.
    let listed = world.dave.run(&["audit", "list", "--event", "audit_read"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        stdout(&listed).contains("mallory@example.com"),
        "{}",
        stdout(&listed)
    );
    assert!(stdout(&listed).contains("refused"), "{}", stdout(&listed));

    // The story of a grant that expired, by grant id and by serial.
    std::thread::sleep(Duration::from_secs(3));
    let by_grant = world.dave.run(&["audit", "show", &grant_id]);
    assert!(by_grant.status.success(), "{}", stderr(&by_grant));
    let story = stdout(&by_grant);
    let steps = [
        "request_created",
        "policy_decision",
        "grant_activated",
        "certificate_issued",
        "ended: expired at",
    ];
    let positions: Vec<usize> = steps
        .iter()
        .map(|step| {
            story
                .find(step)
                .unwrap_or_else(|| panic!("no {step} in:\n{story}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{story}"
    );
    assert!(
        story.contains("auto_approved (rules: engineers-auto"),
        "{story}"
    );
    assert!(story.contains(&format!("serial {serial} ")), "{story}");
    let by_serial = world.dave.run(&["audit", "show", &serial.to_string()]);
    assert_eq!(stdout(&by_serial), story);

    // The issuance record carries the identity and the certificate, with the stable names.
    let json = world
        .dave
        .run(&["audit", "list", "--serial", &serial.to_string(), "--json"]);
    let record: Value = serde_json::from_str(stdout(&json).lines().next().unwrap()).unwrap();
    let data = &record["data"];
    assert_eq!(record["event"], "certificate_issued");
    assert_eq!(data["holder"]["email"], "alice@example.com");
    assert_eq!(data["holder"]["sub"], "alice");
    assert_eq!(data["holder"]["groups"], serde_json::json!(["engineers"]));
    assert_eq!(
        data["certificate"],
        short["grant"]["certificate"]["certificate"]
    );
    assert!(data["public_key_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    assert!(data["ca_key_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    assert_eq!(data["client_address"], "127.0.0.1");

    // The story of a grant that was revoked, found by its serial as sshd would log it.
    let revoked = world.issue("revoked", None);
    let revoked_serial = revoked["grant"]["certificate"]["serial"].as_u64().unwrap();
    let revoked_grant = revoked["grant"]["grant_id"].as_str().unwrap();
    let body = serde_json::json!({ "grant_id": revoked_grant, "reason": "laptop stolen" });
    let answer = send(
        http()
            .post(format!("{}/v1/revocations", world.ca.url()))
            .header("content-type", "application/json")
            .body(body.to_string()),
        Some(&world.alice_token),
    );
    assert!(answer.status < 300, "{answer:?}");
    let shown = world
        .dave
        .run(&["audit", "show", &revoked_serial.to_string()]);
    let story = stdout(&shown);
    let revocation = story
        .find("revocation")
        .unwrap_or_else(|| panic!("{story}"));
    assert!(
        story.find("certificate_issued").unwrap() < revocation,
        "{story}"
    );
    assert!(
        story.contains("by alice@example.com: laptop stolen"),
        "{story}"
    );
    assert!(story.contains("ended: revoked at"), "{story}");

    // The published key is the one the file holds.
    let published = reqwest::blocking::get(format!("{}/v1/audit/key", world.ca.url()))
        .unwrap()
        .text()
        .unwrap();
    let derived = std::fs::read_to_string(world.audit_public_key()).unwrap();
    let blob = |line: &str| line.split_whitespace().nth(1).map(str::to_owned);
    assert_eq!(blob(&published), blob(&derived));
}
