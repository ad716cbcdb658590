//! Cedar rules (`policy.cedar`): *who* may request which profile for which host, and which
//! requests are approved without a human.
//!
//! The schema is part of the CA, not of the configuration: it is the contract between the
//! rules an operator writes and the facts the CA supplies. Users are `User` entities whose
//! parents are their `Group`s; hosts are `Host` entities whose parents are their `HostGroup`s.
//! Every rule must carry an `@id("...")` annotation, so that a decision can name the rules that
//! made it. Rules are validated strictly against the schema when loaded; a rule that mentions an
//! unknown attribute or action stops the CA from starting.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, PrincipalConstraint, Request, Response,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use super::profiles::Target;
use crate::identity::Identity;

/// The schema every `policy.cedar` is validated against.
pub const SCHEMA: &str = r#"
entity Group;
entity User in [Group] = {
  email: String,
  subject: String,
};
entity HostGroup;
entity Host in [HostGroup];

type RequestContext = {
  profile: String,
  unix_users: Set<String>,
  duration_secs: Long,
  reason: String,
  ticket: String,
  now: Long,
  hour_utc: Long,
  weekday: Long,
  amr: Set<String>,
};

action request, auto_approve, approve appliesTo {
  principal: [User],
  resource: [Host, HostGroup],
  context: RequestContext,
};

// Revocation: a grant (a child of its host or host group) or a public key. The context holds
// every attribute of RequestContext, filled from the grant being revoked, so that a rule which
// names no action still validates; `kind` says what the caller named (grant, serial, user or
// key) and `own` whether everything revoked belongs to the caller.
entity Grant in [Host, HostGroup] = {
  profile: String,
  holder_email: String,
};
entity PublicKey;

type RevokeContext = {
  kind: String,
  own: Bool,
  profile: String,
  unix_users: Set<String>,
  duration_secs: Long,
  reason: String,
  ticket: String,
  now: Long,
  hour_utc: Long,
  weekday: Long,
  amr: Set<String>,
};

action revoke appliesTo {
  principal: [User],
  resource: [Grant, PublicKey],
  context: RevokeContext,
};

// Reading the audit log (the one `AuditLog::"log"`). The context is a RequestContext with
// empty request fields, so that a rule which names no action still validates.
entity AuditLog;

action audit appliesTo {
  principal: [User],
  resource: [AuditLog],
  context: RequestContext,
};
"#;

/// Why `policy.cedar` was refused.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct RulesError {
    /// The file.
    pub source_name: String,
    /// What is wrong.
    pub message: String,
}

/// The Cedar actions the CA asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// May this person ask for this profile on this target at all?
    Request,
    /// May the request be granted without approvers?
    AutoApprove,
    /// May this person (the principal) approve someone else's request with these facts?
    Approve,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Request => "request",
            Action::AutoApprove => "auto_approve",
            Action::Approve => "approve",
        }
    }
}

/// The facts of one request that the rules see in `context`.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    /// Who asks.
    pub identity: &'a Identity,
    /// Where.
    pub target: &'a Target,
    /// Profile name.
    pub profile: &'a str,
    /// Unix users the certificate would carry.
    pub unix_users: &'a [String],
    /// Grant length after the profile's cap, in seconds.
    pub duration_secs: u64,
    /// The requester's reason.
    pub reason: &'a str,
    /// The ticket, or empty.
    pub ticket: &'a str,
    /// The decision time, unix seconds.
    pub now: i64,
    /// Hour of day, UTC (0-23).
    pub hour_utc: u32,
    /// ISO weekday (1 = Monday).
    pub weekday: u32,
}

/// What the rules said about one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleVerdict {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// `@id`s of the rules that decided (the permits that matched, or the forbids).
    pub rule_ids: Vec<String>,
    /// Rules that failed to evaluate; they are skipped, which can only deny more.
    pub errors: Vec<String>,
}

impl RuleVerdict {
    /// The denial given when the question itself could not be put to the rules (an entity or
    /// context Cedar refused): anything that cannot be evaluated denies.
    pub fn unevaluable(error: String) -> RuleVerdict {
        RuleVerdict {
            allowed: false,
            rule_ids: Vec::new(),
            errors: vec![error],
        }
    }
}

/// A validated set of rules.
#[derive(Debug, Clone)]
pub struct Rules {
    policies: PolicySet,
    schema: Schema,
    rule_count: usize,
}

impl Rules {
    /// Parses `text`, renames each rule to its `@id`, and validates it strictly.
    pub fn parse(text: &str, source_name: &str) -> Result<Rules, RulesError> {
        let fail = |message: String| RulesError {
            source_name: source_name.to_owned(),
            message,
        };
        // The text first: refusing it costs less than building the schema.
        let parsed = PolicySet::from_str(text).map_err(|error| fail(error.to_string()))?;
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|error| fail(error.to_string()))?;
        if parsed.templates().next().is_some() {
            return Err(fail("templates are not supported".into()));
        }

        let mut policies = PolicySet::new();
        for policy in parsed.policies() {
            let id = policy.annotation("id").ok_or_else(|| {
                fail(format!(
                    "a rule has no @id(\"...\") annotation: {}",
                    first_line(&policy.to_string())
                ))
            })?;
            policies
                .add(policy.new_id(PolicyId::new(id)))
                .map_err(|_| fail(format!("two rules share @id(\"{id}\")")))?;
        }
        let rule_count = policies.policies().count();

        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let problems: Vec<String> = validation
                .validation_errors()
                .map(|error| format!("rule `{}`: {error}", error.policy_id()))
                .collect();
            return Err(fail(problems.join("; ")));
        }

        Ok(Rules {
            policies,
            schema,
            rule_count,
        })
    }

    /// Number of rules loaded.
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// The `@id`s of the permit rules whose scope covers `action`, each with the principals its
    /// scope names (`principal in Group::"approvers"`), sorted by id. Conditions are not
    /// evaluated: a rule listed here may still not admit a given request.
    pub fn permits_for(&self, action: Action) -> Vec<(String, String)> {
        let names_action = |uid: &EntityUid| uid.id().unescaped() == action.name();
        self.policies
            .policies()
            .filter(|policy| policy.effect() == Effect::Permit)
            .filter(|policy| match policy.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(uid) => names_action(&uid),
                ActionConstraint::In(uids) => uids.iter().any(names_action),
            })
            .map(|policy| {
                let principals = match policy.principal_constraint() {
                    PrincipalConstraint::Any => "any principal".to_owned(),
                    PrincipalConstraint::In(uid) => format!("principal in {uid}"),
                    PrincipalConstraint::Eq(uid) => format!("principal == {uid}"),
                    PrincipalConstraint::Is(type_name) => format!("principal is {type_name}"),
                    PrincipalConstraint::IsIn(type_name, uid) => {
                        format!("principal is {type_name} in {uid}")
                    }
                };
                (policy.id().to_string(), principals)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect()
    }

    /// The validated rules and their schema, for modules that build the entities and context
    /// of an action of their own (revocation).
    pub fn cedar(&self) -> (&PolicySet, &Schema) {
        (&self.policies, &self.schema)
    }

    /// Asks the rules about `action` for these facts. Deny unless some rule permits and none
    /// forbids (Cedar's semantics); anything that cannot be evaluated denies.
    pub fn decide(&self, action: Action, facts: &RequestFacts<'_>) -> RuleVerdict {
        self.try_decide(action, facts)
            .unwrap_or_else(RuleVerdict::unevaluable)
    }

    fn try_decide(&self, action: Action, facts: &RequestFacts<'_>) -> Result<RuleVerdict, String> {
        let identity = facts.identity;
        let mut entities = Vec::new();
        let user_uid = user_entity(identity, &mut entities)?;
        let resource_uid = target_entity(facts.target, &mut entities)?;
        let entities =
            Entities::from_entities(entities, Some(&self.schema)).map_err(|e| e.to_string())?;

        let action_uid = uid("Action", action.name())?;
        let strings = |values: &[String]| {
            RestrictedExpression::new_set(
                values
                    .iter()
                    .map(|value| RestrictedExpression::new_string(value.clone())),
            )
        };
        let context = Context::from_pairs([
            (
                "profile".into(),
                RestrictedExpression::new_string(facts.profile.into()),
            ),
            ("unix_users".into(), strings(facts.unix_users)),
            ("duration_secs".into(), long(facts.duration_secs)),
            (
                "reason".into(),
                RestrictedExpression::new_string(facts.reason.into()),
            ),
            (
                "ticket".into(),
                RestrictedExpression::new_string(facts.ticket.into()),
            ),
            ("now".into(), RestrictedExpression::new_long(facts.now)),
            ("hour_utc".into(), long(u64::from(facts.hour_utc))),
            ("weekday".into(), long(u64::from(facts.weekday))),
            ("amr".into(), strings(&identity.auth_methods)),
        ])
        .map_err(|error| error.to_string())?;
        let request = Request::new(
            user_uid,
            action_uid,
            resource_uid,
            context,
            Some(&self.schema),
        )
        .map_err(|error| error.to_string())?;

        let response = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        Ok(verdict(&response))
    }
}

/// The verdict in Cedar's answer: the permits that matched (or the forbids), and the rules
/// that failed to evaluate.
pub fn verdict(response: &Response) -> RuleVerdict {
    RuleVerdict {
        allowed: response.decision() == Decision::Allow,
        rule_ids: response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect(),
        errors: response
            .diagnostics()
            .errors()
            .map(|error| error.to_string())
            .collect(),
    }
}

/// Pushes `identity` as a `User` entity, with its `Group` parents, onto `entities`; returns
/// its uid.
pub fn user_entity(identity: &Identity, entities: &mut Vec<Entity>) -> Result<EntityUid, String> {
    let user_uid = uid("User", &identity.subject)?;
    let mut parents = HashSet::new();
    for group in &identity.groups {
        let group_uid = uid("Group", group)?;
        entities.push(Entity::new_no_attrs(group_uid.clone(), HashSet::new()));
        parents.insert(group_uid);
    }
    let attributes = HashMap::from([
        (
            "email".to_owned(),
            RestrictedExpression::new_string(identity.email.clone().unwrap_or_default()),
        ),
        (
            "subject".to_owned(),
            RestrictedExpression::new_string(identity.subject.clone()),
        ),
    ]);
    let user = Entity::new(user_uid.clone(), attributes, parents).map_err(|e| e.to_string())?;
    entities.push(user);
    Ok(user_uid)
}

/// Pushes `target` as a `Host` entity with its `HostGroup` parents, or as a `HostGroup`
/// entity, onto `entities`; returns its uid.
pub fn target_entity(target: &Target, entities: &mut Vec<Entity>) -> Result<EntityUid, String> {
    match target {
        Target::Host(host) => {
            let mut parents = HashSet::new();
            for group in &host.groups {
                let group_uid = uid("HostGroup", group)?;
                entities.push(Entity::new_no_attrs(group_uid.clone(), HashSet::new()));
                parents.insert(group_uid);
            }
            let host_uid = uid("Host", &host.name)?;
            entities.push(Entity::new_no_attrs(host_uid.clone(), parents));
            Ok(host_uid)
        }
        Target::Group(group) => {
            let group_uid = uid("HostGroup", group)?;
            entities.push(Entity::new_no_attrs(group_uid.clone(), HashSet::new()));
            Ok(group_uid)
        }
    }
}

/// The uid of entity `id` of type `type_name`.
pub fn uid(type_name: &str, id: &str) -> Result<EntityUid, String> {
    let type_name = EntityTypeName::from_str(type_name).map_err(|error| error.to_string())?;
    Ok(EntityUid::from_type_name_and_id(
        type_name,
        EntityId::new(id),
    ))
}

fn long(value: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(value).unwrap_or(i64::MAX))
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(80)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::policy::profiles::Host;

    const RULES: &str = r#"
        @id("engineers-read-only")
        permit(principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource)
        when { context.profile == "read-only" };

        @id("dba-request-root")
        permit(principal in Group::"dba", action == Action::"request", resource in HostGroup::"db-prod")
        when { context.profile == "db-root" };

        @id("no-long-root")
        forbid(principal, action, resource)
        when { context.profile == "db-root" && context.duration_secs > 3600 };
    "#;

    fn identity(groups: &[&str]) -> Identity {
        Identity {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: groups.iter().map(|group| group.to_string()).collect(),
            auth_methods: vec!["pwd".into()],
            auth_time: None,
        }
    }

    fn db_1() -> Target {
        Target::Host(Host {
            name: "db-1".into(),
            groups: BTreeSet::from(["db-prod".to_owned()]),
        })
    }

    fn facts<'a>(
        identity: &'a Identity,
        target: &'a Target,
        profile: &'a str,
        duration_secs: u64,
    ) -> RequestFacts<'a> {
        RequestFacts {
            identity,
            target,
            profile,
            unix_users: &[],
            duration_secs,
            reason: "fix it",
            ticket: "",
            now: 1_800_000_000,
            hour_utc: 10,
            weekday: 2,
        }
    }

    #[test]
    fn permits_name_their_rules_and_forbid_wins() {
        let rules = Rules::parse(RULES, "policy.cedar").unwrap();
        let dba = identity(&["dba"]);
        let target = db_1();

        let allowed = rules.decide(Action::Request, &facts(&dba, &target, "db-root", 900));
        let auto = rules.decide(Action::AutoApprove, &facts(&dba, &target, "db-root", 900));
        let too_long = rules.decide(Action::Request, &facts(&dba, &target, "db-root", 7200));

        assert!(allowed.allowed);
        assert_eq!(allowed.rule_ids, vec!["dba-request-root"]);
        assert!(!auto.allowed);
        assert!(!too_long.allowed);
        assert_eq!(too_long.rule_ids, vec!["no-long-root"]);
    }

    #[test]
    fn lists_the_permits_an_action_can_use() {
        let text = format!(
            "{RULES}\n@id(\"approvers\") permit(principal in Group::\"approvers\", \
             action == Action::\"approve\", resource);"
        );
        let rules = Rules::parse(&text, "policy.cedar").unwrap();

        assert_eq!(
            rules.permits_for(Action::Approve),
            vec![(
                "approvers".to_owned(),
                "principal in Group::\"approvers\"".to_owned()
            )]
        );
        let requesters: Vec<String> = rules
            .permits_for(Action::Request)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(requesters, ["dba-request-root", "engineers-read-only"]);
    }

    #[test]
    fn denies_by_default() {
        let rules = Rules::parse(RULES, "policy.cedar").unwrap();
        let outsider = identity(&[]);
        let target = db_1();

        let verdict = rules.decide(Action::Request, &facts(&outsider, &target, "read-only", 60));

        assert!(!verdict.allowed);
        assert!(verdict.rule_ids.is_empty());
    }

    #[test]
    fn refuses_rules_without_ids_or_off_schema() {
        let no_id = "permit(principal, action, resource);";
        let error = Rules::parse(no_id, "policy.cedar").unwrap_err();
        assert!(error.to_string().contains("@id"), "{error}");

        let off_schema =
            r#"@id("x") permit(principal, action, resource) when { context.colour == "red" };"#;
        let error = Rules::parse(off_schema, "policy.cedar").unwrap_err();
        assert!(error.to_string().contains("rule `x`"), "{error}");

        let duplicate = r#"@id("x") permit(principal, action, resource); @id("x") permit(principal, action, resource);"#;
        let error = Rules::parse(duplicate, "policy.cedar").unwrap_err();
        assert!(error.to_string().contains("share"), "{error}");
    }
}
