//! Reading a KRL file strictly, in bounded memory.

use ssh_key::PublicKey;

use super::builder::{KrlBuilder, PendingAuthority};
use super::wire::{
    WireReader, CERT_EXTENSION, CERT_KEY_ID, CERT_SERIAL_BITMAP, CERT_SERIAL_LIST,
    CERT_SERIAL_RANGE, FORMAT_VERSION, MAGIC, MAX_BITMAP_BITS, SECTION_CERTIFICATES,
    SECTION_EXPLICIT_KEY, SECTION_EXTENSION, SECTION_FINGERPRINT_SHA1, SECTION_FINGERPRINT_SHA256,
    SECTION_SIGNATURE,
};
use super::{CaScope, Krl, KrlError, SerialRange, MAX_KRL_LEN, MAX_SERIAL_RUNS};

/// Parses a KRL file.
///
/// Refuses, with the reason: input over [`MAX_KRL_LEN`] bytes, a wrong magic or format
/// version, header flags, unknown section or subsection types, signature sections, unknown
/// critical extensions (non-critical ones are skipped, as the format allows), serial zero,
/// reversed ranges, bitmaps OpenSSH would refuse, hashes of the wrong length or out of order,
/// certificates where plain keys belong, NUL bytes or invalid UTF-8 in text, required
/// entries missing, leftover bytes inside any section and anything after the last section.
/// Never panics; memory stays proportional to the input and within [`MAX_SERIAL_RUNS`] runs.
pub fn parse(bytes: &[u8]) -> Result<Krl, KrlError> {
    if bytes.len() > MAX_KRL_LEN {
        return Err(KrlError::InputTooLong {
            len: bytes.len(),
            limit: MAX_KRL_LEN,
        });
    }

    // PROTOCOL.krl section 1: the magic, then format version 1.
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(KrlError::BadMagic)?;
    let mut reader = WireReader::new(body);
    let format_version = reader.u32("format version")?;
    if format_version != FORMAT_VERSION {
        return Err(KrlError::UnsupportedFormatVersion(format_version));
    }

    // PROTOCOL.krl section 1: KRL version, generation date and flags, none of which are
    // defined; the reserved string's contents are to be ignored.
    let version = reader.u64("KRL version")?;
    let generated_at = reader.u64("generation date")?;
    let flags = reader.u64("header flags")?;
    if flags != 0 {
        return Err(KrlError::UnknownFlags(flags));
    }
    reader.string("reserved header field")?;
    let comment = text(reader.string("comment")?, "comment")?;

    let mut builder = KrlBuilder::new(version, generated_at);
    builder.set_comment(comment);
    let mut runs_left = MAX_SERIAL_RUNS;

    // PROTOCOL.krl section 1: sections follow until the end, each a type byte and a string.
    while !reader.is_empty() {
        let section_type = reader.u8("section type")?;

        // PROTOCOL.krl section 6: a signature section is laid out differently (two strings);
        // it is refused before its body is read.
        if section_type == SECTION_SIGNATURE {
            return Err(KrlError::SignatureUnsupported);
        }

        let section = WireReader::new(reader.string("section")?);
        match section_type {
            SECTION_CERTIFICATES => parse_certificates(section, &mut builder, &mut runs_left)?,
            SECTION_EXPLICIT_KEY => parse_explicit_keys(section, &mut builder)?,
            SECTION_FINGERPRINT_SHA1 => {
                parse_hashes(section, "SHA-1", |hash| {
                    builder.revoke_sha1_hash(hash);
                })?;
            }
            SECTION_FINGERPRINT_SHA256 => {
                parse_hashes(section, "SHA-256", |hash| {
                    builder.revoke_sha256_hash(hash);
                })?;
            }
            SECTION_EXTENSION => skip_extension(section, "extension section")?,
            unknown => return Err(KrlError::UnknownSection(unknown)),
        }
    }

    builder.build()
}

/// Feeds one subsection's serials into a CA scope: joins pieces that touch into one run and
/// counts each run against a KRL-wide budget, so bitmaps cannot inflate memory without bound.
struct RunSink<'a> {
    authority: &'a mut PendingAuthority,
    runs_left: &'a mut usize,
    open: Option<SerialRange>,
}

impl<'a> RunSink<'a> {
    fn new(authority: &'a mut PendingAuthority, runs_left: &'a mut usize) -> Self {
        Self {
            authority,
            runs_left,
            open: None,
        }
    }

    /// Adds `first..=last`, joining it to the open run when it starts right after it.
    fn add(&mut self, first: u64, last: u64) -> Result<(), KrlError> {
        if let Some(open) = &mut self.open {
            if open.last.checked_add(1) == Some(first) {
                open.last = last;
                return Ok(());
            }
        }

        match self.open.replace(SerialRange { first, last }) {
            Some(closed) => self.revoke(closed),
            None => Ok(()),
        }
    }

    fn finish(mut self) -> Result<(), KrlError> {
        match self.open.take() {
            Some(closed) => self.revoke(closed),
            None => Ok(()),
        }
    }

    fn revoke(&mut self, run: SerialRange) -> Result<(), KrlError> {
        *self.runs_left = self
            .runs_left
            .checked_sub(1)
            .ok_or(KrlError::TooManySerialRuns {
                limit: MAX_SERIAL_RUNS,
            })?;
        self.authority.push_range(run.first, run.last)
    }
}

/// PROTOCOL.krl section 2: the CA key (empty for any CA), a reserved string to ignore, then
/// one or more subsections.
fn parse_certificates(
    mut section: WireReader<'_>,
    builder: &mut KrlBuilder,
    runs_left: &mut usize,
) -> Result<(), KrlError> {
    let ca_blob = section.string("certificate section CA key")?;
    section.string("certificate section reserved field")?;
    let scope = match ca_blob {
        [] => CaScope::AnyCa,
        blob => CaScope::Key(decode_key(blob, "CA key")?.key_data().clone()),
    };
    if section.is_empty() {
        return Err(KrlError::EmptySection("certificate section"));
    }

    let authority = builder.authority(scope)?;
    while !section.is_empty() {
        let subsection_type = section.u8("certificate subsection type")?;
        let subsection = WireReader::new(section.string("certificate subsection")?);
        match subsection_type {
            CERT_SERIAL_LIST => {
                parse_serial_list(subsection, RunSink::new(authority, runs_left))?;
            }
            CERT_SERIAL_RANGE => {
                parse_serial_range(subsection, RunSink::new(authority, runs_left))?;
            }
            CERT_SERIAL_BITMAP => {
                parse_serial_bitmap(subsection, RunSink::new(authority, runs_left))?;
            }
            CERT_KEY_ID => {
                each_string(subsection, "key ID subsection", |key_id| {
                    authority.insert_key_id(text(key_id, "key ID")?);
                    Ok(())
                })?;
            }
            CERT_EXTENSION => skip_extension(subsection, "certificate extension subsection")?,
            unknown => return Err(KrlError::UnknownCertificateSubsection(unknown)),
        }
    }
    Ok(())
}

/// PROTOCOL.krl section 2.1: `uint64` serials, each revoked.
fn parse_serial_list(
    mut subsection: WireReader<'_>,
    mut sink: RunSink<'_>,
) -> Result<(), KrlError> {
    while !subsection.is_empty() {
        let serial = subsection.u64("serial list entry")?;
        sink.add(serial, serial)?;
    }
    sink.finish()
}

/// PROTOCOL.krl section 2.2: `serial_min` and `serial_max`, every serial between revoked.
fn parse_serial_range(
    mut subsection: WireReader<'_>,
    mut sink: RunSink<'_>,
) -> Result<(), KrlError> {
    let first = subsection.u64("serial range minimum")?;
    let last = subsection.u64("serial range maximum")?;
    subsection.finish("serial range subsection")?;

    sink.add(first, last)?;
    sink.finish()
}

/// PROTOCOL.krl section 2.3: `serial_offset`, then an `mpint` whose bit N revokes
/// `serial_offset + N`.
fn parse_serial_bitmap(
    mut subsection: WireReader<'_>,
    mut sink: RunSink<'_>,
) -> Result<(), KrlError> {
    let offset = subsection.u64("serial bitmap offset")?;
    let mpint = subsection.string("serial bitmap")?;
    subsection.finish("serial bitmap subsection")?;

    // An mpint is two's complement, so a leading byte with its high bit set is negative.
    if mpint.first().is_some_and(|byte| byte & 0x80 != 0) {
        return Err(KrlError::BitmapNegative);
    }

    // OpenSSH takes at most 16384 bits: 2048 bytes, plus one zero pad byte.
    let max_bytes = usize::try_from(MAX_BITMAP_BITS / 8).unwrap_or(usize::MAX);
    let too_large =
        mpint.len() > max_bytes + 1 || (mpint.len() == max_bytes + 1 && mpint.first() != Some(&0));
    if too_large {
        return Err(KrlError::BitmapTooLarge);
    }

    let leading_zeros = mpint.iter().take_while(|&&byte| byte == 0).count();
    let magnitude = mpint.get(leading_zeros..).unwrap_or_default();
    let Some(&top_byte) = magnitude.first() else {
        // A zero bitmap revokes nothing.
        return Ok(());
    };

    // Every bit position must name a serial that fits in 64 bits.
    let bit_len = 8 * (magnitude.len() as u64) - u64::from(top_byte.leading_zeros());
    offset
        .checked_add(bit_len - 1)
        .ok_or(KrlError::BitmapOverflow { offset })?;

    for (byte_base, &byte) in (0u64..).step_by(8).zip(magnitude.iter().rev()) {
        let mut rest = byte;
        while rest != 0 {
            // Lowest run of set bits in this byte, then clear it.
            let start = rest.trailing_zeros();
            let ones = (rest >> start).trailing_ones();
            let first = offset + byte_base + u64::from(start);
            sink.add(first, first + u64::from(ones - 1))?;

            rest = rest
                .checked_shr(start + ones)
                .map_or(0, |higher| higher << (start + ones));
        }
    }
    sink.finish()
}

/// PROTOCOL.krl section 3: key blobs of plain keys, at least one.
fn parse_explicit_keys(section: WireReader<'_>, builder: &mut KrlBuilder) -> Result<(), KrlError> {
    each_string(section, "explicit key section", |blob| {
        builder.revoke_key_explicit(&decode_key(blob, "revoked key")?)?;
        Ok(())
    })
}

/// PROTOCOL.krl section 4: hashes of key blobs, at least one, in ascending numeric order.
fn parse_hashes<const LEN: usize>(
    section: WireReader<'_>,
    hash: &'static str,
    mut revoke: impl FnMut([u8; LEN]),
) -> Result<(), KrlError> {
    let mut previous: Option<[u8; LEN]> = None;
    each_string(section, "fingerprint section", |entry| {
        let digest = <[u8; LEN]>::try_from(entry).map_err(|_| KrlError::BadHashLength {
            hash,
            len: entry.len(),
            expected: LEN,
        })?;

        // Equal-length big-endian numbers order as their bytes do.
        if previous.is_some_and(|before| before > digest) {
            return Err(KrlError::HashesOutOfOrder(hash));
        }
        previous = Some(digest);

        revoke(digest);
        Ok(())
    })
}

/// PROTOCOL.krl sections 2.5 and 5: an extension's name, whether it is critical, and its
/// contents. None are implemented: critical ones fail the parse, the others are skipped.
fn skip_extension(mut section: WireReader<'_>, what: &'static str) -> Result<(), KrlError> {
    let name = section.string(what)?;
    let critical = section.boolean(what)?;
    section.string(what)?;
    section.finish(what)?;

    if critical {
        let name = String::from_utf8_lossy(name).into_owned();
        return Err(KrlError::UnsupportedCriticalExtension(name));
    }
    Ok(())
}

/// Calls `entry` for each `string` of a section that must hold at least one.
fn each_string<'a>(
    mut section: WireReader<'a>,
    what: &'static str,
    mut entry: impl FnMut(&'a [u8]) -> Result<(), KrlError>,
) -> Result<(), KrlError> {
    if section.is_empty() {
        return Err(KrlError::EmptySection(what));
    }

    while !section.is_empty() {
        entry(section.string(what)?)?;
    }
    Ok(())
}

/// A key blob that must decode completely; the builder then refuses certificate types.
fn decode_key(blob: &[u8], what: &'static str) -> Result<PublicKey, KrlError> {
    let invalid = |source| KrlError::InvalidKey { what, source };
    let key = PublicKey::from_bytes(blob).map_err(invalid)?;

    // ssh-key tolerates some malformed inner lengths that OpenSSH refuses; only a blob that
    // encodes back to itself is taken.
    if key.to_bytes().map_err(invalid)? != blob {
        return Err(KrlError::NonCanonicalKey(what));
    }
    Ok(key)
}

/// A text field: OpenSSH reads these as C strings, refusing NUL bytes; this crate also
/// requires UTF-8.
fn text(bytes: &[u8], what: &'static str) -> Result<String, KrlError> {
    if bytes.contains(&0) {
        return Err(KrlError::NulInString(what));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| KrlError::NotUtf8(what))
}
