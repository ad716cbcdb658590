//! A string that must never reach a terminal or a log: tokens and the like.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string (an ID token, a refresh token).
///
/// `Debug` and `Display` print `[redacted]`, so a secret caught in an error message or a debug
/// dump does not leak; the value is reachable only through [`Secret::expose`]. It serialises as
/// the plain string, because the token cache has to store it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that has to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let token = Secret::new("eyJhbGciOi.secret.part");

        assert_eq!(format!("{token:?} {token}"), "[redacted] [redacted]");
        assert_eq!(token.expose(), "eyJhbGciOi.secret.part");
    }
}
