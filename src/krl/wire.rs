//! Constants and byte-level helpers shared by the KRL writer and parser.
//!
//! `PROTOCOL.krl` builds everything from SSH wire types: big-endian `uint32`/`uint64`,
//! `string` as a `uint32` length then that many bytes, `byte`, `boolean` and `mpint`.

use super::KrlError;

/// `PROTOCOL.krl` section 1: every KRL opens with these eight bytes, "SSHKRL\n\0".
pub(super) const MAGIC: &[u8; 8] = b"SSHKRL\n\0";

/// `PROTOCOL.krl` section 1: the only format version defined.
pub(super) const FORMAT_VERSION: u32 = 1;

// `PROTOCOL.krl` section 1: top-level section types.
pub(super) const SECTION_CERTIFICATES: u8 = 1;
pub(super) const SECTION_EXPLICIT_KEY: u8 = 2;
pub(super) const SECTION_FINGERPRINT_SHA1: u8 = 3;
pub(super) const SECTION_SIGNATURE: u8 = 4;
pub(super) const SECTION_FINGERPRINT_SHA256: u8 = 5;
pub(super) const SECTION_EXTENSION: u8 = 255;

// `PROTOCOL.krl` section 2: subsection types inside a certificate section.
pub(super) const CERT_SERIAL_LIST: u8 = 0x20;
pub(super) const CERT_SERIAL_RANGE: u8 = 0x21;
pub(super) const CERT_SERIAL_BITMAP: u8 = 0x22;
pub(super) const CERT_KEY_ID: u8 = 0x23;
pub(super) const CERT_EXTENSION: u8 = 0x39;

/// OpenSSH refuses any mpint above 16384 bits, so one bitmap covers at most this many serials.
pub(super) const MAX_BITMAP_BITS: u64 = 16384;

/// Suffix of OpenSSH certificate key types (`PROTOCOL.certkeys`).
pub(super) const CERT_KEY_TYPE_SUFFIX: &str = "-cert-v01@openssh.com";

/// Appends a big-endian `uint64`.
pub(super) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Appends a `string`.
pub(super) fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&wire_len(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a section: its type byte, then what `body` writes as a `string`.
pub(super) fn put_section(out: &mut Vec<u8>, section_type: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(section_type);

    // Write the body in place and patch its length in afterwards, saving a copy.
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);

    let body_len = out.len() - length_at - 4;
    if let Some(slot) = out.get_mut(length_at..length_at + 4) {
        slot.copy_from_slice(&wire_len(body_len).to_be_bytes());
    }
}

/// A length as a `uint32`.
///
/// The limits on a [`super::Krl`] keep every string and section far below 4 GiB. Were that
/// ever broken, `u32::MAX` makes readers refuse the output rather than misread it.
fn wire_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Reads SSH wire types from a byte slice, naming the field in any error.
pub(super) struct WireReader<'a> {
    rest: &'a [u8],
}

impl<'a> WireReader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], KrlError> {
        if self.rest.len() < len {
            return Err(KrlError::Truncated(what));
        }

        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], KrlError> {
        let mut value = [0; N];
        value.copy_from_slice(self.take(N, what)?);
        Ok(value)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, KrlError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, KrlError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, KrlError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A `boolean`: one byte, 0 or 1.
    pub(super) fn boolean(&mut self, what: &'static str) -> Result<bool, KrlError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(KrlError::InvalidBoolean(other)),
        }
    }

    /// A `string`, borrowed from the input: its length is checked against what is left before
    /// anything is taken, so a forged length allocates nothing.
    pub(super) fn string(&mut self, what: &'static str) -> Result<&'a [u8], KrlError> {
        let len = self.u32(what)?;
        let len = usize::try_from(len).map_err(|_| KrlError::Truncated(what))?;
        self.take(len, what)
    }

    /// Ends reading, refusing leftover bytes.
    pub(super) fn finish(self, what: &'static str) -> Result<(), KrlError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(KrlError::TrailingData {
                what,
                len: self.rest.len(),
            })
        }
    }
}
