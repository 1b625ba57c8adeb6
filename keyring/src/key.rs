//! Data keys (DEKs) and the random 16-byte ids that name blobs and DEKs.
//!
//! A [`DataKey`] encrypts one object version; it never leaves the process in clear and is only
//! stored wrapped (see [`crate::stanza`]). A [`BlobId`] names one sealed blob in the public store
//! and salts the blob's payload key, so every write of every blob uses a fresh key.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::Result;
use crate::hex;

/// A 32-byte data encryption key, one per object version.
///
/// Wiped on drop, including clones. Its bytes are reachable only through [`DataKey::expose`],
/// so every use of the raw key is visible at the call site.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// Draws a fresh key from the operating system's CSPRNG.
    pub fn generate() -> DataKey {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        DataKey(bytes)
    }

    /// Wraps existing key bytes (e.g. just unwrapped from a stanza).
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    /// The raw key bytes.
    ///
    /// # Security
    /// Do not copy them anywhere that is not wiped afterwards.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

fn random_16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// The random id of one sealed blob in the public store.
///
/// Drawn fresh for every blob write (retries and re-seals included): it salts the payload key,
/// which is what keeps a (key, nonce) pair from ever repeating.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct BlobId(pub [u8; 16]);

/// Prefix of every blob's key in the public store.
const PUBLIC_PREFIX: &str = "v1/b/";

impl BlobId {
    /// A fresh random id from the operating system's CSPRNG.
    pub fn random() -> BlobId {
        BlobId(random_16())
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Parses 32 hex digits (either case).
    ///
    /// # Errors
    /// [`Error::Malformed`](crate::Error::Malformed) for any other input.
    pub fn from_hex(s: &str) -> Result<BlobId> {
        hex::decode_array(s, "blob id").map(BlobId)
    }

    /// The blob's object key in the public store: `v1/b/<first byte, 2 hex>/<32 hex>`.
    ///
    /// The first-byte directory spreads blobs over 256 prefixes, which object stores shard on.
    pub fn public_path(&self) -> String {
        let hex = self.to_hex();
        format!("{PUBLIC_PREFIX}{}/{hex}", &hex[..2])
    }

    /// The inverse of [`BlobId::public_path`]: `None` for anything that is not exactly the
    /// canonical path of some id (so a listing of `v1/b/` never mistakes a stray object for a
    /// blob).
    pub fn from_public_path(path: &str) -> Option<BlobId> {
        let rest = path.strip_prefix(PUBLIC_PREFIX)?;
        let (_, hex) = rest.split_once('/')?;
        let id = BlobId::from_hex(hex).ok()?;
        (id.public_path() == path).then_some(id)
    }
}

/// The id of one DEK, shared by an object and its copies so their stanzas are stored once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DekId(pub [u8; 16]);

impl DekId {
    /// A fresh random id from the operating system's CSPRNG.
    pub fn random() -> DekId {
        DekId(random_16())
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Parses 32 hex digits (either case).
    ///
    /// # Errors
    /// [`Error::Malformed`](crate::Error::Malformed) for any other input.
    pub fn from_hex(s: &str) -> Result<DekId> {
        hex::decode_array(s, "DEK id").map(DekId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn public_path_shape() {
        let id = BlobId([0xab; 16]);
        assert_eq!(id.public_path(), "v1/b/ab/abababababababababababababababab");
    }

    #[test]
    fn from_public_path_rejects_non_canonical() {
        let id = BlobId([0x0f; 16]);
        let path = id.public_path();
        assert_eq!(BlobId::from_public_path(&path), Some(id));
        for bad in [
            "v1/b/0f/0F0F0F0F0F0F0F0F0F0F0F0F0F0F0F0F",
            "v1/b/00/0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
            "v1/b/0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
            "v1/b/0f/0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f/x",
            "v2/b/0f/0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
            "v1/b/0f/0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
            "",
            "v1/b/",
        ] {
            assert_eq!(BlobId::from_public_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn data_key_debug_is_redacted() {
        let k = DataKey::from_bytes([7; 32]);
        assert_eq!(format!("{k:?}"), "DataKey(<redacted>)");
    }

    #[test]
    fn hex_rejects_garbage() {
        assert!(BlobId::from_hex("zz").is_err());
        assert!(DekId::from_hex(&"g".repeat(32)).is_err());
        assert!(DekId::from_hex(&"a".repeat(31)).is_err());
        assert!(BlobId::from_hex("é").is_err());
    }

    proptest! {
        #[test]
        fn ids_round_trip(bytes in any::<[u8; 16]>()) {
            let b = BlobId(bytes);
            prop_assert_eq!(BlobId::from_hex(&b.to_hex()).unwrap(), b);
            prop_assert_eq!(BlobId::from_hex(&b.to_hex().to_uppercase()).unwrap(), b);
            prop_assert_eq!(BlobId::from_public_path(&b.public_path()), Some(b));
            let d = DekId(bytes);
            prop_assert_eq!(DekId::from_hex(&d.to_hex()).unwrap(), d);
        }
    }
}
