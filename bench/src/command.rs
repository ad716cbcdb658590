//! Running the helper programs the benchmarks drive (`ssh-keygen`, `openssl`, `jit-ca`,
//! `jit-host`) to completion.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Runs `command` to its end with no input and returns its standard output; fails with the
/// first line of its stderr when it does not succeed.
pub fn run_checked(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{command:?} failed: {}",
            stderr.lines().next().unwrap_or_default().trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A fresh Ed25519 key pair from `ssh-keygen` at `path` (and `path.pub`), no passphrase.
pub fn ssh_keygen_ed25519(path: &Path) -> anyhow::Result<()> {
    run_checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "jit-bench", "-f"])
            .arg(path),
    )?;
    Ok(())
}
