//! Who may read the audit log: the Cedar `audit` action on the one `AuditLog::"log"` entity.
//!
//! The rules decide, like every other access here; for example
//! `permit (principal in Group::"auditors", action == Action::"audit", resource);`. The context
//! has the shape of a request's, with empty request fields, so that rules which name no action
//! still validate and still apply (a time-of-day `forbid` covers auditors too).

use std::collections::HashSet;

use cedar_policy::{Authorizer, Context, Entities, Entity, Request, RestrictedExpression};
use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::identity::Identity;
use crate::policy::rules::{uid, user_entity, verdict};
use crate::policy::{Policy, RuleVerdict};

/// Asks the rules whether `identity` may read the audit log at `now`. Anything that cannot be
/// evaluated denies.
pub fn may_read_audit(policy: &Policy, identity: &Identity, now: DateTime<Utc>) -> RuleVerdict {
    decide(policy, identity, now).unwrap_or_else(RuleVerdict::unevaluable)
}

fn decide(policy: &Policy, identity: &Identity, now: DateTime<Utc>) -> Result<RuleVerdict, String> {
    let (policies, schema) = policy.rules.cedar();
    let mut entities = Vec::new();

    let user_uid = user_entity(identity, &mut entities)?;
    let log_uid = uid("AuditLog", "log")?;
    entities.push(Entity::new_no_attrs(log_uid.clone(), HashSet::new()));
    let entities =
        Entities::from_entities(entities, Some(schema)).map_err(|error| error.to_string())?;

    let text = |value: &str| RestrictedExpression::new_string(value.to_owned());
    let amr =
        RestrictedExpression::new_set(identity.auth_methods.iter().map(|method| text(method)));
    let context = Context::from_pairs([
        ("profile".into(), text("")),
        ("unix_users".into(), RestrictedExpression::new_set([])),
        ("duration_secs".into(), RestrictedExpression::new_long(0)),
        ("reason".into(), text("")),
        ("ticket".into(), text("")),
        (
            "now".into(),
            RestrictedExpression::new_long(now.timestamp()),
        ),
        (
            "hour_utc".into(),
            RestrictedExpression::new_long(i64::from(now.hour())),
        ),
        (
            "weekday".into(),
            RestrictedExpression::new_long(i64::from(now.weekday().number_from_monday())),
        ),
        ("amr".into(), amr),
    ])
    .map_err(|error| error.to_string())?;
    let request = Request::new(
        user_uid,
        uid("Action", "audit")?,
        log_uid,
        context,
        Some(schema),
    )
    .map_err(|error| error.to_string())?;

    let response = Authorizer::new().is_authorized(&request, policies, &entities);
    Ok(verdict(&response))
}
