//! The test OIDC provider itself: the properties the other end-to-end tests rely on.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::oidc::{
    unverified_claims, unverified_header, OidcProvider, TestUser, ACR_MFA, ACR_PASSWORD,
    JIT_CLIENT_ID, OTHER_CLIENT_ID,
};

fn kids(jwks: &Value) -> BTreeSet<String> {
    let keys = jwks["keys"].as_array().expect("a JWKS has keys");
    keys.iter()
        .map(|key| key["kid"].as_str().expect("every key has a kid").to_owned())
        .collect()
}

fn kid(jwt: &str) -> String {
    let header = unverified_header(jwt);
    header["kid"]
        .as_str()
        .expect("the header has a kid")
        .to_owned()
}

fn lifetime(claims: &Value) -> u64 {
    claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap()
}

fn strings(value: &Value) -> Vec<&str> {
    let items = value.as_array().expect("a JSON array");
    items
        .iter()
        .map(|item| item.as_str().expect("a string"))
        .collect()
}

#[test]
fn discovery_advertises_the_device_flow() {
    let provider = OidcProvider::start(&TestUser::cast());

    let discovery = provider.discovery();

    assert_eq!(discovery["issuer"], provider.issuer());
    assert!(provider.issuer().starts_with("http://127.0.0.1:"));
    let endpoint = discovery["device_authorization_endpoint"].as_str().unwrap();
    assert!(endpoint.starts_with(provider.issuer()), "{endpoint}");
    assert_eq!(provider.client_id(), JIT_CLIENT_ID);
}

#[test]
fn device_flow_id_token_carries_the_identity_claims() {
    let provider = OidcProvider::start(&TestUser::cast());

    let id_token = provider.device_flow_id_token(JIT_CLIENT_ID, &TestUser::alice(), false);

    assert_eq!(unverified_header(&id_token)["alg"], "RS256");
    let signing_kid = kid(&id_token);
    assert!(
        kids(&provider.jwks()).contains(&signing_kid),
        "unknown kid {signing_kid}"
    );

    let claims = unverified_claims(&id_token);
    assert_eq!(claims["iss"], provider.issuer());
    assert_eq!(claims["aud"], JIT_CLIENT_ID);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(strings(&claims["groups"]), ["engineers"]);
    assert!(claims["auth_time"].as_u64().unwrap() <= claims["iat"].as_u64().unwrap());
    assert_eq!(strings(&claims["amr"]), ["pwd"]);
    assert_eq!(claims["acr"], ACR_PASSWORD);
    assert_eq!(lifetime(&claims), 3600);
}

#[test]
fn mfa_login_adds_otp_to_amr() {
    let id_token_ttl = Duration::from_secs(90);
    let provider = OidcProvider::start_with_id_token_ttl(&TestUser::cast(), id_token_ttl);

    let id_token = provider.device_flow_id_token(JIT_CLIENT_ID, &TestUser::bob(), true);

    let claims = unverified_claims(&id_token);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(strings(&claims["groups"]), ["dba", "approvers"]);
    assert_eq!(strings(&claims["amr"]), ["pwd", "otp"]);
    assert_eq!(claims["acr"], ACR_MFA);
    assert_eq!(lifetime(&claims), id_token_ttl.as_secs());
}

#[test]
fn other_client_gets_its_own_audience_and_refresh_tokens_work() {
    let provider = OidcProvider::start(&TestUser::cast());

    let tokens = provider.device_flow_tokens(OTHER_CLIENT_ID, &TestUser::carol(), false);
    assert_eq!(unverified_claims(&tokens.id_token)["aud"], OTHER_CLIENT_ID);

    // offline_access was asked for, so a refresh token came back, and it yields a new ID token.
    let refresh_token = tokens
        .refresh_token
        .expect("offline_access gives a refresh token");
    let refreshed = provider.refresh(OTHER_CLIENT_ID, &refresh_token);
    let claims = unverified_claims(&refreshed.id_token);
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["aud"], OTHER_CLIENT_ID);
    assert_eq!(strings(&claims["groups"]), ["approvers"]);
}

#[test]
fn rotate_keys_replaces_every_kid() {
    let provider = OidcProvider::start(&TestUser::cast());
    let before = kids(&provider.jwks());

    provider.rotate_keys();

    let after = kids(&provider.jwks());
    assert_eq!(after.len(), 2, "an RS256 and an ES256 key: {after:?}");
    assert!(before.is_disjoint(&after), "{before:?} then {after:?}");
    let file: Value =
        serde_json::from_slice(&std::fs::read(provider.jwks_path()).unwrap()).unwrap();
    assert_eq!(kids(&file), after);

    let id_token = provider.device_flow_id_token(JIT_CLIENT_ID, &TestUser::erin(), false);
    let signing_kid = kid(&id_token);
    assert!(
        after.contains(&signing_kid),
        "signed with {signing_kid}, not a rotated key"
    );
}

#[test]
fn mint_forges_the_requested_algorithms() {
    let provider = OidcProvider::start(&TestUser::cast());
    let claims = json!({ "iss": provider.issuer(), "sub": "mallory", "aud": JIT_CLIENT_ID });

    let unsigned = provider.mint(json!({ "alg": "none", "claims": claims }));
    let (signing_input, signature) = unsigned.rsplit_once('.').unwrap();
    let header_bytes = URL_SAFE_NO_PAD
        .decode(signing_input.split('.').next().unwrap())
        .unwrap();
    assert!(header_bytes.starts_with(br#"{"alg":"none""#), "{unsigned}");
    assert_eq!(signature, "");
    assert_eq!(unverified_claims(&unsigned), claims);

    let served_kids = kids(&provider.jwks());
    let honest = provider.mint(json!({ "alg": "RS256", "claims": claims }));
    assert!(served_kids.contains(&kid(&honest)));

    let confused = provider.mint(json!({ "alg": "HS256-with-public-key", "claims": claims }));
    assert_eq!(unverified_header(&confused)["alg"], "HS256");
    assert_eq!(kid(&confused), kid(&honest));

    let stranger = provider.mint(json!({ "alg": "ES256", "key": "other", "claims": claims }));
    assert!(!served_kids.contains(&kid(&stranger)));
}

#[test]
fn native_loopback_redirects_may_use_any_port() {
    let provider = OidcProvider::start(&TestUser::cast());
    let verifier = "a-pkce-code-verifier-long-enough-for-rfc-7636-section-4.1";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier));
    let authorization_endpoint = provider.discovery()["authorization_endpoint"]
        .as_str()
        .unwrap();
    let authorize = |redirect_uri: &str| {
        let mut url = reqwest::Url::parse(authorization_endpoint).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", JIT_CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email groups")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "loopback-state");
        url
    };

    // RFC 8252 section 7.3: the registered http://127.0.0.1/callback matches any port.
    let redirect_uri = "http://127.0.0.1:54321/callback";
    let callback = provider.complete_browser_login(
        authorize(redirect_uri).as_str(),
        &TestUser::alice(),
        false,
    );
    let callback = reqwest::Url::parse(&callback).unwrap();
    assert_eq!(callback.port(), Some(54321));
    assert_eq!(callback.path(), "/callback");
    let code = callback
        .query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned())
        .expect("the callback carries a code");

    let tokens = provider
        .token_request(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
            ("client_id", JIT_CLIENT_ID),
        ])
        .unwrap_or_else(|error| panic!("code exchange refused: {error}"));
    let claims = unverified_claims(&tokens.id_token);
    assert_eq!(claims["sub"], "alice");
    assert!(claims["auth_time"].is_u64());

    // Only the port varies: another path is still refused, before any login.
    let other_path = authorize("http://127.0.0.1:54321/elsewhere");
    let refused = reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(other_path)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().unwrap().contains("redirect_uri"));
}
