//! The `jit` subcommands. Each module turns parsed arguments into calls on the lower layers and
//! prints the result; `main` only parses the command line and reports the error.

pub mod audit;
pub mod extend;
pub mod fetch;
pub mod login;
pub mod request;
pub mod review;
pub mod revoke;
pub mod sessions;
pub mod ssh;
pub mod ssh_config;
pub mod status;
pub mod wait;

use std::future::Future;
use std::io::Write;

use jit_proto::RequestStatus;

use crate::api::{self, ApiError, CaClient};
use crate::auth::AuthError;
use crate::challenge::StepUpChallenge;
use crate::config::{self, ConfigError, Environment};
use crate::install::InstallError;
use crate::login::{LoginError, LoginFlow, LoginOptions};
use crate::secret::Secret;
use crate::state::{StateDir, StateError};
use crate::tokens::{CachedTokens, TokenError, TokenSource};
use crate::Clock;

/// What every command needs: the environment snapshot, the `--server` flag and the clock.
#[derive(Clone, Debug)]
pub struct Context {
    /// The environment variables read at start-up.
    pub env: Environment,
    /// The global `--server` flag.
    pub server_flag: Option<String>,
    /// Source of the current time.
    pub clock: Clock,
}

impl Context {
    /// Opens (creating if needed) the state directory.
    pub fn state(&self) -> Result<StateDir, CommandError> {
        let root = config::state_dir_path(&self.env)?;
        Ok(StateDir::open(&root)?)
    }

    /// A client for the configured CA, trusting the configured CA bundle; fails with how to
    /// configure one when none is.
    pub fn ca(&self) -> Result<CaClient, CommandError> {
        let config_file = config::config_file_path(&self.env)?;
        let server = config::resolve_server(self.server_flag.as_deref(), &self.env, &config_file)?;
        let ca_bundle = config::resolve_ca_bundle(&self.env, &config_file)?;
        let http = api::http_client(ca_bundle.as_deref())?;
        Ok(CaClient::new(server, http))
    }

    /// The ID token to send, refreshed first when it is about to expire.
    pub async fn bearer_token(
        &self,
        ca: &CaClient,
        state: &StateDir,
    ) -> Result<Secret, CommandError> {
        Ok(crate::auth::bearer_token(ca, state, self.clock).await?)
    }

    /// Makes one authenticated call to the CA. When the CA answers that the login is too weak
    /// or too old (RFC 9470 step-up), logs in again as the challenge asks and retries once.
    pub async fn call<T, F, Fut>(
        &self,
        ca: &CaClient,
        state: &StateDir,
        call: F,
    ) -> Result<T, CommandError>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let id_token = self.bearer_token(ca, state).await?;
        let (message, challenge) = match call(id_token).await {
            Err(ApiError::StepUpRequired { message, challenge }) => (message, challenge),
            other => return Ok(other?),
        };

        self.step_up(ca, state, &message, &challenge).await?;
        let id_token = self.bearer_token(ca, state).await?;
        match call(id_token).await {
            Err(ApiError::StepUpRequired { message, .. }) => {
                Err(CommandError::StepUpNotSatisfied { message })
            }
            other => Ok(other?),
        }
    }

    /// Logs in again the way the cached login was made, asking the provider for a fresh
    /// authentication (`prompt=login`) with the challenge's `max_age` and `acr_values`.
    async fn step_up(
        &self,
        ca: &CaClient,
        state: &StateDir,
        message: &str,
        challenge: &StepUpChallenge,
    ) -> Result<(), CommandError> {
        let flow = match CachedTokens::load(state)?.source {
            TokenSource::Device => LoginFlow::Device,
            TokenSource::Browser => LoginFlow::Browser,
            TokenSource::Refresh => LoginFlow::Auto,
            // A token handed over by automation cannot be stepped up by asking a person.
            TokenSource::File => {
                return Err(CommandError::StepUpUnavailable {
                    message: message.to_owned(),
                })
            }
        };
        let options = LoginOptions {
            flow,
            max_age: challenge.max_age,
            prompt_login: true,
            acr_values: challenge.acr_values.clone(),
        };

        eprintln!("The CA asks for a new login: {message}");
        crate::login::login(ca, state, &self.env, &options, self.clock).await?;
        Ok(())
    }
}

/// Why a command failed; each variant prints as the one line shown to the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// State directory problem.
    #[error(transparent)]
    State(#[from] StateError),
    /// Token cache problem.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No usable login.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Login failed.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The CA refused or could not be reached.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Key or certificate problem.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// `jit ssh` could not pick a grant or start ssh.
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    /// An argument is unusable.
    #[error("{0}")]
    BadArgument(String),
    /// An audit export does not verify.
    #[error("audit log does not verify: {0}")]
    AuditInvalid(#[from] jit_proto::audit::ChainError),
    /// A file named on the command line could not be read.
    #[error("cannot read {path}")]
    ReadInput {
        /// The path, or `standard input`.
        path: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The request was denied, cancelled or expired.
    #[error("request {request_id} is {}: {message}", status.as_str())]
    RequestClosed {
        /// The request.
        request_id: String,
        /// Its final state.
        status: RequestStatus,
        /// The CA's explanation.
        message: String,
    },
    /// The CA still wants a stronger or fresher login after logging in again.
    #[error("{message} (still, after logging in again)")]
    StepUpNotSatisfied {
        /// The CA's explanation.
        message: String,
    },
    /// The CA wants a new login, but the cached one came from `--id-token-file`.
    #[error(
        "{message}; the current login came from --id-token-file, so log in with \
         `jit login --prompt-login` (with --max-age/--acr-values as the profile needs)"
    )]
    StepUpUnavailable {
        /// The CA's explanation.
        message: String,
    },
    /// Ctrl-C while waiting: the request stays pending at the CA and its key stays here.
    #[error(
        "stopped waiting; request {request_id} stays pending; resume with `jit wait {request_id}`"
    )]
    Interrupted {
        /// The request.
        request_id: String,
    },
    /// `jit fetch --wait` gave up.
    #[error(
        "request {request_id} is still pending after {waited}; run `jit fetch {request_id}` later"
    )]
    StillPending {
        /// The request.
        request_id: String,
        /// How long was waited, formatted.
        waited: String,
    },
}

/// Prints one line to standard output, ignoring a closed pipe (`jit status | head -1`).
pub(crate) fn print_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// Prints a JSON value as one line to standard output.
pub(crate) fn print_json(value: &serde_json::Value) {
    print_line(&value.to_string());
}
