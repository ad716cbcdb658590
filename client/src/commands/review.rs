//! The approver's side and a request's life: `jit pending`, `jit approve`, `jit deny`,
//! `jit cancel` and `jit show`.
//!
//! Everything shown comes from the CA, which decides who may see and review what; text the
//! requester or a reviewer wrote is put on one line before it reaches the terminal.

use chrono::{DateTime, Utc};
use jit_proto::{AccessRequestView, ApproveBody, DenyBody, RequestStatus};
use serde_json::{json, Value};

use super::{print_json, print_line, CommandError, Context};
use crate::api::one_line;

/// Arguments of `jit approve`.
#[derive(Clone, Debug)]
pub struct ApproveArgs {
    /// The request to approve, or the break-glass activation to acknowledge.
    pub request_id: String,
    /// A remark kept with the review.
    pub comment: Option<String>,
    /// Print JSON instead of text.
    pub json: bool,
}

/// Arguments of `jit deny`.
#[derive(Clone, Debug)]
pub struct DenyArgs {
    /// The request to refuse.
    pub request_id: String,
    /// Why; the CA refuses a denial without one.
    pub reason: String,
    /// Print JSON instead of text.
    pub json: bool,
}

/// Arguments of `jit cancel`, `jit show` and, without the id, `jit pending`.
#[derive(Clone, Debug)]
pub struct RequestIdArgs {
    /// The request.
    pub request_id: String,
    /// Print JSON instead of text.
    pub json: bool,
}

/// Runs `jit pending`: the requests the caller may review now, with open break-glass
/// activations marked.
pub async fn pending(context: &Context, json: bool) -> Result<(), CommandError> {
    let state = context.state()?;
    let ca = context.ca()?;
    let reviews = {
        let ca = &ca;
        context
            .call(
                ca,
                &state,
                |id_token| async move { ca.reviews(&id_token).await },
            )
            .await?
    };
    let now = (context.clock)();

    if json {
        let requests: Vec<Value> = reviews
            .requests
            .iter()
            .map(|request| summary(request, now))
            .collect();
        print_json(&json!({ "requests": requests }));
        return Ok(());
    }

    if reviews.requests.is_empty() {
        print_line("Nothing to review.");
        return Ok(());
    }
    print_line("Requests you may review:");
    for request in &reviews.requests {
        let age = jit_proto::format_duration(age(request.created_at, now));
        let duration =
            jit_proto::format_duration(std::time::Duration::from_secs(request.duration_secs));
        let state = if request.break_glass {
            format!(
                "BREAK-GLASS, granted {age} ago, unreviewed: acknowledge with `jit approve {}`",
                request.request_id
            )
        } else {
            format!(
                "{} of {} approvals, asked {age} ago",
                request.approvals.len(),
                request.required_approvals
            )
        };
        print_line(&format!(
            "  {}  {}  {} on {} for {duration}  ({state})",
            request.request_id,
            one_line(&request.requester),
            request.profile,
            request.host
        ));
        print_line(&format!(
            "      reason: {}; ticket: {}",
            one_line(&request.reason),
            request.ticket.as_deref().map_or("-".into(), one_line)
        ));
    }
    Ok(())
}

/// Runs `jit approve`.
pub async fn approve(context: &Context, args: &ApproveArgs) -> Result<(), CommandError> {
    let body = ApproveBody {
        comment: args.comment.clone().filter(|comment| !comment.is_empty()),
    };
    let (state, ca) = (context.state()?, context.ca()?);
    let view = {
        let (ca, request_id, body) = (&ca, args.request_id.as_str(), &body);
        context
            .call(ca, &state, |id_token| async move {
                ca.approve(&id_token, request_id, body).await
            })
            .await?
    };

    let text = if view.break_glass {
        format!(
            "Acknowledged break-glass request {} by {}.",
            view.request_id,
            one_line(&view.requester)
        )
    } else if view.status == RequestStatus::Approved {
        format!(
            "Approved {} ({} of {} approvals): it is granted; {} can install it with `jit fetch {}`.",
            view.request_id,
            view.approvals.len(),
            view.required_approvals,
            one_line(&view.requester),
            view.request_id
        )
    } else {
        let given = u32::try_from(view.approvals.len()).unwrap_or(u32::MAX);
        format!(
            "Approved {} ({given} of {} approvals): it waits for {} more.",
            view.request_id,
            view.required_approvals,
            view.required_approvals.saturating_sub(given)
        )
    };
    report(&view, &text, (context.clock)(), args.json);
    Ok(())
}

/// Runs `jit deny`.
pub async fn deny(context: &Context, args: &DenyArgs) -> Result<(), CommandError> {
    if args.reason.trim().is_empty() {
        return Err(CommandError::BadArgument(
            "--reason must say why the request is refused".into(),
        ));
    }
    let body = DenyBody {
        reason: args.reason.clone(),
    };
    let (state, ca) = (context.state()?, context.ca()?);
    let view = {
        let (ca, request_id, body) = (&ca, args.request_id.as_str(), &body);
        context
            .call(ca, &state, |id_token| async move {
                ca.deny(&id_token, request_id, body).await
            })
            .await?
    };

    let text = format!(
        "Denied {} of {}: {}",
        view.request_id,
        one_line(&view.requester),
        one_line(&args.reason)
    );
    report(&view, &text, (context.clock)(), args.json);
    Ok(())
}

/// Runs `jit cancel`: withdraws one of the caller's pending requests and drops the key kept
/// for it here.
pub async fn cancel(context: &Context, args: &RequestIdArgs) -> Result<(), CommandError> {
    let state = context.state()?;
    let request_dir = state.request_dir(&args.request_id)?;
    let ca = context.ca()?;
    let view = {
        let (ca, request_id) = (&ca, args.request_id.as_str());
        context
            .call(ca, &state, |id_token| async move {
                ca.cancel(&id_token, request_id).await
            })
            .await?
    };
    state.remove_dir(&request_dir)?;

    let text = format!("Cancelled {}.", view.request_id);
    report(&view, &text, (context.clock)(), args.json);
    Ok(())
}

/// Runs `jit show`: a request as it stands and every step of its life.
pub async fn show(context: &Context, args: &RequestIdArgs) -> Result<(), CommandError> {
    let state = context.state()?;
    let ca = context.ca()?;
    let history = {
        let (ca, request_id) = (&ca, args.request_id.as_str());
        context
            .call(ca, &state, |id_token| async move {
                ca.history(&id_token, request_id).await
            })
            .await?
    };
    let now = (context.clock)();
    let request = &history.request;

    if args.json {
        let events: Vec<Value> = history
            .events
            .iter()
            .map(|event| {
                json!({
                    "at": event.at,
                    "actor": event.actor,
                    "kind": event.kind,
                    "detail": event.detail,
                })
            })
            .collect();
        print_json(&json!({ "request": summary(request, now), "events": events }));
        return Ok(());
    }

    let kind = match (&request.extends_grant, request.break_glass) {
        (Some(grant_id), _) => format!(" (extension of grant {grant_id})"),
        (None, true) => " (break-glass)".to_owned(),
        (None, false) => String::new(),
    };
    print_line(&format!(
        "Request {}{kind}: {}",
        request.request_id,
        request.status.as_str()
    ));
    print_line(&format!("  requester: {}", one_line(&request.requester)));
    print_line(&format!(
        "  access:    {} on {} for {} ({})",
        request.profile,
        request.host,
        jit_proto::format_duration(std::time::Duration::from_secs(request.duration_secs)),
        request.principals.join(", ")
    ));
    print_line(&format!(
        "  reason:    {}; ticket: {}",
        one_line(&request.reason),
        request.ticket.as_deref().map_or("-".into(), one_line)
    ));
    let approvers: Vec<String> = request
        .approvals
        .iter()
        .map(|name| one_line(name))
        .collect();
    print_line(&format!(
        "  approvals: {} of {}{}",
        approvers.len(),
        request.required_approvals,
        if approvers.is_empty() {
            String::new()
        } else {
            format!(" ({})", approvers.join(", "))
        }
    ));
    if let Some(grant) = &request.grant {
        print_line(&format!(
            "  grant:     {} from {} to {}",
            grant.grant_id,
            crate::format_instant(grant.starts_at),
            crate::format_instant(grant.ends_at)
        ));
    }
    print_line("History:");
    let actor_width = history
        .events
        .iter()
        .map(|event| one_line(&event.actor).chars().count())
        .max()
        .unwrap_or(0);
    for event in &history.events {
        print_line(&format!(
            "  {}  {:12}  {:actor_width$}  {}",
            crate::format_instant(event.at),
            one_line(&event.kind),
            one_line(&event.actor),
            one_line(&event.detail)
        ));
    }
    Ok(())
}

/// Prints the outcome of a review or cancellation: `text`, or with `json` the request's summary.
fn report(view: &AccessRequestView, text: &str, now: DateTime<Utc>, json: bool) {
    if json {
        print_json(&summary(view, now));
    } else {
        print_line(text);
    }
}

/// What scripts get for a request in `--json` output.
fn summary(request: &AccessRequestView, now: DateTime<Utc>) -> Value {
    json!({
        "request_id": request.request_id,
        "status": request.status.as_str(),
        "requester": request.requester,
        "profile": request.profile,
        "host": request.host,
        "principals": request.principals,
        "duration_secs": request.duration_secs,
        "reason": request.reason,
        "ticket": request.ticket,
        "created_at": request.created_at,
        "age_secs": age(request.created_at, now).as_secs(),
        "expires_at": request.expires_at,
        "approvals": request.approvals,
        "required_approvals": request.required_approvals,
        "break_glass": request.break_glass,
        "acknowledged_by": request.acknowledged_by,
        "extends_grant": request.extends_grant,
        "grant_id": request.grant.as_ref().map(|grant| &grant.grant_id),
        "message": one_line(&request.message),
    })
}

fn age(created_at: DateTime<Utc>, now: DateTime<Utc>) -> std::time::Duration {
    (now - created_at).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_instants::{at, request_view};

    #[test]
    fn summaries_carry_what_a_reviewer_decides_on() {
        let request = request_view(json!({
            "ticket": "CHG-1",
            "required_approvals": 2,
            "approvals": ["carol@example.com"],
        }));

        let shown = summary(&request, at(0));

        assert_eq!(shown["age_secs"], 100);
        assert_eq!(shown["approvals"], json!(["carol@example.com"]));
        assert_eq!(shown["required_approvals"], 2);
        assert_eq!(shown["ticket"], "CHG-1");
        assert_eq!(shown["break_glass"], false);
        assert_eq!(shown["grant_id"], Value::Null);
    }
}
