//! The accept loop in front of the router: how many connections may be open, how long a client
//! may take to say what it wants, and the optional TLS layer.
//!
//! A slow client costs the CA one connection slot, so both are bounded. Past
//! `[http] max_connections` a new connection is closed as soon as it is accepted: the client
//! learns at once that the CA is saturated instead of waiting in the kernel's backlog. Each
//! admitted connection has `[http] header_read_timeout_secs` to finish its TLS handshake, and
//! then again to send the headers of each request; an idle kept-alive connection is closed
//! after the same time. Request bodies and handlers are bounded by the router's own timeout.

pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::HttpConfig;

/// How long the accept loop pauses after a failed `accept` (out of file descriptors, for
/// example) before trying again, so the failure does not spin a core.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Least time between two log events about refused connections; a flood logs a count, not
/// a line per connection.
const SATURATION_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The limits the accept loop enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once (at least one).
    pub max_connections: usize,
    /// Time for the TLS handshake, and for the headers of each request.
    pub header_read_timeout: Duration,
    /// Longest wait for open connections to finish after shutdown was asked for.
    pub drain_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits of an `[http]` section. Connections are given the request timeout plus the
    /// header timeout to drain, the most a request admitted before shutdown can still take.
    pub fn from_config(http: &HttpConfig) -> Self {
        let header_read_timeout = Duration::from_secs(http.header_read_timeout_secs);
        ConnectionLimits {
            max_connections: http.max_connections.max(1),
            header_read_timeout,
            drain_timeout: Duration::from_secs(http.request_timeout_secs) + header_read_timeout,
        }
    }
}

/// Counts connections refused at the cap and reports them at most once per interval.
#[derive(Debug)]
struct SaturationReport {
    refused: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

impl SaturationReport {
    fn new() -> Self {
        SaturationReport {
            refused: AtomicU64::new(0),
            last_report: Mutex::new(None),
        }
    }

    /// Counts one refusal at `now`; returns the count to report when a report is due.
    fn refused_at(&self, now: Instant) -> Option<u64> {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut last_report = self
            .last_report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = last_report
            .is_none_or(|last| now.saturating_duration_since(last) >= SATURATION_REPORT_INTERVAL);
        if !due {
            return None;
        }
        *last_report = Some(now);
        Some(self.refused.swap(0, Ordering::Relaxed))
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish
/// for at most `limits.drain_timeout`.
///
/// With `tls`, every connection must complete a TLS handshake first. Each request carries
/// `ConnectInfo<SocketAddr>` with the peer's address, as the handlers and rate limits expect.
/// Returns an error only when the listener's own address cannot be read; failures of single
/// connections are logged and end that connection only.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local_addr = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let saturation = SaturationReport::new();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, %local_addr, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                    continue;
                }
            },
        };

        // Dropping the stream closes it: the client is told at once instead of being parked.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Some(refused) = saturation.refused_at(Instant::now()) {
                tracing::warn!(
                    target: "security",
                    refused,
                    max_connections = limits.max_connections,
                    "connection limit reached; new connections are closed"
                );
            }
            continue;
        };

        let connection = Connection {
            app: app.clone(),
            peer,
            header_read_timeout: limits.header_read_timeout,
            watcher: graceful.watcher(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            connection.run(stream, tls).await;
            drop(slot);
        });
    }

    drop(listener);
    tracing::info!(
        open_connections = graceful.count(),
        "shutting down; waiting for open connections"
    );
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_secs = limits.drain_timeout.as_secs(),
            "connections still open after the drain timeout; closing them"
        );
    }
    Ok(())
}

/// One accepted connection, before its transport is known.
struct Connection {
    app: Router,
    peer: SocketAddr,
    header_read_timeout: Duration,
    watcher: Watcher,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.serve_http(stream).await;
        };

        // The header timeout only starts once HTTP runs; a client that never finishes its
        // handshake must not hold the slot either.
        match tokio::time::timeout(self.header_read_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.serve_http(stream).await,
            Ok(Err(error)) => {
                tracing::debug!(peer = %self.peer, %error, "TLS handshake failed");
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out; connection closed");
            }
        }
    }

    async fn serve_http<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            peer,
            header_read_timeout,
            watcher,
        } = self;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });

        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(true);
        let connection = builder.serve_connection(TokioIo::new(io), service);

        match watcher.watch(connection).await {
            Ok(()) => {}
            Err(error) if error.is_timeout() => {
                tracing::debug!(
                    %peer,
                    timeout_secs = header_read_timeout.as_secs(),
                    "header read timeout; connection closed"
                );
            }
            Err(error) => tracing::debug!(%peer, %error, "connection ended with an error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_reported_once_per_interval_with_their_count() {
        let report = SaturationReport::new();
        let start = Instant::now();

        assert_eq!(report.refused_at(start), Some(1));
        assert_eq!(report.refused_at(start + Duration::from_secs(1)), None);
        assert_eq!(report.refused_at(start + Duration::from_secs(2)), None);
        let later = start + SATURATION_REPORT_INTERVAL;

        assert_eq!(report.refused_at(later), Some(3));
    }

    #[test]
    fn limits_follow_the_http_section() {
        let http = HttpConfig {
            max_connections: 0,
            header_read_timeout_secs: 4,
            request_timeout_secs: 15,
            ..HttpConfig::default()
        };

        let limits = ConnectionLimits::from_config(&http);

        assert_eq!(limits.max_connections, 1, "never zero slots");
        assert_eq!(limits.header_read_timeout, Duration::from_secs(4));
        assert_eq!(limits.drain_timeout, Duration::from_secs(19));
    }
}
