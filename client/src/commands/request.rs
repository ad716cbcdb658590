//! `jit request`: ask the CA for access with a fresh key, and install the certificate when it is
//! granted at once (or, with `--wait`, once approved). [`settle`] is shared with `jit fetch`,
//! `jit wait` and `jit extend`, so all of them finish the same way.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jit_proto::{AccessRequestView, CreateAccessRequest, RequestStatus};
use serde_json::json;
use ssh_key::PrivateKey;

use super::{print_json, print_line, wait, CommandError, Context};
use crate::agent::{self, AgentOutcome};
use crate::install;
use crate::state::{LocalGrant, StateDir, KEY_FILE};

/// When a planned grant should start (`--at`): the CA starts it then, or at approval if that
/// comes later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlannedStart {
    /// At this instant (`--at 2030-01-02T03:04:05Z`).
    At(DateTime<Utc>),
    /// This long after the request is made (`--at +30m`).
    After(Duration),
}

impl PlannedStart {
    /// Parses an RFC 3339 instant or `+` and a duration in the `--for` syntax.
    pub fn parse(text: &str) -> Result<PlannedStart, String> {
        if let Some(relative) = text.strip_prefix('+') {
            return jit_proto::parse_duration(relative)
                .map(PlannedStart::After)
                .map_err(|error| error.to_string());
        }
        DateTime::parse_from_rfc3339(text)
            .map(|instant| PlannedStart::At(instant.with_timezone(&Utc)))
            .map_err(|_| {
                format!("`{text}` is neither an RFC 3339 time (2030-01-02T09:00:00Z) nor +30m")
            })
    }

    /// The instant this names, for a request made at `now`.
    pub fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            PlannedStart::At(instant) => instant,
            PlannedStart::After(delay) => {
                now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX)
            }
        }
    }
}

/// Arguments of `jit request`.
#[derive(Clone, Debug)]
pub struct RequestArgs {
    /// Access profile name.
    pub profile: String,
    /// Host (or host group) to access.
    pub host: String,
    /// Why access is needed.
    pub reason: String,
    /// Change or incident ticket.
    pub ticket: Option<String>,
    /// Requested grant length (`--for`).
    pub duration: Option<Duration>,
    /// One Unix user of the profile; all of them when absent.
    pub unix_user: Option<String>,
    /// A planned start (`--at`).
    pub start: Option<PlannedStart>,
    /// Wait for a pending request to be decided (`--wait`).
    pub wait: bool,
    /// Print JSON instead of text.
    pub json: bool,
}

/// Runs `jit request`.
pub async fn run(context: &Context, args: &RequestArgs) -> Result<(), CommandError> {
    // A new key per request: a certificate never outlives the task, and neither does its key.
    let key = install::generate_key()?;
    let public_key =
        key.public_key()
            .to_openssh()
            .map_err(|source| install::InstallError::Key {
                action: "encode",
                source,
            })?;
    let body = request_body(args, public_key, (context.clock)())?;

    let state = context.state()?;
    let ca = context.ca()?;
    let view = {
        let (ca, body) = (&ca, &body);
        context
            .call(ca, &state, |id_token| async move {
                ca.create_request(&id_token, body).await
            })
            .await?
    };

    if !args.wait || view.status != RequestStatus::Pending {
        return settle(context, &state, &view, Some(&key), args.json).await;
    }
    // Kept first, so that after Ctrl-C `jit wait` can still finish the request.
    install::save_pending(&state, &view, &key)?;
    let decided = wait::wait_for_decision(context, &ca, &state, &view.request_id, None).await?;
    settle(context, &state, &decided, None, args.json).await
}

/// Builds the request body from the arguments, for a request made at `now`, refusing locally
/// what the CA would refuse.
pub fn request_body(
    args: &RequestArgs,
    public_key: String,
    now: DateTime<Utc>,
) -> Result<CreateAccessRequest, CommandError> {
    if let Some(user) = args.unix_user.as_deref() {
        jit_proto::validate_unix_user(user)
            .map_err(|error| CommandError::BadArgument(format!("--user: {error}")))?;
    }
    if args.reason.trim().is_empty() {
        return Err(CommandError::BadArgument(
            "--reason must say why the access is needed".into(),
        ));
    }

    Ok(CreateAccessRequest {
        profile: args.profile.clone(),
        host: args.host.clone(),
        unix_user: args.unix_user.clone(),
        duration_secs: args.duration.map(|duration| duration.as_secs()),
        reason: args.reason.clone(),
        ticket: args.ticket.clone(),
        public_key,
        start_at: args.start.map(|start| start.resolve(now)),
    })
}

/// Finishes a request the CA described as `view`.
///
/// Approved with a certificate: installs it beside the key (`fresh_key`, or the one kept for the
/// request, or for an extension the grant's own), loads it into the agent and prints the
/// summary. Pending: keeps `fresh_key` for a later `jit fetch` and says so (exit status 0).
/// Denied, cancelled or expired: drops the kept key and fails with the CA's message.
pub async fn settle(
    context: &Context,
    state: &StateDir,
    view: &AccessRequestView,
    fresh_key: Option<&PrivateKey>,
    json: bool,
) -> Result<(), CommandError> {
    let certified_grant = view
        .grant
        .as_ref()
        .filter(|grant| grant.certificate.is_some());

    match (view.status, certified_grant) {
        (RequestStatus::Approved, Some(grant)) => {
            let key = match fresh_key {
                Some(key) => key.clone(),
                None => install::load_request_key(state, &view.request_id, &grant.grant_id)?,
            };
            let installed = install::install_grant(state, grant, &key)?;

            let now = (context.clock)();
            let valid_before = installed.certificate.valid_before;
            let agent_outcome =
                agent::add_to_agent(&context.env, &installed.key_path, valid_before, now).await;
            report_approved(view, &installed, &agent_outcome, now, json);
            Ok(())
        }
        // Approved but not yet certified is as good as pending for the user: fetch again later.
        (RequestStatus::Pending, _) | (RequestStatus::Approved, None) => {
            let key_path = match (fresh_key, &view.extends_grant) {
                (Some(key), _) => install::save_pending(state, view, key)?,
                (None, Some(grant_id)) => state.grant_dir(grant_id)?.join(KEY_FILE),
                (None, None) => state.request_dir(&view.request_id)?.join(KEY_FILE),
            };
            report_pending(view, &key_path, json);
            Ok(())
        }
        (status, _) => {
            state.remove_dir(&state.request_dir(&view.request_id)?)?;
            Err(CommandError::RequestClosed {
                request_id: view.request_id.clone(),
                status,
                message: crate::api::one_line(&view.message),
            })
        }
    }
}

fn report_approved(
    view: &AccessRequestView,
    installed: &LocalGrant,
    agent_outcome: &AgentOutcome,
    now: DateTime<Utc>,
    json: bool,
) {
    let grant = &installed.grant;
    let certificate = &installed.certificate;
    let time_left = (certificate.valid_before - now)
        .to_std()
        .unwrap_or_default();

    if json {
        print_json(&json!({
            "status": "approved",
            "request_id": view.request_id,
            "extends_grant": view.extends_grant,
            "grant_id": grant.grant_id,
            "profile": grant.profile,
            "host": grant.host,
            "serial": certificate.serial,
            "key_id": certificate.key_id,
            "principals": certificate.principals,
            "starts_at": grant.starts_at,
            "ends_at": grant.ends_at,
            "approvals": view.approvals,
            "valid_after": certificate.valid_after,
            "valid_before": certificate.valid_before,
            "expires_in_secs": time_left.as_secs(),
            "key_path": installed.key_path,
            "cert_path": installed.cert_path,
            "agent": agent_outcome.added(),
            "agent_detail": agent_phrase(agent_outcome),
        }));
        return;
    }

    let headline = match &view.extends_grant {
        Some(_) => "Access extended",
        None => "Access granted",
    };
    print_line(&format!(
        "{headline}: grant {} for {} (request {})",
        grant.grant_id, grant.host, view.request_id
    ));
    if grant.starts_at > now {
        print_line(&format!(
            "  starts at:   {}",
            crate::format_instant(grant.starts_at)
        ));
    }
    print_line(&format!(
        "  principals:  {}",
        certificate.principals.join(", ")
    ));
    print_line(&format!("  serial:      {}", certificate.serial));
    print_line(&format!(
        "  expires in {} (at {})",
        jit_proto::format_duration(time_left),
        crate::format_instant(certificate.valid_before)
    ));
    print_line(&format!("  key:         {}", installed.key_path.display()));
    print_line(&format!("  certificate: {}", installed.cert_path.display()));
    print_line(&format!("  ssh-agent:   {}", agent_phrase(agent_outcome)));
    if let Some(hint) = connect_hint(installed) {
        print_line(&format!("Connect with: {hint}"));
    }
}

fn report_pending(view: &AccessRequestView, key_path: &Path, json: bool) {
    let message = crate::api::one_line(&view.message);

    if json {
        print_json(&json!({
            "status": "pending",
            "request_id": view.request_id,
            "extends_grant": view.extends_grant,
            "profile": view.profile,
            "host": view.host,
            "message": message,
            "approvals": view.approvals,
            "required_approvals": view.required_approvals,
            "expires_at": view.expires_at,
            "key_path": key_path,
        }));
        return;
    }

    match &view.extends_grant {
        Some(grant_id) => print_line(&format!(
            "Extension {} of grant {grant_id} needs approval: {message}",
            view.request_id
        )),
        None => print_line(&format!(
            "Request {} needs approval: {message}",
            view.request_id
        )),
    }
    print_line(&format!(
        "Once approved, run: jit fetch {} (or `jit wait {}` to wait for it)",
        view.request_id, view.request_id
    ));
}

/// The `jit ssh` line for the grant's first principal. A host-group principal cannot name a
/// host, so for it the hint names the grant and leaves the host to the user.
fn connect_hint(installed: &LocalGrant) -> Option<String> {
    let principal = installed.certificate.principals.first()?;
    let (user, place) = principal.split_once('@')?;
    Some(match place.strip_prefix("group:") {
        Some(_group) => format!("jit ssh --grant {} {user}@HOST", installed.grant.grant_id),
        None => format!("jit ssh {user}@{place}"),
    })
}

fn agent_phrase(outcome: &AgentOutcome) -> String {
    match outcome {
        AgentOutcome::Added {
            lifetime,
            certificate: true,
        } => format!(
            "key and certificate added for {}",
            jit_proto::format_duration(*lifetime)
        ),
        AgentOutcome::Added {
            lifetime,
            certificate: false,
        } => format!(
            "key added for {} (ssh-add did not report the certificate)",
            jit_proto::format_duration(*lifetime)
        ),
        AgentOutcome::NoAgent => "not used (SSH_AUTH_SOCK is not set)".into(),
        AgentOutcome::Expired => "not used (the certificate has no time left)".into(),
        AgentOutcome::Failed { reason } => format!("ssh-add failed: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_instants::at;

    fn args(duration: Option<&str>) -> RequestArgs {
        RequestArgs {
            profile: "db".into(),
            host: "db-1".into(),
            reason: "rotate logs".into(),
            ticket: Some("OPS-1".into()),
            duration: duration.map(|text| jit_proto::parse_duration(text).unwrap()),
            unix_user: Some("postgres".into()),
            start: None,
            wait: false,
            json: false,
        }
    }

    #[test]
    fn for_becomes_seconds_in_the_body() {
        let body = request_body(&args(Some("1h30m")), "ssh-ed25519 AAAA".into(), at(0)).unwrap();

        assert_eq!(body.duration_secs, Some(5400));
        assert_eq!(body.unix_user.as_deref(), Some("postgres"));
        assert_eq!(body.public_key, "ssh-ed25519 AAAA");
    }

    #[test]
    fn without_for_the_profile_default_applies() {
        let body = request_body(&args(None), String::new(), at(0)).unwrap();

        assert_eq!(body.duration_secs, None);
        let encoded = serde_json::to_value(&body).unwrap();
        assert!(encoded.get("duration_secs").is_none(), "{encoded}");
        assert!(encoded.get("start_at").is_none(), "{encoded}");
    }

    #[test]
    fn at_takes_an_instant_or_a_delay_from_now() {
        let in_half_an_hour = RequestArgs {
            start: Some(PlannedStart::parse("+30m").unwrap()),
            ..args(None)
        };
        let planned = PlannedStart::parse("2023-11-15T01:00:00+02:00").unwrap();

        let body = request_body(&in_half_an_hour, String::new(), at(0)).unwrap();

        assert_eq!(body.start_at, Some(at(1800)));
        // 01:00 at +02:00 is 23:00Z, 46m40s after the reference instant.
        assert_eq!(planned.resolve(at(0)), at(2800));
        for bad in ["30m", "+0m", "tomorrow", "2023-11-15"] {
            assert!(PlannedStart::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_bad_users_and_empty_reasons() {
        let bad_user = RequestArgs {
            unix_user: Some("Root".into()),
            ..args(None)
        };
        let no_reason = RequestArgs {
            reason: "  ".into(),
            ..args(None)
        };

        assert!(request_body(&bad_user, String::new(), at(0)).is_err());
        assert!(request_body(&no_reason, String::new(), at(0)).is_err());
    }
}
