//! Flood control: token-bucket rate limits per client address and per verified identity.
//!
//! Both run in one middleware in front of every `/v1` route. The per-address limit comes first,
//! before the bearer token is even looked at, so a flood of junk tokens costs one hash-map
//! lookup each instead of a signature check. The per-identity limit keeps one person (or one
//! stolen token) from monopolising the CA from many addresses: it looks up the budget of the
//! identity the token claims, but spends it only once the handler has verified the token, so
//! nobody can exhaust someone else's budget with forged tokens. Either limit answers 429 with
//! `Retry-After` and the standard error body.
//!
//! IPv6 clients are counted by their /64 prefix: a single host usually holds a whole /64 and
//! could otherwise rotate through addresses for free.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use jit_proto::ErrorBody;
use serde::Deserialize;

use crate::identity::UnverifiedClaims;

/// The `[limits]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained requests per minute from one client address (IPv6: one /64).
    #[serde(default = "default_per_address_per_minute")]
    pub per_address_per_minute: u32,
    /// Requests one address may send at once before the sustained rate applies.
    #[serde(default = "default_per_address_burst")]
    pub per_address_burst: u32,
    /// Sustained authenticated requests per minute from one identity (issuer and subject).
    #[serde(default = "default_per_identity_per_minute")]
    pub per_identity_per_minute: u32,
    /// Authenticated requests one identity may send at once.
    #[serde(default = "default_per_identity_burst")]
    pub per_identity_burst: u32,
    /// Most addresses and identities tracked at once; past it, new ones are refused until
    /// idle entries can be dropped (a flood from very many sources fails closed).
    #[serde(default = "default_max_tracked")]
    pub max_tracked: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_address_per_minute: default_per_address_per_minute(),
            per_address_burst: default_per_address_burst(),
            per_identity_per_minute: default_per_identity_per_minute(),
            per_identity_burst: default_per_identity_burst(),
            max_tracked: default_max_tracked(),
        }
    }
}

impl LimitsConfig {
    /// Refuses limits of zero, which would lock everyone out.
    pub fn check(&self) -> Result<(), String> {
        let rates = [
            self.per_address_per_minute,
            self.per_address_burst,
            self.per_identity_per_minute,
            self.per_identity_burst,
        ];
        if rates.contains(&0) || self.max_tracked == 0 {
            return Err("[limits] values must be greater than zero".into());
        }
        Ok(())
    }
}

fn default_per_address_per_minute() -> u32 {
    300
}

fn default_per_address_burst() -> u32 {
    60
}

fn default_per_identity_per_minute() -> u32 {
    60
}

fn default_per_identity_burst() -> u32 {
    20
}

fn default_max_tracked() -> usize {
    100_000
}

/// One bucket: how many requests it holds now, as of when.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by `K`, all with the same rate and burst.
#[derive(Debug)]
pub struct TokenBuckets<K> {
    per_second: f64,
    burst: f64,
    max_tracked: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    /// Buckets refilling at `per_minute` and holding at most `burst` requests.
    pub fn new(per_minute: u32, burst: u32, max_tracked: usize) -> Self {
        TokenBuckets {
            per_second: f64::from(per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
            max_tracked,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket at `now`, or says how long to wait for one.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.spend(key, now, true)
    }

    /// Says whether `key`'s bucket holds a request at `now`, without taking it.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.spend(key, now, false)
    }

    fn spend(&self, key: &K, now: Instant, take: bool) -> Result<(), Duration> {
        // A panic elsewhere while holding the lock leaves the counts usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());

        if !buckets.contains_key(key) && buckets.len() >= self.max_tracked {
            // Full buckets carry no information: dropping them forgets nothing.
            buckets.retain(|_, bucket| self.refilled(bucket, now) < self.burst);
            if buckets.len() >= self.max_tracked {
                return Err(Duration::from_secs(1));
            }
        }

        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            if take {
                bucket.tokens -= 1.0;
            }
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.per_second;
        Err(Duration::from_secs_f64(wait))
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }
}

/// The two limits the HTTP front applies.
#[derive(Debug)]
pub struct RateLimits {
    by_address: TokenBuckets<IpAddr>,
    by_identity: TokenBuckets<IdentityKey>,
}

impl RateLimits {
    /// Limits as configured.
    pub fn new(config: &LimitsConfig) -> RateLimits {
        RateLimits {
            by_address: TokenBuckets::new(
                config.per_address_per_minute,
                config.per_address_burst,
                config.max_tracked,
            ),
            by_identity: TokenBuckets::new(
                config.per_identity_per_minute,
                config.per_identity_burst,
                config.max_tracked,
            ),
        }
    }

    /// Admits one request from `address` at `now`.
    pub fn admit_address(&self, address: IpAddr, now: Instant) -> Result<(), RateLimited> {
        let client = client_key(address);
        self.by_address
            .take(&client, now)
            .map_err(|retry_after| RateLimited::new(retry_after, "address", &client.to_string()))
    }

    /// Says whether the identity `(issuer, subject)` has a request left at `now`.
    pub fn check_identity(&self, identity: &IdentityKey, now: Instant) -> Result<(), RateLimited> {
        self.by_identity
            .peek(identity, now)
            .map_err(|retry_after| RateLimited::new(retry_after, "identity", &identity.1))
    }

    /// Spends one request of a verified identity at `now`. A request already under way when
    /// the budget ran out still counts, so the next one waits longer.
    pub fn charge_identity(&self, identity: &IdentityKey, now: Instant) {
        let _ = self.by_identity.take(identity, now);
    }
}

/// An identity as rate limits count it: `(issuer, subject)`.
pub type IdentityKey = (String, String);

/// The address a client is counted under: itself for IPv4, its /64 for IPv6.
fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
        v4 => v4,
    }
}

/// A request refused because its client went over a rate limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many requests from this {scope}; retry in {retry_after_secs} s")]
pub struct RateLimited {
    /// Whole seconds until a request would be admitted (at least one).
    pub retry_after_secs: u64,
    /// Which limit: `address` or `identity`.
    pub scope: &'static str,
}

impl RateLimited {
    fn new(retry_after: Duration, scope: &'static str, who: &str) -> RateLimited {
        let retry_after_secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        tracing::warn!(
            target: "security",
            scope,
            client = who,
            retry_after_secs,
            "rate limited"
        );
        RateLimited {
            retry_after_secs,
            scope,
        }
    }
}

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: "rate_limited".into(),
            message: self.to_string(),
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        response
    }
}

/// Middleware: applies both limits to every `/v1` route. `/healthz` and `/metrics` stay
/// reachable for monitoring.
pub async fn enforce(
    State(limits): State<Arc<RateLimits>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let now = Instant::now();
    if let Err(limited) = limits.admit_address(peer.ip(), now) {
        return limited.into_response();
    }

    // Read without trust, to find the budget; spent below only if the token verified.
    let claimed = super::bearer_token(request.headers()).and_then(|token| {
        let claims = UnverifiedClaims::peek(token.expose());
        claims.issuer.zip(claims.subject)
    });
    if let Some(identity) = &claimed {
        if let Err(limited) = limits.check_identity(identity, now) {
            return limited.into_response();
        }
    }

    let response = next.run(request).await;
    let verified = !matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE
    );
    if let (Some(identity), true) = (&claimed, verified) {
        limits.charge_identity(identity, Instant::now());
    }
    response
}

/// Wraps `router` in the rate limits of `config`.
pub fn apply(router: axum::Router, config: &LimitsConfig) -> axum::Router {
    let limits = Arc::new(RateLimits::new(config));
    router.layer(axum::middleware::from_fn_with_state(limits, enforce))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_refused_until_the_bucket_refills() {
        let buckets = TokenBuckets::new(60, 3, 10);
        let start = Instant::now();

        for _ in 0..3 {
            assert_eq!(buckets.take(&"a", start), Ok(()));
        }
        let wait = buckets.take(&"a", start).unwrap_err();

        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert_eq!(
            buckets.take(&"b", start),
            Ok(()),
            "other keys are unaffected"
        );
        assert_eq!(buckets.take(&"a", start + Duration::from_secs(1)), Ok(()));
        assert!(buckets.take(&"a", start + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn peeking_spends_nothing() {
        let buckets = TokenBuckets::new(60, 1, 10);
        let start = Instant::now();

        for _ in 0..5 {
            assert_eq!(buckets.peek(&"a", start), Ok(()));
        }
        buckets.take(&"a", start).unwrap();

        assert!(buckets.peek(&"a", start).is_err());
    }

    #[test]
    fn tracking_is_bounded_and_idle_entries_are_dropped() {
        let buckets = TokenBuckets::new(60, 1, 2);
        let start = Instant::now();
        buckets.take(&1, start).unwrap();
        buckets.take(&2, start).unwrap();

        assert!(
            buckets.take(&3, start).is_err(),
            "full table refuses newcomers"
        );
        // After a while both entries are full again, so they can be forgotten.
        assert_eq!(buckets.take(&3, start + Duration::from_secs(5)), Ok(()));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();

        assert_eq!(client_key(one), client_key(other));
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn refusal_carries_retry_after_and_the_error_body() {
        let response = RateLimited {
            retry_after_secs: 7,
            scope: "address",
        }
        .into_response();

        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
