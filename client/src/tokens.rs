//! The token cache (`tokens.json`) and the decision whether a cached ID token can still be used.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::state::{StateDir, StateError};

/// A token expiring sooner than this is refreshed before use, so it does not lapse in flight.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// What went wrong reading, writing or judging cached tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The cache could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// There is no cache: nobody logged in on this machine yet.
    #[error("not logged in; run `jit login`")]
    NotLoggedIn,
    /// The cached ID token expired and cannot be refreshed.
    #[error("login expired; run `jit login`")]
    LoginExpired,
    /// A token is not a compact JWT with a numeric `exp` claim.
    #[error("the ID token is not a JWT with an expiry: {0}")]
    Malformed(&'static str),
    /// A token given to `jit login --id-token-file` has already expired.
    #[error("the ID token expired at {}", crate::format_instant(*expired_at))]
    AlreadyExpired {
        /// The token's `exp`.
        expired_at: DateTime<Utc>,
    },
    /// The cache could not be encoded.
    #[error("cannot encode the token cache")]
    Encode(#[source] serde_json::Error),
}

/// How the cached tokens were obtained, kept for `jit status` and for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// Authorization code flow with PKCE in a browser.
    Browser,
    /// Device authorization grant.
    Device,
    /// Given by automation through `--id-token-file`.
    File,
    /// Renewed with a refresh token.
    Refresh,
}

/// The contents of `tokens.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedTokens {
    /// The ID token sent to the CA as the bearer token.
    pub id_token: Secret,
    /// The ID token's `exp`.
    pub expires_at: DateTime<Utc>,
    /// The refresh token, when the provider issued one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// How the ID token was obtained.
    pub source: TokenSource,
}

/// What to do with the cached ID token at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAction {
    /// Valid for longer than [`REFRESH_MARGIN`]: send it.
    Use,
    /// About to expire, or expired, and a refresh token exists: refresh first. When
    /// `cached_still_valid` is true the cached token may be sent if the refresh fails.
    Refresh {
        /// Whether the cached ID token has not yet expired.
        cached_still_valid: bool,
    },
    /// Expired with no way to renew it: the user must log in again.
    LoginAgain,
}

impl CachedTokens {
    /// Decides at `now` whether the cached ID token can be sent as it is.
    ///
    /// A token within [`REFRESH_MARGIN`] of its expiry is refreshed when a refresh token exists,
    /// and used as it is otherwise; an expired one without a refresh token is useless.
    pub fn action_at(&self, now: DateTime<Utc>) -> TokenAction {
        let still_valid = now < self.expires_at;
        let margin = chrono::Duration::from_std(REFRESH_MARGIN).unwrap_or(chrono::Duration::zero());
        let comfortably_valid = now + margin < self.expires_at;

        match (comfortably_valid, self.refresh_token.is_some(), still_valid) {
            (true, _, _) => TokenAction::Use,
            (false, true, cached_still_valid) => TokenAction::Refresh { cached_still_valid },
            (false, false, true) => TokenAction::Use,
            (false, false, false) => TokenAction::LoginAgain,
        }
    }

    /// Reads the cache; [`TokenError::NotLoggedIn`] when there is none.
    pub fn load(state: &StateDir) -> Result<Self, TokenError> {
        state
            .read_json::<CachedTokens>(&state.tokens_file())?
            .ok_or(TokenError::NotLoggedIn)
    }

    /// Writes the cache as a 0600 file, replacing the previous one.
    pub fn store(&self, state: &StateDir) -> Result<(), TokenError> {
        let encoded = serde_json::to_vec_pretty(self).map_err(TokenError::Encode)?;
        state.write_private_file(&state.tokens_file(), &encoded)?;
        Ok(())
    }
}

/// Reads the `exp` claim of a compact JWT without verifying anything.
///
/// Only the client's own cache bookkeeping relies on this; the CA verifies the token in full.
pub fn jwt_expiry(token: &str) -> Result<DateTime<Utc>, TokenError> {
    let expiry = unverified_claims(token)?
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or(TokenError::Malformed("no numeric `exp` claim"))?;
    DateTime::from_timestamp(expiry, 0).ok_or(TokenError::Malformed("`exp` is out of range"))
}

/// Reads the `sub` claim of a compact JWT without verifying anything.
pub fn jwt_subject(token: &str) -> Result<String, TokenError> {
    unverified_claims(token)?
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or(TokenError::Malformed("no `sub` claim"))
}

fn unverified_claims(token: &str) -> Result<serde_json::Value, TokenError> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };

    let decoded = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("the payload is not base64url"))?;
    let claims: serde_json::Value = serde_json::from_slice(&decoded)
        .map_err(|_| TokenError::Malformed("the payload is not JSON"))?;
    if !claims.is_object() {
        return Err(TokenError::Malformed("the payload is not a JSON object"));
    }
    Ok(claims)
}

/// Builds the cache entry for a token handed over by automation, refusing one that has
/// already expired at `now`.
pub fn tokens_from_file(id_token: &str, now: DateTime<Utc>) -> Result<CachedTokens, TokenError> {
    let id_token = id_token.trim();
    let expires_at = jwt_expiry(id_token)?;
    if expires_at <= now {
        return Err(TokenError::AlreadyExpired {
            expired_at: expires_at,
        });
    }

    Ok(CachedTokens {
        id_token: Secret::new(id_token),
        expires_at,
        refresh_token: None,
        source: TokenSource::File,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_instants::at;

    fn cached(expires_at: DateTime<Utc>, refreshable: bool) -> CachedTokens {
        CachedTokens {
            id_token: Secret::new("a.b.c"),
            expires_at,
            refresh_token: refreshable.then(|| Secret::new("refresh")),
            source: TokenSource::Browser,
        }
    }

    fn jwt_with_payload(payload: &str) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn uses_a_token_valid_beyond_the_margin() {
        let tokens = cached(at(61), true);

        assert_eq!(tokens.action_at(at(0)), TokenAction::Use);
    }

    #[test]
    fn refreshes_a_token_about_to_expire_or_expired_when_it_can() {
        for (expires_at, cached_still_valid) in [(at(60), true), (at(1), true), (at(0), false)] {
            let tokens = cached(expires_at, true);

            let action = tokens.action_at(at(0));

            assert_eq!(action, TokenAction::Refresh { cached_still_valid });
        }
    }

    #[test]
    fn uses_a_nearly_expired_token_that_cannot_be_refreshed() {
        let tokens = cached(at(30), false);

        assert_eq!(tokens.action_at(at(0)), TokenAction::Use);
    }

    #[test]
    fn asks_for_login_when_expired_without_refresh_token() {
        let tokens = cached(at(0), false);

        assert_eq!(tokens.action_at(at(0)), TokenAction::LoginAgain);
        assert_eq!(tokens.action_at(at(3600)), TokenAction::LoginAgain);
    }

    #[test]
    fn reads_the_expiry_of_a_jwt() {
        let token = jwt_with_payload(r#"{"sub":"ada","exp":1700000600}"#);

        assert_eq!(jwt_expiry(&token).unwrap(), at(600));
        assert_eq!(jwt_subject(&token).unwrap(), "ada");
    }

    #[test]
    fn refuses_tokens_without_a_usable_expiry() {
        for token in [
            "not-a-jwt".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "a.!!!.c".to_owned(),
            jwt_with_payload("[]"),
            jwt_with_payload(r#"{"exp":"soon"}"#),
        ] {
            assert!(jwt_expiry(&token).is_err(), "{token}");
        }
    }

    #[test]
    fn file_tokens_must_not_be_expired() {
        let token = jwt_with_payload(r#"{"exp":1700000600}"#);

        let accepted = tokens_from_file(&format!("{token}\n"), at(0)).unwrap();
        let refused = tokens_from_file(&token, at(600));

        assert_eq!(accepted.id_token.expose(), token);
        assert_eq!(accepted.refresh_token, None);
        assert!(matches!(refused, Err(TokenError::AlreadyExpired { .. })));
    }
}
