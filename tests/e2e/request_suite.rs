//! Hostile request bodies against the real CA, sent with a valid token.
//!
//! Each body is shaped to widen a certificate (more principals, another host, a pattern sshd
//! would expand), to overflow a number, to exhaust the parser, or to slip in a key that is not
//! one. Each is refused with a 4xx, the stable error body and a one-line message, and nothing is
//! stored or issued. Controls show that the same body with the hostile part removed is granted.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::api::{
    assert_log_holds_no_token, post_request, stored_rows, valid_body, with_changes,
};
use crate::support::ca::{test_profiles, Ca, TEST_RULES};
use crate::support::oidc::{OidcProvider, TestUser, JIT_CLIENT_ID};
use crate::support::openssh::{generate_ed25519_key, sign_user_certificate_with_ssh_keygen};

/// The profile's Unix user in the test policy.
const UNIX_USER: &str = "jituser";

/// A refusal the suite expects: which case, the body, the status and the error code.
struct Case {
    name: String,
    body: String,
    status: u16,
    code: &'static str,
}

/// The answer to a malformed request.
const MALFORMED: (u16, &str) = (400, "invalid_request");
/// The answer to a request the policy refuses.
const DENIED: (u16, &str) = (403, "policy_denied");
/// The answer to an unacceptable public key.
const BAD_KEY: (u16, &str) = (422, "invalid_public_key");

impl Case {
    fn new(name: impl Into<String>, body: impl ToString, answer: (u16, &'static str)) -> Case {
        Case {
            name: name.into(),
            body: body.to_string(),
            status: answer.0,
            code: answer.1,
        }
    }
}

/// The grantable body with `changes` applied; a `null` value removes the field.
fn body_with(public_key: &str, changes: Value) -> Value {
    with_changes(valid_body(public_key), &changes)
}

/// Runs `ssh-keygen -t KIND [-b BITS]` into `dir/name` and returns the public key line, or
/// `None` when this OpenSSH no longer makes such keys.
fn keygen(dir: &Path, name: &str, kind: &str, bits: Option<&str>) -> Option<String> {
    let path = dir.join(name);
    let mut command = Command::new("ssh-keygen");
    command.args(["-q", "-N", "", "-t", kind, "-C", name]);
    if let Some(bits) = bits {
        command.args(["-b", bits]);
    }
    let output = command
        .arg("-f")
        .arg(&path)
        .output()
        .expect("run ssh-keygen");
    if !output.status.success() {
        return None;
    }
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", path.display())))
        .expect("read the public key");
    Some(public.trim().to_owned())
}

/// Names that must never reach a principal: separators, whitespace, control characters, the
/// patterns sshd expands, `@` tricks, and non-ASCII look-alikes of an allowed name.
fn hostile_names(allowed: &str) -> Vec<(String, String)> {
    let mut names: Vec<(&str, String)> = vec![
        ("comma list", format!("{allowed},{allowed}x")),
        ("trailing space", format!("{allowed} ")),
        ("leading space", format!(" {allowed}")),
        ("inner space", format!("{allowed} x")),
        ("tab", format!("{allowed}\t")),
        ("newline", format!("{allowed}\n")),
        ("CRLF and more", format!("{allowed}\r\nx")),
        ("NUL", format!("{allowed}\0")),
        ("star", "*".to_owned()),
        ("star suffix", format!("{allowed}*")),
        ("question mark", format!("{allowed}?")),
        ("negation", format!("!{allowed}")),
        ("percent token", format!("{allowed}%u")),
        ("at sign", format!("{allowed}@db-2")),
        ("uppercase", allowed.to_uppercase()),
        ("empty", String::new()),
        ("overlong", "a".repeat(300)),
    ];
    // Cyrillic letters that look like the Latin ones they replace.
    let look_alikes = [
        ('a', 'а'),
        ('d', 'ԁ'),
        ('e', 'е'),
        ('i', 'і'),
        ('j', 'ј'),
        ('s', 'ѕ'),
    ];
    for (latin, cyrillic) in look_alikes {
        if allowed.contains(latin) {
            let name = allowed.replacen(latin, &cyrillic.to_string(), 1);
            names.push(("Cyrillic look-alike", name));
        }
    }
    names.push(("full-width letter", format!("{allowed}ｘ")));
    names.push(("zero-width space", format!("{allowed}\u{200b}")));
    names
        .into_iter()
        .map(|(label, name)| (label.to_owned(), name))
        .collect()
}

#[test]
fn hostile_requests_are_refused_and_nothing_is_issued() {
    let provider = OidcProvider::start(&TestUser::cast());
    let ca = Ca::start(
        provider.issuer(),
        JIT_CLIENT_ID,
        &test_profiles(UNIX_USER),
        TEST_RULES,
    );
    let token = provider.device_flow_id_token(JIT_CLIENT_ID, &TestUser::alice(), false);
    let keys = tempfile::tempdir().expect("tempdir");
    let (_, ed25519) = generate_ed25519_key(keys.path(), "subject");

    // Controls: the plain body, a chosen Unix user, a duration and a 2048-bit RSA key pass.
    let rsa_2048 = keygen(keys.path(), "rsa2048", "rsa", Some("2048")).expect("RSA 2048");
    for (name, body) in [
        ("plain", valid_body(&ed25519)),
        (
            "unix user and duration",
            body_with(
                &ed25519,
                json!({ "unix_user": UNIX_USER, "duration_secs": 600 }),
            ),
        ),
        ("RSA 2048", valid_body(&rsa_2048)),
        (
            "group target",
            body_with(&ed25519, json!({ "host": "group:db-prod" })),
        ),
    ] {
        let answer = post_request(&ca, Some(&token), &body.to_string());
        assert_eq!(answer.status, 201, "control {name}: {answer:?}");
    }

    let mut cases = Vec::new();

    // Principals are built from the host and the Unix user: neither may carry anything sshd
    // would read as a list, a pattern or another place.
    for (label, host) in hostile_names("db-1") {
        let body = body_with(&ed25519, json!({ "host": host }));
        cases.push(Case::new(format!("host: {label}"), body, MALFORMED));
        let group = body_with(&ed25519, json!({ "host": format!("group:{host}") }));
        cases.push(Case::new(format!("group: {label}"), group, MALFORMED));
    }
    for (label, unix_user) in hostile_names(UNIX_USER) {
        let body = body_with(&ed25519, json!({ "unix_user": unix_user }));
        cases.push(Case::new(format!("unix user: {label}"), body, MALFORMED));
    }
    let other_user = body_with(&ed25519, json!({ "unix_user": "root" }));
    cases.push(Case::new(
        "unix user outside the profile",
        other_user,
        DENIED,
    ));
    let profile_pattern = body_with(&ed25519, json!({ "profile": "read-*" }));
    cases.push(Case::new("profile pattern", profile_pattern, DENIED));

    // Durations: zero, past the maximum, overflowing, negative, fractional, or a string.
    let durations: [(&str, &str); 9] = [
        ("zero", "0"),
        ("one second past 366 days", "31622401"),
        ("huge", "1000000000000"),
        ("u64::MAX", "18446744073709551615"),
        ("past u64", "18446744073709551616"),
        ("negative", "-5"),
        ("float", "1.5"),
        ("exponent", "1e3"),
        ("string", "\"30m\""),
    ];
    let plain = valid_body(&ed25519).to_string();
    for (label, duration) in durations {
        let body = plain.replacen('{', &format!("{{\"duration_secs\":{duration},"), 1);
        cases.push(Case::new(format!("duration: {label}"), body, MALFORMED));
    }

    // Free text: oversized, or holding characters that would forge lines or reorder text.
    let texts = [
        ("reason oversized", json!({ "reason": "r".repeat(1025) })),
        (
            "reason with newline",
            json!({ "reason": "fix\napproved by: root" }),
        ),
        ("reason with NUL", json!({ "reason": "fix\u{0}" })),
        ("reason with escape", json!({ "reason": "fix \u{1b}[2J" })),
        (
            "reason with bidi override",
            json!({ "reason": "fix \u{202e}toor" }),
        ),
        ("ticket oversized", json!({ "ticket": "T".repeat(129) })),
        ("ticket with space", json!({ "ticket": "CHG 1" })),
        ("ticket with newline", json!({ "ticket": "CHG-1\nCHG-2" })),
    ];
    for (label, changes) in texts {
        let body = body_with(&ed25519, changes);
        cases.push(Case::new(label, body, MALFORMED));
    }

    // Fields the client may not set, and shapes the decoder must refuse cheaply.
    for field in [
        "principals",
        "extensions",
        "critical_options",
        "valid_before",
        "serial",
        "admin",
    ] {
        let body = body_with(&ed25519, json!({ field: ["root@db-2"] }));
        cases.push(Case::new(format!("unknown field {field}"), body, MALFORMED));
    }
    let duplicate = plain.replacen('{', "{\"host\":\"web-1\",", 1);
    cases.push(Case::new("duplicate field", duplicate, MALFORMED));
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    cases.push(Case::new("deeply nested array", deep, MALFORMED));
    let deep_in_field = plain.replacen(
        "\"reason\":",
        &format!(
            "\"reason\":{}1{},\"x\":",
            "{\"a\":".repeat(2000),
            "}".repeat(2000)
        ),
        1,
    );
    cases.push(Case::new("deeply nested field", deep_in_field, MALFORMED));
    let huge = body_with(&ed25519, json!({ "reason": "r".repeat(2 * 1024 * 1024) }));
    cases.push(Case::new("huge body", huge, (413, "payload_too_large")));
    for (label, text) in [
        ("empty body", ""),
        ("null", "null"),
        ("array", "[]"),
        ("not JSON", "{{"),
    ] {
        cases.push(Case::new(label, text, MALFORMED));
    }
    let missing_key = body_with(&ed25519, json!({ "public_key": null }));
    cases.push(Case::new("no public key", missing_key, MALFORMED));

    // Public keys that are not one, too weak, a certificate, or an algorithm refused.
    let rsa_1024 = keygen(keys.path(), "rsa1024", "rsa", Some("1024")).expect("RSA 1024");
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let (ca_private, _) = generate_ed25519_key(ca_dir.path(), "other-ca");
    let certificate_path = sign_user_certificate_with_ssh_keygen(
        &ca_private,
        &keys.path().join("subject.pub"),
        "self-made",
        &["jituser@db-1"],
        "+1h",
        1,
        &[],
    );
    let certificate = std::fs::read_to_string(certificate_path).expect("read the certificate");
    let private_key = std::fs::read_to_string(keys.path().join("subject")).expect("private key");
    let (algorithm, blob) = {
        let mut words = ed25519.split_whitespace();
        (
            words.next().unwrap().to_owned(),
            words.next().unwrap().to_owned(),
        )
    };
    let mut bad_keys = vec![
        ("not a key".to_owned(), "hello world".to_owned()),
        ("empty".to_owned(), String::new()),
        (
            "truncated blob".to_owned(),
            format!("{algorithm} {}", &blob[..20]),
        ),
        ("blob of another type".to_owned(), format!("ssh-rsa {blob}")),
        ("RSA 1024".to_owned(), rsa_1024),
        ("certificate".to_owned(), certificate.trim().to_owned()),
        ("private key".to_owned(), private_key),
        ("two keys".to_owned(), format!("{ed25519}\n{rsa_2048}")),
        (
            "comment with newline".to_owned(),
            format!("{algorithm} {blob} a\nb"),
        ),
        (
            "authorized_keys options".to_owned(),
            format!("command=\"/bin/sh\" {ed25519}"),
        ),
    ];
    match keygen(keys.path(), "dsa", "dsa", None) {
        Some(dsa) => bad_keys.push(("DSA".to_owned(), dsa)),
        None => eprintln!("ssh-keygen no longer makes DSA keys; that case is skipped"),
    }
    for (label, key) in bad_keys {
        let body = valid_body(&key);
        cases.push(Case::new(format!("key: {label}"), body, BAD_KEY));
    }

    let rows_before = stored_rows(&ca);
    let mut failures = Vec::new();
    for case in &cases {
        let answer = post_request(&ca, Some(&token), &case.body);
        let message = answer.body["message"].as_str().unwrap_or_default();
        let one_line = !message.is_empty() && !message.contains(['\n', '\r', '\0']);
        if answer.status != case.status || answer.body["error"] != case.code || !one_line {
            failures.push(format!("{}: {} {}", case.name, answer.status, answer.body));
        }
    }
    assert!(
        failures.is_empty(),
        "refused wrongly:\n{}",
        failures.join("\n")
    );
    assert_eq!(stored_rows(&ca), rows_before, "a refused request left rows");

    let log = ca.log();
    assert!(log.contains("request denied"), "{log}");
    assert_log_holds_no_token(&ca, &[&token]);
}

#[test]
fn oversized_headers_are_refused_before_any_work() {
    let provider = OidcProvider::start(&TestUser::cast());
    let ca = Ca::start(
        provider.issuer(),
        JIT_CLIENT_ID,
        &test_profiles(UNIX_USER),
        TEST_RULES,
    );
    let keys = tempfile::tempdir().expect("tempdir");
    let (_, ed25519) = generate_ed25519_key(keys.path(), "subject");
    let body = valid_body(&ed25519).to_string();

    // A megabyte of bearer token: the server refuses it without verifying anything.
    let huge_token = "a".repeat(1024 * 1024);
    let outcome = crate::support::api::http()
        .post(format!("{}/v1/requests", ca.url()))
        .header("authorization", format!("Bearer {huge_token}"))
        .header("content-type", "application/json")
        .body(body)
        .send();
    if let Ok(response) = outcome {
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "answered {status}");
    }
    assert_eq!(stored_rows(&ca), vec![0, 0, 0]);

    // The CA still serves afterwards.
    let health = crate::support::api::http()
        .get(format!("{}/healthz", ca.url()))
        .send()
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
}
