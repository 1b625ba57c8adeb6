//! The engine layer: what a request means, independent of the wire it came on.
//!
//! [`record`] holds `Engine` and the write and read of a record (multipart and copy
//! included); `read` the read pipeline every reader of sealed chunks uses (GET, ranged GET,
//! the UploadPartCopy source, rotate, a mounted bucket's reads from a peer, a recipient's or
//! patient's `sharing::read_record`), with a chunk source: the local public store, a peer,
//! or a blob fetched whole; [`sharing`] consent, grants and re-wrapping; [`log`] the transparency log and
//! its publication; [`remote`] calls to peer gateways; [`rotate`] re-keying; [`keyrot`] the
//! institution key rollover; [`gc`] blob reclamation; [`backup`] encrypted backups;
//! [`audit`] the patient-side log audit; [`checksum`] the S3 checksum algorithms; [`catalog`]
//! the plain reads and changes the fronts make through the engine; [`maintenance`] what the
//! admin socket asks besides consent (access keys, verify, key re-wrap, gc, backup). Every
//! method that changes state returns once it is durable (`Engine::durable`). The engine
//! uses the store layer and keyring, never a front or the runtime.

pub mod audit;
pub mod backup;
pub mod catalog;
pub mod checksum;
pub mod gc;
pub mod keyrot;
pub mod log;
pub mod maintenance;
pub(crate) mod read;
pub mod record;
pub mod remote;
pub mod rotate;
pub mod sharing;

/// The vault purpose under which access-key secrets are sealed.
pub const ACCESS_KEY_VAULT: &str = "medgate/v1/access-keys";

/// The store's rows the fronts read and show, named here so that a front names only the
/// engine (`tests/layers.py` refuses `crate::store` in `front/`).
pub use crate::store::private::{
    AccessKeyRecord, Event, GrantRecord, ListedObject, MountRecord, PatientRecord, Precondition,
    RequestState, ShareRequestRecord, ACCESS_KEY_ROW_V2,
};
/// Whether a public store error is the backend asking to slow down (S3 `SlowDown`).
pub use crate::store::public::throttled;
