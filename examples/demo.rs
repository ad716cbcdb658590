//! The local end-to-end demo (`scripts/demo.sh`): a real OIDC provider, the CA on its embedded
//! defaults with the example policy from `config/`, and a throwaway sshd on 127.0.0.1 that plays
//! the host `demo-host`. A demo user logs in with the device flow, asks for access, and logs in
//! over ssh with the certificate the CA issued.
//!
//! It reuses the integration tests' support code, so the demo and the tests drive the same real
//! components in the same way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/e2e/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use support::ca::{device_login, stderr, stdout, Ca, Client};
use support::oidc::{OidcProvider, TestUser, JIT_CLIENT_ID};
use support::sshd::{Sshd, SshdOptions};

fn step(number: u32, text: &str) {
    println!("\n[{number}] {text}");
}

fn main() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let login_user = Sshd::login_user();

    step(
        1,
        "starting the OIDC provider (npm oidc-provider) on 127.0.0.1",
    );
    let alice = TestUser::alice();
    let provider = OidcProvider::start(std::slice::from_ref(&alice));
    println!("    issuer {}", provider.issuer());

    step(
        2,
        "starting jit-ca with config/profiles.toml and config/policy.cedar",
    );
    // The example profile opens the Unix user `readonly`; the throwaway sshd can only log in
    // the user running the demo, so the demo maps the profile to that user.
    let profiles = std::fs::read_to_string(repository.join("config/profiles.toml"))
        .expect("read config/profiles.toml")
        .replace(
            "unix_users = [\"readonly\"]",
            &format!("unix_users = [\"{login_user}\"]"),
        );
    let rules = std::fs::read_to_string(repository.join("config/policy.cedar"))
        .expect("read config/policy.cedar");
    let ca = Ca::start(provider.issuer(), JIT_CLIENT_ID, &profiles, &rules);
    println!(
        "    CA at {}; CA key created in {}",
        ca.url(),
        ca.dir().display()
    );
    let trusted_keys = ca.trusted_keys();
    println!("    GET /v1/ca/keys -> {}", trusted_keys.trim());

    step(
        3,
        "starting a throwaway sshd on 127.0.0.1 as host `demo-host`",
    );
    let principals = vec![
        format!("{login_user}@demo-host"),
        format!("{login_user}@group:demo"),
    ];
    let sshd = Sshd::start(SshdOptions {
        trusted_ca_keys: trusted_keys,
        principals: vec![(login_user.clone(), principals.clone())],
        revoked_keys: None,
    });
    println!(
        "    port {}; TrustedUserCAKeys = the CA key above",
        sshd.port()
    );
    println!(
        "    AuthorizedPrincipalsFile for {login_user}: {}",
        principals.join(", ")
    );

    step(
        4,
        "jit login --device (the demo plays the user's part in the browser)",
    );
    let client = Client::new(ca.url());
    device_login(&provider, &client, &alice);
    println!("    logged in as {}", alice.email);

    step(
        5,
        "jit request read-only --host demo-host --reason \"demo\" --for 15m",
    );
    let request = client.run(&[
        "request",
        "read-only",
        "--host",
        "demo-host",
        "--reason",
        "demo: look around",
        "--for",
        "15m",
    ]);
    assert!(request.status.success(), "{}", stderr(&request));
    print!("{}", indent(&stdout(&request)));
    let grant = client.request_json(&[
        "read-only",
        "--host",
        "demo-host",
        "--reason",
        "demo: JSON summary",
        "--for",
        "15m",
    ]);
    let cert_path = grant["cert_path"].as_str().expect("cert_path").to_owned();

    step(6, "ssh-keygen -L on the issued certificate");
    let listing = Command::new("ssh-keygen")
        .args(["-L", "-f", &cert_path])
        .env("TZ", "UTC")
        .output()
        .expect("run ssh-keygen");
    print!("{}", indent(&String::from_utf8_lossy(&listing.stdout)));

    step(7, "jit ssh: a real ssh login with the certificate");
    let port = sshd.port().to_string();
    let login = client.run(&[
        "ssh",
        &format!("{login_user}@demo-host"),
        "-p",
        &port,
        "-o",
        "HostName=127.0.0.1",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "--",
        "echo",
        "hello from $(hostname) as $(whoami), certificate accepted",
    ]);
    assert!(login.status.success(), "ssh failed: {}", stderr(&login));
    print!("{}", indent(&stdout(&login)));
    let accepted = sshd.wait_for_log("Accepted certificate ID");
    let line = accepted
        .lines()
        .find(|line| line.contains("Accepted certificate ID"))
        .unwrap_or_default();
    println!("    sshd: {}", line.trim());

    println!(
        "\ndemo complete: principal {}, key ID and validity as requested (grant {}).",
        grant["principals"][0].as_str().unwrap_or_default(),
        grant["grant_id"].as_str().unwrap_or_default()
    );
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}
