//! The operator's policy files from arbitrary text: `Profiles::parse` and `Rules::parse` must
//! return an error or a policy, never panic, and accepted profiles must hold the promises the
//! loader makes about them.

#![no_main]

use jit_ca::policy::{Profiles, Rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // The first byte picks the loader, so the fast profile parser is not held back by the
    // much slower Cedar validator.
    let Some((&selector, rest)) = bytes.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if selector % 2 == 1 {
        let _ = Rules::parse(text, "fuzz.cedar");
        return;
    }

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
});
