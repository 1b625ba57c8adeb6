//! The byte codec every binary format of this crate is written with: the length-prefixed
//! writers (`put_*`), the strict [`Reader`] cursor, the [`Wire`] trait with its
//! `encode`/`decode`/`to_text`/`from_text` methods, and the base64url text form.
//!
//! Conventions (the byte tables on each type use them): integers are big-endian with fixed
//! widths; `str` is a u32 byte length followed by that many bytes of UTF-8; `bytes` is a u32
//! length followed by the bytes; `opt x` is 0x00, or 0x01 followed by `x`; a recipient is its
//! 64-byte [`Recipient::to_bytes`] form. The reader never panics and never allocates more than its
//! input could hold: truncation, trailing bytes, bad flags and invalid UTF-8 are
//! [`Error::Malformed`] with a message from the format's [`Names`], so an error names the format
//! it happened in.
//!
//! Used by `consent`, `manifest`, `logentry`, `patient_index`, `peer` and `rollover`.

use crate::error::{Error, Result};
use crate::identity::Recipient;

/// The version byte of the v1 formats that read it with [`Reader::version`] (all of consent,
/// peer answers, rollovers).
pub(crate) const V1: u8 = 0x01;

/// Error messages of one format, so a failure names the format it happened in.
pub(crate) struct Names {
    pub(crate) truncated: &'static str,
    pub(crate) trailing: &'static str,
    pub(crate) utf8: &'static str,
    pub(crate) flag: &'static str,
    pub(crate) text: &'static str,
    /// A count or length that the rest of the input could not hold.
    pub(crate) too_many: &'static str,
}

macro_rules! names {
    ($what:literal) => {
        $crate::wire::Names {
            truncated: concat!($what, ": truncated"),
            trailing: concat!($what, ": trailing bytes"),
            utf8: concat!($what, ": invalid UTF-8"),
            flag: concat!($what, ": bad flag byte"),
            text: concat!($what, ": bad base64url text"),
            too_many: concat!($what, ": truncated"),
        }
    };
}
pub(crate) use names;

/// A format with a canonical, strict encoding.
pub(crate) trait Wire: Sized {
    const NAMES: &'static Names;
    fn write(&self, out: &mut Vec<u8>);
    /// Reads one value, leaving what follows it. Validates the value's fields.
    fn read(r: &mut Reader<'_>) -> Result<Self>;

    fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out);
        out
    }

    fn from_wire(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, Self::NAMES);
        let v = Self::read(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// Inherent `encode`/`decode`/`to_text`/`from_text` for a [`Wire`] type.
macro_rules! wire_methods {
    ($ty:ident, $what:literal) => {
        impl $ty {
            #[doc = concat!("The v1 encoding of the ", $what, " (see the byte table on the type).")]
            ///
            /// Does not validate: check with `validate` (where there is one) before signing or
            /// storing, or `decode` will refuse the result.
            ///
            /// # Panics
            /// If a string field is 4 GiB or longer.
            pub fn encode(&self) -> Vec<u8> {
                $crate::wire::Wire::to_wire(self)
            }

            #[doc = concat!("Parses and validates a ", $what, ".")]
            ///
            /// # Errors
            /// [`Error::UnsupportedVersion`] for an unknown version byte; [`Error::Malformed`]
            /// for truncation, trailing bytes, invalid UTF-8, bad flags, invalid keys or fields
            /// out of range.
            pub fn decode(bytes: &[u8]) -> Result<$ty> {
                <$ty as $crate::wire::Wire>::from_wire(bytes)
            }

            /// The text form: unpadded base64url of [`Self::encode`].
            pub fn to_text(&self) -> String {
                $crate::wire::base64url::encode(&self.encode())
            }

            /// Parses the text form (surrounding whitespace ignored).
            ///
            /// # Errors
            /// [`Error::Malformed`] for text that is not canonical unpadded base64url, then as
            /// [`Self::decode`].
            pub fn from_text(text: &str) -> Result<$ty> {
                let bytes = $crate::wire::base64url::decode(
                    text.trim(),
                    <$ty as $crate::wire::Wire>::NAMES.text,
                )?;
                <$ty>::decode(&bytes)
            }
        }
    };
}
pub(crate) use wire_methods;

pub(crate) fn put_len(out: &mut Vec<u8>, len: usize) {
    let len =
        u32::try_from(len).expect("Invariant: encoded fields are far below 4 GiB / 2^32 entries");
    out.extend_from_slice(&len.to_be_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// `opt str`: 0x00, or 0x01 then the `str`.
pub(crate) fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0x00),
        Some(s) => {
            out.push(0x01);
            put_str(out, s);
        }
    }
}

/// A cursor that fails with `Malformed` instead of panicking when the input runs out.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    names: &'static Names,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], names: &'static Names) -> Reader<'a> {
        Reader { buf, names }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Malformed(self.names.truncated));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// The leading version byte; v1 is the only one so far.
    pub(crate) fn version(&mut self) -> Result<()> {
        match self.u8()? {
            V1 => Ok(()),
            v => Err(Error::UnsupportedVersion(v)),
        }
    }

    pub(crate) fn flag(&mut self) -> Result<bool> {
        match self.u8()? {
            0x00 => Ok(false),
            0x01 => Ok(true),
            _ => Err(Error::Malformed(self.names.flag)),
        }
    }

    /// u32 length ‖ bytes. A length beyond the input is truncation, checked before anything is
    /// allocated.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len =
            usize::try_from(self.u32()?).map_err(|_| Error::Malformed(self.names.truncated))?;
        self.take(len)
    }

    /// A u32 count of entries of at least `min_entry_len` bytes each, refused as truncation if
    /// the rest of the input could not hold them; this bounds every allocation by the input.
    pub(crate) fn count(&mut self, min_entry_len: usize) -> Result<usize> {
        let n = usize::try_from(self.u32()?).map_err(|_| Error::Malformed(self.names.too_many))?;
        match n.checked_mul(min_entry_len) {
            Some(need) if need <= self.buf.len() => Ok(n),
            _ => Err(Error::Malformed(self.names.too_many)),
        }
    }

    pub(crate) fn string(&mut self) -> Result<String> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Error::Malformed(self.names.utf8))
    }

    /// `opt str`: a [`Self::flag`], then a [`Self::string`] if it is set.
    pub(crate) fn opt_string(&mut self) -> Result<Option<String>> {
        if self.flag()? {
            self.string().map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn recipient(&mut self) -> Result<Recipient> {
        Recipient::from_bytes(self.take(64)?)
    }

    /// Everything not read yet; the reader is at the end afterwards.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::Malformed(self.names.trailing))
        }
    }
}

/// Unpadded base64url (RFC 4648 §5), strict: one text per byte string.
pub(crate) mod base64url {
    use crate::error::{Error, Result};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub(crate) fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity((bytes.len() * 4).div_ceil(3));
        for chunk in bytes.chunks(3) {
            let mut group = [0u8; 4];
            group[1..=chunk.len()].copy_from_slice(chunk);
            let n = u32::from_be_bytes(group);
            // 1, 2 or 3 bytes need 2, 3 or 4 characters.
            for i in 0..=chunk.len() {
                let six = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[six as usize]));
            }
        }
        out
    }

    fn value(c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }

    /// Decodes; refuses padding, characters outside the alphabet, a length that no byte string
    /// encodes to (4k + 1), and non-zero unused bits in the last character.
    pub(crate) fn decode(text: &str, what: &'static str) -> Result<Vec<u8>> {
        let text = text.as_bytes();
        if text.len() % 4 == 1 {
            return Err(Error::Malformed(what));
        }
        let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
        for chunk in text.chunks(4) {
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= value(c).ok_or(Error::Malformed(what))? << (18 - 6 * i);
            }
            // Invariant: chunk.len() is 2..=4 (a 1-character tail was refused above).
            let len = chunk.len() - 1;
            let unused = 24 - 8 * len;
            if n & ((1 << unused) - 1) != 0 {
                return Err(Error::Malformed(what));
            }
            out.extend_from_slice(&n.to_be_bytes()[1..=len]);
        }
        Ok(out)
    }
}
