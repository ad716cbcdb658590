//! Webhook notifications: new pending requests, approvals and denials, break-glass activations,
//! and break-glass grants that ended without review.
//!
//! Each delivery is a JSON object with a `text` field (so a Slack-style incoming webhook shows
//! it) and the event's details. The body is signed with HMAC-SHA256 over
//! `<timestamp>.<body>`; the receiver finds the timestamp in `X-Jit-Timestamp` and the signature,
//! hex-encoded, in `X-Jit-Signature: sha256=<hex>`. Deliveries run in the background with a
//! per-attempt timeout and retries with back-off; a failing receiver is logged and never blocks
//! or fails a request.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// How many deliveries may wait; beyond that new ones are dropped (and logged).
const QUEUE_DEPTH: usize = 1024;

/// Attempts per delivery.
const ATTEMPTS: u32 = 4;

/// One notification on its way.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Where to.
    pub url: String,
    /// `request_pending`, `request_approved`, `request_denied`, `break_glass`,
    /// `break_glass_unreviewed`, `request_expired`.
    pub event: &'static str,
    /// One line for humans.
    pub text: String,
    /// The details.
    pub details: Value,
}

/// Sends notifications in the background.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Notification>,
    /// Default channel, for events without a more specific one.
    default_url: Option<String>,
}

impl Notifier {
    /// Starts the delivery task. `secret` keys the signatures; `timeout` bounds each attempt.
    pub fn start(
        default_url: Option<String>,
        secret: Zeroizing<String>,
        timeout: Duration,
    ) -> Result<Notifier, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| format!("cannot build the webhook client: {error}"))?;
        let (queue, mut receiver) = mpsc::channel::<Notification>(QUEUE_DEPTH);
        let secret = Arc::new(secret);

        tokio::spawn(async move {
            while let Some(notification) = receiver.recv().await {
                let http = http.clone();
                let secret = Arc::clone(&secret);
                // Each delivery retries on its own, so one dead receiver delays nobody else.
                tokio::spawn(async move {
                    deliver(&http, secret.as_bytes(), &notification).await;
                });
            }
        });
        Ok(Notifier { queue, default_url })
    }

    /// The default channel URL.
    pub fn default_url(&self) -> Option<&str> {
        self.default_url.as_deref()
    }

    /// Queues a notification; never waits.
    pub fn send(&self, notification: Notification) {
        let event = notification.event;
        if self.queue.try_send(notification).is_err() {
            tracing::warn!(event, "webhook queue full; notification dropped");
        }
    }
}

/// The body and headers of one delivery, signed.
pub fn signed_body(secret: &[u8], timestamp: i64, notification: &Notification) -> (String, String) {
    let body = json!({
        "event": notification.event,
        "text": notification.text,
        "details": notification.details,
    })
    .to_string();
    (body.clone(), signature(secret, timestamp, &body))
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

async fn deliver(http: &reqwest::Client, secret: &[u8], notification: &Notification) {
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        let timestamp = chrono::Utc::now().timestamp();
        let (body, signature) = signed_body(secret, timestamp, notification);
        let result = http
            .post(&notification.url)
            .header("content-type", "application/json")
            .header("x-jit-timestamp", timestamp.to_string())
            .header("x-jit-signature", signature)
            .body(body)
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(event = notification.event, attempt, "webhook delivered");
                return;
            }
            Ok(response) => tracing::warn!(
                event = notification.event,
                attempt,
                status = response.status().as_u16(),
                "webhook receiver refused the notification"
            ),
            Err(error) => tracing::warn!(
                event = notification.event,
                attempt,
                error = %error,
                "webhook delivery failed"
            ),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::error!(event = notification.event, "webhook given up after retries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_and_body() {
        let notification = Notification {
            url: "http://127.0.0.1:9/hook".into(),
            event: "request_pending",
            text: "alice asks for db-root on db-1".into(),
            details: json!({ "request_id": "r-1" }),
        };

        let (body, signature) = signed_body(b"secret", 1_800_000_000, &notification);

        assert!(body.contains("\"text\":\"alice asks for db-root on db-1\""));
        assert!(signature.starts_with("sha256=") && signature.len() == 7 + 64);
        assert_eq!(signature, super::signature(b"secret", 1_800_000_000, &body));
        assert_ne!(signature, super::signature(b"secret", 1_800_000_001, &body));
        assert_ne!(signature, super::signature(b"other", 1_800_000_000, &body));
    }
}
