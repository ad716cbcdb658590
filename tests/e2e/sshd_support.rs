//! Proves the OpenSSH test support against the real `sshd`, `ssh`, `ssh-keygen` and
//! `ssh-agent`, with certificates signed by `ssh-keygen` rather than jit-ca, so that a
//! failure here points at the support and not at the CA.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::support::openssh::{
    generate_ed25519_key, inspect_certificate, parse_certificate_listing, run_checked,
    sign_user_certificate_with_ssh_keygen, CertificateType, SshAgent,
};
use crate::support::sshd::{ssh_login, ssh_login_from, SshOutcome, Sshd, SshdOptions};

/// A CA made by `ssh-keygen` and an sshd that trusts it and lets the principal
/// `<login user>@db-1` in as the login user.
struct Setup {
    workspace: TempDir,
    user: String,
    ca_private: PathBuf,
    ca_public_line: String,
    sshd: Sshd,
}

/// What differs between the certificates the tests sign; the default is a current
/// certificate from the setup's CA for `<login user>@db-1` with no options.
struct CertificateSpec<'a> {
    /// `None`: the setup's CA.
    ca_private: Option<&'a Path>,
    host: &'a str,
    validity: &'a str,
    options: &'a [&'a str],
}

impl Default for CertificateSpec<'_> {
    fn default() -> Self {
        CertificateSpec {
            ca_private: None,
            host: "db-1",
            validity: "-1h:+1d",
            options: &[],
        }
    }
}

impl Setup {
    fn new() -> Setup {
        Setup::start(false)
    }

    /// A setup whose sshd also checks `revoked_keys_path()`, at first empty.
    fn with_revoked_keys() -> Setup {
        Setup::start(true)
    }

    fn start(with_revoked_keys: bool) -> Setup {
        let workspace = tempfile::tempdir().expect("create the workspace");
        let user = Sshd::login_user();
        let (ca_private, ca_public_line) = generate_ed25519_key(workspace.path(), "ca");

        let revoked_keys = with_revoked_keys.then(|| workspace.path().join("revoked_keys"));
        if let Some(revoked_keys) = &revoked_keys {
            fs::write(revoked_keys, "").expect("write an empty revocation list");
        }

        let sshd = Sshd::start(SshdOptions {
            trusted_ca_keys: format!("{ca_public_line}\n"),
            principals: vec![(user.clone(), vec![format!("{user}@db-1")])],
            revoked_keys,
        });
        Setup {
            workspace,
            user,
            ca_private,
            ca_public_line,
            sshd,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.workspace.path().join(name)
    }

    /// A fresh key `name` and its certificate (key ID `name`, serial 7) as `spec` says.
    fn certified_key(&self, name: &str, spec: CertificateSpec) -> (PathBuf, PathBuf) {
        let (identity, _) = generate_ed25519_key(self.workspace.path(), name);
        let certificate = sign_user_certificate_with_ssh_keygen(
            spec.ca_private.unwrap_or(&self.ca_private),
            &self.path(&format!("{name}.pub")),
            name,
            &[self.principal(spec.host)],
            spec.validity,
            7,
            spec.options,
        );
        (identity, certificate)
    }

    fn principal(&self, host: &str) -> String {
        format!("{}@{host}", self.user)
    }

    fn login(&self, identity: &Path, certificate: &Path) -> SshOutcome {
        ssh_login(
            &self.sshd,
            &self.user,
            "db-1",
            identity,
            certificate,
            &[],
            "echo ok",
        )
    }
}

fn assert_logged_in(outcome: &SshOutcome, sshd: &Sshd) {
    assert!(
        outcome.status_success && outcome.stdout == "ok\n",
        "login failed: {outcome:?}\nsshd log:\n{}",
        sshd.log()
    );
}

/// The login was refused at authentication, and sshd logged `reason` for it.
fn assert_refused(outcome: &SshOutcome, sshd: &Sshd, reason: &str) {
    assert!(
        !outcome.status_success && outcome.stderr.contains("Permission denied (publickey)"),
        "login was not refused: {outcome:?}\nsshd log:\n{}",
        sshd.log()
    );
    sshd.wait_for_log(reason);
}

/// The `SHA256:…` fingerprint `ssh-keygen -l` reports for a key file.
fn fingerprint(key_path: &Path) -> String {
    let output = run_checked(Command::new("ssh-keygen").arg("-l").arg("-f").arg(key_path));
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    listing
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint in ssh-keygen -l output")
        .to_owned()
}

#[test]
fn certificate_for_a_listed_principal_logs_in() {
    let setup = Setup::new();
    let (identity, certificate) = setup.certified_key("alice", CertificateSpec::default());

    let outcome = setup.login(&identity, &certificate);

    assert_logged_in(&outcome, &setup.sshd);
    setup
        .sshd
        .wait_for_log("Accepted certificate ID \"alice\" (serial 7) signed by ED25519 CA");
}

#[test]
fn certificate_for_another_principal_is_refused_until_listed() {
    let setup = Setup::new();
    let db_2 = CertificateSpec {
        host: "db-2",
        ..CertificateSpec::default()
    };
    let (identity, certificate) = setup.certified_key("bob", db_2);

    let outcome = setup.login(&identity, &certificate);
    let no_principal = "Certificate does not contain an authorized principal";
    assert_refused(&outcome, &setup.sshd, no_principal);

    // The same certificate passes once its principal is listed: the principal was the reason.
    let principals = [setup.principal("db-1"), setup.principal("db-2")];
    setup.sshd.set_principals(&setup.user, &principals);
    assert_logged_in(&setup.login(&identity, &certificate), &setup.sshd);
}

#[test]
fn certificate_bound_to_another_source_address_is_refused() {
    let setup = Setup::new();
    let bound = CertificateSpec {
        options: &["source-address=127.0.0.3"],
        ..CertificateSpec::default()
    };
    let (identity, certificate) = setup.certified_key("carol", bound);

    let outcome = setup.login(&identity, &certificate);
    let wrong_source = "not from a permitted source address (127.0.0.1)";
    assert_refused(&outcome, &setup.sshd, wrong_source);

    // From the permitted address the same certificate logs in.
    let permitted = Ipv4Addr::new(127, 0, 0, 3);
    let outcome = ssh_login_from(
        &setup.sshd,
        permitted,
        &setup.user,
        "db-1",
        &identity,
        &certificate,
        "echo ok",
    );
    assert_logged_in(&outcome, &setup.sshd);
}

#[test]
fn expired_certificate_is_refused() {
    let setup = Setup::new();
    let expired = CertificateSpec {
        validity: "20200101:20200102",
        ..CertificateSpec::default()
    };
    let (identity, certificate) = setup.certified_key("dave", expired);

    let outcome = setup.login(&identity, &certificate);

    assert_refused(&outcome, &setup.sshd, "Certificate invalid: expired");
}

#[test]
fn certificate_from_another_ca_is_refused_until_trusted() {
    let setup = Setup::new();
    let (other_ca_private, other_ca_public_line) =
        generate_ed25519_key(setup.workspace.path(), "other-ca");
    let from_other_ca = CertificateSpec {
        ca_private: Some(&other_ca_private),
        ..CertificateSpec::default()
    };
    let (identity, certificate) = setup.certified_key("erin", from_other_ca);

    // sshd names no reason for an unknown CA, only the CA of the certificate it turned down.
    let outcome = setup.login(&identity, &certificate);
    let other_ca_fingerprint = fingerprint(&setup.path("other-ca.pub"));
    let turned_down = format!("ID erin (serial 7) CA ED25519 {other_ca_fingerprint}");
    assert_refused(&outcome, &setup.sshd, &turned_down);
    assert!(!setup.sshd.log().contains("Accepted certificate"));

    let both_cas = format!("{}\n{other_ca_public_line}\n", setup.ca_public_line);
    setup.sshd.set_trusted_ca_keys(&both_cas);
    assert_logged_in(&setup.login(&identity, &certificate), &setup.sshd);
}

#[test]
fn key_is_refused_once_revoked() {
    let setup = Setup::with_revoked_keys();
    let (identity, certificate) = setup.certified_key("frank", CertificateSpec::default());
    assert_logged_in(&setup.login(&identity, &certificate), &setup.sshd);

    let public_line = fs::read_to_string(setup.path("frank.pub")).expect("read frank.pub");
    fs::write(setup.path("revoked_keys"), public_line).expect("revoke frank's key");
    let outcome = setup.login(&identity, &certificate);

    assert_refused(&outcome, &setup.sshd, "revoked by file");
}

#[test]
fn agent_holds_the_key_for_a_login() {
    let setup = Setup::new();
    let (identity, certificate) = setup.certified_key("grace", CertificateSpec::default());
    let public_path = setup.path("grace.pub");
    let agent = SshAgent::start();
    assert!(agent.list().contains("no identities"), "{}", agent.list());

    agent.add(&identity);

    assert!(
        agent.list().contains(&fingerprint(&public_path)),
        "{}",
        agent.list()
    );

    // Only the public key on disk: the private half can come from nowhere but the agent.
    let agent_option = format!("IdentityAgent={}", agent.socket().display());
    let outcome = ssh_login(
        &setup.sshd,
        &setup.user,
        "db-1",
        &public_path,
        &certificate,
        &["-o", &agent_option],
        "echo ok",
    );
    assert_logged_in(&outcome, &setup.sshd);
}

#[test]
fn listing_of_a_real_certificate_parses() {
    let workspace = tempfile::tempdir().expect("create the workspace");
    let (ca_private, _) = generate_ed25519_key(workspace.path(), "ca");
    let (_, public_line) = generate_ed25519_key(workspace.path(), "heidi");
    assert!(public_line.starts_with("ssh-ed25519 "), "{public_line}");
    let public_path = workspace.path().join("heidi.pub");
    let principals = ["heidi@db-1", "heidi@db-2"];
    let certificate = sign_user_certificate_with_ssh_keygen(
        &ca_private,
        &public_path,
        "heidi on call",
        &principals,
        "20200101:20300101",
        9001,
        &[
            "clear",
            "permit-pty",
            "source-address=127.0.0.1/32",
            "force-command=echo forced",
        ],
    );

    let listing = inspect_certificate(&certificate);

    assert_eq!(listing.certificate_type, CertificateType::User);
    assert_eq!(listing.key_type, "ssh-ed25519-cert-v01@openssh.com");
    assert_eq!(listing.public_key_fingerprint, fingerprint(&public_path));
    let ca_public_path = workspace.path().join("ca.pub");
    assert_eq!(listing.signing_ca_fingerprint, fingerprint(&ca_public_path));
    assert_eq!(listing.key_id, "heidi on call");
    assert_eq!(listing.serial, 9001);
    let valid_from = listing.valid_from.expect("a start of validity");
    assert_eq!(valid_from.printed, "2020-01-01T00:00:00");
    assert_eq!(valid_from.local_time.to_string(), "2020-01-01 00:00:00");
    let valid_to = listing.valid_to.expect("an end of validity");
    assert_eq!(valid_to.local_time.to_string(), "2030-01-01 00:00:00");
    assert_eq!(listing.principals, principals);
    let critical_options: Vec<(&str, &str)> = listing
        .critical_options
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        critical_options,
        [
            ("force-command", "echo forced"),
            ("source-address", "127.0.0.1/32"),
        ]
    );
    assert_eq!(listing.extensions, ["permit-pty"]);
}

#[test]
fn listing_without_bounds_or_lists_parses() {
    let text = "\
/tmp/host-cert.pub:
        Type: ssh-ed25519-cert-v01@openssh.com host certificate
        Public key: ED25519-CERT SHA256:e1idK2dR1cykD/N4hD6ST39qP8rg3fvZU9iVJK+IU1A
        Signing CA: ED25519 SHA256:uRozBbuuxKMgcRwjbsT8e/RU4Ou1ZOPD7LWIs6E4hJE (using ssh-ed25519)
        Key ID: \"db-1\"
        Serial: 0
        Valid: forever
        Principals: (none)
        Critical Options: (none)
        Extensions: (none)
";

    let listing = parse_certificate_listing(text);

    assert_eq!(listing.certificate_type, CertificateType::Host);
    assert_eq!(
        listing.public_key_fingerprint,
        "SHA256:e1idK2dR1cykD/N4hD6ST39qP8rg3fvZU9iVJK+IU1A"
    );
    assert_eq!(
        listing.signing_ca_fingerprint,
        "SHA256:uRozBbuuxKMgcRwjbsT8e/RU4Ou1ZOPD7LWIs6E4hJE"
    );
    assert_eq!(listing.key_id, "db-1");
    assert_eq!((listing.valid_from, listing.valid_to), (None, None));
    assert!(listing.principals.is_empty());
    assert!(listing.critical_options.is_empty());
    assert!(listing.extensions.is_empty());
}

#[test]
fn listing_with_one_open_bound_parses() {
    let listing = |validity: &str| {
        parse_certificate_listing(&format!(
            "c:\n  Type: t user certificate\n  Public key: K SHA256:a\n  Signing CA: K SHA256:b\n  \
             Key ID: \"k\"\n  Serial: 1\n  Valid: {validity}\n  Principals:\n    p\n  \
             Critical Options: (none)\n  Extensions: (none)\n"
        ))
    };

    let after = listing("after 2020-01-01T00:00:00");
    let before = listing("before 2030-01-01T12:30:00");

    assert_eq!(
        after.valid_from.map(|bound| bound.printed).as_deref(),
        Some("2020-01-01T00:00:00")
    );
    assert_eq!(after.valid_to, None);
    assert_eq!(before.valid_from, None);
    assert_eq!(
        before
            .valid_to
            .map(|bound| bound.local_time.to_string())
            .as_deref(),
        Some("2030-01-01 12:30:00")
    );
    assert_eq!(after.principals, ["p"]);
}
