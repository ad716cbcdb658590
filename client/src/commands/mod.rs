//! The `jit` subcommands. Each module turns parsed arguments into calls on the lower layers and
//! prints the result; `main` only parses the command line and reports the error.

pub mod audit;
pub mod fetch;
pub mod login;
pub mod request;
pub mod ssh;
pub mod status;

use std::io::Write;

use jit_proto::RequestStatus;

use crate::api::{self, ApiError, CaClient};
use crate::auth::AuthError;
use crate::config::{self, ConfigError, Environment};
use crate::install::InstallError;
use crate::login::LoginError;
use crate::secret::Secret;
use crate::state::{StateDir, StateError};
use crate::tokens::TokenError;
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

    /// A client for the configured CA; fails with how to configure one when none is.
    pub fn ca(&self) -> Result<CaClient, CommandError> {
        let config_file = config::config_file_path(&self.env)?;
        let server = config::resolve_server(self.server_flag.as_deref(), &self.env, &config_file)?;
        Ok(CaClient::new(server, api::http_client()?))
    }

    /// The ID token to send, refreshed first when it is about to expire.
    pub async fn bearer_token(
        &self,
        ca: &CaClient,
        state: &StateDir,
    ) -> Result<Secret, CommandError> {
        Ok(crate::auth::bearer_token(ca, state, self.clock).await?)
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
