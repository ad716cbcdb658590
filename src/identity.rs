//! Who is asking: verification of OpenID Connect ID tokens.
//!
//! The CA trusts exactly one issuer. It discovers the issuer's JWKS, verifies every token's
//! signature with asymmetric algorithms only, and checks `iss`, `aud`, `azp`, `exp`, `iat` and
//! `nbf` against the time it is given, allowing a small documented clock skew. A token signed
//! with a key it has not seen triggers one JWKS refetch (rate-limited), which is how provider key
//! rotation is picked up. Keys are trusted for a configured maximum age only: past it they are
//! refetched, so a key the provider withdrew stops verifying even if no token names a new one.
//! When the JWKS cannot be fetched, or only a copy older than that age is at hand, every token
//! is refused: the CA fails closed.
//!
//! The verified result is an [`Identity`]: `(issuer, subject)` names the person; email (only
//! when the provider says it is verified) and groups describe them to the policy.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    ClaimsVerificationError, ClientId, IssuerUrl, JsonWebKeySetUrl, Nonce,
    SignatureVerificationError,
};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::config::OidcConfig;

/// Longest ID token accepted, in bytes. Real ID tokens are a few kilobytes at most.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A person whose ID token verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The `iss` claim: the provider.
    pub issuer: String,
    /// The `sub` claim: stable identifier of the person at the provider.
    pub subject: String,
    /// The `email` claim, present only when `email_verified` was true.
    pub email: Option<String>,
    /// Groups from the configured groups claim.
    pub groups: Vec<String>,
    /// Authentication methods (`amr`), for step-up decisions.
    pub auth_methods: Vec<String>,
    /// When the person last authenticated at the provider (`auth_time`).
    pub auth_time: Option<DateTime<Utc>>,
}

impl Identity {
    /// A short name for messages and key IDs: the verified email, else the subject.
    pub fn display_name(&self) -> &str {
        self.email.as_deref().unwrap_or(&self.subject)
    }
}

/// A bearer token kept out of logs: its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a token.
    pub fn new(token: String) -> Self {
        BearerToken(token)
    }

    /// The token itself, for the verifier only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("BearerToken([redacted])")
    }
}

/// Why a token was refused. Each variant is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No bearer token in the request.
    #[error("no bearer token; run `jit login`")]
    Missing,
    /// The token exceeds [`MAX_TOKEN_BYTES`].
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    Oversized,
    /// The token is not a JWS compact serialization with a JSON payload.
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    /// The header names `none`, an HMAC or another algorithm the CA does not accept.
    #[error("token algorithm is not accepted: {0}")]
    DisallowedAlgorithm(String),
    /// No key in the provider's JWKS matches the token, even after a refetch.
    #[error("token was not signed by a key of the trusted provider")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// The `iss` claim is not the configured issuer.
    #[error("token issuer is not trusted: {0}")]
    WrongIssuer(String),
    /// The audience or authorized party is not this CA's client.
    #[error("token audience is not this CA's client: {0}")]
    WrongAudience(String),
    /// The token has expired.
    #[error("token has expired; run `jit login`")]
    Expired,
    /// `iat` or `nbf` is further in the future than the clock skew allows.
    #[error("token is not valid yet ({0})")]
    NotYetValid(String),
    /// A claim the CA needs is absent or unusable.
    #[error("token claim unusable: {0}")]
    BadClaim(String),
    /// The provider's keys could not be fetched, so nothing can be verified.
    #[error("identity provider is unreachable; cannot verify tokens")]
    ProviderUnavailable,
}

impl TokenError {
    /// Stable machine code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            TokenError::ProviderUnavailable => "identity_provider_unavailable",
            _ => "invalid_token",
        }
    }
}

/// The claims a rejected token carried, read without trusting them, for the audit trail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnverifiedClaims {
    /// `iss` as written in the token.
    pub issuer: Option<String>,
    /// `sub` as written in the token.
    pub subject: Option<String>,
}

impl UnverifiedClaims {
    /// Reads `iss` and `sub` from a token's payload without verifying anything.
    pub fn peek(token: &str) -> UnverifiedClaims {
        let payload = token
            .split('.')
            .nth(1)
            .and_then(|segment| decode_json_segment(segment).ok());
        let text_claim = |name: &str| {
            payload
                .as_ref()
                .and_then(|value| value.get(name))
                .and_then(Value::as_str)
                .map(|text| text.chars().take(256).collect())
        };
        UnverifiedClaims {
            issuer: text_claim("iss"),
            subject: text_claim("sub"),
        }
    }
}

/// What the verifier knows of the provider: where its keys are and what they are.
struct ProviderKeys {
    jwks_uri: Option<JsonWebKeySetUrl>,
    // Shared so that each verification takes a reference, not a copy of every key.
    jwks: Option<Arc<CoreJsonWebKeySet>>,
    // When `jwks` was fetched; a monotonic instant, since only its age matters.
    fetched_at: Option<Instant>,
}

/// Verifies ID tokens from the one trusted issuer, caching its JWKS.
pub struct TokenVerifier {
    issuer: IssuerUrl,
    client_id: ClientId,
    trusted_audiences: Arc<[String]>,
    groups_claim: String,
    clock_skew: TimeDelta,
    require_verified_email: bool,
    min_refetch_interval: Duration,
    max_key_age: Duration,
    http: reqwest::Client,
    keys: RwLock<ProviderKeys>,
    // Serialises refetches and remembers when the last one started, for rate limiting.
    last_refetch: Mutex<Option<Instant>>,
}

/// Signature algorithms accepted: asymmetric only, never `none` or an HMAC.
const ACCEPTED_ALGORITHMS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

impl TokenVerifier {
    /// Builds a verifier for the configured issuer. Nothing is fetched yet; call
    /// [`TokenVerifier::refresh`] at start so the first request does not pay for discovery.
    pub fn new(config: &OidcConfig) -> Result<TokenVerifier, String> {
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|error| format!("[oidc] issuer is not a URL: {error}"))?;
        // openidconnect requires a client that does not follow redirects (SSRF safety).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| format!("cannot build HTTP client: {error}"))?;
        let clock_skew = TimeDelta::seconds(i64::try_from(config.clock_skew_secs).unwrap_or(300));

        Ok(TokenVerifier {
            issuer,
            client_id: ClientId::new(config.client_id.clone()),
            trusted_audiences: config.trusted_audiences.clone().into(),
            groups_claim: config.groups_claim.clone(),
            clock_skew,
            require_verified_email: config.require_verified_email,
            min_refetch_interval: Duration::from_secs(config.jwks_min_refetch_secs),
            max_key_age: Duration::from_secs(config.jwks_max_age_secs),
            http,
            keys: RwLock::new(ProviderKeys {
                jwks_uri: None,
                jwks: None,
                fetched_at: None,
            }),
            last_refetch: Mutex::new(None),
        })
    }

    /// Discovers the provider (when not yet done) and fetches its JWKS now, ignoring the rate
    /// limit. Returns the number of keys, or why it failed.
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut last_refetch = self.last_refetch.lock().await;
        *last_refetch = Some(Instant::now());
        self.fetch_keys().await
    }

    async fn fetch_keys(&self) -> Result<usize, String> {
        let known_uri = self.keys.read().await.jwks_uri.clone();
        let (jwks_uri, jwks) = match known_uri {
            Some(uri) => {
                let jwks = CoreJsonWebKeySet::fetch_async(&uri, &self.http)
                    .await
                    .map_err(|error| format!("fetching JWKS failed: {error}"))?;
                (uri, jwks)
            }
            None => {
                let metadata =
                    CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
                        .await
                        .map_err(|error| {
                            format!("discovery of {} failed: {error}", *self.issuer)
                        })?;
                (metadata.jwks_uri().clone(), metadata.jwks().clone())
            }
        };

        let key_count = jwks.keys().len();
        let mut keys = self.keys.write().await;
        keys.jwks_uri = Some(jwks_uri);
        keys.jwks = Some(Arc::new(jwks));
        keys.fetched_at = Some(Instant::now());
        Ok(key_count)
    }

    /// Refetches the JWKS unless another refetch started less than the minimum interval ago.
    /// Returns whether new keys were loaded.
    async fn refetch_rate_limited(&self) -> bool {
        let mut last_refetch = self.last_refetch.lock().await;
        let recently = last_refetch
            .map(|started| started.elapsed() < self.min_refetch_interval)
            .unwrap_or(false);
        if recently {
            return false;
        }
        *last_refetch = Some(Instant::now());

        match self.fetch_keys().await {
            Ok(key_count) => {
                tracing::info!(target: "security", key_count, "identity provider keys refetched");
                true
            }
            Err(error) => {
                tracing::warn!(target: "security", %error, "identity provider keys unavailable");
                false
            }
        }
    }

    /// Verifies `token` as of `now` and returns who it names.
    pub async fn verify(
        &self,
        token: &BearerToken,
        now: DateTime<Utc>,
    ) -> Result<Identity, TokenError> {
        let token = token.expose();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let header = check_header(token)?;

        let jwks = self.current_jwks().await?;
        let verified = match self.verify_with(&jwks, token, now) {
            // An unknown signer may be a rotated provider key: refetch once and retry.
            Err(TokenError::UnknownKey) if self.refetch_rate_limited().await => {
                let jwks = self.current_jwks().await?;
                self.verify_with(&jwks, token, now)
            }
            other => other,
        };
        let claims = verified?;
        tracing::debug!(alg = %header, "token signature verified");
        self.identity_from(token, &claims, now)
    }

    async fn current_jwks(&self) -> Result<Arc<CoreJsonWebKeySet>, TokenError> {
        if let Some(jwks) = self.fresh_jwks().await {
            return Ok(jwks);
        }
        // Never fetched (the provider was down at start) or too old: try now, within the rate
        // limit, and refuse rather than trust keys the provider may have withdrawn.
        self.refetch_rate_limited().await;
        self.fresh_jwks()
            .await
            .ok_or(TokenError::ProviderUnavailable)
    }

    /// The cached JWKS, unless it is older than the maximum age.
    async fn fresh_jwks(&self) -> Option<Arc<CoreJsonWebKeySet>> {
        let keys = self.keys.read().await;
        let fresh = keys
            .fetched_at
            .is_some_and(|fetched| fetched.elapsed() < self.max_key_age);
        keys.jwks.clone().filter(|_| fresh)
    }

    fn verify_with(
        &self,
        jwks: &CoreJsonWebKeySet,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<openidconnect::core::CoreIdTokenClaims, TokenError> {
        let id_token = CoreIdToken::from_str(token)
            .map_err(|error| TokenError::Malformed(first_line(&error.to_string())))?;

        let skew = self.clock_skew;
        // OIDC Core 3.1.3.7 step 9: reject at or after `exp`; the skew is granted by testing
        // expiry against a clock set back by it.
        let expiry_clock = now - skew;
        // Step 10: `iat` may not be in the future beyond the skew.
        let latest_issue_time = now + skew;
        let verifier = CoreIdTokenVerifier::new_public_client(
            self.client_id.clone(),
            self.issuer.clone(),
            jwks.clone(),
        )
        .set_allowed_algs(ACCEPTED_ALGORITHMS)
        .set_time_fn(move || expiry_clock)
        .set_issue_time_verifier_fn(move |issued_at| {
            if issued_at > latest_issue_time {
                Err(format!("issued at {issued_at}, in the future"))
            } else {
                Ok(())
            }
        })
        // Step 3: every audience besides this client must be one the operator trusts; with
        // several, `azp` is checked below (steps 4-5).
        .set_other_audience_verifier_fn({
            let trusted = Arc::clone(&self.trusted_audiences);
            move |audience| trusted.iter().any(|name| name == audience.as_str())
        });

        // The CA sent no authentication request, so there is no nonce to compare.
        let no_nonce = |_: Option<&Nonce>| Ok(());
        id_token
            .into_claims(&verifier, no_nonce)
            .map_err(map_claims_error)
    }

    fn identity_from(
        &self,
        token: &str,
        claims: &openidconnect::core::CoreIdTokenClaims,
        now: DateTime<Utc>,
    ) -> Result<Identity, TokenError> {
        // Steps 4-5: with several audiences an `azp` naming this client is required, and any
        // `azp` present must name it.
        let audience_count = claims.audiences().len();
        match claims.authorized_party() {
            Some(party) if **party != *self.client_id => {
                return Err(TokenError::WrongAudience(format!(
                    "authorized party `{}`",
                    clip(party)
                )));
            }
            None if audience_count > 1 => {
                return Err(TokenError::WrongAudience(
                    "several audiences and no authorized party".into(),
                ));
            }
            _ => {}
        }

        // The signature covers these bytes, so reading them again is reading verified data.
        let payload = token
            .split('.')
            .nth(1)
            .ok_or_else(|| TokenError::Malformed("no payload".into()))
            .and_then(|segment| decode_json_segment(segment).map_err(TokenError::Malformed))?;

        if let Some(not_before) = payload.get("nbf") {
            let not_before = not_before
                .as_i64()
                .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
                .ok_or_else(|| TokenError::BadClaim("nbf is not a timestamp".into()))?;
            if not_before > now + self.clock_skew {
                return Err(TokenError::NotYetValid(format!("nbf {not_before}")));
            }
        }

        let subject = claims.subject().as_str();
        if subject.is_empty() {
            return Err(TokenError::BadClaim("sub is empty".into()));
        }

        let email_verified = claims.email_verified().unwrap_or(false);
        let email = match claims.email() {
            Some(email) if email_verified => Some(email.as_str().to_owned()),
            _ => None,
        };
        if self.require_verified_email && email.is_none() {
            return Err(TokenError::BadClaim(
                "no verified email (email_verified is not true)".into(),
            ));
        }

        let groups = string_list(payload.get(&self.groups_claim)).ok_or_else(|| {
            TokenError::BadClaim(format!("`{}` is not a list of strings", self.groups_claim))
        })?;
        let auth_methods = claims
            .auth_method_refs()
            .map(|methods| methods.iter().map(|method| method.to_string()).collect())
            .unwrap_or_default();

        Ok(Identity {
            issuer: claims.issuer().to_string(),
            subject: subject.to_owned(),
            email,
            groups,
            auth_methods,
            auth_time: claims.auth_time(),
        })
    }
}

/// Refuses tokens whose header names an algorithm we never accept, before any key lookup, and
/// returns the algorithm name.
fn check_header(token: &str) -> Result<String, TokenError> {
    let mut segments = token.split('.');
    let header_segment = segments
        .next()
        .filter(|segment| !segment.is_empty())
        .ok_or_else(|| TokenError::Malformed("empty".into()))?;
    if token.split('.').count() != 3 {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    }
    let header = decode_json_segment(header_segment).map_err(TokenError::Malformed)?;
    let algorithm = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::Malformed("header has no alg".into()))?;

    let accepted = ACCEPTED_ALGORITHMS.iter().any(|accepted| {
        serde_json::to_value(accepted)
            .ok()
            .and_then(|name| name.as_str().map(|name| name == algorithm))
            .unwrap_or(false)
    });
    if !accepted {
        return Err(TokenError::DisallowedAlgorithm(clip(algorithm)));
    }
    Ok(algorithm.to_owned())
}

fn decode_json_segment(segment: &str) -> Result<Value, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| "a part is not base64url".to_string())?;
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|_| "a part is not JSON".to_string())?;
    if !value.is_object() {
        return Err("a part is not a JSON object".into());
    }
    Ok(value)
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(single)) => Some(vec![single.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Some(_) => None,
    }
}

fn map_claims_error(error: ClaimsVerificationError) -> TokenError {
    match error {
        ClaimsVerificationError::Expired(message) if message.contains("issued at") => {
            TokenError::NotYetValid(first_line(&message))
        }
        ClaimsVerificationError::Expired(_) => TokenError::Expired,
        ClaimsVerificationError::InvalidIssuer(message) => {
            TokenError::WrongIssuer(first_line(&message))
        }
        ClaimsVerificationError::InvalidAudience(message) => {
            TokenError::WrongAudience(first_line(&message))
        }
        ClaimsVerificationError::SignatureVerification(signature_error) => match signature_error {
            SignatureVerificationError::NoMatchingKey
            | SignatureVerificationError::AmbiguousKeyId(_)
            | SignatureVerificationError::InvalidKey(_) => TokenError::UnknownKey,
            SignatureVerificationError::DisallowedAlg(message)
            | SignatureVerificationError::UnsupportedAlg(message) => {
                TokenError::DisallowedAlgorithm(first_line(&message))
            }
            SignatureVerificationError::NoSignature => {
                TokenError::DisallowedAlgorithm("unsigned".into())
            }
            _ => TokenError::BadSignature,
        },
        other => TokenError::Malformed(first_line(&other.to_string())),
    }
}

fn first_line(text: &str) -> String {
    clip(text.lines().next().unwrap_or_default())
}

/// Cuts attacker-supplied text to a length fit for one log line or error message.
fn clip(text: &str) -> String {
    text.chars().take(120).collect()
}

/// Shared handle to the verifier.
pub type SharedVerifier = Arc<TokenVerifier>;

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(value: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn header_check_refuses_none_and_hmac() {
        for alg in ["none", "HS256", "HS512", "RS1"] {
            let token = format!(
                "{}.{}.",
                segment(&serde_json::json!({ "alg": alg })),
                segment(&serde_json::json!({}))
            );
            assert!(
                matches!(
                    check_header(&token),
                    Err(TokenError::DisallowedAlgorithm(_))
                ),
                "{alg}"
            );
        }
        let token = format!(
            "{}.{}.sig",
            segment(&serde_json::json!({ "alg": "RS256" })),
            segment(&serde_json::json!({}))
        );
        assert_eq!(check_header(&token), Ok("RS256".into()));
    }

    #[test]
    fn header_check_refuses_garbage() {
        for token in ["", "abc", "a.b", "a.b.c.d", "!!.e30.x", "e30.e30"] {
            assert!(check_header(token).is_err(), "{token}");
        }
    }

    #[test]
    fn peek_reads_claims_without_trusting_them() {
        let token = format!(
            "{}.{}.x",
            segment(&serde_json::json!({ "alg": "none" })),
            segment(&serde_json::json!({ "iss": "https://evil", "sub": "mallory" }))
        );

        let claims = UnverifiedClaims::peek(&token);

        assert_eq!(claims.issuer.as_deref(), Some("https://evil"));
        assert_eq!(claims.subject.as_deref(), Some("mallory"));
        assert_eq!(UnverifiedClaims::peek("junk"), UnverifiedClaims::default());
    }

    #[test]
    fn bearer_token_debug_is_redacted() {
        let token = BearerToken::new("secret-token-value".into());

        assert_eq!(format!("{token:?}"), "BearerToken([redacted])");
    }

    #[test]
    fn groups_claim_accepts_list_or_single_string() {
        assert_eq!(
            string_list(Some(&serde_json::json!(["a", "b"]))),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            string_list(Some(&serde_json::json!("a"))),
            Some(vec!["a".into()])
        );
        assert_eq!(string_list(None), Some(vec![]));
        assert_eq!(string_list(Some(&serde_json::json!([1]))), None);
    }
}
