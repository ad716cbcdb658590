//! The bearer token for a CA call: the cached ID token, renewed first when it is about to lapse.

use crate::api::CaClient;
use crate::login;
use crate::secret::Secret;
use crate::state::StateDir;
use crate::tokens::{CachedTokens, TokenAction, TokenError};
use crate::Clock;

/// Why no usable ID token could be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No cache, or an expired token that cannot be renewed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token expired and renewing it failed.
    #[error("login expired and could not be renewed ({reason}); run `jit login`")]
    RefreshFailed {
        /// Why the refresh failed, with its causes.
        reason: String,
    },
}

/// Returns the ID token to send to the CA.
///
/// Refreshes it (and stores the new tokens) when it expires within a minute and a refresh
/// token exists. If the refresh fails while the cached token is still valid, the cached one is
/// used and a warning printed; once it has expired without a way to renew it, the answer is
/// "login expired; run `jit login`".
pub async fn bearer_token(
    ca: &CaClient,
    state: &StateDir,
    clock: Clock,
) -> Result<Secret, AuthError> {
    let cached = CachedTokens::load(state)?;

    let action = cached.action_at(clock());
    let (refresh_token, cached_still_valid) = match (action, cached.refresh_token.as_ref()) {
        (TokenAction::Use, _) => return Ok(cached.id_token),
        (TokenAction::Refresh { cached_still_valid }, Some(refresh_token)) => {
            (refresh_token.clone(), cached_still_valid)
        }
        (TokenAction::Refresh { .. }, None) | (TokenAction::LoginAgain, _) => {
            return Err(TokenError::LoginExpired.into())
        }
    };

    match login::refresh(ca, state, &cached, &refresh_token, clock).await {
        Ok(renewed) => Ok(renewed.id_token),
        Err(error) if cached_still_valid => {
            let reason = crate::describe_chain(&error);
            eprintln!("warning: could not renew the login ({reason}); using the current token");
            Ok(cached.id_token)
        }
        Err(error) => Err(AuthError::RefreshFailed {
            reason: crate::describe_chain(&error),
        }),
    }
}
