//! Revocation propagation: how long after a revocation the next login to a real sshd, kept
//! current by the real `jit-host`, is refused.
//!
//! The server is an sshd on loopback whose main configuration knows nothing of the CA and only
//! includes a drop-in directory; `jit-host setup` enrols it (with a token from
//! `jit-ca host enroll`) and writes the drop-in, and `jit-host run` keeps its KRL current by
//! long-polling the CA. Each round: a fresh key gets a certificate, a login proves it opens the
//! server, the holder revokes the grant through `POST /v1/revocations`, the KRL the agent
//! installs is watched until it revokes the certificate, and logins are retried back to back
//! until sshd refuses one.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::Method;
use serde_json::json;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::command::run_checked;
use crate::jitca::{self, CaProcess};
use crate::load::{self, PreparedRequest, Target};
use crate::stats::Latencies;

/// Longest a revocation may take to reach sshd before the round counts as failed.
const ROUND_LIMIT: Duration = Duration::from_secs(10);

/// What the rounds measured.
pub struct Propagation {
    /// From sending each revocation until the KRL installed on the host revokes the
    /// certificate.
    pub installed: Latencies,
    /// From sending each revocation to the return of the first refused login.
    pub latencies: Latencies,
    /// Rounds whose login was still accepted after [`ROUND_LIMIT`].
    pub failures: usize,
    /// How long one refused login takes: the resolution of each sample.
    pub login_median: Duration,
}

/// Kills the child when dropped.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `rounds` revocations against a managed sshd; `release_dir` holds `jit-ca` and
/// `jit-host`.
pub async fn measure(
    ca: &CaProcess,
    release_dir: &Path,
    scratch: &Path,
    token: &str,
    rounds: usize,
) -> anyhow::Result<Propagation> {
    let dir = scratch.join("managed-host");
    std::fs::create_dir_all(dir.join("sshd_config.d"))?;
    let (_sshd, port) = start_sshd(&dir)?;

    // Enrol the host as the operator would, then leave the agent running.
    let enrolled = run_checked(
        Command::new(release_dir.join("jit-ca"))
            .args(["host", "enroll", jitca::HOST, "--config"])
            .arg(ca.config_path()),
    )?;
    let enrolment_token = enrolled.trim().to_owned();
    let sshd_log = dir.join("sshd.log");
    let restarts_before = count_in(&sshd_log, "Server listening on");
    run_checked(
        Command::new(release_dir.join("jit-host"))
            .arg("setup")
            .args(["--server", &ca.url(), "--name", jitca::HOST])
            .env("JIT_HOST_TOKEN", &enrolment_token)
            .arg("--sshd-config-dir")
            .arg(dir.join("sshd_config.d"))
            .arg("--state-dir")
            .arg(dir.join("jit"))
            .arg("--sshd-config")
            .arg(dir.join("sshd_config"))
            .arg("--sshd-pid-file")
            .arg(dir.join("sshd.pid")),
    )?;
    wait_for(Duration::from_secs(10), || {
        count_in(&sshd_log, "Server listening on") > restarts_before
    })
    .context("sshd did not restart after jit-host setup")?;
    let _agent = Guarded(
        Command::new(release_dir.join("jit-host"))
            .arg("run")
            .arg("--state-dir")
            .arg(dir.join("jit"))
            .args(["--poll-wait", "20s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("jit-host.log"))?)
            .spawn()
            .context("starting jit-host run")?,
    );

    let installed_krl = dir.join("jit").join("revoked_keys.krl");
    if !installed_krl.exists() {
        bail!(
            "jit-host setup installed no KRL at {}",
            installed_krl.display()
        );
    }

    let target = Target::plain(ca.address);
    let authorization = HeaderValue::from_str(&format!("Bearer {token}"))?;
    let mut samples = Vec::with_capacity(rounds);
    let mut installed = Vec::with_capacity(rounds);
    let mut refused_logins = Vec::new();
    let mut failures = 0;
    for round in 0..rounds {
        let (key, certificate, issued) = certificate_on_disk(&target, token, &dir, round).await?;
        let login = || ssh_login(port, &key, &certificate);
        if !login()?.0 {
            bail!("a fresh certificate does not open the managed sshd (round {round})");
        }

        let revocation = PreparedRequest {
            path: "/v1/revocations",
            authorization: Some(authorization.clone()),
            body: Bytes::from(
                json!({ "grant_id": issued.grant_id, "reason": "benchmark" }).to_string(),
            ),
        };
        let revoked_at = Instant::now();
        let (status, body) = load::once(&target, Method::POST, &revocation).await?;
        if !status.is_success() {
            bail!(
                "POST /v1/revocations answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }

        // The agent replaces the file when the long-poll answers; sshd reads it per login.
        let revokes = || {
            std::fs::read(&installed_krl)
                .ok()
                .and_then(|bytes| jit_ca::krl::parse(&bytes).ok())
                .is_some_and(|krl| krl.revokes_certificate(&issued.certificate))
        };
        while !revokes() && revoked_at.elapsed() < ROUND_LIMIT {
            std::thread::sleep(Duration::from_millis(2));
        }
        if revokes() {
            installed.push(revoked_at.elapsed());
        }

        let refused = loop {
            let (accepted, took) = login()?;
            if !accepted {
                refused_logins.push(took);
                break Some(revoked_at.elapsed());
            }
            if revoked_at.elapsed() > ROUND_LIMIT {
                break None;
            }
        };
        match refused {
            Some(after) => samples.push(after),
            None => failures += 1,
        }
    }

    // sshd must have refused for the revocation, not for anything else.
    if count_in(&sshd_log, "revoked") == 0 {
        bail!("sshd refused the logins without saying the key was revoked");
    }
    Ok(Propagation {
        installed: Latencies::new(installed),
        latencies: Latencies::new(samples),
        failures,
        login_median: Latencies::new(refused_logins).quantile(0.5),
    })
}

/// An sshd on a free loopback port that includes `sshd_config.d/*.conf` and trusts nothing
/// yet. `StrictModes no`: the scratch directory is not root's alone; `UsePAM no`: no login
/// session around it.
fn start_sshd(dir: &Path) -> anyhow::Result<(Guarded, u16)> {
    std::fs::create_dir_all("/run/sshd").context("creating sshd's privilege separation dir")?;
    let host_key = dir.join("bootstrap_host_key");
    write_private_key(
        &host_key,
        &PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)?,
    )?;

    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = format!(
        "Include {dropins}/*.conf\nListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\n\
         PidFile {pid}\nAuthorizedKeysFile none\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nLogLevel VERBOSE\n\
         StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nMaxStartups 100\n",
        dropins = dir.join("sshd_config.d").display(),
        host_key = host_key.display(),
        pid = dir.join("sshd.pid").display(),
    );
    std::fs::write(dir.join("sshd_config"), config)?;

    let log = dir.join("sshd.log");
    let sshd = Guarded(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .context("starting sshd")?,
    );
    let listening = format!("Server listening on 127.0.0.1 port {port}.");
    wait_for(Duration::from_secs(10), || count_in(&log, &listening) > 0).with_context(|| {
        format!(
            "sshd did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    Ok((sshd, port))
}

/// Writes an OpenSSH private key readable by its owner only, as ssh insists.
fn write_private_key(path: &Path, key: &PrivateKey) -> anyhow::Result<()> {
    use std::io::Write;

    let text = key.to_openssh(LineEnding::LF)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// A fresh key and its certificate from the CA, both written to `dir`.
async fn certificate_on_disk(
    target: &Target,
    token: &str,
    dir: &Path,
    round: usize,
) -> anyhow::Result<(PathBuf, PathBuf, jitca::Issued)> {
    let private_key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)?;
    let key_path = dir.join(format!("key-{round}"));
    write_private_key(&key_path, &private_key)?;

    let issued = jitca::issue(target, token, &private_key.public_key().to_openssh()?).await?;
    let certificate_path = dir.join(format!("key-{round}-cert.pub"));
    std::fs::write(&certificate_path, format!("{}\n", issued.text))?;
    Ok((key_path, certificate_path, issued))
}

/// One login with the real `ssh`, offering only `key` with `certificate`; returns whether it
/// was accepted and how long it took.
fn ssh_login(port: u16, key: &Path, certificate: &Path) -> anyhow::Result<(bool, Duration)> {
    let started = Instant::now();
    let status = Command::new("ssh")
        .args([
            "-F",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-o")
        .arg(format!("IdentityFile={}", key.display()))
        .arg("-o")
        .arg(format!("CertificateFile={}", certificate.display()))
        .args(["-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "HostName=127.0.0.1",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg("-p")
        .arg(port.to_string())
        .arg(format!("{}@{}", jitca::unix_user(), jitca::HOST))
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running ssh")?;
    Ok((status.success(), started.elapsed()))
}

fn count_in(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.matches(needle).count())
        .unwrap_or(0)
}

fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("gave up after {limit:?}")
}
