//! `jit revoke`: end access early — a grant, one certificate, every grant of a person, or a
//! public key — with a reason the CA keeps.
//!
//! When the CA has recorded the revocation, the caller's own copies go too: every grant on
//! this machine that the revocation reached has its key removed from the ssh-agent (when one
//! runs) and its directory deleted from the state directory.

use std::path::PathBuf;

use clap::Args;
use jit_proto::revocation::{CreateRevocation, RevocationView};
use serde_json::json;
use ssh_key::{Certificate, HashAlg, PublicKey};

use super::{print_json, print_line, CommandError, Context};
use crate::api::one_line;
use crate::config::Environment;
use crate::state::LocalGrant;

/// Arguments of `jit revoke`: one of GRANT, `--serial`, `--user` or `--key`, and a reason.
#[derive(Clone, Debug, Args)]
pub struct RevokeCli {
    /// The grant to revoke (`g-…`), with every certificate issued for it.
    #[arg(
        value_name = "GRANT",
        required_unless_present_any = ["serial", "user", "key"],
        conflicts_with_all = ["serial", "user", "key"]
    )]
    pub grant: Option<String>,
    /// One certificate, by serial number.
    #[arg(long, value_name = "N", conflicts_with_all = ["user", "key"])]
    pub serial: Option<u64>,
    /// Every active grant of this person (offboarding).
    #[arg(long, value_name = "EMAIL", conflicts_with = "key")]
    pub user: Option<String>,
    /// A public key file: the key is refused whatever certificate carries it.
    #[arg(long, value_name = "PUBKEY_FILE")]
    pub key: Option<PathBuf>,
    /// Why; required, kept with the revocation.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `jit revoke`.
pub async fn run(context: &Context, args: &RevokeCli) -> Result<(), CommandError> {
    let public_key = match &args.key {
        Some(path) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| CommandError::ReadInput {
                    path: path.display().to_string(),
                    source,
                })?,
            )
        }
        None => None,
    };
    let body = CreateRevocation {
        grant_id: args.grant.clone(),
        serial: args.serial,
        user: args.user.clone(),
        public_key: public_key.map(|text| text.trim().to_owned()),
        reason: args.reason.clone(),
    };

    let state = context.state()?;
    let ca = context.ca()?;
    let view = {
        let (ca, body) = (&ca, &body);
        context
            .call(ca, &state, |id_token| async move {
                ca.revoke(&id_token, body).await
            })
            .await?
    };

    // Only the caller's own copies are here, so whatever matches is theirs to remove.
    let mut removed = Vec::new();
    for grant in state.list_grants()? {
        if !reached(&view, &grant) {
            continue;
        }
        let agent = remove_from_agent(&context.env, &grant).await;
        state.remove_dir(&grant.dir)?;
        removed.push((grant.grant.grant_id.clone(), agent));
    }

    if args.json {
        let removed: Vec<_> = removed
            .iter()
            .map(|(grant_id, agent)| json!({ "grant_id": grant_id, "agent": agent }))
            .collect();
        print_json(&json!({ "revocation": view, "removed_locally": removed }));
        return Ok(());
    }
    print_line(&summary(&view));
    for (grant_id, agent) in &removed {
        print_line(&format!("removed {grant_id} from this machine ({agent})"));
    }
    Ok(())
}

/// Whether the revocation reached a grant installed here: by grant, by certificate serial, or
/// by the key its certificate carries.
fn reached(view: &RevocationView, grant: &LocalGrant) -> bool {
    if view.grant_ids.contains(&grant.grant.grant_id) {
        return true;
    }
    if view.serials.contains(&grant.certificate.serial) {
        return true;
    }
    let Some(fingerprint) = &view.public_key_fingerprint else {
        return false;
    };
    Certificate::from_openssh(grant.certificate.certificate.trim())
        .map(|certificate| {
            PublicKey::from(certificate.public_key().clone())
                .fingerprint(HashAlg::Sha256)
                .to_string()
                == *fingerprint
        })
        .unwrap_or(false)
}

/// `ssh-add -d KEY` (which also drops the certificate beside it) when an agent runs; what
/// happened, in words.
async fn remove_from_agent(env: &Environment, grant: &LocalGrant) -> String {
    let Some(socket) = &env.ssh_auth_sock else {
        return "no ssh-agent".to_owned();
    };
    let output = tokio::process::Command::new("ssh-add")
        .arg("-d")
        .arg(&grant.key_path)
        .env("SSH_AUTH_SOCK", socket)
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match output {
        Ok(output) if output.status.success() => "removed from the ssh-agent".to_owned(),
        // Not loaded (any more): nothing to remove.
        Ok(output) => format!(
            "not in the ssh-agent: {}",
            one_line(&String::from_utf8_lossy(&output.stderr))
        ),
        Err(error) => format!("cannot run ssh-add: {error}"),
    }
}

fn summary(view: &RevocationView) -> String {
    let mut text = format!(
        "revoked {} {} ({}); KRL version {}",
        view.kind.as_str(),
        one_line(&view.target),
        view.revocation_id,
        view.krl_version
    );
    if !view.serials.is_empty() {
        let serials: Vec<String> = view.serials.iter().map(u64::to_string).collect();
        text.push_str(&format!("; certificates {}", serials.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use jit_proto::revocation::RevocationKind;
    use jit_proto::{GrantView, IssuedCertificate};

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn local(grant_id: &str, serial: u64) -> LocalGrant {
        let dir = PathBuf::from("/state/grants").join(grant_id);
        let certificate = IssuedCertificate {
            serial,
            key_id: "k".into(),
            principals: vec!["root@db-1".into()],
            valid_after: at(0),
            valid_before: at(600),
            certificate: String::new(),
        };
        LocalGrant {
            grant: GrantView {
                grant_id: grant_id.into(),
                request_id: "r-1".into(),
                profile: "p".into(),
                host: "db-1".into(),
                principals: vec!["root@db-1".into()],
                starts_at: at(0),
                ends_at: at(600),
                certificate: Some(certificate.clone()),
                revoked: false,
            },
            certificate,
            key_path: dir.join("id_ed25519"),
            cert_path: dir.join("id_ed25519-cert.pub"),
            dir,
        }
    }

    fn view(grant_ids: &[&str], serials: &[u64]) -> RevocationView {
        RevocationView {
            revocation_id: "v-1".into(),
            kind: RevocationKind::Grant,
            target: "g-1".into(),
            reason: "done".into(),
            actor: "alice@example.com".into(),
            created_at: at(10),
            krl_version: 4,
            grant_ids: grant_ids.iter().map(|id| id.to_string()).collect(),
            serials: serials.to_vec(),
            public_key_fingerprint: None,
        }
    }

    #[test]
    fn local_grants_reached_by_grant_or_serial_are_the_ones_removed() {
        assert!(reached(&view(&["g-1"], &[]), &local("g-1", 5)));
        assert!(reached(&view(&[], &[5]), &local("g-2", 5)));
        assert!(!reached(&view(&["g-3"], &[6]), &local("g-2", 5)));
    }

    #[test]
    fn the_summary_names_the_krl_version_and_certificates() {
        assert_eq!(
            summary(&view(&["g-1"], &[5, 6])),
            "revoked grant g-1 (v-1); KRL version 4; certificates 5, 6"
        );
    }
}
