//! Waiting for a pending request to be decided, with a live status line on standard error.
//!
//! Used by `jit wait`, `jit request --wait` and `jit extend --wait`. The status line says the
//! state, how long the wait has lasted and the approvals so far. On a terminal it is redrawn in
//! place every second; otherwise a line is written whenever the state or the approvals change,
//! so a log stays readable. Ctrl-C stops the wait and leaves the request pending at the CA.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use jit_proto::{AccessRequestView, RequestStatus};

use super::{CommandError, Context};
use crate::api::{one_line, CaClient};
use crate::state::StateDir;

/// How often the status line is redrawn on a terminal.
const TICK: Duration = Duration::from_secs(1);

/// How many ticks pass between two questions to the CA.
const TICKS_PER_POLL: u32 = 2;

/// Asks the CA about `request_id` until it is no longer pending and returns its final view.
///
/// Fails with [`CommandError::StillPending`] once `limit` has passed (no limit: the request's
/// own expiry at the CA ends the wait), and with [`CommandError::Interrupted`] on Ctrl-C.
pub async fn wait_for_decision(
    context: &Context,
    ca: &CaClient,
    state: &StateDir,
    request_id: &str,
    limit: Option<Duration>,
) -> Result<AccessRequestView, CommandError> {
    let mut line = StatusLine::new(std::io::stderr().is_terminal());
    // A failure to catch Ctrl-C only means Ctrl-C keeps its default effect.
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };

    let outcome = tokio::select! {
        outcome = poll(context, ca, state, request_id, limit, &mut line) => outcome,
        () = interrupted => Err(CommandError::Interrupted {
            request_id: request_id.to_owned(),
        }),
    };
    line.finish();
    outcome
}

async fn poll(
    context: &Context,
    ca: &CaClient,
    state: &StateDir,
    request_id: &str,
    limit: Option<Duration>,
    line: &mut StatusLine,
) -> Result<AccessRequestView, CommandError> {
    let started = (context.clock)();
    let mut ticks: u32 = 0;
    loop {
        if ticks % TICKS_PER_POLL == 0 {
            let view = context
                .call(ca, state, |id_token| async move {
                    ca.get_request(&id_token, request_id).await
                })
                .await?;
            if view.status != RequestStatus::Pending {
                return Ok(view);
            }
            line.update(view);
        }

        let waited = ((context.clock)() - started).to_std().unwrap_or_default();
        if limit.is_some_and(|limit| waited >= limit) {
            return Err(CommandError::StillPending {
                request_id: request_id.to_owned(),
                waited: jit_proto::format_duration(waited),
            });
        }
        line.draw(waited);
        tokio::time::sleep(TICK).await;
        ticks = ticks.wrapping_add(1);
    }
}

/// The status line of a pending request after `waited`, for example
/// `r-abc: pending, 1 of 2 approvals (carol@example.com), waiting 12s`.
pub fn status_text(view: &AccessRequestView, waited: Duration) -> String {
    let approvers = if view.approvals.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = view.approvals.iter().map(|name| one_line(name)).collect();
        format!(" ({})", names.join(", "))
    };
    let deadline = view
        .expires_at
        .map(|expires_at| format!(", lapses at {}", crate::format_instant(expires_at)))
        .unwrap_or_default();
    format!(
        "{}: {}, {} of {} approvals{approvers}, waiting {}{deadline}",
        view.request_id,
        view.status.as_str(),
        view.approvals.len(),
        view.required_approvals,
        jit_proto::format_duration(waited)
    )
}

/// The line on standard error that tells how the wait goes.
struct StatusLine {
    terminal: bool,
    view: Option<AccessRequestView>,
    /// What was last written off a terminal: state and approvals, without the elapsed time.
    last_written: Option<(RequestStatus, Vec<String>)>,
    drawn: bool,
}

impl StatusLine {
    fn new(terminal: bool) -> StatusLine {
        StatusLine {
            terminal,
            view: None,
            last_written: None,
            drawn: false,
        }
    }

    fn update(&mut self, view: AccessRequestView) {
        self.view = Some(view);
    }

    fn draw(&mut self, waited: Duration) {
        let Some(view) = &self.view else {
            return;
        };
        let text = status_text(view, waited);
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            // Back to the start of the line, then clear what a longer earlier line left.
            let _ = write!(stderr, "\r{text}\x1b[K");
            let _ = stderr.flush();
            self.drawn = true;
            return;
        }
        let state = (view.status, view.approvals.clone());
        if self.last_written.as_ref() != Some(&state) {
            let _ = writeln!(stderr, "{text}");
            self.last_written = Some(state);
        }
    }

    /// Ends a line drawn in place, so what follows starts on its own line.
    fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr().lock());
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_instants::{at, request_view};

    fn pending(approvals: &[&str]) -> AccessRequestView {
        request_view(serde_json::json!({
            "required_approvals": 2,
            "approvals": approvals,
            "expires_at": at(3500),
        }))
    }

    #[test]
    fn the_line_names_state_approvals_and_time() {
        let text = status_text(&pending(&["carol@example.com"]), Duration::from_secs(72));

        assert_eq!(
            text,
            "r-1: pending, 1 of 2 approvals (carol@example.com), waiting 1m12s, \
             lapses at 2023-11-14T23:11:40Z"
        );
    }

    #[test]
    fn approver_names_stay_on_the_line() {
        let text = status_text(&pending(&["eve\n\rx"]), Duration::ZERO);

        assert!(!text.contains(['\n', '\r']), "{text:?}");
    }
}
