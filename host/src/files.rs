//! Replacing files so that a reader sees the old content or the new, never a mixture and
//! never nothing: write a temporary file beside the target with its final mode, flush it to
//! disk, rename it over the target, then flush the directory so the rename itself survives a
//! crash.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;

/// Mode of files sshd and everyone may read.
pub const PUBLIC_FILE: u32 = 0o644;
/// Mode of the host's private key.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of the agent's directories.
pub const PUBLIC_DIR: u32 = 0o755;

/// A file operation that failed, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct FileError {
    /// What was attempted.
    pub action: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The I/O failure.
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    fn new(action: &'static str, path: &Path, source: std::io::Error) -> FileError {
        FileError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Replaces `path` with `contents`, atomically, with `mode`.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: u64 = rand::thread_rng().gen();
    let staged = dir.join(format!(".{name}.{suffix:016x}.tmp"));

    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&staged)
        .and_then(|mut file| {
            file.write_all(contents)?;
            // The umask may have narrowed the mode given at creation.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            file.sync_all()
        });
    if let Err(source) = written {
        let _ = std::fs::remove_file(&staged);
        return Err(FileError::new("write", &staged, source));
    }
    if let Err(source) = std::fs::rename(&staged, path) {
        let _ = std::fs::remove_file(&staged);
        return Err(FileError::new("replace", path, source));
    }
    sync_dir(dir)
}

/// Removes `path`; a missing file is fine.
pub fn remove(path: &Path) -> Result<(), FileError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            sync_dir(dir)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FileError::new("remove", path, source)),
    }
}

/// Reads `path`, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(contents) => Ok(Some(contents)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::new("read", path, source)),
    }
}

/// Creates `path` and its missing parents with `mode`.
pub fn create_dir(path: &Path, mode: u32) -> Result<(), FileError> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| FileError::new("create", path, source))
}

/// The names of the plain files in `dir`, skipping hidden ones (our temporary files).
pub fn list_files(dir: &Path) -> Result<Vec<String>, FileError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(FileError::new("list", dir, source)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| FileError::new("list", dir, source))?;
        let is_file = entry
            .file_type()
            .map(|kind| kind.is_file())
            .unwrap_or(false);
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_file && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| FileError::new("flush", dir, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_with_the_given_mode_and_leaves_nothing_beside() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("revoked_keys.krl");

        write_atomically(&target, b"first", PUBLIC_FILE).unwrap();
        write_atomically(&target, b"second", PRIVATE_FILE).unwrap();

        assert_eq!(std::fs::read(&target).unwrap(), b"second");
        assert_eq!(mode_of(&target), PRIVATE_FILE);
        assert_eq!(list_files(dir.path()).unwrap(), ["revoked_keys.krl"]);
        let everything = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(everything, 1, "a temporary file was left behind");
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("missing-dir").join("file");

        let error = write_atomically(&target, b"x", PUBLIC_FILE).unwrap_err();

        assert!(error.to_string().contains("cannot write"), "{error}");
        assert_eq!(read_optional(&dir.path().join("file")).unwrap(), None);
    }

    #[test]
    fn removing_a_missing_file_is_fine() {
        let dir = tempfile::tempdir().unwrap();

        remove(&dir.path().join("absent")).unwrap();
    }
}
