//! The CA under test: its configuration, the real `jit-ca serve` process, and the requests the
//! load sends it.
//!
//! The configuration names only what has no default (listen address, issuer, key, store,
//! policy files), so the CA runs on its embedded defaults: SQLite store, CA key created on
//! first start, durable commits and audit log as in production. The one exception is the rate
//! limits, raised because the whole load comes from one address.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::load::{self, PreparedRequest, Target};
use crate::procfs::{CpuTimes, Memory};

/// OAuth client id the CA expects as the tokens' audience.
pub const CLIENT_ID: &str = "jit";

/// The host every benchmark certificate is for.
pub const HOST: &str = "db-1";
/// The auto-approved profile the load asks for.
pub const PROFILE: &str = "read-only";

/// The Unix user every benchmark certificate is for: the one running the bench, so the
/// revocation measurement can log in to a real sshd as it.
pub fn unix_user() -> &'static str {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        Command::new("id")
            .arg("-un")
            .output()
            .ok()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "root".into())
    })
}

/// One auto-approved profile, shaped like the end-to-end tests' `read-only` profile.
fn profiles() -> String {
    let unix_user = unix_user();
    format!(
        r#"[hosts]
{HOST} = {{ groups = ["db-prod"] }}

[profiles.{PROFILE}]
unix_users = ["{unix_user}"]
any_host = true
default_duration = "30m"
max_duration = "2h"
extensions = ["permit-pty"]
"#
    )
}

/// Engineers may request the profile and have it approved at once, and holders may revoke
/// their own grants (what the revocation measurement does).
fn rules() -> String {
    format!(
        r#"@id("engineers-auto")
permit (principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource)
when {{ context.profile == "{PROFILE}" }};

@id("holders-revoke-their-own")
permit (principal, action == Action::"revoke", resource) when {{ context.own }};
"#
    )
}

/// A rate limit no benchmark reaches.
const UNLIMITED: u32 = 1_000_000_000;

/// Writes `jit-ca.toml`, `profiles.toml` and `policy.cedar` into `dir`; returns the config path.
pub fn write_config(dir: &Path, listen: SocketAddr, issuer: &str) -> anyhow::Result<PathBuf> {
    let config = format!(
        r#"listen = "{listen}"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
[ca]
key_file = "ca_key"
[store]
url = "sqlite://jit-ca.db"
[policy]
profiles = "profiles.toml"
cedar = "policy.cedar"
# All the load comes from one address and a few identities, so the limits are raised out of
# its way; the limiter still runs on every request.
[limits]
per_address_per_minute = {UNLIMITED}
per_address_burst = {UNLIMITED}
per_identity_per_minute = {UNLIMITED}
per_identity_burst = {UNLIMITED}
"#
    );
    std::fs::write(dir.join("profiles.toml"), profiles())?;
    std::fs::write(dir.join("policy.cedar"), rules())?;
    let path = dir.join("jit-ca.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// The JSON body of one access request for `public_key`.
pub fn request_body(public_key: &str) -> Bytes {
    let body = json!({
        "profile": PROFILE,
        "host": HOST,
        "unix_user": unix_user(),
        "reason": "benchmark",
        "public_key": public_key,
    });
    Bytes::from(body.to_string())
}

/// Requests for the keys `keys`, the bearer tokens taken in turn.
pub fn prepare_requests(keys: &[String], tokens: &[String]) -> Vec<PreparedRequest> {
    let headers: Vec<HeaderValue> = tokens
        .iter()
        .filter_map(|token| HeaderValue::from_str(&format!("Bearer {token}")).ok())
        .collect();
    keys.iter()
        .enumerate()
        .map(|(index, key)| PreparedRequest {
            path: "/v1/requests",
            authorization: headers.get(index % headers.len().max(1)).cloned(),
            body: request_body(key),
        })
        .collect()
}

/// One certificate the CA issued, as its answer to `POST /v1/requests` gave it.
pub struct Issued {
    /// The certificate, parsed.
    pub certificate: ssh_key::Certificate,
    /// The certificate in OpenSSH one-line form.
    pub text: String,
    /// The grant it belongs to.
    pub grant_id: String,
    /// When the grant started (the certificate's validity counts from there).
    pub starts_at: DateTime<Utc>,
}

/// Asks the CA at `target` for one certificate of `public_key`, bearing `token`.
pub async fn issue(target: &Target, token: &str, public_key: &str) -> anyhow::Result<Issued> {
    let request = PreparedRequest {
        path: "/v1/requests",
        authorization: Some(HeaderValue::from_str(&format!("Bearer {token}"))?),
        body: request_body(public_key),
    };
    let (status, body) = load::once(target, Method::POST, &request).await?;
    if status != StatusCode::CREATED {
        bail!(
            "the CA answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    let view: Value = serde_json::from_slice(&body)?;
    let grant = &view["grant"];
    let text = grant["certificate"]["certificate"]
        .as_str()
        .context("no certificate in the CA's answer")?;
    Ok(Issued {
        certificate: ssh_key::Certificate::from_openssh(text)?,
        text: text.to_owned(),
        grant_id: grant["grant_id"]
            .as_str()
            .context("no grant id in the CA's answer")?
            .to_owned(),
        starts_at: grant["starts_at"]
            .as_str()
            .context("no grant start in the CA's answer")?
            .parse()?,
    })
}

/// A running `jit-ca serve`, stopped when dropped.
pub struct CaProcess {
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
    config: PathBuf,
}

impl CaProcess {
    /// Starts `binary` with a configuration in `dir` trusting `issuer`, and waits until it
    /// answers `/healthz`.
    pub async fn start(binary: &Path, dir: &Path, issuer: &str) -> anyhow::Result<CaProcess> {
        let mut last_failure = String::new();
        // The port is chosen before the CA binds it; another process may take it meanwhile.
        for _attempt in 0..5 {
            let address = free_port()?;
            let config = write_config(dir, address, issuer)?;
            let log_path = dir.join("jit-ca.log");
            let log = File::create(&log_path)?;
            let child = Command::new(binary)
                .args(["serve", "--config"])
                .arg(&config)
                // The production log level: one security event per certificate.
                .env_remove("JIT_CA_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let mut ca = CaProcess {
                child,
                address,
                config,
            };
            match ca.wait_healthy(Duration::from_secs(30)).await {
                Ok(()) => return Ok(ca),
                Err(error) => {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_failure = format!("{error:#}\n{log}");
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        bail!("jit-ca did not become healthy: {last_failure}")
    }

    async fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        let target = Target::plain(self.address);
        let probe = PreparedRequest {
            path: "/healthz",
            authorization: None,
            body: Bytes::new(),
        };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("jit-ca exited with {status}");
            }
            if let Ok((StatusCode::OK, _)) = load::once(&target, Method::GET, &probe).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no answer on /healthz within {limit:?}")
    }

    /// Its configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// `http://ADDRESS`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the CA has used so far.
    pub fn cpu(&self, ticks_per_second: u64) -> anyhow::Result<CpuTimes> {
        CpuTimes::of(&self.pid().to_string(), ticks_per_second)
    }

    /// Its resident memory now and at its peak.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid())
    }

    /// The CA's public key line, as servers trust it.
    pub async fn trusted_key(&self) -> anyhow::Result<ssh_key::PublicKey> {
        let request = PreparedRequest {
            path: "/v1/ca/keys",
            authorization: None,
            body: Bytes::new(),
        };
        let (status, body) =
            load::once(&Target::plain(self.address), Method::GET, &request).await?;
        if status != StatusCode::OK {
            bail!("GET /v1/ca/keys answered {status}");
        }
        let text = String::from_utf8_lossy(&body);
        let line = text.lines().next().unwrap_or_default();
        ssh_key::PublicKey::from_openssh(line).context("parsing the CA's public key")
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}
