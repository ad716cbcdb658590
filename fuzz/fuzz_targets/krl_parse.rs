//! `krl::parse` on arbitrary bytes: it must return, never panic, and whatever it accepts must
//! survive `encode` then `parse` unchanged, with `encode` giving the same bytes again.

#![no_main]

use jit_ca::krl::{encode, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(krl) = parse(bytes) else {
        return;
    };

    let encoded = encode(&krl);
    let reparsed = match parse(&encoded) {
        Ok(reparsed) => reparsed,
        Err(error) => panic!("the encoding of a parsed KRL does not parse: {error}"),
    };
    assert_eq!(reparsed, krl, "encode then parse changed the KRL");
    assert_eq!(encode(&reparsed), encoded, "the encoding is not canonical");
});
