//! `jit status`: the caller's active grants and the requests waiting on this machine.
//!
//! The CA's list is shown when it can be had; otherwise the grants installed here. Either way,
//! local grant directories whose certificate has expired are removed, and so are those of
//! grants the CA reports revoked.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_proto::GrantView;
use serde_json::json;

use super::{print_json, print_line, CommandError, Context};
use crate::state::{LocalGrant, StateDir};

/// Arguments of `jit status`.
#[derive(Clone, Debug)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    pub json: bool,
}

/// One active grant as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveGrant {
    /// The grant.
    pub grant: GrantView,
    /// When its certificate (or, without one, the grant) ends.
    pub ends_at: DateTime<Utc>,
    /// Whether its key and certificate are installed on this machine.
    pub installed: bool,
}

/// Runs `jit status`.
pub async fn run(context: &Context, args: &StatusArgs) -> Result<(), CommandError> {
    let state = context.state()?;
    let now = (context.clock)();

    let (still_valid, expired) = partition_by_expiry(state.list_grants()?, now);
    for grant in &expired {
        state.remove_dir(&grant.dir)?;
    }
    let installed_ids: HashSet<&str> = still_valid
        .iter()
        .map(|grant| grant.grant.grant_id.as_str())
        .collect();

    let (source, server_grants) = match server_grants(context, &state).await {
        Ok(grants) => ("server", grants),
        Err(error) => {
            eprintln!("note: {error}; showing the grants on this machine");
            let local = still_valid
                .iter()
                .map(|grant| grant.grant.clone())
                .collect();
            ("local", local)
        }
    };
    // A grant the CA reports revoked opens nothing: it is listed apart, and its files here go.
    let (revoked, active): (Vec<_>, Vec<_>) = active_grants(server_grants, &installed_ids, now)
        .into_iter()
        .partition(|active| active.grant.revoked);
    let revoked_ids: HashSet<&str> = revoked
        .iter()
        .map(|revoked| revoked.grant.grant_id.as_str())
        .collect();
    for grant in &still_valid {
        if revoked_ids.contains(grant.grant.grant_id.as_str()) {
            state.remove_dir(&grant.dir)?;
        }
    }
    let pending = state.list_pending()?;

    if args.json {
        let grants: Vec<_> = active
            .iter()
            .map(|active| {
                json!({
                    "grant_id": active.grant.grant_id,
                    "request_id": active.grant.request_id,
                    "profile": active.grant.profile,
                    "host": active.grant.host,
                    "principals": active.grant.principals,
                    "ends_at": active.ends_at,
                    "seconds_left": time_left(active.ends_at, now).as_secs(),
                    "installed": active.installed,
                })
            })
            .collect();
        let pending: Vec<_> = pending
            .iter()
            .map(|pending| {
                json!({
                    "request_id": pending.request.request_id,
                    "profile": pending.request.profile,
                    "host": pending.request.host,
                    "created_at": pending.request.created_at,
                })
            })
            .collect();
        let removed: Vec<_> = expired.iter().map(|grant| &grant.grant.grant_id).collect();
        print_json(&json!({
            "source": source,
            "grants": grants,
            "revoked": revoked.iter().map(|revoked| &revoked.grant.grant_id).collect::<Vec<_>>(),
            "pending": pending,
            "removed": removed,
        }));
        return Ok(());
    }

    if active.is_empty() {
        print_line("No active grants.");
    } else {
        let origin = if source == "server" {
            "from the CA"
        } else {
            "on this machine"
        };
        print_line(&format!("Active grants ({origin}):"));
    }
    let id_width = column_width(active.iter().map(|active| &active.grant.grant_id));
    let host_width = column_width(active.iter().map(|active| &active.grant.host));
    for active in &active {
        let installed = if active.installed {
            ""
        } else {
            " (key not on this machine)"
        };
        print_line(&format!(
            "  {:id_width$}  {:host_width$}  {} left (until {})  {}{installed}",
            active.grant.grant_id,
            active.grant.host,
            jit_proto::format_duration(time_left(active.ends_at, now)),
            crate::format_instant(active.ends_at),
            active.grant.principals.join(","),
        ));
    }
    if !revoked.is_empty() {
        print_line(
            "Revoked early (these certificates open nothing; ask again with `jit request`):",
        );
    }
    for revoked in &revoked {
        print_line(&format!(
            "  {}  {}  {}",
            revoked.grant.grant_id,
            revoked.grant.host,
            revoked.grant.principals.join(","),
        ));
    }
    if !pending.is_empty() {
        print_line("Waiting for approval (keys kept on this machine):");
    }
    for pending in &pending {
        print_line(&format!(
            "  {}  {}  profile {}; run `jit fetch {}`",
            pending.request.request_id,
            pending.request.host,
            pending.request.profile,
            pending.request.request_id
        ));
    }
    if !expired.is_empty() {
        print_line(&format!(
            "Removed {} expired grant(s) from {}.",
            expired.len(),
            state.root().display()
        ));
    }
    Ok(())
}

async fn server_grants(
    context: &Context,
    state: &StateDir,
) -> Result<Vec<GrantView>, CommandError> {
    let ca = context.ca()?;
    let id_token = context.bearer_token(&ca, state).await?;
    Ok(ca.list_grants(&id_token).await?.grants)
}

/// Splits installed grants into those whose certificate is still valid at `now` and the
/// expired ones.
pub fn partition_by_expiry(
    grants: Vec<LocalGrant>,
    now: DateTime<Utc>,
) -> (Vec<LocalGrant>, Vec<LocalGrant>) {
    grants
        .into_iter()
        .partition(|grant| now < grant.certificate.valid_before)
}

/// The grants still running at `now`, in the given order, marked with whether their key is
/// installed here.
pub fn active_grants(
    grants: Vec<GrantView>,
    installed_ids: &HashSet<&str>,
    now: DateTime<Utc>,
) -> Vec<ActiveGrant> {
    grants
        .into_iter()
        .filter_map(|grant| {
            let ends_at = grant
                .certificate
                .as_ref()
                .map_or(grant.ends_at, |certificate| certificate.valid_before);
            let installed = installed_ids.contains(grant.grant_id.as_str());
            (now < ends_at).then_some(ActiveGrant {
                grant,
                ends_at,
                installed,
            })
        })
        .collect()
}

fn column_width<'a>(values: impl Iterator<Item = &'a String>) -> usize {
    values.map(|value| value.chars().count()).max().unwrap_or(0)
}

fn time_left(ends_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (ends_at - now).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_instants::at;

    fn grant_view(grant_id: &str, ends_at: DateTime<Utc>) -> GrantView {
        GrantView {
            grant_id: grant_id.into(),
            request_id: "r-1".into(),
            profile: "db".into(),
            host: "db-1".into(),
            principals: vec!["root@db-1".into()],
            starts_at: at(-600),
            ends_at,
            certificate: None,
            revoked: false,
        }
    }

    #[test]
    fn only_running_grants_are_active() {
        let grants = vec![
            grant_view("g-running", at(1)),
            grant_view("g-ended", at(0)),
            grant_view("g-elsewhere", at(60)),
        ];
        let installed: HashSet<&str> = ["g-running"].into_iter().collect();

        let active = active_grants(grants, &installed, at(0));

        let summary: Vec<_> = active
            .iter()
            .map(|active| (active.grant.grant_id.as_str(), active.installed))
            .collect();
        assert_eq!(summary, [("g-running", true), ("g-elsewhere", false)]);
    }
}
