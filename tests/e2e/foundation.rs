//! The whole path once, for real: a user logs in at the OIDC provider, asks the CA for access,
//! gets a certificate, and a real sshd accepts it exactly where it should and nowhere else.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::ca::{device_login, stderr, stdout, test_profiles, Ca, Client, TEST_RULES};
use crate::support::oidc::{OidcProvider, TestUser, JIT_CLIENT_ID};
use crate::support::openssh::inspect_certificate;
use crate::support::sshd::{ssh_login, ssh_login_from, Sshd, SshdOptions};

/// Everything one scenario needs: provider, CA and an sshd that plays the host `db-1`.
struct World {
    provider: OidcProvider,
    ca: Ca,
    sshd: Sshd,
    login_user: String,
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
    // This sshd is db-1 (group db-prod): the principals that open the login user here.
    let sshd = Sshd::start(SshdOptions {
        trusted_ca_keys: ca.trusted_keys(),
        principals: vec![(
            login_user.clone(),
            vec![
                format!("{login_user}@db-1"),
                format!("{login_user}@group:db-prod"),
                format!("{login_user}@web-1"),
            ],
        )],
        revoked_keys: None,
    });
    World {
        provider,
        ca,
        sshd,
        login_user,
    }
}

fn path_of(value: &Value, field: &str) -> PathBuf {
    PathBuf::from(
        value[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {value}")),
    )
}

#[test]
fn device_login_then_request_then_real_ssh_login() {
    let world = world();
    let client = Client::new(world.ca.url());
    device_login(&world.provider, &client, &TestUser::alice());

    let granted = client.request_json(&[
        "read-only",
        "--host",
        "db-1",
        "--reason",
        "check replication lag",
        "--for",
        "20m",
    ]);

    // The JSON summary names everything a script needs.
    let principal = format!("{}@db-1", world.login_user);
    assert_eq!(granted["principals"], json!([principal]));
    let serial = granted["serial"].as_u64().expect("serial");
    let grant_id = granted["grant_id"].as_str().expect("grant_id").to_owned();
    let key_path = path_of(&granted, "key_path");
    let cert_path = path_of(&granted, "cert_path");
    for secret_file in [&key_path, &cert_path] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(secret_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", secret_file.display());
    }

    // The real ssh-keygen reads the certificate as we meant it.
    let listing = inspect_certificate(&cert_path);
    assert_eq!(listing.principals, vec![principal.clone()]);
    assert_eq!(listing.serial, serial);
    assert_eq!(
        listing.key_id,
        format!("alice@example.com/{grant_id}/{serial}")
    );
    assert_eq!(listing.extensions, vec!["permit-pty".to_owned()]);
    assert!(listing.critical_options.is_empty());
    let valid_from = listing.valid_from.expect("valid_from").local_time;
    let valid_to = listing.valid_to.expect("valid_to").local_time;
    // Twenty minutes of grant plus the documented 30 s back-dating.
    assert_eq!((valid_to - valid_from).num_seconds(), 20 * 60 + 30);
    let valid_before: chrono::DateTime<chrono::Utc> =
        granted["valid_before"].as_str().unwrap().parse().unwrap();
    assert_eq!(valid_before.naive_utc(), valid_to);

    // sshd accepts it for the right user on the right host name.
    let login = ssh_login(
        &world.sshd,
        &world.login_user,
        "db-1",
        &key_path,
        &cert_path,
        &[],
        "echo logged-in",
    );
    assert!(login.status_success, "ssh refused: {}", login.stderr);
    assert_eq!(login.stdout.trim(), "logged-in");
    world.sshd.wait_for_log(&format!(
        "ID \"alice@example.com/{grant_id}/{serial}\" (serial {serial})"
    ));

    // The store holds the request, the grant and the certificate text.
    assert_eq!(world.ca.count("certificates"), 1);
    let stored = world.ca.sql(&format!(
        "SELECT key_id || '|' || principals || '|' || client_address FROM certificates WHERE serial = {serial}"
    ));
    assert!(
        stored.contains(&grant_id) && stored.contains("127.0.0.1"),
        "{stored}"
    );

    // `jit status` shows the grant with time left.
    let status = client.run(&["status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(stdout(&status).contains(&grant_id), "{}", stdout(&status));

    // `jit ssh` finds the grant by host and runs the real ssh with its key and certificate.
    let port = world.sshd.port().to_string();
    let jit_ssh = client.run(&[
        "ssh",
        &format!("{}@db-1", world.login_user),
        "-p",
        &port,
        "-o",
        "HostName=127.0.0.1",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "--",
        "echo",
        "via-jit-ssh",
    ]);
    assert!(
        jit_ssh.status.success(),
        "jit ssh failed: {}",
        stderr(&jit_ssh)
    );
    assert_eq!(stdout(&jit_ssh).trim(), "via-jit-ssh");

    // With no grant for a host, `jit ssh` says which request to make.
    let no_grant = client.run(&["ssh", "web-1"]);
    assert!(!no_grant.status.success());
    assert!(
        stderr(&no_grant).contains("jit request"),
        "{}",
        stderr(&no_grant)
    );
}

#[test]
fn certificates_open_only_the_user_host_address_and_window_they_name() {
    let world = world();
    let client = Client::new(world.ca.url());
    let id_token = world
        .provider
        .device_flow_id_token(JIT_CLIENT_ID, &TestUser::alice(), false);
    client.login_with_token(&id_token);
    let request = |profile: &str, host: &str, duration: &str| {
        client.request_json(&[
            profile, "--host", host, "--reason", "test", "--for", duration,
        ])
    };

    // A certificate for db-2 does not open db-1.
    let for_db_2 = request("read-only", "db-2", "10m");
    let outcome = ssh_login(
        &world.sshd,
        &world.login_user,
        "db-1",
        &path_of(&for_db_2, "key_path"),
        &path_of(&for_db_2, "cert_path"),
        &[],
        "true",
    );
    assert!(!outcome.status_success, "db-2 certificate opened db-1");

    // A certificate for the login user does not open another Unix user.
    let for_db_1 = request("read-only", "db-1", "10m");
    let other_user = if world.login_user == "root" {
        "daemon"
    } else {
        "root"
    };
    let outcome = ssh_login(
        &world.sshd,
        other_user,
        "db-1",
        &path_of(&for_db_1, "key_path"),
        &path_of(&for_db_1, "cert_path"),
        &[],
        "true",
    );
    assert!(!outcome.status_success, "certificate opened {other_user}");

    // source-address pins the certificate to the requester's address (127.0.0.1 here).
    let pinned = request("pinned", "db-1", "10m");
    let listing = inspect_certificate(&path_of(&pinned, "cert_path"));
    assert_eq!(
        listing
            .critical_options
            .get("source-address")
            .map(String::as_str),
        Some("127.0.0.1/32")
    );
    let from_elsewhere = ssh_login_from(
        &world.sshd,
        Ipv4Addr::new(127, 0, 0, 2),
        &world.login_user,
        "db-1",
        &path_of(&pinned, "key_path"),
        &path_of(&pinned, "cert_path"),
        "true",
    );
    assert!(!from_elsewhere.status_success, "accepted from 127.0.0.2");
    let from_requester = ssh_login_from(
        &world.sshd,
        Ipv4Addr::new(127, 0, 0, 1),
        &world.login_user,
        "db-1",
        &path_of(&pinned, "key_path"),
        &path_of(&pinned, "cert_path"),
        "echo pinned-ok",
    );
    assert!(from_requester.status_success, "{}", from_requester.stderr);

    // force-command runs the profile's one command whatever the user asks for.
    let forced = request("one-command", "web-1", "5m");
    let listing = inspect_certificate(&path_of(&forced, "cert_path"));
    assert_eq!(
        listing
            .critical_options
            .get("force-command")
            .map(String::as_str),
        Some("echo forced-command-ran")
    );
    let outcome = ssh_login(
        &world.sshd,
        &world.login_user,
        "web-1",
        &path_of(&forced, "key_path"),
        &path_of(&forced, "cert_path"),
        &[],
        "echo something-else",
    );
    assert!(outcome.status_success, "{}", outcome.stderr);
    assert_eq!(outcome.stdout.trim(), "forced-command-ran");

    // After its window the certificate is refused.
    let short = request("read-only", "db-1", "2s");
    let key_path = path_of(&short, "key_path");
    let cert_path = path_of(&short, "cert_path");
    let valid_before: chrono::DateTime<chrono::Utc> =
        short["valid_before"].as_str().unwrap().parse().unwrap();
    while chrono::Utc::now() <= valid_before + chrono::TimeDelta::seconds(1) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let expired = ssh_login(
        &world.sshd,
        &world.login_user,
        "db-1",
        &key_path,
        &cert_path,
        &[],
        "true",
    );
    assert!(!expired.status_success, "expired certificate accepted");
    world.sshd.wait_for_log("expired");
}

#[test]
fn risky_requests_wait_for_approval_and_get_no_certificate() {
    let world = world();
    let client = Client::new(world.ca.url());
    let id_token = world
        .provider
        .device_flow_id_token(JIT_CLIENT_ID, &TestUser::bob(), false);
    client.login_with_token(&id_token);

    let pending = client.request_json(&[
        "db-root",
        "--host",
        "db-1",
        "--reason",
        "vacuum full",
        "--ticket",
        "CHG-1234",
    ]);

    assert_eq!(pending["status"], "pending");
    let request_id = pending["request_id"].as_str().expect("request_id");
    assert_eq!(world.ca.count("access_requests"), 1);
    assert_eq!(world.ca.count("certificates"), 0);
    assert_eq!(
        world
            .ca
            .sql("SELECT status || ' ' || required_approvals FROM access_requests"),
        "pending 2"
    );

    let view: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v1/requests/{request_id}", world.ca.url()))
        .bearer_auth(&id_token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(view["status"], "pending");
    assert!(view.get("grant").is_none());

    // The same request is invisible to someone else.
    let alice_token = world
        .provider
        .device_flow_id_token(JIT_CLIENT_ID, &TestUser::alice(), false);
    let status = reqwest::blocking::Client::new()
        .get(format!("{}/v1/requests/{request_id}", world.ca.url()))
        .bearer_auth(&alice_token)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 404);

    let metrics = reqwest::blocking::get(format!("{}/metrics", world.ca.url()))
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("jit_pending_requests 1"), "{metrics}");
    assert!(
        metrics.contains("jit_requests_total{outcome=\"pending\"} 1"),
        "{metrics}"
    );
}

/// Sends `body` to `POST /v1/requests` with `token`, returns status and JSON body.
fn post_request(ca: &Ca, token: Option<&str>, body: String) -> (u16, Value) {
    let mut request = reqwest::blocking::Client::new()
        .post(format!("{}/v1/requests", ca.url()))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("POST /v1/requests");
    let status = response.status().as_u16();
    let body = response.json().unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn bad_input_is_refused_with_its_status_and_nothing_is_stored() {
    let world = world();
    let provider = &world.provider;
    let alice = TestUser::alice();
    let good_token = provider.device_flow_id_token(JIT_CLIENT_ID, &alice, false);
    let claims = crate::support::oidc::unverified_claims(&good_token);
    let (_key_dir, public_key) = {
        let dir = tempfile::tempdir().unwrap();
        let (_, public_line) = crate::support::openssh::generate_ed25519_key(dir.path(), "k");
        (dir, public_line)
    };
    let body = |profile: &str, host: &str, key: &str| {
        json!({ "profile": profile, "host": host, "reason": "r", "public_key": key }).to_string()
    };
    let valid_body = body("read-only", "db-1", &public_key);

    let now = chrono::Utc::now().timestamp();
    let forged = provider.mint(json!({ "alg": "RS256", "key": "other", "claims": claims }));
    let mut expired_claims = claims.clone();
    expired_claims["iat"] = json!(now - 7200);
    expired_claims["exp"] = json!(now - 3600);
    let expired = provider.mint(json!({ "alg": "RS256", "claims": expired_claims }));
    let unsigned = provider.mint(json!({ "alg": "none", "claims": claims }));
    let other_audience =
        provider.device_flow_id_token(crate::support::oidc::OTHER_CLIENT_ID, &alice, false);

    let token_cases = [
        ("forged", Some(forged.as_str()), "invalid_token"),
        ("expired", Some(expired.as_str()), "token_expired"),
        ("alg none", Some(unsigned.as_str()), "invalid_token"),
        (
            "other audience",
            Some(other_audience.as_str()),
            "invalid_token",
        ),
        ("missing", None, "invalid_token"),
    ];
    for (name, token, code) in token_cases {
        let (status, response) = post_request(&world.ca, token, valid_body.clone());
        assert_eq!(status, 401, "{name}: {response}");
        assert_eq!(response["error"], code, "{name}: {response}");
        assert!(response["message"].as_str().is_some(), "{name}: {response}");
    }

    let mallory_token = provider.device_flow_id_token(JIT_CLIENT_ID, &TestUser::mallory(), false);
    let certificate_as_key = {
        let granted = Client::new(world.ca.url());
        granted.login_with_token(&good_token);
        let value = granted.request_json(&["read-only", "--host", "web-1", "--reason", "x"]);
        std::fs::read_to_string(path_of(&value, "cert_path")).unwrap()
    };
    let issued_before = world.ca.count("certificates");
    let requests_before = world.ca.count("access_requests");

    let oversized = json!({
        "profile": "read-only", "host": "db-1", "reason": "x".repeat(20_000), "public_key": public_key
    })
    .to_string();
    let unknown_field = json!({
        "profile": "read-only", "host": "db-1", "reason": "r", "public_key": public_key, "admin": true
    })
    .to_string();
    let request_cases = [
        (
            "outsider",
            &mallory_token,
            valid_body.clone(),
            403,
            "policy_denied",
        ),
        (
            "profile not covering host",
            &good_token,
            body("one-command", "db-1", &public_key),
            403,
            "policy_denied",
        ),
        (
            "unknown profile",
            &good_token,
            body("god-mode", "db-1", &public_key),
            403,
            "policy_denied",
        ),
        (
            "unknown host",
            &good_token,
            body("read-only", "db-9", &public_key),
            400,
            "invalid_request",
        ),
        (
            "host with comma",
            &good_token,
            body("read-only", "db-1,db-2", &public_key),
            400,
            "invalid_request",
        ),
        (
            "malformed key",
            &good_token,
            body("read-only", "db-1", "ssh-ed25519 AAAAnotakey"),
            422,
            "invalid_public_key",
        ),
        (
            "certificate as key",
            &good_token,
            body("read-only", "db-1", &certificate_as_key),
            422,
            "invalid_public_key",
        ),
        (
            "oversized body",
            &good_token,
            oversized,
            413,
            "payload_too_large",
        ),
        (
            "unknown field",
            &good_token,
            unknown_field,
            400,
            "invalid_request",
        ),
        (
            "not json",
            &good_token,
            "{{{".to_owned(),
            400,
            "invalid_request",
        ),
    ];
    for (name, token, request_body, expected_status, code) in request_cases {
        let (status, response) = post_request(&world.ca, Some(token), request_body);
        assert_eq!(status, expected_status, "{name}: {response}");
        assert_eq!(response["error"], code, "{name}: {response}");
        let message = response["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "{name}: {response}"
        );
    }

    // Nothing was stored or issued for any refused request.
    assert_eq!(world.ca.count("certificates"), issued_before);
    assert_eq!(world.ca.count("access_requests"), requests_before);

    // Refusals are security events; no token ever reaches the log.
    let log = world.ca.log();
    assert!(log.contains("token rejected"), "{log}");
    assert!(log.contains("request denied"), "{log}");
    for token in [
        &good_token,
        &forged,
        &expired,
        &unsigned,
        &other_audience,
        &mallory_token,
    ] {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!log.contains(token.as_str()));
        assert!(signature.is_empty() || !log.contains(signature));
    }
}

#[test]
fn example_configuration_checks_and_explains() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/jit-ca.toml");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_jit-ca"))
            .args(args)
            .output()
            .expect("run jit-ca")
    };

    let check = run(&["policy", "check", "--config", config]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stdout(&check).starts_with("policy ok"),
        "{}",
        stdout(&check)
    );

    let engineer = run(&[
        "policy",
        "explain",
        "--config",
        config,
        "--email",
        "a@example.com",
        "--groups",
        "engineers",
        "--profile",
        "read-only",
        "--host",
        "db-1",
        "--for",
        "45m",
    ]);
    let text = stdout(&engineer);
    assert!(text.contains("auto-approved"), "{text}");
    assert!(text.contains("engineers-read-only"), "{text}");
    assert!(text.contains("readonly@db-1"), "{text}");
    assert!(text.contains("45m"), "{text}");

    let dba = run(&[
        "policy",
        "explain",
        "--config",
        config,
        "--email",
        "b@example.com",
        "--groups",
        "dba",
        "--profile",
        "db-root",
        "--host",
        "db-2",
        "--ticket",
        "CHG-9",
    ]);
    let text = stdout(&dba);
    assert!(text.contains("needs 2 approval"), "{text}");
    assert!(text.contains("dba-request-db-root"), "{text}");

    let too_long = run(&[
        "policy",
        "explain",
        "--config",
        config,
        "--email",
        "b@example.com",
        "--groups",
        "dba",
        "--profile",
        "db-root",
        "--host",
        "db-2",
        "--ticket",
        "CHG-9",
        "--for",
        "3h",
    ]);
    // The profile caps 3h to 1h before the rules see it, so the forbid rule does not fire.
    assert!(
        stdout(&too_long).contains("cut to the profile's maximum"),
        "{}",
        stdout(&too_long)
    );

    let outsider = run(&[
        "policy",
        "explain",
        "--config",
        config,
        "--email",
        "m@example.com",
        "--profile",
        "read-only",
        "--host",
        "db-1",
    ]);
    assert!(
        stdout(&outsider).contains("denied by default"),
        "{}",
        stdout(&outsider)
    );
}

#[test]
fn refuses_to_start_on_an_exposed_key_or_a_broken_policy() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let login_user = Sshd::login_user();
    std::fs::write(dir.path().join("profiles.toml"), test_profiles(&login_user)).unwrap();
    std::fs::write(dir.path().join("policy.cedar"), TEST_RULES).unwrap();
    let config = r#"
listen = "127.0.0.1:0"
[oidc]
issuer = "http://127.0.0.1:9"
client_id = "jit"
[ca]
key_file = "ca_key"
[store]
url = "sqlite://jit-ca.db"
[policy]
profiles = "profiles.toml"
cedar = "policy.cedar"
"#;
    let config_path = dir.path().join("jit-ca.toml");
    std::fs::write(&config_path, config).unwrap();
    let serve = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_jit-ca"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .output()
            .expect("run jit-ca")
    };

    let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_jit-ca"))
        .args(["keygen", "--out"])
        .arg(dir.path().join("ca_key"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    assert!(stdout(&keygen).starts_with("ssh-ed25519 "));
    std::fs::set_permissions(dir.path().join("ca_key"), PermissionsExt::from_mode(0o640)).unwrap();
    let exposed = serve();
    assert!(!exposed.status.success());
    assert!(
        stderr(&exposed).contains("readable by other users"),
        "{}",
        stderr(&exposed)
    );
    assert!(stderr(&exposed).contains("ca_key"), "{}", stderr(&exposed));
    std::fs::set_permissions(dir.path().join("ca_key"), PermissionsExt::from_mode(0o600)).unwrap();

    std::fs::write(
        dir.path().join("policy.cedar"),
        "@id(\"bad\") permit(principal, action, resource) when { context.nope };",
    )
    .unwrap();
    let broken = serve();
    assert!(!broken.status.success());
    assert!(
        stderr(&broken).contains("policy.cedar"),
        "{}",
        stderr(&broken)
    );
    assert!(stderr(&broken).contains("bad"), "{}", stderr(&broken));

    std::fs::write(dir.path().join("jit-ca.toml"), "listen = 5").unwrap();
    let invalid = serve();
    assert!(!invalid.status.success());
    assert!(
        stderr(&invalid).contains("jit-ca.toml"),
        "{}",
        stderr(&invalid)
    );
}
