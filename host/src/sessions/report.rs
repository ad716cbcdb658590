//! Telling the CA about sessions: an outbox the monitor fills, and a reporter task that sends
//! it, signed with the host key, until the CA has it.
//!
//! The monitor records each change and the list of sessions it watches in the [`Outbox`] under
//! one lock, so a report never lists a session as gone whose termination it has not carried
//! yet. Changes leave the outbox only once the CA answered; a report the CA recorded but whose
//! answer was lost is sent again, and the CA records each change once. The reporter runs apart
//! from the monitor, so a slow or unreachable CA never delays ending a session.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_proto::sessions::{
    SessionEvent, SessionReport, HOST_SESSIONS_NAMESPACE, MAX_LIVE_SESSIONS, MAX_REPORT_EVENTS,
};
use ssh_key::PrivateKey;
use tokio::sync::Notify;

use crate::ca::{new_nonce, sign_statement, CaClient, CaError};
use crate::run::Backoff;

/// Changes sent in one report at first: a few kilobytes, well inside the CA's body limit. A
/// report the CA finds too large is sent again in halves.
const REPORT_BATCH: usize = 16;

/// Changes kept while the CA is unreachable; beyond it the oldest go (the CA then settles
/// those sessions from the live list of the next report).
const MAX_PENDING: usize = 10_000;

/// What is waiting to be told to the CA.
#[derive(Debug, Default)]
pub struct Outbox {
    events: VecDeque<SessionEvent>,
    live: Vec<String>,
    /// The live list changed since the CA last heard it.
    live_changed: bool,
    dropped: u64,
}

impl Outbox {
    /// Queues a change.
    pub fn push(&mut self, event: SessionEvent) {
        if self.events.len() >= MAX_PENDING {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Replaces the list of watched sessions.
    pub fn set_live(&mut self, mut live: Vec<String>) {
        live.sort();
        live.truncate(MAX_LIVE_SESSIONS);
        if live != self.live {
            self.live = live;
            self.live_changed = true;
        }
    }

    /// Whether there is anything to send.
    pub fn has_news(&self) -> bool {
        self.live_changed || !self.events.is_empty()
    }

    /// The next report's content: the oldest changes (up to `batch`, and never more than
    /// [`MAX_REPORT_EVENTS`]) and the live list.
    fn next(&self, batch: usize) -> (Vec<SessionEvent>, Vec<String>) {
        let events = self
            .events
            .iter()
            .take(batch.min(MAX_REPORT_EVENTS))
            .cloned()
            .collect();
        (events, self.live.clone())
    }

    /// Forgets what the CA accepted: the first `sent` changes, and the live list if it is
    /// still the one sent.
    fn accepted(&mut self, sent: usize, live: &[String]) {
        let sent = sent.min(self.events.len());
        self.events.drain(..sent);
        if self.live == live {
            self.live_changed = false;
        }
    }
}

/// The outbox and the bell the monitor rings when it added something.
#[derive(Debug, Clone, Default)]
pub struct Mailbox {
    /// The content.
    pub outbox: Arc<Mutex<Outbox>>,
    /// Rung after each change.
    pub bell: Arc<Notify>,
}

impl Mailbox {
    /// Changes the outbox under its lock, then rings when there is news.
    pub fn update(&self, change: impl FnOnce(&mut Outbox)) {
        let news = match self.outbox.lock() {
            Ok(mut outbox) => {
                change(&mut outbox);
                outbox.has_news()
            }
            Err(_) => false,
        };
        if news {
            self.bell.notify_one();
        }
    }
}

/// Sends the outbox to the CA whenever it has news, forever. Each attempt is bounded by the
/// client's timeouts; failures back off up to [`crate::run::MAX_BACKOFF`].
pub async fn reporter(
    ca: CaClient,
    host_key: PrivateKey,
    name: String,
    mailbox: Mailbox,
    clock: fn() -> DateTime<Utc>,
) {
    let mut backoff = Backoff::default();
    let mut batch = REPORT_BATCH;
    loop {
        let pending = mailbox
            .outbox
            .lock()
            .map(|outbox| outbox.has_news().then(|| outbox.next(batch)))
            .unwrap_or(None);
        let Some((events, live)) = pending else {
            mailbox.bell.notified().await;
            continue;
        };

        let report = SessionReport {
            name: name.clone(),
            signed_at: clock().timestamp(),
            nonce: new_nonce(),
            events,
            live,
        };
        let sent = match sign_statement(&host_key, HOST_SESSIONS_NAMESPACE, &report) {
            Ok(signed) => ca.report_sessions(&signed).await,
            Err(error) => Err(error),
        };
        match sent {
            Ok(answer) => {
                backoff.reset();
                if answer.refused > 0 {
                    tracing::warn!(
                        refused = answer.refused,
                        "the CA refused session events: their certificates are not as it issued them"
                    );
                }
                tracing::debug!(
                    recorded = answer.recorded,
                    known = answer.known,
                    closed = answer.closed,
                    "sessions reported"
                );
                if let Ok(mut outbox) = mailbox.outbox.lock() {
                    outbox.accepted(report.events.len(), &report.live);
                    if outbox.dropped > 0 {
                        tracing::warn!(
                            dropped = outbox.dropped,
                            "session changes were dropped while the CA was unreachable"
                        );
                        outbox.dropped = 0;
                    }
                }
            }
            Err(CaError::Rejected { status: 413, .. }) if batch > 1 => {
                batch = (batch / 2).max(1);
                tracing::warn!(
                    batch,
                    "session report too large for the CA; sending fewer changes at once"
                );
            }
            Err(error) => {
                let pause: Duration = backoff.next_pause();
                tracing::warn!(%error, retry_in_secs = pause.as_secs(), "session report failed; kept for the next attempt");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use jit_proto::sessions::{ReportedSession, SessionChange};

    use super::*;

    fn event(id: &str) -> SessionEvent {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        SessionEvent {
            change: SessionChange::Started,
            at,
            session: ReportedSession {
                session_id: id.into(),
                unix_user: "root".into(),
                serial: 1,
                key_id: "a/g-1/1".into(),
                source_address: None,
                tty: None,
                started_at: at,
                valid_before: at,
            },
        }
    }

    #[test]
    fn changes_leave_only_once_accepted() {
        let mut outbox = Outbox::default();
        outbox.push(event("s-1"));
        outbox.set_live(vec!["s-1".into()]);

        let (events, live) = outbox.next(REPORT_BATCH);
        outbox.push(event("s-2"));
        outbox.set_live(vec!["s-2".into(), "s-1".into()]);
        outbox.accepted(events.len(), &live);

        // s-2 and the newer live list are still to be sent.
        assert!(outbox.has_news());
        let (events, live) = outbox.next(REPORT_BATCH);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].session.session_id, "s-2");
        assert_eq!(live, ["s-1", "s-2"]);
        outbox.accepted(events.len(), &live);
        assert!(!outbox.has_news());
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_changes() {
        let mut outbox = Outbox::default();
        for number in 0..MAX_PENDING + 3 {
            outbox.push(event(&format!("s-{number}")));
        }

        assert_eq!(outbox.events.len(), MAX_PENDING);
        assert_eq!(outbox.dropped, 3);
        assert_eq!(outbox.events[0].session.session_id, "s-3");
    }
}
