//! What `/proc` says about a process (CPU time, memory) and about the machine.
//!
//! CPU times come from `/proc/<pid>/stat` (proc(5): `utime` and `stime` are fields 14 and 15,
//! `cutime` and `cstime` of waited-for children 16 and 17), counted in clock ticks.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Clock ticks per second for `/proc` times (`getconf CLK_TCK`; 100 on every common Linux).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// CPU time of one process, read at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    /// User plus system time of the process itself (all its threads).
    pub own: Duration,
    /// User plus system time of its children that it has waited for.
    pub children: Duration,
}

impl CpuTimes {
    /// Reads `/proc/<pid>/stat`; `pid` is `"self"` for this process.
    pub fn of(pid: &str, ticks_per_second: u64) -> anyhow::Result<CpuTimes> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // The command name (field 2) is in parentheses and may hold spaces; count after it.
        let after_name = text
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("unexpected /proc stat format")?;
        let fields: Vec<u64> = after_name
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().unwrap_or(0))
            .collect();
        // After the name and state, field 14 of proc(5) is at index 10 here.
        let ticks = |index: usize| fields.get(index).copied().unwrap_or(0);
        let to_duration =
            |ticks: u64| Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64);
        Ok(CpuTimes {
            own: to_duration(ticks(10) + ticks(11)),
            children: to_duration(ticks(12) + ticks(13)),
        })
    }
}

/// CPU time the whole machine has spent busy so far, all cores together: the first line of
/// `/proc/stat` (proc(5)) without `idle` and `iowait`, `steal` included since it was not ours.
pub fn machine_busy(ticks_per_second: u64) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let fields: Vec<u64> = text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .context("unexpected /proc/stat format")?
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    let field = |index: usize| fields.get(index).copied().unwrap_or(0);
    // user, nice, system, idle, iowait, irq, softirq, steal
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Ok(Duration::from_secs_f64(
        busy as f64 / ticks_per_second as f64,
    ))
}

/// The load average over the last minute.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`: resident now, in KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the peak resident size so far, in KiB.
    pub peak_kib: u64,
}

impl Memory {
    /// Reads `/proc/<pid>/status`.
    pub fn of(pid: u32) -> anyhow::Result<Memory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        })
    }
}

/// The machine the numbers were taken on, for the report's header.
pub struct Machine {
    /// `model name` of the first CPU.
    pub cpu_model: String,
    /// Online CPUs.
    pub cores: usize,
    /// `MemTotal`, in GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// `ssh -V`.
    pub openssh: String,
    /// Median time of a 4 KiB write plus `fdatasync` in the bench's directory.
    pub fsync_median: Duration,
}

impl Machine {
    /// Describes this machine; `scratch` is a directory on the disk the stores use.
    pub fn describe(scratch: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let memory_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        // `ssh -V` prints its version on stderr.
        let openssh = Command::new("ssh")
            .arg("-V")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stderr).trim().to_owned())
            .unwrap_or_else(|_| "not found".into());

        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel,
            openssh,
            fsync_median: fsync_median(scratch, 100).unwrap_or_default(),
        }
    }
}

/// Median of `count` rounds of a 4 KiB write and `fdatasync`, what one durable commit costs at
/// least.
fn fsync_median(scratch: &Path, count: usize) -> anyhow::Result<Duration> {
    let path = scratch.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut rounds = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        rounds.push(started.elapsed());
    }
    std::fs::remove_file(&path)?;
    rounds.sort();
    Ok(rounds[count / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        let ticks = clock_ticks_per_second();
        let started = Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(60) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);

        let cpu = CpuTimes::of("self", ticks).unwrap();
        let memory = Memory::of(std::process::id()).unwrap();

        assert!(cpu.own >= Duration::from_millis(20), "{cpu:?}");
        assert!(memory.rss_kib > 0 && memory.peak_kib >= memory.rss_kib);
        assert!(machine_busy(ticks).unwrap() >= cpu.own);
    }
}
