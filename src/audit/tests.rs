//! The writer against a real SQLite store: chaining, group commit, recovery, refusal of a
//! damaged log. Fixed instants and a fixed audit key.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_proto::audit::{ChainError, Checkpoint};

use super::verify::verify_store;
use super::*;
use crate::store::audit::{AuditFilter, AuditRow, AuditStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{StoreError, StoreResult};

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}

fn key() -> AuditKey {
    AuditKey::from_seed([42; 32])
}

fn rejected(number: usize) -> AuditEvent {
    AuditEvent::TokenRejected(TokenRejected {
        reason: format!("attempt {number}"),
        code: "invalid_token".into(),
        claimed_iss: None,
        claimed_sub: Some(format!("user-{number}")),
        client_address: "127.0.0.1".into(),
        user_agent: None,
    })
}

fn review(request_id: &str) -> AuditEvent {
    AuditEvent::Review(Review {
        request_id: request_id.into(),
        grant_id: None,
        reviewer: Actor {
            iss: "https://idp".into(),
            sub: "carol".into(),
            email: Some("carol@example.com".into()),
            groups: vec!["approvers".into()],
            amr: vec!["pwd".into()],
            auth_time: Some(at(-60)),
        },
        verdict: "approve".into(),
        comment: Some("ok".into()),
        approvals: 1,
        required_approvals: 1,
    })
}

/// A store that counts commits and can be told to fail the next one.
struct Counting {
    inner: SqliteStore,
    commits: AtomicUsize,
    fail_next: AtomicBool,
}

#[async_trait]
impl AuditStore for Counting {
    async fn audit_head(&self) -> StoreResult<Option<(u64, String)>> {
        self.inner.audit_head().await
    }

    async fn append_audit(
        &self,
        rows: &[AuditRow],
        checkpoint: Option<&Checkpoint>,
    ) -> StoreResult<()> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Query("disk full".into()));
        }
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.append_audit(rows, checkpoint).await
    }

    async fn audit_rows(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
        self.inner.audit_rows(filter).await
    }

    async fn audit_checkpoints(&self) -> StoreResult<Vec<Checkpoint>> {
        self.inner.audit_checkpoints().await
    }
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    let url = format!("sqlite://{}", dir.path().join("jit.db").display());
    SqliteStore::open(&url).await.unwrap()
}

async fn counting(dir: &tempfile::TempDir) -> Arc<Counting> {
    Arc::new(Counting {
        inner: open(dir).await,
        commits: AtomicUsize::new(0),
        fail_next: AtomicBool::new(false),
    })
}

#[tokio::test]
async fn records_chain_and_verify_with_their_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let auditor = Auditor::start(Arc::new(store.clone()), key(), None)
        .await
        .unwrap();

    let first = auditor.record(rejected(1), at(0)).await.unwrap();
    let pair = auditor
        .record_all(vec![review("r-1"), rejected(2)], at(1))
        .await
        .unwrap();
    let checkpoint = auditor.checkpoint(at(2)).await.unwrap();
    let again = auditor.checkpoint(at(3)).await.unwrap();

    assert_eq!((first.first_seq, first.last_seq), (1, 1));
    assert_eq!((pair.first_seq, pair.last_seq), (2, 3));
    assert_eq!(checkpoint.record_count, 3);
    assert_eq!(checkpoint.head_hash, pair.hash.to_string());
    assert_eq!(again, checkpoint, "nothing new, so no new signature");
    let verified = verify_store(&store, auditor.public_key()).await.unwrap();
    assert_eq!((verified.records, verified.covered), (3, 3));

    let rows = store
        .audit_rows(&AuditFilter {
            request_id: Some("r-1".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event, "review");
    assert_eq!(rows[0].index.user.as_deref(), Some("carol@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = counting(&dir).await;
    let auditor = Arc::new(
        Auditor::start(Arc::clone(&store) as Arc<dyn AuditStore>, key(), None)
            .await
            .unwrap(),
    );

    let mut tasks = Vec::new();
    for number in 0..300 {
        let auditor = Arc::clone(&auditor);
        tasks.push(tokio::spawn(async move {
            auditor.record(rejected(number), at(0)).await
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().unwrap().first_seq);
    }
    seqs.sort_unstable();

    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
    let commits = store.commits.load(Ordering::SeqCst);
    assert!(commits < 300, "{commits} commits for 300 records");
    auditor.checkpoint(at(1)).await.unwrap();
    verify_store(store.as_ref(), auditor.public_key())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_commit_answers_every_waiter_and_the_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = counting(&dir).await;
    let auditor = Auditor::start(Arc::clone(&store) as Arc<dyn AuditStore>, key(), None)
        .await
        .unwrap();
    auditor.record(rejected(1), at(0)).await.unwrap();

    store.fail_next.store(true, Ordering::SeqCst);
    let failed = auditor.record(rejected(2), at(1)).await;
    let next = auditor.record(rejected(3), at(2)).await.unwrap();

    assert!(
        matches!(failed, Err(AuditError::CommitFailed(_))),
        "{failed:?}"
    );
    assert_eq!(next.first_seq, 2, "the failed record took no number");
    auditor.checkpoint(at(3)).await.unwrap();
    verify_store(store.as_ref(), auditor.public_key())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_writer_resumes_from_the_store_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let auditor = Auditor::start(Arc::new(open(&dir).await), key(), None)
        .await
        .unwrap();
    auditor
        .record_all(vec![rejected(1), rejected(2)], at(0))
        .await
        .unwrap();
    auditor.checkpoint(at(1)).await.unwrap();
    drop(auditor);

    let store = open(&dir).await;
    let restarted = Auditor::start(Arc::new(store.clone()), key(), None)
        .await
        .unwrap();
    let receipt = restarted.record(rejected(3), at(2)).await.unwrap();

    assert_eq!(receipt.first_seq, 3);
    restarted.checkpoint(at(3)).await.unwrap();
    let verified = verify_store(&store, restarted.public_key()).await.unwrap();
    assert_eq!(verified.records, 3);
}

/// Runs `statements` as someone with the database file would: the triggers dropped first.
async fn tamper(store: &SqliteStore, statements: &[&str]) {
    let triggers = [
        "DROP TRIGGER audit_records_no_update",
        "DROP TRIGGER audit_records_no_delete",
    ];
    for statement in triggers.iter().chain(statements) {
        sqlx::query(statement).execute(store.pool()).await.unwrap();
    }
}

async fn three_records_and_a_checkpoint(dir: &tempfile::TempDir) -> (SqliteStore, Auditor) {
    let store = open(dir).await;
    let auditor = Auditor::start(Arc::new(store.clone()), key(), None)
        .await
        .unwrap();
    let events = vec![rejected(1), review("r-1"), rejected(3)];
    auditor.record_all(events, at(0)).await.unwrap();
    auditor.checkpoint(at(1)).await.unwrap();
    (store, auditor)
}

#[tokio::test]
async fn the_store_refuses_edits_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _auditor) = three_records_and_a_checkpoint(&dir).await;

    let update = sqlx::query("UPDATE audit_records SET body = '{}' WHERE seq = 1")
        .execute(store.pool())
        .await;
    let delete = sqlx::query("DELETE FROM audit_checkpoints")
        .execute(store.pool())
        .await;

    assert!(update.unwrap_err().to_string().contains("append-only"));
    assert!(delete.unwrap_err().to_string().contains("append-only"));
}

#[tokio::test]
async fn verification_names_the_tampered_record() {
    let cases: [(&[&str], Option<u64>); 4] = [
        (
            &["UPDATE audit_records SET body = replace(body, 'carol@', 'mallory@') WHERE seq = 2"],
            Some(2),
        ),
        (&["DELETE FROM audit_records WHERE seq = 2"], Some(2)),
        (
            &[
                "UPDATE audit_records SET seq = 100 WHERE seq = 2",
                "UPDATE audit_records SET seq = 2 WHERE seq = 3",
                "UPDATE audit_records SET seq = 3 WHERE seq = 100",
            ],
            Some(2),
        ),
        (&["DELETE FROM audit_records WHERE seq = 3"], Some(3)),
    ];
    for (statements, record) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (store, auditor) = three_records_and_a_checkpoint(&dir).await;
        tamper(&store, statements).await;

        let error = verify_store(&store, auditor.public_key())
            .await
            .unwrap_err();

        let AuditError::Chain(chain) = &error else {
            panic!("{statements:?}: {error}");
        };
        assert_eq!(chain.record(), record, "{statements:?}: {error}");
    }
}

#[tokio::test]
async fn verification_catches_a_filter_column_that_hides_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let (store, auditor) = three_records_and_a_checkpoint(&dir).await;
    tamper(
        &store,
        &["UPDATE audit_records SET request_id = 'r-other' WHERE seq = 2"],
    )
    .await;

    let error = verify_store(&store, auditor.public_key())
        .await
        .unwrap_err();

    assert!(error.to_string().contains("record 2"), "{error}");
}

#[tokio::test]
async fn a_log_cut_below_its_checkpoint_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let (store, auditor) = three_records_and_a_checkpoint(&dir).await;
    drop(auditor);
    tamper(&store, &["DELETE FROM audit_records WHERE seq = 3"]).await;

    let error = Auditor::start(Arc::new(store), key(), None)
        .await
        .unwrap_err();

    assert!(error.to_string().contains("ends at record 2"), "{error}");
}

#[tokio::test]
async fn a_checkpoint_from_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _auditor) = three_records_and_a_checkpoint(&dir).await;
    let other = AuditKey::from_seed([9; 32]);

    let error = verify_store(&store, other.public_key()).await.unwrap_err();

    assert!(matches!(
        error,
        AuditError::Chain(ChainError::BadCheckpoint { .. })
    ));
}

#[test]
fn the_audit_key_file_is_created_private_and_refused_when_exposed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit_key");

    let (created, was_created) = AuditKey::load_or_create(&path).unwrap();
    let (loaded, was_created_again) = AuditKey::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = AuditKey::load(&path).unwrap_err();

    assert!(was_created && !was_created_again);
    assert_eq!(created.public_key(), loaded.public_key());
    assert_eq!(mode & 0o077, 0);
    assert!(
        exposed.to_string().contains("readable by other users"),
        "{exposed}"
    );
}

#[test]
fn events_name_their_type_and_index_their_subject() {
    let (name, data) = writer::split_event(&review("r-9")).unwrap();

    assert_eq!(name, "review");
    assert_eq!(data["reviewer"]["email"], "carol@example.com");
    assert_eq!(data["comment"], "ok");
    assert_eq!(review("r-9").index().request_id.as_deref(), Some("r-9"));
}

/// Records per second with N concurrent writers, against a real file with
/// `synchronous = FULL`. Run with `cargo test --release -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    for writers in [1usize, 8, 64, 256] {
        let dir = tempfile::tempdir().unwrap();
        let store = counting(&dir).await;
        let auditor = Arc::new(
            Auditor::start(Arc::clone(&store) as Arc<dyn AuditStore>, key(), None)
                .await
                .unwrap(),
        );
        let per_writer = 2000 / writers.min(2000);
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let auditor = Arc::clone(&auditor);
            tasks.push(tokio::spawn(async move {
                for number in 0..per_writer {
                    auditor
                        .record(rejected(writer * 10_000 + number), at(0))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let records = writers * per_writer;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{writers:>4} writers: {records} records in {seconds:.2}s = {:.0} records/s, {} commits",
            records as f64 / seconds,
            store.commits.load(Ordering::SeqCst)
        );
    }
}

#[tokio::test]
async fn the_json_lines_copy_is_an_export_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("audit.jsonl");
    let sink = JsonlSink::open(&copy.display().to_string()).unwrap();
    let auditor = Auditor::start(Arc::new(open(&dir).await), key(), Some(sink))
        .await
        .unwrap();

    auditor
        .record_all(vec![rejected(1), review("r-1")], at(0))
        .await
        .unwrap();
    auditor.checkpoint(at(1)).await.unwrap();

    // The copy is written by its own thread, after the commit.
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&copy).unwrap_or_default();
        if text.lines().count() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let verified = jit_proto::audit::verify_export(
        &text,
        &jit_proto::audit::Kept::default(),
        auditor.public_key(),
        jit_proto::audit::Completeness::Complete,
    )
    .unwrap();

    assert_eq!((verified.records, verified.covered), (2, 2));
    assert!(text
        .lines()
        .next()
        .unwrap()
        .contains("\"event\":\"token_rejected\""));
}
