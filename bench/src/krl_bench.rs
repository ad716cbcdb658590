//! KRL build time and size: `jit_ca::krl` next to `ssh-keygen -k`, on the same serials.
//!
//! Two shapes of revoked serials, from fixed seeds: runs with gaps (runs of 1 to 64 serials
//! separated by gaps of 1 to 64, like a CA revoking whole batches) and sparse (single serials
//! about a thousand apart, like one revocation among many issuances).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jit_ca::krl::{encode, parse, CaScope, KrlBuilder, SerialRange};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ssh_key::PublicKey;

/// Longest `ssh-keygen -k` may take on one set.
const SSH_KEYGEN_LIMIT: Duration = Duration::from_secs(300);

/// How the revoked serials are spread.
#[derive(Clone, Copy, Debug)]
pub enum Spread {
    /// Runs of 1-64 consecutive serials, gaps of 1-64.
    RunsWithGaps,
    /// Single serials, gaps of 2-2000.
    Sparse,
}

impl Spread {
    /// Name for the table.
    pub fn name(self) -> &'static str {
        match self {
            Spread::RunsWithGaps => "runs with gaps",
            Spread::Sparse => "sparse",
        }
    }
}

/// One row of the KRL table.
pub struct KrlComparison {
    /// Serial spread.
    pub spread: Spread,
    /// Revoked serials.
    pub serials: usize,
    /// Maximal runs of consecutive serials among them.
    pub runs: usize,
    /// `KrlBuilder` from the unsorted serial list through `encode`, best of the rounds.
    pub ours_time: Duration,
    /// Size of our KRL.
    pub ours_bytes: usize,
    /// `ssh-keygen -k` wall time, process start to exit.
    pub ssh_keygen_time: Duration,
    /// Size of its KRL.
    pub ssh_keygen_bytes: usize,
    /// Whether its KRL reads back as the same serials (ours always does, or the run fails).
    pub ssh_keygen_check: Result<(), String>,
}

/// `count` distinct serials spread as asked, shuffled as a store would return them unsorted.
pub fn serials(spread: Spread, count: usize, seed: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut serials = Vec::with_capacity(count);
    let mut next = 1u64;
    while serials.len() < count {
        match spread {
            Spread::RunsWithGaps => {
                let run = rng.gen_range(1..=64u64);
                for serial in next..next + run {
                    if serials.len() < count {
                        serials.push(serial);
                    }
                }
                next += run + rng.gen_range(1..=64u64);
            }
            Spread::Sparse => {
                serials.push(next);
                next += rng.gen_range(2..=2000u64);
            }
        }
    }
    // Fisher-Yates with the same generator, so the builder really has to sort.
    for index in (1..serials.len()).rev() {
        let other = rng.gen_range(0..=index);
        serials.swap(index, other);
    }
    serials
}

fn runs(sorted: &[u64]) -> Vec<SerialRange> {
    let mut runs: Vec<SerialRange> = Vec::new();
    for &serial in sorted {
        match runs.last_mut() {
            Some(run) if run.last + 1 == serial => run.last = serial,
            _ => runs.push(SerialRange {
                first: serial,
                last: serial,
            }),
        }
    }
    runs
}

/// Builds and compares one set; `rounds` timings of ours, the best kept.
pub fn compare(
    spread: Spread,
    count: usize,
    ca_key: &PublicKey,
    ca_key_file: &Path,
    scratch: &Path,
    rounds: usize,
) -> anyhow::Result<KrlComparison> {
    let revoked = serials(spread, count, 0x6b72_6c00 + count as u64);
    let mut sorted = revoked.clone();
    sorted.sort_unstable();
    let revoked_runs = runs(&sorted);

    let mut ours_time = Duration::MAX;
    let mut ours = Vec::new();
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        let mut builder = KrlBuilder::new(1, 1_800_000_000);
        builder.revoke_serials(CaScope::from(ca_key), revoked.iter().copied())?;
        ours = encode(&builder.build()?);
        ours_time = ours_time.min(started.elapsed());
    }

    // ssh-keygen(1), KEY REVOCATION LISTS: `serial: N` or `serial: A-B` lines, under the CA
    // given with -s. Runs go in as ranges, its cheapest input.
    let spec_path = scratch.join(format!(
        "krl-{}-{count}.spec",
        spread.name().replace(' ', "-")
    ));
    let mut spec = std::io::BufWriter::new(std::fs::File::create(&spec_path)?);
    for run in &revoked_runs {
        if run.first == run.last {
            writeln!(spec, "serial: {}", run.first)?;
        } else {
            writeln!(spec, "serial: {}-{}", run.first, run.last)?;
        }
    }
    spec.into_inner().context("writing the KRL spec")?;
    let krl_path = spec_path.with_extension("krl");
    let mut generate = Command::new("ssh-keygen");
    generate
        .args(["-q", "-k", "-f"])
        .arg(&krl_path)
        .arg("-s")
        .arg(ca_key_file)
        .arg(&spec_path);
    let started = Instant::now();
    let generated = run_limited(&mut generate, scratch)?;
    let ssh_keygen_time = started.elapsed();
    if !generated.success {
        bail!("ssh-keygen -k failed: {}", generated.stderr);
    }
    let theirs = std::fs::read(&krl_path)?;

    // Ours must read back, with our parser and with OpenSSH's own loader, as exactly the
    // benchmark's serials; theirs is checked the same way and the answer reported.
    let ours_path = scratch.join("ours.krl");
    std::fs::write(&ours_path, &ours)?;
    let ours_check = check(&ours, &ours_path, &revoked_runs, scratch);
    if let Err(problem) = &ours_check {
        bail!("the KRL from jit_ca::krl is wrong: {problem}");
    }
    let theirs_check = check(&theirs, &krl_path, &revoked_runs, scratch);
    for path in [&spec_path, &krl_path, &ours_path] {
        std::fs::remove_file(path)?;
    }

    Ok(KrlComparison {
        spread,
        serials: count,
        runs: revoked_runs.len(),
        ours_time,
        ours_bytes: ours.len(),
        ssh_keygen_time,
        ssh_keygen_bytes: theirs.len(),
        ssh_keygen_check: theirs_check,
    })
}

/// Whether a KRL reads back as exactly `expected`, through `jit_ca::krl::parse` and through
/// OpenSSH's loader (`ssh-keygen -Q -l` lists what it loaded). `Err` says what each reader that
/// refused it, or read other serials, reported.
fn check(krl: &[u8], path: &Path, expected: &[SerialRange], scratch: &Path) -> Result<(), String> {
    let mut problems = Vec::new();

    match parse(krl) {
        Ok(parsed) => {
            let ranges: Vec<SerialRange> = parsed
                .authorities()
                .flat_map(|authority| authority.serial_ranges().iter().copied())
                .collect();
            if ranges != expected {
                problems.push("jit_ca::krl::parse reads other serials".to_owned());
            }
        }
        Err(error) => problems.push(format!("jit_ca::krl::parse refuses it ({error})")),
    }

    match openssh_listing(path, scratch) {
        Ok(listed) if listed == expected => {}
        Ok(_) => problems.push("OpenSSH's loader reads other serials".to_owned()),
        Err(error) => problems.push(format!("OpenSSH's loader refuses it ({error})")),
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The serials OpenSSH loads from the KRL at `path`, as merged runs.
fn openssh_listing(path: &Path, scratch: &Path) -> Result<Vec<SerialRange>, String> {
    let mut list = Command::new("ssh-keygen");
    list.args(["-Q", "-l", "-f"]).arg(path);
    let listed = run_limited(&mut list, scratch).map_err(|error| error.to_string())?;
    if !listed.success {
        // Its message names the scratch file, which says nothing to the reader of the table.
        return Err(listed.stderr.replace(&path.display().to_string(), "<krl>"));
    }

    let mut ranges = Vec::new();
    for line in listed.stdout.lines() {
        let Some(spec) = line.strip_prefix("serial: ") else {
            continue;
        };
        let (first, last) = spec.split_once('-').unwrap_or((spec, spec));
        let (Ok(first), Ok(last)) = (first.trim().parse::<u64>(), last.trim().parse::<u64>())
        else {
            return Err(format!("unexpected line from ssh-keygen -Q -l: {line}"));
        };
        ranges.push(SerialRange { first, last });
    }
    ranges.sort_unstable();
    Ok(merge(&ranges))
}

/// Sorted ranges with touching or overlapping ones joined.
fn merge(sorted: &[SerialRange]) -> Vec<SerialRange> {
    let mut merged: Vec<SerialRange> = Vec::new();
    for range in sorted {
        match merged.last_mut() {
            Some(last) if range.first <= last.last.saturating_add(1) => {
                last.last = last.last.max(range.last);
            }
            _ => merged.push(*range),
        }
    }
    merged
}

/// What a bounded `ssh-keygen` run printed.
struct Finished {
    success: bool,
    stdout: String,
    /// First line of stderr.
    stderr: String,
}

/// Runs `command` with its output in files under `scratch`, killing it after
/// [`SSH_KEYGEN_LIMIT`].
fn run_limited(command: &mut Command, scratch: &Path) -> anyhow::Result<Finished> {
    let stdout_path = scratch.join("ssh-keygen.stdout");
    let stderr_path = scratch.join("ssh-keygen.stderr");
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .context("running ssh-keygen")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > SSH_KEYGEN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ssh-keygen did not finish within {SSH_KEYGEN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let stdout = std::fs::read_to_string(&stdout_path)?;
    let stderr = std::fs::read_to_string(&stderr_path)?;
    Ok(Finished {
        success: status.success(),
        stdout,
        stderr: stderr.lines().next().unwrap_or_default().trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_are_distinct_serials_of_the_asked_count() {
        for spread in [Spread::RunsWithGaps, Spread::Sparse] {
            let mut revoked = serials(spread, 1000, 1);
            assert_eq!(revoked.len(), 1000);
            revoked.sort_unstable();
            revoked.dedup();
            assert_eq!(revoked.len(), 1000);
            assert!(revoked[0] >= 1);
        }
        let sparse = serials(Spread::Sparse, 1000, 1);
        let mut sorted = sparse.clone();
        sorted.sort_unstable();
        assert_eq!(runs(&sorted).len(), 1000);
        assert_ne!(sparse, sorted, "the builder must get them unsorted");
    }
}
