//! The store layer, the bottom of the gateway (above keyring): where bytes are kept.
//!
//! [`private`] is the on-premises store's contract (`PrivateStore`) and its sled adapter
//! ([`private::sled`], the only files that name `sled`); [`public`] is the untrusted object
//! store (object_store behind a metrics and timeout decorator). Nothing here imports the
//! engine, a front or the runtime.

pub mod kv;
pub mod private;
pub mod public;
pub mod rules;
