//! `jit request`: ask the CA for access with a fresh key, and install the certificate when it is
//! granted at once. [`settle`] is shared with `jit fetch`, so both finish the same way.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_proto::{AccessRequestView, CreateAccessRequest, RequestStatus};
use serde_json::json;
use ssh_key::PrivateKey;

use super::{print_json, print_line, CommandError, Context};
use crate::agent::{self, AgentOutcome};
use crate::install;
use crate::state::{LocalGrant, StateDir, KEY_FILE};

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
    let body = request_body(args, public_key)?;

    let state = context.state()?;
    let ca = context.ca()?;
    let id_token = context.bearer_token(&ca, &state).await?;
    let view = ca.create_request(&id_token, &body).await?;

    settle(context, &state, &view, Some(&key), args.json).await
}

/// Builds the request body from the arguments, refusing locally what the CA would refuse.
pub fn request_body(
    args: &RequestArgs,
    public_key: String,
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
        start_at: None,
    })
}

/// Finishes a request the CA described as `view`.
///
/// Approved with a certificate: installs it beside the key (`fresh_key`, or the one kept for the
/// request), loads it into the agent and prints the summary. Pending: keeps `fresh_key` for a
/// later `jit fetch` and says so (exit status 0). Denied, cancelled or expired: drops the kept
/// key and fails with the CA's message.
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
            report_approved(&installed, &agent_outcome, now, json);
            Ok(())
        }
        // Approved but not yet certified is as good as pending for the user: fetch again later.
        (RequestStatus::Pending, _) | (RequestStatus::Approved, None) => {
            let key_path = match fresh_key {
                Some(key) => install::save_pending(state, view, key)?,
                None => state.request_dir(&view.request_id)?.join(KEY_FILE),
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
            "request_id": grant.request_id,
            "grant_id": grant.grant_id,
            "profile": grant.profile,
            "host": grant.host,
            "serial": certificate.serial,
            "key_id": certificate.key_id,
            "principals": certificate.principals,
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

    print_line(&format!(
        "Access granted: grant {} for {} (request {})",
        grant.grant_id, grant.host, grant.request_id
    ));
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
            "profile": view.profile,
            "host": view.host,
            "message": message,
            "key_path": key_path,
        }));
        return;
    }

    print_line(&format!(
        "Request {} needs approval: {message}",
        view.request_id
    ));
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

    fn args(duration: Option<&str>) -> RequestArgs {
        RequestArgs {
            profile: "db".into(),
            host: "db-1".into(),
            reason: "rotate logs".into(),
            ticket: Some("OPS-1".into()),
            duration: duration.map(|text| jit_proto::parse_duration(text).unwrap()),
            unix_user: Some("postgres".into()),
            json: false,
        }
    }

    #[test]
    fn for_becomes_seconds_in_the_body() {
        let body = request_body(&args(Some("1h30m")), "ssh-ed25519 AAAA".into()).unwrap();

        assert_eq!(body.duration_secs, Some(5400));
        assert_eq!(body.unix_user.as_deref(), Some("postgres"));
        assert_eq!(body.public_key, "ssh-ed25519 AAAA");
    }

    #[test]
    fn without_for_the_profile_default_applies() {
        let body = request_body(&args(None), String::new()).unwrap();

        assert_eq!(body.duration_secs, None);
        let encoded = serde_json::to_value(&body).unwrap();
        assert!(encoded.get("duration_secs").is_none(), "{encoded}");
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

        assert!(request_body(&bad_user, String::new()).is_err());
        assert!(request_body(&no_reason, String::new()).is_err());
    }
}
