//! Access profiles and the host inventory (`profiles.toml`): the *shape* of a grant.
//!
//! A profile says which Unix users a certificate carries, which hosts or host groups it may
//! target, how long it may last, which certificate extensions and critical options it gets, and
//! what the requester must say (reason, ticket). Who may use a profile is not decided here but
//! in the Cedar rules.
//!
//! The inventory lists every host the CA knows and the groups it belongs to. A request for a
//! host missing from the inventory is refused: the CA never certifies a name it cannot place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use jit_proto::{parse_duration, validate_group, validate_host, validate_unix_user};
use regex::Regex;
use serde::Deserialize;

/// Longest reason accepted, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest ticket accepted, in bytes.
pub const MAX_TICKET_BYTES: usize = 128;

/// Certificate extensions a profile may grant (`PROTOCOL.certkeys`, "Extensions").
pub const KNOWN_EXTENSIONS: [&str; 6] = [
    "no-touch-required",
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
];

/// Why `profiles.toml` was refused.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ProfilesError {
    /// The file.
    pub path: String,
    /// What is wrong, naming the profile or host.
    pub message: String,
}

/// A host of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Host name, as it appears in principals.
    pub name: String,
    /// Groups the host belongs to.
    pub groups: BTreeSet<String>,
}

/// Where a grant is valid: one host, or every host of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A single inventory host.
    Host(Host),
    /// A host group, spelled `group:NAME` in requests.
    Group(String),
}

impl Target {
    /// The spelling used in requests and views: `db-1` or `group:db-prod`.
    pub fn label(&self) -> String {
        match self {
            Target::Host(host) => host.name.clone(),
            Target::Group(group) => format!("group:{group}"),
        }
    }

    /// The certificate principal that opens `unix_user` on this target.
    pub fn principal(&self, unix_user: &str) -> String {
        match self {
            Target::Host(host) => jit_proto::principal_for_host(unix_user, &host.name),
            Target::Group(group) => jit_proto::principal_for_group(unix_user, group),
        }
    }
}

/// One access profile, checked.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile name.
    pub name: String,
    /// What it is for, shown to users.
    pub description: String,
    /// Unix users the certificate carries.
    pub unix_users: Vec<String>,
    /// Hosts it may target by name.
    pub hosts: BTreeSet<String>,
    /// Host groups it may target (the group itself or any of its hosts).
    pub host_groups: BTreeSet<String>,
    /// Any inventory host or group.
    pub any_host: bool,
    /// Duration when the request names none.
    pub default_duration: Duration,
    /// Longest grant; longer requests are cut to it.
    pub max_duration: Duration,
    /// Certificate extensions (none unless listed).
    pub extensions: BTreeSet<String>,
    /// `force-command` critical option, for a task that is one command.
    pub force_command: Option<String>,
    /// Pin `source-address` to the address the request came from.
    pub pin_source_address: bool,
    /// A non-empty reason is required.
    pub require_reason: bool,
    /// A ticket is required.
    pub require_ticket: bool,
    /// Pattern a ticket must match in full, when given.
    pub ticket_pattern: Option<Regex>,
    /// Approvals needed when the Cedar rules do not auto-approve.
    pub approvals: u32,
    /// How long a request may wait for approval.
    pub request_ttl: Duration,
    /// Break-glass: granted at once to whoever the rules let request it, reviewed afterwards.
    pub break_glass: bool,
    /// The ID token's `amr` must hold one of these (empty: no requirement).
    pub require_amr: Vec<String>,
    /// The login (`auth_time`) must be at most this old.
    pub max_auth_age: Option<Duration>,
    /// `acr_values` the client asks the provider for when stepping up.
    pub step_up_acr_values: Option<String>,
    /// Webhook URL of this profile's approvers (falls back to `[notifications] url`).
    pub approver_webhook: Option<String>,
}

/// Longest grant a break-glass profile may give.
pub const MAX_BREAK_GLASS_DURATION: Duration = Duration::from_secs(4 * 3600);

impl Profile {
    /// Whether this profile may target `target`.
    pub fn covers(&self, target: &Target) -> bool {
        if self.any_host {
            return true;
        }
        match target {
            Target::Host(host) => {
                self.hosts.contains(&host.name) || !self.host_groups.is_disjoint(&host.groups)
            }
            Target::Group(group) => self.host_groups.contains(group),
        }
    }
}

/// The checked contents of `profiles.toml`.
#[derive(Debug, Clone)]
pub struct Profiles {
    /// Profiles by name.
    pub profiles: BTreeMap<String, Profile>,
    /// Inventory hosts by name.
    pub hosts: BTreeMap<String, Host>,
    /// Every group some host belongs to.
    pub groups: BTreeSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    hosts: BTreeMap<String, RawHost>,
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    description: String,
    unix_users: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    host_groups: Vec<String>,
    #[serde(default)]
    any_host: bool,
    default_duration: String,
    max_duration: String,
    #[serde(default)]
    extensions: Vec<String>,
    #[serde(default)]
    force_command: Option<String>,
    #[serde(default)]
    pin_source_address: bool,
    #[serde(default = "default_true")]
    require_reason: bool,
    #[serde(default)]
    require_ticket: bool,
    #[serde(default)]
    ticket_pattern: Option<String>,
    #[serde(default = "default_approvals")]
    approvals: u32,
    #[serde(default = "default_request_ttl")]
    request_ttl: String,
    #[serde(default)]
    break_glass: bool,
    #[serde(default)]
    require_amr: Vec<String>,
    #[serde(default)]
    max_auth_age: Option<String>,
    #[serde(default)]
    step_up_acr_values: Option<String>,
    #[serde(default)]
    approver_webhook: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_approvals() -> u32 {
    1
}

fn default_request_ttl() -> String {
    "1h".into()
}

impl Profiles {
    /// Reads and checks `profiles.toml`.
    pub fn load(path: &Path) -> Result<Profiles, ProfilesError> {
        let text = std::fs::read_to_string(path).map_err(|error| ProfilesError {
            path: path.display().to_string(),
            message: format!("cannot read: {error}"),
        })?;
        Profiles::parse(&text, &path.display().to_string())
    }

    /// Parses and checks profile text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Profiles, ProfilesError> {
        let fail = |message: String| ProfilesError {
            path: source.to_owned(),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|error| fail(error.to_string()))?;

        let mut hosts = BTreeMap::new();
        let mut groups = BTreeSet::new();
        for (name, raw_host) in raw.hosts {
            validate_host(&name).map_err(|error| fail(format!("[hosts]: {error}")))?;
            for group in &raw_host.groups {
                validate_group(group).map_err(|error| fail(format!("host `{name}`: {error}")))?;
                groups.insert(group.clone());
            }
            let host = Host {
                name: name.clone(),
                groups: raw_host.groups.into_iter().collect(),
            };
            hosts.insert(name, host);
        }

        let mut profiles = BTreeMap::new();
        for (name, raw_profile) in raw.profiles {
            let profile = check_profile(&name, raw_profile, &hosts, &groups)
                .map_err(|message| fail(format!("profile `{name}`: {message}")))?;
            profiles.insert(name, profile);
        }

        Ok(Profiles {
            profiles,
            hosts,
            groups,
        })
    }

    /// Finds the target a request names: `group:NAME` or an inventory host.
    pub fn resolve_target(&self, spelled: &str) -> Result<Target, String> {
        if let Some(group) = spelled.strip_prefix("group:") {
            validate_group(group).map_err(|error| error.to_string())?;
            if !self.groups.contains(group) {
                return Err(format!("unknown host group `{group}`"));
            }
            return Ok(Target::Group(group.to_owned()));
        }
        validate_host(spelled).map_err(|error| error.to_string())?;
        self.hosts
            .get(spelled)
            .cloned()
            .map(Target::Host)
            .ok_or_else(|| format!("unknown host `{spelled}`"))
    }
}

fn check_profile(
    name: &str,
    raw: RawProfile,
    hosts: &BTreeMap<String, Host>,
    groups: &BTreeSet<String>,
) -> Result<Profile, String> {
    validate_group(name).map_err(|_| "name may hold only lowercase letters, digits, '-', '.'")?;

    if raw.unix_users.is_empty() {
        return Err("unix_users is empty".into());
    }
    for unix_user in &raw.unix_users {
        validate_unix_user(unix_user).map_err(|error| error.to_string())?;
    }
    for host in &raw.hosts {
        if !hosts.contains_key(host) {
            return Err(format!("host `{host}` is not in [hosts]"));
        }
    }
    for group in &raw.host_groups {
        if !groups.contains(group) {
            return Err(format!("host group `{group}` has no hosts in [hosts]"));
        }
    }
    if !raw.any_host && raw.hosts.is_empty() && raw.host_groups.is_empty() {
        return Err("names no hosts, host_groups or any_host".into());
    }

    let duration =
        |field: &str, text: &str| parse_duration(text).map_err(|error| format!("{field}: {error}"));
    let default_duration = duration("default_duration", &raw.default_duration)?;
    let max_duration = duration("max_duration", &raw.max_duration)?;
    let request_ttl = duration("request_ttl", &raw.request_ttl)?;
    if default_duration > max_duration {
        return Err("default_duration is longer than max_duration".into());
    }

    for extension in &raw.extensions {
        if !KNOWN_EXTENSIONS.contains(&extension.as_str()) {
            return Err(format!(
                "unknown extension `{extension}` (known: {})",
                KNOWN_EXTENSIONS.join(", ")
            ));
        }
    }
    if let Some(command) = &raw.force_command {
        if command.trim().is_empty() || command.contains(['\n', '\0']) {
            return Err("force_command must be one non-empty line".into());
        }
    }
    // Anchored so that a pattern such as `CHG-[0-9]+` must match the whole ticket.
    let ticket_pattern = raw
        .ticket_pattern
        .as_deref()
        .map(|pattern| Regex::new(&format!("^(?:{pattern})$")))
        .transpose()
        .map_err(|error| format!("ticket_pattern: {error}"))?;
    if raw.approvals == 0 || raw.approvals > 10 {
        return Err("approvals must be between 1 and 10".into());
    }
    // Break-glass skips approvers, so it must be explained, tied to a ticket and short.
    if raw.break_glass {
        if !raw.require_reason || !raw.require_ticket {
            return Err("break_glass requires require_reason and require_ticket".into());
        }
        if max_duration > MAX_BREAK_GLASS_DURATION {
            return Err("break_glass max_duration may be at most 4h".into());
        }
    }
    let max_auth_age = raw
        .max_auth_age
        .as_deref()
        .map(|text| duration("max_auth_age", text))
        .transpose()?;
    if let Some(url) = &raw.approver_webhook {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("approver_webhook must be an http(s) URL".into());
        }
    }

    Ok(Profile {
        name: name.to_owned(),
        description: raw.description,
        unix_users: raw.unix_users,
        hosts: raw.hosts.into_iter().collect(),
        host_groups: raw.host_groups.into_iter().collect(),
        any_host: raw.any_host,
        default_duration,
        max_duration,
        extensions: raw.extensions.into_iter().collect(),
        force_command: raw.force_command,
        pin_source_address: raw.pin_source_address,
        require_reason: raw.require_reason,
        require_ticket: raw.require_ticket,
        ticket_pattern,
        approvals: raw.approvals,
        request_ttl,
        break_glass: raw.break_glass,
        require_amr: raw.require_amr,
        max_auth_age,
        step_up_acr_values: raw.step_up_acr_values,
        approver_webhook: raw.approver_webhook,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        [hosts]
        db-1 = { groups = ["db-prod"] }
        db-2 = { groups = ["db-prod"] }
        web-1 = { groups = ["web"] }

        [profiles.read-only]
        unix_users = ["readonly"]
        any_host = true
        default_duration = "30m"
        max_duration = "2h"

        [profiles.db-root]
        unix_users = ["root"]
        host_groups = ["db-prod"]
        default_duration = "15m"
        max_duration = "1h"
        extensions = ["permit-pty"]
        require_ticket = true
        ticket_pattern = "CHG-[0-9]+"
        approvals = 2
    "#;

    #[test]
    fn loads_and_resolves_targets() {
        let profiles = Profiles::parse(SAMPLE, "profiles.toml").unwrap();
        let db_root = &profiles.profiles["db-root"];

        let db_1 = profiles.resolve_target("db-1").unwrap();
        let web_1 = profiles.resolve_target("web-1").unwrap();
        let group = profiles.resolve_target("group:db-prod").unwrap();

        assert!(db_root.covers(&db_1));
        assert!(!db_root.covers(&web_1));
        assert!(db_root.covers(&group));
        assert_eq!(db_1.principal("root"), "root@db-1");
        assert_eq!(group.principal("root"), "root@group:db-prod");
        assert!(profiles.resolve_target("db-9").is_err());
        assert!(profiles.resolve_target("group:nope").is_err());
        assert!(profiles.resolve_target("db-1,db-2").is_err());
    }

    #[test]
    fn ticket_pattern_must_match_in_full() {
        let profiles = Profiles::parse(SAMPLE, "profiles.toml").unwrap();
        let pattern = profiles.profiles["db-root"].ticket_pattern.clone().unwrap();

        assert!(pattern.is_match("CHG-42"));
        assert!(!pattern.is_match("xCHG-42"));
        assert!(!pattern.is_match("CHG-42\nrm"));
    }

    #[test]
    fn refuses_unknown_hosts_extensions_and_bad_durations() {
        let cases = [
            (
                SAMPLE.replace("host_groups = [\"db-prod\"]", "host_groups = [\"dbprod\"]"),
                "dbprod",
            ),
            (
                SAMPLE.replace("permit-pty", "permit-everything"),
                "permit-everything",
            ),
            (
                SAMPLE.replace("max_duration = \"1h\"", "max_duration = \"5m\""),
                "longer",
            ),
            (SAMPLE.replace("\"root\"", "\"Root\""), "Root"),
            (
                SAMPLE.replace("approvals = 2", "approvals = 0"),
                "approvals",
            ),
            (
                SAMPLE.replace("any_host = true", "any_hosts = true"),
                "any_hosts",
            ),
        ];
        for (text, expected) in cases {
            let error = Profiles::parse(&text, "profiles.toml").unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
