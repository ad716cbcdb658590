//! `jit extend`: ask for more time on an active grant.
//!
//! The CA judges an extension as a new request tied to the grant, by the same policy and, when
//! the profile needs them, by approvers. Once approved it re-issues the grant's certificate with
//! the new end for the key the grant already has, so the key installed here gets the new
//! certificate and goes back into the agent with the longer lifetime.

use std::time::Duration;

use jit_proto::{ExtendBody, RequestStatus};

use super::request::settle;
use super::{wait, CommandError, Context};

/// Arguments of `jit extend`.
#[derive(Clone, Debug)]
pub struct ExtendArgs {
    /// The grant to extend (`g-...`).
    pub grant_id: String,
    /// How much longer (`--for`).
    pub duration: Duration,
    /// Why more time is needed.
    pub reason: String,
    /// Change or incident ticket.
    pub ticket: Option<String>,
    /// Wait for a pending extension to be decided (`--wait`).
    pub wait: bool,
    /// Print JSON instead of text.
    pub json: bool,
}

/// Runs `jit extend`.
pub async fn run(context: &Context, args: &ExtendArgs) -> Result<(), CommandError> {
    let state = context.state()?;
    // Checked before any network call: the id also names a local directory.
    state.grant_dir(&args.grant_id)?;
    if args.reason.trim().is_empty() {
        return Err(CommandError::BadArgument(
            "--reason must say why more time is needed".into(),
        ));
    }
    let body = ExtendBody {
        duration_secs: args.duration.as_secs(),
        reason: args.reason.clone(),
        ticket: args.ticket.clone(),
    };

    let ca = context.ca()?;
    let view = {
        let (ca, grant_id, body) = (&ca, args.grant_id.as_str(), &body);
        context
            .call(ca, &state, |id_token| async move {
                ca.extend(&id_token, grant_id, body).await
            })
            .await?
    };

    let view = if args.wait && view.status == RequestStatus::Pending {
        wait::wait_for_decision(context, &ca, &state, &view.request_id, None).await?
    } else {
        view
    };
    settle(context, &state, &view, None, args.json).await
}
