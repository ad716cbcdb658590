//! Tests for the KRL writer and parser, several against the real `ssh-keygen`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use base64::Engine;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use ssh_key::certificate::Builder as CertificateBuilder;
use ssh_key::{Algorithm, PrivateKey, PublicKey};

use super::*;

/// A fixed generation time: 2024-01-01T00:00:00Z.
const GENERATED_AT: u64 = 1_704_067_200;

/// Certificates in these tests are valid until 2100.
const VALID_BEFORE: u64 = 4_102_444_800;

const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

fn ed25519(rng: &mut StdRng) -> PrivateKey {
    PrivateKey::random(rng, Algorithm::Ed25519).unwrap()
}

/// Mostly consecutive serials, with short gaps and now and then a long jump.
fn dense_with_gaps(rng: &mut StdRng, count: usize) -> Vec<u64> {
    let mut serials = Vec::with_capacity(count);
    let mut serial = 1_000;
    while serials.len() < count {
        serials.push(serial);
        serial += match rng.gen_range(0..100) {
            0 => rng.gen_range(5_000..50_000),
            1..=24 => rng.gen_range(2..8),
            _ => 1,
        };
    }
    serials
}

/// Serials far apart.
fn sparse(rng: &mut StdRng, count: usize) -> Vec<u64> {
    let mut serial = 0u64;
    (0..count)
        .map(|_| {
            serial += rng.gen_range(200..2_000_000);
            serial
        })
        .collect()
}

/// Blocks of long runs, dense patches and sparse singles, separated by wide gaps.
fn mixed(rng: &mut StdRng, count: usize) -> Vec<u64> {
    let mut serials = Vec::with_capacity(count);
    let mut serial = 1u64;
    while serials.len() < count {
        match rng.gen_range(0..3) {
            0 => {
                let run_len = rng.gen_range(20..2_000);
                serials.extend(serial..serial + run_len);
                serial += run_len;
            }
            1 => {
                for _ in 0..rng.gen_range(30..800) {
                    serials.push(serial);
                    serial += rng.gen_range(1..=3);
                }
            }
            _ => {
                for _ in 0..rng.gen_range(3..40) {
                    serials.push(serial);
                    serial += rng.gen_range(100..50_000);
                }
            }
        }
        serial += rng.gen_range(1_000..200_000);
    }
    serials.truncate(count);
    serials
}

/// Serials separated by gaps drawn from a spread of sizes.
fn varied_gaps(rng: &mut StdRng, count: usize) -> Vec<u64> {
    let mut serial = 0u64;
    (0..count)
        .map(|_| {
            serial += [1, 1, 2, 9, 40, 70, 130, 300][rng.gen_range(0..8)];
            serial
        })
        .collect()
}

fn krl_with_serials(ca: &PublicKey, serials: &[u64]) -> Krl {
    let mut builder = KrlBuilder::new(1, GENERATED_AT);
    builder.revoke_serials(ca, serials.iter().copied()).unwrap();
    builder.build().unwrap()
}

/// A KRL using every kind of entry, with all three serial subsection types.
fn sample_krl(rng: &mut StdRng) -> (Krl, Vec<PrivateKey>) {
    let keys: Vec<PrivateKey> = (0..5).map(|_| ed25519(rng)).collect();
    let [ca, other_ca, explicit, hashed, _clean] = &keys[..] else {
        unreachable!()
    };

    let mut builder = KrlBuilder::new(42, GENERATED_AT);
    builder.comment("jit-ca sample").unwrap();
    builder
        .revoke_serials(ca.public_key(), dense_with_gaps(rng, 300))
        .unwrap()
        .revoke_serial_range(ca.public_key(), 90_000, 95_000)
        .unwrap()
        .revoke_serial(ca.public_key(), 1 << 40)
        .unwrap()
        .revoke_key_id(ca.public_key(), "alice@laptop")
        .unwrap()
        .revoke_key_id(other_ca.public_key(), "deploy-7")
        .unwrap()
        .revoke_key_id(CaScope::AnyCa, "everywhere")
        .unwrap()
        .revoke_serial(CaScope::AnyCa, 4_242)
        .unwrap()
        .revoke_key_explicit(explicit.public_key())
        .unwrap()
        .revoke_key_by_sha256(hashed.public_key())
        .revoke_sha1_hash([0x5a; 20]);
    (builder.build().unwrap(), keys)
}

fn ssh_keygen(args: &[&str], dir: &Path) -> Output {
    Command::new(SSH_KEYGEN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {SSH_KEYGEN}: {error}"))
}

/// Per file, whether `ssh-keygen -Q` reports it revoked.
fn ssh_keygen_verdicts(krl: &str, files: &[String], dir: &Path) -> BTreeMap<String, bool> {
    let mut args = vec!["-Q", "-f", krl];
    args.extend(files.iter().map(String::as_str));
    let output = ssh_keygen(&args, dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "ssh-keygen -Q failed: {stderr}"
    );

    stdout
        .lines()
        .map(|line| {
            let (file, _) = line.split_once(" (").unwrap();
            let revoked = match line.rsplit_once(": ").unwrap().1 {
                "REVOKED" => true,
                "ok" => false,
                other => panic!("unexpected ssh-keygen verdict {other:?}"),
            };
            (file.to_owned(), revoked)
        })
        .collect()
}

/// The serial ranges `ssh-keygen -Q -l` lists for a KRL.
fn ssh_keygen_listed_serials(krl: &str, dir: &Path) -> Vec<SerialRange> {
    let output = ssh_keygen(&["-Q", "-l", "-f", krl], dir);
    assert!(
        output.status.success(),
        "ssh-keygen -Q -l refused our KRL: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("serial: "))
        .map(|serials| match serials.split_once('-') {
            Some((first, last)) => SerialRange {
                first: first.parse().unwrap(),
                last: last.parse().unwrap(),
            },
            None => {
                let serial = serials.parse().unwrap();
                SerialRange {
                    first: serial,
                    last: serial,
                }
            }
        })
        .collect()
}

/// The size of the KRL `ssh-keygen -k` writes for these serials under `ca`.
fn ssh_keygen_krl_size(ca: &PublicKey, serials: &[u64], dir: &Path) -> usize {
    fs::write(dir.join("ca.pub"), ca.to_openssh().unwrap()).unwrap();

    let mut spec = String::new();
    let krl = krl_with_serials(ca, serials);
    for range in krl.authorities().flat_map(CaRevocations::serial_ranges) {
        if range.first == range.last {
            spec.push_str(&format!("serial: {}\n", range.first));
        } else {
            spec.push_str(&format!("serial: {}-{}\n", range.first, range.last));
        }
    }
    fs::write(dir.join("spec"), spec).unwrap();

    let output = ssh_keygen(
        &["-k", "-s", "ca.pub", "-z", "1", "-f", "theirs.krl", "spec"],
        dir,
    );
    assert!(
        output.status.success(),
        "ssh-keygen -k failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::metadata(dir.join("theirs.krl")).unwrap().len() as usize
}

#[test]
fn serial_sets_round_trip() {
    let mut rng = StdRng::seed_from_u64(1);
    let ca = ed25519(&mut rng);
    let sets: Vec<(&str, Vec<u64>)> = vec![
        ("empty", vec![]),
        ("single", vec![7]),
        (
            "runs",
            (1..=100).chain(200..=300).chain(302..=302).collect(),
        ),
        ("extremes", vec![1, 2, u64::MAX - 1, u64::MAX]),
        (
            "top of range",
            (u64::MAX - 20_000..=u64::MAX).step_by(3).collect(),
        ),
        ("alternating", (1..60_000).step_by(2).collect()),
        ("sparse", sparse(&mut rng, 1_000)),
        ("dense with gaps", dense_with_gaps(&mut rng, 10_000)),
        ("mixed 100k", mixed(&mut rng, 100_000)),
    ];

    for (name, serials) in sets {
        let krl = krl_with_serials(ca.public_key(), &serials);
        let encoded = encode(&krl);
        let parsed = parse(&encoded).unwrap_or_else(|error| panic!("{name}: {error}"));

        assert_eq!(parsed, krl, "{name}");
        assert_eq!(
            encode(&parsed),
            encoded,
            "{name}: encoding is not deterministic"
        );
        assert_eq!(parsed.is_empty(), serials.is_empty(), "{name}");

        // Every listed serial is revoked, and a sample of others is not.
        let revoked: BTreeSet<u64> = serials.iter().copied().collect();
        for &serial in &serials {
            assert!(
                parsed.is_certificate_revoked(ca.public_key(), serial, "x"),
                "{name}"
            );
        }
        for _ in 0..2_000 {
            let probe = match serials.choose(&mut rng) {
                Some(&serial) => serial.wrapping_add(rng.gen_range(0..3)),
                None => rng.gen(),
            };
            let expected = revoked.contains(&probe);
            let answer = parsed.is_certificate_revoked(ca.public_key(), probe, "x");
            assert_eq!(answer, expected, "{name}: serial {probe}");
        }
        assert!(!parsed.is_certificate_revoked(ca.public_key(), 0, "x"));
    }
}

#[test]
fn every_kind_of_entry_round_trips_and_answers() {
    let mut rng = StdRng::seed_from_u64(2);
    let (krl, keys) = sample_krl(&mut rng);
    let [ca, other_ca, explicit, hashed, clean] = &keys[..] else {
        unreachable!()
    };

    let parsed = parse(&encode(&krl)).unwrap();
    assert_eq!(parsed, krl);
    assert_eq!(parsed.version(), 42);
    assert_eq!(parsed.generated_at(), GENERATED_AT);
    assert_eq!(parsed.comment(), "jit-ca sample");
    assert!(!parsed.is_empty());

    // The any-CA scope sorts first; its entries apply under every CA.
    let scopes: Vec<&CaScope> = parsed.authorities().map(CaRevocations::scope).collect();
    assert_eq!(scopes.len(), 3);
    assert_eq!(scopes[0], &CaScope::AnyCa);
    assert!(parsed.is_certificate_revoked(other_ca.public_key(), 4_242, "x"));
    assert!(parsed.is_certificate_revoked(clean.public_key(), 1, "everywhere"));

    // Serials and key IDs only count under their own CA.
    assert!(parsed.is_certificate_revoked(ca.public_key(), 92_000, "x"));
    assert!(!parsed.is_certificate_revoked(other_ca.public_key(), 92_000, "x"));
    assert!(parsed.is_certificate_revoked(ca.public_key(), 1 << 40, "x"));
    assert!(parsed.is_certificate_revoked(ca.public_key(), 5, "alice@laptop"));
    assert!(!parsed.is_certificate_revoked(other_ca.public_key(), 5, "alice@laptop"));
    assert!(parsed.is_certificate_revoked(other_ca.public_key(), 5, "deploy-7"));

    // Plain keys: in full, by hash, or not at all.
    assert!(parsed.is_key_revoked(explicit.public_key()));
    assert!(parsed.is_key_revoked(hashed.public_key()));
    assert!(!parsed.is_key_revoked(clean.public_key()));
    assert_eq!(parsed.explicit_keys().count(), 1);
    assert_eq!(
        parsed.sha256_hashes().next(),
        Some(&sha256_fingerprint_blob(hashed.public_key()))
    );
    assert_eq!(parsed.sha1_hashes().count(), 1);
}

#[test]
fn builder_result_does_not_depend_on_call_order() {
    let mut rng = StdRng::seed_from_u64(3);
    let ca = ed25519(&mut rng);
    let mut serials = mixed(&mut rng, 5_000);

    let bulk = krl_with_serials(ca.public_key(), &serials);

    serials.shuffle(&mut rng);
    let mut one_by_one = KrlBuilder::new(1, GENERATED_AT);
    for &serial in &serials {
        one_by_one.revoke_serial(ca.public_key(), serial).unwrap();
    }
    // Overlapping ranges and repeats merge into the same runs.
    for &serial in serials.iter().take(500) {
        one_by_one
            .revoke_serial_range(ca.public_key(), serial, serial)
            .unwrap();
    }
    let one_by_one = one_by_one.build().unwrap();

    assert_eq!(one_by_one, bulk);
    assert_eq!(encode(&one_by_one), encode(&bulk));
}

#[test]
fn builder_refuses_what_openssh_refuses() {
    let mut rng = StdRng::seed_from_u64(4);
    let ca = ed25519(&mut rng);
    let mut builder = KrlBuilder::new(1, GENERATED_AT);

    assert!(matches!(
        builder.revoke_serial(ca.public_key(), 0),
        Err(KrlError::SerialZero)
    ));
    assert!(matches!(
        builder.revoke_serial_range(ca.public_key(), 0, 9),
        Err(KrlError::SerialZero)
    ));
    assert!(matches!(
        builder.revoke_serial_range(ca.public_key(), 9, 8),
        Err(KrlError::ReversedSerialRange { first: 9, last: 8 })
    ));
    assert!(matches!(
        builder.revoke_serials(ca.public_key(), [5, 0, 6]),
        Err(KrlError::SerialZero)
    ));
    assert!(matches!(
        builder.revoke_key_id(CaScope::AnyCa, "a\0b"),
        Err(KrlError::NulInString("key ID"))
    ));
    assert!(matches!(
        builder.comment("a\0b"),
        Err(KrlError::NulInString("comment"))
    ));

    // A refused call revokes nothing, not even the valid part of a batch.
    let krl = builder.build().unwrap();
    assert!(krl.is_empty());
    assert!(parse(&encode(&krl)).unwrap().is_empty());
}

/// Builders for hand-made KRLs.
mod craft {
    use super::super::wire::*;

    pub fn string(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    pub fn section(section_type: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![section_type];
        out.extend(string(body));
        out
    }

    pub fn header_with(format_version: u32, flags: u64, comment: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(format_version.to_be_bytes());
        out.extend(1u64.to_be_bytes());
        out.extend(super::GENERATED_AT.to_be_bytes());
        out.extend(flags.to_be_bytes());
        out.extend(string(b"ignored"));
        out.extend(string(comment));
        out
    }

    pub fn header() -> Vec<u8> {
        header_with(FORMAT_VERSION, 0, b"")
    }

    /// A KRL with one certificate section under `ca_blob` holding `subsections`.
    pub fn certificates(ca_blob: &[u8], subsections: &[u8]) -> Vec<u8> {
        let mut body = string(ca_blob);
        body.extend(string(b""));
        body.extend_from_slice(subsections);
        let mut out = header();
        out.extend(section(SECTION_CERTIFICATES, &body));
        out
    }

    pub fn bitmap(offset: u64, mpint: &[u8]) -> Vec<u8> {
        let mut body = offset.to_be_bytes().to_vec();
        body.extend(string(mpint));
        section(CERT_SERIAL_BITMAP, &body)
    }

    pub fn range(first: u64, last: u64) -> Vec<u8> {
        let mut body = first.to_be_bytes().to_vec();
        body.extend(last.to_be_bytes());
        section(CERT_SERIAL_RANGE, &body)
    }

    pub fn extension(section_type: u8, critical: u8) -> Vec<u8> {
        let mut body = string(b"future@example.org");
        body.push(critical);
        body.extend(string(b"contents"));
        section(section_type, &body)
    }

    pub fn with(mut krl: Vec<u8>, tail: &[u8]) -> Vec<u8> {
        krl.extend_from_slice(tail);
        krl
    }
}

/// Whether a parse error is the one a case expects.
type ErrorCheck = fn(&KrlError) -> bool;

#[test]
fn parser_refuses_malformed_krls() {
    use super::wire::*;
    use craft::*;

    let mut rng = StdRng::seed_from_u64(5);
    let ca = ed25519(&mut rng);
    let ca_blob = ca.public_key().to_bytes().unwrap();
    let user = ed25519(&mut rng);
    let certificate = {
        let mut builder =
            CertificateBuilder::new_with_random_nonce(&mut rng, user.public_key(), 0, VALID_BEFORE)
                .unwrap();
        builder.valid_principal("ops").unwrap();
        builder.sign(&ca).unwrap()
    };
    let valid = encode(&sample_krl(&mut rng).0);
    // A blob ssh-key decodes as an opaque key, but whose type is a certificate type.
    let cert_typed = [
        string(b"ssh-ed25519-cert-v01@openssh.com"),
        string(&[7; 32]),
    ]
    .concat();
    // Bits 16383 and 0: a zero pad byte, then 2048 magnitude bytes.
    let mut widest_bitmap = vec![0u8; 2049];
    widest_bitmap[1] = 0x80;
    widest_bitmap[2048] = 0x01;
    let mut too_wide = vec![0x01];
    too_wide.extend(vec![0; 2048]);
    let mut padded_too_wide = vec![0x00, 0x00];
    padded_too_wide.extend(vec![0xff; 2048]);

    let cases: Vec<(&str, Vec<u8>, ErrorCheck)> = vec![
        ("empty input", vec![], |e| matches!(e, KrlError::BadMagic)),
        (
            "wrong magic",
            with(b"SSHKRL\n\x01".to_vec(), &[0; 64]),
            |e| matches!(e, KrlError::BadMagic),
        ),
        ("format version 2", header_with(2, 0, b""), |e| {
            matches!(e, KrlError::UnsupportedFormatVersion(2))
        }),
        ("header flags", header_with(1, 1, b""), |e| {
            matches!(e, KrlError::UnknownFlags(1))
        }),
        ("comment with NUL", header_with(1, 0, b"a\0b"), |e| {
            matches!(e, KrlError::NulInString("comment"))
        }),
        ("comment not UTF-8", header_with(1, 0, b"\xff"), |e| {
            matches!(e, KrlError::NotUtf8("comment"))
        }),
        ("truncated header", header()[..30].to_vec(), |e| {
            matches!(e, KrlError::Truncated(_))
        }),
        (
            "one byte of trailing garbage",
            with(valid.clone(), &[1]),
            |e| matches!(e, KrlError::Truncated(_)),
        ),
        (
            "garbage section",
            with(valid.clone(), &section(9, b"junk")),
            |e| matches!(e, KrlError::UnknownSection(9)),
        ),
        (
            "forged section length",
            with(header(), &[5, 0xff, 0xff, 0xff, 0xff, 0]),
            |e| matches!(e, KrlError::Truncated(_)),
        ),
        (
            "signature section",
            with(header(), &section(SECTION_SIGNATURE, b"")),
            |e| matches!(e, KrlError::SignatureUnsupported),
        ),
        (
            "critical extension",
            with(header(), &extension(SECTION_EXTENSION, 1)),
            |e| matches!(e, KrlError::UnsupportedCriticalExtension(_)),
        ),
        (
            "extension flag 2",
            with(header(), &extension(SECTION_EXTENSION, 2)),
            |e| matches!(e, KrlError::InvalidBoolean(2)),
        ),
        (
            "critical cert extension",
            certificates(&ca_blob, &extension(CERT_EXTENSION, 1)),
            |e| matches!(e, KrlError::UnsupportedCriticalExtension(_)),
        ),
        (
            "unknown cert subsection",
            certificates(&ca_blob, &section(0x30, b"")),
            |e| matches!(e, KrlError::UnknownCertificateSubsection(0x30)),
        ),
        (
            "cert section without subsections",
            certificates(&ca_blob, b""),
            |e| matches!(e, KrlError::EmptySection(_)),
        ),
        (
            "CA key garbage",
            certificates(b"\0\0\0\x03abc", &range(1, 2)),
            |e| matches!(e, KrlError::InvalidKey { .. }),
        ),
        (
            "CA key is a certificate",
            certificates(&certificate.to_bytes().unwrap(), &range(1, 2)),
            |e| matches!(e, KrlError::InvalidKey { .. }),
        ),
        (
            "CA key with a wrong inner length",
            certificates(
                &[&ca_blob[..17], &[1], &ca_blob[18..]].concat(),
                &range(1, 2),
            ),
            |e| matches!(e, KrlError::NonCanonicalKey("CA key")),
        ),
        (
            "CA key of a certificate type",
            certificates(&cert_typed, &range(1, 2)),
            |e| matches!(e, KrlError::CertificateNotAllowed("CA key")),
        ),
        (
            "serial zero in a list",
            certificates(&ca_blob, &section(CERT_SERIAL_LIST, &[0; 8])),
            |e| matches!(e, KrlError::SerialZero),
        ),
        (
            "half a serial",
            certificates(&ca_blob, &section(CERT_SERIAL_LIST, &[0, 0, 0, 1])),
            |e| matches!(e, KrlError::Truncated(_)),
        ),
        (
            "range from zero",
            certificates(&ca_blob, &range(0, 5)),
            |e| matches!(e, KrlError::SerialZero),
        ),
        (
            "reversed range",
            certificates(&ca_blob, &range(6, 5)),
            |e| matches!(e, KrlError::ReversedSerialRange { first: 6, last: 5 }),
        ),
        (
            "range with leftover bytes",
            certificates(&ca_blob, &section(CERT_SERIAL_RANGE, &[1; 17])),
            |e| matches!(e, KrlError::TrailingData { len: 1, .. }),
        ),
        (
            "bitmap revoking serial zero",
            certificates(&ca_blob, &bitmap(0, &[0x01])),
            |e| matches!(e, KrlError::SerialZero),
        ),
        (
            "negative bitmap",
            certificates(&ca_blob, &bitmap(1, &[0x80])),
            |e| matches!(e, KrlError::BitmapNegative),
        ),
        (
            "bitmap of 16385 bits",
            certificates(&ca_blob, &bitmap(1, &too_wide)),
            |e| matches!(e, KrlError::BitmapTooLarge),
        ),
        (
            "bitmap padded past the limit",
            certificates(&ca_blob, &bitmap(1, &padded_too_wide)),
            |e| matches!(e, KrlError::BitmapTooLarge),
        ),
        (
            "bitmap past the last serial",
            certificates(&ca_blob, &bitmap(u64::MAX, &[0x03])),
            |e| matches!(e, KrlError::BitmapOverflow { .. }),
        ),
        (
            "bitmap with leftover bytes",
            certificates(
                &ca_blob,
                &section(CERT_SERIAL_BITMAP, &{
                    let mut body = 1u64.to_be_bytes().to_vec();
                    body.extend(string(&[1]));
                    body.push(0);
                    body
                }),
            ),
            |e| matches!(e, KrlError::TrailingData { .. }),
        ),
        (
            "empty key ID subsection",
            certificates(&ca_blob, &section(CERT_KEY_ID, b"")),
            |e| matches!(e, KrlError::EmptySection(_)),
        ),
        (
            "key ID with NUL",
            certificates(&ca_blob, &section(CERT_KEY_ID, &string(b"a\0"))),
            |e| matches!(e, KrlError::NulInString("key ID")),
        ),
        (
            "empty explicit key section",
            with(header(), &section(SECTION_EXPLICIT_KEY, b"")),
            |e| matches!(e, KrlError::EmptySection(_)),
        ),
        (
            "explicit certificate",
            with(
                header(),
                &section(
                    SECTION_EXPLICIT_KEY,
                    &string(&certificate.to_bytes().unwrap()),
                ),
            ),
            |e| matches!(e, KrlError::InvalidKey { .. }),
        ),
        (
            "explicit key of a certificate type",
            with(
                header(),
                &section(SECTION_EXPLICIT_KEY, &string(&cert_typed)),
            ),
            |e| matches!(e, KrlError::CertificateNotAllowed("revoked key")),
        ),
        (
            "short SHA-256 hash",
            with(
                header(),
                &section(SECTION_FINGERPRINT_SHA256, &string(&[1; 31])),
            ),
            |e| {
                matches!(
                    e,
                    KrlError::BadHashLength {
                        len: 31,
                        expected: 32,
                        ..
                    }
                )
            },
        ),
        (
            "long SHA-1 hash",
            with(
                header(),
                &section(SECTION_FINGERPRINT_SHA1, &string(&[1; 32])),
            ),
            |e| {
                matches!(
                    e,
                    KrlError::BadHashLength {
                        len: 32,
                        expected: 20,
                        ..
                    }
                )
            },
        ),
        (
            "SHA-256 hashes out of order",
            with(
                header(),
                &section(
                    SECTION_FINGERPRINT_SHA256,
                    &[string(&[2; 32]), string(&[1; 32])].concat(),
                ),
            ),
            |e| matches!(e, KrlError::HashesOutOfOrder(_)),
        ),
        (
            "empty SHA-256 section",
            with(header(), &section(SECTION_FINGERPRINT_SHA256, b"")),
            |e| matches!(e, KrlError::EmptySection(_)),
        ),
        ("input over the limit", vec![0; MAX_KRL_LEN + 1], |e| {
            matches!(e, KrlError::InputTooLong { .. })
        }),
    ];

    for (name, bytes, expected) in cases {
        match parse(&bytes) {
            Ok(_) => panic!("{name}: parsed"),
            Err(error) => assert!(expected(&error), "{name}: wrong error {error:?}"),
        }
    }

    // What the format allows parses: the widest bitmap OpenSSH takes, non-critical
    // extensions, and subsections that revoke nothing (leaving an empty KRL).
    let widest = certificates(&ca_blob, &bitmap(5, &widest_bitmap));
    let widest = parse(&widest).unwrap();
    assert!(widest.is_certificate_revoked(ca.public_key(), 5, "x"));
    assert!(widest.is_certificate_revoked(ca.public_key(), 5 + 16_383, "x"));
    assert!(!widest.is_certificate_revoked(ca.public_key(), 6, "x"));

    let skipped = with(header(), &extension(SECTION_EXTENSION, 0));
    let skipped = with(
        skipped,
        &certificates(&ca_blob, &extension(CERT_EXTENSION, 0))[header().len()..],
    );
    assert!(parse(&skipped).unwrap().is_empty());

    let nothing = [section(CERT_SERIAL_LIST, b""), bitmap(1, b"")].concat();
    assert!(parse(&certificates(&ca_blob, &nothing)).unwrap().is_empty());
}

#[test]
fn parser_survives_truncation_and_mutation() {
    let mut rng = StdRng::seed_from_u64(6);
    let valid = encode(&sample_krl(&mut rng).0);
    assert!(
        valid.len() < 2_000,
        "sample KRL grew to {} bytes",
        valid.len()
    );

    // Whatever parses must encode again into something that parses back the same.
    let check = |bytes: &[u8]| {
        if let Ok(krl) = parse(bytes) {
            assert_eq!(parse(&encode(&krl)).unwrap(), krl);
        }
    };

    for len in 0..valid.len() {
        check(&valid[..len]);
    }

    let mut mutated = valid.clone();
    for index in 0..valid.len() {
        for flip in [0x01, 0x80, 0xff] {
            mutated[index] ^= flip;
            check(&mutated);
            mutated[index] ^= flip;
        }
    }

    for _ in 0..2_000 {
        let keep = rng.gen_range(0..valid.len());
        let mut noisy = valid[..keep].to_vec();
        noisy.extend((0..rng.gen_range(0..64)).map(|_| rng.gen::<u8>()));
        check(&noisy);
    }
}

#[test]
fn sha256_fingerprint_is_the_hash_ssh_keygen_prints() {
    let mut rng = StdRng::seed_from_u64(7);
    let key = ed25519(&mut rng);
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("key.pub"),
        key.public_key().to_openssh().unwrap(),
    )
    .unwrap();

    let output = ssh_keygen(&["-l", "-E", "sha256", "-f", "key.pub"], dir.path());
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);

    let hash = sha256_fingerprint_blob(key.public_key());
    let ours = base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash);
    assert!(printed.contains(&format!("SHA256:{ours} ")), "{printed}");

    let blob = key.public_key().to_bytes().unwrap();
    assert_eq!(hash, <[u8; 32]>::from(Sha256::digest(blob)));
}

#[test]
fn ssh_keygen_agrees_on_certificates_and_keys() {
    let mut rng = StdRng::seed_from_u64(8);
    let main_ca = ed25519(&mut rng);
    let second_ca = ed25519(&mut rng);
    let revoked_ca = ed25519(&mut rng);
    let users: Vec<PrivateKey> = (0..4).map(|_| ed25519(&mut rng)).collect();

    let main_serials = dense_with_gaps(&mut rng, 400);
    let second_serials = sparse(&mut rng, 50);
    let revoked_ids = ["alice@laptop", "deploy-7"];

    let mut builder = KrlBuilder::new(3, GENERATED_AT);
    builder
        .revoke_serials(main_ca.public_key(), main_serials.iter().copied())
        .unwrap()
        .revoke_serials(second_ca.public_key(), second_serials.iter().copied())
        .unwrap()
        .revoke_key_id(main_ca.public_key(), revoked_ids[0])
        .unwrap()
        .revoke_key_id(main_ca.public_key(), revoked_ids[1])
        .unwrap()
        .revoke_key_id(CaScope::AnyCa, "everywhere")
        .unwrap()
        .revoke_serial(CaScope::AnyCa, 4_242)
        .unwrap()
        .revoke_key_explicit(users[0].public_key())
        .unwrap()
        .revoke_key_by_sha256(users[1].public_key())
        .revoke_key_explicit(revoked_ca.public_key())
        .unwrap();
    let krl = parse(&encode(&builder.build().unwrap())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("krl"), encode(&krl)).unwrap();

    let mut expected = BTreeMap::new();
    let cas = [
        &main_ca,
        &main_ca,
        &main_ca,
        &main_ca,
        &second_ca,
        &second_ca,
        &second_ca,
        &revoked_ca,
    ];
    let key_ids = ["alice@laptop", "deploy-7", "everywhere", "bob", ""];
    for n in 0..100 {
        let ca = *cas.choose(&mut rng).unwrap();
        // Mostly clean subjects, so the serial and key ID logic decides.
        let subject = &users[*[0, 1, 2, 2, 2, 3, 3, 3, 3, 3].choose(&mut rng).unwrap()];
        let listed = if std::ptr::eq(ca, &second_ca) {
            &second_serials
        } else {
            &main_serials
        };
        let serial = match rng.gen_range(0..8) {
            0 | 1 => *listed.choose(&mut rng).unwrap(),
            2 => listed.choose(&mut rng).unwrap() + 1,
            3 => 4_242,
            4 => 0,
            _ => rng.gen_range(1..100_000),
        };
        let key_id = if rng.gen_bool(0.3) {
            key_ids.choose(&mut rng).unwrap().to_string()
        } else {
            format!("user-{n}")
        };

        let mut certificate = CertificateBuilder::new_with_random_nonce(
            &mut rng,
            subject.public_key(),
            0,
            VALID_BEFORE,
        )
        .unwrap();
        certificate
            .serial(serial)
            .unwrap()
            .key_id(key_id)
            .unwrap()
            .valid_principal("ops")
            .unwrap()
            .comment(format!("cert-{n}"))
            .unwrap();
        let certificate = certificate.sign(ca).unwrap();

        let file = format!("cert-{n}.pub");
        fs::write(dir.path().join(&file), certificate.to_openssh().unwrap()).unwrap();
        expected.insert(file, krl.revokes_certificate(&certificate));
    }

    let plain_keys = users.iter().chain([&main_ca, &second_ca, &revoked_ca]);
    for (n, key) in plain_keys.enumerate() {
        let file = format!("key-{n}.pub");
        let mut public = key.public_key().clone();
        public.set_comment(format!("key-{n}"));
        fs::write(dir.path().join(&file), public.to_openssh().unwrap()).unwrap();
        expected.insert(file, krl.is_key_revoked(key.public_key()));
    }

    let files: Vec<String> = expected.keys().cloned().collect();
    let verdicts = ssh_keygen_verdicts("krl", &files, dir.path());
    assert_eq!(verdicts, expected);

    // Both verdicts must occur often enough for the comparison to mean something.
    let revoked = expected.values().filter(|&&revoked| revoked).count();
    let kept = expected.len() - revoked;
    eprintln!("ssh-keygen and the parser agree on {revoked} revoked and {kept} kept");
    assert!(
        revoked >= 25 && kept >= 25,
        "{revoked} revoked, {kept} kept"
    );
}

#[test]
fn ssh_keygen_lists_our_krls() {
    let mut rng = StdRng::seed_from_u64(9);
    let ca = ed25519(&mut rng);
    let dir = tempfile::tempdir().unwrap();

    // Dense alternation forces many bitmaps at OpenSSH's size limit.
    let sets = [
        mixed(&mut rng, 100_000),
        (1..200_000).step_by(2).collect(),
        dense_with_gaps(&mut rng, 10_000),
    ];
    for serials in sets {
        let krl = krl_with_serials(ca.public_key(), &serials);
        fs::write(dir.path().join("ours.krl"), encode(&krl)).unwrap();

        let listed = ssh_keygen_listed_serials("ours.krl", dir.path());
        let ours: Vec<SerialRange> = krl
            .authorities()
            .flat_map(CaRevocations::serial_ranges)
            .copied()
            .collect();
        assert_eq!(listed, ours);
    }

    // And a KRL with every kind of entry.
    fs::write(
        dir.path().join("sample.krl"),
        encode(&sample_krl(&mut rng).0),
    )
    .unwrap();
    let output = ssh_keygen(&["-Q", "-l", "-f", "sample.krl"], dir.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(listing.contains("# Comment: jit-ca sample"), "{listing}");
}

#[test]
fn no_larger_than_ssh_keygen() {
    let mut rng = StdRng::seed_from_u64(10);
    let ca = ed25519(&mut rng);
    let dir = tempfile::tempdir().unwrap();

    let evenly_spaced = |len: u64, gap: u64| -> Vec<u64> {
        let period = len + gap;
        (0..2_000u64)
            .flat_map(|n| n * period + 1..=n * period + len)
            .collect()
    };
    let sets = [
        ("10k dense with gaps", dense_with_gaps(&mut rng, 10_000)),
        ("10k sparse", sparse(&mut rng, 10_000)),
        ("100k mixed", mixed(&mut rng, 100_000)),
        ("10k varied gaps", varied_gaps(&mut rng, 10_000)),
        ("runs of 5 every 105", evenly_spaced(5, 100)),
        // ssh-keygen writes one bitmap of 208000 bits here, which it cannot load back.
        ("runs of 40 every 104", evenly_spaced(40, 64)),
    ];
    for (name, serials) in sets {
        let ours = encode(&krl_with_serials(ca.public_key(), &serials)).len();
        let theirs = ssh_keygen_krl_size(ca.public_key(), &serials, dir.path());
        let theirs_loads = ssh_keygen(&["-Q", "-l", "-f", "theirs.krl"], dir.path())
            .status
            .success();
        eprintln!(
            "{name}: ours {ours} bytes, ssh-keygen {theirs} bytes (loadable: {theirs_loads})"
        );

        if theirs_loads {
            assert!(ours <= theirs, "{name}: ours {ours} > ssh-keygen {theirs}");
        } else {
            // Splitting bitmaps at 16384 bits costs 18 bytes per 2048; allow that much.
            assert!(
                ours <= theirs + theirs / 100,
                "{name}: ours {ours}, ssh-keygen {theirs}"
            );
        }
    }
}

/// Timing only, never asserted: `cargo test --release --lib krl -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_a_million_serials() {
    let mut rng = StdRng::seed_from_u64(11);
    let ca = ed25519(&mut rng);
    let sets = [
        ("mixed", mixed(&mut rng, 1_000_000)),
        ("varied gaps", varied_gaps(&mut rng, 1_000_000)),
        ("sparse", sparse(&mut rng, 1_000_000)),
    ];

    for (name, serials) in sets {
        let started = Instant::now();
        let krl = krl_with_serials(ca.public_key(), &serials);
        let built = started.elapsed();

        let started = Instant::now();
        let encoded = encode(&krl);
        let encoded_in = started.elapsed();

        let started = Instant::now();
        let parsed = parse(&encoded).unwrap();
        let parsed_in = started.elapsed();
        assert_eq!(parsed, krl);

        let runs = krl
            .authorities()
            .map(|ca| ca.serial_ranges().len())
            .sum::<usize>();
        eprintln!(
            "1M serials, {name} ({runs} runs): build {built:?}, encode {encoded_in:?} \
             ({} bytes), parse {parsed_in:?}",
            encoded.len()
        );
    }
}
