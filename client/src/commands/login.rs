//! `jit login`: log in to the CA's identity provider, or store a token given by automation.

use std::io::Read;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{print_line, CommandError, Context};
use crate::login::{self, LoginOptions};
use crate::tokens::{self, CachedTokens};

/// Arguments of `jit login`.
#[derive(Clone, Debug, Default)]
pub struct LoginArgs {
    /// Flow and the provider parameters to send.
    pub options: LoginOptions,
    /// Store this ID token (`-` for standard input) instead of logging in.
    pub id_token_file: Option<PathBuf>,
}

/// Runs `jit login`.
pub async fn run(context: &Context, args: &LoginArgs) -> Result<(), CommandError> {
    let state = context.state()?;

    if let Some(path) = &args.id_token_file {
        let token_text = read_token_input(path)?;
        let cached = tokens::tokens_from_file(&token_text, (context.clock)())?;
        cached.store(&state)?;
        print_line(&format!(
            "Stored the ID token; it {}.",
            lifetime_phrase(&cached, (context.clock)())
        ));
        return Ok(());
    }

    let ca = context.ca()?;
    let outcome = login::login(&ca, &state, &context.env, &args.options, context.clock).await?;

    let who = outcome.email.as_deref().unwrap_or(&outcome.subject);
    let strength = outcome
        .auth_context
        .as_deref()
        .map(|class| format!(" ({class})"))
        .unwrap_or_default();
    print_line(&format!(
        "Logged in as {who}{strength}; the ID token {}.",
        lifetime_phrase(&outcome.tokens, (context.clock)())
    ));
    Ok(())
}

fn lifetime_phrase(cached: &CachedTokens, now: DateTime<Utc>) -> String {
    let left = (cached.expires_at - now).to_std().unwrap_or_default();
    let renewal = if cached.refresh_token.is_some() {
        " and is renewed automatically"
    } else {
        ""
    };
    format!(
        "expires in {} (at {}){renewal}",
        jit_proto::format_duration(left),
        crate::format_instant(cached.expires_at)
    )
}

fn read_token_input(path: &std::path::Path) -> Result<String, CommandError> {
    if path.as_os_str() == "-" {
        let mut token_text = String::new();
        std::io::stdin()
            .read_to_string(&mut token_text)
            .map_err(|source| CommandError::ReadInput {
                path: "standard input".into(),
                source,
            })?;
        return Ok(token_text);
    }

    std::fs::read_to_string(path).map_err(|source| CommandError::ReadInput {
        path: path.display().to_string(),
        source,
    })
}
