//! `jit audit`: the auditors' tools.
//!
//! `list` and `show` read the CA's log (the CA's rules decide who may); `export` writes records
//! with their hashes and the newest signed checkpoint as JSON Lines; `verify` checks such a
//! file offline, with nothing but the audit public key, and names the first bad record.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use jit_proto::audit::{
    self, AuditPublicKey, AuditQuery, AuditRecord, Completeness, ExportLine, Kept, MAX_PAGE,
};
use serde_json::Value;

use super::{print_json, print_line, CommandError, Context};
use crate::api::CaClient;
use crate::secret::Secret;

/// `jit audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Records matching the filters, oldest first, as a table (or JSON lines).
    List(ListArgs),
    /// The whole story of a grant, in order: request, decision, reviews, certificates,
    /// sessions, revocation or expiry.
    Show(ShowArgs),
    /// Records matching the filters with their hashes, and the newest signed checkpoint, as
    /// JSON Lines on standard output.
    Export(Filters),
    /// Verify an export offline with the audit public key; names the first bad record.
    Verify(VerifyArgs),
}

/// The filters of `GET /v1/audit`.
#[derive(Debug, Clone, Default, Args)]
pub struct Filters {
    /// The acting person's email.
    #[arg(long)]
    pub user: Option<String>,
    /// Host or `group:NAME`.
    #[arg(long)]
    pub host: Option<String>,
    /// Profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// Event type, e.g. certificate_issued.
    #[arg(long)]
    pub event: Option<String>,
    /// Certificate serial.
    #[arg(long)]
    pub serial: Option<u64>,
    /// Grant id (g-…).
    #[arg(long)]
    pub grant: Option<String>,
    /// Request id (r-…).
    #[arg(long)]
    pub request: Option<String>,
    /// Events at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
}

impl Filters {
    fn query(&self) -> AuditQuery {
        AuditQuery {
            user: self.user.clone(),
            host: self.host.clone(),
            profile: self.profile.clone(),
            event: self.event.clone(),
            serial: self.serial,
            grant: self.grant.clone(),
            request: self.request.clone(),
            since: self.since,
            until: self.until,
            after: None,
            limit: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.query() == AuditQuery::default()
    }
}

/// Arguments of `jit audit list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    filters: Filters,
    /// Show at most this many records.
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// One JSON record per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `jit audit show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A grant id (g-…), or a certificate serial as sshd logs it.
    grant_or_serial: String,
    /// One JSON record per line instead of the story.
    #[arg(long)]
    json: bool,
}

/// Arguments of `jit audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The export to verify (`-` for standard input).
    file: PathBuf,
    /// The audit public key: a file holding its `ssh-ed25519 …` line, or the line itself.
    #[arg(long, value_name = "AUDIT_PUBKEY")]
    key: String,
    /// An earlier export or checkpoint file whose checkpoints must still hold (this is what
    /// exposes a truncated log). Repeatable.
    #[arg(long, value_name = "FILE")]
    checkpoint: Vec<PathBuf>,
    /// The export was filtered: allow gaps (proves the records shown are unaltered, not that
    /// none are missing).
    #[arg(long)]
    partial: bool,
}

/// Runs `jit audit …`.
pub async fn run(context: &Context, command: AuditCommand) -> Result<(), CommandError> {
    match command {
        AuditCommand::Verify(args) => verify(&args),
        AuditCommand::List(args) => {
            let reader = Reader::connect(context).await?;
            let records = reader
                .records(&args.filters.query(), Some(args.limit))
                .await?;
            print_records(&records, args.json, print_table);
            Ok(())
        }
        AuditCommand::Show(args) => {
            let reader = Reader::connect(context).await?;
            let records = reader.story(&args.grant_or_serial).await?;
            let now = (context.clock)();
            print_records(&records, args.json, |records| print_story(records, now));
            Ok(())
        }
        AuditCommand::Export(filters) => {
            let reader = Reader::connect(context).await?;
            // The checkpoint first: every record it covers is then in the pages that follow.
            let checkpoint = reader.ca.audit_checkpoint(&reader.token).await?;
            let records = reader.records(&filters.query(), None).await?;
            for record in &records {
                print_line(&record.to_string());
            }
            print_line(&ExportLine::checkpoint_line(&checkpoint).to_string());
            if !filters.is_empty() {
                eprintln!("note: a filtered export; verify it with `jit audit verify --partial`");
            }
            Ok(())
        }
    }
}

/// A logged-in connection to the CA's audit routes.
struct Reader {
    ca: CaClient,
    token: Secret,
}

impl Reader {
    async fn connect(context: &Context) -> Result<Reader, CommandError> {
        let state = context.state()?;
        let ca = context.ca()?;
        let token = context.bearer_token(&ca, &state).await?;
        Ok(Reader { ca, token })
    }

    /// Every record matching `query` (up to `at_most`), following the pages.
    async fn records(
        &self,
        query: &AuditQuery,
        at_most: Option<usize>,
    ) -> Result<Vec<Value>, CommandError> {
        let mut query = query.clone();
        query.limit = Some(MAX_PAGE);
        let mut records = Vec::new();
        loop {
            let page = self.ca.audit_page(&self.token, &query).await?;
            records.extend(page.records);
            if let Some(limit) = at_most.filter(|limit| records.len() >= *limit) {
                records.truncate(limit);
                break;
            }
            match page.next_after {
                Some(cursor) => query.after = Some(cursor),
                None => break,
            }
        }
        Ok(records)
    }

    /// The records of one grant and of the request it came from, in log order.
    async fn story(&self, grant_or_serial: &str) -> Result<Vec<Value>, CommandError> {
        let grant_id = match grant_or_serial.parse::<u64>() {
            Ok(serial) => {
                let query = AuditQuery {
                    serial: Some(serial),
                    event: Some("certificate_issued".into()),
                    ..AuditQuery::default()
                };
                let issued = self.records(&query, Some(1)).await?;
                issued
                    .first()
                    .and_then(|record| record["data"]["grant_id"].as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        CommandError::BadArgument(format!("no certificate with serial {serial}"))
                    })?
            }
            Err(_) => grant_or_serial.to_owned(),
        };

        let by_grant = AuditQuery {
            grant: Some(grant_id.clone()),
            ..AuditQuery::default()
        };
        let mut records = self.records(&by_grant, None).await?;
        let request_ids: Vec<String> = records
            .iter()
            .filter_map(|record| record["data"]["request_id"].as_str().map(str::to_owned))
            .collect();
        let Some(request_id) = request_ids.first() else {
            return Err(CommandError::BadArgument(format!(
                "no audit records for grant {grant_id}"
            )));
        };
        let by_request = AuditQuery {
            request: Some(request_id.clone()),
            ..AuditQuery::default()
        };
        records.extend(self.records(&by_request, None).await?);

        records.sort_by_key(|record| record["seq"].as_u64().unwrap_or(0));
        records.dedup_by_key(|record| record["seq"].as_u64().unwrap_or(0));
        Ok(records)
    }
}

fn print_records(records: &[Value], json: bool, human: impl Fn(&[AuditRecord])) {
    if json {
        records.iter().for_each(print_json);
        return;
    }
    let parsed: Vec<AuditRecord> = records
        .iter()
        .filter_map(|record| serde_json::from_value(record.clone()).ok())
        .collect();
    human(&parsed);
}

fn print_table(records: &[AuditRecord]) {
    if records.is_empty() {
        print_line("No matching records.");
        return;
    }
    print_line(&format!(
        "{:>6}  {:<20}  {:<18}  {:<24}  DETAIL",
        "SEQ", "TIME", "EVENT", "USER"
    ));
    for record in records {
        print_line(&format!(
            "{:>6}  {:<20}  {:<18}  {:<24}  {}",
            record.seq,
            record.time.format("%Y-%m-%d %H:%M:%S"),
            record.event,
            actor_name(&record.data).unwrap_or("-"),
            summary(record)
        ));
    }
}

fn print_story(records: &[AuditRecord], now: DateTime<Utc>) {
    for record in records {
        print_line(&format!(
            "{}  #{:<6} {:<18}  {}",
            record.time.format("%Y-%m-%d %H:%M:%S"),
            record.seq,
            record.event,
            summary(record)
        ));
    }
    if let Some(ending) = ending(records, now) {
        print_line(&ending);
    }
}

/// How the grant ended (or when it will): revocation when recorded, else the end of its last
/// certificate.
fn ending(records: &[AuditRecord], now: DateTime<Utc>) -> Option<String> {
    if let Some(revocation) = records.iter().find(|record| record.event == "revocation") {
        return Some(format!(
            "ended: revoked at {}",
            revocation.time.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    let valid_before = records
        .iter()
        .filter(|record| record.event == "certificate_issued")
        .filter_map(|record| {
            text(&record.data, "valid_before")?
                .parse::<DateTime<Utc>>()
                .ok()
        })
        .max()?;
    let when = valid_before.format("%Y-%m-%d %H:%M:%S");
    Some(if valid_before <= now {
        format!("ended: expired at {when}")
    } else {
        format!("active: expires at {when}")
    })
}

fn text<'a>(data: &'a Value, field: &str) -> Option<&'a str> {
    data.get(field)?.as_str()
}

fn person(data: &Value, field: &str) -> Option<String> {
    let actor = data.get(field)?;
    text(actor, "email")
        .or_else(|| text(actor, "sub"))
        .map(str::to_owned)
}

fn actor_name(data: &Value) -> Option<&str> {
    [
        "requester",
        "holder",
        "reviewer",
        "reader",
        "revoked_by",
        "terminated_by",
        "enrolled_by",
    ]
    .iter()
    .find_map(|field| {
        let actor = data.get(*field)?;
        text(actor, "email").or_else(|| text(actor, "sub"))
    })
}

fn list(data: &Value, field: &str) -> String {
    data.get(field)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// One line saying what a record is about, from its documented fields.
fn summary(record: &AuditRecord) -> String {
    let data = &record.data;
    let field = |name: &str| text(data, name).unwrap_or("-").to_owned();
    match record.event.as_str() {
        "request_created" => format!(
            "{} asked for {} on {} for {}s: {:?} (ticket {})",
            person(data, "requester").unwrap_or_default(),
            field("profile"),
            field("host"),
            data["duration_secs"],
            field("reason"),
            field("ticket"),
        ),
        "policy_decision" => match text(data, "refusal") {
            Some(refusal) => format!("denied: {refusal} (rules: {})", list(data, "rule_ids")),
            None => format!(
                "{} (rules: {}; auto-approve rules: {})",
                field("outcome"),
                list(data, "rule_ids"),
                list(data, "auto_approve_rule_ids")
            ),
        },
        "review" => format!(
            "{} by {}: {:?} ({}/{} approvals)",
            field("verdict"),
            person(data, "reviewer").unwrap_or_default(),
            field("comment"),
            data["approvals"],
            data["required_approvals"],
        ),
        "grant_activated" => format!(
            "{} for {} from {} to {}",
            field("grant_id"),
            list(data, "principals"),
            field("starts_at"),
            field("ends_at")
        ),
        "certificate_issued" => format!(
            "serial {} key ID {} for {} valid {} to {} (key {})",
            data["serial"],
            field("key_id"),
            list(data, "principals"),
            field("valid_after"),
            field("valid_before"),
            field("public_key_fingerprint"),
        ),
        "revocation" => format!(
            "serial {} grant {} by {}: {}",
            data["serial"],
            field("grant_id"),
            person(data, "revoked_by").unwrap_or_else(|| "the CA".into()),
            field("reason")
        ),
        "break_glass" => format!(
            "break-glass: {:?} (ticket {})",
            field("reason"),
            field("ticket")
        ),
        "session_started" | "session_ended" | "session_terminated" => format!(
            "{}@{} session {} serial {} {}",
            field("unix_user"),
            field("host"),
            field("session_id"),
            data["serial"],
            text(data, "reason").unwrap_or_default()
        ),
        "token_rejected" => format!(
            "{} (claimed sub {}, from {})",
            field("reason"),
            field("claimed_sub"),
            field("client_address")
        ),
        "host_enrolled" => format!("{} key {}", field("host"), field("host_key_fingerprint")),
        "config_loaded" => format!(
            "version {}, CA key {}",
            field("version"),
            field("ca_key_fingerprint")
        ),
        "audit_read" => format!(
            "{} {} {}",
            if data["allowed"] == Value::Bool(true) {
                "read"
            } else {
                "refused"
            },
            field("what"),
            field("query")
        ),
        _ => data.to_string(),
    }
}

fn read_input(path: &Path) -> Result<String, CommandError> {
    let read_error = |source| CommandError::ReadInput {
        path: path.display().to_string(),
        source,
    };
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).map_err(read_error);
    }
    std::fs::read_to_string(path).map_err(read_error)
}

fn verify(args: &VerifyArgs) -> Result<(), CommandError> {
    let key_text = if args.key.trim_start().starts_with("ssh-") {
        args.key.clone()
    } else {
        read_input(Path::new(&args.key))?
    };
    let key = AuditPublicKey::parse_openssh(key_text.trim())
        .map_err(|error| CommandError::BadArgument(format!("--key: {error}")))?;
    let mut kept = Kept::default();
    for path in &args.checkpoint {
        let earlier = Kept::read(&read_input(path)?, &key)?;
        kept.checkpoints.extend(earlier.checkpoints);
        kept.records.extend(earlier.records);
    }
    let completeness = if args.partial {
        Completeness::Partial
    } else {
        Completeness::Complete
    };

    let export = read_input(&args.file)?;
    let verified = audit::verify_export(&export, &kept, &key, completeness)?;
    print_line(&format!(
        "verified: {} records (last #{}), {} checkpoints, the newest covering {} records; key {}",
        verified.records,
        verified.last_seq,
        verified.checkpoints,
        verified.covered,
        key.fingerprint()
    ));
    if verified.unsigned_tail() > 0 {
        print_line(&format!(
            "note: the last {} records come after the newest checkpoint and are not vouched for",
            verified.unsigned_tail()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, event: &str, data: Value, seconds: i64) -> AuditRecord {
        AuditRecord {
            seq,
            time: DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap(),
            event: event.into(),
            data,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_story_ends_in_expiry_or_revocation() {
        let issued = record(
            2,
            "certificate_issued",
            serde_json::json!({ "valid_before": "2027-01-15T08:10:00Z", "serial": 7 }),
            0,
        );
        let before_end = DateTime::from_timestamp(1_800_000_000 + 60, 0).unwrap();
        let after_end = DateTime::from_timestamp(1_800_000_000 + 601, 0).unwrap();
        let revoked = record(3, "revocation", serde_json::json!({ "serial": 7 }), 30);

        let story = [issued.clone()];
        assert_eq!(
            ending(&story, before_end).unwrap(),
            "active: expires at 2027-01-15 08:10:00"
        );
        assert_eq!(
            ending(&story, after_end).unwrap(),
            "ended: expired at 2027-01-15 08:10:00"
        );
        assert!(ending(&[issued, revoked], after_end)
            .unwrap()
            .starts_with("ended: revoked at"));
    }

    #[test]
    fn summaries_use_the_documented_fields() {
        let decision = record(
            1,
            "policy_decision",
            serde_json::json!({
                "outcome": "auto_approved",
                "rule_ids": ["engineers-auto"],
                "auto_approve_rule_ids": ["engineers-auto"],
                "refusal": null,
                "requester": { "email": "alice@example.com", "sub": "alice" },
            }),
            0,
        );

        assert_eq!(
            summary(&decision),
            "auto_approved (rules: engineers-auto; auto-approve rules: engineers-auto)"
        );
        assert_eq!(actor_name(&decision.data), Some("alice@example.com"));
    }
}
