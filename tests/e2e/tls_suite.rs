//! Transport defences of the real CA: HTTPS with a certificate from its config, the client
//! verifying it, plain HTTP kept on loopback, and slow or numerous connections bounded.
//!
//! The certificates are made by the real `openssl` CLI: a private root and a server
//! certificate for 127.0.0.1 signed by it, as an operator with an internal authority would.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::support::api::assert_log_holds_no_token;
use crate::support::ca::{
    run_bounded, stderr, test_profiles, workspace_binary, Ca, Client, TEST_RULES,
};
use crate::support::oidc::{OidcProvider, TestUser, JIT_CLIENT_ID};
use crate::support::openssh::{poll_until, run_checked};

/// Header-read timeout of the slow-client test, in seconds.
const HEADER_TIMEOUT_SECS: u64 = 2;

/// A private certificate authority and a server certificate it signed for 127.0.0.1.
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn generate() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let openssl = |args: &[&str]| {
            run_checked(Command::new("openssl").args(args).current_dir(dir.path()));
        };
        let ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

        let mut root = vec!["req", "-x509", "-nodes", "-days", "2"];
        root.extend(ec_key);
        root.extend(["-subj", "/CN=jit-ca test root", "-keyout", "root.key"]);
        root.extend(["-out", "root.pem"]);
        root.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        root.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&root);

        let mut request = vec!["req", "-nodes"];
        request.extend(ec_key);
        request.extend(["-subj", "/CN=127.0.0.1", "-keyout", "server.key"]);
        request.extend(["-out", "server.csr"]);
        openssl(&request);

        // RFC 6125: a client checks an IP address against an iPAddress subjectAltName only.
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
             keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        std::fs::set_permissions(dir.path().join("server.key"), mode(0o600)).unwrap();
        TestPki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The root the client must be given: the CA bundle.
    fn root(&self) -> PathBuf {
        self.path("root.pem")
    }

    /// A `[tls]` section serving the server certificate with `key_file`.
    fn tls_section(&self, key_file: &str) -> String {
        format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.path("server.pem").display(),
            self.path(key_file).display()
        )
    }
}

fn mode(bits: u32) -> std::fs::Permissions {
    PermissionsExt::from_mode(bits)
}

fn port_of(ca: &Ca) -> u16 {
    let port = ca.url().rsplit(':').next().expect("a port in the URL");
    port.parse().expect("a numeric port")
}

/// `jit ARGS` with the CA bundle in `$JIT_CA_BUNDLE` when given.
fn run_jit(client: &Client, args: &[&str], ca_bundle: Option<&Path>) -> Output {
    let mut command = client.command(args);
    if let Some(path) = ca_bundle {
        command.env("JIT_CA_BUNDLE", path);
    }
    run_bounded(command, None, Duration::from_secs(60))
}

const REQUEST: [&str; 6] = ["request", "read-only", "--host", "web-1", "--reason", "tls"];

#[test]
fn the_client_trusts_the_ca_only_through_its_bundle() {
    let provider = OidcProvider::start(&TestUser::cast());
    let pki = TestPki::generate();
    let ca = Ca::start_standard(&provider, &pki.tls_section("server.key"));
    assert!(ca.url().starts_with("https://"), "{}", ca.url());
    let token = provider.device_flow_id_token(JIT_CLIENT_ID, &TestUser::alice(), false);
    let client = Client::new(ca.url());
    client.login_with_token(&token);

    // Without the bundle the private root is unknown: one line says so and what to set.
    let refused = run_jit(&client, &REQUEST, None);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(message.contains("is not trusted"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("JIT_CA_BUNDLE"), "{message}");
    assert_eq!(ca.count("access_requests"), 0, "nothing reached the CA");

    // Through $JIT_CA_BUNDLE.
    let mut with_env = REQUEST.to_vec();
    with_env.push("--json");
    let granted = run_jit(&client, &with_env, Some(&pki.root()));
    assert!(granted.status.success(), "{}", stderr(&granted));
    let granted: serde_json::Value = serde_json::from_slice(&granted.stdout).unwrap();
    assert!(granted["serial"].as_u64().is_some(), "{granted}");

    // Through `ca_bundle` in the config file, relative to its directory.
    let config_dir = client.state_dir().join("../../config/jit");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::copy(pki.root(), config_dir.join("roots.pem")).unwrap();
    std::fs::write(
        config_dir.join("config.toml"),
        "ca_bundle = \"roots.pem\"\n",
    )
    .unwrap();
    let from_file = run_jit(&client, &["status"], None);
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    assert_eq!(ca.count("certificates"), 1);

    // The port speaks TLS only: a plain HTTP request gets no HTTP answer.
    let mut plain = connect(port_of(&ca), Duration::from_millis(200));
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (answer, closed) = read_until_closed(&mut plain, Duration::from_secs(10));
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    assert!(
        closed.is_some(),
        "the CA closes a connection that is not TLS"
    );
    assert_log_holds_no_token(&ca, &[&token]);
}

/// `jit-host setup` against `ca` with a made-up enrolment token, trusting `ca_bundle` when
/// given. It gets as far as the CA's answer only when the TLS handshake succeeded.
fn host_setup(ca: &Ca, state: &Path, ca_bundle: Option<&Path>) -> Output {
    let mut command = Command::new(workspace_binary("jit-host"));
    command
        .arg("setup")
        .args(["--server", ca.url(), "--name", "web-1"])
        .args(["--token", "not-a-real-enrolment-token"])
        .arg("--state-dir")
        .arg(state.join("jit"))
        .arg("--sshd-config-dir")
        .arg(state.join("sshd_config.d"));
    if let Some(path) = ca_bundle {
        command.arg("--ca-bundle").arg(path);
    }
    run_bounded(command, None, Duration::from_secs(60))
}

#[test]
fn the_host_agent_trusts_the_ca_only_through_its_bundle() {
    let provider = OidcProvider::start(&TestUser::cast());
    let pki = TestPki::generate();
    let ca = Ca::start_standard(&provider, &pki.tls_section("server.key"));
    let state = tempfile::tempdir().unwrap();

    // Without the bundle: one line that names the problem and the flag, and no retries.
    let started = Instant::now();
    let refused = host_setup(&ca, state.path(), None);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(message.contains("is not trusted"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("--ca-bundle"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an untrusted certificate was retried"
    );

    // With it the handshake succeeds, and the CA itself answers: it refuses the token.
    let answered = host_setup(&ca, state.path(), Some(&pki.root()));
    assert!(!answered.status.success());
    let message = stderr(&answered);
    assert!(message.contains("enrolment token refused"), "{message}");

    // A bundle that is not one is named before anything is sent.
    let not_pem = state.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let unusable = host_setup(&ca, state.path(), Some(&not_pem));
    let message = stderr(&unusable);
    assert!(message.contains("cannot use the CA bundle"), "{message}");
    assert!(message.contains("not.pem"), "{message}");
    assert_eq!(ca.count("hosts"), 0);
}

/// Runs `jit-ca serve` on `config` in `dir` and returns its one-line error.
fn refused_start(dir: &Path, config: &str) -> String {
    let config_path = dir.join("jit-ca.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = Command::new(workspace_binary("jit-ca"));
    command.args(["serve", "--config"]).arg(&config_path);
    let output = run_bounded(command, None, Duration::from_secs(30));

    assert!(!output.status.success(), "jit-ca started on:\n{config}");
    let text = stderr(&output);
    let error = text.lines().find(|line| line.starts_with("jit-ca: "));
    error
        .unwrap_or_else(|| panic!("no error line in:\n{text}"))
        .to_owned()
}

#[test]
fn plain_http_beyond_loopback_and_unusable_certificates_are_refused_at_start() {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("profiles.toml"), test_profiles("jituser")).unwrap();
    std::fs::write(dir.path().join("policy.cedar"), TEST_RULES).unwrap();
    let config = |listen: &str, rest: &str| {
        format!(
            "listen = \"{listen}\"\n[oidc]\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"jit\"\n\
             [ca]\nkey_file = \"ca_key\"\n[store]\nurl = \"sqlite://jit-ca.db\"\n\
             [policy]\nprofiles = \"profiles.toml\"\ncedar = \"policy.cedar\"\n{rest}"
        )
    };

    let everywhere = refused_start(dir.path(), &config("0.0.0.0:0", ""));
    assert!(
        everywhere.contains("plain HTTP on 0.0.0.0:0"),
        "{everywhere}"
    );
    assert!(
        everywhere.contains("[http] allow_plain_http = true"),
        "{everywhere}"
    );
    let any_v6 = refused_start(dir.path(), &config("[::]:0", "[http]\n"));
    assert!(any_v6.contains("allow_plain_http"), "{any_v6}");
    assert!(
        !dir.path().join("ca_key").exists(),
        "refused before the key"
    );

    std::fs::set_permissions(pki.path("server.key"), mode(0o644)).unwrap();
    let exposed = refused_start(
        dir.path(),
        &config("127.0.0.1:0", &pki.tls_section("server.key")),
    );
    assert!(exposed.contains("[tls] key_file"), "{exposed}");
    assert!(exposed.contains("chmod 600"), "{exposed}");

    std::fs::set_permissions(pki.path("root.key"), mode(0o600)).unwrap();
    let mismatched = refused_start(
        dir.path(),
        &config("127.0.0.1:0", &pki.tls_section("root.key")),
    );
    assert!(
        mismatched.contains("cannot be used together"),
        "{mismatched}"
    );
}

/// Reads until the peer closes, or `limit` passes; returns what came and when the close was
/// seen (None: still open at the limit). The stream needs a read timeout shorter than `limit`.
fn read_until_closed(stream: &mut impl Read, limit: Duration) -> (Vec<u8>, Option<Instant>) {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buffer) {
            Ok(0) => return (received, Some(Instant::now())),
            Ok(count) => received.extend_from_slice(&buffer[..count]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (received, Some(Instant::now())),
        }
    }
    (received, None)
}

/// A TCP connection to the CA whose reads give up after `read_timeout`.
fn connect(port: u16, read_timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the CA");
    stream.set_read_timeout(Some(read_timeout)).unwrap();
    stream
}

/// A TLS connection to the CA that has finished its handshake, trusting `root`.
fn tls_connect(port: u16, root: &Path) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();

    let mut stream = rustls::StreamOwned::new(connection, connect(port, Duration::from_secs(1)));
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    stream
}

/// An HTTPS client trusting `root`, with a new connection per request: a kept connection
/// would itself be cut off by the header timeout under test.
fn https_client(root: &Path) -> reqwest::blocking::Client {
    let pem = std::fs::read(root).unwrap();
    reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .pool_max_idle_per_host(0)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The header timeout closed the connection whose clock started at `since`: not before the
/// timeout, and not long after.
fn assert_cut_off_at_the_timeout(since: Instant, closed: Option<Instant>, case: &str) {
    let timeout = Duration::from_secs(HEADER_TIMEOUT_SECS);
    let closed = closed.unwrap_or_else(|| panic!("{case}: never closed"));
    let closed_after = closed.duration_since(since);
    assert!(
        closed_after >= timeout - Duration::from_millis(500) && closed_after < timeout * 4,
        "{case}: closed after {closed_after:?}"
    );
}

#[test]
fn slow_clients_are_cut_off_at_the_header_timeout_while_others_are_served() {
    let provider = OidcProvider::start(&TestUser::cast());
    let pki = TestPki::generate();
    let extra = format!(
        "header_read_timeout_secs = {HEADER_TIMEOUT_SECS}\n{}",
        pki.tls_section("server.key")
    );
    let ca = Ca::start_standard(&provider, &extra);
    let port = port_of(&ca);
    let https = https_client(&pki.root());
    let limit = Duration::from_secs(HEADER_TIMEOUT_SECS * 5);

    // Three slow clients at once: one never starts TLS, one sends half a request's headers,
    // one stays idle after a complete request.
    let mut silent = connect(port, Duration::from_millis(200));
    let silent_since = Instant::now();
    let mut half_header = tls_connect(port, &pki.root());
    let half_since = Instant::now();
    half_header
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow")
        .unwrap();
    half_header.flush().unwrap();
    let mut idle = tls_connect(port, &pki.root());
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    idle.flush().unwrap();
    let idle_since = Instant::now();

    // Meanwhile the CA answers everyone else.
    let health = https
        .get(format!("{}/healthz", ca.url()))
        .send()
        .expect("a normal request is served");
    assert_eq!(health.status(), 200);

    let (_, silent_closed) = read_until_closed(&mut silent, limit);
    assert_cut_off_at_the_timeout(silent_since, silent_closed, "no TLS handshake");
    let (_, half_closed) = read_until_closed(&mut half_header, limit);
    assert_cut_off_at_the_timeout(half_since, half_closed, "half a header");
    let (answered, idle_closed) = read_until_closed(&mut idle, limit);
    assert!(answered.starts_with(b"HTTP/1.1 200"), "{answered:?}");
    assert_cut_off_at_the_timeout(idle_since, idle_closed, "idle keep-alive");

    assert!(ca.log().contains("header read timeout"), "{}", ca.log());
    let after = https.get(format!("{}/healthz", ca.url())).send().unwrap();
    assert_eq!(after.status(), 200, "the CA still serves");
}

/// Sends `GET /healthz` on `stream` and reads one answer, keeping the connection open; None
/// when the CA closed it instead of answering.
fn healthz_on(stream: &mut TcpStream) -> Option<String> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    // The body is "ok\n": the answer is complete once it has arrived after the headers.
    while !received.ends_with(b"\r\n\r\nok\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return None,
            Ok(count) => received.extend_from_slice(&buffer[..count]),
        }
    }
    Some(String::from_utf8_lossy(&received).into_owned())
}

#[test]
fn connections_past_the_cap_are_closed_until_one_ends() {
    let provider = OidcProvider::start(&TestUser::cast());
    let ca = Ca::start_standard(
        &provider,
        "max_connections = 3\nheader_read_timeout_secs = 30\n",
    );
    let port = port_of(&ca);
    let open = |_| {
        // The start-up probe's connection may still hold its slot for a moment; on a loaded
        // machine one attempt can take the whole read timeout.
        poll_until(Duration::from_secs(20), || {
            let mut stream = connect(port, Duration::from_secs(5));
            healthz_on(&mut stream).map(|_| stream)
        })
        .expect("a connection under the cap is served")
    };
    let mut held: Vec<TcpStream> = (0..3).map(open).collect();

    // Every slot is taken: the next connection is closed without an answer, at once.
    let mut refused = connect(port, Duration::from_secs(5));
    let started = Instant::now();
    assert_eq!(healthz_on(&mut refused), None);
    assert!(started.elapsed() < Duration::from_secs(2), "closed at once");
    // The CA's log reaches the test through a pipe, a moment after the close.
    let logged = poll_until(Duration::from_secs(5), || {
        ca.log().contains("connection limit reached").then_some(())
    });
    assert!(logged.is_some(), "{}", ca.log());

    // The held connections are still served, and a freed slot admits a newcomer.
    for stream in &mut held {
        assert!(healthz_on(stream).is_some_and(|answer| answer.starts_with("HTTP/1.1 200")));
    }
    held.pop();
    let newcomer = poll_until(Duration::from_secs(5), || {
        let mut stream = connect(port, Duration::from_secs(5));
        healthz_on(&mut stream)
    });
    assert!(newcomer.is_some(), "a freed slot is reused");
}
