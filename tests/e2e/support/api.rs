//! Raw calls to the CA's HTTP API for the hostile-input suites, and the checks every refusal
//! must pass: the stable error body, nothing stored, one security event in the log.
//!
//! The suites speak HTTP themselves rather than through `jit`, because the client would refuse
//! to send most of what they send.

#![allow(dead_code)]

use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};

use super::ca::Ca;
use super::openssh::poll_until;

/// What the CA answered.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Every response header, lowercase names.
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: Value,
}

/// The tables whose rows a refused request must not add to.
const STORED_TABLES: [&str; 3] = ["access_requests", "grants", "certificates"];

/// How many rows each stored table holds, in [`STORED_TABLES`] order.
pub fn stored_rows(ca: &Ca) -> Vec<u64> {
    STORED_TABLES.iter().map(|table| ca.count(table)).collect()
}

/// An HTTP client that never goes through a proxy.
pub fn http() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build an HTTP client")
}

/// Sends `request`, bearing `token` when given, and reads the answer.
pub fn send(request: RequestBuilder, token: Option<&str>) -> Answer {
    let request = match token {
        Some(token) => request.header("authorization", format!("Bearer {token}")),
        None => request,
    };
    let response = request.send().expect("the CA answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().unwrap_or_default();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// `POST /v1/requests` with a raw body.
pub fn post_request(ca: &Ca, token: Option<&str>, body: &str) -> Answer {
    let request = http()
        .post(format!("{}/v1/requests", ca.url()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    send(request, token)
}

/// `GET /v1/grants`: an authenticated call that stores nothing, to show a token is accepted.
pub fn list_grants(ca: &Ca, token: &str) -> Answer {
    send(http().get(format!("{}/v1/grants", ca.url())), Some(token))
}

/// A request body that the test policy auto-approves for an engineer.
pub fn valid_body(public_key: &str) -> Value {
    json!({
        "profile": "read-only",
        "host": "db-1",
        "reason": "hostile input suite",
        "public_key": public_key,
    })
}

/// `object` with `changes` applied field by field; a `null` value removes the field.
pub fn with_changes(mut object: Value, changes: &Value) -> Value {
    let fields = object.as_object_mut().expect("a JSON object");
    for (name, value) in changes.as_object().expect("changes are a JSON object") {
        match value {
            Value::Null => fields.remove(name),
            other => fields.insert(name.clone(), other.clone()),
        };
    }
    object
}

/// How many times the CA logged the security event `message` so far.
pub fn security_events(ca: &Ca, message: &str) -> usize {
    ca.log()
        .lines()
        .filter(|line| line.contains("security") && line.contains(message))
        .count()
}

/// Waits until the CA has logged `message` more than `before` times; panics after 5 s.
pub fn wait_for_event(ca: &Ca, message: &str, before: usize, case: &str) {
    let logged = poll_until(Duration::from_secs(5), || {
        (security_events(ca, message) > before).then_some(())
    });
    assert!(
        logged.is_some(),
        "{case}: no `{message}` security event; log:\n{}",
        ca.log()
    );
}

/// Checks the stable error body: the expected code and a one-line message.
pub fn assert_error_body(answer: &Answer, code: &str, case: &str) {
    assert_eq!(answer.body["error"], code, "{case}: {answer:?}");
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "{case}: message is not one line: {answer:?}"
    );
}

/// Asserts that no token in `tokens` (nor its signature part) appears in the CA's log.
pub fn assert_log_holds_no_token(ca: &Ca, tokens: &[&str]) {
    let log = ca.log();
    for token in tokens {
        assert!(!log.contains(token), "a token reached the log");
        let signature = token.rsplit('.').next().unwrap_or_default();
        // Short fragments could match by chance; real signatures are long.
        if signature.len() >= 16 {
            assert!(
                !log.contains(signature),
                "a token signature reached the log"
            );
        }
    }
}
