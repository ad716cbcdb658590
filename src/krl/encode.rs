//! Writing a [`Krl`] in the `PROTOCOL.krl` binary format.

use super::segment::{plan, Segment};
use super::wire::{
    put_section, put_string, put_u64, CERT_KEY_ID, CERT_SERIAL_BITMAP, CERT_SERIAL_LIST,
    CERT_SERIAL_RANGE, FORMAT_VERSION, MAGIC, SECTION_CERTIFICATES, SECTION_EXPLICIT_KEY,
    SECTION_FINGERPRINT_SHA1, SECTION_FINGERPRINT_SHA256,
};
use super::{CaRevocations, Krl, SerialRange};

/// Encodes `krl` as the bytes of a KRL file for sshd's `RevokedKeys`.
///
/// The output is deterministic: equal KRLs give identical bytes. Revoked serials take the
/// cheapest mix of list, range and bitmap subsections (see the `segment` module), bitmaps
/// stay within OpenSSH's 16384-bit limit, and no signature section is written.
pub fn encode(krl: &Krl) -> Vec<u8> {
    let mut out = Vec::new();

    // PROTOCOL.krl section 1: magic, format version, KRL version, generation date, flags
    // (none defined), a reserved string (left empty) and the comment.
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    put_u64(&mut out, krl.version);
    put_u64(&mut out, krl.generated_at);
    put_u64(&mut out, 0);
    put_string(&mut out, &[]);
    put_string(&mut out, krl.comment.as_bytes());

    // PROTOCOL.krl section 2: one certificate section per CA scope, the CA key blob (empty
    // for any CA) and an empty reserved string before the subsections.
    for (ca_blob, revocations) in &krl.authorities {
        put_section(&mut out, SECTION_CERTIFICATES, |section| {
            put_string(section, ca_blob);
            put_string(section, &[]);
            put_certificate_subsections(section, revocations);
        });
    }

    // PROTOCOL.krl section 3: plain keys revoked in full, as key blobs.
    let explicit_keys = krl.explicit_keys.keys().map(Vec::as_slice);
    put_string_section(&mut out, SECTION_EXPLICIT_KEY, explicit_keys);

    // PROTOCOL.krl section 4: hashes of key blobs, in ascending numeric order, which is the
    // order of the sets holding them.
    let sha1 = krl.sha1_hashes.iter().map(|hash| hash.as_slice());
    put_string_section(&mut out, SECTION_FINGERPRINT_SHA1, sha1);
    let sha256 = krl.sha256_hashes.iter().map(|hash| hash.as_slice());
    put_string_section(&mut out, SECTION_FINGERPRINT_SHA256, sha256);

    out
}

/// Serial subsections as planned, then one key ID subsection (PROTOCOL.krl section 2.4).
fn put_certificate_subsections(section: &mut Vec<u8>, revocations: &CaRevocations) {
    put_serial_subsections(section, &revocations.serials);

    let key_ids = revocations.key_ids.iter().map(String::as_bytes);
    put_string_section(section, CERT_KEY_ID, key_ids);
}

/// The serial subsections for sorted, disjoint, non-adjacent `runs`.
pub(super) fn put_serial_subsections(section: &mut Vec<u8>, runs: &[SerialRange]) {
    for segment in plan(runs) {
        match segment {
            // PROTOCOL.krl section 2.1: each revoked serial as a uint64.
            Segment::List(covered) => put_section(section, CERT_SERIAL_LIST, |body| {
                for run in runs.get(covered).unwrap_or_default() {
                    for serial in run.first..=run.last {
                        put_u64(body, serial);
                    }
                }
            }),

            // PROTOCOL.krl section 2.2: serial_min then serial_max, both revoked.
            Segment::Range(covered) => put_section(section, CERT_SERIAL_RANGE, |body| {
                if let Some(run) = runs.get(covered) {
                    put_u64(body, run.first);
                    put_u64(body, run.last);
                }
            }),

            // PROTOCOL.krl section 2.3: serial_offset, then an mpint whose bit N revokes
            // serial_offset + N.
            Segment::Bitmap(covered) => put_section(section, CERT_SERIAL_BITMAP, |body| {
                let covered = runs.get(covered).unwrap_or_default();
                let offset = covered.first().map_or(0, |run| run.first);
                put_u64(body, offset);
                put_string(body, &bitmap_mpint(offset, covered));
            }),
        }
    }
}

/// The minimal positive `mpint` with bit `serial - offset` set for every serial in `runs`.
fn bitmap_mpint(offset: u64, runs: &[SerialRange]) -> Vec<u8> {
    let span = runs.last().map_or(0, |run| run.last - offset + 1);

    // span / 8 + 1 bytes: room for the top bit, plus a zero pad byte exactly when the top
    // bit is a byte's high bit (mpints are signed).
    let len = usize::try_from(span / 8 + 1).unwrap_or(0);
    let mut magnitude = vec![0u8; len];
    for run in runs {
        for bit in (run.first - offset)..=(run.last - offset) {
            let from_end = usize::try_from(bit / 8).unwrap_or(usize::MAX);
            let byte = len
                .checked_sub(from_end)
                .and_then(|index| index.checked_sub(1))
                .and_then(|index| magnitude.get_mut(index));
            if let Some(byte) = byte {
                *byte |= 1 << (bit % 8);
            }
        }
    }
    magnitude
}

/// A section of `string` entries, written only when there is at least one, as the format
/// requires of key ID, explicit key and hash sections.
fn put_string_section<'a>(
    out: &mut Vec<u8>,
    section_type: u8,
    entries: impl ExactSizeIterator<Item = &'a [u8]>,
) {
    if entries.len() == 0 {
        return;
    }

    put_section(out, section_type, |body| {
        for entry in entries {
            put_string(body, entry);
        }
    });
}
