//! Reading the process table from `/proc`: which processes exist, who their parents are, their
//! session ids, owners and start times, and which of them are sshd's per-connection processes.
//!
//! A process is named by its pid *and* its start time (clock ticks after boot, field 22 of
//! `stat`): a pid alone may be reused by the time it is signalled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One process, as `/proc/<pid>` described it when the table was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Parent's pid.
    pub ppid: u32,
    /// Session id (`setsid`).
    pub sid: u32,
    /// Real user id.
    pub uid: u32,
    /// Start time, clock ticks after boot.
    pub start_ticks: u64,
    /// The command line as the process shows it (sshd rewrites its own).
    pub cmdline: String,
    /// File name of the executable (`sshd`), when it could be read.
    pub exe_name: Option<String>,
}

/// The fields of `/proc/<pid>/stat` the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Parent's pid.
    pub ppid: u32,
    /// Session id.
    pub sid: u32,
    /// Start time, clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may itself hold spaces
/// and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (_, after_name) = text.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // proc(5): state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
    // stime cutime cstime priority nice num_threads itrealvalue starttime.
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        sid: fields.get(3)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The real user id from `/proc/<pid>/status` (`Uid:` real, effective, saved, filesystem).
pub fn parse_status_uid(text: &str) -> Option<u32> {
    let line = text.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The value of `name` in a NUL-separated environment block (`/proc/<pid>/environ`).
pub fn env_value(environ: &[u8], name: &str) -> Option<String> {
    environ.split(|byte| *byte == 0).find_map(|entry| {
        let entry = std::str::from_utf8(entry).ok()?;
        let (key, value) = entry.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

/// A snapshot of every process.
#[derive(Debug, Clone, Default)]
pub struct ProcessTable {
    processes: BTreeMap<u32, Process>,
}

impl ProcessTable {
    /// Reads every `/proc/<pid>` under `proc_root`. A process that exits while it is read is
    /// left out; only an unreadable `proc_root` fails.
    pub fn read(proc_root: &Path) -> std::io::Result<ProcessTable> {
        let mut processes = BTreeMap::new();
        for entry in std::fs::read_dir(proc_root)? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
            else {
                continue;
            };
            if let Some(process) = read_process(proc_root, pid) {
                processes.insert(pid, process);
            }
        }
        Ok(ProcessTable { processes })
    }

    /// A table of the given processes, for tests.
    pub fn from_processes(list: impl IntoIterator<Item = Process>) -> ProcessTable {
        ProcessTable {
            processes: list
                .into_iter()
                .map(|process| (process.pid, process))
                .collect(),
        }
    }

    /// The process `pid`, if it exists.
    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.processes.get(&pid)
    }

    /// Whether `pid` still is the process that started at `start_ticks`.
    pub fn is_alive(&self, pid: u32, start_ticks: u64) -> bool {
        self.get(pid)
            .is_some_and(|process| process.start_ticks == start_ticks)
    }

    /// Every process.
    pub fn iter(&self) -> impl Iterator<Item = &Process> {
        self.processes.values()
    }

    /// The children of `pid`, lowest pid first.
    pub fn children(&self, pid: u32) -> impl Iterator<Item = &Process> {
        self.processes
            .values()
            .filter(move |process| process.ppid == pid && process.pid != pid)
    }

    /// Every descendant of `pid` (children, their children, …), not `pid` itself.
    pub fn descendants(&self, pid: u32) -> Vec<&Process> {
        let mut found: Vec<&Process> = Vec::new();
        let mut frontier = vec![pid];
        // Each pid enters once, so a corrupt table with a cycle still ends.
        while let Some(parent) = frontier.pop() {
            for child in self.children(parent) {
                if child.pid != pid && !found.iter().any(|known| known.pid == child.pid) {
                    found.push(child);
                    frontier.push(child.pid);
                }
            }
        }
        found
    }

    /// sshd's per-connection processes: the ones that serve one logged-in user.
    pub fn connections(&self) -> Vec<Connection> {
        self.iter()
            .filter_map(|process| self.connection(process))
            .collect()
    }

    /// `process` as a per-connection sshd, when it is one: an sshd (or OpenSSH 9.8's
    /// sshd-session) titled `sshd: USER@TTY` or `sshd: USER@notty`, whose parent is an sshd
    /// running as root (the privileged monitor). A user's own process can retitle itself, but
    /// it cannot run as the child of a root-owned sshd.
    fn connection(&self, process: &Process) -> Option<Connection> {
        let (unix_user, terminal) = parse_title(&process.cmdline)?;
        if !is_sshd(process) {
            return None;
        }
        let monitor = self.get(process.ppid)?;
        if monitor.uid != 0 || !is_sshd(monitor) {
            return None;
        }
        Some(Connection {
            pid: process.pid,
            start_ticks: process.start_ticks,
            uid: process.uid,
            unix_user: unix_user.to_owned(),
            tty: (terminal != "notty").then(|| terminal.to_owned()),
        })
    }
}

/// One SSH connection's per-connection sshd process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Its pid.
    pub pid: u32,
    /// Its start time, clock ticks after boot.
    pub start_ticks: u64,
    /// The user id it runs as (the logged-in user's).
    pub uid: u32,
    /// The Unix user, from its title.
    pub unix_user: String,
    /// Its terminal (`pts/3`), or `None` without one.
    pub tty: Option<String>,
}

/// `USER` and `TTY` from a per-connection title `sshd: USER@TTY` (or `sshd-session: …`).
/// Other sshd titles (`[priv]`, `[net]`, `[listener]`, the command line) are refused.
pub fn parse_title(cmdline: &str) -> Option<(&str, &str)> {
    let rest = cmdline
        .strip_prefix("sshd: ")
        .or_else(|| cmdline.strip_prefix("sshd-session: "))?
        .trim();
    if rest.contains(char::is_whitespace) {
        return None;
    }
    let (unix_user, terminal) = rest.split_once('@')?;
    let usable_terminal = terminal == "notty"
        || terminal
            .strip_prefix("pts/")
            .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()));
    (jit_proto::validate_unix_user(unix_user).is_ok() && usable_terminal)
        .then_some((unix_user, terminal))
}

fn is_sshd(process: &Process) -> bool {
    matches!(
        process.exe_name.as_deref(),
        Some("sshd") | Some("sshd-session")
    )
}

/// Reads one process, or `None` when it is gone.
pub fn read_process(proc_root: &Path, pid: u32) -> Option<Process> {
    let dir = proc_root.join(pid.to_string());
    let stat = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let uid = parse_status_uid(&std::fs::read_to_string(dir.join("status")).ok()?)?;
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let cmdline: Vec<&[u8]> = cmdline
        .split(|byte| *byte == 0)
        .filter(|word| !word.is_empty())
        .collect();
    let cmdline = String::from_utf8_lossy(&cmdline.join(&b' '))
        .trim()
        .to_owned();
    // After a package upgrade the running binary shows as `/usr/sbin/sshd (deleted)`.
    let exe_name = std::fs::read_link(dir.join("exe")).ok().and_then(|path| {
        let name = path.file_name()?.to_str()?.to_owned();
        Some(name.trim_end_matches(" (deleted)").to_owned())
    });
    Some(Process {
        pid,
        ppid: stat.ppid,
        sid: stat.sid,
        uid,
        start_ticks: stat.start_ticks,
        cmdline,
        exe_name,
    })
}

/// `/proc/<pid>/environ`, or `None` when it is gone or unreadable.
pub fn read_environ(proc_root: &Path, pid: u32) -> Option<Vec<u8>> {
    std::fs::read(proc_root.join(pid.to_string()).join("environ")).ok()
}

/// `path` as process `pid` sees it, through its root directory (it may run in another mount
/// namespace or chroot).
pub fn path_seen_by(proc_root: &Path, pid: u32, path: &str) -> PathBuf {
    proc_root
        .join(pid.to_string())
        .join("root")
        .join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (we(ird) name) S 4000 4242 4242 34816 4242 4194560 100 0 0 0 1 2 0 0 \
                    20 0 1 0 567368 3133440 362 18446744073709551615";

        let stat = parse_stat(text).unwrap();

        assert_eq!(
            stat,
            Stat {
                ppid: 4000,
                sid: 4242,
                start_ticks: 567_368
            }
        );
        assert_eq!(parse_stat("12 (short) S 1"), None);
    }

    #[test]
    fn the_real_uid_is_the_first_of_the_uid_line() {
        let status = "Name:\tbash\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";

        assert_eq!(parse_status_uid(status), Some(1000));
        assert_eq!(parse_status_uid("Name:\tx\n"), None);
    }

    #[test]
    fn environment_values_are_found_by_exact_name() {
        let environ = b"SSH_USER_AUTH_X=no\0SSH_USER_AUTH=/tmp/sshauth.abc\0HOME=/root\0";

        assert_eq!(
            env_value(environ, "SSH_USER_AUTH").as_deref(),
            Some("/tmp/sshauth.abc")
        );
        assert_eq!(env_value(environ, "PATH"), None);
    }

    #[test]
    fn only_per_connection_titles_name_a_user_and_terminal() {
        assert_eq!(parse_title("sshd: root@pts/3"), Some(("root", "pts/3")));
        assert_eq!(parse_title("sshd: deploy@notty"), Some(("deploy", "notty")));
        assert_eq!(
            parse_title("sshd-session: app@pts/12"),
            Some(("app", "pts/12"))
        );
        for other in [
            "sshd: root [priv]",
            "sshd: root [net]",
            "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
            "sshd: root@pts/x",
            "sshd: ../x@notty",
            "bash",
        ] {
            assert_eq!(parse_title(other), None, "{other}");
        }
    }

    fn process(pid: u32, ppid: u32, uid: u32, cmdline: &str, exe: &str) -> Process {
        Process {
            pid,
            ppid,
            sid: pid,
            uid,
            start_ticks: u64::from(pid) * 10,
            cmdline: cmdline.to_owned(),
            exe_name: Some(exe.to_owned()),
        }
    }

    #[test]
    fn a_connection_is_an_sshd_child_of_a_root_sshd() {
        let table = ProcessTable::from_processes([
            process(100, 1, 0, "sshd: /usr/sbin/sshd -D [listener]", "sshd"),
            process(200, 100, 0, "sshd: alice [priv]", "sshd"),
            process(201, 200, 1000, "sshd: alice@pts/0", "sshd"),
            process(202, 201, 1000, "-bash", "bash"),
            process(203, 202, 1000, "sleep 300", "sleep"),
            // A user's process titled like sshd, under the user's shell: not a connection.
            process(204, 202, 1000, "sshd: root@pts/9", "sshd"),
            process(205, 202, 1000, "sshd: root@pts/8", "python3"),
        ]);

        let connections = table.connections();

        assert_eq!(
            connections,
            [Connection {
                pid: 201,
                start_ticks: 2010,
                uid: 1000,
                unix_user: "alice".into(),
                tty: Some("pts/0".into()),
            }]
        );
        let descendants: Vec<u32> = table.descendants(201).iter().map(|p| p.pid).collect();
        assert_eq!(descendants.len(), 4);
        assert!(table.is_alive(203, 2030) && !table.is_alive(203, 1));
    }
}
