//! The approval workflow: reviews, cancellation, extension, break-glass acknowledgement, expiry
//! and the notifications that go with them.
//!
//! The mechanics here are not policy and hold for every profile: the requester never counts as
//! an approver of their own request; each approver counts once; one denial denies; only a
//! pending, unexpired request can be reviewed; the grant's clock starts at the final approval
//! (or at the planned start, never earlier). Who may review which request is policy: the Cedar
//! `approve` action. Counting happens inside one store transaction, so concurrent reviews never
//! double-count and never create two grants.

use chrono::{DateTime, SubsecRound, Utc};
use jit_proto::{
    AccessRequestView, ExtendBody, HistoryEvent, RequestHistory, RequestStatus, ReviewList,
};
use serde_json::json;

use crate::identity::Identity;
use crate::notify::Notification;
use crate::policy::{RequestInput, ReviewFacts};
use crate::service::{
    clip, effective_status, new_id, owned_by, person, to_delta, CertificateShape, ClientInfo,
    Service, ServiceError,
};
use crate::signer::parse_subject_key;
use crate::store::{Extension, GrantRecord, Person, RequestRecord, Review, ReviewResult, Verdict};

/// Longest review comment or denial reason kept, in bytes.
const MAX_COMMENT_BYTES: usize = 1024;

/// Most requests `reviews` looks at.
const REVIEW_SCAN_LIMIT: u32 = 500;

fn name_of(person: &Person) -> &str {
    person.email.as_deref().unwrap_or(&person.subject)
}

fn check_comment(comment: &str) -> Result<(), ServiceError> {
    if comment.len() > MAX_COMMENT_BYTES {
        return Err(ServiceError::BadRequest(format!(
            "comment is longer than {MAX_COMMENT_BYTES} bytes"
        )));
    }
    if comment.chars().any(char::is_control) {
        return Err(ServiceError::BadRequest(
            "comment holds control characters".into(),
        ));
    }
    Ok(())
}

impl Service {
    /// The profile a stored request or grant names; refused when it has been removed from
    /// `profiles.toml` since the request was made.
    fn profile(&self, name: &str) -> Result<&crate::policy::Profile, ServiceError> {
        self.policy
            .profiles
            .profiles
            .get(name)
            .ok_or_else(|| ServiceError::BadRequest("the profile no longer exists".into()))
    }

    async fn load_request(&self, request_id: &str) -> Result<RequestRecord, ServiceError> {
        self.store
            .find_request(request_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(clip(request_id)))
    }

    /// Whether the Cedar rules let `reviewer` review `request` at `now`.
    fn may_review(&self, reviewer: &Identity, request: &RequestRecord, now: DateTime<Utc>) -> bool {
        let facts = ReviewFacts {
            profile: &request.profile,
            target: &request.target,
            unix_users: &request.unix_users,
            duration_secs: request.duration_secs,
            reason: &request.reason,
            ticket: request.ticket.as_deref().unwrap_or_default(),
        };
        self.policy.may_review(reviewer, &facts, now).allowed
    }

    /// Refuses reviews of one's own request and reviews the rules do not allow.
    fn check_reviewer(
        &self,
        reviewer: &Identity,
        request: &RequestRecord,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        if owned_by(&request.requester, reviewer) {
            return Err(ServiceError::Forbidden(
                "you cannot review your own request".into(),
            ));
        }
        if !self.may_review(reviewer, request, now) {
            return Err(ServiceError::Forbidden(format!(
                "you may not review requests for profile `{}` on `{}`",
                request.profile, request.target
            )));
        }
        Ok(())
    }

    /// Approves `request_id` as `reviewer`. The last needed approval creates the grant and its
    /// certificate; for a break-glass activation, approving acknowledges it after the fact.
    pub async fn approve(
        &self,
        reviewer: &Identity,
        request_id: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessRequestView, ServiceError> {
        check_comment(comment)?;
        let request = self.load_request(request_id).await?;
        self.check_reviewer(reviewer, &request, now)?;

        if request.break_glass {
            let actor = reviewer.display_name();
            if !self
                .store
                .acknowledge(&request.id, actor, comment, now)
                .await?
            {
                return Err(ServiceError::Conflict {
                    code: "already_acknowledged",
                    message: "this break-glass activation was already acknowledged".into(),
                });
            }
            self.audit_review(&request, reviewer, "acknowledge", comment, 0, now)
                .await?;
            let acknowledged = self.load_request(request_id).await?;
            return self.view_of(&acknowledged, now).await;
        }
        if let Some(grant_id) = &request.extends_grant {
            self.check_extendable(grant_id, now).await?;
        }

        let review = Review {
            request_id: request.id.clone(),
            reviewer: person(reviewer),
            verdict: Verdict::Approve,
            comment: comment.to_owned(),
            at: now,
        };
        let result = self
            .store
            .record_review(&review, request.required_approvals)
            .await?;
        match result {
            ReviewResult::Counted(approvers) => {
                self.audit_review(&request, reviewer, "approve", comment, approvers.len(), now)
                    .await?;
            }
            ReviewResult::Approved(approvers) => {
                self.audit_review(&request, reviewer, "approve", comment, approvers.len(), now)
                    .await?;
                self.complete_approval(&request, now).await?;
            }
            ReviewResult::AlreadyReviewed => {
                return Err(ServiceError::Conflict {
                    code: "already_reviewed",
                    message: "you already reviewed this request; each approver counts once".into(),
                })
            }
            ReviewResult::NotPending(status) => return Err(not_pending(status)),
            ReviewResult::Denied => {}
        }
        let reviewed = self.load_request(request_id).await?;
        self.view_of(&reviewed, now).await
    }

    /// Denies `request_id`; one denial ends the request.
    pub async fn deny(
        &self,
        reviewer: &Identity,
        request_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessRequestView, ServiceError> {
        if reason.trim().is_empty() {
            return Err(ServiceError::BadRequest("a denial needs a reason".into()));
        }
        check_comment(reason)?;
        let request = self.load_request(request_id).await?;
        self.check_reviewer(reviewer, &request, now)?;
        if request.break_glass {
            return Err(ServiceError::Conflict {
                code: "not_pending",
                message: "a break-glass activation is reviewed, not denied; revoke its grant"
                    .into(),
            });
        }

        let review = Review {
            request_id: request.id.clone(),
            reviewer: person(reviewer),
            verdict: Verdict::Deny,
            comment: reason.to_owned(),
            at: now,
        };
        match self
            .store
            .record_review(&review, request.required_approvals)
            .await?
        {
            ReviewResult::Denied => {
                self.audit_review(&request, reviewer, "deny", reason, 0, now)
                    .await?;
            }
            ReviewResult::AlreadyReviewed => {
                return Err(ServiceError::Conflict {
                    code: "already_reviewed",
                    message: "you already reviewed this request".into(),
                })
            }
            ReviewResult::NotPending(status) => return Err(not_pending(status)),
            ReviewResult::Counted(_) | ReviewResult::Approved(_) => {}
        }

        let text = format!(
            "{} denied {}'s request for `{}` on {}: {}",
            reviewer.display_name(),
            name_of(&request.requester),
            request.profile,
            request.target,
            reason
        );
        self.notify(None, "request_denied", text, &request);
        let denied = self.load_request(request_id).await?;
        self.view_of(&denied, now).await
    }

    /// Withdraws a pending request; only its requester may.
    pub async fn cancel(
        &self,
        requester: &Identity,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<AccessRequestView, ServiceError> {
        let request = self.load_request(request_id).await?;
        if !owned_by(&request.requester, requester) {
            return Err(ServiceError::NotFound(clip(request_id)));
        }
        if !self
            .store
            .cancel_request(&request.id, requester.display_name(), now)
            .await?
        {
            return Err(not_pending(effective_status(&request, now)));
        }
        let cancelled = self.load_request(request_id).await?;
        self.view_of(&cancelled, now).await
    }

    /// Creates the grant of a request whose last approval just arrived (or, for an extension,
    /// moves its grant's end) and notifies the requester. A grant is created once per request:
    /// a second caller, such as the requester's poll racing the approval, finds it and returns.
    async fn complete_approval(
        &self,
        request: &RequestRecord,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        let profile = self.profile(&request.profile)?;
        let shape = CertificateShape::from_profile(profile);
        let subject_key = parse_subject_key(&request.public_key)?;
        let client = stored_client(request)?;

        if let Some(grant_id) = &request.extends_grant {
            let grant = self
                .store
                .find_grant(grant_id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(clip(grant_id)))?;
            let new_end = extended_end(&grant.grant, request.duration_secs, profile, now)?;
            let mut extended = grant.grant.clone();
            extended.ends_at = new_end;
            let certificate = self
                .sign_for_grant(&extended, &shape, subject_key, &client, now)
                .await?;
            self.audit_issuance(&extended, &certificate, false, now)
                .await?;
            let extension = Extension {
                request: request.clone(),
                grant_id: grant_id.clone(),
                new_end,
                certificate,
            };
            self.store.record_extension(&extension, false).await?;
        } else {
            // The approver's review and the requester's poll can both arrive here for the same
            // request; whoever takes the lock second finds the grant and signs nothing.
            let _completing = self.grant_completion.lock().await;
            if self.has_grant(request).await? {
                return Ok(());
            }

            // The grant's clock starts at the final approval, or at the planned start.
            let starts_at = request.start_at.filter(|start| *start > now).unwrap_or(now);
            let starts_at = starts_at.trunc_subsecs(0);
            let duration = std::time::Duration::from_secs(request.duration_secs);
            let grant = GrantRecord {
                id: new_id("g"),
                request_id: request.id.clone(),
                profile: request.profile.clone(),
                target: request.target.clone(),
                principals: request.principals.clone(),
                starts_at,
                ends_at: starts_at + to_delta(duration),
                holder: request.requester.clone(),
                created_at: now,
            };
            let certificate = self
                .sign_for_grant(&grant, &shape, subject_key, &client, now)
                .await?;
            let serial = certificate.serial;
            // Recorded before it is stored: a certificate anyone can fetch has its record.
            self.audit_issuance(&grant, &certificate, true, now).await?;
            let recorded = self.store.record_grant(&grant, &certificate).await?;
            if !recorded {
                // Only another replica sharing the store gets here; its grant stands, and the
                // audit log shows a certificate signed here that was never delivered.
                tracing::warn!(
                    target: "security",
                    request_id = %request.id,
                    serial,
                    "grant was created elsewhere first; this certificate is not delivered"
                );
                return Ok(());
            }
            tracing::info!(
                target: "security",
                request_id = %request.id,
                grant_id = %grant.id,
                serial,
                user = name_of(&request.requester),
                profile = %request.profile,
                host = %request.target,
                "certificate issued after approval"
            );
        }

        let text = format!(
            "{}'s request for `{}` on {} is approved",
            name_of(&request.requester),
            request.profile,
            request.target
        );
        self.notify(None, "request_approved", text, request);
        Ok(())
    }

    /// Finishes a request that was approved but whose grant was not written (the CA stopped in
    /// between); a no-op otherwise. Called when the requester reads the request.
    pub(crate) async fn ensure_grant(
        &self,
        request: &RequestRecord,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        if request.status != RequestStatus::Approved || request.extends_grant.is_some() {
            return Ok(());
        }
        if self.has_grant(request).await? {
            return Ok(());
        }
        self.complete_approval(request, now).await
    }

    async fn has_grant(&self, request: &RequestRecord) -> Result<bool, ServiceError> {
        Ok(self
            .store
            .find_grant_by_request(&request.id)
            .await?
            .is_some())
    }

    /// Asks for more time on an active grant: a new request, judged by the same policy, that
    /// moves the grant's end and re-issues its certificate once approved.
    pub async fn extend(
        &self,
        requester: &Identity,
        grant_id: &str,
        body: ExtendBody,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<AccessRequestView, ServiceError> {
        let not_found = || ServiceError::NotFound(clip(grant_id));
        let grant = self
            .store
            .find_grant(grant_id)
            .await?
            .ok_or_else(not_found)?;
        if !owned_by(&grant.grant.holder, requester) {
            return Err(not_found());
        }
        self.check_extendable(&grant.grant.id, now).await?;
        if body.duration_secs == 0 {
            return Err(ServiceError::BadRequest(
                "duration must be longer than zero".into(),
            ));
        }
        let original = self.load_request(&grant.grant.request_id).await?;

        let input = RequestInput {
            profile: grant.grant.profile.clone(),
            target: grant.grant.target.clone(),
            unix_user: match original.unix_users.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
            duration: Some(std::time::Duration::from_secs(body.duration_secs)),
            reason: body.reason,
            ticket: body.ticket.filter(|ticket| !ticket.is_empty()),
        };
        let decision = self.policy.decide(requester, &input, now)?;
        let profile = self.profile(&decision.profile)?;
        let new_end = extended_end(&grant.grant, decision.duration.as_secs(), profile, now)?;

        let mut request = RequestRecord {
            id: new_id("r"),
            status: RequestStatus::Pending,
            profile: decision.profile.clone(),
            target: grant.grant.target.clone(),
            unix_users: original.unix_users.clone(),
            principals: grant.grant.principals.clone(),
            duration_secs: decision.duration.as_secs(),
            reason: input.reason,
            ticket: input.ticket,
            requester: person(requester),
            public_key: original.public_key.clone(),
            client_address: client.address.to_string(),
            user_agent: client.user_agent.clone(),
            created_at: now,
            expires_at: now + to_delta(decision.request_ttl),
            required_approvals: decision.required_approvals,
            decision_rules: decision.request_rule_ids.clone(),
            start_at: None,
            extends_grant: Some(grant.grant.id.clone()),
            // More break-glass time is break-glass again: alerted now, reviewed afterwards.
            break_glass: decision.break_glass,
            acknowledged_by: None,
        };

        if !decision.auto_approved {
            self.audit_request(requester, &request, &decision, None, now)
                .await?;
            self.store.insert_request(&request).await?;
            self.notify_pending(&request);
            return self.view_of(&request, now).await;
        }

        request.status = RequestStatus::Approved;
        let mut extended = grant.grant.clone();
        extended.ends_at = new_end;
        let subject_key = parse_subject_key(&original.public_key)?;
        let certificate = self
            .sign_for_grant(
                &extended,
                &CertificateShape::from_decision(&decision),
                subject_key,
                client,
                now,
            )
            .await?;
        tracing::info!(
            target: "security",
            request_id = %request.id,
            grant_id = %extended.id,
            serial = certificate.serial,
            user = requester.display_name(),
            ends_at = %new_end.to_rfc3339(),
            "grant extended"
        );
        let issued = Some((&extended, &certificate));
        self.audit_request(requester, &request, &decision, issued, now)
            .await?;
        let extension = Extension {
            request: request.clone(),
            grant_id: grant.grant.id.clone(),
            new_end,
            certificate,
        };
        self.store.record_extension(&extension, true).await?;
        if request.break_glass {
            self.notify_break_glass(&request, &extended);
        }
        self.view_of(&request, now).await
    }

    /// Refuses to extend a grant that has ended or that a revocation ended: a new certificate
    /// for it would undo the end.
    async fn check_extendable(
        &self,
        grant_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        let grant = self
            .store
            .revocable_grant(grant_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(clip(grant_id)))?;
        if grant.revoked {
            return Err(ServiceError::Conflict {
                code: "grant_revoked",
                message: "the grant was revoked; make a new request".into(),
            });
        }
        if now >= grant.grant.ends_at {
            return Err(ServiceError::Conflict {
                code: "grant_ended",
                message: "the grant has ended; make a new request".into(),
            });
        }
        Ok(())
    }

    /// Requests `reviewer` may review now: pending ones and unacknowledged break-glass
    /// activations, never their own.
    pub async fn reviews(
        &self,
        reviewer: &Identity,
        now: DateTime<Utc>,
    ) -> Result<ReviewList, ServiceError> {
        let open = self.store.open_for_review(now, REVIEW_SCAN_LIMIT).await?;
        let mut requests = Vec::new();
        for request in open {
            if owned_by(&request.requester, reviewer) || !self.may_review(reviewer, &request, now) {
                continue;
            }
            requests.push(self.view_of(&request, now).await?);
        }
        Ok(ReviewList { requests })
    }

    /// A request's history, for its requester and for those who may review it.
    pub async fn history(
        &self,
        identity: &Identity,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<RequestHistory, ServiceError> {
        let request = self.load_request(request_id).await?;
        if !owned_by(&request.requester, identity) && !self.may_review(identity, &request, now) {
            return Err(ServiceError::NotFound(clip(request_id)));
        }
        let events = self
            .store
            .history(&request.id)
            .await?
            .into_iter()
            .map(|event| HistoryEvent {
                at: event.at,
                actor: event.actor,
                kind: event.kind,
                detail: event.detail,
            })
            .collect();
        Ok(RequestHistory {
            request: self.view_of(&request, now).await?,
            events,
        })
    }

    /// Background work at `now`: expires pending requests past their deadline and alerts about
    /// break-glass grants that ended without review. Returns how many requests expired.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<usize, ServiceError> {
        let expired = self.store.expire_pending(now).await?;
        for request in &expired {
            tracing::info!(request_id = %request.id, "request expired without approval");
            let text = format!(
                "{}'s request for `{}` on {} expired without approval",
                name_of(&request.requester),
                request.profile,
                request.target
            );
            self.notify(None, "request_expired", text, request);
        }

        for request in self.store.take_unreviewed_break_glass(now).await? {
            tracing::warn!(
                target: "security",
                request_id = %request.id,
                user = name_of(&request.requester),
                "break-glass grant ended without review"
            );
            let text = format!(
                "BREAK-GLASS by {} on {} ended WITHOUT REVIEW (ticket {}): {}",
                name_of(&request.requester),
                request.target,
                request.ticket.as_deref().unwrap_or("-"),
                request.reason
            );
            let url = self.approver_channel(&request);
            self.notify(url, "break_glass_unreviewed", text, &request);
        }
        Ok(expired.len())
    }

    fn approver_channel(&self, request: &RequestRecord) -> Option<String> {
        self.policy
            .profiles
            .profiles
            .get(&request.profile)
            .and_then(|profile| profile.approver_webhook.clone())
    }

    /// Tells the profile's approvers about a new pending request.
    pub(crate) fn notify_pending(&self, request: &RequestRecord) {
        let text = format!(
            "{} asks for `{}` on {} for {} ({} approval(s) needed): {}",
            name_of(&request.requester),
            request.profile,
            request.target,
            jit_proto::format_duration(std::time::Duration::from_secs(request.duration_secs)),
            request.required_approvals,
            request.reason
        );
        let url = self.approver_channel(request);
        self.notify(url, "request_pending", text, request);
    }

    /// Raises the alarm for a break-glass activation, on the approvers' channel and the default
    /// one.
    pub(crate) fn notify_break_glass(&self, request: &RequestRecord, grant: &GrantRecord) {
        tracing::warn!(
            target: "security",
            request_id = %request.id,
            grant_id = %grant.id,
            user = name_of(&request.requester),
            host = %request.target,
            ticket = request.ticket.as_deref().unwrap_or("-"),
            "BREAK-GLASS activated"
        );
        let text = format!(
            "BREAK-GLASS: {} activated `{}` on {} until {} (ticket {}): {}",
            name_of(&request.requester),
            request.profile,
            request.target,
            grant.ends_at.to_rfc3339(),
            request.ticket.as_deref().unwrap_or("-"),
            request.reason
        );
        let approver_url = self.approver_channel(request);
        let default_url = self
            .notifier
            .as_ref()
            .and_then(|notifier| notifier.default_url().map(str::to_owned));
        if approver_url.is_some() && approver_url != default_url {
            self.notify(approver_url, "break_glass", text.clone(), request);
        }
        self.notify(None, "break_glass", text, request);
    }

    /// Queues a notification to `url`, or to the default channel when `url` is `None`.
    fn notify(
        &self,
        url: Option<String>,
        event: &'static str,
        text: String,
        request: &RequestRecord,
    ) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let Some(url) = url.or_else(|| notifier.default_url().map(str::to_owned)) else {
            return;
        };
        notifier.send(Notification {
            url,
            event,
            text,
            details: json!({
                "request_id": request.id,
                "requester": name_of(&request.requester),
                "profile": request.profile,
                "host": request.target,
                "principals": request.principals,
                "duration_secs": request.duration_secs,
                "reason": request.reason,
                "ticket": request.ticket,
                "break_glass": request.break_glass,
                "extends_grant": request.extends_grant,
            }),
        });
    }
}

/// The end of `grant` after adding `extra_secs`, capped so the grant lasts at most the
/// profile's maximum from `now`.
fn extended_end(
    grant: &GrantRecord,
    extra_secs: u64,
    profile: &crate::policy::Profile,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ServiceError> {
    let wanted = grant.ends_at + to_delta(std::time::Duration::from_secs(extra_secs));
    let cap = now.trunc_subsecs(0) + to_delta(profile.max_duration);
    let new_end = wanted.min(cap);
    if new_end <= grant.ends_at {
        return Err(ServiceError::Conflict {
            code: "at_maximum",
            message: "the grant already runs to the profile's maximum".into(),
        });
    }
    Ok(new_end)
}

fn not_pending(status: RequestStatus) -> ServiceError {
    ServiceError::Conflict {
        code: "not_pending",
        message: format!("the request is {}, not pending", status.as_str()),
    }
}

/// The requester's address as recorded, for `source-address` on certificates signed later.
fn stored_client(request: &RequestRecord) -> Result<ClientInfo, ServiceError> {
    let address = request.client_address.parse().map_err(|_| {
        ServiceError::Store(crate::store::StoreError::Corrupt(format!(
            "request {} holds an unreadable client address",
            request.id
        )))
    })?;
    Ok(ClientInfo {
        address,
        user_agent: request.user_agent.clone(),
    })
}
