//! Turning what the CA sent into the files sshd reads: everything is checked first, then each
//! file is replaced atomically, and only when its content changes.

use std::path::Path;

use chrono::{DateTime, Utc};
use jit_proto::revocation::HostConfig;
use rand::rngs::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};

use crate::checks::{self, KrlVerdict};
use crate::files::{self, PRIVATE_FILE, PUBLIC_DIR, PUBLIC_FILE};
use crate::layout::{certificate_path, public_key_path, Layout};
use crate::AgentError;

/// What an installation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// The trusted CA keys changed.
    pub ca_keys: bool,
    /// Some principals file was written or removed.
    pub principals: bool,
    /// The host certificate changed (sshd reads it only when it starts or reloads).
    pub host_certificate: bool,
}

/// Installs the CA keys, principals files and host certificate of `config` for the host key
/// `host_key` (whose certificate goes beside it). Nothing is written unless all of it passes
/// the checks.
pub fn install_host_config(
    layout: &Layout,
    config: &HostConfig,
    host_key: &Path,
    host_public_key: &PublicKey,
    now: DateTime<Utc>,
) -> Result<Changes, AgentError> {
    let ca_keys = checks::ca_keys_file(&config.ca_keys)?;
    let principals = checks::principals_files(&config.principals)?;
    checks::check_host_certificate(
        &config.host_certificate,
        host_public_key,
        &config.name,
        &config.ca_keys,
        now,
    )?;

    let mut changes = Changes {
        ca_keys: replace_if_changed(&layout.ca_keys(), ca_keys.as_bytes())?,
        ..Changes::default()
    };

    // New files first, then the stale ones go: a user keeps working throughout.
    let principals_dir = layout.principals_dir();
    files::create_dir(&principals_dir, PUBLIC_DIR)?;
    for (unix_user, content) in &principals {
        changes.principals |=
            replace_if_changed(&principals_dir.join(unix_user), content.as_bytes())?;
    }
    for stale in files::list_files(&principals_dir)? {
        if !principals.contains_key(&stale) {
            files::remove(&principals_dir.join(&stale))?;
            changes.principals = true;
        }
    }

    let mut certificate = config.host_certificate.trim().to_owned();
    certificate.push('\n');
    changes.host_certificate =
        replace_if_changed(&certificate_path(host_key), certificate.as_bytes())?;
    Ok(changes)
}

/// Installs `bytes` as the KRL when it parses and is newer than the installed one; returns
/// the version now installed.
pub fn install_krl(layout: &Layout, bytes: &[u8]) -> Result<u64, AgentError> {
    let path = layout.krl();
    let installed = installed_krl(layout)?;
    match checks::check_krl(bytes, installed)? {
        KrlVerdict::AlreadyInstalled(version) => Ok(version),
        KrlVerdict::Install(version) => {
            files::write_atomically(&path, bytes, PUBLIC_FILE)?;
            Ok(version)
        }
    }
}

/// The version of the installed KRL, if one is installed and parses.
pub fn installed_krl(layout: &Layout) -> Result<Option<u64>, AgentError> {
    let bytes = files::read_optional(&layout.krl())?;
    Ok(checks::installed_krl_version(bytes.as_deref()))
}

/// Loads the host key at `path`, creating an Ed25519 one (mode 0600, public half beside it)
/// when the file does not exist. Refuses an encrypted key or one others can read.
pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, AgentError> {
    let fail = |message: String| AgentError::HostKey {
        path: path.display().to_string(),
        message,
    };

    if let Some(text) = files::read_optional(path)? {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|error| fail(error.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "readable by others (mode {:o}); chmod 600 it",
                mode & 0o777
            )));
        }
        let key = PrivateKey::from_openssh(&text).map_err(|error| fail(error.to_string()))?;
        if key.is_encrypted() {
            return Err(fail("encrypted; sshd needs it without a passphrase".into()));
        }
        return Ok(key);
    }

    let key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|error| fail(error.to_string()))?;
    let private_text = key
        .to_openssh(LineEnding::LF)
        .map_err(|error| fail(error.to_string()))?;
    let public_text = key
        .public_key()
        .to_openssh()
        .map_err(|error| fail(error.to_string()))?;
    files::write_atomically(path, private_text.as_bytes(), PRIVATE_FILE)?;
    files::write_atomically(
        &public_key_path(path),
        format!("{public_text}\n").as_bytes(),
        PUBLIC_FILE,
    )?;
    Ok(key)
}

fn replace_if_changed(path: &Path, content: &[u8]) -> Result<bool, AgentError> {
    if files::read_optional(path)?.as_deref() == Some(content) {
        return Ok(false);
    }
    files::write_atomically(path, content, PUBLIC_FILE)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jit_ca::krl::{encode, KrlBuilder};

    use super::*;

    fn krl(version: u64) -> Vec<u8> {
        encode(&KrlBuilder::new(version, 1_800_000_000).build().unwrap())
    }

    #[test]
    fn an_older_or_broken_krl_leaves_the_installed_one_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());

        assert_eq!(install_krl(&layout, &krl(3)).unwrap(), 3);
        assert!(install_krl(&layout, &krl(2)).is_err());
        assert!(install_krl(&layout, b"").is_err());
        assert!(install_krl(&layout, b"SSHKRL\n\0garbage").is_err());
        assert_eq!(install_krl(&layout, &krl(3)).unwrap(), 3);

        assert_eq!(std::fs::read(layout.krl()).unwrap(), krl(3));
        assert_eq!(install_krl(&layout, &krl(4)).unwrap(), 4);
        assert_eq!(installed_krl(&layout).unwrap(), Some(4));
    }

    /// A host config signed by a throwaway CA for `host_key`.
    fn host_config(
        ca: &PrivateKey,
        host_key: &PublicKey,
        principals: &[(&str, &str)],
    ) -> HostConfig {
        let mut builder = ssh_key::certificate::Builder::new_with_random_nonce(
            &mut OsRng,
            host_key.key_data().clone(),
            1_800_000_000,
            1_900_000_000,
        )
        .unwrap();
        builder
            .cert_type(ssh_key::certificate::CertType::Host)
            .unwrap()
            .valid_principal("db-1")
            .unwrap();
        let certificate = builder.sign(ca).unwrap().to_openssh().unwrap();
        let principals: BTreeMap<String, Vec<String>> = principals
            .iter()
            .map(|(user, principal)| (user.to_string(), vec![principal.to_string()]))
            .collect();
        HostConfig {
            name: "db-1".into(),
            ca_keys: vec![ca.public_key().to_openssh().unwrap()],
            krl_version: 1,
            principals,
            host_certificate: certificate,
            host_certificate_valid_before: DateTime::from_timestamp(1_900_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn host_config_is_installed_and_stale_principals_removed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let host_key_path = layout.default_host_key();
        let host_key = load_or_create_host_key(&host_key_path).unwrap();
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let now = DateTime::from_timestamp(1_850_000_000, 0).unwrap();

        let first = host_config(
            &ca,
            host_key.public_key(),
            &[("root", "root@db-1"), ("app", "app@db-1")],
        );
        let second = host_config(&ca, host_key.public_key(), &[("root", "root@db-1")]);
        let changed =
            install_host_config(&layout, &first, &host_key_path, host_key.public_key(), now)
                .unwrap();
        let shrunk =
            install_host_config(&layout, &second, &host_key_path, host_key.public_key(), now)
                .unwrap();

        assert!(changed.ca_keys && changed.principals && changed.host_certificate);
        assert!(!shrunk.ca_keys && shrunk.principals && shrunk.host_certificate);
        assert_eq!(
            files::list_files(&layout.principals_dir()).unwrap(),
            ["root"]
        );
        let reloaded = load_or_create_host_key(&host_key_path).unwrap();
        assert_eq!(reloaded.public_key(), host_key.public_key());
    }

    #[test]
    fn a_certificate_for_another_key_installs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let host_key_path = layout.default_host_key();
        let host_key = load_or_create_host_key(&host_key_path).unwrap();
        let stranger = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let ca = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).unwrap();
        let now = DateTime::from_timestamp(1_850_000_000, 0).unwrap();

        let config = host_config(&ca, stranger.public_key(), &[("root", "root@db-1")]);
        let refused =
            install_host_config(&layout, &config, &host_key_path, host_key.public_key(), now);

        assert!(matches!(refused, Err(AgentError::Refused(_))));
        assert!(files::read_optional(&layout.ca_keys()).unwrap().is_none());
        assert!(files::list_files(&layout.principals_dir())
            .unwrap()
            .is_empty());
    }
}
