//! Start-up: turn a configuration into a running CA.
//!
//! Order matters and every step fails loudly, naming the file at fault: configuration, transport
//! (TLS certificate, or plain HTTP only where allowed), policy, CA key (created on first start
//! when absent), store, identity provider, listener.

use std::sync::Arc;
use std::time::Duration;

use jit_proto::ClientConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::config::{CaConfig, Config, NotificationsConfig};
use crate::http::revocation::RevocationState;
use crate::http::{router, AppState};
use crate::identity::TokenVerifier;
use crate::listener::{tls, ConnectionLimits};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policy::Policy;
use crate::service::Service;
use crate::signer::{read_secret_file, CaKey};
use crate::store::sqlite::SqliteStore;

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// Reads the CA key's passphrase from the configured environment variable or file.
pub fn ca_passphrase(ca: &CaConfig) -> Result<Option<Zeroizing<String>>, StartError> {
    if let Some(variable) = &ca.passphrase_env {
        let value = std::env::var(variable).map_err(|_| {
            StartError(format!(
                "[ca] passphrase_env names `{variable}`, which is not set"
            ))
        })?;
        return Ok(Some(Zeroizing::new(value)));
    }
    if let Some(path) = &ca.passphrase_file {
        return read_secret_file(path).map(Some).map_err(StartError);
    }
    Ok(None)
}

/// Loads the CA key, creating it when the file does not exist yet.
pub fn load_or_create_ca_key(ca: &CaConfig) -> Result<CaKey, StartError> {
    let passphrase = ca_passphrase(ca)?;
    if !ca.key_file.exists() {
        let created = CaKey::generate(&ca.key_file, passphrase.as_ref().map(|p| p.as_str()))
            .map_err(|error| StartError(error.to_string()))?;
        tracing::info!(
            target: "security",
            path = %ca.key_file.display(),
            fingerprint = created.fingerprint(),
            "created CA key"
        );
        return Ok(created);
    }
    CaKey::load(&ca.key_file, passphrase.as_ref()).map_err(|error| StartError(error.to_string()))
}

/// How often pending requests are checked for expiry and break-glass grants for missing
/// reviews.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

fn start_notifier(config: &NotificationsConfig) -> Result<Option<Notifier>, StartError> {
    let Some(url) = &config.url else {
        return Ok(None);
    };
    let secret = if let Some(variable) = &config.secret_env {
        Zeroizing::new(std::env::var(variable).map_err(|_| {
            StartError(format!(
                "[notifications] secret_env names `{variable}`, which is not set"
            ))
        })?)
    } else if let Some(path) = &config.secret_file {
        read_secret_file(path).map_err(StartError)?
    } else {
        return Err(StartError(
            "[notifications] needs secret_env or secret_file to sign webhook bodies".into(),
        ));
    };
    let timeout = Duration::from_secs(config.timeout_secs.unwrap_or(3).clamp(1, 30));
    Notifier::start(Some(url.clone()), secret, timeout)
        .map(Some)
        .map_err(StartError)
}

/// The background loop at the edge: it reads the clock and calls the service.
fn spawn_sweeper(service: Arc<Service>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            ticks.tick().await;
            if let Err(error) = service.sweep(chrono::Utc::now()).await {
                tracing::warn!(%error, "sweep of pending requests failed");
            }
        }
    });
}

/// A CA ready to serve: its listener is bound, so the port is known.
pub struct Ready {
    listener: TcpListener,
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
}

impl Ready {
    /// The bound address (useful when the configuration asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether connections must speak TLS.
    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` completes, then lets open connections finish.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        crate::listener::serve(self.listener, self.app, self.tls, self.limits, shutdown).await
    }
}

/// Builds every component from `config` and binds the listener.
pub async fn prepare(config: &Config) -> Result<Ready, StartError> {
    // Checked first: a CA that would leak tokens should not even open its key.
    tls::check_transport(config.listen, config.tls.as_ref(), &config.http)
        .map_err(|error| StartError(error.to_string()))?;
    let tls = config
        .tls
        .as_ref()
        .map(tls::load_acceptor)
        .transpose()
        .map_err(|error| StartError(error.to_string()))?;

    let policy = Policy::load(&config.policy.profiles, &config.policy.cedar)
        .map_err(|error| StartError(error.to_string()))?;
    tracing::info!(
        profiles = policy.profiles.profiles.len(),
        hosts = policy.profiles.hosts.len(),
        rules = policy.rules.rule_count(),
        "policy loaded"
    );

    let ca_key = load_or_create_ca_key(&config.ca)?;
    tracing::info!(fingerprint = ca_key.fingerprint(), "CA key loaded");

    let store = SqliteStore::open(&config.store.url)
        .await
        .map_err(|error| StartError(error.to_string()))?;

    let verifier = TokenVerifier::new(&config.oidc).map_err(StartError)?;
    // The provider may be down at start; the CA then refuses tokens until it is reachable.
    match verifier.refresh().await {
        Ok(key_count) => {
            tracing::info!(issuer = %config.oidc.issuer, key_count, "identity provider keys loaded")
        }
        Err(error) => {
            tracing::warn!(target: "security", %error, "identity provider unreachable at start; failing closed")
        }
    }

    let store = Arc::new(store);
    let session_store: Arc<dyn crate::store::sessions::SessionStore> = store.clone();
    let auditor = crate::audit::start_audit(config, store.clone(), ca_key.fingerprint())
        .await
        .map_err(|error| StartError(error.to_string()))?;

    let mut service = Service::new(
        Arc::new(policy),
        Arc::new(ca_key),
        store,
        Duration::from_secs(config.ca.backdate_secs),
        auditor,
    );
    if let Some(notifier) = start_notifier(&config.notifications)? {
        service = service.with_notifier(notifier);
    }
    let service = Arc::new(service);
    spawn_sweeper(Arc::clone(&service));

    let revocation = RevocationState::new(
        Arc::clone(&service),
        &config.ca.previous_public_keys,
        Duration::from_secs(config.http.request_timeout_secs),
    )
    .await
    .map_err(|error| StartError(error.to_string()))?;

    let sessions = Arc::new(crate::sessions::Sessions::new(
        Arc::clone(&service),
        session_store,
    ));
    let state = AppState {
        service,
        verifier: Arc::new(verifier),
        metrics: Arc::new(Metrics::default()),
        client_config: ClientConfig {
            issuer: config.oidc.issuer.clone(),
            client_id: config.oidc.client_id.clone(),
            scopes: config.oidc.scopes.clone(),
        },
        revocation: Arc::new(revocation),
        sessions,
    };
    let app = router(Arc::new(state), &config.http);
    let app = crate::http::limits::apply(app, &config.limits);

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| StartError(format!("cannot listen on {}: {error}", config.listen)))?;
    Ok(Ready {
        listener,
        app,
        tls,
        limits: ConnectionLimits::from_config(&config.http),
    })
}
