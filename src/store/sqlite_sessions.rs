//! [`SessionStore`] for the embedded SQLite store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::sessions::{SessionRecord, SessionStore};
use super::sqlite::{from_unix, grant_from_row, query_error, to_i64, to_u64, to_unix, SqliteStore};
use super::StoreResult;

/// Sessions with their grant; the grant's columns keep their own names.
const SESSION_QUERY: &str = "SELECT host_sessions.host, host_sessions.session_id,
        host_sessions.unix_user, host_sessions.serial, host_sessions.key_id,
        host_sessions.source_address, host_sessions.tty, host_sessions.started_at,
        host_sessions.valid_before, host_sessions.reported_at, host_sessions.ended_at,
        host_sessions.end_reason, grants.*
     FROM host_sessions JOIN grants ON grants.id = host_sessions.grant_id";

fn session_from_row(row: &SqliteRow) -> StoreResult<SessionRecord> {
    let ended_at: Option<i64> = row.get("ended_at");
    Ok(SessionRecord {
        host: row.get("host"),
        session_id: row.get("session_id"),
        unix_user: row.get("unix_user"),
        serial: to_u64(row.get("serial"))?,
        key_id: row.get("key_id"),
        grant: grant_from_row(row)?,
        source_address: row.get("source_address"),
        tty: row.get("tty"),
        started_at: from_unix(row.get("started_at"))?,
        valid_before: from_unix(row.get("valid_before"))?,
        reported_at: from_unix(row.get("reported_at"))?,
        ended_at: ended_at.map(from_unix).transpose()?,
        end_reason: row.get("end_reason"),
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn find_session(
        &self,
        host: &str,
        session_id: &str,
    ) -> StoreResult<Option<SessionRecord>> {
        let query = format!(
            "{SESSION_QUERY} WHERE host_sessions.host = ? AND host_sessions.session_id = ?"
        );
        let row = sqlx::query(&query)
            .bind(host)
            .bind(session_id)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn insert_session(&self, session: &SessionRecord) -> StoreResult<bool> {
        let _writing = self.writing().await;
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO host_sessions (host, session_id, unix_user, serial, grant_id,
                key_id, source_address, tty, started_at, valid_before, reported_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.host)
        .bind(&session.session_id)
        .bind(&session.unix_user)
        .bind(to_i64(session.serial)?)
        .bind(&session.grant.id)
        .bind(&session.key_id)
        .bind(&session.source_address)
        .bind(&session.tty)
        .bind(to_unix(session.started_at))
        .bind(to_unix(session.valid_before))
        .bind(to_unix(session.reported_at))
        .execute(self.pool())
        .await
        .map_err(query_error)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn close_session(
        &self,
        host: &str,
        session_id: &str,
        ended_at: DateTime<Utc>,
        end_reason: &str,
    ) -> StoreResult<bool> {
        let _writing = self.writing().await;
        let closed = sqlx::query(
            "UPDATE host_sessions SET ended_at = ?, end_reason = ?
             WHERE host = ? AND session_id = ? AND ended_at IS NULL",
        )
        .bind(to_unix(ended_at))
        .bind(end_reason)
        .bind(host)
        .bind(session_id)
        .execute(self.pool())
        .await
        .map_err(query_error)?;
        Ok(closed.rows_affected() == 1)
    }

    async fn open_sessions(&self, host: Option<&str>) -> StoreResult<Vec<SessionRecord>> {
        let query = format!(
            "{SESSION_QUERY} WHERE host_sessions.ended_at IS NULL
                AND (?1 IS NULL OR host_sessions.host = ?1)
             ORDER BY host_sessions.started_at, host_sessions.host, host_sessions.session_id"
        );
        let rows = sqlx::query(&query)
            .bind(host)
            .fetch_all(self.pool())
            .await
            .map_err(query_error)?;
        rows.iter().map(session_from_row).collect()
    }
}
