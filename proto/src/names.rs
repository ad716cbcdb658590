//! Which host, host-group and Unix user names are acceptable, and how principals are spelled.
//!
//! A certificate principal names both the Unix user and where it is valid: `root@db-1` opens
//! `root` on the host `db-1` only, and `root@group:db-prod` opens `root` on every host of the
//! group `db-prod`. A server lists, per Unix user, the principals that open it
//! (`AuthorizedPrincipalsFile`), so a certificate for `root@db-1` does not open `root` on `db-2`.
//!
//! Names are deliberately narrow ASCII: sshd splits principal lists on `,`, treats `*`, `?` and
//! `!` as patterns in some places, and a look-alike letter must not pass for another. Anything
//! outside the allowed set is refused, not escaped.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} is empty")]
    Empty {
        /// What the name was for (`host`, `unix user`, ...).
        kind: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{kind} is longer than {max} characters")]
    TooLong {
        /// What the name was for.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// The name holds a character outside the allowed set, or starts or ends wrongly.
    #[error("{kind} `{shown}` may hold only {allowed}")]
    BadCharacter {
        /// What the name was for.
        kind: &'static str,
        /// The name, with anything unprintable replaced, cut to 64 characters.
        shown: String,
        /// The allowed set, in words.
        allowed: &'static str,
    },
}

const HOST_ALLOWED: &str =
    "lowercase letters, digits, '-' and '.', starting with a letter or digit";
const USER_ALLOWED: &str = "lowercase letters, digits, '_' and '-', starting with a letter or '_'";

fn shown(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|character| {
            if character.is_ascii_graphic() {
                character
            } else {
                '?'
            }
        })
        .collect()
}

/// Checks a host or host-group name: DNS-like, lowercase ASCII, at most 253 characters.
pub fn validate_host(name: &str) -> Result<(), NameError> {
    validate_dns_like(name, "host")
}

/// Checks a host-group name; same rules as a host name.
pub fn validate_group(name: &str) -> Result<(), NameError> {
    validate_dns_like(name, "host group")
}

fn validate_dns_like(name: &str, kind: &'static str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > 253 {
        return Err(NameError::TooLong { kind, max: 253 });
    }
    let allowed = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    let bytes = name.as_bytes();
    let body_ok = bytes
        .iter()
        .all(|&byte| allowed(byte) || byte == b'-' || byte == b'.');
    let ends_ok = allowed(bytes[0]) && allowed(bytes[bytes.len() - 1]);
    if !body_ok || !ends_ok || name.contains("..") {
        return Err(NameError::BadCharacter {
            kind,
            shown: shown(name),
            allowed: HOST_ALLOWED,
        });
    }
    Ok(())
}

/// Checks a Unix user name in the portable POSIX-like subset, at most 32 characters.
pub fn validate_unix_user(name: &str) -> Result<(), NameError> {
    let kind = "unix user";
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > 32 {
        return Err(NameError::TooLong { kind, max: 32 });
    }
    let bytes = name.as_bytes();
    let first_ok = bytes[0].is_ascii_lowercase() || bytes[0] == b'_';
    let rest_ok = bytes.iter().all(|&byte| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
    });
    if !first_ok || !rest_ok {
        return Err(NameError::BadCharacter {
            kind,
            shown: shown(name),
            allowed: USER_ALLOWED,
        });
    }
    Ok(())
}

/// Caller-supplied text made fit for one line of an error message or log: at most 64
/// characters, control characters replaced by `?`.
pub fn clip_for_display(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|character| {
            if character.is_control() {
                '?'
            } else {
                character
            }
        })
        .collect()
}

/// The principal that opens `unix_user` on the single host `host`: `root@db-1`.
pub fn principal_for_host(unix_user: &str, host: &str) -> String {
    format!("{unix_user}@{host}")
}

/// The principal that opens `unix_user` on every host of `group`: `root@group:db-prod`.
pub fn principal_for_group(unix_user: &str, group: &str) -> String {
    format!("{unix_user}@group:{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        assert!(validate_host("db-1").is_ok());
        assert!(validate_host("web.eu-1.example.com").is_ok());
        assert!(validate_unix_user("root").is_ok());
        assert!(validate_unix_user("_svc-backup2").is_ok());
    }

    #[test]
    fn refuses_separators_patterns_and_look_alikes() {
        for bad in [
            "db-1,db-2",
            "db 1",
            "db-1\n",
            "db\0",
            "*",
            "db?",
            "!db",
            "db%",
            "root@db",
            "dЬ-1",
            "DB-1",
            "-db",
            "db-",
            "a..b",
            "",
        ] {
            assert!(validate_host(bad).is_err(), "{bad:?}");
        }
        for bad in ["Root", "1root", "ro ot", "root,admin", "rоot", "root@x", ""] {
            assert!(validate_unix_user(bad).is_err(), "{bad:?}");
        }
        assert!(validate_host(&"a".repeat(254)).is_err());
        assert!(validate_unix_user(&"a".repeat(33)).is_err());
    }

    #[test]
    fn principals_name_user_and_place() {
        assert_eq!(principal_for_host("root", "db-1"), "root@db-1");
        assert_eq!(principal_for_group("root", "db-prod"), "root@group:db-prod");
    }
}
