//! The crate's single error type.
//!
//! Failures that an attacker could use as an oracle (a tag that does not verify, a signature that
//! does not check) are one opaque variant each and carry nothing about *why* they failed.

/// Everything that can go wrong in `keyring`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An AEAD open failed: wrong key, wrong nonce (index, last flag), or tampered bytes.
    ///
    /// Deliberately carries no detail; see the module docs.
    #[error("decryption failed")]
    Decrypt,
    /// An Ed25519 signature did not verify for the given key, context and message.
    #[error("bad signature")]
    BadSignature,
    /// A Merkle proof does not lead from the leaf to the expected root.
    #[error("invalid Merkle proof")]
    InvalidProof,
    /// Bytes or text that do not follow the format they claim to be; the string names what.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A format's leading version byte is one this build cannot read.
    #[error("unsupported format version {0:#04x}")]
    UnsupportedVersion(u8),
    /// A manifest names an AEAD suite this build does not implement.
    #[error("unsupported AEAD suite {0:#04x}")]
    UnsupportedSuite(u8),
    /// A backup whose file key was wrapped to another Recipient than the identity given.
    #[error("the backup is encrypted to another recovery key")]
    NotForThisIdentity,
    /// The identity file is sealed and no passphrase was given.
    #[error("identity file is sealed with a passphrase; none was given")]
    PassphraseRequired,
    /// The recipient's X25519 key is a low-order point, so wrapping to it would give a key any
    /// observer could compute.
    #[error("recipient key gives a non-contributory key exchange")]
    NotContributory,
    /// A length or chunk count does not fit the 64-bit arithmetic of the layout.
    #[error("size overflows the chunk layout")]
    CounterOverflow,
    /// An index past the end of the leaves it refers to.
    #[error("index {index} out of range for size {size}")]
    IndexOutOfRange {
        /// The requested index.
        index: u64,
        /// The number of items there are.
        size: u64,
    },
    // transparency log
    /// A signed note (checkpoint) carries no signature line from the expected key. Public
    /// information, unlike [`Error::BadSignature`]: e.g. a witness has not cosigned yet.
    #[error("note has no signature from key {key}")]
    MissingSignature {
        /// The key as `<name>+<key id hex>`.
        key: String,
    },
    /// A tile needed to recompute a root or extend the log was not supplied.
    #[error("missing tile {path}")]
    MissingTile {
        /// The tile's path, e.g. `tile/0/x001/067.p/8`.
        path: String,
    },
    // consent
    /// A grant whose expiry has passed (expired grants stop working without anyone acting).
    #[error("grant expired at {expires_ms} (now {now_ms})")]
    GrantExpired {
        /// The grant's expiry, Unix milliseconds.
        expires_ms: u64,
        /// The time it was checked at, Unix milliseconds.
        now_ms: u64,
    },
    /// A correctly signed grant, revocation or denial that does not fit what it is checked
    /// against; the string names the field (e.g. "institution", "request", "scope").
    #[error("grant does not match: {0}")]
    GrantMismatch(&'static str),
    /// A patient auth token or key change older than the allowed age (or issued in the future).
    #[error("patient authentication expired")]
    AuthExpired,
    /// A correctly signed auth token, registration or key change for another challenge, method,
    /// path, body, patient or key; the string names the field.
    #[error("patient authentication does not match: {0}")]
    AuthMismatch(&'static str),
    /// A patient index older than one already accepted: the public store served a rolled-back
    /// copy.
    #[error("patient index rolled back: seen sequence {seen}, got {got}")]
    Rollback {
        /// The lowest sequence number still acceptable (the last one accepted).
        seen: u64,
        /// The sequence number of the index offered.
        got: u64,
    },
    /// A correctly signed and decrypted patient index made for another patient or institution;
    /// the string names which.
    #[error("patient index does not match: {0}")]
    IndexMismatch(&'static str),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
