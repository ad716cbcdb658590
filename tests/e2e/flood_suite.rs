//! Floods against the real CA: rate limits per address and per identity.
//!
//! A burst past a limit is answered 429 with `Retry-After` and the standard error body, is
//! logged as a `rate limited` security event, and costs the CA no token verification.

use serde_json::{json, Value};

use crate::support::api::{
    assert_error_body, assert_log_holds_no_token, http, list_grants, post_request, security_events,
    send, stored_rows, wait_for_event, Answer,
};
use crate::support::ca::Ca;
use crate::support::oidc::{OidcProvider, TestUser, JIT_CLIENT_ID};

fn start_ca(provider: &OidcProvider, limits: &str) -> Ca {
    Ca::start_standard(provider, &format!("[limits]\n{limits}"))
}

/// A token for `user` signed by the provider's key (`other` signs it with a stranger's key).
fn token_for(provider: &OidcProvider, user: &TestUser, key: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims: Value = json!({
        "iss": provider.issuer(), "sub": user.sub, "aud": JIT_CLIENT_ID,
        "iat": now, "exp": now + 600,
        "email": user.email, "email_verified": true, "groups": user.groups,
    });
    provider.mint(json!({ "alg": "RS256", "key": key, "claims": claims }))
}

fn assert_rate_limited(answer: &Answer, case: &str) {
    assert_eq!(answer.status, 429, "{case}: {answer:?}");
    assert_error_body(answer, "rate_limited", case);
    let retry_after: u64 = answer
        .headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{case}: no Retry-After in {answer:?}"));
    assert!(
        (1..=60).contains(&retry_after),
        "{case}: Retry-After {retry_after}"
    );
}

#[test]
fn a_burst_from_one_address_is_cut_off_before_token_checks() {
    let provider = OidcProvider::start(&TestUser::cast());
    let ca = start_ca(
        &provider,
        "per_address_burst = 5\nper_address_per_minute = 6\n",
    );
    let forged = token_for(&provider, &TestUser::alice(), "other");

    let answers: Vec<Answer> = (0..8)
        .map(|_| post_request(&ca, Some(&forged), "{}"))
        .collect();

    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 429, 429, 429],
        "{answers:?}"
    );
    assert_rate_limited(&answers[5], "sixth request");
    wait_for_event(&ca, "rate limited", 0, "address flood");
    // Only the admitted requests reached token verification.
    wait_for_event(&ca, "token rejected", 4, "address flood");
    assert_eq!(security_events(&ca, "token rejected"), 5);
    assert_eq!(stored_rows(&ca), vec![0, 0, 0]);

    // Monitoring stays reachable while the address is limited.
    let health = send(http().get(format!("{}/healthz", ca.url())), None);
    assert_eq!(health.status, 200);
    assert_log_holds_no_token(&ca, &[&forged]);
}

#[test]
fn a_burst_from_one_identity_is_cut_off_and_forgeries_spend_nothing() {
    let provider = OidcProvider::start(&TestUser::cast());
    let ca = start_ca(
        &provider,
        "per_identity_burst = 3\nper_identity_per_minute = 6\n",
    );
    let alice = token_for(&provider, &TestUser::alice(), "provider");
    let bob = token_for(&provider, &TestUser::bob(), "provider");
    let forged_alice = token_for(&provider, &TestUser::alice(), "other");

    // Forged tokens naming alice are refused and do not spend her budget.
    for _ in 0..6 {
        assert_eq!(list_grants(&ca, &forged_alice).status, 401);
    }
    for attempt in 0..3 {
        let answer = list_grants(&ca, &alice);
        assert_eq!(answer.status, 200, "alice's request {attempt}: {answer:?}");
    }

    let limited = list_grants(&ca, &alice);
    assert_rate_limited(&limited, "alice's fourth request");
    wait_for_event(&ca, "rate limited", 0, "identity flood");

    // Another person from the same address is unaffected.
    assert_eq!(list_grants(&ca, &bob).status, 200);
    assert_log_holds_no_token(&ca, &[&alice, &bob, &forged_alice]);
}
