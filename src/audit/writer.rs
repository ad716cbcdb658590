//! The [`Auditor`]: the one way events enter the log.
//!
//! A single writer task owns the chain head (sequence number and hash of the last record). It
//! takes every job waiting in its queue, seals their events onto the chain, writes them all in
//! one store transaction, and only after that commit answers each caller. Callers therefore
//! learn that their record is durable, yet many callers share one flush: throughput grows with
//! concurrency instead of being capped at one flush per record.
//!
//! The head lives in the store (it is the last record), so after a restart or a crash the
//! writer resumes from exactly what was committed. A failed commit answers every job of the
//! group with the error and re-reads the head, so no caller is told "recorded" for a record
//! that is not on disk.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_proto::audit::{self, AuditPublicKey, ChainHash, Checkpoint, ExportLine, SealedRecord};
use tokio::sync::{mpsc, oneshot};

use super::{AuditError, AuditEvent, AuditKey, JsonlSink};
use crate::store::audit::{AuditFilter, AuditRow, AuditStore};

/// Most jobs committed in one transaction.
const MAX_GROUP: usize = 512;

/// Jobs that may wait for the writer before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

/// Proof that events were committed: the records they became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditReceipt {
    /// The first record written.
    pub first_seq: u64,
    /// The last record written.
    pub last_seq: u64,
    /// Chain hash after the last record.
    pub hash: ChainHash,
}

enum Job {
    Append {
        events: Vec<AuditEvent>,
        now: DateTime<Utc>,
        reply: oneshot::Sender<Result<AuditReceipt, AuditError>>,
    },
    Checkpoint {
        now: DateTime<Utc>,
        reply: oneshot::Sender<Result<Checkpoint, AuditError>>,
    },
}

/// The handle services use to record events, and auditors' routes use to read the log.
pub struct Auditor {
    jobs: mpsc::Sender<Job>,
    store: Arc<dyn AuditStore>,
    public_key: AuditPublicKey,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Auditor")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// Reads the chain head from `store`, checks it against the newest checkpoint, and starts
    /// the writer task. Refuses a log that ends before its own newest checkpoint, or whose
    /// record there differs from it: that log was truncated or rewritten.
    pub async fn start(
        store: Arc<dyn AuditStore>,
        key: AuditKey,
        sink: Option<JsonlSink>,
    ) -> Result<Auditor, AuditError> {
        let head = match store.audit_head().await? {
            Some((seq, hash)) => (seq, parse_hash(seq, &hash)?),
            None => (0, ChainHash::GENESIS),
        };
        let last_checkpoint = store.audit_checkpoints().await?.pop();
        if let Some(checkpoint) = &last_checkpoint {
            check_against(store.as_ref(), checkpoint, head.0).await?;
        }

        let public_key = key.public_key().clone();
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer {
            store: Arc::clone(&store),
            key,
            sink,
            head,
            last_checkpoint,
        };
        tokio::spawn(writer.run(queue));
        Ok(Auditor {
            jobs,
            store,
            public_key,
        })
    }

    /// Records one event; returns once its record is committed and flushed.
    pub async fn record(
        &self,
        event: AuditEvent,
        now: DateTime<Utc>,
    ) -> Result<AuditReceipt, AuditError> {
        self.record_all(vec![event], now).await
    }

    /// Records several events as consecutive records in one commit: all of them or none.
    pub async fn record_all(
        &self,
        events: Vec<AuditEvent>,
        now: DateTime<Utc>,
    ) -> Result<AuditReceipt, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Append { events, now, reply })
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        answer.await.map_err(|_| AuditError::WriterStopped)?
    }

    /// The newest checkpoint, signing a new one at `now` when records were added since.
    pub async fn checkpoint(&self, now: DateTime<Utc>) -> Result<Checkpoint, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Checkpoint { now, reply })
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        answer.await.map_err(|_| AuditError::WriterStopped)?
    }

    /// The audit public key, which verifies checkpoints.
    pub fn public_key(&self) -> &AuditPublicKey {
        &self.public_key
    }

    /// The store, for reading records.
    pub fn store(&self) -> &dyn AuditStore {
        self.store.as_ref()
    }

    /// Signs a checkpoint every `interval` when the log has grown: the background loop at the
    /// edge, so it reads the clock itself.
    pub fn spawn_checkpoints(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(error) = self.checkpoint(Utc::now()).await {
                    tracing::error!(target: "security", %error, "audit checkpoint failed");
                }
            }
        })
    }
}

fn parse_hash(seq: u64, text: &str) -> Result<ChainHash, AuditError> {
    ChainHash::parse(text)
        .ok_or_else(|| AuditError::Damaged(format!("record {seq} has an unreadable hash")))
}

/// The stored log must reach `checkpoint` and agree with it there.
async fn check_against(
    store: &dyn AuditStore,
    checkpoint: &Checkpoint,
    head_seq: u64,
) -> Result<(), AuditError> {
    let count = checkpoint.record_count;
    if count > head_seq {
        return Err(AuditError::Damaged(format!(
            "the log ends at record {head_seq}, but a checkpoint covers {count} records"
        )));
    }
    if count == 0 {
        return Ok(());
    }
    let filter = AuditFilter {
        after_seq: count - 1,
        limit: 1,
        ..AuditFilter::default()
    };
    let rows = store.audit_rows(&filter).await?;
    match rows.first() {
        Some(row) if row.seq == count && row.hash == checkpoint.head_hash => Ok(()),
        _ => Err(AuditError::Damaged(format!(
            "record {count} differs from the checkpoint signed at {}",
            checkpoint.signed_at
        ))),
    }
}

/// The writer task's state: the only holder of the chain head.
struct Writer {
    store: Arc<dyn AuditStore>,
    key: AuditKey,
    sink: Option<JsonlSink>,
    head: (u64, ChainHash),
    last_checkpoint: Option<Checkpoint>,
}

/// What a job in a group will be answered, once the group is committed.
enum Answer {
    Appended(
        oneshot::Sender<Result<AuditReceipt, AuditError>>,
        AuditReceipt,
    ),
    Refused(
        oneshot::Sender<Result<AuditReceipt, AuditError>>,
        AuditError,
    ),
    Checkpoint(oneshot::Sender<Result<Checkpoint, AuditError>>),
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
            self.commit(std::mem::take(&mut group)).await;
        }
    }

    /// Seals every job's events onto the chain, writes them in one transaction, then answers.
    async fn commit(&mut self, group: Vec<Job>) {
        let (mut seq, mut hash) = self.head;
        let mut rows = Vec::new();
        let mut answers = Vec::with_capacity(group.len());
        let mut checkpoint_time = None;

        for job in group {
            match job {
                Job::Append { events, now, reply } => match seal_all(&events, now, seq, &hash) {
                    Ok((sealed, last_hash)) if !sealed.is_empty() => {
                        let receipt = AuditReceipt {
                            first_seq: seq + 1,
                            last_seq: seq + sealed.len() as u64,
                            hash: last_hash,
                        };
                        (seq, hash) = (receipt.last_seq, receipt.hash);
                        rows.extend(sealed);
                        answers.push(Answer::Appended(reply, receipt));
                    }
                    Ok(_) => answers.push(Answer::Refused(
                        reply,
                        AuditError::Encode("no events to record".into()),
                    )),
                    Err(error) => answers.push(Answer::Refused(reply, error)),
                },
                Job::Checkpoint { now, reply } => {
                    checkpoint_time = Some(now);
                    answers.push(Answer::Checkpoint(reply));
                }
            }
        }

        // A new checkpoint only when the head moved past the newest one.
        let stale = self
            .last_checkpoint
            .as_ref()
            .is_none_or(|checkpoint| checkpoint.record_count != seq);
        let checkpoint = checkpoint_time
            .filter(|_| stale)
            .map(|now| self.key.sign_checkpoint(seq, &hash, now));

        let written = if rows.is_empty() && checkpoint.is_none() {
            Ok(())
        } else {
            self.store
                .append_audit(&rows, checkpoint.as_ref())
                .await
                .map_err(AuditError::from)
        };

        match written {
            Ok(()) => {
                self.head = (seq, hash);
                if let Some(checkpoint) = checkpoint {
                    self.last_checkpoint = Some(checkpoint);
                }
                self.mirror(&rows, checkpoint_time.and(self.last_checkpoint.as_ref()));
                self.answer(answers, None);
            }
            Err(error) => {
                tracing::error!(target: "security", %error, records = rows.len(), "audit commit failed");
                self.answer(answers, Some(&error));
                self.reload_head().await;
            }
        }
    }

    fn answer(&self, answers: Vec<Answer>, failure: Option<&AuditError>) {
        // Every waiter of a failed group gets its own copy of the reason.
        let failed =
            || AuditError::CommitFailed(failure.map(ToString::to_string).unwrap_or_default());
        for answer in answers {
            match answer {
                Answer::Refused(reply, error) => {
                    let _ = reply.send(Err(error));
                }
                Answer::Appended(reply, receipt) => {
                    let _ = reply.send(failure.map_or(Ok(receipt), |_| Err(failed())));
                }
                Answer::Checkpoint(reply) => {
                    let checkpoint = match failure {
                        None => self.last_checkpoint.clone().ok_or_else(failed),
                        Some(_) => Err(failed()),
                    };
                    let _ = reply.send(checkpoint);
                }
            }
        }
    }

    fn mirror(&self, rows: &[AuditRow], checkpoint: Option<&Checkpoint>) {
        let Some(sink) = &self.sink else {
            return;
        };
        let mut lines: Vec<String> = rows
            .iter()
            .filter_map(|row| {
                let hash = ChainHash::parse(&row.hash)?;
                audit::exported_record(&row.body, &hash)
                    .ok()
                    .map(|value| value.to_string())
            })
            .collect();
        if let Some(checkpoint) = checkpoint {
            lines.push(ExportLine::checkpoint_line(checkpoint).to_string());
        }
        sink.send(lines);
    }

    /// After a failed commit, the store is the truth: take the head from it.
    async fn reload_head(&mut self) {
        match self.store.audit_head().await {
            Ok(Some((seq, hash))) => match parse_hash(seq, &hash) {
                Ok(hash) => self.head = (seq, hash),
                Err(error) => tracing::error!(target: "security", %error, "audit head unreadable"),
            },
            Ok(None) => self.head = (0, ChainHash::GENESIS),
            Err(error) => tracing::error!(target: "security", %error, "audit head unreadable"),
        }
    }
}

/// Seals `events` as the records after `(seq, hash)`.
fn seal_all(
    events: &[AuditEvent],
    now: DateTime<Utc>,
    mut seq: u64,
    hash: &ChainHash,
) -> Result<(Vec<AuditRow>, ChainHash), AuditError> {
    let mut hash = *hash;
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let (name, data) = split_event(event)?;
        seq += 1;
        let SealedRecord {
            seq: sealed_seq,
            body,
            hash: sealed_hash,
        } = audit::seal_record(seq, now, &name, data, &hash)
            .map_err(|error| AuditError::Encode(error.to_string()))?;
        hash = sealed_hash;
        rows.push(AuditRow {
            seq: sealed_seq,
            event: name,
            time: now,
            index: event.index(),
            body,
            hash: sealed_hash.to_string(),
        });
    }
    Ok((rows, hash))
}

/// An event's type name and its fields, as serialised.
pub(crate) fn split_event(event: &AuditEvent) -> Result<(String, serde_json::Value), AuditError> {
    let encoded =
        serde_json::to_value(event).map_err(|error| AuditError::Encode(error.to_string()))?;
    let serde_json::Value::Object(mut fields) = encoded else {
        return Err(AuditError::Encode("an event is not an object".into()));
    };
    let name = fields
        .remove("event")
        .and_then(|name| name.as_str().map(str::to_owned))
        .ok_or_else(|| AuditError::Encode("an event has no type".into()))?;
    let data = fields.remove("data").unwrap_or(serde_json::Value::Null);
    Ok((name, data))
}
