//! [`RevocationStore`] for the embedded SQLite store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::revocation::{
    EnrollmentToken, HostCertificateRecord, HostRecord, KrlContents, RevocableGrant,
    RevocationChanges, RevocationRecord, RevocationStore, RevokedCertificate,
};
use super::sqlite::{
    certificate_from_row, from_json, from_unix, grant_from_row, query_error, to_i64, to_json,
    to_u64, to_unix, SqliteStore,
};
use super::{CertificateRecord, StoreResult};

/// Selects grants with whether they are revoked and their request's ticket.
const REVOCABLE_GRANT_QUERY: &str = "SELECT grants.*,
        EXISTS (SELECT 1 FROM revoked_grants WHERE revoked_grants.grant_id = grants.id)
            AS revoked,
        COALESCE(access_requests.ticket, '') AS request_ticket
     FROM grants LEFT JOIN access_requests ON access_requests.id = grants.request_id";

fn revocable_grant_from_row(row: &SqliteRow) -> StoreResult<RevocableGrant> {
    Ok(RevocableGrant {
        grant: grant_from_row(row)?,
        revoked: row.get("revoked"),
        ticket: row.get("request_ticket"),
    })
}

fn enrollment_token_from_row(row: &SqliteRow) -> StoreResult<EnrollmentToken> {
    Ok(EnrollmentToken {
        token_sha256: row.get("token_sha256"),
        host_name: row.get("host_name"),
        groups: from_json(row.get("groups"))?,
        created_at: from_unix(row.get("created_at"))?,
        expires_at: from_unix(row.get("expires_at"))?,
    })
}

fn host_from_row(row: &SqliteRow) -> StoreResult<HostRecord> {
    Ok(HostRecord {
        name: row.get("name"),
        public_key: row.get("public_key"),
        public_key_fingerprint: row.get("public_key_fingerprint"),
        groups: from_json(row.get("groups"))?,
        enrolled_at: from_unix(row.get("enrolled_at"))?,
    })
}

fn host_certificate_from_row(row: &SqliteRow) -> StoreResult<HostCertificateRecord> {
    Ok(HostCertificateRecord {
        serial: to_u64(row.get("serial"))?,
        host_name: row.get("host_name"),
        key_id: row.get("key_id"),
        principals: from_json(row.get("principals"))?,
        valid_after: from_unix(row.get("valid_after"))?,
        valid_before: from_unix(row.get("valid_before"))?,
        public_key_fingerprint: row.get("public_key_fingerprint"),
        ca_key_fingerprint: row.get("ca_key_fingerprint"),
        certificate: row.get("certificate"),
        issued_at: from_unix(row.get("issued_at"))?,
    })
}

async fn insert_host_certificate_in(
    executor: impl sqlx::SqliteExecutor<'_>,
    certificate: &HostCertificateRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO host_certificates (serial, host_name, key_id, principals, valid_after,
            valid_before, public_key_fingerprint, ca_key_fingerprint, certificate, issued_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(to_i64(certificate.serial)?)
    .bind(&certificate.host_name)
    .bind(&certificate.key_id)
    .bind(to_json(&certificate.principals))
    .bind(to_unix(certificate.valid_after))
    .bind(to_unix(certificate.valid_before))
    .bind(&certificate.public_key_fingerprint)
    .bind(&certificate.ca_key_fingerprint)
    .bind(&certificate.certificate)
    .bind(to_unix(certificate.issued_at))
    .execute(executor)
    .await
    .map_err(query_error)?;
    Ok(())
}

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn krl_version(&self) -> StoreResult<u64> {
        let row = sqlx::query("SELECT version FROM krl_state WHERE id = 1")
            .fetch_one(self.pool())
            .await
            .map_err(query_error)?;
        to_u64(row.get("version"))
    }

    async fn krl_contents(&self, now: DateTime<Utc>) -> StoreResult<KrlContents> {
        // One read transaction: the version and the entries come from the same snapshot.
        let mut transaction = self.pool().begin().await.map_err(query_error)?;

        let version_row = sqlx::query("SELECT version FROM krl_state WHERE id = 1")
            .fetch_one(&mut *transaction)
            .await
            .map_err(query_error)?;
        let certificate_rows = sqlx::query(
            "SELECT serial, ca_key_fingerprint, valid_before FROM certificates
             WHERE valid_before > ?
               AND (serial IN (SELECT serial FROM revoked_certificates)
                    OR grant_id IN (SELECT grant_id FROM revoked_grants))
             ORDER BY serial",
        )
        .bind(to_unix(now))
        .fetch_all(&mut *transaction)
        .await
        .map_err(query_error)?;
        let key_rows = sqlx::query("SELECT fingerprint FROM revoked_keys ORDER BY fingerprint")
            .fetch_all(&mut *transaction)
            .await
            .map_err(query_error)?;
        transaction.commit().await.map_err(query_error)?;

        let mut certificates = Vec::with_capacity(certificate_rows.len());
        for row in &certificate_rows {
            certificates.push(RevokedCertificate {
                serial: to_u64(row.get("serial"))?,
                ca_key_fingerprint: row.get("ca_key_fingerprint"),
                valid_before: from_unix(row.get("valid_before"))?,
            });
        }
        Ok(KrlContents {
            version: to_u64(version_row.get("version"))?,
            certificates,
            key_fingerprints: key_rows.iter().map(|row| row.get("fingerprint")).collect(),
        })
    }

    async fn record_revocation(
        &self,
        revocation: &RevocationRecord,
        changes: &RevocationChanges,
    ) -> StoreResult<u64> {
        let _writing = self.writing().await;
        let mut transaction = self.pool().begin().await.map_err(query_error)?;

        // The increment comes first so the revocation row can name the version it lands in.
        let version_row = sqlx::query(
            "UPDATE krl_state SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *transaction)
        .await
        .map_err(query_error)?;
        let version = to_u64(version_row.get("version"))?;

        sqlx::query(
            "INSERT INTO revocations (id, kind, target, reason, actor_issuer, actor_subject,
                actor_email, created_at, krl_version)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&revocation.id)
        .bind(revocation.kind.as_str())
        .bind(&revocation.target)
        .bind(&revocation.reason)
        .bind(&revocation.actor.issuer)
        .bind(&revocation.actor.subject)
        .bind(&revocation.actor.email)
        .bind(to_unix(revocation.created_at))
        .bind(to_i64(version)?)
        .execute(&mut *transaction)
        .await
        .map_err(query_error)?;

        for grant_id in &changes.grant_ids {
            sqlx::query(
                "INSERT INTO revoked_grants (grant_id, revocation_id) VALUES (?, ?)
                 ON CONFLICT (grant_id) DO NOTHING",
            )
            .bind(grant_id)
            .bind(&revocation.id)
            .execute(&mut *transaction)
            .await
            .map_err(query_error)?;
        }
        for serial in &changes.serials {
            sqlx::query(
                "INSERT INTO revoked_certificates (serial, revocation_id) VALUES (?, ?)
                 ON CONFLICT (serial) DO NOTHING",
            )
            .bind(to_i64(*serial)?)
            .bind(&revocation.id)
            .execute(&mut *transaction)
            .await
            .map_err(query_error)?;
        }
        if let Some(key) = &changes.key {
            sqlx::query(
                "INSERT INTO revoked_keys (fingerprint, public_key, revocation_id) VALUES (?, ?, ?)
                 ON CONFLICT (fingerprint) DO NOTHING",
            )
            .bind(&key.fingerprint)
            .bind(&key.public_key)
            .bind(&revocation.id)
            .execute(&mut *transaction)
            .await
            .map_err(query_error)?;
        }

        transaction.commit().await.map_err(query_error)?;
        Ok(version)
    }

    async fn revocable_grant(&self, grant_id: &str) -> StoreResult<Option<RevocableGrant>> {
        let row = sqlx::query(&format!("{REVOCABLE_GRANT_QUERY} WHERE grants.id = ?"))
            .bind(grant_id)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error)?;
        row.as_ref().map(revocable_grant_from_row).transpose()
    }

    async fn certificates_of_grant(&self, grant_id: &str) -> StoreResult<Vec<CertificateRecord>> {
        let rows = sqlx::query("SELECT * FROM certificates WHERE grant_id = ? ORDER BY serial")
            .bind(grant_id)
            .fetch_all(self.pool())
            .await
            .map_err(query_error)?;
        rows.iter().map(certificate_from_row).collect()
    }

    async fn revocable_certificate(
        &self,
        serial: u64,
    ) -> StoreResult<Option<(CertificateRecord, bool)>> {
        let row = sqlx::query(
            "SELECT certificates.*,
                (EXISTS (SELECT 1 FROM revoked_certificates
                         WHERE revoked_certificates.serial = certificates.serial)
                 OR EXISTS (SELECT 1 FROM revoked_grants
                            WHERE revoked_grants.grant_id = certificates.grant_id)) AS revoked
             FROM certificates WHERE serial = ?",
        )
        .bind(to_i64(serial)?)
        .fetch_optional(self.pool())
        .await
        .map_err(query_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some((certificate_from_row(&row)?, row.get("revoked"))))
    }

    async fn active_grants_of_email(
        &self,
        email: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<RevocableGrant>> {
        let rows = sqlx::query(&format!(
            "{REVOCABLE_GRANT_QUERY}
             WHERE grants.holder_email = ? AND grants.ends_at > ?
               AND grants.id NOT IN (SELECT grant_id FROM revoked_grants)
             ORDER BY grants.created_at, grants.id"
        ))
        .bind(email)
        .bind(to_unix(now))
        .fetch_all(self.pool())
        .await
        .map_err(query_error)?;
        rows.iter().map(revocable_grant_from_row).collect()
    }

    async fn certificates_of_key(&self, fingerprint: &str) -> StoreResult<Vec<CertificateRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM certificates WHERE public_key_fingerprint = ? ORDER BY serial",
        )
        .bind(fingerprint)
        .fetch_all(self.pool())
        .await
        .map_err(query_error)?;
        rows.iter().map(certificate_from_row).collect()
    }

    async fn is_key_revoked(&self, fingerprint: &str) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM revoked_keys WHERE fingerprint = ?) AS revoked",
        )
        .bind(fingerprint)
        .fetch_one(self.pool())
        .await
        .map_err(query_error)?;
        Ok(row.get("revoked"))
    }

    async fn ca_key_in_use(
        &self,
        ca_key_fingerprint: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM certificates
                            WHERE ca_key_fingerprint = ?1 AND valid_before > ?2)
                 OR EXISTS (SELECT 1 FROM host_certificates
                            WHERE ca_key_fingerprint = ?1 AND valid_before > ?2) AS in_use",
        )
        .bind(ca_key_fingerprint)
        .bind(to_unix(now))
        .fetch_one(self.pool())
        .await
        .map_err(query_error)?;
        Ok(row.get("in_use"))
    }

    async fn insert_enrollment_token(&self, token: &EnrollmentToken) -> StoreResult<()> {
        let _writing = self.writing().await;
        sqlx::query(
            "INSERT INTO host_enrollment_tokens (token_sha256, host_name, groups, created_at,
                expires_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&token.token_sha256)
        .bind(&token.host_name)
        .bind(to_json(&token.groups))
        .bind(to_unix(token.created_at))
        .bind(to_unix(token.expires_at))
        .execute(self.pool())
        .await
        .map_err(query_error)?;
        Ok(())
    }

    async fn find_enrollment_token(
        &self,
        host_name: &str,
        token_sha256: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EnrollmentToken>> {
        let row = sqlx::query(
            "SELECT * FROM host_enrollment_tokens
             WHERE token_sha256 = ? AND host_name = ? AND consumed_at IS NULL AND expires_at > ?",
        )
        .bind(token_sha256)
        .bind(host_name)
        .bind(to_unix(now))
        .fetch_optional(self.pool())
        .await
        .map_err(query_error)?;
        row.as_ref().map(enrollment_token_from_row).transpose()
    }

    async fn enroll_host(
        &self,
        token_sha256: &str,
        now: DateTime<Utc>,
        host: &HostRecord,
        certificate: &HostCertificateRecord,
    ) -> StoreResult<bool> {
        let _writing = self.writing().await;
        let mut transaction = self.pool().begin().await.map_err(query_error)?;

        // Consuming first: of two enrolments racing with one token, one updates the row and
        // the other finds nothing left to consume.
        let consumed = sqlx::query(
            "UPDATE host_enrollment_tokens SET consumed_at = ?
             WHERE token_sha256 = ? AND host_name = ? AND consumed_at IS NULL AND expires_at > ?",
        )
        .bind(to_unix(now))
        .bind(token_sha256)
        .bind(&host.name)
        .bind(to_unix(now))
        .execute(&mut *transaction)
        .await
        .map_err(query_error)?;
        if consumed.rows_affected() != 1 {
            transaction.rollback().await.map_err(query_error)?;
            return Ok(false);
        }

        sqlx::query(
            "INSERT INTO hosts (name, public_key, public_key_fingerprint, groups, enrolled_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET public_key = excluded.public_key,
                public_key_fingerprint = excluded.public_key_fingerprint,
                groups = excluded.groups, enrolled_at = excluded.enrolled_at",
        )
        .bind(&host.name)
        .bind(&host.public_key)
        .bind(&host.public_key_fingerprint)
        .bind(to_json(&host.groups))
        .bind(to_unix(host.enrolled_at))
        .execute(&mut *transaction)
        .await
        .map_err(query_error)?;
        insert_host_certificate_in(&mut *transaction, certificate).await?;

        transaction.commit().await.map_err(query_error)?;
        Ok(true)
    }

    async fn find_host(&self, name: &str) -> StoreResult<Option<HostRecord>> {
        let row = sqlx::query("SELECT * FROM hosts WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error)?;
        row.as_ref().map(host_from_row).transpose()
    }

    async fn latest_host_certificate(
        &self,
        host_name: &str,
    ) -> StoreResult<Option<HostCertificateRecord>> {
        let row = sqlx::query(
            "SELECT * FROM host_certificates WHERE host_name = ? ORDER BY serial DESC LIMIT 1",
        )
        .bind(host_name)
        .fetch_optional(self.pool())
        .await
        .map_err(query_error)?;
        row.as_ref().map(host_certificate_from_row).transpose()
    }

    async fn record_host_certificate(
        &self,
        certificate: &HostCertificateRecord,
    ) -> StoreResult<()> {
        let _writing = self.writing().await;
        insert_host_certificate_in(self.pool(), certificate).await
    }
}

#[cfg(test)]
mod tests {
    use jit_proto::revocation::RevocationKind;

    use super::*;
    use crate::store::revocation::RevokedKey;
    use crate::store::Person;

    async fn open_temporary() -> (tempfile::TempDir, String, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("jit.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        (dir, url, store)
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn revocation(id: &str) -> RevocationRecord {
        RevocationRecord {
            id: id.into(),
            kind: RevocationKind::Key,
            target: "SHA256:x".into(),
            reason: "laptop stolen".into(),
            actor: Person {
                issuer: "https://idp".into(),
                subject: "alice".into(),
                email: Some("alice@example.com".into()),
                groups: Vec::new(),
            },
            created_at: at(0),
        }
    }

    fn key_change(fingerprint: &str) -> RevocationChanges {
        RevocationChanges {
            key: Some(RevokedKey {
                fingerprint: fingerprint.into(),
                public_key: "ssh-ed25519 AAAA".into(),
            }),
            ..RevocationChanges::default()
        }
    }

    #[tokio::test]
    async fn krl_version_grows_with_each_revocation_and_survives_reopening() {
        let (_dir, url, store) = open_temporary().await;
        let initial = store.krl_version().await.unwrap();

        let first = store
            .record_revocation(&revocation("v-1"), &key_change("SHA256:a"))
            .await
            .unwrap();
        let second = store
            .record_revocation(&revocation("v-2"), &key_change("SHA256:b"))
            .await
            .unwrap();
        drop(store);
        let reopened = SqliteStore::open(&url).await.unwrap();
        let contents = reopened.krl_contents(at(0)).await.unwrap();

        assert_eq!((initial, first, second), (1, 2, 3));
        assert_eq!(contents.version, 3);
        assert_eq!(contents.key_fingerprints, ["SHA256:a", "SHA256:b"]);
        assert!(reopened.is_key_revoked("SHA256:a").await.unwrap());
        assert!(!reopened.is_key_revoked("SHA256:c").await.unwrap());
    }

    #[tokio::test]
    async fn a_failed_revocation_leaves_the_version_alone() {
        let (_dir, _url, store) = open_temporary().await;
        store
            .record_revocation(&revocation("v-1"), &key_change("SHA256:a"))
            .await
            .unwrap();

        // The same id again violates the primary key: the whole transaction is undone.
        let duplicate = store
            .record_revocation(&revocation("v-1"), &key_change("SHA256:b"))
            .await;

        assert!(duplicate.is_err());
        assert_eq!(store.krl_version().await.unwrap(), 2);
        assert!(!store.is_key_revoked("SHA256:b").await.unwrap());
    }

    fn host(name: &str) -> HostRecord {
        HostRecord {
            name: name.into(),
            public_key: "ssh-ed25519 AAAA host".into(),
            public_key_fingerprint: "SHA256:host".into(),
            groups: vec!["db-prod".into()],
            enrolled_at: at(0),
        }
    }

    fn host_certificate(serial: u64, name: &str) -> HostCertificateRecord {
        HostCertificateRecord {
            serial,
            host_name: name.into(),
            key_id: format!("host:{name}/{serial}"),
            principals: vec![name.into()],
            valid_after: at(-300),
            valid_before: at(86_400),
            public_key_fingerprint: "SHA256:host".into(),
            ca_key_fingerprint: "SHA256:ca".into(),
            certificate: "ssh-ed25519-cert-v01@openssh.com AAAA".into(),
            issued_at: at(0),
        }
    }

    fn token(hash: &str, expires_at: DateTime<Utc>) -> EnrollmentToken {
        EnrollmentToken {
            token_sha256: hash.into(),
            host_name: "db-1".into(),
            groups: vec!["db-prod".into()],
            created_at: at(-60),
            expires_at,
        }
    }

    #[tokio::test]
    async fn an_enrolment_token_opens_exactly_one_enrolment() {
        let (_dir, _url, store) = open_temporary().await;
        store
            .insert_enrollment_token(&token("aa", at(3600)))
            .await
            .unwrap();

        let found = store
            .find_enrollment_token("db-1", "aa", at(0))
            .await
            .unwrap();
        let other_host = store
            .find_enrollment_token("db-2", "aa", at(0))
            .await
            .unwrap();
        let first = store
            .enroll_host("aa", at(0), &host("db-1"), &host_certificate(5, "db-1"))
            .await
            .unwrap();
        let second = store
            .enroll_host("aa", at(1), &host("db-1"), &host_certificate(6, "db-1"))
            .await
            .unwrap();

        assert!(found.is_some());
        assert!(other_host.is_none());
        assert!(first);
        assert!(!second);
        let latest = store
            .latest_host_certificate("db-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest.serial, 5);
        assert_eq!(store.find_host("db-1").await.unwrap(), Some(host("db-1")));
        assert!(store.ca_key_in_use("SHA256:ca", at(0)).await.unwrap());
        assert!(!store.ca_key_in_use("SHA256:ca", at(86_400)).await.unwrap());
    }

    #[tokio::test]
    async fn expired_tokens_enrol_nothing() {
        let (_dir, _url, store) = open_temporary().await;
        store
            .insert_enrollment_token(&token("bb", at(10)))
            .await
            .unwrap();

        let late = store
            .enroll_host("bb", at(10), &host("db-1"), &host_certificate(5, "db-1"))
            .await
            .unwrap();

        assert!(!late);
        assert!(store.find_host("db-1").await.unwrap().is_none());
    }
}
