//! `jit fetch` and `jit wait`: pick up the certificate of a request that needed approval.

use std::time::Duration;

use jit_proto::RequestStatus;

use super::request::settle;
use super::{CommandError, Context};

/// How often `jit wait` asks the CA about the request.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Arguments of `jit fetch` and `jit wait`.
#[derive(Clone, Debug)]
pub struct FetchArgs {
    /// The request to finish.
    pub request_id: String,
    /// Keep asking until the request is no longer pending, at most this long.
    pub wait_up_to: Option<Duration>,
    /// Print JSON instead of text.
    pub json: bool,
}

/// Runs `jit fetch` (one look) or `jit wait` (look until decided or `wait_up_to` has passed).
///
/// An approved request is installed exactly as `jit request` installs one.
pub async fn run(context: &Context, args: &FetchArgs) -> Result<(), CommandError> {
    let state = context.state()?;
    // Checked before any network call: the id also names a local directory.
    state.request_dir(&args.request_id)?;
    let ca = context.ca()?;

    let started = (context.clock)();
    let mut announced = false;
    loop {
        let id_token = context.bearer_token(&ca, &state).await?;
        let view = ca.get_request(&id_token, &args.request_id).await?;

        let still_pending = view.status == RequestStatus::Pending;
        let Some(wait_up_to) = args.wait_up_to.filter(|_| still_pending) else {
            return settle(context, &state, &view, None, args.json).await;
        };

        let waited = ((context.clock)() - started).to_std().unwrap_or_default();
        if waited >= wait_up_to {
            return Err(CommandError::StillPending {
                request_id: args.request_id.clone(),
                waited: jit_proto::format_duration(wait_up_to),
            });
        }
        if !announced {
            eprintln!(
                "Waiting up to {} for request {} to be approved...",
                jit_proto::format_duration(wait_up_to),
                args.request_id
            );
            announced = true;
        }
        tokio::time::sleep(POLL_INTERVAL.min(wait_up_to - waited)).await;
    }
}
