//! The `jit` command line: parses arguments, runs the command, prints any error as one line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use jit_client::commands::request::PlannedStart;
use jit_client::commands::{
    self, audit, extend, fetch, login, request, review, ssh, status, Context,
};
use jit_client::config::Environment;
use jit_client::login::{LoginFlow, LoginOptions};

/// Just-in-time SSH access: short-lived certificates from the jit-ca CA.
#[derive(Debug, Parser)]
#[command(name = "jit", version)]
struct Cli {
    /// Base URL of the CA (else $JIT_SERVER, else `server` in ~/.config/jit/config.toml).
    #[arg(long, global = true, value_name = "URL")]
    server: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in to the CA's identity provider (browser, or device code without one).
    Login(LoginCli),
    /// Ask for access to a host; installs the certificate when granted at once.
    Request(RequestCli),
    /// Install the certificate of a request that has been approved since.
    Fetch(FetchCli),
    /// Wait for a pending request to be decided, then install its certificate.
    Wait(WaitCli),
    /// Run ssh with the certificate of a valid grant for the host.
    ///
    /// jit's own options (--grant) come before the destination. The words after it go to ssh:
    /// options first, then `--` and the remote command; without `--` the command starts at the
    /// first word that is neither an option nor an option's argument.
    Ssh(SshCli),
    /// Show active grants and requests waiting for approval; removes expired local grants.
    Status(StatusCli),
    /// The auditors' tools: list, show, export and verify the CA's audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// List the requests you may review, and break-glass activations awaiting review.
    Pending(JsonCli),
    /// Approve someone's request, or acknowledge a break-glass activation after the fact.
    Approve(ApproveCli),
    /// Refuse someone's request; one denial ends it.
    Deny(DenyCli),
    /// Withdraw one of your pending requests.
    Cancel(RequestIdCli),
    /// Ask for more time on an active grant; installs the re-issued certificate once approved.
    Extend(ExtendCli),
    /// Show a request and every step of its life (reviews, grant, extensions).
    Show(RequestIdCli),
    /// End access early: a grant, a certificate (--serial), every grant of a person (--user)
    /// or a public key (--key); removes your own copies from the agent and this machine.
    Revoke(jit_client::commands::revoke::RevokeCli),
    /// Show who is logged in where under which grant (auditors and approvers see others').
    Sessions(jit_client::commands::sessions::SessionsCli),
    /// Trust the servers' host certificates: writes a known_hosts file `jit ssh` uses and
    /// prints a Host block for ~/.ssh/config.
    SshConfig(jit_client::commands::ssh_config::SshConfigCli),
}

#[derive(Debug, Args)]
struct LoginCli {
    /// Use the device authorization grant (a code to enter on another device).
    #[arg(long)]
    device: bool,
    /// Store this ID token (`-` for standard input) instead of logging in, e.g. a CI job's
    /// workload-identity token.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["device", "max_age", "prompt_login", "acr_values"])]
    id_token_file: Option<PathBuf>,
    /// Ask the provider for an authentication at most SECS seconds old (max_age).
    #[arg(long, value_name = "SECS")]
    max_age: Option<u64>,
    /// Ask the provider to prompt for credentials again (prompt=login).
    #[arg(long)]
    prompt_login: bool,
    /// Ask the provider for these authentication context classes (acr_values, space-separated).
    #[arg(long, value_name = "VALUES")]
    acr_values: Option<String>,
}

#[derive(Debug, Args)]
struct RequestCli {
    /// Access profile to request.
    profile: String,
    /// Host (or host group) to access.
    #[arg(long)]
    host: String,
    /// Why the access is needed.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Change or incident ticket.
    #[arg(long, value_name = "T")]
    ticket: Option<String>,
    /// How long the access should last, e.g. 30m or 1h30m (default: the profile's).
    #[arg(long = "for", value_name = "DURATION", value_parser = jit_proto::parse_duration)]
    duration: Option<Duration>,
    /// One Unix user of the profile (default: all of them).
    #[arg(long, value_name = "UNIX_USER")]
    user: Option<String>,
    /// Planned start, RFC 3339 (2030-01-02T09:00:00Z) or from now (+30m); never before approval.
    #[arg(long = "at", value_name = "TIME", value_parser = PlannedStart::parse)]
    start: Option<PlannedStart>,
    /// When approvers must decide, wait for them (Ctrl-C stops waiting; `jit wait` resumes).
    #[arg(long)]
    wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct JsonCli {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RequestIdCli {
    /// The request id (`r-...`).
    request_id: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ApproveCli {
    /// The request id (`r-...`).
    request_id: String,
    /// A remark kept with your approval.
    #[arg(long, value_name = "TEXT")]
    comment: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DenyCli {
    /// The request id (`r-...`).
    request_id: String,
    /// Why the request is refused (shown to the requester).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExtendCli {
    /// The grant id (`g-...`), as `jit status` shows it.
    grant_id: String,
    /// How much longer, e.g. 30m.
    #[arg(long = "for", value_name = "DURATION", value_parser = jit_proto::parse_duration)]
    duration: Duration,
    /// Why more time is needed.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Change or incident ticket.
    #[arg(long, value_name = "T")]
    ticket: Option<String>,
    /// When approvers must decide, wait for them.
    #[arg(long)]
    wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct FetchCli {
    /// The request id (`r-...`) printed by `jit request`.
    request_id: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct WaitCli {
    /// The request id (`r-...`) printed by `jit request`.
    request_id: String,
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = jit_proto::parse_duration)]
    timeout: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SshCli {
    /// Use this grant instead of picking one for the host.
    #[arg(long, value_name = "ID")]
    grant: Option<String>,
    /// [user@]host, as the grant's principals spell the host.
    destination: String,
    /// ssh options, then `--` and the remote command.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "SSH_ARGS"
    )]
    args: Vec<String>,
}

#[derive(Debug, Args)]
struct StatusCli {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();

    let context = Context {
        env: Environment::from_process(),
        server_flag: cli.server.clone(),
        clock: Utc::now,
    };
    match run(&context, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let line = format!("{error:#}").replace(['\n', '\r'], " ");
            eprintln!("jit: {line}");
            ExitCode::FAILURE
        }
    }
}

fn run(context: &Context, command: Command) -> anyhow::Result<()> {
    // `jit ssh` replaces the process with ssh, so it needs no runtime.
    if let Command::Ssh(ssh_cli) = command {
        let args = ssh::SshArgs {
            grant_id: ssh_cli.grant,
            destination: ssh_cli.destination,
            rest: ssh_cli.args,
        };
        return Ok(ssh::run(context, &args)?);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(context, command))
}

async fn run_async(context: &Context, command: Command) -> anyhow::Result<()> {
    let outcome: Result<(), commands::CommandError> = match command {
        Command::Login(login_cli) => login::run(context, &login_args(login_cli)).await,
        Command::Request(request_cli) => {
            let args = request::RequestArgs {
                profile: request_cli.profile,
                host: request_cli.host,
                reason: request_cli.reason,
                ticket: request_cli.ticket,
                duration: request_cli.duration,
                unix_user: request_cli.user,
                start: request_cli.start,
                wait: request_cli.wait,
                json: request_cli.json,
            };
            request::run(context, &args).await
        }
        Command::Fetch(fetch_cli) => {
            let args = fetch::FetchArgs {
                request_id: fetch_cli.request_id,
                wait_up_to: None,
                json: fetch_cli.json,
            };
            fetch::run(context, &args).await
        }
        Command::Wait(wait_cli) => {
            let args = fetch::FetchArgs {
                request_id: wait_cli.request_id,
                wait_up_to: Some(wait_cli.timeout),
                json: wait_cli.json,
            };
            fetch::run(context, &args).await
        }
        Command::Status(status_cli) => {
            let args = status::StatusArgs {
                json: status_cli.json,
            };
            status::run(context, &args).await
        }
        Command::Audit { command } => audit::run(context, command).await,
        Command::Revoke(revoke_cli) => {
            jit_client::commands::revoke::run(context, &revoke_cli).await
        }
        Command::Sessions(sessions_cli) => {
            jit_client::commands::sessions::run(context, &sessions_cli).await
        }
        Command::SshConfig(ssh_config_cli) => {
            jit_client::commands::ssh_config::run(context, &ssh_config_cli).await
        }
        Command::Pending(pending_cli) => review::pending(context, pending_cli.json).await,
        Command::Approve(approve_cli) => {
            let args = review::ApproveArgs {
                request_id: approve_cli.request_id,
                comment: approve_cli.comment,
                json: approve_cli.json,
            };
            review::approve(context, &args).await
        }
        Command::Deny(deny_cli) => {
            let args = review::DenyArgs {
                request_id: deny_cli.request_id,
                reason: deny_cli.reason,
                json: deny_cli.json,
            };
            review::deny(context, &args).await
        }
        Command::Cancel(cancel_cli) => review::cancel(context, &request_id_args(cancel_cli)).await,
        Command::Show(show_cli) => review::show(context, &request_id_args(show_cli)).await,
        Command::Extend(extend_cli) => {
            let args = extend::ExtendArgs {
                grant_id: extend_cli.grant_id,
                duration: extend_cli.duration,
                reason: extend_cli.reason,
                ticket: extend_cli.ticket,
                wait: extend_cli.wait,
                json: extend_cli.json,
            };
            extend::run(context, &args).await
        }
        Command::Ssh(_) => Ok(()),
    };
    Ok(outcome?)
}

fn request_id_args(cli: RequestIdCli) -> review::RequestIdArgs {
    review::RequestIdArgs {
        request_id: cli.request_id,
        json: cli.json,
    }
}

fn login_args(login_cli: LoginCli) -> login::LoginArgs {
    let flow = if login_cli.device {
        LoginFlow::Device
    } else {
        LoginFlow::Auto
    };
    login::LoginArgs {
        options: LoginOptions {
            flow,
            max_age: login_cli.max_age.map(Duration::from_secs),
            prompt_login: login_cli.prompt_login,
            acr_values: login_cli.acr_values,
        },
        id_token_file: login_cli.id_token_file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("jit").chain(words.iter().copied()))
    }

    #[test]
    fn for_takes_the_shared_duration_syntax() {
        let cli = parse(&[
            "request", "db", "--host", "db-1", "--reason", "r", "--for", "1h30m",
        ])
        .unwrap();

        let Command::Request(request_cli) = cli.command else {
            panic!("not a request");
        };
        assert_eq!(request_cli.duration, Some(Duration::from_secs(5400)));
    }

    #[test]
    fn for_refuses_what_the_ca_would_refuse() {
        for bad in ["0m", "30x", "367d", "-5m", ""] {
            let parsed = parse(&[
                "request", "db", "--host", "h", "--reason", "r", "--for", bad,
            ]);
            assert!(parsed.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_takes_a_planned_start_and_wait() {
        let cli = parse(&[
            "request", "db", "--host", "db-1", "--reason", "r", "--at", "+30m", "--wait",
        ])
        .unwrap();

        let Command::Request(request_cli) = cli.command else {
            panic!("not a request");
        };
        assert_eq!(
            request_cli.start,
            Some(PlannedStart::After(Duration::from_secs(1800)))
        );
        assert!(request_cli.wait);
        assert!(parse(&["request", "db", "--host", "h", "--reason", "r", "--at", "noon"]).is_err());
    }

    #[test]
    fn deny_needs_a_reason_and_extend_a_duration() {
        assert!(parse(&["deny", "r-1"]).is_err());
        assert!(parse(&["deny", "r-1", "--reason", "no ticket"]).is_ok());
        assert!(parse(&["extend", "g-1", "--reason", "more"]).is_err());
        assert!(parse(&["extend", "g-1", "--for", "30m", "--reason", "more"]).is_ok());
        assert!(parse(&["approve", "r-1", "--comment", "ok", "--json"]).is_ok());
    }

    #[test]
    fn ssh_keeps_everything_after_the_destination() {
        let words = [
            "--server",
            "https://ca",
            "ssh",
            "--grant",
            "g-1",
            "db-1",
            "-v",
            "--",
            "id",
        ];

        let cli = parse(&words).unwrap();

        assert_eq!(cli.server.as_deref(), Some("https://ca"));
        let Command::Ssh(ssh_cli) = cli.command else {
            panic!("not ssh");
        };
        assert_eq!(ssh_cli.grant.as_deref(), Some("g-1"));
        assert_eq!(ssh_cli.destination, "db-1");
        assert_eq!(ssh_cli.args, ["-v", "--", "id"]);
    }

    #[test]
    fn id_token_file_excludes_interactive_options() {
        assert!(parse(&["login", "--id-token-file", "-", "--device"]).is_err());
        assert!(parse(&["login", "--id-token-file", "-"]).is_ok());
        assert!(parse(&[
            "login",
            "--max-age",
            "300",
            "--prompt-login",
            "--acr-values",
            "a b"
        ])
        .is_ok());
    }
}
