//! The load generator: keep-alive HTTP/1.1 connections, one per worker, no pool in between.
//!
//! Two shapes of load. Closed: C workers each send their next request as soon as the previous
//! one is answered, which finds the throughput. Open: requests are due at a fixed rate whatever
//! the server does, and each latency is counted from the moment its request was due, not from
//! when a free connection sent it, so a slow server cannot hide its queue by slowing the load
//! (coordinated omission).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::stats::Latencies;

/// Where the load goes.
pub struct Target {
    /// The server's address.
    pub address: SocketAddr,
    /// Present for HTTPS: the connector and the name the certificate must carry.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// A plain HTTP target.
    pub fn plain(address: SocketAddr) -> Target {
        Target { address, tls: None }
    }
}

/// One request, built before the clock starts so building it is not measured.
#[derive(Clone)]
pub struct PreparedRequest {
    /// Request path.
    pub path: &'static str,
    /// `Authorization` header, when the server wants a bearer token.
    pub authorization: Option<HeaderValue>,
    /// JSON body.
    pub body: Bytes,
}

type Sender = SendRequest<Full<Bytes>>;

/// How long after a phase's time limit an answer already asked for is still awaited.
const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// Opens one keep-alive connection.
async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(target.address)
        .await
        .with_context(|| format!("connecting to {}", target.address))?;
    stream.set_nodelay(true)?;

    match &target.tls {
        None => http1(stream).await,
        Some((connector, server_name)) => {
            let stream = connector
                .connect(server_name.clone(), stream)
                .await
                .context("TLS handshake")?;
            http1(stream).await
        }
    }
}

/// HTTP/1.1 over `stream`, its connection driven by a task of its own.
async fn http1<S>(stream: S) -> anyhow::Result<Sender>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole answer; `Err` holds why it is not the expected one.
async fn exchange(
    sender: &mut Sender,
    method: Method,
    request: &PreparedRequest,
    host: &str,
) -> Result<(StatusCode, Bytes), String> {
    sender.ready().await.map_err(|error| error.to_string())?;

    let mut builder = Request::builder()
        .method(method)
        .uri(request.path)
        .header(HOST, host)
        .header(CONTENT_TYPE, "application/json");
    if let Some(authorization) = &request.authorization {
        builder = builder.header(AUTHORIZATION, authorization.clone());
    }
    let outgoing = builder
        .body(Full::new(request.body.clone()))
        .map_err(|error| error.to_string())?;

    let response = sender
        .send_request(outgoing)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// One request on a fresh connection, for set-up and checks rather than load.
pub async fn once(
    target: &Target,
    method: Method,
    request: &PreparedRequest,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = connect(target).await?;
    let host = target.address.to_string();
    exchange(&mut sender, method, request, &host)
        .await
        .map_err(anyhow::Error::msg)
}

/// What a phase of load measured.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Requests answered with the expected status.
    pub completed: usize,
    /// Requests answered otherwise, or not answered.
    pub errors: usize,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Latency of each completed request.
    pub latencies: Latencies,
    /// For open load: how late the load itself sent requests that had a free connection
    /// (timer granularity), 99th percentile.
    pub send_lag_p99: Duration,
}

impl LoadOutcome {
    /// Completed requests per second.
    pub fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// When each request is due.
#[derive(Clone, Copy)]
pub enum Schedule {
    /// As soon as the worker's previous request is answered (closed load).
    Closed,
    /// Request `i` at `i / rate` seconds after the start (open load).
    Rate(f64),
}

struct WorkerResult {
    latencies: Vec<Duration>,
    send_lags: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    finished: Instant,
}

/// Runs one phase: `connections` workers send `requests` as `schedule` says. Closed load stops
/// sending at `time_limit`; open load counts answers still missing then as errors.
pub async fn run(
    target: Arc<Target>,
    requests: Arc<Vec<PreparedRequest>>,
    connections: usize,
    expected: StatusCode,
    schedule: Schedule,
    time_limit: Duration,
) -> anyhow::Result<LoadOutcome> {
    // Connect everything first: handshakes are not part of the measurement.
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(&target).await?);
    }

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + time_limit;
    let mut workers = Vec::with_capacity(connections);
    for sender in senders {
        let target = Arc::clone(&target);
        let requests = Arc::clone(&requests);
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(worker(
            sender, target, requests, next, expected, schedule, started, deadline,
        )));
    }

    let mut outcome = LoadOutcome::default();
    let mut latencies = Vec::with_capacity(requests.len());
    let mut send_lags = Vec::new();
    let mut last_finish = started;
    for handle in workers {
        let result = handle.await.context("load worker panicked")?;
        outcome.errors += result.errors;
        if outcome.first_error.is_none() {
            outcome.first_error = result.first_error;
        }
        latencies.extend(result.latencies);
        send_lags.extend(result.send_lags);
        last_finish = last_finish.max(result.finished);
    }
    // Requests never sent because the time ran out.
    let attempted = next.load(Ordering::Relaxed).min(requests.len());
    if let Schedule::Rate(_) = schedule {
        outcome.errors += requests.len() - attempted;
    }

    outcome.completed = latencies.len();
    outcome.elapsed = last_finish - started;
    outcome.latencies = Latencies::new(latencies);
    outcome.send_lag_p99 = Latencies::new(send_lags).quantile(0.99);
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    mut sender: Sender,
    target: Arc<Target>,
    requests: Arc<Vec<PreparedRequest>>,
    next: Arc<AtomicUsize>,
    expected: StatusCode,
    schedule: Schedule,
    started: Instant,
    deadline: Instant,
) -> WorkerResult {
    let host = target.address.to_string();
    let mut result = WorkerResult {
        latencies: Vec::new(),
        send_lags: Vec::new(),
        errors: 0,
        first_error: None,
        finished: started,
    };

    loop {
        if Instant::now() >= deadline {
            break;
        }
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(request) = requests.get(index) else {
            break;
        };

        let due = match schedule {
            Schedule::Closed => Instant::now(),
            Schedule::Rate(rate) => {
                let due = started + Duration::from_secs_f64(index as f64 / rate);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                    result
                        .send_lags
                        .push(Instant::now().saturating_duration_since(due));
                }
                due
            }
        };

        // A server that stops answering must not hang the bench.
        let give_up = (deadline + ANSWER_GRACE).into();
        let answer =
            tokio::time::timeout_at(give_up, exchange(&mut sender, Method::POST, request, &host))
                .await
                .unwrap_or_else(|_| Err("no answer before the phase's time limit".into()));
        let failure = match answer {
            Ok((status, _)) if status == expected => None,
            Ok((status, body)) => Some(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )),
            Err(error) => Some(error),
        };
        match failure {
            None => result.latencies.push(due.elapsed()),
            Some(failure) => {
                result.errors += 1;
                result.first_error.get_or_insert(failure);
                // The connection may be gone; open another one and go on.
                if sender.is_closed() {
                    match connect(&target).await {
                        Ok(fresh) => sender = fresh,
                        Err(_) => break,
                    }
                }
            }
        }
        result.finished = Instant::now();
    }
    result
}
