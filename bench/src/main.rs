//! `jit-bench`: measures jit-ca in one run and writes the table into `BENCHMARKS.md`.
//!
//! In order: the real `jit-ca serve` under HTTP load with ID tokens from an issuer served
//! here; the in-process signing ceiling and the cost of each issuance phase; the peers
//! (`ssh-keygen -s`, step-ca) on the same certificate shape; KRL build against
//! `ssh-keygen -k`; memory of the CA. Every phase is bounded in count and in time.
//! `scripts/bench.sh` builds everything and runs it.

mod command;
mod inprocess;
mod issuer;
mod jitca;
mod krl_bench;
mod load;
mod peers;
mod procfs;
mod propagation;
mod report;
mod shape;
mod stats;
mod subjects;
mod tokens;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::Parser;
use hyper::{Method, StatusCode};
use ssh_key::HashAlg;

use crate::inprocess::Measured;
use crate::issuer::Issuer;
use crate::jitca::CaProcess;
use crate::krl_bench::{KrlComparison, Spread};
use crate::load::{LoadOutcome, PreparedRequest, Schedule, Target};
use crate::peers::PeerOutcome;
use crate::procfs::{CpuTimes, Machine, Memory};
use crate::report::{Report, Section};
use crate::shape::CertShape;
use crate::stats::{count, duration, ratio};
use crate::subjects::SubjectKey;
use crate::tokens::{Algorithm, SigningKey};

/// Benchmark suite for jit-ca.
#[derive(Parser)]
#[command(name = "jit-bench", about)]
struct Cli {
    /// The CA binary, built in release.
    #[arg(long, default_value = "target/release/jit-ca")]
    ca_binary: PathBuf,
    /// step-ca as built by scripts/bench.sh; without it step-ca is reported as not measured.
    #[arg(long)]
    step_ca: Option<PathBuf>,
    /// Why step-ca could not be built, for its row in the table.
    #[arg(long)]
    step_ca_unavailable: Option<String>,
    /// File whose marked block receives the tables.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// Print the tables without writing them anywhere.
    #[arg(long)]
    no_write: bool,
    /// Small counts, to check the suite runs; the numbers mean little and are only printed.
    #[arg(long)]
    quick: bool,
    /// The command recorded in the report as the way to reproduce it.
    #[arg(long, default_value = "scripts/bench.sh")]
    command: String,
}

/// How much of everything one run does.
struct Sizes {
    warmup: usize,
    /// Closed load: connections and request count.
    closed: Vec<(usize, usize)>,
    open_rate: f64,
    open_seconds: f64,
    /// Requests per other token algorithm, at the largest concurrency.
    other_algorithms: usize,
    phase_limit: Duration,
    ssh_keygen: usize,
    step_ca: usize,
    krl: Vec<usize>,
    service: usize,
    revocations: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            return Sizes {
                warmup: 50,
                closed: vec![(1, 200), (8, 500), (64, 1000)],
                open_rate: 1000.0,
                open_seconds: 1.0,
                other_algorithms: 300,
                phase_limit: Duration::from_secs(5),
                ssh_keygen: 20,
                step_ca: 500,
                krl: vec![10_000, 100_000],
                service: 300,
                revocations: 5,
            };
        }
        Sizes {
            warmup: 500,
            closed: vec![(1, 3_000), (8, 10_000), (64, 20_000)],
            open_rate: 1000.0,
            open_seconds: 10.0,
            other_algorithms: 5_000,
            phase_limit: Duration::from_secs(10),
            ssh_keygen: 200,
            step_ca: 8_000,
            krl: vec![10_000, 100_000, 1_000_000],
            service: 3_000,
            revocations: 40,
        }
    }

    fn open_count(&self) -> usize {
        (self.open_rate * self.open_seconds) as usize
    }

    /// Distinct subject keys the HTTP phases need, one per request.
    fn http_keys(&self) -> usize {
        self.warmup
            + 1
            + self.closed.iter().map(|(_, count)| count).sum::<usize>()
            + self.open_count()
            + 2 * self.other_algorithms
    }
}

/// Users the ID tokens name; requests take their tokens in turn.
const USERS: usize = 8;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread for the load and everything else here: the CA gets the other core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = runtime.block_on(run(&cli))?;

    println!("{text}");
    // A quick run's numbers mean little; they never replace the measured table.
    if !cli.no_write && !cli.quick {
        report::write_between_markers(&cli.output, &text)?;
        eprintln!("jit-bench: tables written into {}", cli.output.display());
    }
    Ok(())
}

/// One HTTP load phase and what the CA spent on it.
struct HttpPhase {
    label: String,
    algorithm: Algorithm,
    outcome: LoadOutcome,
    ca_cpu: Duration,
    load_cpu: Duration,
    /// CPU other processes on the machine used during the phase.
    others_cpu: Duration,
}

impl HttpPhase {
    fn ca_cpu_per_certificate(&self) -> Duration {
        per(self.ca_cpu, self.outcome.completed)
    }
}

fn per(total: Duration, operations: usize) -> Duration {
    total / u32::try_from(operations.max(1)).unwrap_or(u32::MAX)
}

fn progress(message: &str) {
    eprintln!("jit-bench: {message}");
}

async fn run(cli: &Cli) -> anyhow::Result<String> {
    let sizes = Sizes::new(cli.quick);
    let measured_at = Utc::now();
    let scratch = tempfile::Builder::new().prefix("jit-bench-").tempdir()?;
    let ticks = procfs::clock_ticks_per_second();
    let machine = Machine::describe(scratch.path());
    let load_at_start = procfs::load_average();
    let commit = code_state();
    if !cli.ca_binary.exists() {
        bail!(
            "{} is missing; run `cargo build --release --workspace --bins` first",
            cli.ca_binary.display()
        );
    }

    progress("generating subject keys and issuer keys");
    let keys = subjects::generate(sizes.http_keys().max(sizes.service), 0x5eed)?;
    let issuer_keys = [
        SigningKey::generate(Algorithm::Rs256, 1)?,
        SigningKey::generate(Algorithm::Es256, 2)?,
        SigningKey::generate(Algorithm::EdDsa, 3)?,
    ];
    let issuer = Issuer::start(&issuer_keys).await?;
    let tokens_for = |algorithm: Algorithm| -> Vec<String> {
        let key = issuer_keys.iter().find(|key| key.algorithm() == algorithm);
        (0..USERS)
            .filter_map(|user| {
                let claims =
                    tokens::id_token_claims(&issuer.url, jitca::CLIENT_ID, user, Utc::now());
                key.map(|key| key.sign("JWT", &claims))
            })
            .collect()
    };

    // Item 1: the real CA over HTTP.
    progress("starting jit-ca");
    let ca_dir = scratch.path().join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    let ca = CaProcess::start(&cli.ca_binary, &ca_dir, &issuer.url).await?;
    let idle_memory = ca.memory()?;
    let target = Arc::new(Target::plain(ca.address));

    let mut key_cursor = 0;
    let mut take_keys = |count: usize| {
        let slice = &keys[key_cursor..key_cursor + count];
        key_cursor += count;
        slice
    };
    let rs256_tokens = tokens_for(Algorithm::Rs256);
    let shape = first_certificate(&ca, &target, &take_keys(1)[0], &rs256_tokens[0]).await?;

    let openssh_keys = |keys: &[SubjectKey]| -> Vec<String> {
        keys.iter().map(|key| key.openssh.clone()).collect()
    };
    let warmup = jitca::prepare_requests(&openssh_keys(take_keys(sizes.warmup)), &rs256_tokens);
    let warmup = Arc::new(warmup);
    let limit = sizes.phase_limit;
    load::run(
        Arc::clone(&target),
        warmup,
        8,
        StatusCode::CREATED,
        Schedule::Closed,
        limit,
    )
    .await?;
    let warm_memory = ca.memory()?;

    // Every phase in order: label, token algorithm, connections, schedule, requests, limit.
    let widest = sizes
        .closed
        .iter()
        .map(|(connections, _)| *connections)
        .max()
        .unwrap_or(1);
    let mut plan: Vec<(String, Algorithm, usize, Schedule, usize, Duration)> = sizes
        .closed
        .iter()
        .map(|&(connections, requests)| {
            let label = format!("closed, C = {connections}");
            (
                label,
                Algorithm::Rs256,
                connections,
                Schedule::Closed,
                requests,
                limit,
            )
        })
        .collect();
    plan.push((
        format!("open, {} req/s (64 connections)", count(sizes.open_rate)),
        Algorithm::Rs256,
        64,
        Schedule::Rate(sizes.open_rate),
        sizes.open_count(),
        Duration::from_secs_f64(sizes.open_seconds) + limit,
    ));
    for algorithm in [Algorithm::Es256, Algorithm::EdDsa] {
        let label = format!("closed, C = {widest}");
        let requests = sizes.other_algorithms;
        plan.push((label, algorithm, widest, Schedule::Closed, requests, limit));
    }

    let mut phases = Vec::new();
    for (label, algorithm, connections, schedule, requests, phase_limit) in plan {
        progress(&format!("{label}, {} tokens", algorithm.name()));
        let requests =
            jitca::prepare_requests(&openssh_keys(take_keys(requests)), &tokens_for(algorithm));
        let ran = load::run(
            Arc::clone(&target),
            Arc::new(requests),
            connections,
            StatusCode::CREATED,
            schedule,
            phase_limit,
        );
        let phase = http_phase(&ca, ticks, ran).await?;
        phases.push(HttpPhase {
            label,
            algorithm,
            ..phase
        });
    }
    let loaded_memory = ca.memory()?;

    // Item 4, with the CA still running, once its memory under load is read.
    let revocation = match revocation_unavailable(&ca, cli).await {
        Some(reason) => Err(anyhow::anyhow!(reason)),
        None => {
            progress("revocation propagation through jit-host and sshd");
            let release_dir = cli.ca_binary.parent().unwrap_or(std::path::Path::new("."));
            propagation::measure(
                &ca,
                release_dir,
                scratch.path(),
                &rs256_tokens[0],
                sizes.revocations,
            )
            .await
        }
    };
    drop(ca);

    // The in-process ceiling and the phases of one issuance.
    progress("in-process ceiling and phases");
    let signing = inprocess::signing(&shape, &keys, scratch.path())?;
    let inprocess_dir = scratch.path().join("inprocess");
    std::fs::create_dir_all(&inprocess_dir)?;
    let config_path = jitca::write_config(&inprocess_dir, "127.0.0.1:9".parse()?, &issuer.url)?;
    let config = jit_ca::config::Config::load(&config_path)?;
    let verification_tokens: Vec<(&SigningKey, String)> = issuer_keys
        .iter()
        .filter_map(|key| {
            tokens_for(key.algorithm())
                .into_iter()
                .next()
                .map(|token| (key, token))
        })
        .collect();
    let (verification, identity) =
        inprocess::token_verification(&config, &verification_tokens).await?;
    let policy = inprocess::policy_decision(&config, &identity)?;
    let service_serial =
        inprocess::service(&config, &identity, &keys[..sizes.service / 4], 1).await?;
    let service_concurrent = inprocess::service(
        &config,
        &identity,
        &keys[sizes.service / 4..sizes.service],
        64,
    )
    .await?;

    // Item 2: the peers.
    progress("ssh-keygen -s, a process per certificate");
    let ssh_keygen = peers::ssh_keygen(&shape, &keys, scratch.path(), sizes.ssh_keygen, ticks);
    let step_ca = match (&cli.step_ca, &cli.step_ca_unavailable) {
        (_, Some(reason)) => Err(anyhow::anyhow!("{reason}")),
        (None, None) => Err(anyhow::anyhow!("no --step-ca binary given")),
        (Some(binary), None) => {
            progress("step-ca");
            peers::step_ca(
                binary,
                &shape,
                &keys[..sizes.step_ca + 1],
                scratch.path(),
                widest,
                ticks,
            )
            .await
        }
    };

    // Item 3: KRLs.
    let krl_ca = scratch.path().join("krl_ca");
    command::ssh_keygen_ed25519(&krl_ca)?;
    let krl_ca_public = ssh_key::PublicKey::read_openssh_file(&krl_ca.with_extension("pub"))?;
    let mut krls = Vec::new();
    for &serial_count in &sizes.krl {
        for spread in [Spread::RunsWithGaps, Spread::Sparse] {
            progress(&format!(
                "KRL, {} {} serials",
                count(serial_count as f64),
                spread.name()
            ));
            krls.push(krl_bench::compare(
                spread,
                serial_count,
                &krl_ca_public,
                &krl_ca.with_extension("pub"),
                scratch.path(),
                3,
            )?);
        }
    }

    let step_ca_cpu = step_ca.as_ref().ok().map(PeerOutcome::cpu_per_certificate);
    let targets = targets_section(
        &phases,
        step_ca_cpu,
        &revocation,
        &signing,
        &krls,
        idle_memory,
        loaded_memory,
    );
    let report = Report {
        preamble: preamble(
            cli,
            &machine,
            measured_at,
            &shape,
            &commit,
            (&load_at_start, &procfs::load_average()),
        ),
        sections: vec![
            http_section(&phases, &signing, &sizes, machine.cores),
            inprocess_section(
                &signing,
                &verification,
                &policy,
                &service_serial,
                &service_concurrent,
                &machine,
            ),
            peers_section(&phases, ssh_keygen, step_ca),
            krl_section(&krls),
            revocation_section(&revocation),
            memory_section(idle_memory, warm_memory, loaded_memory),
            targets,
        ],
    };
    Ok(report.render())
}

/// The first certificate: checks it is real (signed by the CA's key, valid now) and takes its
/// shape for every other signer.
async fn first_certificate(
    ca: &CaProcess,
    target: &Target,
    key: &SubjectKey,
    token: &str,
) -> anyhow::Result<CertShape> {
    let issued = jitca::issue(target, token, &key.openssh).await?;

    let ca_key = ca.trusted_key().await?;
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    issued
        .certificate
        .validate_at(now, &[ca_key.fingerprint(HashAlg::Sha256)])
        .context("the CA's certificate does not validate against its own key")?;
    let starts_at = u64::try_from(issued.starts_at.timestamp()).unwrap_or(0);
    Ok(CertShape::of(&issued.certificate, starts_at))
}

/// Runs one load phase and reads what the CA, the load generator and everyone else on the
/// machine spent on it.
async fn http_phase(
    ca: &CaProcess,
    ticks: u64,
    load: impl std::future::Future<Output = anyhow::Result<LoadOutcome>>,
) -> anyhow::Result<HttpPhase> {
    let machine_before = procfs::machine_busy(ticks)?;
    let ca_before = ca.cpu(ticks)?;
    let load_before = CpuTimes::of("self", ticks)?;
    let outcome = load.await?;
    let ca_after = ca.cpu(ticks)?;
    let load_after = CpuTimes::of("self", ticks)?;
    let machine_after = procfs::machine_busy(ticks)?;

    let ca_cpu = ca_after.own.saturating_sub(ca_before.own);
    let load_cpu = load_after.own.saturating_sub(load_before.own);
    let others_cpu = machine_after
        .saturating_sub(machine_before)
        .saturating_sub(ca_cpu + load_cpu);
    Ok(HttpPhase {
        label: String::new(),
        algorithm: Algorithm::Rs256,
        outcome,
        ca_cpu,
        load_cpu,
        others_cpu,
    })
}

/// Why revocation propagation cannot be measured with this build, if it cannot.
async fn revocation_unavailable(ca: &CaProcess, cli: &Cli) -> Option<String> {
    let host_agent = cli
        .ca_binary
        .parent()
        .map(|dir| dir.join("jit-host"))
        .filter(|path| path.exists());
    let probe = PreparedRequest {
        path: "/v1/revocations",
        authorization: None,
        body: Bytes::from_static(b"{}"),
    };
    let route = load::once(&Target::plain(ca.address), Method::POST, &probe)
        .await
        .map(|(status, _)| {
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED
        })
        .unwrap_or(false);
    match (host_agent, route) {
        (Some(_), true) => None,
        (None, false) => Some(
            "neither the `jit-host` agent nor `POST /v1/revocations` exists in the build measured"
                .into(),
        ),
        (None, true) => {
            Some("`POST /v1/revocations` exists but the `jit-host` agent was not built".into())
        }
        (Some(_), false) => {
            Some("`jit-host` exists but the CA has no `POST /v1/revocations`".into())
        }
    }
}

/// The commit measured, and the files of the CA that differ from it in the working tree.
fn code_state() -> String {
    let head = git(&["rev-parse", "--short", "HEAD"]);
    let changed = git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "migrations",
        "proto",
        "Cargo.toml",
    ]);
    let changed: Vec<&str> = changed.lines().filter_map(|line| line.get(3..)).collect();
    if head.is_empty() {
        "unknown (not a git checkout)".to_owned()
    } else if changed.is_empty() {
        format!("`{head}`, clean")
    } else {
        format!(
            "`{head}` plus uncommitted changes to {} (the working tree was built and measured)",
            changed.join(", ")
        )
    }
}

fn git(args: &[&str]) -> String {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        // Only the end: `git status --porcelain` lines start with a significant space.
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_owned()
        })
        .unwrap_or_default()
}

fn preamble(
    cli: &Cli,
    machine: &Machine,
    measured_at: DateTime<Utc>,
    shape: &CertShape,
    commit: &str,
    (load_at_start, load_at_end): (&str, &str),
) -> Vec<String> {
    vec![
        format!("Measured {} with `{}`{}.", measured_at.format("%Y-%m-%d %H:%M UTC"), cli.command, if cli.quick { " (quick run: small counts, not for comparison)" } else { "" }),
        String::new(),
        format!("- Machine: {} × {}, {:.0} GiB RAM, Linux {}; the load generator (one thread) runs on the same cores as the servers.", machine.cores, machine.cpu_model, machine.memory_gib, machine.kernel),
        format!("- Shared machine: 1-minute load average {load_at_start} at the start of the run, {load_at_end} at its end (other engineers' builds)."),
        format!("- Disk: a 4 KiB write + fdatasync takes {} (median of 100) in the directory holding the stores.", duration(machine.fsync_median)),
        format!("- Code: {commit}; `jit-ca` release build on its default configuration (SQLite store and audit log with the durability the CA chooses, log level info to a file) except for rate limits raised out of the way of a load from one address."),
        format!("- {}.", machine.openssh),
        format!("- Certificate shape for every signer: {}.", shape.describe()),
    ]
}

fn http_section(
    phases: &[HttpPhase],
    signing: &[Measured],
    sizes: &Sizes,
    cores: usize,
) -> Section {
    let mut section = Section::new(
        "1. Issuance over HTTP (`jit-ca serve`, auto-approved profile, fresh key per request)",
        &[
            "load",
            "ID token",
            "certificates",
            "certs/s",
            "p50",
            "p99",
            "max",
            "CA CPU/cert",
            "load-gen CPU/cert",
            "other processes",
            "errors",
        ],
    );
    for phase in phases {
        let outcome = &phase.outcome;
        section.row(vec![
            phase.label.clone(),
            phase.algorithm.name().to_owned(),
            count(outcome.completed as f64),
            count(outcome.throughput()),
            duration(outcome.latencies.quantile(0.5)),
            duration(outcome.latencies.quantile(0.99)),
            duration(outcome.latencies.max()),
            duration(phase.ca_cpu_per_certificate()),
            duration(per(phase.load_cpu, outcome.completed)),
            format!(
                "{:.2} cores",
                phase.others_cpu.as_secs_f64() / outcome.elapsed.as_secs_f64().max(1e-9)
            ),
            match &outcome.first_error {
                Some(error) => format!("{} (first: {})", outcome.errors, clip(error, 120)),
                None => outcome.errors.to_string(),
            },
        ]);
    }

    let ceiling = signing
        .iter()
        .find(|measured| measured.label.starts_with("CaKey::sign ("));
    let best = phases
        .iter()
        .filter(|phase| phase.label.starts_with("closed"))
        .map(|phase| phase.outcome.throughput())
        .fold(0.0, f64::max);
    if let Some(ceiling) = ceiling {
        section.note(format!(
            "In-process ceiling (`CaKey::sign`, one core): {} certificates/s. Best HTTP throughput / ceiling: {}.",
            count(ceiling.per_second()),
            ratio(best / ceiling.per_second())
        ));
    }
    let lowest_cpu = phases
        .iter()
        .map(HttpPhase::ca_cpu_per_certificate)
        .filter(|cpu| !cpu.is_zero())
        .min();
    if let Some(lowest_cpu) = lowest_cpu {
        section.note(format!(
            "At its lowest CPU per certificate ({}), the CA could issue at most {} certificates/s if it had all {cores} cores \
             to itself; the rest of the gap to that bound is time spent waiting, not computing.",
            duration(lowest_cpu),
            count(cores as f64 / lowest_cpu.as_secs_f64())
        ));
    }
    section.note(format!(
        "Each closed phase sends its requests back to back on C keep-alive connections and stops at its count or after {} s. \
         The open phase schedules request i at i / {} s and measures each latency from that due time, so queueing in the \
         load generator counts against the CA; the generator's own timer lateness (p99 {}) is included.",
        sizes.phase_limit.as_secs(),
        count(sizes.open_rate),
        phases
            .iter()
            .find(|phase| phase.label.starts_with("open"))
            .map_or_else(|| "-".into(), |phase| duration(phase.outcome.send_lag_p99))
    ));
    section.note(format!(
        "Tokens: {USERS} users, RS256 (2048-bit), ES256 and EdDSA keys in the issuer's JWKS, valid for a day. CPU per certificate is \
         the CA process's utime + stime delta over the phase divided by certificates issued. \"other processes\" is the rest of \
         the machine's busy time during the phase (from /proc/stat), in cores: this machine is shared."
    ));
    section
}

fn inprocess_section(
    signing: &[Measured],
    verification: &[Measured],
    policy: &Measured,
    service_serial: &Measured,
    service_concurrent: &Measured,
    machine: &Machine,
) -> Section {
    let mut section = Section::new(
        "Signing ceiling and the phases of one issuance (in-process, one thread)",
        &["step", "operations", "per operation", "per second"],
    );
    let all =
        signing
            .iter()
            .chain(verification)
            .chain([policy, service_serial, service_concurrent]);
    for measured in all {
        section.row(vec![
            measured.label.clone(),
            count(measured.operations as f64),
            duration(measured.per_operation()),
            count(measured.per_second()),
        ]);
    }

    let sign = signing
        .iter()
        .find(|measured| measured.label.starts_with("CaKey::sign +"));
    let rs256 = verification
        .iter()
        .find(|measured| measured.label.contains("RS256"));
    if let (Some(sign), Some(rs256)) = (sign, rs256) {
        let store = service_serial
            .per_operation()
            .saturating_sub(policy.per_operation() + sign.per_operation());
        section.note(format!(
            "Per certificate, one at a time: RS256 token check {}, policy {}, signing with encoding {}, and the rest of the \
             service, mostly the audit and store commits, about {} (service one at a time minus policy and signing; one fdatasync here \
             is {}). With 64 requests at once the service completes {} per second (p99 {}).",
            duration(rs256.per_operation()),
            duration(policy.per_operation()),
            duration(sign.per_operation()),
            duration(store),
            duration(machine.fsync_median),
            count(service_concurrent.per_second()),
            service_concurrent
                .latencies
                .as_ref()
                .map_or_else(|| "-".into(), |latencies| duration(latencies.quantile(0.99)))
        ));
    }
    section
}

fn peers_section(
    phases: &[HttpPhase],
    ssh_keygen: anyhow::Result<PeerOutcome>,
    step_ca: anyhow::Result<PeerOutcome>,
) -> Section {
    let mut section = Section::new(
        "2. Peers on the same certificate shape",
        &[
            "signer",
            "how",
            "certificates",
            "certs/s",
            "p50 / p99",
            "CPU/cert",
            "jit-ca CPU/cert vs this",
            "errors",
        ],
    );
    let jit = phases
        .iter()
        .filter(|phase| phase.label.starts_with("closed") && phase.algorithm == Algorithm::Rs256)
        .max_by(|a, b| a.outcome.throughput().total_cmp(&b.outcome.throughput()));
    let jit_cpu = jit.map(HttpPhase::ca_cpu_per_certificate);
    if let Some(jit) = jit {
        section.row(vec![
            "jit-ca".into(),
            format!("HTTP, {}, RS256 ID token, SQLite", jit.label),
            count(jit.outcome.completed as f64),
            count(jit.outcome.throughput()),
            latency_pair(&jit.outcome),
            duration(jit.ca_cpu_per_certificate()),
            "1×".into(),
            jit.outcome.errors.to_string(),
        ]);
    }

    let versus = |cpu: Duration| {
        jit_cpu.map_or_else(
            || "-".into(),
            |jit_cpu| {
                format!(
                    "{} ({} less CPU)",
                    ratio(jit_cpu.as_secs_f64() / cpu.as_secs_f64().max(1e-12)),
                    ratio(cpu.as_secs_f64() / jit_cpu.as_secs_f64().max(1e-12))
                )
            },
        )
    };
    let mut shape_notes = Vec::new();
    for (name, how, result) in [
        (
            "ssh-keygen -s",
            "a process per certificate, CPU from waited-for children",
            ssh_keygen,
        ),
        (
            "step-ca 0.19",
            "HTTPS, JWK provisioner, one-time ES256 tokens, Badger v2 store, same C",
            step_ca,
        ),
    ] {
        match result {
            Ok(outcome) => {
                shape_notes.push(format!("{name}: {}", outcome.shape.describe()));
                section.row(vec![
                    name.into(),
                    how.into(),
                    count(outcome.certificates as f64),
                    count(outcome.per_second()),
                    outcome
                        .load
                        .as_ref()
                        .map_or_else(|| "-".into(), latency_pair),
                    duration(outcome.cpu_per_certificate()),
                    versus(outcome.cpu_per_certificate()),
                    match &outcome.first_error {
                        Some(error) => format!("{} (first: {})", outcome.errors, clip(error, 120)),
                        None => outcome.errors.to_string(),
                    },
                ]);
            }
            Err(error) => {
                let width = section.headers.len();
                section.row(not_measured(vec![name.into(), how.into()], &error, width));
            }
        }
    }
    section.note("Shape of a certificate from each peer, as parsed back:");
    for note in shape_notes {
        section.note(format!("- {note}"));
    }
    section
}

fn latency_pair(outcome: &LoadOutcome) -> String {
    format!(
        "{} / {}",
        duration(outcome.latencies.quantile(0.5)),
        duration(outcome.latencies.quantile(0.99))
    )
}

fn krl_section(krls: &[KrlComparison]) -> Section {
    let mut section = Section::new(
        "3. KRL for revoked serials (`jit_ca::krl` vs `ssh-keygen -k`, same serials, same CA)",
        &[
            "serials",
            "spread",
            "runs",
            "jit_ca::krl build",
            "size",
            "ssh-keygen -k",
            "size",
            "ssh-keygen's KRL reads back",
            "time ratio",
            "size ratio",
        ],
    );
    for krl in krls {
        section.row(vec![
            count(krl.serials as f64),
            krl.spread.name().into(),
            count(krl.runs as f64),
            duration(krl.ours_time),
            format!("{} B", count(krl.ours_bytes as f64)),
            duration(krl.ssh_keygen_time),
            format!("{} B", count(krl.ssh_keygen_bytes as f64)),
            match &krl.ssh_keygen_check {
                Ok(()) => "yes".into(),
                Err(problem) => format!("**no**: {problem}"),
            },
            format!(
                "{} faster",
                ratio(krl.ssh_keygen_time.as_secs_f64() / krl.ours_time.as_secs_f64().max(1e-12))
            ),
            format!(
                "{:.3}×",
                krl.ours_bytes as f64 / krl.ssh_keygen_bytes.max(1) as f64
            ),
        ]);
    }
    section.note(
        "Ours: `KrlBuilder::revoke_serials` from the shuffled serial list, `build`, `encode`, best of 3. ssh-keygen: the \
         process from start to exit on a spec file of `serial: A-B` runs (its cheapest input), CA public key given with -s. \
         Both outputs are read back with `jit_ca::krl::parse` and with OpenSSH's own loader (`ssh-keygen -Q -l` lists \
         what it loaded) and compared with the serials revoked; ours must pass both or the run fails. Size ratio is ours \
         / ssh-keygen's.",
    );
    section
}

fn revocation_section(revocation: &anyhow::Result<propagation::Propagation>) -> Section {
    let mut section = Section::new(
        "4. Revocation propagation (revoke → next login refused by a real sshd managed by `jit-host`)",
        &["measured until", "revocations", "p50", "p99", "max", "not within 10 s"],
    );
    match revocation {
        Ok(measured) => {
            let rounds = measured.latencies.count() + measured.failures;
            for (until, latencies) in [
                (
                    "the KRL installed on the host revokes the certificate",
                    &measured.installed,
                ),
                (
                    "a login is refused by sshd (end to end)",
                    &measured.latencies,
                ),
            ] {
                section.row(vec![
                    until.into(),
                    count(rounds as f64),
                    duration(latencies.quantile(0.5)),
                    duration(latencies.quantile(0.99)),
                    duration(latencies.max()),
                    (rounds - latencies.count()).to_string(),
                ]);
            }
            section.note(format!(
                "Each round: a fresh key gets a certificate over HTTP, a login with the real `ssh` proves it opens the \
                 server, the holder sends `POST /v1/revocations` for the grant, the KRL `jit-host run --poll-wait 20s` \
                 installs is read every 2 ms until it revokes the certificate, then logins are retried until sshd refuses \
                 one (its log must say the key was revoked). Both columns start when the revocation is sent; the login \
                 figure includes one refused login, {} at the median.",
                duration(measured.login_median)
            ));
        }
        Err(error) => {
            let width = section.headers.len();
            section.row(not_measured(Vec::new(), error, width));
        }
    }
    section
}

fn memory_section(idle: Memory, warm: Memory, loaded: Memory) -> Section {
    let mut section = Section::new("5. CA memory", &["when", "VmRSS", "VmHWM (peak so far)"]);
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    for (when, memory) in [
        ("idle, after start", idle),
        ("after warm-up", warm),
        ("after every HTTP phase", loaded),
    ] {
        section.row(vec![when.into(), mib(memory.rss_kib), mib(memory.peak_kib)]);
    }
    section
}

fn targets_section(
    phases: &[HttpPhase],
    step_ca_cpu: Option<Duration>,
    revocation: &anyhow::Result<propagation::Propagation>,
    signing: &[Measured],
    krls: &[KrlComparison],
    idle: Memory,
    loaded: Memory,
) -> Section {
    let mut section = Section::new("Targets", &["target", "measured", "met"]);
    let verdict = |met: bool| {
        if met {
            "yes".to_owned()
        } else {
            "**no**".to_owned()
        }
    };

    let best = phases
        .iter()
        .filter(|phase| phase.label.starts_with("closed") && phase.algorithm == Algorithm::Rs256)
        .map(|phase| phase.outcome.throughput())
        .fold(0.0, f64::max);
    section.row(vec![
        "issuance ≥ 10,000 certificates/s, durable".into(),
        format!("{} certificates/s (best closed phase, RS256)", count(best)),
        verdict(best >= 10_000.0),
    ]);

    if let Some(open) = phases.iter().find(|phase| phase.label.starts_with("open")) {
        let p99 = open.outcome.latencies.quantile(0.99);
        section.row(vec![
            "p99 ≤ 10 ms at 1,000 requests/s".into(),
            format!("p99 {} with {} errors", duration(p99), open.outcome.errors),
            verdict(p99 <= Duration::from_millis(10) && open.outcome.errors == 0),
        ]);
    }

    let find = |prefix: &str| {
        signing
            .iter()
            .find(|measured| measured.label.starts_with(prefix))
    };
    if let (Some(ours), Some(raw)) = (find("CaKey::sign ("), find("ssh-key certificate")) {
        let relative = ours.per_second() / raw.per_second();
        section.row(vec![
            "CA signing path ≥ raw `ssh-key` signing".into(),
            format!(
                "{} of raw ({} vs {} per second)",
                ratio(relative),
                count(ours.per_second()),
                count(raw.per_second())
            ),
            // Two runs of the same code differ by a few percent on a shared machine.
            verdict(relative >= 0.97),
        ]);
    }

    let million: Vec<&KrlComparison> = krls.iter().filter(|krl| krl.serials >= 1_000_000).collect();
    if !million.is_empty() {
        let slowest = million
            .iter()
            .map(|krl| krl.ours_time)
            .max()
            .unwrap_or_default();
        section.row(vec![
            "KRL of 1M serials built in < 1 s".into(),
            format!("{} (slowest spread)", duration(slowest)),
            verdict(slowest < Duration::from_secs(1)),
        ]);
    }
    if !krls.is_empty() {
        // A KRL OpenSSH cannot load is no size to match: smaller, but useless to sshd.
        let loadable: Vec<&KrlComparison> = krls
            .iter()
            .filter(|krl| krl.ssh_keygen_check.is_ok())
            .collect();
        let no_larger = loadable
            .iter()
            .filter(|krl| krl.ours_bytes <= krl.ssh_keygen_bytes)
            .count();
        let unloadable = krls.len() - loadable.len();
        let larger_than_unloadable = krls
            .iter()
            .filter(|krl| krl.ssh_keygen_check.is_err() && krl.ours_bytes > krl.ssh_keygen_bytes)
            .map(|krl| {
                format!(
                    "{:+.2}%",
                    100.0 * (krl.ours_bytes as f64 / krl.ssh_keygen_bytes as f64 - 1.0)
                )
            })
            .collect::<Vec<_>>();
        let mut measured = format!(
            "no larger in {no_larger} of the {} sets where ssh-keygen's KRL loads",
            loadable.len()
        );
        if unloadable > 0 {
            measured.push_str(&format!(
                "; in the other {unloadable}, ssh-keygen writes bitmaps OpenSSH itself refuses to load, and ours (kept loadable) differs by {}",
                if larger_than_unloadable.is_empty() { "nothing or is smaller".to_owned() } else { larger_than_unloadable.join(", ") }
            ));
        }
        section.row(vec![
            "KRL never larger than `ssh-keygen -k`".into(),
            measured,
            verdict(no_larger == loadable.len()),
        ]);
    }

    let jit_cpu = phases
        .iter()
        .filter(|phase| phase.label.starts_with("closed") && phase.algorithm == Algorithm::Rs256)
        .max_by(|a, b| a.outcome.throughput().total_cmp(&b.outcome.throughput()))
        .map(HttpPhase::ca_cpu_per_certificate);
    match (jit_cpu, step_ca_cpu) {
        (Some(jit_cpu), Some(step_ca_cpu)) => section.row(vec![
            "CA CPU per certificate ≤ 1/7 of step-ca's".into(),
            format!(
                "{} vs {} ({} of step-ca's)",
                duration(jit_cpu),
                duration(step_ca_cpu),
                ratio(jit_cpu.as_secs_f64() / step_ca_cpu.as_secs_f64().max(1e-12))
            ),
            verdict(jit_cpu.as_secs_f64() * 7.0 <= step_ca_cpu.as_secs_f64()),
        ]),
        _ => section.row(vec![
            "CA CPU per certificate ≤ 1/7 of step-ca's".into(),
            "not measured (step-ca unavailable, see 2)".into(),
            "-".into(),
        ]),
    }
    match revocation {
        Ok(measured) => {
            let p99 = measured.latencies.quantile(0.99);
            section.row(vec![
                "revocation propagation p99 < 2 s".into(),
                format!(
                    "p99 {} over {} revocations, {} not refused in time",
                    duration(p99),
                    measured.latencies.count(),
                    measured.failures
                ),
                verdict(p99 < Duration::from_secs(2) && measured.failures == 0),
            ]);
        }
        Err(_) => section.row(vec![
            "revocation propagation p99 < 2 s".into(),
            "not measured (see 4)".into(),
            "-".into(),
        ]),
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    section.row(vec![
        "CA RSS < 100 MB under load".into(),
        format!("peak {:.1} MiB", mib(loaded.peak_kib)),
        verdict(loaded.peak_kib * 1024 < 100_000_000),
    ]);
    section.row(vec![
        "CA RSS < 30 MB idle".into(),
        format!("{:.1} MiB after start", mib(idle.rss_kib)),
        verdict(idle.rss_kib * 1024 < 30_000_000),
    ]);
    section
}

/// A row for something that could not be measured: `leading` cells, then why, then dashes.
fn not_measured(mut leading: Vec<String>, error: &anyhow::Error, width: usize) -> Vec<String> {
    leading.push(format!(
        "not measured: {}",
        clip(&format!("{error:#}"), 300)
    ));
    leading.resize(width.max(leading.len()), "-".into());
    leading
}

fn clip(text: &str, limit: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= limit {
        line.to_owned()
    } else {
        format!("{}…", line.chars().take(limit).collect::<String>())
    }
}
