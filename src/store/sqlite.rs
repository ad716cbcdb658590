//! The embedded SQLite store.
//!
//! WAL journal with `synchronous = FULL`: a transaction that returned has been flushed to disk,
//! which is what "a certificate is handed out only after it is recorded" rests on. Migrations
//! are embedded in the binary and run at open.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_proto::RequestStatus;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::{
    CertificateRecord, EventRecord, Extension, GrantRecord, GrantWithCertificate, Issuance, Person,
    RequestRecord, Review, ReviewResult, Store, StoreError, StoreResult, Verdict,
};

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Connections that commit without their own flush (`synchronous = NORMAL`), for the one
    /// write whose content is already durable elsewhere: the certificate issued on the
    /// auto-approved path, whose full text the audit log flushed before it. In WAL mode such a
    /// commit survives a crash of the process (SIGKILL) and is flushed by the next durable
    /// commit; only a power loss in between can drop it, and the audit record still holds it.
    /// Serial reservations, reviews and revocations always use the durable pool.
    relaxed: SqlitePool,
    /// Taken by every write of this store, through either pool, for the whole transaction.
    /// SQLite lets one writer in at a time anyway; queueing here, in order, replaces its busy
    /// handler, which makes a blocked writer sleep and retry (1 ms growing to 100 ms per try)
    /// and under concurrent issuance slept longer than the writes took.
    writes: Arc<Mutex<()>>,
}

pub(super) fn query_error(error: sqlx::Error) -> StoreError {
    StoreError::Query(error.to_string())
}

pub(super) fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

pub(super) fn from_json(text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|error| StoreError::Corrupt(error.to_string()))
}

pub(super) fn to_unix(time: DateTime<Utc>) -> i64 {
    time.timestamp()
}

pub(super) fn from_unix(seconds: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {seconds} out of range")))
}

pub(super) fn to_i64(value: u64) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} exceeds i64")))
}

pub(super) fn to_u64(value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} is negative")))
}

impl SqliteStore {
    /// Opens (creating when absent, mode 0600) the database at `url` (`sqlite://PATH`) and
    /// brings its schema up to date.
    pub async fn open(url: &str) -> StoreResult<SqliteStore> {
        let open_error = |message: String| StoreError::Open {
            url: url.to_owned(),
            message,
        };
        let path = url
            .strip_prefix("sqlite://")
            .ok_or_else(|| open_error("URL must start with sqlite://".into()))?;
        if !Path::new(path).exists() {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|error| open_error(error.to_string()))?;
        }

        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| open_error(error.to_string()))?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(|error| open_error(error.to_string()))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|error| open_error(error.to_string()))?;
        let relaxed = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(|error| open_error(error.to_string()))?;

        Ok(SqliteStore {
            pool,
            relaxed,
            writes: Arc::new(Mutex::new(())),
        })
    }

    /// Waits for this store's turn to write; hold the guard until the write has committed.
    pub(super) async fn writing(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// The underlying pool, for tests and maintenance commands.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

async fn insert_request_in(
    transaction: &mut Transaction<'_, Sqlite>,
    request: &RequestRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO access_requests (id, status, profile, target, unix_users, principals,
            duration_secs, reason, ticket, requester_issuer, requester_subject, requester_email,
            requester_groups, public_key, client_address, user_agent, created_at, expires_at,
            required_approvals, decision_rules, start_at, extends_grant, break_glass,
            acknowledged_by)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&request.id)
    .bind(request.status.as_str())
    .bind(&request.profile)
    .bind(&request.target)
    .bind(to_json(&request.unix_users))
    .bind(to_json(&request.principals))
    .bind(to_i64(request.duration_secs)?)
    .bind(&request.reason)
    .bind(&request.ticket)
    .bind(&request.requester.issuer)
    .bind(&request.requester.subject)
    .bind(&request.requester.email)
    .bind(to_json(&request.requester.groups))
    .bind(&request.public_key)
    .bind(&request.client_address)
    .bind(&request.user_agent)
    .bind(to_unix(request.created_at))
    .bind(to_unix(request.expires_at))
    .bind(i64::from(request.required_approvals))
    .bind(to_json(&request.decision_rules))
    .bind(request.start_at.map(to_unix))
    .bind(&request.extends_grant)
    .bind(request.break_glass)
    .bind(&request.acknowledged_by)
    .execute(&mut **transaction)
    .await
    .map_err(query_error)?;

    let actor = request
        .requester
        .email
        .as_deref()
        .unwrap_or(&request.requester.subject);
    let kind = if request.break_glass {
        "break_glass"
    } else {
        "requested"
    };
    let detail = format!(
        "{} on {} for {}s: {}",
        request.profile, request.target, request.duration_secs, request.reason
    );
    insert_event_in(
        transaction,
        &request.id,
        request.created_at,
        actor,
        kind,
        &detail,
    )
    .await
}

async fn insert_event_in(
    transaction: &mut Transaction<'_, Sqlite>,
    request_id: &str,
    at: DateTime<Utc>,
    actor: &str,
    kind: &str,
    detail: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO request_events (request_id, at, actor, kind, detail) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(request_id)
    .bind(to_unix(at))
    .bind(actor)
    .bind(kind)
    .bind(detail)
    .execute(&mut **transaction)
    .await
    .map_err(query_error)?;
    Ok(())
}

async fn insert_grant_in(
    transaction: &mut Transaction<'_, Sqlite>,
    grant: &GrantRecord,
) -> StoreResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO grants (id, request_id, profile, target, principals, starts_at, ends_at,
            holder_issuer, holder_subject, holder_email, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(&grant.id)
    .bind(&grant.request_id)
    .bind(&grant.profile)
    .bind(&grant.target)
    .bind(to_json(&grant.principals))
    .bind(to_unix(grant.starts_at))
    .bind(to_unix(grant.ends_at))
    .bind(&grant.holder.issuer)
    .bind(&grant.holder.subject)
    .bind(&grant.holder.email)
    .bind(to_unix(grant.created_at))
    .execute(&mut **transaction)
    .await
    .map_err(query_error)?
    .rows_affected();
    Ok(inserted == 1)
}

async fn insert_certificate_in(
    transaction: &mut Transaction<'_, Sqlite>,
    certificate: &CertificateRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO certificates (serial, grant_id, key_id, principals, valid_after,
            valid_before, public_key_fingerprint, ca_key_fingerprint, certificate,
            holder_issuer, holder_subject, holder_email, holder_groups, client_address,
            user_agent, issued_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(to_i64(certificate.serial)?)
    .bind(&certificate.grant_id)
    .bind(&certificate.key_id)
    .bind(to_json(&certificate.principals))
    .bind(to_unix(certificate.valid_after))
    .bind(to_unix(certificate.valid_before))
    .bind(&certificate.public_key_fingerprint)
    .bind(&certificate.ca_key_fingerprint)
    .bind(&certificate.certificate)
    .bind(&certificate.holder.issuer)
    .bind(&certificate.holder.subject)
    .bind(&certificate.holder.email)
    .bind(to_json(&certificate.holder.groups))
    .bind(&certificate.client_address)
    .bind(&certificate.user_agent)
    .bind(to_unix(certificate.issued_at))
    .execute(&mut **transaction)
    .await
    .map_err(query_error)?;
    Ok(())
}

fn request_from_row(row: &SqliteRow) -> StoreResult<RequestRecord> {
    let status_name: String = row.get("status");
    let status = RequestStatus::parse(&status_name)
        .ok_or_else(|| StoreError::Corrupt(format!("request status `{status_name}`")))?;
    Ok(RequestRecord {
        id: row.get("id"),
        status,
        profile: row.get("profile"),
        target: row.get("target"),
        unix_users: from_json(row.get("unix_users"))?,
        principals: from_json(row.get("principals"))?,
        duration_secs: to_u64(row.get("duration_secs"))?,
        reason: row.get("reason"),
        ticket: row.get("ticket"),
        requester: Person {
            issuer: row.get("requester_issuer"),
            subject: row.get("requester_subject"),
            email: row.get("requester_email"),
            groups: from_json(row.get("requester_groups"))?,
        },
        public_key: row.get("public_key"),
        client_address: row.get("client_address"),
        user_agent: row.get("user_agent"),
        created_at: from_unix(row.get("created_at"))?,
        expires_at: from_unix(row.get("expires_at"))?,
        required_approvals: u32::try_from(row.get::<i64, _>("required_approvals"))
            .map_err(|error| StoreError::Corrupt(error.to_string()))?,
        decision_rules: from_json(row.get("decision_rules"))?,
        start_at: row
            .get::<Option<i64>, _>("start_at")
            .map(from_unix)
            .transpose()?,
        extends_grant: row.get("extends_grant"),
        break_glass: row.get("break_glass"),
        acknowledged_by: row.get("acknowledged_by"),
    })
}

pub(super) fn grant_from_row(row: &SqliteRow) -> StoreResult<GrantRecord> {
    Ok(GrantRecord {
        id: row.get("id"),
        request_id: row.get("request_id"),
        profile: row.get("profile"),
        target: row.get("target"),
        principals: from_json(row.get("principals"))?,
        starts_at: from_unix(row.get("starts_at"))?,
        ends_at: from_unix(row.get("ends_at"))?,
        holder: Person {
            issuer: row.get("holder_issuer"),
            subject: row.get("holder_subject"),
            email: row.get("holder_email"),
            groups: Vec::new(),
        },
        created_at: from_unix(row.get("created_at"))?,
    })
}

pub(super) fn certificate_from_row(row: &SqliteRow) -> StoreResult<CertificateRecord> {
    Ok(CertificateRecord {
        serial: to_u64(row.get("serial"))?,
        grant_id: row.get("grant_id"),
        key_id: row.get("key_id"),
        principals: from_json(row.get("principals"))?,
        valid_after: from_unix(row.get("valid_after"))?,
        valid_before: from_unix(row.get("valid_before"))?,
        public_key_fingerprint: row.get("public_key_fingerprint"),
        ca_key_fingerprint: row.get("ca_key_fingerprint"),
        certificate: row.get("certificate"),
        holder: Person {
            issuer: row.get("holder_issuer"),
            subject: row.get("holder_subject"),
            email: row.get("holder_email"),
            groups: from_json(row.get("holder_groups"))?,
        },
        client_address: row.get("client_address"),
        user_agent: row.get("user_agent"),
        issued_at: from_unix(row.get("issued_at"))?,
    })
}

impl SqliteStore {
    /// `grant` with its newest certificate, and whether a revocation of the grant, of that
    /// certificate's serial or of its key ended it; one query when it has a certificate, which
    /// every grant the CA records does.
    async fn with_certificate(&self, grant: GrantRecord) -> StoreResult<GrantWithCertificate> {
        let row = sqlx::query(
            "SELECT certificates.*,
                 EXISTS (SELECT 1 FROM revoked_grants
                         WHERE revoked_grants.grant_id = certificates.grant_id)
                 OR EXISTS (SELECT 1 FROM revoked_certificates
                            WHERE revoked_certificates.serial = certificates.serial)
                 OR EXISTS (SELECT 1 FROM revoked_keys
                            WHERE revoked_keys.fingerprint = certificates.public_key_fingerprint)
                 AS revoked
             FROM certificates WHERE grant_id = ? ORDER BY serial DESC LIMIT 1",
        )
        .bind(&grant.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_error)?;
        if let Some(row) = row {
            return Ok(GrantWithCertificate {
                grant,
                certificate: Some(certificate_from_row(&row)?),
                revoked: row.get("revoked"),
            });
        }

        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM revoked_grants WHERE grant_id = ?) AS revoked",
        )
        .bind(&grant.id)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error)?;
        Ok(GrantWithCertificate {
            grant,
            certificate: None,
            revoked: row.get("revoked"),
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn reserve_serials(&self, count: u64) -> StoreResult<u64> {
        let count = to_i64(count.max(1))?;
        let _writing = self.writing().await;
        // One statement, so the read and the increment cannot interleave with another writer.
        let row = sqlx::query(
            "UPDATE serial_counter SET next_serial = next_serial + ? WHERE id = 1
             RETURNING next_serial - ? AS first_serial",
        )
        .bind(count)
        .bind(count)
        .fetch_one(&self.pool)
        .await
        .map_err(query_error)?;
        to_u64(row.get("first_serial"))
    }

    async fn insert_request(&self, request: &RequestRecord) -> StoreResult<()> {
        let _writing = self.writing().await;
        let mut transaction = self.pool.begin().await.map_err(query_error)?;
        insert_request_in(&mut transaction, request).await?;
        transaction.commit().await.map_err(query_error)
    }

    async fn record_issuance(&self, issuance: &Issuance) -> StoreResult<()> {
        // The caller recorded the certificate durably in the audit log first; see `relaxed`.
        let _writing = self.writing().await;
        let mut transaction = self.relaxed.begin().await.map_err(query_error)?;
        insert_request_in(&mut transaction, &issuance.request).await?;

        insert_grant_in(&mut transaction, &issuance.grant).await?;
        insert_certificate_in(&mut transaction, &issuance.certificate).await?;
        let detail = format!("certificate serial {}", issuance.certificate.serial);
        insert_event_in(
            &mut transaction,
            &issuance.request.id,
            issuance.certificate.issued_at,
            "jit-ca",
            "granted",
            &detail,
        )
        .await?;

        transaction.commit().await.map_err(query_error)
    }

    async fn find_request(&self, request_id: &str) -> StoreResult<Option<RequestRecord>> {
        let row = sqlx::query("SELECT * FROM access_requests WHERE id = ?")
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error)?;
        row.as_ref().map(request_from_row).transpose()
    }

    async fn find_grant_by_request(
        &self,
        request_id: &str,
    ) -> StoreResult<Option<GrantWithCertificate>> {
        let row = sqlx::query("SELECT * FROM grants WHERE request_id = ?")
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let grant = grant_from_row(&row)?;
        Ok(Some(self.with_certificate(grant).await?))
    }

    async fn grants_of(
        &self,
        issuer: &str,
        subject: &str,
        limit: u32,
    ) -> StoreResult<Vec<GrantWithCertificate>> {
        let rows = sqlx::query(
            "SELECT * FROM grants WHERE holder_issuer = ? AND holder_subject = ?
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(issuer)
        .bind(subject)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error)?;

        let mut grants = Vec::with_capacity(rows.len());
        for row in &rows {
            grants.push(self.with_certificate(grant_from_row(row)?).await?);
        }
        Ok(grants)
    }

    async fn count_pending(&self) -> StoreResult<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS pending FROM access_requests WHERE status = ?")
            .bind(RequestStatus::Pending.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(query_error)?;
        to_u64(row.get("pending"))
    }

    async fn record_review(&self, review: &Review, required: u32) -> StoreResult<ReviewResult> {
        let _writing = self.writing().await;
        let mut transaction = self.pool.begin().await.map_err(query_error)?;
        // Write first, so this transaction holds SQLite's write lock before it reads: two
        // concurrent reviews then run one after the other and never count from stale state.
        let touched = sqlx::query("UPDATE access_requests SET id = id WHERE id = ?")
            .bind(&review.request_id)
            .execute(&mut *transaction)
            .await
            .map_err(query_error)?
            .rows_affected();
        if touched == 0 {
            return Err(StoreError::Query(format!(
                "request {} vanished",
                review.request_id
            )));
        }
        let row = sqlx::query("SELECT status, expires_at FROM access_requests WHERE id = ?")
            .bind(&review.request_id)
            .fetch_one(&mut *transaction)
            .await
            .map_err(query_error)?;
        let status_name: String = row.get("status");
        let status = RequestStatus::parse(&status_name)
            .ok_or_else(|| StoreError::Corrupt(format!("request status `{status_name}`")))?;
        if status != RequestStatus::Pending {
            return Ok(ReviewResult::NotPending(status));
        }
        if review.at >= from_unix(row.get("expires_at"))? {
            mark_expired_in(&mut transaction, &review.request_id, review.at).await?;
            transaction.commit().await.map_err(query_error)?;
            return Ok(ReviewResult::NotPending(RequestStatus::Expired));
        }

        let reviewer = &review.reviewer;
        let inserted = sqlx::query(
            "INSERT INTO reviews (request_id, reviewer_issuer, reviewer_subject, reviewer_email,
                verdict, comment, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&review.request_id)
        .bind(&reviewer.issuer)
        .bind(&reviewer.subject)
        .bind(&reviewer.email)
        .bind(review.verdict.as_str())
        .bind(&review.comment)
        .bind(to_unix(review.at))
        .execute(&mut *transaction)
        .await
        .map_err(query_error)?
        .rows_affected();
        if inserted == 0 {
            return Ok(ReviewResult::AlreadyReviewed);
        }
        let actor = reviewer.email.as_deref().unwrap_or(&reviewer.subject);

        if review.verdict == Verdict::Deny {
            set_status_in(
                &mut transaction,
                &review.request_id,
                RequestStatus::Denied,
                review.at,
            )
            .await?;
            insert_event_in(
                &mut transaction,
                &review.request_id,
                review.at,
                actor,
                "denied",
                &review.comment,
            )
            .await?;
            transaction.commit().await.map_err(query_error)?;
            return Ok(ReviewResult::Denied);
        }

        insert_event_in(
            &mut transaction,
            &review.request_id,
            review.at,
            actor,
            "approved",
            &review.comment,
        )
        .await?;
        let approvers = approvers_in(&mut transaction, &review.request_id).await?;
        let complete = approvers.len() >= usize::try_from(required).unwrap_or(usize::MAX);
        if complete {
            set_status_in(
                &mut transaction,
                &review.request_id,
                RequestStatus::Approved,
                review.at,
            )
            .await?;
        }
        transaction.commit().await.map_err(query_error)?;
        Ok(if complete {
            ReviewResult::Approved(approvers)
        } else {
            ReviewResult::Counted(approvers)
        })
    }

    async fn record_grant(
        &self,
        grant: &GrantRecord,
        certificate: &CertificateRecord,
    ) -> StoreResult<bool> {
        let _writing = self.writing().await;
        let mut transaction = self.pool.begin().await.map_err(query_error)?;
        if !insert_grant_in(&mut transaction, grant).await? {
            return Ok(false);
        }
        insert_certificate_in(&mut transaction, certificate).await?;
        let detail = format!("certificate serial {}", certificate.serial);
        insert_event_in(
            &mut transaction,
            &grant.request_id,
            certificate.issued_at,
            "jit-ca",
            "granted",
            &detail,
        )
        .await?;
        transaction.commit().await.map_err(query_error)?;
        Ok(true)
    }

    async fn cancel_request(
        &self,
        request_id: &str,
        actor: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _writing = self.writing().await;
        let mut transaction = self.pool.begin().await.map_err(query_error)?;
        let changed = sqlx::query(
            "UPDATE access_requests SET status = 'cancelled', decided_at = ?
             WHERE id = ? AND status = 'pending' AND expires_at > ?",
        )
        .bind(to_unix(at))
        .bind(request_id)
        .bind(to_unix(at))
        .execute(&mut *transaction)
        .await
        .map_err(query_error)?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        insert_event_in(&mut transaction, request_id, at, actor, "cancelled", "").await?;
        transaction.commit().await.map_err(query_error)?;
        Ok(true)
    }

    async fn acknowledge(
        &self,
        request_id: &str,
        actor: &str,
        comment: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _writing = self.writing().await;
        let mut transaction = self.pool.begin().await.map_err(query_error)?;
        let changed = sqlx::query(
            "UPDATE access_requests SET acknowledged_by = ?, acknowledged_at = ?
             WHERE id = ? AND break_glass = 1 AND acknowledged_at IS NULL",
        )
        .bind(actor)
        .bind(to_unix(at))
        .bind(request_id)
        .execute(&mut *transaction)
        .await
        .map_err(query_error)?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        insert_event_in(
            &mut transaction,
            request_id,
            at,
            actor,
            "acknowledged",
            comment,
        )
        .await?;
        transaction.commit().await.map_err(query_error)?;
        Ok(true)
    }

    async fn record_extension(
        &self,
        extension: &Extension,
        insert_request: bool,
    ) -> StoreResult<()> {
        let _writing = self.writing().await;
        let mut transaction = self.pool.begin().await.map_err(query_error)?;
        if insert_request {
            insert_request_in(&mut transaction, &extension.request).await?;
        }
        let original =
            sqlx::query("UPDATE grants SET ends_at = ? WHERE id = ? RETURNING request_id")
                .bind(to_unix(extension.new_end))
                .bind(&extension.grant_id)
                .fetch_optional(&mut *transaction)
                .await
                .map_err(query_error)?
                .ok_or_else(|| {
                    StoreError::Query(format!("grant {} vanished", extension.grant_id))
                })?;
        let original_request: String = original.get("request_id");
        insert_certificate_in(&mut transaction, &extension.certificate).await?;

        let at = extension.certificate.issued_at;
        let detail = format!(
            "grant {} now ends {}; certificate serial {}",
            extension.grant_id,
            extension.new_end.to_rfc3339(),
            extension.certificate.serial
        );
        insert_event_in(
            &mut transaction,
            &extension.request.id,
            at,
            "jit-ca",
            "granted",
            &detail,
        )
        .await?;
        insert_event_in(
            &mut transaction,
            &original_request,
            at,
            "jit-ca",
            "extended",
            &detail,
        )
        .await?;
        transaction.commit().await.map_err(query_error)
    }

    async fn expire_pending(&self, now: DateTime<Utc>) -> StoreResult<Vec<RequestRecord>> {
        let _writing = self.writing().await;
        let mut transaction = self.pool.begin().await.map_err(query_error)?;
        let rows = sqlx::query(
            "SELECT * FROM access_requests WHERE status = 'pending' AND expires_at <= ?",
        )
        .bind(to_unix(now))
        .fetch_all(&mut *transaction)
        .await
        .map_err(query_error)?;
        let mut expired = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut request = request_from_row(row)?;
            mark_expired_in(&mut transaction, &request.id, now).await?;
            request.status = RequestStatus::Expired;
            expired.push(request);
        }
        transaction.commit().await.map_err(query_error)?;
        Ok(expired)
    }

    async fn open_for_review(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<RequestRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM access_requests
             WHERE (status = 'pending' AND expires_at > ?)
                OR (break_glass = 1 AND acknowledged_at IS NULL)
             ORDER BY created_at, id LIMIT ?",
        )
        .bind(to_unix(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error)?;
        rows.iter().map(request_from_row).collect()
    }

    async fn approvers_of(&self, request_id: &str) -> StoreResult<Vec<String>> {
        let mut connection = self.pool.acquire().await.map_err(query_error)?;
        let rows = sqlx::query(APPROVERS_QUERY)
            .bind(request_id)
            .fetch_all(&mut *connection)
            .await
            .map_err(query_error)?;
        Ok(rows.iter().map(|row| row.get("approver")).collect())
    }

    async fn history(&self, request_id: &str) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT at, actor, kind, detail FROM request_events WHERE request_id = ? ORDER BY id",
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error)?;
        rows.iter()
            .map(|row| {
                Ok(EventRecord {
                    at: from_unix(row.get("at"))?,
                    actor: row.get("actor"),
                    kind: row.get("kind"),
                    detail: row.get("detail"),
                })
            })
            .collect()
    }

    async fn take_unreviewed_break_glass(
        &self,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RequestRecord>> {
        let rows = sqlx::query(
            "UPDATE access_requests SET unreviewed_alerted = 1
             WHERE break_glass = 1 AND acknowledged_at IS NULL AND unreviewed_alerted = 0
               AND (id IN (SELECT request_id FROM grants WHERE ends_at <= ?)
                    OR extends_grant IN (SELECT id FROM grants WHERE ends_at <= ?))
             RETURNING *",
        )
        .bind(to_unix(now))
        .bind(to_unix(now))
        .fetch_all(&self.pool)
        .await
        .map_err(query_error)?;
        rows.iter().map(request_from_row).collect()
    }

    async fn find_grant(&self, grant_id: &str) -> StoreResult<Option<GrantWithCertificate>> {
        let row = sqlx::query("SELECT * FROM grants WHERE id = ?")
            .bind(grant_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let grant = grant_from_row(&row)?;
        Ok(Some(self.with_certificate(grant).await?))
    }
}

const APPROVERS_QUERY: &str = "SELECT COALESCE(reviewer_email, reviewer_subject) AS approver
     FROM reviews WHERE request_id = ? AND verdict = 'approve' ORDER BY created_at, rowid";

async fn approvers_in(
    transaction: &mut Transaction<'_, Sqlite>,
    request_id: &str,
) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(APPROVERS_QUERY)
        .bind(request_id)
        .fetch_all(&mut **transaction)
        .await
        .map_err(query_error)?;
    Ok(rows.iter().map(|row| row.get("approver")).collect())
}

async fn set_status_in(
    transaction: &mut Transaction<'_, Sqlite>,
    request_id: &str,
    status: RequestStatus,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query("UPDATE access_requests SET status = ?, decided_at = ? WHERE id = ?")
        .bind(status.as_str())
        .bind(to_unix(at))
        .bind(request_id)
        .execute(&mut **transaction)
        .await
        .map_err(query_error)?;
    Ok(())
}

async fn mark_expired_in(
    transaction: &mut Transaction<'_, Sqlite>,
    request_id: &str,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    set_status_in(transaction, request_id, RequestStatus::Expired, at).await?;
    insert_event_in(
        transaction,
        request_id,
        at,
        "jit-ca",
        "expired",
        "not approved in time",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_temporary() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("jit.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn serials_are_unique_and_increasing_across_reopen() {
        let (dir, store) = open_temporary().await;

        let first = store.reserve_serials(10).await.unwrap();
        let second = store.reserve_serials(1).await.unwrap();
        drop(store);
        let url = format!("sqlite://{}", dir.path().join("jit.db").display());
        let reopened = SqliteStore::open(&url).await.unwrap();
        let third = reopened.reserve_serials(5).await.unwrap();

        assert_eq!(first, 1);
        assert_eq!(second, 11);
        assert_eq!(third, 12);
    }

    #[tokio::test]
    async fn concurrent_reservations_never_overlap() {
        let (_dir, store) = open_temporary().await;

        let mut tasks = Vec::new();
        for _ in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.reserve_serials(3).await }));
        }
        let mut firsts = Vec::new();
        for task in tasks {
            firsts.push(task.await.unwrap().unwrap());
        }
        firsts.sort();

        for pair in firsts.windows(2) {
            assert!(pair[1] >= pair[0] + 3, "{firsts:?}");
        }
    }

    fn someone(name: &str) -> Person {
        Person {
            issuer: "https://idp".into(),
            subject: name.into(),
            email: Some(format!("{name}@example.com")),
            groups: Vec::new(),
        }
    }

    fn pending_request(id: &str, created_at: DateTime<Utc>, ttl_secs: i64) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            status: RequestStatus::Pending,
            profile: "db-root".into(),
            target: "db-1".into(),
            unix_users: vec!["root".into()],
            principals: vec!["root@db-1".into()],
            duration_secs: 900,
            reason: "vacuum".into(),
            ticket: Some("CHG-1".into()),
            requester: someone("bob"),
            public_key: "ssh-ed25519 AAAA".into(),
            client_address: "127.0.0.1".into(),
            user_agent: None,
            created_at,
            expires_at: created_at + chrono::TimeDelta::seconds(ttl_secs),
            required_approvals: 2,
            decision_rules: vec!["dba".into()],
            start_at: None,
            extends_grant: None,
            break_glass: false,
            acknowledged_by: None,
        }
    }

    fn review(request_id: &str, reviewer: &str, verdict: Verdict, at: DateTime<Utc>) -> Review {
        Review {
            request_id: request_id.into(),
            reviewer: someone(reviewer),
            verdict,
            comment: String::new(),
            at,
        }
    }

    fn instant(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[tokio::test]
    async fn each_approver_counts_once_and_the_last_one_approves() {
        let (_dir, store) = open_temporary().await;
        store
            .insert_request(&pending_request("r-1", instant(0), 3600))
            .await
            .unwrap();

        let first = store
            .record_review(&review("r-1", "carol", Verdict::Approve, instant(1)), 2)
            .await
            .unwrap();
        let repeat = store
            .record_review(&review("r-1", "carol", Verdict::Approve, instant(2)), 2)
            .await
            .unwrap();
        let last = store
            .record_review(&review("r-1", "dave", Verdict::Approve, instant(3)), 2)
            .await
            .unwrap();
        let late = store
            .record_review(&review("r-1", "erin", Verdict::Deny, instant(4)), 2)
            .await
            .unwrap();

        assert_eq!(
            first,
            ReviewResult::Counted(vec!["carol@example.com".into()])
        );
        assert_eq!(repeat, ReviewResult::AlreadyReviewed);
        assert_eq!(
            last,
            ReviewResult::Approved(vec!["carol@example.com".into(), "dave@example.com".into()])
        );
        assert_eq!(late, ReviewResult::NotPending(RequestStatus::Approved));
        let kinds: Vec<String> = store
            .history("r-1")
            .await
            .unwrap()
            .into_iter()
            .map(|event| event.kind)
            .collect();
        assert_eq!(kinds, ["requested", "approved", "approved"]);
    }

    #[tokio::test]
    async fn concurrent_final_approvals_approve_exactly_once() {
        let (_dir, store) = open_temporary().await;
        for index in 0..10 {
            let id = format!("r-{index}");
            store
                .insert_request(&pending_request(&id, instant(0), 3600))
                .await
                .unwrap();
        }

        let mut tasks = Vec::new();
        for index in 0..10 {
            for reviewer in ["carol", "dave", "frank", "carol"] {
                let store = store.clone();
                let id = format!("r-{index}");
                tasks.push(tokio::spawn(async move {
                    store
                        .record_review(&review(&id, reviewer, Verdict::Approve, instant(5)), 2)
                        .await
                }));
            }
        }
        let mut approved = 0;
        for task in tasks {
            if let ReviewResult::Approved(approvers) = task.await.unwrap().unwrap() {
                assert_eq!(approvers.len(), 2);
                approved += 1;
            }
        }

        assert_eq!(approved, 10, "each request approved exactly once");
    }

    #[tokio::test]
    async fn a_denial_wins_and_an_expired_request_cannot_be_reviewed() {
        let (_dir, store) = open_temporary().await;
        store
            .insert_request(&pending_request("r-deny", instant(0), 3600))
            .await
            .unwrap();
        store
            .insert_request(&pending_request("r-late", instant(0), 60))
            .await
            .unwrap();

        store
            .record_review(&review("r-deny", "carol", Verdict::Approve, instant(1)), 2)
            .await
            .unwrap();
        let denied = store
            .record_review(&review("r-deny", "dave", Verdict::Deny, instant(2)), 2)
            .await
            .unwrap();
        let after_denial = store
            .record_review(&review("r-deny", "frank", Verdict::Approve, instant(3)), 2)
            .await
            .unwrap();
        let too_late = store
            .record_review(&review("r-late", "carol", Verdict::Approve, instant(61)), 2)
            .await
            .unwrap();

        assert_eq!(denied, ReviewResult::Denied);
        assert_eq!(
            after_denial,
            ReviewResult::NotPending(RequestStatus::Denied)
        );
        assert_eq!(too_late, ReviewResult::NotPending(RequestStatus::Expired));
        assert!(!store
            .cancel_request("r-late", "bob", instant(62))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn unreviewed_break_glass_includes_extensions_once_the_grant_ends() {
        let (_dir, store) = open_temporary().await;
        let activation = RequestRecord {
            status: RequestStatus::Approved,
            break_glass: true,
            ..pending_request("r-glass", instant(0), 3600)
        };
        let grant = GrantRecord {
            id: "g-glass".into(),
            request_id: activation.id.clone(),
            profile: activation.profile.clone(),
            target: activation.target.clone(),
            principals: activation.principals.clone(),
            starts_at: instant(0),
            ends_at: instant(900),
            holder: someone("bob"),
            created_at: instant(0),
        };
        let certificate = CertificateRecord {
            serial: 1,
            grant_id: grant.id.clone(),
            key_id: "bob/g-glass/1".into(),
            principals: grant.principals.clone(),
            valid_after: instant(-30),
            valid_before: instant(900),
            public_key_fingerprint: "SHA256:x".into(),
            ca_key_fingerprint: "SHA256:y".into(),
            certificate: "ssh-ed25519-cert-v01@openssh.com AAAA".into(),
            holder: someone("bob"),
            client_address: "127.0.0.1".into(),
            user_agent: None,
            issued_at: instant(0),
        };
        let issuance = Issuance {
            request: activation,
            grant,
            certificate,
        };
        store.record_issuance(&issuance).await.unwrap();
        let extension = RequestRecord {
            status: RequestStatus::Approved,
            break_glass: true,
            extends_grant: Some("g-glass".into()),
            ..pending_request("r-more", instant(60), 3600)
        };
        store.insert_request(&extension).await.unwrap();

        let while_running = store
            .take_unreviewed_break_glass(instant(899))
            .await
            .unwrap();
        let ended = store
            .take_unreviewed_break_glass(instant(900))
            .await
            .unwrap();
        let again = store
            .take_unreviewed_break_glass(instant(901))
            .await
            .unwrap();

        assert!(while_running.is_empty());
        let mut ids: Vec<String> = ended.into_iter().map(|request| request.id).collect();
        ids.sort();
        assert_eq!(ids, ["r-glass", "r-more"]);
        assert!(again.is_empty(), "each is alerted once");
    }

    #[tokio::test]
    async fn database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _store) = open_temporary().await;

        let mode = std::fs::metadata(dir.path().join("jit.db"))
            .unwrap()
            .permissions()
            .mode();

        assert_eq!(mode & 0o077, 0);
    }
}
