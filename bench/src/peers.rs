//! The peers, signing the same certificate shape: `ssh-keygen -s` (a process per certificate)
//! and smallstep step-ca (an HTTPS service with a JWK provisioner and one-time tokens).

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use rand::Rng;
use serde_json::{json, Value};
use ssh_key::Certificate;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::command::{run_checked, ssh_keygen_ed25519};
use crate::load::{self, LoadOutcome, PreparedRequest, Target};
use crate::procfs::CpuTimes;
use crate::shape::CertShape;
use crate::subjects::SubjectKey;
use crate::tokens::{Algorithm, SigningKey};

/// What a peer achieved.
pub struct PeerOutcome {
    /// Certificates signed.
    pub certificates: usize,
    /// Wall time for all of them.
    pub elapsed: Duration,
    /// CPU the signer used for them (the child processes, or the server process).
    pub cpu: Duration,
    /// Shape check of one certificate it produced.
    pub shape: CertShape,
    /// Requests that failed (servers only).
    pub errors: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Latencies, for servers.
    pub load: Option<LoadOutcome>,
}

impl PeerOutcome {
    /// Certificates per second.
    pub fn per_second(&self) -> f64 {
        self.certificates as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU per certificate.
    pub fn cpu_per_certificate(&self) -> Duration {
        self.cpu / u32::try_from(self.certificates.max(1)).unwrap_or(u32::MAX)
    }
}

/// `ssh-keygen -s` once per certificate, `count` certificates, CPU from the waited-for
/// children's times.
pub fn ssh_keygen(
    shape: &CertShape,
    keys: &[SubjectKey],
    scratch: &Path,
    count: usize,
    ticks_per_second: u64,
) -> anyhow::Result<PeerOutcome> {
    let dir = scratch.join("ssh-keygen");
    std::fs::create_dir_all(&dir)?;
    let ca_key = dir.join("ca");
    ssh_keygen_ed25519(&ca_key)?;
    let mut subject_files = Vec::with_capacity(count);
    for (index, key) in keys.iter().take(count).enumerate() {
        let path = dir.join(format!("user-{index}.pub"));
        std::fs::write(&path, format!("{}\n", key.openssh))?;
        subject_files.push(path);
    }

    let validity = format!("-{}s:+{}s", shape.backdate_secs, shape.lifetime_secs);
    let principals = shape.principals.join(",");
    let before = CpuTimes::of("self", ticks_per_second)?;
    let started = Instant::now();
    for (index, subject) in subject_files.iter().enumerate() {
        let mut command = Command::new("ssh-keygen");
        command
            .args(["-q", "-s"])
            .arg(&ca_key)
            .args(["-I", &shape.key_id, "-n", &principals, "-V", &validity])
            .args(["-z", &(index + 1).to_string(), "-O", "clear"]);
        for extension in &shape.extensions {
            command.args(["-O", extension]);
        }
        run_checked(command.arg(subject))?;
    }
    let elapsed = started.elapsed();
    let after = CpuTimes::of("self", ticks_per_second)?;

    let first = std::fs::read_to_string(dir.join("user-0-cert.pub"))?;
    let certificate = Certificate::from_openssh(first.trim())?;
    let issued_at = certificate.valid_after() + shape.backdate_secs;
    Ok(PeerOutcome {
        certificates: subject_files.len(),
        elapsed,
        cpu: after.children.saturating_sub(before.children),
        shape: CertShape::of(&certificate, issued_at),
        errors: 0,
        first_error: None,
        load: None,
    })
}

/// The SSH certificate template step-ca's provisioner uses: the shape's key ID and principals
/// (from the token) and exactly the shape's extensions, instead of its five defaults.
fn step_template(shape: &CertShape) -> String {
    let extensions: serde_json::Map<String, Value> = shape
        .extensions
        .iter()
        .map(|name| (name.clone(), json!("")))
        .collect();
    format!(
        r#"{{"type": {{{{ toJson .Type }}}}, "keyId": {{{{ toJson .KeyID }}}}, "principals": {{{{ toJson .Principals }}}}, "extensions": {}, "criticalOptions": {{}}}}"#,
        Value::Object(extensions)
    )
}

/// A root and an intermediate X.509 CA (P-256) from `openssl`, which step-ca needs for its own
/// TLS even when it signs only SSH certificates.
fn x509_authorities(dir: &Path) -> anyhow::Result<()> {
    let config = dir.join("pki.cnf");
    std::fs::write(
        &config,
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = jit-bench\n\
         [root]\nbasicConstraints = critical,CA:TRUE,pathlen:1\n\
         keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n\
         [intermediate]\nbasicConstraints = critical,CA:TRUE,pathlen:0\n\
         keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n\
         authorityKeyIdentifier = keyid\n",
    )?;
    let openssl =
        |args: &[&str]| run_checked(Command::new("openssl").current_dir(dir).args(args)).map(drop);
    for name in ["root_ca_key", "intermediate_ca_key"] {
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            name,
        ])?;
    }
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-config",
        "pki.cnf",
        "-extensions",
        "root",
        "-key",
        "root_ca_key",
        "-sha256",
        "-days",
        "7",
        "-subj",
        "/CN=jit-bench root",
        "-out",
        "root_ca.crt",
    ])?;
    openssl(&[
        "req",
        "-new",
        "-config",
        "pki.cnf",
        "-key",
        "intermediate_ca_key",
        "-subj",
        "/CN=jit-bench intermediate",
        "-out",
        "intermediate.csr",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "intermediate.csr",
        "-CA",
        "root_ca.crt",
        "-CAkey",
        "root_ca_key",
        "-CAcreateserial",
        "-sha256",
        "-days",
        "7",
        "-extfile",
        "pki.cnf",
        "-extensions",
        "intermediate",
        "-out",
        "intermediate_ca.crt",
    ])
}

/// The DER bytes of the first certificate in a PEM file.
fn pem_certificate(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)?;
    let body: String = text
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    Ok(STANDARD.decode(body)?)
}

/// A running step-ca, stopped when dropped.
struct StepCa {
    child: Child,
    address: SocketAddr,
}

impl Drop for StepCa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the load reaches step-ca: HTTPS, trusting the bench's root.
fn step_target(address: SocketAddr, root: &Path) -> anyhow::Result<Target> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pem_certificate(root)?))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::from(address.ip());
    Ok(Target {
        address,
        tls: Some((TlsConnector::from(Arc::new(config)), server_name)),
    })
}

/// Provisioner name, the `iss` of its tokens.
const PROVISIONER: &str = "jit-bench";

/// Starts step-ca with a JWK provisioner and its default durable store (Badger v2).
async fn start_step_ca(
    binary: &Path,
    dir: &Path,
    shape: &CertShape,
    provisioner_key: &SigningKey,
) -> anyhow::Result<(StepCa, Target)> {
    x509_authorities(dir)?;
    ssh_keygen_ed25519(&dir.join("ssh_user_ca_key"))?;
    ssh_keygen_ed25519(&dir.join("ssh_host_ca_key"))?;

    let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let absolute = |name: &str| dir.join(name).display().to_string();
    let config = json!({
        "root": absolute("root_ca.crt"),
        "crt": absolute("intermediate_ca.crt"),
        "key": absolute("intermediate_ca_key"),
        "address": address.to_string(),
        "dnsNames": [address.ip().to_string()],
        "logger": { "format": "text" },
        "db": { "type": "badgerv2", "dataSource": absolute("db") },
        "ssh": {
            "hostKey": absolute("ssh_host_ca_key"),
            "userKey": absolute("ssh_user_ca_key"),
        },
        "authority": {
            "provisioners": [{
                "type": "JWK",
                "name": PROVISIONER,
                "key": provisioner_key.public_jwk(),
                "claims": { "enableSSHCA": true },
                "options": { "ssh": { "template": step_template(shape) } },
            }],
        },
    });
    let config_path = dir.join("ca.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

    let log_path = dir.join("step-ca.log");
    let child = Command::new(binary)
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut step_ca = StepCa { child, address };
    let target = step_target(address, &dir.join("root_ca.crt"))?;

    let probe = PreparedRequest {
        path: "/health",
        authorization: None,
        body: Bytes::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = step_ca.child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("step-ca exited with {status}: {log}");
        }
        if let Ok((StatusCode::OK, _)) = load::once(&target, Method::GET, &probe).await {
            break;
        }
        if Instant::now() > deadline {
            bail!("step-ca did not answer /health within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((step_ca, target))
}

/// One `POST /1.0/ssh/sign` with a fresh one-time token for `key`.
fn step_request(
    provisioner_key: &SigningKey,
    address: SocketAddr,
    shape: &CertShape,
    key: &SubjectKey,
    now: i64,
) -> anyhow::Result<PreparedRequest> {
    let token_id: [u8; 16] = rand::thread_rng().gen();
    let token_id: String = token_id.iter().map(|byte| format!("{byte:02x}")).collect();
    // step-ca checks `aud` against https://<dnsName>/1.0/ssh/sign, without the port.
    let claims = json!({
        "iss": PROVISIONER,
        "sub": shape.key_id,
        "aud": format!("https://{}/1.0/ssh/sign", address.ip()),
        "jti": token_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "step": { "ssh": {
            "certType": "user",
            "keyID": shape.key_id,
            "principals": shape.principals,
            "validBefore": format!("{}s", shape.lifetime_secs),
        }},
    });
    let token = provisioner_key.sign("JWT", &claims);
    let body = json!({
        "publicKey": STANDARD.encode(key.public_key.to_bytes()?),
        "ott": token,
        "certType": "user",
        "keyID": shape.key_id,
        "principals": shape.principals,
    });
    Ok(PreparedRequest {
        path: "/1.0/ssh/sign",
        authorization: None,
        body: Bytes::from(body.to_string()),
    })
}

/// step-ca under closed load of `connections` keep-alive HTTPS connections, `count` requests
/// each with its own one-time token.
pub async fn step_ca(
    binary: &Path,
    shape: &CertShape,
    keys: &[SubjectKey],
    scratch: &Path,
    connections: usize,
    ticks_per_second: u64,
) -> anyhow::Result<PeerOutcome> {
    let dir: PathBuf = scratch.join("step-ca");
    std::fs::create_dir_all(&dir)?;
    let provisioner_key = SigningKey::generate(Algorithm::Es256, 0x57e9)?;
    let (step_ca, target) = start_step_ca(binary, &dir, shape, &provisioner_key).await?;

    // step-ca refuses tokens issued before it started, at one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let now = chrono::Utc::now().timestamp();
    let requests: Vec<PreparedRequest> = keys
        .iter()
        .map(|key| step_request(&provisioner_key, step_ca.address, shape, key, now))
        .collect::<anyhow::Result<_>>()?;
    let (sample_request, load_requests) = requests.split_first().context("no keys")?;

    // One certificate first, to check it is the same shape as the CA's.
    let (status, body) = load::once(&target, Method::POST, sample_request).await?;
    if status != StatusCode::CREATED {
        bail!(
            "step-ca answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let answer: Value = serde_json::from_slice(&body)?;
    let encoded = answer["crt"]
        .as_str()
        .context("no crt in step-ca's answer")?;
    let certificate = Certificate::from_bytes(&STANDARD.decode(encoded)?)?;
    let issued_at = u64::try_from(now).unwrap_or(0);
    let sample_shape = CertShape::of(&certificate, issued_at);

    let pid = step_ca.child.id().to_string();
    let before = CpuTimes::of(&pid, ticks_per_second)?;
    let outcome = load::run(
        Arc::new(target),
        Arc::new(load_requests.to_vec()),
        connections,
        StatusCode::CREATED,
        load::Schedule::Closed,
        Duration::from_secs(20),
    )
    .await?;
    let after = CpuTimes::of(&pid, ticks_per_second)?;
    drop(step_ca);

    Ok(PeerOutcome {
        certificates: outcome.completed,
        elapsed: outcome.elapsed,
        cpu: after.own.saturating_sub(before.own),
        shape: sample_shape,
        errors: outcome.errors,
        first_error: outcome.first_error.clone(),
        load: Some(outcome),
    })
}
