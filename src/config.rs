//! The CA's configuration file (`jit-ca.toml`): where it listens, which identity provider it
//! trusts, where its key, store and policy live.
//!
//! Relative paths in the file are resolved against the directory holding the file, so a
//! configuration directory can be moved as a whole. Unknown keys are refused: a misspelt
//! setting must not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected shape.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the parser reported, with the line.
        message: String,
    },
}

/// The whole configuration, with paths already resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub source: PathBuf,
    /// Address and port of the HTTP listener.
    pub listen: SocketAddr,
    /// The identity provider.
    pub oidc: OidcConfig,
    /// The signing key.
    pub ca: CaConfig,
    /// The store.
    pub store: StoreConfig,
    /// The policy files.
    pub policy: PolicyConfig,
    /// HTTP limits.
    pub http: HttpConfig,
    /// HTTPS; None serves plain HTTP (loopback only, unless `[http] allow_plain_http`).
    pub tls: Option<TlsConfig>,
    /// Rate limits per client address and per identity.
    pub limits: crate::http::limits::LimitsConfig,
    /// Webhooks.
    pub notifications: NotificationsConfig,
    /// The audit log.
    pub audit: AuditConfig,
}

/// Which OpenID Connect provider the CA trusts, and how it reads its ID tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Issuer URL; discovery is at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// OAuth client id of the `jit` client: the audience every ID token must carry.
    pub client_id: String,
    /// Other audiences an ID token may list besides `client_id` (its `azp` must still name
    /// `client_id`). OIDC Core 3.1.3.7 has a client refuse a token naming audiences it does not
    /// trust, so by default a token with any other audience is refused.
    #[serde(default)]
    pub trusted_audiences: Vec<String>,
    /// Name of the claim that lists the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Scopes the client asks for.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Tolerated clock difference with the provider for `exp`, `iat` and `nbf`, in seconds.
    #[serde(default = "default_clock_skew_secs")]
    pub clock_skew_secs: u64,
    /// Refuse tokens without a verified `email` claim (the email names the user in key IDs).
    #[serde(default = "default_true")]
    pub require_verified_email: bool,
    /// Least time between two JWKS refetches triggered by an unknown `kid`, in seconds.
    #[serde(default = "default_jwks_refetch_secs")]
    pub jwks_min_refetch_secs: u64,
    /// Longest time the provider's keys are trusted without a successful refetch, in seconds.
    /// Past it the CA refetches them, and refuses every token while it cannot.
    #[serde(default = "default_jwks_max_age_secs")]
    pub jwks_max_age_secs: u64,
}

/// The CA signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// OpenSSH private key file; created (Ed25519, mode 0600) on first start when absent.
    pub key_file: PathBuf,
    /// Name of an environment variable holding the key's passphrase, when it is encrypted.
    #[serde(default)]
    pub passphrase_env: Option<String>,
    /// File holding the key's passphrase, when it is encrypted (must not be readable by others).
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// How far before the grant's start a certificate's `valid_after` is set, in seconds, so a
    /// server whose clock runs slightly behind still accepts a fresh certificate.
    #[serde(default = "default_backdate_secs")]
    pub backdate_secs: u64,
    /// Public keys (`authorized_keys` lines) of earlier CA keys, still trusted during a
    /// rotation: published while certificates they signed are valid, and covered by the KRL.
    #[serde(default)]
    pub previous_public_keys: Vec<String>,
}

/// Where requests, grants and certificates are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative paths resolved against the config directory).
    pub url: String,
}

/// The two policy files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Access profiles and host inventory (TOML).
    pub profiles: PathBuf,
    /// Cedar rules, validated against the CA's built-in schema.
    pub cedar: PathBuf,
}

/// Limits of the HTTP front.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time a request may take before it is answered 408, in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Most requests handled at once, across all endpoints; further ones wait. KRL long-polls
    /// wait outside it (see [`crate::http::router`]).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrent_requests: usize,
    /// Most connections open at once; past it new ones are closed as soon as they are accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time a client has to finish its TLS handshake and to send a request's headers (also
    /// the longest a kept-alive connection may sit idle), in seconds.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Serve plain HTTP on an address other than loopback (behind a TLS-terminating proxy).
    /// Without it, and without `[tls]`, the CA refuses to start on such an address.
    #[serde(default)]
    pub allow_plain_http: bool,
}

/// The CA's own HTTPS certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file: the server certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1); refused when
    /// group or others can read it.
    pub key_file: PathBuf,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: default_max_body_bytes(),
            request_timeout_secs: default_request_timeout_secs(),
            max_concurrent_requests: default_max_concurrency(),
            max_connections: default_max_connections(),
            header_read_timeout_secs: default_header_read_timeout_secs(),
            allow_plain_http: false,
        }
    }
}

impl OidcConfig {
    /// The tolerated clock skew.
    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew_secs)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: SocketAddr,
    oidc: OidcConfig,
    ca: CaConfig,
    store: StoreConfig,
    policy: PolicyConfig,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    tls: Option<TlsConfig>,
    #[serde(default)]
    limits: crate::http::limits::LimitsConfig,
    #[serde(default)]
    notifications: NotificationsConfig,
    #[serde(default)]
    audit: AuditConfig,
}

/// The audit log: its checkpoint key, its JSON Lines copy and how often it is checkpointed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Ed25519 key (OpenSSH format) that signs checkpoints, separate from the CA key; created
    /// (mode 0600) on first start when absent, refused when others can read it.
    #[serde(default = "default_audit_key_file")]
    pub key_file: PathBuf,
    /// Where every record is also written as one JSON line, for a SIEM: a file path (appended
    /// to) or `-` for standard output. None: no copy.
    #[serde(default)]
    pub jsonl: Option<String>,
    /// How often a checkpoint is signed when records were added since the last, in seconds.
    #[serde(default = "default_checkpoint_interval_secs")]
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_file: default_audit_key_file(),
            jsonl: None,
            checkpoint_interval_secs: default_checkpoint_interval_secs(),
        }
    }
}

fn default_audit_key_file() -> PathBuf {
    PathBuf::from("audit_key")
}

fn default_checkpoint_interval_secs() -> u64 {
    300
}

/// Webhook notifications (see the `notify` module for the body and its signature).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Default channel: approvals and denials for requesters, break-glass alerts, and pending
    /// requests of profiles without an `approver_webhook`. None: no notifications.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the HMAC secret that signs every body.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the HMAC secret (must not be readable by others).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Time each delivery attempt may take, in seconds (default 3).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "groups", "offline_access"]
        .map(String::from)
        .to_vec()
}

fn default_clock_skew_secs() -> u64 {
    60
}

fn default_true() -> bool {
    true
}

fn default_jwks_refetch_secs() -> u64 {
    10
}

fn default_jwks_max_age_secs() -> u64 {
    3600
}

fn default_backdate_secs() -> u64 {
    30
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_request_timeout_secs() -> u64 {
    15
}

fn default_max_concurrency() -> usize {
    1024
}

fn default_max_connections() -> usize {
    4096
}

fn default_header_read_timeout_secs() -> u64 {
    10
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses configuration text as if it had been read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|error| invalid(error.to_string()))?;

        if !raw.oidc.scopes.iter().any(|scope| scope == "openid") {
            return Err(invalid("[oidc] scopes must include `openid`".into()));
        }
        if raw.oidc.client_id.is_empty() {
            return Err(invalid("[oidc] client_id is empty".into()));
        }
        raw.limits.check().map_err(invalid)?;
        let http = &raw.http;
        let limits = [
            http.max_body_bytes,
            http.max_concurrent_requests,
            http.max_connections,
        ];
        if limits.contains(&0) || http.header_read_timeout_secs == 0 {
            return Err(invalid("[http] limits must be greater than zero".into()));
        }
        let store_path = raw
            .store
            .url
            .strip_prefix("sqlite://")
            .ok_or_else(|| invalid("[store] url must start with sqlite://".into()))?;
        if store_path.is_empty() {
            return Err(invalid("[store] url names no file".into()));
        }

        // Relative paths are relative to the config file, not to the working directory.
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |relative: &Path| base.join(relative);
        let mut ca = raw.ca;
        ca.key_file = resolve(&ca.key_file);
        ca.passphrase_file = ca.passphrase_file.as_deref().map(resolve);
        let store = StoreConfig {
            url: format!("sqlite://{}", resolve(Path::new(store_path)).display()),
        };
        let policy = PolicyConfig {
            profiles: resolve(&raw.policy.profiles),
            cedar: resolve(&raw.policy.cedar),
        };

        Ok(Config {
            source: path.to_owned(),
            listen: raw.listen,
            oidc: raw.oidc,
            ca,
            store,
            policy,
            http: raw.http,
            tls: raw.tls.map(|tls| TlsConfig {
                cert_file: resolve(&tls.cert_file),
                key_file: resolve(&tls.key_file),
            }),
            limits: raw.limits,
            notifications: NotificationsConfig {
                secret_file: raw.notifications.secret_file.as_deref().map(resolve),
                ..raw.notifications
            },
            audit: AuditConfig {
                key_file: resolve(&raw.audit.key_file),
                jsonl: raw.audit.jsonl.map(|target| match target.as_str() {
                    "-" => target,
                    path => resolve(Path::new(path)).display().to_string(),
                }),
                ..raw.audit
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        listen = "127.0.0.1:8080"
        [oidc]
        issuer = "http://127.0.0.1:9000"
        client_id = "jit"
        [ca]
        key_file = "ca_key"
        [store]
        url = "sqlite://jit.db"
        [policy]
        profiles = "profiles.toml"
        cedar = "policy.cedar"
    "#;

    #[test]
    fn resolves_paths_against_the_config_directory() {
        let config = Config::parse(MINIMAL, Path::new("/etc/jit-ca/jit-ca.toml")).unwrap();

        assert_eq!(config.ca.key_file, Path::new("/etc/jit-ca/ca_key"));
        assert_eq!(config.store.url, "sqlite:///etc/jit-ca/jit.db");
        assert_eq!(config.policy.cedar, Path::new("/etc/jit-ca/policy.cedar"));
        assert_eq!(config.oidc.groups_claim, "groups");
        assert_eq!(config.http.max_body_bytes, 65536);
    }

    #[test]
    fn audit_defaults_to_a_key_beside_the_config_and_resolves_the_copy() {
        let plain = Config::parse(MINIMAL, Path::new("/etc/jit-ca/jit-ca.toml")).unwrap();
        let with_copy = format!("{MINIMAL}\n[audit]\njsonl = \"audit.jsonl\"\n");
        let copied = Config::parse(&with_copy, Path::new("/etc/jit-ca/jit-ca.toml")).unwrap();
        let to_stdout = format!("{MINIMAL}\n[audit]\njsonl = \"-\"\n");
        let streamed = Config::parse(&to_stdout, Path::new("/etc/jit-ca/jit-ca.toml")).unwrap();

        assert_eq!(plain.audit.key_file, Path::new("/etc/jit-ca/audit_key"));
        assert_eq!(plain.audit.jsonl, None);
        assert_eq!(plain.audit.checkpoint_interval_secs, 300);
        assert_eq!(
            copied.audit.jsonl.as_deref(),
            Some("/etc/jit-ca/audit.jsonl")
        );
        assert_eq!(streamed.audit.jsonl.as_deref(), Some("-"));
    }

    #[test]
    fn refuses_unknown_keys_and_other_stores() {
        let misspelt = MINIMAL.replace("client_id", "clientid");
        let error = Config::parse(&misspelt, Path::new("c.toml")).unwrap_err();
        assert!(error.to_string().contains("c.toml"), "{error}");

        let postgres = MINIMAL.replace("sqlite://jit.db", "mysql://x");
        let error = Config::parse(&postgres, Path::new("c.toml")).unwrap_err();
        assert!(error.to_string().contains("sqlite://"), "{error}");
    }
}
