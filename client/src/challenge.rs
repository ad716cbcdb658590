//! The CA's step-up challenge: what a `401 insufficient_user_authentication` asks for.
//!
//! RFC 9470 (OAuth 2.0 Step Up Authentication Challenge) puts the demand in the response's
//! `WWW-Authenticate: Bearer` header as auth-params: `acr_values` (space-separated
//! authentication context classes) and `max_age` (seconds since the last active
//! authentication). The syntax of the header is RFC 9110 section 11.6.1: a scheme, then
//! comma-separated `name=value` pairs whose value is a token or a quoted string.

use std::time::Duration;

/// What the CA asks the next login to prove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepUpChallenge {
    /// `acr_values` to ask the provider for, when the CA names any.
    pub acr_values: Option<String>,
    /// The login must be at most this old, when the CA says so.
    pub max_age: Option<Duration>,
}

/// Reads a `WWW-Authenticate` value. A missing or unreadable header yields an empty challenge:
/// the client then still logs in again with `prompt=login`, which is the least it can do.
pub fn parse_challenge(header: Option<&str>) -> StepUpChallenge {
    let Some(header) = header else {
        return StepUpChallenge::default();
    };
    let mut challenge = StepUpChallenge::default();
    for (name, value) in auth_params(header) {
        match name.to_ascii_lowercase().as_str() {
            "acr_values" if !value.trim().is_empty() => {
                challenge.acr_values = Some(value.trim().to_owned());
            }
            "max_age" => challenge.max_age = value.parse().ok().map(Duration::from_secs),
            _ => {}
        }
    }
    challenge
}

/// The `name=value` pairs of a `Bearer` challenge, quoted values unescaped. Parsing stops at
/// the first malformed pair; what was read before it is kept.
fn auth_params(header: &str) -> Vec<(String, String)> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Vec::new();
    }

    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        let name = name.trim().to_owned();
        if name.is_empty() || chars.next_if_eq(&'=').is_none() {
            return params;
        }
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}

        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            // quoted-string: a backslash takes the next character literally.
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => value.extend(chars.next()),
                    other => value.push(other),
                }
            }
            if !closed {
                return params;
            }
        } else {
            value.extend(std::iter::from_fn(|| {
                chars.next_if(|c| *c != ',' && !c.is_whitespace())
            }));
        }
        params.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_ca_sends() {
        let header = r#"Bearer error="insufficient_user_authentication", error_description="profile `db` requires a login with one of: otp; log in again", acr_values="urn:mfa urn:hwk", max_age="300""#;

        let challenge = parse_challenge(Some(header));

        assert_eq!(challenge.acr_values.as_deref(), Some("urn:mfa urn:hwk"));
        assert_eq!(challenge.max_age, Some(Duration::from_secs(300)));
    }

    #[test]
    fn takes_tokens_escapes_and_any_order() {
        let header =
            r#"bearer max_age=60,acr_values="a\"b", error=insufficient_user_authentication"#;

        let challenge = parse_challenge(Some(header));

        assert_eq!(challenge.max_age, Some(Duration::from_secs(60)));
        assert_eq!(challenge.acr_values.as_deref(), Some("a\"b"));
    }

    #[test]
    fn missing_or_foreign_headers_ask_for_nothing_in_particular() {
        assert_eq!(parse_challenge(None), StepUpChallenge::default());
        assert_eq!(
            parse_challenge(Some(r#"Basic realm="x", max_age="5""#)),
            StepUpChallenge::default()
        );
        assert_eq!(
            parse_challenge(Some(r#"Bearer max_age="12"#)),
            StepUpChallenge::default()
        );
        assert_eq!(
            parse_challenge(Some(r#"Bearer max_age="soon""#)).max_age,
            None
        );
    }
}
