//! `jit sessions`: who is logged in where, under which grant. Auditors see every open session,
//! approvers those of grants they could approve, everyone else their own.

use clap::Args;
use jit_proto::sessions::{SessionQuery, SessionView};
use serde_json::json;

use super::{print_json, print_line, CommandError, Context};
use crate::api::one_line;

/// Arguments of `jit sessions`.
#[derive(Clone, Debug, Args)]
pub struct SessionsCli {
    /// Only the sessions on this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `jit sessions`.
pub async fn run(context: &Context, args: &SessionsCli) -> Result<(), CommandError> {
    let query = SessionQuery {
        host: args.host.clone(),
    };
    let (state, ca) = (context.state()?, context.ca()?);
    let list = {
        let (ca, query) = (&ca, &query);
        context
            .call(ca, &state, |id_token| async move {
                ca.list_sessions(&id_token, query).await
            })
            .await?
    };

    if args.json {
        print_json(&json!({ "sessions": list.sessions }));
        return Ok(());
    }
    if list.sessions.is_empty() {
        print_line("No open sessions you may see.");
        return Ok(());
    }
    for line in render(&list.sessions, (context.clock)()) {
        print_line(&line);
    }
    Ok(())
}

/// The sessions as lines for a human: one per session, under a header.
pub fn render(sessions: &[SessionView], now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<14} {:<10} {:<24} {:<16} {:>8}  {:<22} {:<8} {}",
        "HOST", "USER", "HOLDER", "GRANT", "SERIAL", "FROM", "TTY", "SINCE / LEFT"
    )];
    for session in sessions {
        let since = (now - session.started_at).to_std().unwrap_or_default();
        let left = (session.valid_before - now).to_std().unwrap_or_default();
        lines.push(format!(
            "{:<14} {:<10} {:<24} {:<16} {:>8}  {:<22} {:<8} {} / {}",
            one_line(&session.host),
            one_line(&session.unix_user),
            one_line(&session.holder),
            one_line(&session.grant_id),
            session.serial,
            session
                .source_address
                .as_deref()
                .map_or("-".into(), one_line),
            session.tty.as_deref().map_or("-".into(), one_line),
            jit_proto::format_duration(since),
            jit_proto::format_duration(left),
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    #[test]
    fn each_session_is_one_line_naming_where_who_and_which_grant() {
        let now = DateTime::from_timestamp(1_800_000_600, 0).unwrap();
        let session = SessionView {
            session_id: "s-1".into(),
            host: "db-1".into(),
            unix_user: "root".into(),
            holder: "alice@example.com".into(),
            grant_id: "g-abc".into(),
            serial: 17,
            source_address: Some("10.0.0.5:50514".into()),
            tty: None,
            started_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            valid_before: DateTime::from_timestamp(1_800_001_800, 0).unwrap(),
        };

        let lines = render(&[session], now);

        assert_eq!(lines.len(), 2);
        for part in [
            "db-1",
            "root",
            "alice@example.com",
            "g-abc",
            "17",
            "10.0.0.5:50514",
        ] {
            assert!(lines[1].contains(part), "{part} missing: {}", lines[1]);
        }
        assert!(lines[1].ends_with("10m / 20m"), "{}", lines[1]);
    }
}
