//! Ending a login session: the connection and every process started inside it, not only the
//! shell.
//!
//! A session's processes are found three ways, because each alone misses some: the
//! per-connection sshd and its descendants; every process in a Unix session (`setsid`) one of
//! them leads, which catches what was reparented to init when its parent exited; and every
//! process whose environment holds the connection's `SSH_USER_AUTH` path, unique to the
//! connection, which catches a process that left the session with `setsid` and was
//! reparented. Each gets SIGHUP (and SIGCONT, so a stopped one sees it); whatever is left
//! after the grace gets SIGKILL. Signals go through a pidfd opened and checked against the
//! process's start time, so a pid reused meanwhile is never signalled.
//!
//! Limitation: a process that clears its environment, leaves the Unix session and is
//! reparented before the agent looks is not found; only a cgroup per session would hold it.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use super::evidence::AUTH_INFO_VARIABLE;
use super::procfs::{env_value, read_environ, read_process, Connection, ProcessTable};

/// How often the table is read again while waiting for processes to exit.
const POLL: Duration = Duration::from_millis(100);

/// How long to wait after SIGKILL for the last processes to go.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// One session to end.
#[derive(Debug, Clone)]
pub struct Target {
    /// The per-connection sshd.
    pub connection: Connection,
    /// The connection's `SSH_USER_AUTH` path.
    pub auth_path: String,
    /// Unix sessions led by its processes, remembered across rounds.
    sids: BTreeSet<u32>,
}

impl Target {
    /// The session of `connection`, whose processes inherited `auth_path`.
    pub fn new(connection: Connection, auth_path: String) -> Target {
        Target {
            connection,
            auth_path,
            sids: BTreeSet::new(),
        }
    }

    /// The processes of this session now, as (pid, start time).
    fn members(&mut self, proc_root: &Path, table: &ProcessTable) -> BTreeSet<(u32, u64)> {
        let connection = &self.connection;
        let mut members = BTreeSet::new();
        if table.is_alive(connection.pid, connection.start_ticks) {
            members.insert((connection.pid, connection.start_ticks));
            let sshd_sid = table.get(connection.pid).map(|process| process.sid);
            for process in table.descendants(connection.pid) {
                members.insert((process.pid, process.start_ticks));
                // The monitor's session holds the sshd processes, not the user's.
                if Some(process.sid) != sshd_sid && process.sid > 1 {
                    self.sids.insert(process.sid);
                }
            }
        }

        for process in table.iter() {
            let in_session = self.sids.contains(&process.sid);
            let inherited = !in_session
                && read_environ(proc_root, process.pid)
                    .and_then(|environ| env_value(&environ, AUTH_INFO_VARIABLE))
                    .is_some_and(|path| path == self.auth_path);
            if in_session || inherited {
                members.insert((process.pid, process.start_ticks));
            }
        }

        // Never the init process, nor the agent itself.
        let own_pid = std::process::id();
        members.retain(|(pid, _)| *pid > 1 && *pid != own_pid);
        members
    }
}

/// Ends every session of `targets`: SIGHUP, then SIGKILL for what is left after `kill_after`.
/// Returns, for each target, whether none of its processes is left. Takes at most
/// `kill_after` plus two seconds.
pub async fn end_sessions(
    proc_root: &Path,
    targets: &mut [Target],
    kill_after: Duration,
) -> Vec<bool> {
    let hangup_deadline = Instant::now() + kill_after;
    let mut signalled: Vec<BTreeSet<(u32, u64)>> = vec![BTreeSet::new(); targets.len()];
    let mut killing = false;

    loop {
        let table = ProcessTable::read(proc_root).unwrap_or_default();
        let mut left = Vec::with_capacity(targets.len());
        for (target, known) in targets.iter_mut().zip(signalled.iter_mut()) {
            let mut members = target.members(proc_root, &table);
            // Processes signalled earlier stay members while they live, even reparented.
            members.extend(
                known
                    .iter()
                    .filter(|(pid, start)| table.is_alive(*pid, *start)),
            );
            for member in &members {
                if killing {
                    signal(*member, Signal::KILL, proc_root);
                } else if known.insert(*member) {
                    signal(*member, Signal::HUP, proc_root);
                    signal(*member, Signal::CONT, proc_root);
                }
            }
            left.push(members.is_empty());
        }

        if left.iter().all(|gone| *gone) {
            return left;
        }
        let now = Instant::now();
        if !killing && now >= hangup_deadline {
            killing = true;
            continue;
        }
        if killing && now >= hangup_deadline + KILL_WAIT {
            return left;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sends `signal` to `pid` if it still started at `start_ticks`. A process that is gone is no
/// failure; anything else is logged.
fn signal((pid, start_ticks): (u32, u64), signal: Signal, proc_root: &Path) {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let Ok(pidfd) = pidfd_open(raw, PidfdFlags::empty()) else {
        return;
    };
    // The pidfd pins the process: if it is still the one that started then, it is ours.
    let current = read_process(proc_root, pid);
    if current.is_none_or(|process| process.start_ticks != start_ticks) {
        return;
    }
    if let Err(error) = pidfd_send_signal(&pidfd, signal) {
        if error != rustix::io::Errno::SRCH {
            tracing::warn!(pid, %error, "cannot signal a session process");
        }
    }
}

/// Writes `message` as one line on the session's terminal, or on its standard error when it
/// has none (a pipe to the client). Returns whether it was written. A terminal is written only
/// when it belongs to the session's user, and opened without becoming the agent's terminal.
pub fn tell(
    proc_root: &Path,
    table: &ProcessTable,
    connection: &Connection,
    message: &str,
) -> bool {
    let line = message.replace(|character: char| character.is_control(), " ");
    let text = format!("\r\n{line}\r\n");

    if let Some(tty) = &connection.tty {
        let path = Path::new("/dev").join(tty);
        let owned = std::fs::metadata(&path).is_ok_and(|metadata| {
            metadata.file_type().is_char_device() && metadata.uid() == connection.uid
        });
        return owned && write_to(&path, text.as_bytes());
    }

    // Without a terminal, sshd connects the session's standard error to the client.
    table.children(connection.pid).any(|child| {
        let stderr = proc_root.join(child.pid.to_string()).join("fd").join("2");
        let to_sshd = std::fs::read_link(&stderr)
            .is_ok_and(|target| target.to_string_lossy().starts_with("pipe:"));
        to_sshd && write_to(&stderr, text.as_bytes())
    })
}

fn write_to(path: &Path, bytes: &[u8]) -> bool {
    let flags = OFlags::WRONLY | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => std::fs::File::from(fd).write_all(bytes).is_ok(),
        Err(_) => false,
    }
}
