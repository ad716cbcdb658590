//! `jit fetch` and `jit wait`: pick up the certificate of a request that needed approval.

use std::time::Duration;

use super::request::settle;
use super::{wait, CommandError, Context};

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
/// An approved request is installed exactly as `jit request` installs one; an approved
/// extension re-installs its grant with the new certificate.
pub async fn run(context: &Context, args: &FetchArgs) -> Result<(), CommandError> {
    let state = context.state()?;
    // Checked before any network call: the id also names a local directory.
    state.request_dir(&args.request_id)?;
    let ca = context.ca()?;

    let view = match args.wait_up_to {
        Some(limit) => {
            wait::wait_for_decision(context, &ca, &state, &args.request_id, Some(limit)).await?
        }
        None => {
            let (ca, request_id) = (&ca, args.request_id.as_str());
            context
                .call(ca, &state, |id_token| async move {
                    ca.get_request(&id_token, request_id).await
                })
                .await?
        }
    };
    settle(context, &state, &view, None, args.json).await
}
