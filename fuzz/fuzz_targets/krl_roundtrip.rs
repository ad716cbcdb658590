//! Arbitrary revocations through `KrlBuilder`, `encode` and `parse`: the parsed KRL equals the
//! built one, and revokes exactly the serials and key IDs a plain model of the calls says, at
//! and around every range boundary.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use jit_ca::krl::{encode, parse, CaScope, KrlBuilder};
use libfuzzer_sys::fuzz_target;
use ssh_key::public::{Ed25519PublicKey, KeyData};

/// One builder call; `ca` picks one of a few scopes so calls share them.
#[derive(Arbitrary, Debug)]
enum Call {
    Serial {
        ca: u8,
        serial: u64,
    },
    Range {
        ca: u8,
        first: u64,
        last: u64,
    },
    Serials {
        ca: u8,
        serials: Vec<u64>,
    },
    /// Serials near a base, so bitmaps and short ranges get built, not only lists.
    Dense {
        ca: u8,
        base: u64,
        offsets: Vec<u8>,
    },
    KeyId {
        ca: u8,
        key_id: String,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    version: u64,
    generated_at: u64,
    calls: Vec<Call>,
    probes: Vec<u64>,
}

/// Scope 0 is "any CA"; the others are distinct Ed25519 keys.
fn scope(ca: u8) -> CaScope {
    match ca % 4 {
        0 => CaScope::AnyCa,
        index => CaScope::Key(KeyData::Ed25519(Ed25519PublicKey([index; 32]))),
    }
}

/// What the calls revoked, per scope: inclusive serial ranges and key IDs.
#[derive(Default)]
struct Model {
    ranges: BTreeMap<CaScope, Vec<(u64, u64)>>,
    key_ids: BTreeMap<CaScope, BTreeSet<String>>,
}

impl Model {
    fn revokes(&self, scope: &CaScope, serial: u64) -> bool {
        self.ranges.get(scope).is_some_and(|ranges| {
            ranges
                .iter()
                .any(|&(first, last)| first <= serial && serial <= last)
        })
    }
}

fn apply(builder: &mut KrlBuilder, model: &mut Model, call: Call) {
    match call {
        Call::Serial { ca, serial } => {
            if builder.revoke_serial(scope(ca), serial).is_ok() {
                model
                    .ranges
                    .entry(scope(ca))
                    .or_default()
                    .push((serial, serial));
            }
        }
        Call::Range { ca, first, last } => {
            if builder.revoke_serial_range(scope(ca), first, last).is_ok() {
                model
                    .ranges
                    .entry(scope(ca))
                    .or_default()
                    .push((first, last));
            }
        }
        Call::Serials { ca, serials } => {
            if builder.revoke_serials(scope(ca), serials.clone()).is_ok() {
                let ranges = model.ranges.entry(scope(ca)).or_default();
                ranges.extend(serials.iter().map(|&serial| (serial, serial)));
            }
        }
        Call::Dense { ca, base, offsets } => {
            let serials: Vec<u64> = offsets
                .iter()
                .map(|&offset| base.saturating_add(u64::from(offset) * 3))
                .collect();
            apply(builder, model, Call::Serials { ca, serials });
        }
        Call::KeyId { ca, key_id } => {
            if builder.revoke_key_id(scope(ca), key_id.clone()).is_ok() {
                model.key_ids.entry(scope(ca)).or_default().insert(key_id);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let mut builder = KrlBuilder::new(input.version, input.generated_at);
    let mut model = Model::default();
    for call in input.calls {
        apply(&mut builder, &mut model, call);
    }
    let Ok(built) = builder.build() else {
        return;
    };

    let parsed = match parse(&encode(&built)) {
        Ok(parsed) => parsed,
        Err(error) => panic!("a built KRL does not parse: {error}"),
    };
    assert_eq!(parsed, built);
    assert_eq!(parsed.version(), input.version);

    // Every boundary of every range, its neighbours, and the fuzzer's own probes.
    let mut probes: BTreeSet<u64> = input.probes.into_iter().collect();
    for &(first, last) in model.ranges.values().flatten() {
        probes.extend([first.saturating_sub(1), first, last, last.saturating_add(1)]);
    }
    for ca in 0..4 {
        let scope = scope(ca);
        let authority = parsed
            .authorities()
            .find(|authority| *authority.scope() == scope);
        for &serial in &probes {
            let revoked = authority.is_some_and(|authority| authority.is_serial_revoked(serial));
            assert_eq!(
                revoked,
                model.revokes(&scope, serial),
                "serial {serial} under {scope:?}"
            );
        }
        let expected_ids = model.key_ids.get(&scope).cloned().unwrap_or_default();
        let parsed_ids: BTreeSet<String> = authority
            .map(|authority| authority.key_ids().map(str::to_owned).collect())
            .unwrap_or_default();
        assert_eq!(parsed_ids, expected_ids, "key IDs under {scope:?}");
    }
});
