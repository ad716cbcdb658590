//! `jit-ca`: the certificate authority's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use jit_ca::config::Config;
use jit_ca::identity::Identity;
use jit_ca::policy::{Action, Decision, Policy, Refusal, RequestInput, ReviewFacts};
use jit_ca::server;
use jit_ca::signer::CaKey;
use tracing_subscriber::EnvFilter;

/// Just-in-time SSH certificate authority.
#[derive(Parser)]
#[command(name = "jit-ca", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the CA.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "/etc/jit-ca/jit-ca.toml")]
        config: PathBuf,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Create a new Ed25519 CA key (mode 0600); refuses to overwrite.
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
        /// Encrypt it with the passphrase in this environment variable.
        #[arg(long)]
        passphrase_env: Option<String>,
    },
    /// Check or explain the policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Enrol servers.
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
}

#[derive(Subcommand)]
enum HostCommand {
    /// Print a one-time token with which `jit-host setup` enrols the inventory host NAME.
    Enroll {
        /// The host's name in profiles.toml's [hosts].
        name: String,
        /// Configuration file naming the store and the policy files.
        #[arg(long, default_value = "/etc/jit-ca/jit-ca.toml")]
        config: PathBuf,
        /// Enrol the host in only these of its inventory groups (comma-separated).
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// How long the token stays usable.
        #[arg(long, default_value = "1h", value_parser = jit_proto::parse_duration)]
        ttl: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the stored audit log: its hash chain, every checkpoint's signature, and that no
    /// record was removed below a checkpoint. Names the first bad record; exits 1 when any.
    Verify {
        /// Configuration file naming the store and the audit key.
        #[arg(long, default_value = "/etc/jit-ca/jit-ca.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate profiles.toml and policy.cedar.
    Check {
        /// Configuration file naming the policy files.
        #[arg(long, default_value = "/etc/jit-ca/jit-ca.toml")]
        config: PathBuf,
    },
    /// Show the decision for a hypothetical request and the rules that made it.
    Explain {
        /// Configuration file naming the policy files.
        #[arg(long, default_value = "/etc/jit-ca/jit-ca.toml")]
        config: PathBuf,
        /// The requester's email.
        #[arg(long)]
        email: String,
        /// The requester's groups, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "")]
        groups: Vec<String>,
        /// Profile asked for.
        #[arg(long)]
        profile: String,
        /// Host or `group:NAME`.
        #[arg(long)]
        host: String,
        /// Requested duration (e.g. 30m).
        #[arg(long = "for")]
        duration: Option<String>,
        /// Reason, for profiles that require one.
        #[arg(long, default_value = "policy explain")]
        reason: String,
        /// Ticket, for profiles that require one.
        #[arg(long)]
        ticket: Option<String>,
        /// Also say whether someone in these groups (comma-separated) may approve the request.
        #[arg(long, value_delimiter = ',')]
        approver_groups: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jit-ca: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, log_json } => serve(config, log_json),
        Command::Keygen {
            out,
            passphrase_env,
        } => keygen(out, passphrase_env),
        Command::Policy {
            command: PolicyCommand::Check { config },
        } => policy_check(config),
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => audit_verify(config),
        Command::Host {
            command:
                HostCommand::Enroll {
                    name,
                    config,
                    groups,
                    ttl,
                },
        } => host_enroll(config, &name, groups.as_deref(), ttl),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    config,
                    email,
                    groups,
                    profile,
                    host,
                    duration,
                    reason,
                    ticket,
                    approver_groups,
                },
        } => {
            let duration = duration
                .as_deref()
                .map(jit_proto::parse_duration)
                .transpose()
                .context("--for")?;
            let identity = Identity {
                issuer: "policy-explain".into(),
                subject: email.clone(),
                email: Some(email),
                groups: groups
                    .into_iter()
                    .filter(|group| !group.is_empty())
                    .collect(),
                auth_methods: Vec::new(),
                auth_time: None,
            };
            let input = RequestInput {
                profile,
                target: host,
                unix_user: None,
                duration,
                reason,
                ticket,
            };
            policy_explain(config, &identity, &input, &approver_groups)
        }
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_env("JIT_CA_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn serve(config_path: PathBuf, log_json: bool) -> anyhow::Result<()> {
    init_logging(log_json);
    let config = Config::load(&config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    runtime.block_on(async {
        let ready = server::prepare(&config).await?;
        let address = ready.local_addr()?;
        let https = ready.is_https();
        tracing::info!(%address, https, config = %config_path.display(), "jit-ca listening");
        ready.serve(shutdown_signal()).await?;
        tracing::info!("jit-ca stopped");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
}

fn keygen(out: PathBuf, passphrase_env: Option<String>) -> anyhow::Result<()> {
    let passphrase = match &passphrase_env {
        Some(variable) => Some(
            std::env::var(variable)
                .with_context(|| format!("environment variable {variable} is not set"))?,
        ),
        None => None,
    };
    if passphrase.as_deref() == Some("") {
        bail!("the passphrase is empty");
    }
    let key = CaKey::generate(&out, passphrase.as_deref())?;
    println!("{}", key.authorized_keys_line());
    eprintln!("wrote {} ({})", out.display(), key.fingerprint());
    Ok(())
}

fn load_policy(config_path: &std::path::Path) -> anyhow::Result<Policy> {
    let config = Config::load(config_path)?;
    Ok(Policy::load(&config.policy.profiles, &config.policy.cedar)?)
}

fn policy_check(config_path: PathBuf) -> anyhow::Result<()> {
    let policy = load_policy(&config_path)?;
    println!(
        "policy ok: {} profiles, {} hosts, {} host groups, {} rules",
        policy.profiles.profiles.len(),
        policy.profiles.hosts.len(),
        policy.profiles.groups.len(),
        policy.rules.rule_count()
    );
    Ok(())
}

fn policy_explain(
    config_path: PathBuf,
    identity: &Identity,
    input: &RequestInput,
    approver_groups: &[String],
) -> anyhow::Result<()> {
    let policy = load_policy(&config_path)?;
    let now = Utc::now();
    match policy.decide(identity, input, now) {
        Ok(decision) => {
            let approval = if decision.auto_approved {
                format!(
                    "auto-approved (rules: {})",
                    decision.auto_approve_rule_ids.join(", ")
                )
            } else {
                format!("pending: needs {} approval(s)", decision.required_approvals)
            };
            println!("decision:   allowed, {approval}");
            println!("rules:      {}", decision.request_rule_ids.join(", "));
            println!("principals: {}", decision.principals.join(", "));
            let capped = if decision.duration_capped {
                " (cut to the profile's maximum)"
            } else {
                ""
            };
            println!(
                "duration:   {}{capped}",
                jit_proto::format_duration(decision.duration)
            );
            if !decision.extensions.is_empty() {
                let extensions: Vec<&str> =
                    decision.extensions.iter().map(String::as_str).collect();
                println!("extensions: {}", extensions.join(", "));
            }
            if !decision.auto_approved || decision.break_glass {
                explain_approvers(&policy, &decision, input, approver_groups, now);
            }
            Ok(())
        }
        Err(refusal) => {
            println!("decision:   denied: {refusal}");
            if let Refusal::NotPermitted { rule_ids, .. } = &refusal {
                if rule_ids.is_empty() {
                    println!("rules:      none permits it (denied by default)");
                } else {
                    println!("rules:      forbidden by {}", rule_ids.join(", "));
                }
            }
            Ok(())
        }
    }
}

/// Says how many approvals `decision` needs (for break-glass: the review afterwards), which
/// `approve` rules can admit approvers, and, given `approver_groups`, whether someone in them
/// may approve this very request. The requester never counts as an approver.
fn explain_approvers(
    policy: &Policy,
    decision: &Decision,
    input: &RequestInput,
    approver_groups: &[String],
    now: DateTime<Utc>,
) {
    let needed = if decision.break_glass {
        "none before access; one approver acknowledges it afterwards".to_owned()
    } else {
        decision.required_approvals.to_string()
    };
    let permits: Vec<String> = policy
        .rules
        .permits_for(Action::Approve)
        .into_iter()
        .map(|(rule_id, principals)| format!("{rule_id} ({principals})"))
        .collect();
    let by = if permits.is_empty() {
        "none: no rule lets anyone approve".to_owned()
    } else {
        permits.join(", ")
    };
    println!("approvals:  {needed}, by rules: {by}; never the requester");

    let groups: Vec<String> = approver_groups
        .iter()
        .filter(|group| !group.is_empty())
        .cloned()
        .collect();
    if groups.is_empty() {
        return;
    }
    let approver = Identity {
        issuer: "policy-explain".into(),
        subject: "approver".into(),
        email: Some("approver@policy-explain".into()),
        groups: groups.clone(),
        auth_methods: Vec::new(),
        auth_time: None,
    };
    let target = decision.target.label();
    let facts = ReviewFacts {
        profile: &decision.profile,
        target: &target,
        unix_users: &decision.unix_users,
        duration_secs: decision.duration.as_secs(),
        reason: &input.reason,
        ticket: input.ticket.as_deref().unwrap_or_default(),
    };
    let verdict = policy.may_review(&approver, &facts, now);
    let groups = groups.join(",");
    if verdict.allowed {
        println!(
            "approver:   groups {groups} may approve it (rules: {})",
            verdict.rule_ids.join(", ")
        );
    } else if verdict.rule_ids.is_empty() {
        println!("approver:   groups {groups} may not approve it: no rule permits it");
    } else {
        println!(
            "approver:   groups {groups} may not approve it: forbidden by {}",
            verdict.rule_ids.join(", ")
        );
    }
}

fn audit_verify(config_path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&config_path)?;
    // The key must exist already: verifying with a key made up now would prove nothing.
    let key = jit_ca::audit::AuditKey::load(&config.audit.key_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let verified = runtime.block_on(async {
        let store = jit_ca::store::sqlite::SqliteStore::open(&config.store.url).await?;
        anyhow::Ok(jit_ca::audit::verify::verify_store(&store, key.public_key()).await?)
    })?;
    println!(
        "audit log ok: {} records, {} checkpoints, the newest covering {} records ({} after it)",
        verified.records,
        verified.checkpoints,
        verified.covered,
        verified.unsigned_tail()
    );
    Ok(())
}

fn host_enroll(
    config_path: PathBuf,
    name: &str,
    groups: Option<&[String]>,
    ttl: std::time::Duration,
) -> anyhow::Result<()> {
    let config = Config::load(&config_path)?;
    let policy = Policy::load(&config.policy.profiles, &config.policy.cedar)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    let (token, record) = runtime.block_on(async {
        let store = jit_ca::store::sqlite::SqliteStore::open(&config.store.url).await?;
        let now = Utc::now();
        let made = jit_ca::hosts::create_enrollment_token(
            &store,
            &policy.profiles,
            name,
            groups,
            ttl,
            now,
        )
        .await?;
        anyhow::Ok(made)
    })?;
    // The token goes to standard output alone, so that it can be captured; it is not logged.
    println!("{token}");
    eprintln!(
        "one-time token for host {name} (groups: {}), valid until {}; on the host run:\n  \
         jit-host setup --server URL --name {name} --token TOKEN",
        record.groups.join(","),
        record.expires_at.to_rfc3339()
    );
    Ok(())
}
