//! The client's state directory: cached tokens, grants and keys of pending requests.
//!
//! ```text
//! <state>/                         0700
//!   tokens.json                    0600  cached ID token, its expiry, refresh token
//!   grants/<grant_id>/             0700
//!     id_ed25519                   0600  OpenSSH private key
//!     id_ed25519-cert.pub          0600  the certificate the CA signed for it
//!     grant.json                   0600  the grant as the CA described it (written last)
//!   requests/<request_id>/         0700  a request still waiting for approval
//!     id_ed25519                   0600
//!     request.json                 0600
//! ```
//!
//! Every file is created with its final mode and moved into place by rename, so no reader ever
//! sees a secret with wider permissions or half written.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use jit_proto::{AccessRequestView, GrantView, IssuedCertificate};
use rand::Rng;

/// File name of the private key inside a grant or request directory.
pub const KEY_FILE: &str = "id_ed25519";
/// File name of the certificate beside the key (the name `ssh-add` looks for).
pub const CERT_FILE: &str = "id_ed25519-cert.pub";
/// File name of the grant description inside a grant directory.
pub const GRANT_FILE: &str = "grant.json";
/// File name of the request description inside a pending request's directory.
pub const REQUEST_FILE: &str = "request.json";
/// File name of the token cache.
pub const TOKENS_FILE: &str = "tokens.json";

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// What went wrong with the state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file or directory could not be created, read, written or removed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was attempted (`create`, `read`, `write`, `remove`).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The state directory exists but other users may read or enter it.
    #[error(
        "{} is accessible to other users (mode {mode:o}); run `chmod 700 {}`",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An identifier (from the CA or the command line) cannot be used as a directory name.
    #[error("`{shown}` is not a usable {kind}")]
    UnsafeId {
        /// `grant id` or `request id`.
        kind: &'static str,
        /// The identifier, cut and with unprintable characters replaced.
        shown: String,
    },
    /// A JSON file in the state directory does not parse.
    #[error("{} is damaged", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The parse failure.
        #[source]
        source: serde_json::Error,
    },
}

/// A grant installed in the state directory, with its key and certificate.
#[derive(Clone, Debug)]
pub struct LocalGrant {
    /// The grant as the CA described it when it was installed.
    pub grant: GrantView,
    /// The certificate installed beside the key.
    pub certificate: IssuedCertificate,
    /// The grant's directory.
    pub dir: PathBuf,
    /// The private key file.
    pub key_path: PathBuf,
    /// The certificate file.
    pub cert_path: PathBuf,
}

/// A request waiting for approval, whose private key is kept locally.
#[derive(Clone, Debug)]
pub struct PendingRequest {
    /// The request as the CA described it when it was made.
    pub request: AccessRequestView,
    /// The request's directory.
    pub dir: PathBuf,
}

/// The opened state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens the state directory, creating it (and missing parents) with mode 0700.
    ///
    /// Refuses a directory that group or others can access: it holds private keys and tokens,
    /// and `ssh` itself refuses keys in such places.
    pub fn open(root: &Path) -> Result<Self, StateError> {
        create_private_dir(root)?;

        let metadata = std::fs::metadata(root).map_err(|source| StateError::Io {
            action: "read",
            path: root.to_path_buf(),
            source,
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StateError::TooOpen {
                path: root.to_path_buf(),
                mode,
            });
        }
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the token cache.
    pub fn tokens_file(&self) -> PathBuf {
        self.root.join(TOKENS_FILE)
    }

    /// Directory of a grant; refuses identifiers that are not plain file names.
    pub fn grant_dir(&self, grant_id: &str) -> Result<PathBuf, StateError> {
        check_id(grant_id, "grant id")?;
        Ok(self.root.join("grants").join(grant_id))
    }

    /// Directory of a pending request; refuses identifiers that are not plain file names.
    pub fn request_dir(&self, request_id: &str) -> Result<PathBuf, StateError> {
        check_id(request_id, "request id")?;
        Ok(self.root.join("requests").join(request_id))
    }

    /// Creates a directory below the state directory, and any missing parents, with mode 0700.
    pub fn create_dir(&self, path: &Path) -> Result<(), StateError> {
        create_private_dir(path)
    }

    /// Writes `contents` to `path` as a 0600 file, replacing any previous file atomically.
    pub fn write_private_file(&self, path: &Path, contents: &[u8]) -> Result<(), StateError> {
        let io_error = |source| StateError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(&self.root);
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let suffix: u64 = rand::thread_rng().gen();
        let temporary = dir.join(format!(".{file_name}.{suffix:016x}.tmp"));

        // The mode is given at creation so the secret never exists with wider permissions.
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temporary)
            .and_then(|mut file| {
                file.write_all(contents)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(io_error(source));
        }
        Ok(())
    }

    /// Reads a file, or `None` when it does not exist.
    pub fn read_file(&self, path: &Path) -> Result<Option<Vec<u8>>, StateError> {
        match std::fs::read(path) {
            Ok(contents) => Ok(Some(contents)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Removes a grant or request directory and everything in it; a missing one is fine.
    pub fn remove_dir(&self, path: &Path) -> Result<(), StateError> {
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                action: "remove",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Every completely installed grant that has a certificate, in no particular order.
    ///
    /// A directory without `grant.json` is skipped: it is being installed, or was abandoned
    /// half way, and holds nothing usable.
    pub fn list_grants(&self) -> Result<Vec<LocalGrant>, StateError> {
        let mut grants = Vec::new();
        for dir in self.subdirectories("grants")? {
            let grant_path = dir.join(GRANT_FILE);
            let Some(grant) = self.read_json::<GrantView>(&grant_path)? else {
                continue;
            };
            let Some(certificate) = grant.certificate.clone() else {
                continue;
            };
            grants.push(LocalGrant {
                grant,
                certificate,
                key_path: dir.join(KEY_FILE),
                cert_path: dir.join(CERT_FILE),
                dir,
            });
        }
        Ok(grants)
    }

    /// Every request kept locally while waiting for approval.
    pub fn list_pending(&self) -> Result<Vec<PendingRequest>, StateError> {
        let mut pending = Vec::new();
        for dir in self.subdirectories("requests")? {
            let request_path = dir.join(REQUEST_FILE);
            if let Some(request) = self.read_json::<AccessRequestView>(&request_path)? {
                pending.push(PendingRequest { request, dir });
            }
        }
        Ok(pending)
    }

    /// Reads and parses a JSON file, or `None` when it does not exist.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, StateError> {
        let Some(contents) = self.read_file(path)? else {
            return Ok(None);
        };
        serde_json::from_slice(&contents)
            .map(Some)
            .map_err(|source| StateError::Damaged {
                path: path.to_path_buf(),
                source,
            })
    }

    fn subdirectories(&self, name: &str) -> Result<Vec<PathBuf>, StateError> {
        let parent = self.root.join(name);
        let entries = match std::fs::read_dir(&parent) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path: parent,
                    source,
                })
            }
        };

        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StateError::Io {
                action: "read",
                path: parent.clone(),
                source,
            })?;
            let is_dir = entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false);
            let name = entry.file_name();
            let usable_name = name
                .to_str()
                .is_some_and(|name| check_id(name, "entry").is_ok());
            if is_dir && usable_name {
                dirs.push(entry.path());
            }
        }
        Ok(dirs)
    }
}

fn create_private_dir(path: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|source| StateError::Io {
            action: "create",
            path: path.to_path_buf(),
            source,
        })
}

/// Identifiers from the CA become directory names, so only a narrow set passes: ASCII letters,
/// digits, `-` and `_`, not starting with `-`, at most 100 characters. `..`, `/` and hidden
/// names cannot be spelled in it.
fn check_id(id: &str, kind: &'static str) -> Result<(), StateError> {
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_';
    let well_formed =
        !id.is_empty() && id.len() <= 100 && !id.starts_with('-') && id.bytes().all(allowed);
    if well_formed {
        return Ok(());
    }

    let shown = id
        .chars()
        .take(64)
        .map(|character| {
            if character.is_ascii_graphic() {
                character
            } else {
                '?'
            }
        })
        .collect();
    Err(StateError::UnsafeId { kind, shown })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_the_directory_0700_and_files_0600() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("state").join("jit");

        let state = StateDir::open(&root).unwrap();
        let grant_dir = state.grant_dir("g-1").unwrap();
        state.create_dir(&grant_dir).unwrap();
        let key_path = grant_dir.join(KEY_FILE);
        state.write_private_file(&key_path, b"first").unwrap();
        state.write_private_file(&key_path, b"second").unwrap();

        assert_eq!(mode_of(&root), 0o700);
        assert_eq!(mode_of(&root.join("grants")), 0o700);
        assert_eq!(mode_of(&grant_dir), 0o700);
        assert_eq!(mode_of(&key_path), 0o600);
        assert_eq!(std::fs::read(&key_path).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(&grant_dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary files left behind");
    }

    #[test]
    fn refuses_a_directory_others_can_enter() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("jit");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();

        let error = StateDir::open(&root).unwrap_err();

        assert!(
            matches!(error, StateError::TooOpen { mode: 0o755, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("chmod 700"), "{error}");
    }

    #[test]
    fn refuses_identifiers_that_escape_the_directory() {
        let base = tempfile::tempdir().unwrap();
        let state = StateDir::open(&base.path().join("jit")).unwrap();

        for bad in ["", "..", "../x", "a/b", ".hidden", "-rf", "g 1", "g\n1"] {
            assert!(state.grant_dir(bad).is_err(), "{bad:?}");
            assert!(state.request_dir(bad).is_err(), "{bad:?}");
        }
        assert!(state.grant_dir(&"g".repeat(101)).is_err());
        assert!(state.grant_dir("g-01HZX_9").is_ok());
    }

    #[test]
    fn lists_only_completely_installed_grants() {
        let base = tempfile::tempdir().unwrap();
        let state = StateDir::open(&base.path().join("jit")).unwrap();
        let half_installed = state.grant_dir("g-half").unwrap();
        state.create_dir(&half_installed).unwrap();
        state
            .write_private_file(&half_installed.join(KEY_FILE), b"key")
            .unwrap();

        let grants = state.list_grants().unwrap();

        assert!(grants.is_empty());
    }
}
