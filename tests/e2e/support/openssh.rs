//! The real OpenSSH tools (`ssh-keygen`, `ssh-agent`, `ssh-add`) driven for the end-to-end
//! tests, and a reader for what `ssh-keygen -L` prints about a certificate.
//!
//! Every helper panics with the tool's stderr when the tool fails: a test whose fixtures
//! cannot be made has nothing sensible to go on with.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tempfile::TempDir;

/// How `ssh-keygen` prints a validity bound (`format_absolute_time`, in local time).
const LISTING_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// How long a freshly started `ssh-agent` may take to create its socket.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `command` to completion with no stdin and returns its output.
///
/// Panics with the command line, the exit status and stderr when it cannot run or fails.
pub fn run_checked(command: &mut Command) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));

    if !output.status.success() {
        panic!(
            "{command:?} failed with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// `path` with `suffix` appended to its file name, the way OpenSSH names companion files
/// (`key` → `key.pub`, `key` → `key-cert.pub`).
/// The real `ssh`, reading no configuration, no agent and no global known hosts, offering only
/// `identity` (with `certificate` when given). `extra` comes first, so an `-o` there wins over
/// these defaults (`ssh` keeps the first value it sees). Host-key checking, the address and the
/// destination are the caller's to add.
pub fn isolated_ssh(extra: &[&str], identity: &Path, certificate: Option<&Path>) -> Command {
    let mut command = Command::new("ssh");
    command.args(extra);
    command.args([
        "-F",
        "none",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
    ]);
    command
        .arg("-o")
        .arg(format!("IdentityFile={}", identity.display()));
    if let Some(certificate) = certificate {
        command
            .arg("-o")
            .arg(format!("CertificateFile={}", certificate.display()));
    }
    command.args([
        "-o",
        "IdentityAgent=none",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
    ]);
    command
}

pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Polls `ready` every 20 ms until it returns `Some`, or returns `None` once `timeout` has
/// passed.
pub fn poll_until<T>(timeout: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `ssh-keygen` with `TZ=UTC`, since it reads `-V` times and prints validity in local time.
fn ssh_keygen() -> Command {
    let mut command = Command::new("ssh-keygen");
    command.env("TZ", "UTC");
    command
}

/// Generates an unencrypted ed25519 key pair at `dir/name` (comment `name`) with the real
/// `ssh-keygen`.
///
/// Returns the private key's path and the public key's line (`ssh-ed25519 AAAA… name`), which
/// is also written to `dir/name.pub`. Panics when `dir/name` already exists.
pub fn generate_ed25519_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let private_path = dir.join(name);
    run_checked(
        ssh_keygen()
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private_path),
    );

    let public_path = with_suffix(&private_path, ".pub");
    let public_line = fs::read_to_string(&public_path).expect("read the new public key");
    (private_path, public_line.trim_end().to_owned())
}

/// Signs the public key at `public_path` as a user certificate with the real `ssh-keygen -s`,
/// for tests that need a certificate jit-ca did not issue (another CA, an expired one).
///
/// `validity` is an `ssh-keygen -V` interval, read as UTC (`20200101:20200102`, `-5m:+1h`);
/// each entry of `options` is passed as one `-O` (`source-address=127.0.0.3`, `clear`).
///
/// The certificate is written beside the public key as `<stem>-serial-<serial>-cert.pub` and
/// its path returned. It never lands at `<stem>-cert.pub`: `ssh` offers that file on its own
/// with the identity `<stem>`, which would blur which certificate a login used.
///
/// Panics on an empty `principals`: `ssh-keygen` would then issue a certificate valid for
/// every principal.
pub fn sign_user_certificate_with_ssh_keygen(
    ca_private: &Path,
    public_path: &Path,
    key_id: &str,
    principals: &[impl AsRef<str>],
    validity: &str,
    serial: u64,
    options: &[&str],
) -> PathBuf {
    assert!(
        !principals.is_empty(),
        "refusing to sign {key_id:?} with no principals: it would be valid for all of them"
    );
    let principal_list: Vec<&str> = principals.iter().map(AsRef::as_ref).collect();

    // `ssh-keygen -s key.pub` writes `key-cert.pub`; sign a copy named after the serial so
    // the result gets a name of its own.
    let stem = match public_path
        .to_str()
        .and_then(|path| path.strip_suffix(".pub"))
    {
        Some(stem) => PathBuf::from(stem),
        None => public_path.to_owned(),
    };
    let serial_stem = with_suffix(&stem, &format!("-serial-{serial}"));
    let public_copy = with_suffix(&serial_stem, ".pub");
    fs::copy(public_path, &public_copy).expect("copy the public key to sign");

    let mut command = ssh_keygen();
    command.arg("-q").arg("-s").arg(ca_private);
    command.args(["-I", key_id, "-n", &principal_list.join(",")]);
    command.args(["-V", validity, "-z", &serial.to_string()]);
    for option in options {
        command.args(["-O", option]);
    }
    run_checked(command.arg(&public_copy));

    fs::remove_file(&public_copy).expect("remove the signed copy of the public key");
    with_suffix(&serial_stem, "-cert.pub")
}

/// Lists the certificate at `path` with the real `ssh-keygen -L` (run with `TZ=UTC`, so the
/// validity bounds are UTC) and parses the listing.
pub fn inspect_certificate(path: &Path) -> CertificateListing {
    let output = run_checked(ssh_keygen().arg("-L").arg("-f").arg(path));
    parse_certificate_listing(&String::from_utf8_lossy(&output.stdout))
}

/// Which side of a connection a certificate vouches for (`PROTOCOL.certkeys`: type 1 is a
/// user, type 2 a host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateType {
    User,
    Host,
}

/// One end of a certificate's validity interval as `ssh-keygen -L` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidityBound {
    /// The time as printed, e.g. `2020-01-01T00:00:00`.
    pub printed: String,
    /// The same time in the zone `ssh-keygen` ran in: UTC for [`inspect_certificate`].
    pub local_time: NaiveDateTime,
}

/// What `ssh-keygen -L -f cert` says about one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateListing {
    pub certificate_type: CertificateType,
    /// The certificate key type, e.g. `ssh-ed25519-cert-v01@openssh.com`.
    pub key_type: String,
    /// The certified public key's fingerprint, `SHA256:…`.
    pub public_key_fingerprint: String,
    /// The signing CA's fingerprint, `SHA256:…`.
    pub signing_ca_fingerprint: String,
    /// The key ID, without the quotes `ssh-keygen` prints around it.
    pub key_id: String,
    pub serial: u64,
    /// Start of validity; `None` when the certificate has no lower bound.
    pub valid_from: Option<ValidityBound>,
    /// End of validity; `None` when the certificate is valid "forever".
    pub valid_to: Option<ValidityBound>,
    pub principals: Vec<String>,
    /// Critical option name → value; options without a value (`verify-required`) map to "".
    pub critical_options: BTreeMap<String, String>,
    /// Extension names (with a value, if one was printed), in listing order.
    pub extensions: Vec<String>,
}

/// Parses the text `ssh-keygen -L -f cert` prints: a line naming the file, then one indented
/// `Name: value` line per field, with the entries of Principals, Critical Options and
/// Extensions indented further below their heading (or `(none)` beside it).
///
/// Panics, quoting the text, when a field is missing or malformed.
pub fn parse_certificate_listing(text: &str) -> CertificateListing {
    let fields = ListingFields::parse(text);

    let (key_type, kind) = fields
        .value("Type")
        .split_once(' ')
        .unwrap_or_else(|| fields.malformed("Type"));
    let certificate_type = match kind {
        "user certificate" => CertificateType::User,
        "host certificate" => CertificateType::Host,
        _ => fields.malformed("Type"),
    };

    let key_id = fields.value("Key ID");
    let key_id = key_id
        .strip_prefix('"')
        .and_then(|unquoted| unquoted.strip_suffix('"'))
        .unwrap_or_else(|| fields.malformed("Key ID"));

    let serial = fields
        .value("Serial")
        .parse()
        .unwrap_or_else(|_| fields.malformed("Serial"));

    let (valid_from, valid_to) = fields.validity();

    let critical_options = fields
        .entries("Critical Options")
        .iter()
        .map(|entry| match entry.split_once(' ') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => (entry.clone(), String::new()),
        })
        .collect();

    CertificateListing {
        certificate_type,
        key_type: key_type.to_owned(),
        public_key_fingerprint: fields.fingerprint("Public key"),
        signing_ca_fingerprint: fields.fingerprint("Signing CA"),
        key_id: key_id.to_owned(),
        serial,
        valid_from,
        valid_to,
        principals: fields.entries("Principals"),
        critical_options,
        extensions: fields.entries("Extensions"),
    }
}

/// One `Name: value` line of a listing, with the entries indented below it.
struct ListingField<'a> {
    name: &'a str,
    value: &'a str,
    entries: Vec<String>,
}

/// A listing split into its fields, kept with its text for panic messages.
struct ListingFields<'a> {
    text: &'a str,
    fields: Vec<ListingField<'a>>,
}

impl<'a> ListingFields<'a> {
    fn parse(text: &'a str) -> Self {
        let mut fields: Vec<ListingField> = Vec::new();
        let mut field_indent = None;

        for line in text.lines().map(str::trim_end) {
            let content = line.trim_start();
            let indent = line.len() - content.len();

            // The unindented first line names the file; entries sit deeper than fields.
            if indent == 0 || content.is_empty() {
                continue;
            }
            let field_indent = *field_indent.get_or_insert(indent);
            if indent > field_indent {
                match fields.last_mut() {
                    Some(field) => field.entries.push(content.to_owned()),
                    None => panic!("entry before any field in listing:\n{text}"),
                }
                continue;
            }

            let (name, value) = content
                .split_once(':')
                .unwrap_or_else(|| panic!("line {content:?} is no field in listing:\n{text}"));
            fields.push(ListingField {
                name,
                value: value.trim(),
                entries: Vec::new(),
            });
        }
        Self { text, fields }
    }

    fn field(&self, name: &str) -> &ListingField<'a> {
        self.fields
            .iter()
            .find(|field| field.name == name)
            .unwrap_or_else(|| panic!("no {name:?} in listing:\n{}", self.text))
    }

    fn value(&self, name: &str) -> &'a str {
        self.field(name).value
    }

    fn malformed(&self, name: &str) -> ! {
        panic!("malformed {name:?} in listing:\n{}", self.text)
    }

    /// The entries of a list field; a heading followed by `(none)` has none.
    fn entries(&self, name: &str) -> Vec<String> {
        let field = self.field(name);
        match field.value {
            "(none)" if field.entries.is_empty() => Vec::new(),
            "" => field.entries.clone(),
            _ => self.malformed(name),
        }
    }

    /// The `SHA256:…` word of a key description such as `ED25519 SHA256:… (using …)`.
    fn fingerprint(&self, name: &str) -> String {
        self.value(name)
            .split_whitespace()
            .find(|word| word.starts_with("SHA256:"))
            .unwrap_or_else(|| self.malformed(name))
            .to_owned()
    }

    /// The bounds of `Valid:`, printed as `forever`, `from A to B`, `after A` or `before B`
    /// (`sshkey_format_cert_validity`).
    fn validity(&self) -> (Option<ValidityBound>, Option<ValidityBound>) {
        let validity = self.value("Valid");
        let bound = |printed: &str| {
            let local_time = NaiveDateTime::parse_from_str(printed, LISTING_TIME_FORMAT)
                .unwrap_or_else(|_| self.malformed("Valid"));
            Some(ValidityBound {
                printed: printed.to_owned(),
                local_time,
            })
        };

        if validity == "forever" {
            return (None, None);
        }
        if let Some(range) = validity.strip_prefix("from ") {
            let (from, to) = range
                .split_once(" to ")
                .unwrap_or_else(|| self.malformed("Valid"));
            return (bound(from), bound(to));
        }
        if let Some(from) = validity.strip_prefix("after ") {
            return (bound(from), None);
        }
        match validity.strip_prefix("before ") {
            Some(to) => (None, bound(to)),
            None => self.malformed("Valid"),
        }
    }
}

/// A real `ssh-agent` listening on a socket in its own temporary directory, killed on drop.
pub struct SshAgent {
    process: Child,
    socket: PathBuf,
    // Removed only after `drop` has stopped the agent.
    _directory: TempDir,
}

impl SshAgent {
    /// Starts `ssh-agent -D -a <socket>` and waits (boundedly) for the socket to appear.
    ///
    /// Panics with the agent's stderr when it exits or does not create the socket in time.
    pub fn start() -> SshAgent {
        let directory = tempfile::tempdir().expect("create the agent's directory");
        let socket = directory.path().join("agent.sock");
        let log_path = directory.path().join("ssh-agent.log");
        let log = File::create(&log_path).expect("create the agent's log");

        let process = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ssh-agent");
        let mut agent = SshAgent {
            process,
            socket,
            _directory: directory,
        };

        let started = poll_until(AGENT_START_TIMEOUT, || {
            if agent.socket.exists() {
                return Some(true);
            }
            matches!(agent.process.try_wait(), Ok(Some(_))).then_some(false)
        });
        if started != Some(true) {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            panic!("ssh-agent did not create {:?}:\n{log}", agent.socket);
        }
        agent
    }

    /// The agent's socket, for `SSH_AUTH_SOCK` or `ssh -o IdentityAgent=…`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Adds the private key at `private_key` with `ssh-add`, which also loads
    /// `<private_key>-cert.pub` when that file exists.
    pub fn add(&self, private_key: &Path) {
        run_checked(self.ssh_add().arg(private_key));
    }

    /// What `ssh-add -l` prints: one `bits SHA256:… comment (TYPE)` line per identity, or
    /// `The agent has no identities.`.
    ///
    /// Limitation: `ssh-add -l` does not show the lifetime an identity was added with, so
    /// lifetimes cannot be checked through this listing.
    pub fn list(&self) -> String {
        // Exit status 1 only means "no identities"; anything else is a broken agent.
        let output = self
            .ssh_add()
            .arg("-l")
            .stdin(Stdio::null())
            .output()
            .expect("run ssh-add -l");
        if !matches!(output.status.code(), Some(0 | 1)) {
            panic!(
                "ssh-add -l failed with {}:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn ssh_add(&self) -> Command {
        let mut command = Command::new("ssh-add");
        command.env("SSH_AUTH_SOCK", &self.socket);
        command
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
