//! Auditors reading the log: each read is decided by the Cedar `audit` action and recorded,
//! allowed or not.

use chrono::{DateTime, Utc};
use jit_proto::audit::{self, AuditPage, AuditQuery, ChainHash, Checkpoint, MAX_PAGE};

use super::access::may_read_audit;
use super::{Actor, AuditEvent, AuditRead};
use crate::identity::Identity;
use crate::service::{Service, ServiceError};
use crate::store::audit::{AuditFilter, AuditRow};
use crate::store::StoreError;

/// Page size when the query names none.
const DEFAULT_PAGE: u32 = 100;

/// Longest query text kept in an `audit_read` record.
const MAX_QUERY_TEXT: usize = 512;

impl Service {
    /// Decides whether `reader` may read the log, records the decision, and refuses when the
    /// rules do not allow it.
    async fn authorize_audit(
        &self,
        reader: &Identity,
        what: &str,
        query_text: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        let verdict = may_read_audit(&self.policy, reader, now);
        let event = AuditEvent::AuditRead(AuditRead {
            reader: Actor::of(reader),
            allowed: verdict.allowed,
            rule_ids: verdict.rule_ids.clone(),
            what: what.to_owned(),
            query: query_text.chars().take(MAX_QUERY_TEXT).collect(),
        });
        self.audit.record(event, now).await?;

        if !verdict.allowed {
            tracing::warn!(
                target: "security",
                user = reader.display_name(),
                what,
                "audit log read refused"
            );
            return Err(ServiceError::Forbidden(
                "you may not read the audit log".into(),
            ));
        }
        Ok(())
    }

    /// One page of records matching `query`, for an allowed reader.
    pub async fn read_audit(
        &self,
        reader: &Identity,
        query: &AuditQuery,
        query_text: &str,
        now: DateTime<Utc>,
    ) -> Result<AuditPage, ServiceError> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        self.authorize_audit(reader, "records", query_text, now)
            .await?;

        let filter = AuditFilter {
            user: query.user.clone(),
            host: query.host.clone(),
            profile: query.profile.clone(),
            event: query.event.clone(),
            serial: query.serial,
            grant_id: query.grant.clone(),
            request_id: query.request.clone(),
            since: query.since,
            until: query.until,
            after_seq: query.after.unwrap_or(0),
            limit,
        };
        let rows = self.audit.store().audit_rows(&filter).await?;
        let next_after = match rows.last() {
            Some(last) if rows.len() == limit as usize => Some(last.seq),
            _ => None,
        };
        let records = rows
            .iter()
            .map(exported)
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(AuditPage {
            records,
            next_after,
        })
    }

    /// The newest checkpoint (signed now when the log grew since), for an allowed reader.
    pub async fn audit_checkpoint(
        &self,
        reader: &Identity,
        now: DateTime<Utc>,
    ) -> Result<Checkpoint, ServiceError> {
        self.authorize_audit(reader, "checkpoint", "", now).await?;
        Ok(self.audit.checkpoint(now).await?)
    }
}

fn exported(row: &AuditRow) -> Result<serde_json::Value, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("audit record {} is unreadable", row.seq));
    let hash = ChainHash::parse(&row.hash).ok_or_else(corrupt)?;
    audit::exported_record(&row.body, &hash).map_err(|_| corrupt())
}
