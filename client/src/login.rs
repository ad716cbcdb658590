//! Logging in to the identity provider the CA trusts, and renewing the login.
//!
//! The CA's `GET /v1/config` names the issuer, the client id and the scopes; the provider's
//! endpoints and signing keys come from OpenID Connect discovery. Two flows are offered: the
//! authorization code flow with PKCE and a loopback redirect, for a machine with a browser, and
//! the device authorization grant (RFC 8628), for one without. Either way the ID token is
//! verified here before it is cached, although the CA verifies it again on every call.

use std::error::Error as StdError;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_proto::ClientConfig;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClient, CoreClientAuthMethod, CoreDeviceAuthorizationResponse, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType, CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthenticationContextClass, AuthorizationCode, ClientId, CsrfToken,
    DeviceAuthorizationUrl, DeviceCodeErrorResponseType, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, ErrorResponse, IdTokenVerifier, IssuerUrl, Nonce, NonceVerifier,
    OAuth2TokenResponse, PkceCodeChallenge, ProviderMetadata, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, CaClient};
use crate::config::Environment;
use crate::loopback::{CallbackError, CallbackListener};
use crate::secret::Secret;
use crate::state::StateDir;
use crate::tokens::{self, CachedTokens, TokenError, TokenSource};
use crate::Clock;

/// How long the browser flow waits for the user to finish at the provider.
const BROWSER_LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Slack allowed between the provider's clock and ours when checking `auth_time`.
const AUTH_TIME_SKEW: Duration = Duration::from_secs(120);

/// The scope whose grant makes a provider issue a refresh token.
const OFFLINE_ACCESS: &str = "offline_access";

/// Which flow to log in with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoginFlow {
    /// The browser flow when a browser can be opened, the device flow otherwise.
    #[default]
    Auto,
    /// Authorization code with PKCE and a loopback redirect.
    Browser,
    /// Device authorization grant.
    Device,
}

/// What to ask the provider for. The step-up path builds one of these with the CA's demands
/// (a recent login, a stronger authentication class) and calls [`login`] with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginOptions {
    /// Which flow to use.
    pub flow: LoginFlow,
    /// `max_age`: the user must have authenticated at the provider at most this long ago.
    pub max_age: Option<Duration>,
    /// `prompt=login`: the provider must ask for credentials even with a live session.
    pub prompt_login: bool,
    /// `acr_values`: space-separated authentication context classes, most preferred first.
    pub acr_values: Option<String>,
}

/// Who logged in, and the tokens now cached.
#[derive(Clone, Debug)]
pub struct LoginOutcome {
    /// The ID token's `sub`.
    pub subject: String,
    /// The ID token's `email`, when present.
    pub email: Option<String>,
    /// The ID token's `acr`, when present.
    pub auth_context: Option<String>,
    /// What was written to `tokens.json`.
    pub tokens: CachedTokens,
}

/// Why logging in or renewing the login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The CA's configuration could not be fetched.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The token cache could not be written.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The loopback redirect failed.
    #[error(transparent)]
    Callback(#[from] CallbackError),
    /// The CA names an issuer that is not a URL.
    #[error("the CA names an issuer `{0}` that is not a URL")]
    BadIssuer(String),
    /// Discovery of the provider's metadata or keys failed.
    #[error("cannot discover the identity provider {issuer}")]
    Discovery {
        /// The issuer URL.
        issuer: String,
        /// What went wrong.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The provider's metadata lacks an endpoint the chosen flow needs.
    #[error("the identity provider {issuer} has no {endpoint}")]
    MissingEndpoint {
        /// The issuer URL.
        issuer: String,
        /// Which endpoint.
        endpoint: &'static str,
    },
    /// The redirect URI could not be formed.
    #[error("cannot form the loopback redirect URI")]
    RedirectUri(#[source] openidconnect::url::ParseError),
    /// The provider did not answer a request.
    #[error("cannot reach the identity provider for {step}")]
    ProviderUnreachable {
        /// What was being asked (`the token exchange`, ...).
        step: &'static str,
        /// The transport failure.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The provider refused a request.
    #[error("the identity provider refused {step}: {message}")]
    ProviderRefused {
        /// What was being asked.
        step: &'static str,
        /// The provider's error code and description.
        message: String,
    },
    /// The user did not finish the device flow before the code expired.
    #[error("the device code expired before the login was completed; run `jit login` again")]
    DeviceCodeExpired,
    /// The user (or the provider's policy) denied the device login.
    #[error("the login was denied at the identity provider")]
    AccessDenied,
    /// The token response had no ID token.
    #[error("the identity provider returned no ID token")]
    NoIdToken,
    /// The ID token failed verification (signature, issuer, audience, expiry, nonce, ...).
    #[error("the ID token from the identity provider failed verification")]
    Verification(#[source] openidconnect::ClaimsVerificationError),
    /// A refreshed ID token names another user than the cached one.
    #[error("the refreshed ID token is for another user; run `jit login`")]
    SubjectChanged,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct DeviceEndpointMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}

impl AdditionalProviderMetadata for DeviceEndpointMetadata {}

/// Standard discovery metadata plus RFC 8628's `device_authorization_endpoint`.
type DiscoveredMetadata = ProviderMetadata<
    DeviceEndpointMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// A client with the authorization and token endpoints known.
type ProviderClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointMaybeSet,
>;

/// The discovered provider, ready for either flow.
struct Provider {
    issuer: String,
    client: ProviderClient,
    device_endpoint: Option<DeviceAuthorizationUrl>,
    /// Scopes to ask for besides `openid`, which the library always adds.
    extra_scopes: Vec<Scope>,
}

impl Provider {
    fn wants_refresh_token(&self) -> bool {
        self.extra_scopes
            .iter()
            .any(|scope| scope.as_str() == OFFLINE_ACCESS)
    }
}

/// Logs in with `options` and stores the tokens in `state`.
///
/// Fetches the CA's configuration, discovers the provider, runs the chosen flow (printing what
/// the user must do on stderr), verifies the ID token and writes `tokens.json`. `clock` is read
/// when the ID token is checked and while polling in the device flow.
pub async fn login(
    ca: &CaClient,
    state: &StateDir,
    env: &Environment,
    options: &LoginOptions,
    clock: Clock,
) -> Result<LoginOutcome, LoginError> {
    let provider = discover(ca).await?;

    let outcome = match resolve_flow(options.flow, env) {
        LoginFlow::Device => device_login(ca.http(), &provider, options, clock).await?,
        LoginFlow::Browser | LoginFlow::Auto => {
            browser_login(ca.http(), &provider, env, options, clock).await?
        }
    };

    outcome.tokens.store(state)?;
    Ok(outcome)
}

/// Renews the ID token with a refresh token and stores the result in `state`.
///
/// OpenID Connect Core section 12.2: the new ID token must be for the same subject; the nonce is
/// not checked, since the original one is not kept. A provider that answers without a new
/// refresh token keeps the old one valid (RFC 6749 section 6), so it is kept.
pub async fn refresh(
    ca: &CaClient,
    state: &StateDir,
    cached: &CachedTokens,
    refresh_token: &Secret,
    clock: Clock,
) -> Result<CachedTokens, LoginError> {
    let provider = discover(ca).await?;
    let previous_subject = tokens::jwt_subject(cached.id_token.expose()).ok();

    let refresh_token_value = RefreshToken::new(refresh_token.expose().to_owned());
    let response = provider
        .client
        .exchange_refresh_token(&refresh_token_value)
        .request_async(ca.http())
        .await
        .map_err(|error| token_request_error("the token refresh", error))?;
    let verifier = id_token_verifier(&provider, &LoginOptions::default(), clock);
    let accept_any_nonce = |_: Option<&Nonce>| Ok(());
    let mut outcome =
        verified_outcome(&response, &verifier, accept_any_nonce, TokenSource::Refresh)?;

    if previous_subject.is_some_and(|subject| subject != outcome.subject) {
        return Err(LoginError::SubjectChanged);
    }
    if outcome.tokens.refresh_token.is_none() {
        outcome.tokens.refresh_token = Some(refresh_token.clone());
    }
    outcome.tokens.store(state)?;
    Ok(outcome.tokens)
}

/// Picks the flow: the requested one, or for [`LoginFlow::Auto`] the browser flow when a
/// browser can be opened and the device flow otherwise.
pub fn resolve_flow(requested: LoginFlow, env: &Environment) -> LoginFlow {
    match requested {
        LoginFlow::Auto if browser_command(env, "").is_some() => LoginFlow::Browser,
        LoginFlow::Auto => LoginFlow::Device,
        chosen => chosen,
    }
}

/// The command that opens `url` in a browser: `$BROWSER` (its first `:`-separated entry, with
/// `%s` standing for the URL, or the URL appended), else `xdg-open` in a graphical session.
/// `None` when no browser can be opened.
pub fn browser_command(env: &Environment, url: &str) -> Option<Vec<String>> {
    let configured = env.browser.as_deref().and_then(|browsers| {
        browsers
            .split(':')
            .map(str::trim)
            .find(|entry| !entry.is_empty())
    });

    if let Some(entry) = configured {
        let mut words: Vec<String> = entry.split_whitespace().map(str::to_owned).collect();
        let has_placeholder = words.iter().any(|word| word.contains("%s"));
        if has_placeholder {
            for word in &mut words {
                *word = word.replace("%s", url);
            }
        } else {
            words.push(url.to_owned());
        }
        return Some(words);
    }

    let graphical = env.display.is_some() || env.wayland_display.is_some();
    graphical.then(|| vec!["xdg-open".to_owned(), url.to_owned()])
}

async fn discover(ca: &CaClient) -> Result<Provider, LoginError> {
    let config: ClientConfig = ca.client_config().await?;
    let issuer_url = IssuerUrl::new(config.issuer.clone())
        .map_err(|_| LoginError::BadIssuer(config.issuer.clone()))?;

    // OpenID Connect Discovery section 4.3: the library checks the document's issuer is the
    // one asked for, and fetches the signing keys from its jwks_uri.
    let metadata = DiscoveredMetadata::discover_async(issuer_url, ca.http())
        .await
        .map_err(|error| LoginError::Discovery {
            issuer: config.issuer.clone(),
            source: Box::new(error),
        })?;
    let token_endpoint =
        metadata
            .token_endpoint()
            .cloned()
            .ok_or_else(|| LoginError::MissingEndpoint {
                issuer: config.issuer.clone(),
                endpoint: "token endpoint",
            })?;
    let device_endpoint = metadata
        .additional_metadata()
        .device_authorization_endpoint
        .clone();

    // A public client: the CLI cannot keep a secret, PKCE stands in for it.
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(config.client_id), None)
            .set_token_uri(token_endpoint);
    let extra_scopes = config
        .scopes
        .iter()
        .filter(|scope| scope.as_str() != "openid")
        .map(|scope| Scope::new(scope.clone()))
        .collect();
    Ok(Provider {
        issuer: config.issuer,
        client,
        device_endpoint,
        extra_scopes,
    })
}

async fn browser_login(
    http: &reqwest::Client,
    provider: &Provider,
    env: &Environment,
    options: &LoginOptions,
    clock: Clock,
) -> Result<LoginOutcome, LoginError> {
    let listener = CallbackListener::bind().await?;
    let redirect_uri =
        RedirectUrl::new(listener.redirect_uri().to_owned()).map_err(LoginError::RedirectUri)?;
    let client = provider.client.clone().set_redirect_uri(redirect_uri);
    let (pkce_challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();

    let mut authorization = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scopes(provider.extra_scopes.iter().cloned())
        .set_pkce_challenge(pkce_challenge);
    if options.prompt_login {
        authorization = authorization.add_prompt(CoreAuthPrompt::Login);
    }
    // OpenID Connect Core section 11: offline_access is honoured only with prompt=consent.
    if provider.wants_refresh_token() {
        authorization = authorization.add_prompt(CoreAuthPrompt::Consent);
    }
    if let Some(max_age) = options.max_age {
        authorization = authorization.set_max_age(max_age);
    }
    for class in acr_list(options) {
        authorization =
            authorization.add_auth_context_value(AuthenticationContextClass::new(class));
    }
    let (authorization_url, csrf_state, nonce) = authorization.url();

    eprintln!("To log in, open: {authorization_url}");
    open_browser(env, authorization_url.as_str());
    eprintln!("Waiting for the login to finish in the browser...");
    let code = listener
        .wait_for_code(csrf_state.secret(), &provider.issuer, BROWSER_LOGIN_TIMEOUT)
        .await?;

    let response = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(pkce_verifier)
        .request_async(http)
        .await
        .map_err(|error| token_request_error("the code exchange", error))?;
    let verifier = id_token_verifier(provider, options, clock);
    verified_outcome(&response, &verifier, &nonce, TokenSource::Browser)
}

async fn device_login(
    http: &reqwest::Client,
    provider: &Provider,
    options: &LoginOptions,
    clock: Clock,
) -> Result<LoginOutcome, LoginError> {
    let device_endpoint =
        provider
            .device_endpoint
            .clone()
            .ok_or_else(|| LoginError::MissingEndpoint {
                issuer: provider.issuer.clone(),
                endpoint: "device authorization endpoint (log in where a browser can be opened)",
            })?;
    let client = provider
        .client
        .clone()
        .set_device_authorization_url(device_endpoint);

    let mut authorization = client
        .exchange_device_code()
        .add_scopes(provider.extra_scopes.iter().cloned());
    // RFC 8628 has no `prompt`; OpenID Connect Core section 3.1.2.1 makes max_age=0 mean the
    // same as prompt=login, and a fresh login satisfies any larger max_age too.
    let max_age = match (options.max_age, options.prompt_login) {
        (_, true) => Some(Duration::ZERO),
        (Some(max_age), false) => Some(max_age),
        (None, false) => None,
    };
    if let Some(max_age) = max_age {
        authorization = authorization.add_extra_param("max_age", max_age.as_secs().to_string());
    }
    if let Some(acr_values) = options.acr_values.as_deref() {
        authorization = authorization.add_extra_param("acr_values", acr_values.to_owned());
    }
    let details: CoreDeviceAuthorizationResponse = authorization
        .request_async(http)
        .await
        .map_err(|error| token_request_error("the device authorization", error))?;

    let verification_url = details
        .verification_uri_complete()
        .map(|complete| complete.secret().to_owned())
        .unwrap_or_else(|| details.verification_uri().to_string());
    eprintln!("To log in, open: {verification_url}");
    eprintln!("Code: {}", details.user_code().secret());

    // RFC 8628 section 3.5: wait `interval` between polls, from the first one on, and add five
    // seconds on slow_down (the library does the latter); stop when the code expires.
    let first_wait = details.interval();
    let polling_window = details.expires_in().saturating_sub(first_wait);
    tokio::time::sleep(first_wait).await;
    let response = client
        .exchange_device_access_token(&details)
        .set_time_fn(clock)
        .request_async(http, tokio::time::sleep, Some(polling_window))
        .await
        .map_err(device_poll_error)?;

    let verifier = id_token_verifier(provider, options, clock);
    // No nonce travels in the device flow, so none can be checked.
    let no_nonce = |_: Option<&Nonce>| Ok(());
    verified_outcome(&response, &verifier, no_nonce, TokenSource::Device)
}

fn acr_list(options: &LoginOptions) -> Vec<String> {
    options
        .acr_values
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The verifier for OpenID Connect Core section 3.1.3.7: signature against the provider's
/// keys, `iss`, `aud`, `exp` (steps 1-9, in the library), plus steps 12 and 13 when `acr_values`
/// or `max_age` was asked for.
fn id_token_verifier<'a>(
    provider: &'a Provider,
    options: &LoginOptions,
    clock: Clock,
) -> IdTokenVerifier<'a, CoreJsonWebKey> {
    let mut verifier = provider.client.id_token_verifier().set_time_fn(clock);

    let requested_classes = acr_list(options);
    if !requested_classes.is_empty() {
        verifier = verifier.set_auth_context_verifier_fn(move |class| {
            check_auth_context(class.map(|class| class.as_str()), &requested_classes)
        });
    }
    if let Some(max_age) = options.max_age {
        verifier = verifier.set_auth_time_verifier_fn(move |auth_time| {
            check_auth_time(auth_time, max_age, clock())
        });
    }
    verifier
}

/// Step 12: the provider must say it used one of the requested authentication classes.
fn check_auth_context(asserted: Option<&str>, requested: &[String]) -> Result<(), String> {
    match asserted {
        Some(class) if requested.iter().any(|wanted| wanted == class) => Ok(()),
        Some(class) => Err(format!(
            "the provider authenticated with `{class}`, not one of `{}`",
            requested.join(" ")
        )),
        None => Err("the provider did not say how it authenticated (no acr claim)".into()),
    }
}

/// Step 13: with max_age, `auth_time` must be present and recent enough at `now`.
fn check_auth_time(
    auth_time: Option<DateTime<Utc>>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let Some(auth_time) = auth_time else {
        return Err("max_age was requested but the ID token has no auth_time".into());
    };
    let allowed =
        chrono::Duration::from_std(max_age + AUTH_TIME_SKEW).unwrap_or(chrono::Duration::MAX);
    if now - auth_time > allowed {
        return Err(format!(
            "the last authentication at {} is older than max_age {}",
            crate::format_instant(auth_time),
            jit_proto::format_duration(max_age)
        ));
    }
    Ok(())
}

fn verified_outcome<N: NonceVerifier>(
    response: &CoreTokenResponse,
    verifier: &IdTokenVerifier<'_, CoreJsonWebKey>,
    nonce: N,
    source: TokenSource,
) -> Result<LoginOutcome, LoginError> {
    let id_token = response.id_token().ok_or(LoginError::NoIdToken)?;
    // The access token is never used, so its at_hash (section 3.1.3.8) is not checked.
    let claims = id_token
        .claims(verifier, nonce)
        .map_err(LoginError::Verification)?;

    let tokens = CachedTokens {
        id_token: Secret::new(id_token.to_string()),
        expires_at: claims.expiration(),
        refresh_token: response
            .refresh_token()
            .map(|token| Secret::new(token.secret().clone())),
        source,
    };
    Ok(LoginOutcome {
        subject: claims.subject().as_str().to_owned(),
        email: claims.email().map(|email| email.as_str().to_owned()),
        auth_context: claims
            .auth_context_ref()
            .map(|class| class.as_str().to_owned()),
        tokens,
    })
}

fn open_browser(env: &Environment, url: &str) {
    let Some(command) = browser_command(env, url) else {
        eprintln!("No browser to open here; open the URL above yourself.");
        return;
    };
    let Some((program, arguments)) = command.split_first() else {
        return;
    };

    // The browser runs on its own; tokio reaps it if it exits while we wait.
    let spawned = tokio::process::Command::new(program)
        .args(arguments)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(error) = spawned {
        eprintln!("Could not start `{program}` ({error}); open the URL above yourself.");
    }
}

fn token_request_error<RE, TE>(step: &'static str, error: RequestTokenError<RE, TE>) -> LoginError
where
    RE: StdError + Send + Sync + 'static,
    TE: ErrorResponse + 'static,
{
    match error {
        RequestTokenError::ServerResponse(response) => LoginError::ProviderRefused {
            step,
            message: crate::api::one_line(&response.to_string()),
        },
        RequestTokenError::Request(source) => LoginError::ProviderUnreachable {
            step,
            source: Box::new(source),
        },
        RequestTokenError::Parse(_, _) => LoginError::ProviderRefused {
            step,
            message: "its answer could not be parsed".into(),
        },
        RequestTokenError::Other(message) => LoginError::ProviderRefused {
            step,
            message: crate::api::one_line(&message),
        },
    }
}

fn device_poll_error<RE>(
    error: RequestTokenError<RE, openidconnect::DeviceCodeErrorResponse>,
) -> LoginError
where
    RE: StdError + Send + Sync + 'static,
{
    if let RequestTokenError::ServerResponse(response) = &error {
        match response.error() {
            DeviceCodeErrorResponseType::ExpiredToken => return LoginError::DeviceCodeExpired,
            DeviceCodeErrorResponseType::AccessDenied => return LoginError::AccessDenied,
            _ => {}
        }
    }
    token_request_error("the device login", error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_instants::at;

    #[test]
    fn browser_variable_wins_and_takes_the_url() {
        let env = Environment {
            browser: Some("firefox --new-window %s:chromium".into()),
            ..Environment::default()
        };
        let plain = Environment {
            browser: Some("/usr/local/bin/open-it".into()),
            ..Environment::default()
        };

        assert_eq!(
            browser_command(&env, "https://idp/a").unwrap(),
            ["firefox", "--new-window", "https://idp/a"]
        );
        assert_eq!(
            browser_command(&plain, "https://idp/a").unwrap(),
            ["/usr/local/bin/open-it", "https://idp/a"]
        );
    }

    #[test]
    fn graphical_sessions_use_xdg_open_and_others_get_the_device_flow() {
        let x11 = Environment {
            display: Some(":0".into()),
            ..Environment::default()
        };
        let wayland = Environment {
            wayland_display: Some("wayland-0".into()),
            ..Environment::default()
        };
        let headless = Environment::default();

        assert_eq!(browser_command(&x11, "u").unwrap(), ["xdg-open", "u"]);
        assert_eq!(resolve_flow(LoginFlow::Auto, &wayland), LoginFlow::Browser);
        assert_eq!(resolve_flow(LoginFlow::Auto, &headless), LoginFlow::Device);
        assert_eq!(resolve_flow(LoginFlow::Device, &x11), LoginFlow::Device);
        assert_eq!(
            resolve_flow(LoginFlow::Browser, &headless),
            LoginFlow::Browser
        );
    }

    #[test]
    fn auth_time_must_be_within_max_age() {
        let max_age = Duration::from_secs(300);

        assert!(check_auth_time(Some(at(-300)), max_age, at(0)).is_ok());
        assert!(check_auth_time(Some(at(-420)), max_age, at(0)).is_ok());
        assert!(check_auth_time(Some(at(-421)), max_age, at(0)).is_err());
        assert!(check_auth_time(None, max_age, at(0)).is_err());
    }

    #[test]
    fn auth_context_must_be_one_requested() {
        let requested = vec!["urn:mfa".to_owned(), "urn:hwk".to_owned()];

        assert!(check_auth_context(Some("urn:hwk"), &requested).is_ok());
        assert!(check_auth_context(Some("urn:pwd"), &requested).is_err());
        assert!(check_auth_context(None, &requested).is_err());
    }
}
