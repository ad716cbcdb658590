//! In-process measurements: the signing ceiling on one core, and the cost of each phase of an
//! issuance (token verification, policy decision, signing, service with its store commit), so
//! the HTTP numbers can be explained step by step.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use ed25519_dalek::Signer;
use jit_ca::config::Config;
use jit_ca::identity::{BearerToken, Identity, TokenVerifier};
use jit_ca::policy::{Policy, RequestInput};
use jit_ca::service::{ClientInfo, Service};
use jit_ca::signer::{CaKey, CertificateOrder};
use jit_ca::store::sqlite::SqliteStore;
use rand::rngs::OsRng;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::{Algorithm, PrivateKey};

use crate::jitca;
use crate::shape::CertShape;
use crate::stats::Latencies;
use crate::subjects::SubjectKey;
use crate::tokens::SigningKey;

/// How long one in-process measurement may run at most.
const TIME_LIMIT: Duration = Duration::from_secs(2);

/// The cost of one operation, measured over many.
#[derive(Clone, Debug)]
pub struct Measured {
    /// What was measured.
    pub label: String,
    /// How many operations ran.
    pub operations: usize,
    /// Wall time of all of them.
    pub elapsed: Duration,
    /// Latencies, when they matter (concurrent measurements).
    pub latencies: Option<Latencies>,
}

impl Measured {
    /// Mean wall time per operation.
    pub fn per_operation(&self) -> Duration {
        self.elapsed / u32::try_from(self.operations.max(1)).unwrap_or(u32::MAX)
    }

    /// Operations per second.
    pub fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `operation` up to `count` times (after a short warm-up), stopping at [`TIME_LIMIT`].
fn repeat(
    label: &str,
    count: usize,
    mut operation: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Measured> {
    for index in 0..count.min(100) {
        operation(index)?;
    }
    let started = Instant::now();
    let mut operations = 0;
    while operations < count && started.elapsed() < TIME_LIMIT {
        operation(operations)?;
        operations += 1;
    }
    Ok(Measured {
        label: label.to_owned(),
        operations,
        elapsed: started.elapsed(),
        latencies: None,
    })
}

/// An operation to measure against others, and its label.
type Contender<'a> = (String, Box<dyn FnMut(usize) -> anyhow::Result<()> + 'a>);

/// Measures `contenders` in alternating rounds and keeps each one's fastest round, so that a
/// burst of load from other processes on this shared machine cannot favour one of them.
fn interleaved(
    mut contenders: Vec<Contender<'_>>,
    per_round: usize,
    rounds: usize,
) -> anyhow::Result<Vec<Measured>> {
    let mut best: Vec<Option<Duration>> = vec![None; contenders.len()];
    let mut next_index = 0;
    for _round in 0..rounds {
        for (slot, (_, operation)) in contenders.iter_mut().enumerate() {
            let started = Instant::now();
            for _ in 0..per_round {
                operation(next_index)?;
                next_index += 1;
            }
            let elapsed = started.elapsed();
            best[slot] = Some(best[slot].map_or(elapsed, |fastest| fastest.min(elapsed)));
        }
    }
    Ok(contenders
        .into_iter()
        .zip(best)
        .map(|((label, _), elapsed)| Measured {
            label,
            operations: per_round,
            elapsed: elapsed.unwrap_or_default(),
            latencies: None,
        })
        .collect())
}

/// The certificate order the service would build for `key`, in the benchmark shape.
fn order(shape: &CertShape, key: &SubjectKey, serial: u64, now: u64) -> CertificateOrder {
    CertificateOrder {
        subject_key: key.public_key.clone(),
        serial,
        key_id: shape.key_id.clone(),
        principals: shape.principals.clone(),
        valid_after: now - shape.backdate_secs,
        valid_before: now + shape.lifetime_secs,
        extensions: shape.extensions.clone(),
        critical_options: BTreeMap::new(),
    }
}

/// Signing on one core: a bare Ed25519 signature, the `ssh-key` builder with a plain private
/// key, and the CA's own `CaKey::sign`, with and without the OpenSSH text encoding the service
/// adds.
pub fn signing(
    shape: &CertShape,
    keys: &[SubjectKey],
    scratch: &Path,
) -> anyhow::Result<Vec<Measured>> {
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let key_at = |index: usize| &keys[index % keys.len()];

    let ca_key = CaKey::generate(&scratch.join("ceiling_ca_key"), None)?;
    let sample = ca_key.sign(&order(shape, key_at(0), 1, now), &mut rand::thread_rng())?;
    // PROTOCOL.certkeys: the signature covers every field before it; the signature field is
    // string(string("ssh-ed25519") || string(64 bytes)), 87 bytes with its length prefixes.
    let signed_len = sample.to_bytes()?.len().saturating_sub(4 + 4 + 11 + 4 + 64);

    let dalek = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let message = vec![0x42u8; signed_len];
    let plain_key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)?;

    let raw_signature: Contender = (
        format!("Ed25519 signature of {signed_len} bytes (ed25519-dalek)"),
        Box::new(|_| {
            std::hint::black_box(dalek.sign(std::hint::black_box(&message)));
            Ok(())
        }),
    );
    let raw_builder: Contender = (
        "ssh-key certificate build + sign (plain PrivateKey)".into(),
        Box::new(|index| {
            let key = key_at(index);
            let mut builder = Builder::new_with_random_nonce(
                &mut rand::thread_rng(),
                key.public_key.key_data().clone(),
                now - shape.backdate_secs,
                now + shape.lifetime_secs,
            )?;
            builder
                .serial(index as u64 + 1)?
                .key_id(shape.key_id.clone())?
                .cert_type(CertType::User)?;
            for principal in &shape.principals {
                builder.valid_principal(principal.clone())?;
            }
            for extension in &shape.extensions {
                builder.extension(extension.clone(), "")?;
            }
            std::hint::black_box(builder.sign(&plain_key)?);
            Ok(())
        }),
    );
    let ca_sign: Contender = (
        "CaKey::sign (jit_ca::signer), the ceiling".into(),
        Box::new(|index| {
            let order = order(shape, key_at(index), index as u64 + 1, now);
            std::hint::black_box(ca_key.sign(&order, &mut rand::thread_rng())?);
            Ok(())
        }),
    );
    let ca_sign_encoded: Contender = (
        "CaKey::sign + OpenSSH text encoding".into(),
        Box::new(|index| {
            let order = order(shape, key_at(index), index as u64 + 1, now);
            let certificate = ca_key.sign(&order, &mut rand::thread_rng())?;
            std::hint::black_box(certificate.to_openssh()?);
            Ok(())
        }),
    );
    interleaved(
        vec![raw_signature, raw_builder, ca_sign, ca_sign_encoded],
        2_000,
        7,
    )
}

/// A bare signature check of a token by one library, for comparing verifiers.
type SignatureCheck = fn(&SigningKey, &str) -> bool;

/// Token verification per algorithm through the CA's verifier (against the bench's issuer),
/// next to the bare signature check it cannot avoid.
pub async fn token_verification(
    config: &Config,
    tokens: &[(&SigningKey, String)],
) -> anyhow::Result<(Vec<Measured>, Identity)> {
    let verifier = TokenVerifier::new(&config.oidc).map_err(anyhow::Error::msg)?;
    verifier.refresh().await.map_err(anyhow::Error::msg)?;

    let mut results = Vec::new();
    let mut identity = None;
    for (key, token) in tokens {
        let algorithm = key.algorithm().name();
        let bare_checks: [(&str, SignatureCheck); 2] = [
            (
                "alone (same crate as the CA uses)",
                SigningKey::verify_signature,
            ),
            (
                "with ring (in the build through rustls)",
                SigningKey::verify_signature_with_ring,
            ),
        ];
        for (how, check) in bare_checks {
            if !check(key, token) {
                anyhow::bail!("the bench's own {algorithm} token fails its check {how}");
            }
            results.push(repeat(
                &format!("{algorithm} signature check {how}"),
                5_000,
                |_| {
                    std::hint::black_box(check(key, token));
                    Ok(())
                },
            )?);
        }

        let token = BearerToken::new(token.clone());
        identity = Some(verifier.verify(&token, Utc::now()).await?);
        let started = Instant::now();
        let mut operations = 0;
        while operations < 5_000 && started.elapsed() < TIME_LIMIT {
            std::hint::black_box(verifier.verify(&token, Utc::now()).await?);
            operations += 1;
        }
        results.push(Measured {
            label: format!("ID token verification, {algorithm} (TokenVerifier::verify)"),
            operations,
            elapsed: started.elapsed(),
            latencies: None,
        });
    }
    let identity = identity.context("no token to verify")?;
    Ok((results, identity))
}

/// The policy decision for the benchmark request.
pub fn policy_decision(config: &Config, identity: &Identity) -> anyhow::Result<Measured> {
    let policy = Policy::load(&config.policy.profiles, &config.policy.cedar)?;
    let input = RequestInput {
        profile: jitca::PROFILE.into(),
        target: jitca::HOST.into(),
        unix_user: Some(jitca::unix_user().into()),
        duration: None,
        reason: "benchmark".into(),
        ticket: None,
    };
    repeat("policy decision (Policy::decide)", 20_000, |_| {
        std::hint::black_box(policy.decide(identity, &input, Utc::now())?);
        Ok(())
    })
}

/// The service without HTTP or token verification: policy, signing, and the store commit that
/// must finish before a certificate is handed out, one request at a time and `concurrency` at
/// once.
pub async fn service(
    config: &Config,
    identity: &Identity,
    keys: &[SubjectKey],
    concurrency: usize,
) -> anyhow::Result<Measured> {
    let policy = Policy::load(&config.policy.profiles, &config.policy.cedar)?;
    let ca_key = jit_ca::server::load_or_create_ca_key(&config.ca)?;
    let store = Arc::new(SqliteStore::open(&config.store.url).await?);
    // Built as `jit_ca::server::prepare` builds it, audit log included.
    let auditor = jit_ca::audit::start_audit(config, store.clone(), ca_key.fingerprint()).await?;
    let service = Arc::new(Service::new(
        Arc::new(policy),
        Arc::new(ca_key),
        store,
        Duration::from_secs(config.ca.backdate_secs),
        auditor,
    ));
    let client = ClientInfo {
        address: IpAddr::from([127, 0, 0, 1]),
        user_agent: Some("jit-bench".into()),
    };
    let bodies: Vec<jit_proto::CreateAccessRequest> = keys
        .iter()
        .map(|key| serde_json::from_slice(&jitca::request_body(&key.openssh)))
        .collect::<Result<_, _>>()?;
    let bodies = Arc::new(bodies);

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let service = Arc::clone(&service);
        let bodies = Arc::clone(&bodies);
        let next = Arc::clone(&next);
        let identity = identity.clone();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(index) else {
                    break;
                };
                let sent = Instant::now();
                service
                    .create_request(&identity, body.clone(), &client, Utc::now())
                    .await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }

    Ok(Measured {
        label: format!(
            "service create_request, {concurrency} at once (policy + sign + audit + store)"
        ),
        operations: latencies.len(),
        elapsed: started.elapsed(),
        latencies: Some(Latencies::new(latencies)),
    })
}
