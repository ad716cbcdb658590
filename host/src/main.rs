//! The `jit-host` command line: parses arguments, runs the command, prints any error as one
//! line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use jit_host::layout::Layout;
use jit_host::run::RunOptions;
use jit_host::sessions::SessionOptions;
use jit_host::setup::SetupArgs;
use tracing_subscriber::EnvFilter;

/// Keeps this server's sshd trusting the jit-ca CA, its KRL and its principals.
#[derive(Debug, Parser)]
#[command(name = "jit-host", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol this server with a one-time token and point sshd at the CA's files.
    Setup(SetupArgs),
    /// Keep the KRL, CA keys, principals and host certificate current.
    Run {
        /// The state directory `setup` wrote.
        #[arg(long, default_value = "/etc/ssh/jit")]
        state_dir: PathBuf,
        /// How long each KRL long-poll waits at the CA.
        #[arg(long, default_value = "30s", value_parser = jit_proto::parse_duration)]
        poll_wait: Duration,
        /// How often CA keys, principals and the host certificate are refreshed.
        #[arg(long, default_value = "5m", value_parser = jit_proto::parse_duration)]
        refresh_every: Duration,
        /// How long before its certificate expires a session is warned on its terminal; it is
        /// closed when the certificate expires (at once when it is revoked).
        #[arg(long, default_value = "60s", value_parser = jit_proto::parse_duration)]
        grace: Duration,
        /// How often SSH sessions are scanned (besides right after each new KRL).
        #[arg(long, default_value = "1s", value_parser = jit_proto::parse_duration)]
        scan_every: Duration,
    },
    /// Say how old the installed KRL is and whether it matches the CA's; exits 1 when not.
    Status {
        /// The state directory `setup` wrote.
        #[arg(long, default_value = "/etc/ssh/jit")]
        state_dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("JIT_HOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            let line = format!("{error:#}").replace(['\n', '\r'], " ");
            eprintln!("jit-host: {line}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    match command {
        Command::Setup(args) => {
            let report = runtime.block_on(jit_host::setup::setup(&args, Utc::now))?;
            let users: Vec<&str> = report
                .config
                .principals
                .keys()
                .map(String::as_str)
                .collect();
            println!("enrolled {} with {}", report.config.name, args.server);
            println!("  KRL version {} installed", report.krl_version);
            println!("  principals files for: {}", users.join(", "));
            println!(
                "  host certificate valid until {}",
                report.config.host_certificate_valid_before.to_rfc3339()
            );
            println!("  sshd drop-in {}", report.dropin.display());
            if report.reloaded {
                println!("  sshd reloaded");
            } else {
                println!("  sshd is not running; it reads the configuration when it starts");
            }
            println!(
                "now run `jit-host run --state-dir {}`",
                args.state_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            state_dir,
            poll_wait,
            refresh_every,
            grace,
            scan_every,
        } => {
            let options = RunOptions {
                poll_wait,
                refresh_every,
                sessions: SessionOptions {
                    grace,
                    scan_every,
                    ..SessionOptions::default()
                },
            };
            let layout = Layout::new(&state_dir);
            runtime.block_on(jit_host::run::run(
                &layout,
                options,
                Utc::now,
                shutdown_signal(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { state_dir, json } => {
            let layout = Layout::new(&state_dir);
            let report = runtime.block_on(jit_host::status::status(&layout, Utc::now()))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for line in jit_host::status::render(&report) {
                    println!("{line}");
                }
            }
            Ok(if report.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = interrupt.await;
        return;
    };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
}
