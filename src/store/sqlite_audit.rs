//! [`AuditStore`] for the embedded SQLite store.
//!
//! A group of records is one transaction, so one WAL flush (`synchronous = FULL`) makes the
//! whole group durable. The triggers of migration `0002_audit.sql` refuse updates and deletes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jit_proto::audit::Checkpoint;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::audit::{AuditFilter, AuditRow, AuditStore};
use super::sqlite::SqliteStore;
use super::{StoreError, StoreResult};
use crate::audit::AuditIndex;

fn query_error(error: sqlx::Error) -> StoreError {
    StoreError::Query(error.to_string())
}

fn to_i64(value: u64) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} exceeds i64")))
}

fn to_u64(value: i64) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} is negative")))
}

fn from_micros(micros: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {micros} out of range")))
}

fn row_from(row: &SqliteRow) -> StoreResult<AuditRow> {
    let serial: Option<i64> = row.get("serial");
    Ok(AuditRow {
        seq: to_u64(row.get("seq"))?,
        event: row.get("event"),
        time: from_micros(row.get("recorded_at"))?,
        index: AuditIndex {
            user: row.get("actor"),
            host: row.get("host"),
            profile: row.get("profile"),
            grant_id: row.get("grant_id"),
            request_id: row.get("request_id"),
            serial: serial.map(to_u64).transpose()?,
        },
        body: row.get("body"),
        hash: row.get("hash"),
    })
}

fn checkpoint_from(row: &SqliteRow) -> StoreResult<Checkpoint> {
    let signed_at: i64 = row.get("signed_at");
    Ok(Checkpoint {
        record_count: to_u64(row.get("record_count"))?,
        head_hash: row.get("head_hash"),
        signed_at: DateTime::from_timestamp(signed_at, 0)
            .ok_or_else(|| StoreError::Corrupt(format!("timestamp {signed_at} out of range")))?,
        signature: row.get("signature"),
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn audit_head(&self) -> StoreResult<Option<(u64, String)>> {
        let row = sqlx::query("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
            .fetch_optional(self.pool())
            .await
            .map_err(query_error)?;
        row.map(|row| Ok((to_u64(row.get("seq"))?, row.get("hash"))))
            .transpose()
    }

    async fn append_audit(
        &self,
        rows: &[AuditRow],
        checkpoint: Option<&Checkpoint>,
    ) -> StoreResult<()> {
        let _writing = self.writing().await;
        let mut transaction = self.pool().begin().await.map_err(query_error)?;
        for row in rows {
            let serial = row.index.serial.map(to_i64).transpose()?;
            sqlx::query(
                "INSERT INTO audit_records (seq, event, recorded_at, actor, host, profile,
                    grant_id, request_id, serial, body, hash)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(to_i64(row.seq)?)
            .bind(&row.event)
            .bind(row.time.timestamp_micros())
            .bind(&row.index.user)
            .bind(&row.index.host)
            .bind(&row.index.profile)
            .bind(&row.index.grant_id)
            .bind(&row.index.request_id)
            .bind(serial)
            .bind(&row.body)
            .bind(&row.hash)
            .execute(&mut *transaction)
            .await
            .map_err(query_error)?;
        }
        if let Some(checkpoint) = checkpoint {
            sqlx::query(
                "INSERT INTO audit_checkpoints (record_count, head_hash, signed_at, signature)
                 VALUES (?, ?, ?, ?)",
            )
            .bind(to_i64(checkpoint.record_count)?)
            .bind(&checkpoint.head_hash)
            .bind(checkpoint.signed_at.timestamp())
            .bind(&checkpoint.signature)
            .execute(&mut *transaction)
            .await
            .map_err(query_error)?;
        }
        transaction.commit().await.map_err(query_error)
    }

    async fn audit_rows(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
        let mut query: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("SELECT * FROM audit_records WHERE seq > ");
        query.push_bind(to_i64(filter.after_seq)?);
        let text_filters = [
            ("actor", &filter.user),
            ("host", &filter.host),
            ("profile", &filter.profile),
            ("event", &filter.event),
            ("grant_id", &filter.grant_id),
            ("request_id", &filter.request_id),
        ];
        for (column, value) in text_filters {
            if let Some(value) = value {
                query
                    .push(format!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        if let Some(serial) = filter.serial {
            query.push(" AND serial = ").push_bind(to_i64(serial)?);
        }
        if let Some(since) = filter.since {
            query
                .push(" AND recorded_at >= ")
                .push_bind(since.timestamp_micros());
        }
        if let Some(until) = filter.until {
            query
                .push(" AND recorded_at < ")
                .push_bind(until.timestamp_micros());
        }
        query
            .push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(filter.limit));

        let rows = query
            .build()
            .fetch_all(self.pool())
            .await
            .map_err(query_error)?;
        rows.iter().map(row_from).collect()
    }

    async fn audit_checkpoints(&self) -> StoreResult<Vec<Checkpoint>> {
        let rows = sqlx::query("SELECT * FROM audit_checkpoints ORDER BY id")
            .fetch_all(self.pool())
            .await
            .map_err(query_error)?;
        rows.iter().map(checkpoint_from).collect()
    }
}
