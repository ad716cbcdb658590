//! Live SSH sessions: find the ones opened with this CA's certificates, tell the CA when they
//! start and end, and end them when their certificate is revoked or expires.
//!
//! **Finding them.** sshd runs one process per connection, titled `sshd: USER@pts/N` (or
//! `USER@notty`), a child of the root-owned monitor process of that connection. With
//! `ExposeAuthInfo yes`, which the agent's drop-in sets, the session's processes carry
//! `SSH_USER_AUTH`, naming a file in which sshd wrote the credential that opened the
//! connection. The agent reads it through the environment of the connection's first session
//! process ([`evidence`]) and keeps the connection only when it holds a user certificate that
//! verifies and is signed by a trusted CA key. This works on a stock sshd with nothing but the
//! drop-in. sshd's VERBOSE log would say the same (serial and key ID, with the monitor's pid),
//! but where that log goes (journald, a syslog file, nowhere) differs from server to server.
//! Connections with any other credential are remembered as foreign and never touched.
//!
//! **Deciding.** Each scan, every [`SessionOptions::scan_every`] and right after every new
//! KRL, checks each session's certificate against the installed KRL (serial, key ID and key,
//! as sshd would) and its `valid_before` ([`verdict`]): a revoked one ends at once; one that
//! expires is warned on its terminal `grace` before, then ended when `valid_before` passes.
//!
//! **Ending.** See [`terminate`]: the connection and every process of the session, SIGHUP then
//! SIGKILL.
//!
//! **Reporting.** Each start, end and termination goes to the CA signed with the host key
//! ([`report`]).
//!
//! Limitation: the auth info file and the session's environment belong to the logged-in user.
//! The agent reads them at the first scan after login and keeps what it read, so a later change
//! makes no difference; a user who rewrites or deletes the file before that first scan (from a
//! login script, within a second) makes the session look foreign or unknown, and it is left
//! alone. A connection that starts no session process (`ssh -N`, forwarding only) carries no
//! environment to read and is left alone too.

pub mod evidence;
pub mod procfs;
pub mod report;
pub mod terminate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use jit_ca::krl::Krl;
use jit_proto::sessions::{ReportedSession, SessionChange, SessionEvent, TerminationCause};
use ssh_key::{Certificate, Fingerprint, HashAlg, PrivateKey, PublicKey};
use tokio::sync::watch;

use self::evidence::Evidence;
use self::procfs::{Connection, ProcessTable};
use self::report::Mailbox;
use self::terminate::Target;
use crate::ca::CaClient;
use crate::files;
use crate::layout::Layout;

/// Where the kernel shows processes.
pub const PROC_ROOT: &str = "/proc";

/// `/proc` counts start times in clock ticks of 1/100 s (`USER_HZ`, 100 on every Linux
/// architecture the agent runs on).
const TICKS_PER_SECOND: u64 = 100;

/// How long sshd gets to pass a closing notice on to the client before it is signalled.
const NOTICE_DELAY: Duration = Duration::from_millis(200);

/// A connection whose credential cannot be read for this long is logged, once.
const UNKNOWN_WARNING_AFTER: Duration = Duration::from_secs(10);

/// How the monitor paces itself and how much warning it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// How long before `valid_before` the session's terminal is warned.
    pub grace: Duration,
    /// How often sessions are scanned (besides right after each new KRL).
    pub scan_every: Duration,
    /// How long processes get after SIGHUP before SIGKILL.
    pub kill_after: Duration,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            grace: Duration::from_secs(60),
            scan_every: Duration::from_secs(1),
            kill_after: Duration::from_secs(3),
        }
    }
}

/// What to do with one session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Keep,
    /// Warn its terminal: this many seconds are left.
    Warn {
        /// Seconds until `valid_before`.
        left_secs: u64,
    },
    /// End it.
    End(TerminationCause),
}

/// The verdict on a session opened with `certificate`, at `now` (Unix seconds), given the
/// installed KRL (`None` when none parses: only expiry is judged then) and whether it was
/// warned already.
pub fn verdict(
    certificate: &Certificate,
    krl: Option<&Krl>,
    now: u64,
    grace: Duration,
    warned: bool,
) -> Verdict {
    // PROTOCOL.krl: refused by serial or key ID under its CA, or by its key or the CA's key.
    if krl.is_some_and(|krl| krl.revokes_certificate(certificate)) {
        return Verdict::End(TerminationCause::Revoked);
    }
    // PROTOCOL.certkeys: valid_before is the first second the certificate is no longer valid.
    let valid_before = certificate.valid_before();
    if now >= valid_before {
        return Verdict::End(TerminationCause::Expired);
    }
    let left_secs = valid_before - now;
    if !warned && left_secs <= grace.as_secs() {
        return Verdict::Warn { left_secs };
    }
    Verdict::Keep
}

/// The grant in a key ID `email/g-…/serial`.
pub fn grant_of_key_id(key_id: &str) -> Option<&str> {
    let mut parts = key_id.rsplitn(3, '/');
    let _serial = parts.next()?;
    let grant = parts.next()?;
    parts.next()?;
    grant.starts_with("g-").then_some(grant)
}

/// A session the agent watches.
#[derive(Debug, Clone)]
struct Tracked {
    report: ReportedSession,
    certificate: Box<Certificate>,
    connection: Connection,
    auth_path: String,
    grant_id: String,
    warned: bool,
}

/// The session monitor's state between scans.
#[derive(Debug)]
pub struct Monitor {
    layout: Layout,
    options: SessionOptions,
    proc_root: PathBuf,
    boot_id: String,
    boot_time: i64,
    tracked: BTreeMap<String, Tracked>,
    foreign: BTreeSet<String>,
    unknown_since: BTreeMap<String, (Instant, bool)>,
    mailbox: Mailbox,
}

impl Monitor {
    /// A monitor for the agent laid out in `layout`, reading processes under `proc_root`.
    pub fn new(
        layout: &Layout,
        options: SessionOptions,
        proc_root: &Path,
        mailbox: Mailbox,
    ) -> Monitor {
        let boot_id = std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
            .map(|text| text.trim().chars().take(8).collect())
            .unwrap_or_else(|_| "boot".to_owned());
        let boot_time = std::fs::read_to_string(proc_root.join("stat"))
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|line| line.starts_with("btime "))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0);
        Monitor {
            layout: layout.clone(),
            options,
            proc_root: proc_root.to_path_buf(),
            boot_id,
            boot_time,
            tracked: BTreeMap::new(),
            foreign: BTreeSet::new(),
            unknown_since: BTreeMap::new(),
            mailbox,
        }
    }

    /// The identifiers of the sessions watched now.
    pub fn watched(&self) -> Vec<String> {
        self.tracked.keys().cloned().collect()
    }

    fn session_id(&self, connection: &Connection) -> String {
        format!(
            "s-{}-{}-{}",
            self.boot_id, connection.pid, connection.start_ticks
        )
    }

    fn started_at(&self, connection: &Connection) -> DateTime<Utc> {
        let seconds = connection.start_ticks / TICKS_PER_SECOND;
        let offset = i64::try_from(seconds).unwrap_or(0);
        DateTime::from_timestamp(self.boot_time + offset, 0).unwrap_or_default()
    }

    /// One scan at `now`: notes sessions that started or ended, warns and ends those whose
    /// certificate is revoked or expiring, and hands the changes to the reporter. Ending
    /// sessions takes at most `kill_after` plus two seconds.
    pub async fn scan(&mut self, now: DateTime<Utc>) {
        let table = match ProcessTable::read(&self.proc_root) {
            Ok(table) => table,
            Err(error) => {
                tracing::error!(%error, "cannot read the process table; sessions are not watched");
                return;
            }
        };
        let present: BTreeMap<String, Connection> = table
            .connections()
            .into_iter()
            .map(|connection| (self.session_id(&connection), connection))
            .collect();
        let mut events = Vec::new();

        let gone: Vec<String> = self
            .tracked
            .keys()
            .filter(|id| !present.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(tracked) = self.tracked.remove(&id) {
                tracing::info!(session_id = %id, grant_id = %tracked.grant_id, user = %tracked.report.unix_user, "session ended");
                events.push(event(SessionChange::Ended, now, tracked.report));
            }
        }
        self.foreign.retain(|id| present.contains_key(id));
        self.unknown_since.retain(|id, _| present.contains_key(id));

        let trusted = trusted_fingerprints(&self.layout.ca_keys());
        for (id, connection) in &present {
            if self.tracked.contains_key(id) || self.foreign.contains(id) {
                continue;
            }
            match evidence::evidence(&self.proc_root, &table, connection, &trusted) {
                Evidence::Ours {
                    certificate,
                    auth_path,
                    source_address,
                } => {
                    let tracked =
                        self.track(id, connection, certificate, auth_path, source_address);
                    tracing::info!(
                        session_id = %id,
                        grant_id = %tracked.grant_id,
                        serial = tracked.report.serial,
                        user = %tracked.report.unix_user,
                        source = tracked.report.source_address.as_deref().unwrap_or("-"),
                        "session started"
                    );
                    events.push(event(SessionChange::Started, now, tracked.report.clone()));
                    self.unknown_since.remove(id);
                    self.tracked.insert(id.clone(), tracked);
                }
                Evidence::Foreign => {
                    tracing::debug!(session_id = %id, user = %connection.unix_user, "session opened without this CA's certificate; left alone");
                    self.unknown_since.remove(id);
                    self.foreign.insert(id.clone());
                }
                Evidence::Unknown => {
                    let (since, warned) = self
                        .unknown_since
                        .entry(id.clone())
                        .or_insert((Instant::now(), false));
                    if !*warned && since.elapsed() >= UNKNOWN_WARNING_AFTER {
                        *warned = true;
                        tracing::warn!(session_id = %id, user = %connection.unix_user, "cannot tell which credential opened this connection (no session process, or its auth info is gone); left alone");
                    }
                }
            }
        }

        let ending = self.judge(&table, now);
        if !ending.is_empty() {
            events.extend(self.end(ending, now).await);
        }

        let live = self.watched();
        self.mailbox.update(|outbox| {
            for event in events {
                outbox.push(event);
            }
            outbox.set_live(live);
        });
    }

    fn track(
        &self,
        id: &str,
        connection: &Connection,
        certificate: Box<Certificate>,
        auth_path: String,
        source_address: Option<String>,
    ) -> Tracked {
        let valid_before = i64::try_from(certificate.valid_before())
            .ok()
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let report = ReportedSession {
            session_id: id.to_owned(),
            unix_user: connection.unix_user.clone(),
            serial: certificate.serial(),
            key_id: certificate.key_id().to_owned(),
            source_address,
            tty: connection.tty.clone(),
            started_at: self.started_at(connection),
            valid_before,
        };
        Tracked {
            grant_id: grant_of_key_id(certificate.key_id())
                .unwrap_or("-")
                .to_owned(),
            report,
            certificate,
            connection: connection.clone(),
            auth_path,
            warned: false,
        }
    }

    /// Warns the sessions entering their grace period; returns those to end, with why.
    fn judge(
        &mut self,
        table: &ProcessTable,
        now: DateTime<Utc>,
    ) -> Vec<(String, TerminationCause)> {
        let krl = self.installed_krl();
        let now_secs = u64::try_from(now.timestamp()).unwrap_or(0);
        let mut ending = Vec::new();
        for (id, tracked) in &mut self.tracked {
            let decided = verdict(
                &tracked.certificate,
                krl.as_ref(),
                now_secs,
                self.options.grace,
                tracked.warned,
            );
            match decided {
                Verdict::Keep => {}
                Verdict::Warn { left_secs } => {
                    tracked.warned = true;
                    let message = format!(
                        "jit-host: access under grant {} ends in {left_secs} s, when its certificate expires; this session will be closed then.",
                        tracked.grant_id
                    );
                    let shown =
                        terminate::tell(&self.proc_root, table, &tracked.connection, &message);
                    tracing::info!(session_id = %id, grant_id = %tracked.grant_id, left_secs, shown, "session warned of its end");
                }
                Verdict::End(cause) => ending.push((id.clone(), cause)),
            }
        }
        ending
    }

    /// Ends the sessions named, together, and returns their termination events.
    async fn end(
        &mut self,
        ending: Vec<(String, TerminationCause)>,
        now: DateTime<Utc>,
    ) -> Vec<SessionEvent> {
        let started = Instant::now();
        let table = ProcessTable::read(&self.proc_root).unwrap_or_default();
        let mut targets = Vec::new();
        let mut told = false;
        for (id, cause) in &ending {
            let Some(tracked) = self.tracked.get(id) else {
                continue;
            };
            let message = match cause {
                TerminationCause::Revoked => format!(
                    "jit-host: access under grant {} was revoked; closing this session.",
                    tracked.grant_id
                ),
                TerminationCause::Expired => format!(
                    "jit-host: the certificate of grant {} has expired; closing this session.",
                    tracked.grant_id
                ),
            };
            told |= terminate::tell(&self.proc_root, &table, &tracked.connection, &message);
            targets.push(Target::new(
                tracked.connection.clone(),
                tracked.auth_path.clone(),
            ));
        }

        // sshd forwards what was written only while it runs: give it a moment to pass the
        // notice on before it is signalled.
        if told {
            tokio::time::sleep(NOTICE_DELAY).await;
        }
        let outcome =
            terminate::end_sessions(&self.proc_root, &mut targets, self.options.kill_after).await;
        let ended_at = now + TimeDelta::from_std(started.elapsed()).unwrap_or_default();
        let mut events = Vec::new();
        for ((id, cause), all_gone) in ending.into_iter().zip(outcome) {
            let Some(tracked) = self.tracked.remove(&id) else {
                continue;
            };
            if all_gone {
                tracing::warn!(
                    target: "security",
                    session_id = %id,
                    grant_id = %tracked.grant_id,
                    serial = tracked.report.serial,
                    user = %tracked.report.unix_user,
                    cause = cause.as_str(),
                    took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "session terminated"
                );
            } else {
                tracing::error!(
                    target: "security",
                    session_id = %id,
                    grant_id = %tracked.grant_id,
                    cause = cause.as_str(),
                    "session terminated, but some of its processes survived SIGKILL"
                );
            }
            events.push(event(
                SessionChange::Terminated { cause },
                ended_at,
                tracked.report,
            ));
        }
        events
    }

    fn installed_krl(&self) -> Option<Krl> {
        let bytes = files::read_optional(&self.layout.krl()).ok().flatten()?;
        match jit_ca::krl::parse(&bytes) {
            Ok(krl) => Some(krl),
            Err(error) => {
                tracing::warn!(%error, "the installed KRL does not parse; sessions are judged on expiry only");
                None
            }
        }
    }
}

fn event(change: SessionChange, at: DateTime<Utc>, session: ReportedSession) -> SessionEvent {
    SessionEvent {
        change,
        at,
        session,
    }
}

/// The fingerprints of the keys in `TrustedUserCAKeys`; none when the file is unreadable.
fn trusted_fingerprints(path: &Path) -> Vec<Fingerprint> {
    let text = files::read_optional(path)
        .ok()
        .flatten()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|line| PublicKey::from_openssh(line.trim()).ok())
        .map(|key| key.fingerprint(HashAlg::Sha256))
        .collect()
}

/// Starts the monitor and its reporter: sessions are scanned every `scan_every` and whenever
/// `krl_changes` announces a new KRL, and reported to `ca` as host `name`.
pub fn spawn(
    layout: &Layout,
    options: SessionOptions,
    ca: CaClient,
    host_key: PrivateKey,
    name: String,
    clock: fn() -> DateTime<Utc>,
    mut krl_changes: watch::Receiver<u64>,
) {
    let mailbox = Mailbox::default();
    let mut monitor = Monitor::new(layout, options, Path::new(PROC_ROOT), mailbox.clone());
    tokio::spawn(report::reporter(ca, host_key, name, mailbox, clock));
    tokio::spawn(async move {
        tracing::info!(
            grace_secs = options.grace.as_secs(),
            scan_every_ms = u64::try_from(options.scan_every.as_millis()).unwrap_or(u64::MAX),
            "watching SSH sessions"
        );
        loop {
            monitor.scan(clock()).await;
            tokio::select! {
                () = tokio::time::sleep(options.scan_every) => {},
                changed = krl_changes.changed() => {
                    if changed.is_err() {
                        // The main loop stopped; scans go on at their pace until it ends.
                        tokio::time::sleep(options.scan_every).await;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use jit_ca::krl::{encode, KrlBuilder};
    use rand::rngs::OsRng;
    use ssh_key::Algorithm;

    use super::*;

    pub(super) const START: u64 = 1_800_000_000;

    /// A user certificate for `root@db-1` by `ca`, valid from [`START`] for `lifetime` seconds.
    pub(super) fn certificate(ca: &PrivateKey, serial: u64, lifetime: u64) -> Certificate {
        let subject = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let mut builder = ssh_key::certificate::Builder::new_with_random_nonce(
            &mut OsRng,
            subject.public_key().key_data().clone(),
            START,
            START + lifetime,
        )
        .unwrap();
        builder
            .serial(serial)
            .unwrap()
            .key_id(format!("alice@example.com/g-abc/{serial}"))
            .unwrap()
            .valid_principal("root@db-1")
            .unwrap();
        builder.sign(ca).unwrap()
    }

    #[test]
    fn expiry_is_warned_within_the_grace_then_ends_the_session() {
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let cert = certificate(&ca, 7, 20);
        let grace = Duration::from_secs(10);

        assert_eq!(verdict(&cert, None, START + 9, grace, false), Verdict::Keep);
        assert_eq!(
            verdict(&cert, None, START + 10, grace, false),
            Verdict::Warn { left_secs: 10 }
        );
        assert_eq!(verdict(&cert, None, START + 15, grace, true), Verdict::Keep);
        assert_eq!(
            verdict(&cert, None, START + 20, grace, true),
            Verdict::End(TerminationCause::Expired)
        );
    }

    #[test]
    fn a_revoked_serial_ends_the_session_at_once_and_others_stay() {
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let other_ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let revoked = certificate(&ca, 7, 3600);
        let kept = certificate(&ca, 8, 3600);
        let same_serial_other_ca = certificate(&other_ca, 7, 3600);
        let mut builder = KrlBuilder::new(2, START);
        builder.revoke_serial(ca.public_key(), 7).unwrap();
        let krl = jit_ca::krl::parse(&encode(&builder.build().unwrap())).unwrap();
        let grace = Duration::from_secs(60);

        assert_eq!(
            verdict(&revoked, Some(&krl), START + 1, grace, false),
            Verdict::End(TerminationCause::Revoked)
        );
        assert_eq!(
            verdict(&kept, Some(&krl), START + 1, grace, false),
            Verdict::Keep
        );
        assert_eq!(
            verdict(&same_serial_other_ca, Some(&krl), START + 1, grace, false),
            Verdict::Keep
        );
    }

    #[test]
    fn the_grant_is_read_from_the_key_id() {
        assert_eq!(grant_of_key_id("alice@example.com/g-abc/17"), Some("g-abc"));
        assert_eq!(grant_of_key_id("odd/name@example.com/g-x/1"), Some("g-x"));
        assert_eq!(grant_of_key_id("host:db-1/5"), None);
        assert_eq!(grant_of_key_id("alice/r-1/2"), None);
    }
}
