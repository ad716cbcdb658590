//! Where the client finds its CA, its configuration file and its state directory.
//!
//! The only thing a user configures is the CA's URL; everything about the identity provider is
//! discovered from the CA. The URL comes from, in order: the `--server` flag, the `JIT_SERVER`
//! environment variable, and `server = "..."` in `$XDG_CONFIG_HOME/jit/config.toml`. A CA
//! whose HTTPS certificate comes from a private authority also needs that authority's
//! certificates: `JIT_CA_BUNDLE`, else `ca_bundle = "PATH"` in the same file.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use openidconnect::url::{Host, Url};
use serde::Deserialize;

/// Environment variable naming the CA when `--server` is not given.
pub const SERVER_ENV: &str = "JIT_SERVER";

/// Environment variable naming a PEM bundle of extra TLS roots for the CA's certificate.
pub const CA_BUNDLE_ENV: &str = "JIT_CA_BUNDLE";

/// The environment variables the client reads, captured once at start-up.
///
/// Commands receive this snapshot instead of reading the process environment themselves, so
/// tests can describe a machine (no display, no agent, another home) without touching globals.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$XDG_STATE_HOME`.
    pub xdg_state_home: Option<PathBuf>,
    /// `$JIT_SERVER`.
    pub jit_server: Option<String>,
    /// `$JIT_CA_BUNDLE`.
    pub jit_ca_bundle: Option<PathBuf>,
    /// `$BROWSER`: the command that opens a URL.
    pub browser: Option<String>,
    /// `$DISPLAY` (an X11 session).
    pub display: Option<String>,
    /// `$WAYLAND_DISPLAY` (a Wayland session).
    pub wayland_display: Option<String>,
    /// `$SSH_AUTH_SOCK` (a running ssh-agent).
    pub ssh_auth_sock: Option<PathBuf>,
}

impl Environment {
    /// Reads the variables from the process environment; empty values count as unset.
    pub fn from_process() -> Self {
        let text = |name: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .and_then(|value| value.into_string().ok())
        };
        let path = |name: &str| {
            std::env::var_os(name)
                .filter(|value: &OsString| !value.is_empty())
                .map(PathBuf::from)
        };

        Environment {
            home: path("HOME"),
            xdg_config_home: path("XDG_CONFIG_HOME"),
            xdg_state_home: path("XDG_STATE_HOME"),
            jit_server: text(SERVER_ENV),
            jit_ca_bundle: path(CA_BUNDLE_ENV),
            browser: text("BROWSER"),
            display: text("DISPLAY"),
            wayland_display: text("WAYLAND_DISPLAY"),
            ssh_auth_sock: path("SSH_AUTH_SOCK"),
        }
    }
}

/// Why the client could not tell which CA to use, or where to keep its files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither `$HOME` nor the matching absolute `$XDG_*` variable is set.
    #[error("cannot place the {what}: set HOME or {variable} to an absolute path")]
    NoBaseDirectory {
        /// What was being placed (`configuration file`, `state directory`).
        what: &'static str,
        /// The XDG variable that would have named it.
        variable: &'static str,
    },
    /// No source named a CA.
    #[error(
        "no CA server configured: pass --server URL, set {SERVER_ENV}, \
         or put `server = \"https://ca.example.com\"` in {}",
        config_file.display()
    )]
    NoServer {
        /// The configuration file that was consulted.
        config_file: PathBuf,
    },
    /// The configuration file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML of the expected shape.
    #[error("{}: {}", path.display(), message.trim())]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, which names the offending key and line.
        message: String,
    },
    /// The server URL cannot be used.
    #[error("server URL `{url}` (from {origin}) {problem}")]
    BadServerUrl {
        /// The URL as given.
        url: String,
        /// Where it came from (`--server`, `JIT_SERVER`, the file).
        origin: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The contents of `config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// The CA's base URL.
    server: Option<String>,
    /// PEM bundle of extra TLS roots; relative to the file's directory.
    ca_bundle: Option<PathBuf>,
}

/// Path of the configuration file: `$XDG_CONFIG_HOME/jit/config.toml`, falling back to
/// `~/.config/jit/config.toml`. A relative `$XDG_CONFIG_HOME` is ignored, as the XDG base
/// directory specification asks.
pub fn config_file_path(env: &Environment) -> Result<PathBuf, ConfigError> {
    let base = xdg_base(
        env.xdg_config_home.as_deref(),
        env.home.as_deref(),
        ".config",
        "configuration file",
        "XDG_CONFIG_HOME",
    )?;
    Ok(base.join("jit").join("config.toml"))
}

/// Path of the state directory: `$XDG_STATE_HOME/jit`, falling back to `~/.local/state/jit`.
pub fn state_dir_path(env: &Environment) -> Result<PathBuf, ConfigError> {
    let base = xdg_base(
        env.xdg_state_home.as_deref(),
        env.home.as_deref(),
        ".local/state",
        "state directory",
        "XDG_STATE_HOME",
    )?;
    Ok(base.join("jit"))
}

fn xdg_base(
    xdg: Option<&Path>,
    home: Option<&Path>,
    fallback: &str,
    what: &'static str,
    variable: &'static str,
) -> Result<PathBuf, ConfigError> {
    match xdg {
        Some(dir) if dir.is_absolute() => Ok(dir.to_path_buf()),
        _ => home
            .filter(|home| home.is_absolute())
            .map(|home| home.join(fallback))
            .ok_or(ConfigError::NoBaseDirectory { what, variable }),
    }
}

/// The base URL of a CA, checked to be usable for sending bearer tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl(Url);

impl ServerUrl {
    /// Parses and checks a CA URL.
    ///
    /// Refuses anything but `https://`, except plain `http://` to a loopback address (a CA on
    /// the same machine, as in tests): the ID token travels with every request and must not
    /// cross a network in clear. Also refuses URLs with credentials, a query or a fragment.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let refuse = |problem| ConfigError::BadServerUrl {
            url: text.to_owned(),
            origin: origin.to_owned(),
            problem,
        };

        let mut url = Url::parse(text.trim()).map_err(|_| refuse("is not a URL"))?;
        let loopback = match url.host() {
            Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(address)) => IpAddr::V4(address).is_loopback(),
            Some(Host::Ipv6(address)) => IpAddr::V6(address).is_loopback(),
            None => return Err(refuse("has no host")),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(refuse("must use https:// unless the CA is on this machine")),
            _ => return Err(refuse("must start with https://")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("must not carry a user name or password"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(refuse("must not have a query or fragment"));
        }

        // Endpoints are joined onto the base, which only keeps its last path segment when
        // the path ends in a slash.
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(ServerUrl(url))
    }

    /// The URL of an API path such as `v1/config` under this base.
    pub fn endpoint(&self, relative_path: &str) -> Url {
        let mut url = self.0.clone();
        let path = format!("{}{}", url.path(), relative_path.trim_start_matches('/'));
        url.set_path(&path);
        url
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0.as_str())
    }
}

/// Decides which CA to talk to: the flag, else `$JIT_SERVER`, else the configuration file.
///
/// The file is only read when neither of the first two is given, so a broken file does not
/// stand in the way of an explicit `--server`. Returns [`ConfigError::NoServer`] when no source
/// names a CA.
pub fn resolve_server(
    flag: Option<&str>,
    env: &Environment,
    config_file: &Path,
) -> Result<ServerUrl, ConfigError> {
    if let Some(url) = flag {
        return ServerUrl::parse(url, "--server");
    }

    if let Some(url) = env.jit_server.as_deref() {
        return ServerUrl::parse(url, SERVER_ENV);
    }

    let file_config = read_file_config(config_file)?;
    match file_config.server {
        Some(url) => ServerUrl::parse(&url, &config_file.display().to_string()),
        None => Err(ConfigError::NoServer {
            config_file: config_file.to_path_buf(),
        }),
    }
}

/// Decides which extra TLS roots to trust for the CA: `$JIT_CA_BUNDLE`, else `ca_bundle` in
/// the configuration file (resolved against its directory). None: only the built-in roots.
pub fn resolve_ca_bundle(
    env: &Environment,
    config_file: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = &env.jit_ca_bundle {
        return Ok(Some(path.clone()));
    }

    let bundle = read_file_config(config_file)?.ca_bundle;
    let base = config_file.parent().unwrap_or(Path::new("."));
    Ok(bundle.map(|path| base.join(path)))
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileConfig::default())
        }
        Err(source) => {
            return Err(ConfigError::ReadConfig {
                path: path.to_path_buf(),
                source,
            })
        }
    };

    toml::from_str(&text).map_err(|error| ConfigError::ParseConfig {
        path: path.to_path_buf(),
        message: error.message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with_home(home: &Path) -> Environment {
        Environment {
            home: Some(home.to_path_buf()),
            ..Environment::default()
        }
    }

    fn write_config(dir: &Path, server: &str) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, format!("server = \"{server}\"\n")).unwrap();
        path
    }

    #[test]
    fn flag_wins_over_environment_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = write_config(dir.path(), "https://file.example.com");
        let env = Environment {
            jit_server: Some("https://env.example.com".into()),
            ..env_with_home(dir.path())
        };

        let server = resolve_server(Some("https://flag.example.com"), &env, &config_file).unwrap();

        assert_eq!(server.to_string(), "https://flag.example.com/");
    }

    #[test]
    fn environment_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = write_config(dir.path(), "https://file.example.com");
        let env = Environment {
            jit_server: Some("https://env.example.com".into()),
            ..env_with_home(dir.path())
        };

        let server = resolve_server(None, &env, &config_file).unwrap();

        assert_eq!(server.to_string(), "https://env.example.com/");
    }

    #[test]
    fn file_is_used_when_nothing_else_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = write_config(dir.path(), "https://file.example.com/ca");

        let server = resolve_server(None, &env_with_home(dir.path()), &config_file).unwrap();

        assert_eq!(
            server.endpoint("v1/config").as_str(),
            "https://file.example.com/ca/v1/config"
        );
    }

    #[test]
    fn flag_skips_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("config.toml");
        std::fs::write(&config_file, "server = [").unwrap();

        let from_flag = resolve_server(
            Some("https://flag.example.com"),
            &env_with_home(dir.path()),
            &config_file,
        );
        let from_file = resolve_server(None, &env_with_home(dir.path()), &config_file);

        assert!(from_flag.is_ok());
        assert!(matches!(from_file, Err(ConfigError::ParseConfig { .. })));
    }

    #[test]
    fn missing_everywhere_says_how_to_set_it() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("absent.toml");

        let error = resolve_server(None, &env_with_home(dir.path()), &config_file).unwrap_err();

        let message = error.to_string();
        assert!(message.contains("--server"), "{message}");
        assert!(message.contains(SERVER_ENV), "{message}");
        assert!(message.contains("absent.toml"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("config.toml");
        std::fs::write(&config_file, "sever = \"https://typo.example.com\"\n").unwrap();

        let error = resolve_server(None, &env_with_home(dir.path()), &config_file).unwrap_err();

        assert!(error.to_string().contains("sever"), "{error}");
    }

    #[test]
    fn ca_bundle_comes_from_the_environment_else_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("config.toml");
        std::fs::write(&config_file, "ca_bundle = \"roots.pem\"\n").unwrap();
        let from_env = Environment {
            jit_ca_bundle: Some("/etc/jit/roots.pem".into()),
            ..env_with_home(dir.path())
        };

        let env_bundle = resolve_ca_bundle(&from_env, &config_file).unwrap();
        let file_bundle = resolve_ca_bundle(&env_with_home(dir.path()), &config_file).unwrap();
        let no_file = resolve_ca_bundle(&env_with_home(dir.path()), &dir.path().join("absent"));

        assert_eq!(env_bundle, Some(PathBuf::from("/etc/jit/roots.pem")));
        assert_eq!(file_bundle, Some(dir.path().join("roots.pem")));
        assert_eq!(no_file.unwrap(), None);
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(ServerUrl::parse("http://127.0.0.1:8443", "test").is_ok());
        assert!(ServerUrl::parse("http://localhost:8443", "test").is_ok());
        assert!(ServerUrl::parse("http://[::1]:8443", "test").is_ok());
        assert!(ServerUrl::parse("http://ca.example.com", "test").is_err());
        assert!(ServerUrl::parse("ftp://ca.example.com", "test").is_err());
        assert!(ServerUrl::parse("https://user:pw@ca.example.com", "test").is_err());
        assert!(ServerUrl::parse("https://ca.example.com/?x=1", "test").is_err());
        assert!(ServerUrl::parse("ca.example.com", "test").is_err());
    }

    #[test]
    fn xdg_directories_fall_back_to_home() {
        let env = Environment {
            home: Some("/home/ada".into()),
            ..Environment::default()
        };
        let with_xdg = Environment {
            xdg_config_home: Some("/cfg".into()),
            xdg_state_home: Some("/st".into()),
            ..env.clone()
        };
        let relative_xdg = Environment {
            xdg_state_home: Some("relative/state".into()),
            ..env.clone()
        };

        assert_eq!(
            config_file_path(&env).unwrap(),
            PathBuf::from("/home/ada/.config/jit/config.toml")
        );
        assert_eq!(
            state_dir_path(&env).unwrap(),
            PathBuf::from("/home/ada/.local/state/jit")
        );
        assert_eq!(
            config_file_path(&with_xdg).unwrap(),
            PathBuf::from("/cfg/jit/config.toml")
        );
        assert_eq!(state_dir_path(&with_xdg).unwrap(), PathBuf::from("/st/jit"));
        assert_eq!(
            state_dir_path(&relative_xdg).unwrap(),
            PathBuf::from("/home/ada/.local/state/jit")
        );
        assert!(state_dir_path(&Environment::default()).is_err());
    }
}
