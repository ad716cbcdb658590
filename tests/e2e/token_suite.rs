//! Hostile ID tokens against the real CA and the real OIDC provider.
//!
//! Every token here is refused with 401 (503 when the provider cannot be reached) and the
//! stable error body, stores nothing, and is logged once as a `token rejected` security event.
//! Each hostile token differs from an accepted one in one respect only: the suite first shows
//! that an honest token minted the same way is accepted, so a refusal means what it claims.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::api::{
    assert_error_body, assert_log_holds_no_token, list_grants, post_request, security_events,
    stored_rows, valid_body, wait_for_event, with_changes,
};
use crate::support::ca::{test_profiles, Ca, TEST_RULES};
use crate::support::oidc::{unverified_claims, OidcProvider, TestUser, JIT_CLIENT_ID};
use crate::support::openssh::generate_ed25519_key;

/// The clock skew the CA allows by default (`[oidc] clock_skew_secs`).
const DEFAULT_SKEW_SECS: i64 = 60;

/// A provider and a CA trusting it.
struct Bench {
    provider: OidcProvider,
    ca: Ca,
}

fn bench(extra_oidc: &str) -> Bench {
    let provider = OidcProvider::start(&TestUser::cast());
    let ca = start_ca(provider.issuer(), extra_oidc);
    Bench { provider, ca }
}

fn start_ca(issuer: &str, extra_oidc: &str) -> Ca {
    let profiles = test_profiles("jituser");
    Ca::start_with(issuer, JIT_CLIENT_ID, &profiles, TEST_RULES, extra_oidc)
}

/// A body for `POST /v1/requests` that the test policy grants alice, with a fresh key.
fn grantable_body() -> String {
    let key_dir = tempfile::tempdir().expect("tempdir");
    let (_, public_key) = generate_ed25519_key(key_dir.path(), "subject");
    valid_body(&public_key).to_string()
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of an honest ID token for alice, issued now, valid ten minutes.
fn honest_claims(provider: &OidcProvider) -> Value {
    let now = unix_now();
    json!({
        "iss": provider.issuer(),
        "sub": "alice",
        "aud": JIT_CLIENT_ID,
        "iat": now,
        "exp": now + 600,
        "email": "alice@example.com",
        "email_verified": true,
        "groups": ["engineers"],
    })
}

/// The honest claims with `changes` applied; a `null` value removes the claim.
fn claims_with(provider: &OidcProvider, changes: Value) -> Value {
    with_changes(honest_claims(provider), &changes)
}

/// Signs `claims` with the provider's own RS256 key.
fn provider_signed(provider: &OidcProvider, claims: Value) -> String {
    provider.mint(json!({ "alg": "RS256", "claims": claims }))
}

/// Shows that `token` is accepted: an authenticated read answers 200.
fn assert_accepted(ca: &Ca, token: &str, case: &str) {
    let answer = list_grants(ca, token);
    assert_eq!(answer.status, 200, "{case}: {answer:?}\n{}", ca.log());
}

/// Sends a grantable request with `token` and checks the refusal: its status, its error code,
/// a message naming the `reason`, the `WWW-Authenticate` challenge, nothing stored, and one
/// security event.
fn assert_rejected(ca: &Ca, token: &str, (status, code, reason): (u16, &str, &str), case: &str) {
    let rows_before = stored_rows(ca);
    let events_before = security_events(ca, "token rejected");

    let answer = post_request(ca, Some(token), &grantable_body());

    assert_eq!(answer.status, status, "{case}: {answer:?}");
    assert_error_body(&answer, code, case);
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(reason),
        "{case}: expected `{reason}` in {message:?}"
    );
    if status == 401 {
        let challenge = answer.headers.get("www-authenticate");
        assert_eq!(
            challenge.and_then(|value| value.to_str().ok()),
            Some("Bearer"),
            "{case}"
        );
    }
    assert_eq!(stored_rows(ca), rows_before, "{case}: rows were stored");
    wait_for_event(ca, "token rejected", events_before, case);
}

/// `token` with its payload replaced by `claims`, the signature kept.
fn with_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// `token` with one character in the middle of its signature changed.
fn with_flipped_signature(token: &str) -> String {
    let (signing_input, signature) = token.rsplit_once('.').expect("a compact JWT");
    let mut characters: Vec<char> = signature.chars().collect();
    let middle = characters.len() / 2;
    characters[middle] = if characters[middle] == 'A' { 'B' } else { 'A' };
    let signature: String = characters.into_iter().collect();
    format!("{signing_input}.{signature}")
}

#[test]
fn forged_altered_and_misaddressed_tokens_are_rejected() {
    // `other-app` may share tokens with the CA; any other audience is a stranger.
    let bench = bench("trusted_audiences = [\"other-app\"]");
    let provider = &bench.provider;
    let issuer = provider.issuer().to_owned();

    // Controls: honest tokens minted the way the hostile ones are, and a real login's token.
    let honest_rsa = provider_signed(provider, honest_claims(provider));
    let honest_ec = provider.mint(json!({ "alg": "ES256", "claims": honest_claims(provider) }));
    let several_audiences_with_azp = provider_signed(
        provider,
        claims_with(
            provider,
            json!({ "aud": [JIT_CLIENT_ID, "other-app"], "azp": JIT_CLIENT_ID }),
        ),
    );
    let real = provider.device_flow_tokens(JIT_CLIENT_ID, &TestUser::alice(), false);
    for (case, token) in [
        ("honest RS256", &honest_rsa),
        ("honest ES256", &honest_ec),
        (
            "several audiences, azp is the CA",
            &several_audiences_with_azp,
        ),
        ("real device-flow token", &real.id_token),
    ] {
        assert_accepted(&bench.ca, token, case);
    }

    let provider_kid = unverified_header_kid(&honest_rsa);
    let mut escalated = unverified_claims(&real.id_token);
    escalated["groups"] = json!(["engineers", "dba"]);
    let mut other_subject = unverified_claims(&real.id_token);
    other_subject["sub"] = json!("bob");
    let mint = |request: Value| provider.mint(request);
    let signed = |changes: Value| provider_signed(provider, claims_with(provider, changes));
    let now = unix_now();

    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "alg none",
            mint(json!({ "alg": "none", "claims": honest_claims(provider) })),
            "invalid_token",
            "algorithm is not accepted",
        ),
        (
            "alg None, other casing",
            mint(
                json!({ "alg": "none", "header": { "alg": "None" }, "claims": honest_claims(provider) }),
            ),
            "invalid_token",
            "algorithm is not accepted",
        ),
        (
            "HS256 keyed with the provider's public key",
            mint(json!({ "alg": "HS256-with-public-key", "claims": honest_claims(provider) })),
            "invalid_token",
            "algorithm is not accepted",
        ),
        (
            "unknown kid",
            mint(
                json!({ "alg": "RS256", "kid": "no-such-key", "claims": honest_claims(provider) }),
            ),
            "invalid_token",
            "not signed by a key of the trusted provider",
        ),
        (
            "another RSA key",
            mint(json!({ "alg": "RS256", "key": "other", "claims": honest_claims(provider) })),
            "invalid_token",
            "not signed by a key of the trusted provider",
        ),
        (
            "another EC key",
            mint(json!({ "alg": "ES256", "key": "other", "claims": honest_claims(provider) })),
            "invalid_token",
            "not signed by a key of the trusted provider",
        ),
        (
            "another key claiming the provider's kid",
            mint(json!({
                "alg": "RS256", "key": "other", "kid": provider_kid, "claims": honest_claims(provider)
            })),
            "invalid_token",
            "signature is invalid",
        ),
        (
            "another key with a jku header pointing at it",
            mint(json!({
                "alg": "RS256", "key": "other", "header": { "jku": "http://127.0.0.1:9/jwks" },
                "claims": honest_claims(provider)
            })),
            "invalid_token",
            "not signed by a key of the trusted provider",
        ),
        (
            "expired",
            signed(json!({ "iat": now - 7200, "exp": now - 3600 })),
            "token_expired",
            "expired",
        ),
        (
            "expired beyond the skew",
            signed(json!({ "exp": now - DEFAULT_SKEW_SECS - 30 })),
            "token_expired",
            "expired",
        ),
        (
            "issued in the future beyond the skew",
            signed(json!({ "iat": now + DEFAULT_SKEW_SECS + 120, "exp": now + 3600 })),
            "invalid_token",
            "not valid yet",
        ),
        (
            "not before a time beyond the skew",
            signed(json!({ "nbf": now + DEFAULT_SKEW_SECS + 120 })),
            "invalid_token",
            "not valid yet",
        ),
        (
            "nbf not a number",
            signed(json!({ "nbf": "soon" })),
            "invalid_token",
            "nbf is not a timestamp",
        ),
        (
            "wrong issuer",
            signed(json!({ "iss": "http://127.0.0.1:9" })),
            "invalid_token",
            "issuer is not trusted",
        ),
        (
            "issuer with a trailing slash",
            signed(json!({ "iss": format!("{issuer}/") })),
            "invalid_token",
            "issuer is not trusted",
        ),
        (
            "no issuer",
            signed(json!({ "iss": null })),
            "invalid_token",
            "`iss`",
        ),
        (
            "wrong audience",
            signed(json!({ "aud": "other-app" })),
            "invalid_token",
            "audience",
        ),
        (
            "no audience",
            signed(json!({ "aud": null })),
            "invalid_token",
            "audience",
        ),
        (
            "several audiences, one of them untrusted",
            signed(json!({ "aud": [JIT_CLIENT_ID, "stranger-app"], "azp": JIT_CLIENT_ID })),
            "invalid_token",
            "audience",
        ),
        (
            "several audiences, no azp",
            signed(json!({ "aud": [JIT_CLIENT_ID, "other-app"] })),
            "invalid_token",
            "no authorized party",
        ),
        (
            "several audiences, azp names another client",
            signed(json!({ "aud": [JIT_CLIENT_ID, "other-app"], "azp": "other-app" })),
            "invalid_token",
            "authorized party",
        ),
        (
            "one audience, azp names another client",
            signed(json!({ "azp": "other-app" })),
            "invalid_token",
            "authorized party",
        ),
        (
            "tampered payload: groups widened",
            with_payload(&real.id_token, &escalated),
            "invalid_token",
            "signature is invalid",
        ),
        (
            "tampered payload: another subject",
            with_payload(&real.id_token, &other_subject),
            "invalid_token",
            "signature is invalid",
        ),
        (
            "tampered signature",
            with_flipped_signature(&real.id_token),
            "invalid_token",
            "signature is invalid",
        ),
        (
            "signature removed",
            format!("{}.", real.id_token.rsplit_once('.').unwrap().0),
            "invalid_token",
            "signature is invalid",
        ),
        (
            "no sub",
            signed(json!({ "sub": null })),
            "invalid_token",
            "`sub`",
        ),
        (
            "empty sub",
            signed(json!({ "sub": "" })),
            "invalid_token",
            "sub is empty",
        ),
        (
            "no exp",
            signed(json!({ "exp": null })),
            "invalid_token",
            "`exp`",
        ),
        (
            "email_verified false",
            signed(json!({ "email_verified": false })),
            "invalid_token",
            "verified email",
        ),
        (
            "email_verified absent",
            signed(json!({ "email_verified": null })),
            "invalid_token",
            "verified email",
        ),
        (
            "groups claim not a list of strings",
            signed(json!({ "groups": [1, 2] })),
            "invalid_token",
            "`groups`",
        ),
        (
            "oversized token",
            signed(json!({ "padding": "x".repeat(20_000) })),
            "invalid_token",
            "larger than",
        ),
        (
            "an access token instead of an ID token",
            real.access_token.clone(),
            "invalid_token",
            "well-formed",
        ),
        (
            "not a JWT at all",
            "garbage".to_owned(),
            "invalid_token",
            "well-formed",
        ),
        (
            "four parts",
            format!("{}.extra", real.id_token),
            "invalid_token",
            "well-formed",
        ),
    ];

    for (case, token, code, reason) in &cases {
        assert_rejected(&bench.ca, token, (401, code, reason), case);
    }

    // A request with no bearer token at all, and one with another scheme.
    let rows_before = stored_rows(&bench.ca);
    let body = grantable_body();
    let missing = post_request(&bench.ca, None, &body);
    assert_eq!(missing.status, 401, "{missing:?}");
    assert_error_body(&missing, "invalid_token", "missing token");
    let basic = crate::support::api::send(
        crate::support::api::http()
            .post(format!("{}/v1/requests", bench.ca.url()))
            .header("authorization", format!("Basic {}", real.id_token))
            .header("content-type", "application/json")
            .body(body),
        None,
    );
    assert_eq!(basic.status, 401, "{basic:?}");
    assert_eq!(stored_rows(&bench.ca), rows_before);

    // Secrets: no token the suite used, honest or hostile, reached the log.
    let mut used: Vec<&str> = cases.iter().map(|(_, token, ..)| token.as_str()).collect();
    used.extend([
        honest_rsa.as_str(),
        honest_ec.as_str(),
        several_audiences_with_azp.as_str(),
        real.id_token.as_str(),
        real.access_token.as_str(),
    ]);
    used.extend(real.refresh_token.as_deref());
    assert_log_holds_no_token(&bench.ca, &used);
}

fn unverified_header_kid(token: &str) -> String {
    crate::support::oidc::unverified_header(token)["kid"]
        .as_str()
        .expect("the provider's tokens name their key")
        .to_owned()
}

#[test]
fn clock_skew_is_tolerated_up_to_its_limit_only() {
    let bench = bench("");
    let provider = &bench.provider;
    let now = unix_now();
    let within = DEFAULT_SKEW_SECS / 2;
    let beyond = DEFAULT_SKEW_SECS * 3;
    let signed = |changes: Value| provider_signed(provider, claims_with(provider, changes));

    let accepted = [
        ("iat slightly ahead", signed(json!({ "iat": now + within }))),
        ("nbf slightly ahead", signed(json!({ "nbf": now + within }))),
        (
            "expired a moment ago",
            signed(json!({ "iat": now - 600, "exp": now - within })),
        ),
    ];
    for (case, token) in &accepted {
        assert_accepted(&bench.ca, token, case);
    }

    let refused = [
        (
            "iat too far ahead",
            signed(json!({ "iat": now + beyond, "exp": now + beyond + 600 })),
            "invalid_token",
            "not valid yet",
        ),
        (
            "nbf too far ahead",
            signed(json!({ "nbf": now + beyond })),
            "invalid_token",
            "not valid yet",
        ),
        (
            "expired too long ago",
            signed(json!({ "iat": now - 600, "exp": now - beyond })),
            "token_expired",
            "expired",
        ),
    ];
    for (case, token, code, reason) in &refused {
        assert_rejected(&bench.ca, token, (401, code, reason), case);
    }
    let log = bench.ca.log();
    assert!(log.contains("not valid yet"), "{log}");

    let mut used: Vec<&str> = accepted.iter().map(|(_, token)| token.as_str()).collect();
    used.extend(refused.iter().map(|(_, token, ..)| token.as_str()));
    assert_log_holds_no_token(&bench.ca, &used);
}

#[test]
fn rotated_provider_keys_are_picked_up_and_retired_keys_refused() {
    let bench = bench("");
    let provider = &bench.provider;
    let before_rotation = provider.device_flow_id_token(JIT_CLIENT_ID, &TestUser::alice(), false);
    assert_accepted(&bench.ca, &before_rotation, "token from the first keys");

    provider.rotate_keys();
    // The CA refetches at most once per `jwks_min_refetch_secs` (1 s in the tests).
    std::thread::sleep(Duration::from_millis(1100));
    let after_rotation = provider.device_flow_id_token(JIT_CLIENT_ID, &TestUser::alice(), false);
    assert_ne!(
        unverified_header_kid(&before_rotation),
        unverified_header_kid(&after_rotation)
    );

    // An unknown kid makes the CA refetch the JWKS once, and the new key verifies.
    assert_accepted(&bench.ca, &after_rotation, "token from the rotated keys");
    wait_for_event(&bench.ca, "identity provider keys refetched", 0, "rotation");

    // The refetched JWKS no longer holds the retired key: its tokens are refused now.
    assert_rejected(
        &bench.ca,
        &before_rotation,
        (
            401,
            "invalid_token",
            "not signed by a key of the trusted provider",
        ),
        "token signed by a retired key",
    );
    assert_log_holds_no_token(&bench.ca, &[&before_rotation, &after_rotation]);
}

#[test]
fn unreachable_provider_fails_closed() {
    // A CA that starts while the provider is down refuses every token, even an honest one.
    let provider = OidcProvider::start(&TestUser::cast());
    let issuer = provider.issuer().to_owned();
    let honest = provider_signed(&provider, honest_claims(&provider));
    drop(provider);
    let ca = start_ca(&issuer, "");
    assert_rejected(
        &ca,
        &honest,
        (503, "identity_provider_unavailable", "unreachable"),
        "provider down since the CA started",
    );
    drop(ca);

    // A CA whose provider goes away keeps its keys only for `jwks_max_age_secs`; then it
    // fails closed instead of trusting keys the provider may have withdrawn meanwhile.
    let Bench { provider, ca } = bench("jwks_max_age_secs = 3");
    let honest = provider_signed(&provider, honest_claims(&provider));
    let unknown_kid = provider.mint(json!({
        "alg": "RS256", "kid": "no-such-key", "claims": honest_claims(&provider)
    }));
    assert_accepted(&ca, &honest, "honest token while the provider is up");
    drop(provider);

    // Within the maximum age the cached keys still verify, but a key they do not hold cannot
    // be looked up: refused.
    std::thread::sleep(Duration::from_millis(1100));
    assert_accepted(&ca, &honest, "cached keys within their maximum age");
    assert_rejected(
        &ca,
        &unknown_kid,
        (
            401,
            "invalid_token",
            "not signed by a key of the trusted provider",
        ),
        "unknown kid while the provider is down",
    );

    std::thread::sleep(Duration::from_secs(3));
    assert_rejected(
        &ca,
        &honest,
        (503, "identity_provider_unavailable", "unreachable"),
        "cached keys past their maximum age",
    );
    let log = ca.log();
    assert!(log.contains("identity provider keys unavailable"), "{log}");
    assert_log_holds_no_token(&ca, &[&honest, &unknown_kid]);
}
