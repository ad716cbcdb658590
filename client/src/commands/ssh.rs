//! `jit ssh`: run the real `ssh` with the key and certificate of a matching, unexpired grant.
//!
//! Arguments are split this way: `jit ssh [--grant ID] [user@]host [ssh options] [-- command]`.
//! The words after the destination up to `--` are ssh options and go before the destination;
//! the words after `--` are the remote command. Without `--`, the options end at the first word
//! that is neither an option nor an option's argument, and the command starts there, as with
//! `ssh` itself.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::{CommandError, Context};
use crate::state::LocalGrant;

/// The single-letter ssh options that take an argument (from `ssh(1)`'s synopsis).
const OPTIONS_WITH_ARGUMENT: &str = "BbcDEeFIiJLlmOoPpQRSWw";

/// Why `jit ssh` cannot connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The destination is not `[user@]host`.
    #[error("destination `{0}` is not of the form [user@]host")]
    BadDestination(String),
    /// No unexpired grant covers the destination.
    #[error(
        "no valid grant for {target}; run `jit request PROFILE --host {host}{user_flag} \
         --reason TEXT`"
    )]
    NoGrant {
        /// What was asked for, as typed.
        target: String,
        /// The host.
        host: String,
        /// ` --user USER` when a user was given.
        user_flag: String,
    },
    /// Unexpired grants cover the host, but not for this user.
    #[error(
        "valid grants for {host} cover {users}, not {user}; run \
         `jit request PROFILE --host {host} --user {user} --reason TEXT`"
    )]
    UserNotGranted {
        /// The user asked for.
        user: String,
        /// The host.
        host: String,
        /// The users the grants do cover.
        users: String,
    },
    /// `--grant` names a grant that is not installed here.
    #[error("no grant {0} on this machine; `jit status` lists the grants")]
    UnknownGrant(String),
    /// `--grant` names an expired grant.
    #[error("grant {grant_id} expired at {}; request access again", crate::format_instant(*expired_at))]
    GrantExpired {
        /// The grant.
        grant_id: String,
        /// Its certificate's `valid_before`.
        expired_at: DateTime<Utc>,
    },
    /// `--grant` names a grant without this user among its principals.
    #[error("grant {grant_id} is for {users}, not {user}")]
    UserNotInGrant {
        /// The grant.
        grant_id: String,
        /// The user asked for.
        user: String,
        /// The users it covers.
        users: String,
    },
    /// A key or certificate path cannot be passed to ssh.
    #[error("cannot pass {} to ssh: the path is not UTF-8", .0.display())]
    UnusablePath(std::path::PathBuf),
    /// `ssh` could not be started.
    #[error("cannot run ssh")]
    Exec(#[source] std::io::Error),
}

/// Arguments of `jit ssh`.
#[derive(Clone, Debug)]
pub struct SshArgs {
    /// Use this grant instead of searching.
    pub grant_id: Option<String>,
    /// `[user@]host`.
    pub destination: String,
    /// Everything after the destination.
    pub rest: Vec<String>,
}

/// A parsed `[user@]host`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The Unix user, when given.
    pub user: Option<String>,
    /// The host, as the grant's principals spell it.
    pub host: String,
}

/// The words after the destination, sorted into ssh options and the remote command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitArgs {
    /// Options, placed before the destination.
    pub options: Vec<String>,
    /// Remote command, placed after the destination and `--`.
    pub command: Vec<String>,
}

/// The grant chosen for a connection and the user to log in as.
#[derive(Clone, Debug)]
pub struct Selection<'a> {
    /// The grant.
    pub grant: &'a LocalGrant,
    /// The Unix user.
    pub user: String,
}

/// Runs `jit ssh`: on success it does not return, the process becomes `ssh`.
pub fn run(context: &Context, args: &SshArgs) -> Result<(), CommandError> {
    let destination = parse_destination(&args.destination)?;
    let state = context.state()?;
    let grants = state.list_grants()?;

    let selection = select_grant(
        &grants,
        &destination,
        args.grant_id.as_deref(),
        (context.clock)(),
    )?;
    let split = split_ssh_args(&args.rest);
    let command_line = ssh_command_line(&selection, &destination.host, &split)?;
    // With the managed known_hosts file, the host must show a certificate from the CA.
    let host_trust = super::ssh_config::known_hosts_options(&state, &destination.host)?;

    let failure = std::process::Command::new("ssh")
        .args(host_trust)
        .args(command_line)
        .exec();
    Err(SshError::Exec(failure).into())
}

/// Parses `[user@]host`; the user, when given, must be a valid Unix user name.
pub fn parse_destination(text: &str) -> Result<Destination, SshError> {
    let bad = || SshError::BadDestination(crate::api::one_line(text));
    let (user, host) = match text.rsplit_once('@') {
        Some((user, host)) => {
            jit_proto::validate_unix_user(user).map_err(|_| bad())?;
            (Some(user.to_owned()), host)
        }
        None => (None, text),
    };

    let host_usable = !host.is_empty()
        && !host.starts_with('-')
        && !host
            .chars()
            .any(|character| character.is_whitespace() || character.is_control());
    if !host_usable {
        return Err(bad());
    }
    Ok(Destination {
        user,
        host: host.to_owned(),
    })
}

/// Sorts the words after the destination into ssh options and the remote command.
pub fn split_ssh_args(rest: &[String]) -> SplitArgs {
    if let Some(separator) = rest.iter().position(|word| word == "--") {
        return SplitArgs {
            options: rest[..separator].to_vec(),
            command: rest[separator + 1..].to_vec(),
        };
    }

    let mut index = 0;
    while let Some(word) = rest.get(index) {
        let Some(flags) = word.strip_prefix('-').filter(|flags| !flags.is_empty()) else {
            break;
        };
        index += 1;
        // In a cluster such as `-tp 2222` only the last letter may take an argument; when it is
        // the cluster's last character, the argument is the next word.
        for (position, flag) in flags.char_indices() {
            if OPTIONS_WITH_ARGUMENT.contains(flag) {
                if position + flag.len_utf8() == flags.len() {
                    index += 1;
                }
                break;
            }
        }
    }

    let options_end = index.min(rest.len());
    SplitArgs {
        options: rest[..options_end].to_vec(),
        command: rest[options_end..].to_vec(),
    }
}

/// Picks the grant for `destination` at `now`.
///
/// With `explicit`, that grant, which must be unexpired and, when a user is given, carry a
/// principal for that user. Otherwise the unexpired grants (`now < valid_before`) with a
/// principal `user@host` (any user when none is given); of several, the one lasting longest.
/// Without a user, the user of the grant's first principal for the host (or simply its first
/// principal, for an explicit grant) is taken.
pub fn select_grant<'a>(
    grants: &'a [LocalGrant],
    destination: &Destination,
    explicit: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Selection<'a>, SshError> {
    let host = destination.host.as_str();
    let wanted_user = destination.user.as_deref();

    if let Some(grant_id) = explicit {
        let grant = grants
            .iter()
            .find(|grant| grant.grant.grant_id == grant_id)
            .ok_or_else(|| SshError::UnknownGrant(grant_id.to_owned()))?;
        if now >= grant.certificate.valid_before {
            return Err(SshError::GrantExpired {
                grant_id: grant_id.to_owned(),
                expired_at: grant.certificate.valid_before,
            });
        }
        let users = principal_users(grant, None);
        let user = match wanted_user {
            Some(user) if users.contains(&user) => user.to_owned(),
            Some(user) => {
                return Err(SshError::UserNotInGrant {
                    grant_id: grant_id.to_owned(),
                    user: user.to_owned(),
                    users: users.join(", "),
                })
            }
            None => principal_users(grant, Some(host))
                .first()
                .or(users.first())
                .map(|user| (*user).to_owned())
                .ok_or_else(|| SshError::UnknownGrant(grant_id.to_owned()))?,
        };
        return Ok(Selection { grant, user });
    }

    let for_host: Vec<&LocalGrant> = grants
        .iter()
        .filter(|grant| now < grant.certificate.valid_before)
        .filter(|grant| !principal_users(grant, Some(host)).is_empty())
        .collect();
    let matching = for_host
        .iter()
        .copied()
        .filter(|grant| {
            wanted_user.is_none_or(|user| principal_users(grant, Some(host)).contains(&user))
        })
        .max_by_key(|grant| grant.certificate.valid_before);

    match (matching, wanted_user) {
        (Some(grant), Some(user)) => Ok(Selection {
            grant,
            user: user.to_owned(),
        }),
        (Some(grant), None) => {
            let user = principal_users(grant, Some(host))
                .first()
                .map(|user| (*user).to_owned())
                .unwrap_or_default();
            Ok(Selection { grant, user })
        }
        (None, Some(user)) if !for_host.is_empty() => {
            let mut users: Vec<&str> = for_host
                .iter()
                .flat_map(|grant| principal_users(grant, Some(host)))
                .collect();
            users.sort_unstable();
            users.dedup();
            Err(SshError::UserNotGranted {
                user: user.to_owned(),
                host: host.to_owned(),
                users: users.join(", "),
            })
        }
        (None, _) => Err(SshError::NoGrant {
            target: wanted_user.map_or_else(|| host.to_owned(), |user| format!("{user}@{host}")),
            host: host.to_owned(),
            user_flag: wanted_user
                .map(|user| format!(" --user {user}"))
                .unwrap_or_default(),
        }),
    }
}

/// The users of a grant's certificate principals (`user@place`), in order; only those for
/// `place` when given.
fn principal_users<'a>(grant: &'a LocalGrant, place: Option<&str>) -> Vec<&'a str> {
    grant
        .certificate
        .principals
        .iter()
        .filter_map(|principal| principal.split_once('@'))
        .filter(|(_, principal_place)| place.is_none_or(|place| *principal_place == place))
        .map(|(user, _)| user)
        .collect()
}

/// The arguments for `ssh`: this grant's key and certificate only, then the user's options,
/// then `user@host`, then `--` and the remote command if there is one.
pub fn ssh_command_line(
    selection: &Selection<'_>,
    host: &str,
    split: &SplitArgs,
) -> Result<Vec<OsString>, SshError> {
    let key = ssh_config_path(&selection.grant.key_path)?;
    let certificate = ssh_config_path(&selection.grant.cert_path)?;

    // ssh keeps the first value it sees for most options, so ours come first.
    let mut words: Vec<OsString> = vec![
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("IdentityFile={key}").into(),
        "-o".into(),
        format!("CertificateFile={certificate}").into(),
    ];
    words.extend(split.options.iter().map(OsString::from));
    words.push(format!("{}@{host}", selection.user).into());
    if !split.command.is_empty() {
        words.push("--".into());
        words.extend(split.command.iter().map(OsString::from));
    }
    Ok(words)
}

/// A path as an ssh configuration value: `%` is ssh's token character and must be doubled,
/// and a path with spaces must be quoted.
pub(crate) fn ssh_config_path(path: &Path) -> Result<String, SshError> {
    let text = path
        .to_str()
        .ok_or_else(|| SshError::UnusablePath(path.to_path_buf()))?;
    let escaped = text.replace('%', "%%");
    if escaped.chars().any(char::is_whitespace) {
        return Ok(format!("\"{escaped}\""));
    }
    Ok(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_instants::at;
    use jit_proto::{GrantView, IssuedCertificate};
    use std::path::PathBuf;

    fn grant(grant_id: &str, principals: &[&str], valid_before: DateTime<Utc>) -> LocalGrant {
        let principals: Vec<String> = principals.iter().map(|p| p.to_string()).collect();
        let dir = PathBuf::from("/state/grants").join(grant_id);
        LocalGrant {
            grant: GrantView {
                grant_id: grant_id.into(),
                request_id: format!("r-{grant_id}"),
                profile: "db".into(),
                host: "db-1".into(),
                principals: principals.clone(),
                starts_at: at(-600),
                ends_at: valid_before,
                certificate: None,
                revoked: false,
            },
            certificate: IssuedCertificate {
                serial: 1,
                key_id: "k".into(),
                principals,
                valid_after: at(-600),
                valid_before,
                certificate: String::new(),
            },
            key_path: dir.join("id_ed25519"),
            cert_path: dir.join("id_ed25519-cert.pub"),
            dir,
        }
    }

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| word.to_string()).collect()
    }

    fn destination(text: &str) -> Destination {
        parse_destination(text).unwrap()
    }

    #[test]
    fn picks_the_unexpired_grant_for_the_user_and_host() {
        let grants = vec![
            grant("g-old", &["root@db-1"], at(-1)),
            grant("g-other-host", &["root@db-2"], at(900)),
            grant("g-postgres", &["postgres@db-1"], at(900)),
            grant("g-root", &["root@db-1", "postgres@db-1"], at(600)),
        ];

        let selection = select_grant(&grants, &destination("root@db-1"), None, at(0)).unwrap();

        assert_eq!(selection.grant.grant.grant_id, "g-root");
        assert_eq!(selection.user, "root");
    }

    #[test]
    fn a_grant_is_unusable_from_valid_before_on() {
        let grants = vec![grant("g-1", &["root@db-1"], at(600))];

        assert!(select_grant(&grants, &destination("root@db-1"), None, at(599)).is_ok());
        assert!(matches!(
            select_grant(&grants, &destination("root@db-1"), None, at(600)),
            Err(SshError::NoGrant { .. })
        ));
    }

    #[test]
    fn without_a_user_the_first_principal_for_the_host_is_used() {
        let grants = vec![grant(
            "g-1",
            &["app@db-2", "postgres@db-1", "root@db-1"],
            at(600),
        )];

        let selection = select_grant(&grants, &destination("db-1"), None, at(0)).unwrap();

        assert_eq!(selection.user, "postgres");
    }

    #[test]
    fn of_several_the_longest_lasting_wins() {
        let grants = vec![
            grant("g-short", &["root@db-1"], at(300)),
            grant("g-long", &["root@db-1"], at(1200)),
        ];

        let selection = select_grant(&grants, &destination("root@db-1"), None, at(0)).unwrap();

        assert_eq!(selection.grant.grant.grant_id, "g-long");
    }

    #[test]
    fn missing_grants_name_the_request_to_run() {
        let grants = vec![grant("g-1", &["postgres@db-1"], at(600))];

        let no_grant = select_grant(&grants, &destination("root@db-9"), None, at(0)).unwrap_err();
        let other_user = select_grant(&grants, &destination("root@db-1"), None, at(0)).unwrap_err();

        assert_eq!(
            no_grant.to_string(),
            "no valid grant for root@db-9; run `jit request PROFILE --host db-9 --user root \
             --reason TEXT`"
        );
        assert!(
            other_user.to_string().contains("cover postgres, not root"),
            "{other_user}"
        );
    }

    #[test]
    fn an_explicit_grant_is_checked_too() {
        let grants = vec![
            grant("g-group", &["root@group:db-prod"], at(600)),
            grant("g-expired", &["root@db-1"], at(-1)),
        ];

        let chosen = select_grant(&grants, &destination("db-7"), Some("g-group"), at(0)).unwrap();
        let expired = select_grant(&grants, &destination("db-1"), Some("g-expired"), at(0));
        let wrong_user = select_grant(&grants, &destination("app@db-7"), Some("g-group"), at(0));
        let unknown = select_grant(&grants, &destination("db-7"), Some("g-nope"), at(0));

        assert_eq!(chosen.user, "root");
        assert!(matches!(expired, Err(SshError::GrantExpired { .. })));
        assert!(matches!(wrong_user, Err(SshError::UserNotInGrant { .. })));
        assert!(matches!(unknown, Err(SshError::UnknownGrant(_))));
    }

    #[test]
    fn destinations_are_user_at_host() {
        assert_eq!(
            destination("root@db-1"),
            Destination {
                user: Some("root".into()),
                host: "db-1".into()
            }
        );
        assert_eq!(destination("db-1").user, None);
        for bad in ["", "root@", "Root@db-1", "-oProxyCommand=x", "root@db 1"] {
            assert!(parse_destination(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn splits_options_from_the_command() {
        let options = words(&[
            "-p",
            "2222",
            "-oHostName=x",
            "-tt",
            "-vp2",
            "-L",
            "8080:x:80",
        ]);
        let command = words(&["uptime", "-a"]);
        let scanned = split_ssh_args(&[options.clone(), command.clone()].concat());
        let with_separator = split_ssh_args(&words(&["-p", "2222", "--", "ls", "-l"]));
        let only_options = split_ssh_args(&words(&["-o", "HostName=127.0.0.1", "-v"]));
        let dangling = split_ssh_args(&words(&["-p"]));

        assert_eq!(scanned, SplitArgs { options, command });
        assert_eq!(with_separator.options, words(&["-p", "2222"]));
        assert_eq!(with_separator.command, words(&["ls", "-l"]));
        assert_eq!(only_options.command, Vec::<String>::new());
        assert_eq!(dangling.options, words(&["-p"]));
    }

    #[test]
    fn builds_the_ssh_command_line() {
        let grants = vec![grant("g-1", &["root@db-1"], at(600))];
        let selection = select_grant(&grants, &destination("db-1"), None, at(0)).unwrap();
        let split = split_ssh_args(&words(&[
            "-p",
            "2222",
            "-o",
            "HostName=127.0.0.1",
            "--",
            "uptime",
        ]));

        let command_line = ssh_command_line(&selection, "db-1", &split).unwrap();

        let expected = words(&[
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityFile=/state/grants/g-1/id_ed25519",
            "-o",
            "CertificateFile=/state/grants/g-1/id_ed25519-cert.pub",
            "-p",
            "2222",
            "-o",
            "HostName=127.0.0.1",
            "root@db-1",
            "--",
            "uptime",
        ]);
        let expected: Vec<OsString> = expected.into_iter().map(OsString::from).collect();
        assert_eq!(command_line, expected);
    }

    #[test]
    fn paths_are_escaped_for_ssh() {
        assert_eq!(
            ssh_config_path(Path::new("/home/a b/100%/k")).unwrap(),
            "\"/home/a b/100%%/k\""
        );
        assert_eq!(ssh_config_path(Path::new("/plain/k")).unwrap(), "/plain/k");
    }
}
