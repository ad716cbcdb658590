//! The operator's files from arbitrary text: `Profiles::parse`, `Rules::parse` and
//! `Config::parse` must return an error or a value, never panic, and what they accept must hold
//! the promises the loaders make about it.

#![no_main]

use std::path::Path;

use jit_ca::config::Config;
use jit_ca::policy::{Profiles, Rules};
use libfuzzer_sys::fuzz_target;

/// Where the fuzzed configuration pretends to live; relative paths resolve under it.
const CONFIG_DIR: &str = "/etc/jit-ca";

fuzz_target!(|bytes: &[u8]| {
    // The first byte picks the loader (0 profiles, 1 Cedar, 2 the CA's configuration, modulo
    // 3), so the fast parsers are not held back by the much slower Cedar validator.
    let Some((&selector, rest)) = bytes.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match selector % 3 {
        1 => {
            let _ = Rules::parse(text, "fuzz.cedar");
        }
        2 => check_config(text),
        _ => check_profiles(text),
    }
});

fn check_config(text: &str) {
    let Ok(config) = Config::parse(text, &Path::new(CONFIG_DIR).join("jit-ca.toml")) else {
        return;
    };
    let http = &config.http;
    assert!(
        http.max_body_bytes > 0 && http.max_connections > 0,
        "{http:?}"
    );
    assert!(http.max_concurrent_requests > 0 && http.header_read_timeout_secs > 0);
    assert!(
        config.store.url.starts_with("sqlite://"),
        "{}",
        config.store.url
    );
    for path in [
        &config.ca.key_file,
        &config.policy.profiles,
        &config.policy.cedar,
    ] {
        assert!(path.is_absolute(), "{path:?} was not resolved");
    }
}

fn check_profiles(text: &str) {
    let Ok(profiles) = Profiles::parse(text, "fuzz.toml") else {
        return;
    };
    for profile in profiles.profiles.values() {
        assert!(!profile.unix_users.is_empty(), "{profile:?}");
        assert!(
            profile.default_duration <= profile.max_duration,
            "{profile:?}"
        );
        for unix_user in &profile.unix_users {
            assert!(
                jit_proto::validate_unix_user(unix_user).is_ok(),
                "{unix_user:?}"
            );
        }
        for host in &profile.hosts {
            assert!(profiles.hosts.contains_key(host), "{host:?}");
        }
        for group in &profile.host_groups {
            assert!(profiles.groups.contains(group), "{group:?}");
        }
    }
}
