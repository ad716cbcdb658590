//! The access decision: profiles give a grant its shape, Cedar rules say who may have it.
//!
//! [`Policy::decide`] takes a verified identity, a request and the current time, and returns
//! either a [`Decision`] (the exact certificate shape, and whether a human must approve) or a
//! [`Refusal`] that names the requirement that failed. It does no I/O, so it is tested with fixed
//! instants and explained by `jit-ca policy explain` with the same code path.

pub mod profiles;
pub mod rules;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use jit_proto::clip_for_display as clip;

use crate::identity::Identity;
pub use profiles::{Profile, Profiles, ProfilesError, Target};
pub use rules::{Action, RequestFacts, RuleVerdict, Rules, RulesError};

/// What a requester asks for, before any decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInput {
    /// Profile name.
    pub profile: String,
    /// `host` or `group:NAME`.
    pub target: String,
    /// One of the profile's Unix users, or all of them.
    pub unix_user: Option<String>,
    /// Requested length; `None` takes the profile's default.
    pub duration: Option<Duration>,
    /// Why.
    pub reason: String,
    /// Ticket, if any.
    pub ticket: Option<String>,
}

/// Why a request is refused. The message is safe to show the requester: it names the failed
/// requirement and nothing about other users, groups or rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No profile by that name.
    #[error("unknown profile `{0}`")]
    UnknownProfile(String),
    /// The target is malformed or not in the inventory.
    #[error("{0}")]
    UnknownTarget(String),
    /// The profile does not reach that host or group.
    #[error("profile `{profile}` does not cover `{target}`")]
    TargetNotCovered {
        /// Profile name.
        profile: String,
        /// Target as requested.
        target: String,
    },
    /// The Unix user asked for is not one of the profile's.
    #[error("profile `{profile}` does not carry Unix user `{unix_user}`")]
    UnixUserNotInProfile {
        /// Profile name.
        profile: String,
        /// The user asked for.
        unix_user: String,
    },
    /// A reason is required and none was given.
    #[error("profile `{0}` requires a reason")]
    ReasonRequired(String),
    /// A reason or ticket is malformed or too long.
    #[error("{0}")]
    BadText(String),
    /// A ticket is required and none was given.
    #[error("profile `{0}` requires a ticket")]
    TicketRequired(String),
    /// The ticket does not match the profile's pattern.
    #[error("ticket does not match the pattern profile `{0}` requires")]
    TicketMalformed(String),
    /// The profile wants stronger or fresher authentication than the token shows.
    #[error("profile `{profile}` requires {requirement}; log in again")]
    StepUpRequired {
        /// Profile name.
        profile: String,
        /// What is missing, in words (`a second factor (amr otp)`, `a login within 10m`).
        requirement: String,
        /// `acr_values` to ask the provider for.
        acr_values: Option<String>,
        /// `max_age` to ask the provider for, in seconds.
        max_age_secs: Option<u64>,
    },
    /// The Cedar rules do not permit this person to request this profile for this target.
    #[error("you may not request profile `{profile}` for `{target}`")]
    NotPermitted {
        /// Profile name.
        profile: String,
        /// Target as requested.
        target: String,
        /// Rules that forbade it (for the audit log and `policy explain`, not the response).
        rule_ids: Vec<String>,
    },
}

impl Refusal {
    /// Whether this is a malformed request (400) rather than a policy denial (403).
    pub fn is_malformed(&self) -> bool {
        matches!(self, Refusal::BadText(_) | Refusal::UnknownTarget(_))
    }
}

/// An allowed request: the grant's exact shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The profile it falls under.
    pub profile: String,
    /// Where it is valid.
    pub target: Target,
    /// Unix users the certificate carries.
    pub unix_users: Vec<String>,
    /// Certificate principals (`user@host`).
    pub principals: Vec<String>,
    /// Grant length after the profile's cap.
    pub duration: Duration,
    /// Whether the request asked for more than the profile allows and was cut.
    pub duration_capped: bool,
    /// Granted without approvers.
    pub auto_approved: bool,
    /// A break-glass activation: granted at once, loudly, and reviewed afterwards.
    pub break_glass: bool,
    /// Approvals needed when not auto-approved.
    pub required_approvals: u32,
    /// How long a pending request may wait.
    pub request_ttl: Duration,
    /// Certificate extensions.
    pub extensions: BTreeSet<String>,
    /// `force-command`, when the profile has one.
    pub force_command: Option<String>,
    /// Whether `source-address` is pinned to the requester's address.
    pub pin_source_address: bool,
    /// Rules that permitted the request.
    pub request_rule_ids: Vec<String>,
    /// Rules that permitted auto-approval (empty when pending).
    pub auto_approve_rule_ids: Vec<String>,
}

/// The loaded policy: profiles and rules together.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Profiles and inventory.
    pub profiles: Profiles,
    /// Cedar rules.
    pub rules: Rules,
}

/// Why the policy files could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyLoadError {
    /// `profiles.toml` is wrong.
    #[error(transparent)]
    Profiles(#[from] ProfilesError),
    /// `policy.cedar` is wrong.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The I/O failure.
        message: String,
    },
}

impl Policy {
    /// Loads and checks both files.
    pub fn load(profiles_path: &Path, cedar_path: &Path) -> Result<Policy, PolicyLoadError> {
        let profiles = Profiles::load(profiles_path)?;
        let cedar_text =
            std::fs::read_to_string(cedar_path).map_err(|error| PolicyLoadError::Read {
                path: cedar_path.display().to_string(),
                message: error.to_string(),
            })?;
        let rules = Rules::parse(&cedar_text, &cedar_path.display().to_string())?;
        Ok(Policy { profiles, rules })
    }

    /// Decides `input` from `identity` at `now`.
    pub fn decide(
        &self,
        identity: &Identity,
        input: &RequestInput,
        now: DateTime<Utc>,
    ) -> Result<Decision, Refusal> {
        let profile = self
            .profiles
            .profiles
            .get(&input.profile)
            .ok_or_else(|| Refusal::UnknownProfile(clip(&input.profile)))?;
        let target = self
            .profiles
            .resolve_target(&input.target)
            .map_err(Refusal::UnknownTarget)?;
        if !profile.covers(&target) {
            return Err(Refusal::TargetNotCovered {
                profile: profile.name.clone(),
                target: target.label(),
            });
        }

        let unix_users = match &input.unix_user {
            Some(unix_user) if profile.unix_users.contains(unix_user) => vec![unix_user.clone()],
            Some(unix_user) => {
                return Err(Refusal::UnixUserNotInProfile {
                    profile: profile.name.clone(),
                    unix_user: clip(unix_user),
                })
            }
            None => profile.unix_users.clone(),
        };

        check_text(profile, &input.reason, input.ticket.as_deref())?;

        let requested = input.duration.unwrap_or(profile.default_duration);
        let duration = requested.min(profile.max_duration);

        let facts = RequestFacts {
            identity,
            target: &target,
            profile: &profile.name,
            unix_users: &unix_users,
            duration_secs: duration.as_secs(),
            reason: &input.reason,
            ticket: input.ticket.as_deref().unwrap_or_default(),
            now: now.timestamp(),
            hour_utc: now.hour(),
            weekday: now.weekday().number_from_monday(),
        };
        let request_verdict = self.rules.decide(Action::Request, &facts);
        if !request_verdict.allowed {
            return Err(Refusal::NotPermitted {
                profile: profile.name.clone(),
                target: target.label(),
                rule_ids: request_verdict.rule_ids,
            });
        }
        check_authentication(profile, identity, now)?;
        let auto_verdict = self.rules.decide(Action::AutoApprove, &facts);

        let principals = unix_users
            .iter()
            .map(|unix_user| target.principal(unix_user))
            .collect();
        Ok(Decision {
            profile: profile.name.clone(),
            target,
            unix_users,
            principals,
            duration,
            duration_capped: requested > duration,
            auto_approved: auto_verdict.allowed || profile.break_glass,
            break_glass: profile.break_glass,
            required_approvals: profile.approvals,
            request_ttl: profile.request_ttl,
            extensions: profile.extensions.clone(),
            force_command: profile.force_command.clone(),
            pin_source_address: profile.pin_source_address,
            request_rule_ids: request_verdict.rule_ids,
            auto_approve_rule_ids: if auto_verdict.allowed {
                auto_verdict.rule_ids
            } else {
                Vec::new()
            },
        })
    }
}

/// What the rules see when someone reviews a stored request.
#[derive(Debug, Clone)]
pub struct ReviewFacts<'a> {
    /// Profile of the request.
    pub profile: &'a str,
    /// Target as stored (`db-1` or `group:NAME`).
    pub target: &'a str,
    /// Unix users of the request.
    pub unix_users: &'a [String],
    /// Grant length, in seconds.
    pub duration_secs: u64,
    /// Requester's reason.
    pub reason: &'a str,
    /// Requester's ticket, or empty.
    pub ticket: &'a str,
}

impl Policy {
    /// Whether `reviewer` may approve (or deny, or acknowledge) a request with these facts.
    /// Whether the reviewer is the requester is the service's business, not the rules'.
    pub fn may_review(
        &self,
        reviewer: &Identity,
        facts: &ReviewFacts<'_>,
        now: DateTime<Utc>,
    ) -> RuleVerdict {
        let target = match self.profiles.resolve_target(facts.target) {
            Ok(target) => target,
            Err(error) => return RuleVerdict::unevaluable(error),
        };
        let request_facts = RequestFacts {
            identity: reviewer,
            target: &target,
            profile: facts.profile,
            unix_users: facts.unix_users,
            duration_secs: facts.duration_secs,
            reason: facts.reason,
            ticket: facts.ticket,
            now: now.timestamp(),
            hour_utc: now.hour(),
            weekday: now.weekday().number_from_monday(),
        };
        self.rules.decide(Action::Approve, &request_facts)
    }
}

/// OIDC Core 2 (`amr`, `auth_time`): the profile may demand a second factor and a recent login.
fn check_authentication(
    profile: &Profile,
    identity: &Identity,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let step_up = |requirement: String| Refusal::StepUpRequired {
        profile: profile.name.clone(),
        requirement,
        acr_values: profile.step_up_acr_values.clone(),
        max_age_secs: profile.max_auth_age.map(|age| age.as_secs()),
    };

    if !profile.require_amr.is_empty()
        && !profile
            .require_amr
            .iter()
            .any(|method| identity.auth_methods.contains(method))
    {
        return Err(step_up(format!(
            "a login with one of: {}",
            profile.require_amr.join(", ")
        )));
    }
    if let Some(max_age) = profile.max_auth_age {
        let fresh_enough = identity.auth_time.is_some_and(|auth_time| {
            let age = now.signed_duration_since(auth_time);
            age.num_seconds() <= i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
        });
        if !fresh_enough {
            return Err(step_up(format!(
                "a login within the last {}",
                jit_proto::format_duration(max_age)
            )));
        }
    }
    Ok(())
}

/// Unicode format characters that change how text reads without being seen: bidirectional
/// marks, embeddings, overrides and isolates, zero-width characters and the byte-order mark.
fn is_invisible_format(character: char) -> bool {
    matches!(
        character,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

fn check_text(profile: &Profile, reason: &str, ticket: Option<&str>) -> Result<(), Refusal> {
    if reason.len() > profiles::MAX_REASON_BYTES {
        return Err(Refusal::BadText(format!(
            "reason is longer than {} bytes",
            profiles::MAX_REASON_BYTES
        )));
    }
    if reason.chars().any(|character| character.is_control()) {
        return Err(Refusal::BadText("reason holds control characters".into()));
    }
    // Bidirectional overrides and zero-width characters would make the reason read
    // differently to an approver or auditor than it was written.
    if reason.chars().any(is_invisible_format) {
        return Err(Refusal::BadText(
            "reason holds invisible or bidirectional formatting characters".into(),
        ));
    }
    if profile.require_reason && reason.trim().is_empty() {
        return Err(Refusal::ReasonRequired(profile.name.clone()));
    }

    let ticket = ticket.filter(|ticket| !ticket.is_empty());
    match ticket {
        Some(ticket) if ticket.len() > profiles::MAX_TICKET_BYTES => Err(Refusal::BadText(
            format!("ticket is longer than {} bytes", profiles::MAX_TICKET_BYTES),
        )),
        Some(ticket)
            if ticket
                .chars()
                .any(|character| !character.is_ascii_graphic()) =>
        {
            Err(Refusal::BadText(
                "ticket may hold only printable ASCII without spaces".into(),
            ))
        }
        Some(ticket) => match &profile.ticket_pattern {
            Some(pattern) if !pattern.is_match(ticket) => {
                Err(Refusal::TicketMalformed(profile.name.clone()))
            }
            _ => Ok(()),
        },
        None if profile.require_ticket => Err(Refusal::TicketRequired(profile.name.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILES: &str = r#"
        [hosts]
        db-1 = { groups = ["db-prod"] }
        web-1 = { groups = ["web"] }

        [profiles.read-only]
        unix_users = ["readonly"]
        any_host = true
        default_duration = "30m"
        max_duration = "2h"

        [profiles.db-root]
        unix_users = ["root", "postgres"]
        host_groups = ["db-prod"]
        default_duration = "15m"
        max_duration = "1h"
        require_ticket = true
        ticket_pattern = "CHG-[0-9]+"
        approvals = 2
    "#;

    const RULES: &str = r#"
        @id("engineers-read-only")
        permit(principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource)
        when { context.profile == "read-only" };

        @id("dba-root")
        permit(principal in Group::"dba", action == Action::"request", resource in HostGroup::"db-prod")
        when { context.profile == "db-root" };
    "#;

    fn policy() -> Policy {
        Policy {
            profiles: Profiles::parse(PROFILES, "profiles.toml").unwrap(),
            rules: Rules::parse(RULES, "policy.cedar").unwrap(),
        }
    }

    fn person(groups: &[&str]) -> Identity {
        Identity {
            issuer: "https://idp".into(),
            subject: "u1".into(),
            email: Some("u1@example.com".into()),
            groups: groups.iter().map(|group| group.to_string()).collect(),
            auth_methods: Vec::new(),
            auth_time: None,
        }
    }

    fn input(profile: &str, target: &str) -> RequestInput {
        RequestInput {
            profile: profile.into(),
            target: target.into(),
            unix_user: None,
            duration: None,
            reason: "investigate slow queries".into(),
            ticket: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn read_only_is_auto_approved_with_host_scoped_principal() {
        let decision = policy()
            .decide(&person(&["engineers"]), &input("read-only", "web-1"), now())
            .unwrap();

        assert!(decision.auto_approved);
        assert_eq!(decision.principals, vec!["readonly@web-1"]);
        assert_eq!(decision.duration, Duration::from_secs(1800));
        assert_eq!(decision.request_rule_ids, vec!["engineers-read-only"]);
    }

    #[test]
    fn root_needs_approval_and_duration_is_capped() {
        let mut request = input("db-root", "db-1");
        request.ticket = Some("CHG-7".into());
        request.duration = Some(Duration::from_secs(4 * 3600));
        request.unix_user = Some("root".into());

        let decision = policy().decide(&person(&["dba"]), &request, now()).unwrap();

        assert!(!decision.auto_approved);
        assert_eq!(decision.required_approvals, 2);
        assert_eq!(decision.duration, Duration::from_secs(3600));
        assert!(decision.duration_capped);
        assert_eq!(decision.principals, vec!["root@db-1"]);
    }

    #[test]
    fn refusals_name_the_failed_requirement() {
        let policy = policy();
        let dba = person(&["dba"]);

        let mut no_ticket = input("db-root", "db-1");
        let mut bad_ticket = input("db-root", "db-1");
        bad_ticket.ticket = Some("INC-1".into());
        let mut wrong_user = input("db-root", "db-1");
        wrong_user.ticket = Some("CHG-1".into());
        wrong_user.unix_user = Some("admin".into());

        assert_eq!(
            policy.decide(&dba, &no_ticket, now()),
            Err(Refusal::TicketRequired("db-root".into()))
        );
        assert_eq!(
            policy.decide(&dba, &bad_ticket, now()),
            Err(Refusal::TicketMalformed("db-root".into()))
        );
        assert!(matches!(
            policy.decide(&dba, &wrong_user, now()),
            Err(Refusal::UnixUserNotInProfile { .. })
        ));
        assert!(matches!(
            policy.decide(&dba, &input("db-root", "web-1"), now()),
            Err(Refusal::TargetNotCovered { .. })
        ));
        assert!(matches!(
            policy.decide(&dba, &input("nope", "db-1"), now()),
            Err(Refusal::UnknownProfile(_))
        ));
        no_ticket.reason = String::new();
        assert!(matches!(
            policy.decide(&dba, &no_ticket, now()),
            Err(Refusal::ReasonRequired(_))
        ));
    }

    #[test]
    fn step_up_names_what_is_missing_and_break_glass_skips_approvers() {
        let profiles = format!(
            "{PROFILES}{}",
            r#"
        [profiles.mfa-read]
        unix_users = ["readonly"]
        any_host = true
        default_duration = "10m"
        max_duration = "1h"
        require_amr = ["otp"]
        max_auth_age = "5m"
        step_up_acr_values = "urn:mfa"

        [profiles.break-glass]
        unix_users = ["root"]
        any_host = true
        default_duration = "30m"
        max_duration = "1h"
        require_ticket = true
        break_glass = true
        "#
        );
        let rules = format!(
            "{RULES}{}",
            r#"
        @id("engineers-mfa-read")
        permit(principal in Group::"engineers", action in [Action::"request", Action::"auto_approve"], resource)
        when { context.profile == "mfa-read" };
        @id("responders-break-glass")
        permit(principal in Group::"responders", action == Action::"request", resource)
        when { context.profile == "break-glass" };
        "#
        );
        let policy = Policy {
            profiles: Profiles::parse(&profiles, "profiles.toml").unwrap(),
            rules: Rules::parse(&rules, "policy.cedar").unwrap(),
        };
        let mut engineer = person(&["engineers"]);

        let no_mfa = policy.decide(&engineer, &input("mfa-read", "db-1"), now());
        engineer.auth_methods = vec!["pwd".into(), "otp".into()];
        engineer.auth_time = Some(now() - chrono::TimeDelta::minutes(10));
        let stale = policy.decide(&engineer, &input("mfa-read", "db-1"), now());
        engineer.auth_time = Some(now() - chrono::TimeDelta::minutes(1));
        let fresh = policy.decide(&engineer, &input("mfa-read", "db-1"), now());

        match no_mfa {
            Err(Refusal::StepUpRequired {
                requirement,
                acr_values,
                max_age_secs,
                ..
            }) => {
                assert!(requirement.contains("otp"), "{requirement}");
                assert_eq!(acr_values.as_deref(), Some("urn:mfa"));
                assert_eq!(max_age_secs, Some(300));
            }
            other => panic!("expected a step-up, got {other:?}"),
        }
        assert!(
            matches!(stale, Err(Refusal::StepUpRequired { requirement, .. }) if requirement.contains("5m"))
        );
        assert!(fresh.unwrap().auto_approved);

        let mut responder_request = input("break-glass", "web-1");
        responder_request.ticket = Some("INC-9".into());
        let emergency = policy
            .decide(&person(&["responders"]), &responder_request, now())
            .unwrap();
        assert!(emergency.break_glass && emergency.auto_approved);
        assert!(policy
            .decide(&person(&["engineers"]), &responder_request, now())
            .is_err());
    }

    #[test]
    fn break_glass_profiles_must_be_explained_and_short() {
        let unticketed = format!(
            "{PROFILES}{}",
            r#"
        [profiles.bg]
        unix_users = ["root"]
        any_host = true
        default_duration = "30m"
        max_duration = "1h"
        break_glass = true
        "#
        );
        let long = unticketed
            .replace(
                "break_glass = true",
                "break_glass = true\nrequire_ticket = true",
            )
            .replace(
                "max_duration = \"1h\"\n        break_glass",
                "max_duration = \"8h\"\n        break_glass",
            );

        let error = Profiles::parse(&unticketed, "profiles.toml").unwrap_err();
        assert!(error.to_string().contains("require_ticket"), "{error}");
        let error = Profiles::parse(&long, "profiles.toml").unwrap_err();
        assert!(error.to_string().contains("4h"), "{error}");
    }

    #[test]
    fn outsiders_are_denied_without_learning_why() {
        let refusal = policy()
            .decide(&person(&[]), &input("read-only", "db-1"), now())
            .unwrap_err();

        assert_eq!(
            refusal.to_string(),
            "you may not request profile `read-only` for `db-1`"
        );
    }
}
