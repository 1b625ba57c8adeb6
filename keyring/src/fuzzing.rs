//! Entry points for the fuzz targets under `fuzz/` to decoders that are private because, in
//! normal use, they only ever see bytes that an AEAD or a signature has already vouched for.
//! A fuzzer cannot forge those, so it calls the inner decoders directly.
//!
//! Compiled only under `--cfg fuzzing` (which `cargo fuzz` sets): no normal build has it.

use crate::error::Result;
use crate::patient_index::PatientIndex;

/// Decodes a patient index *body* (the plaintext inside the sealed index; see the byte table on
/// [`PatientIndex`]) with sequence number `seq`; returns the index and the patient fingerprint.
///
/// # Errors
/// As the body decoder inside [`PatientIndex::open`].
pub fn patient_index_decode_body(body: &[u8], seq: u64) -> Result<(PatientIndex, [u8; 32])> {
    PatientIndex::decode_body(body, seq)
}

/// Encodes a patient index body, the inverse of [`patient_index_decode_body`].
pub fn patient_index_encode_body(index: &PatientIndex, patient_key_id: [u8; 32]) -> Vec<u8> {
    index.encode_body(patient_key_id)
}

/// The clear header of a backup file (see [`crate::backup`]: 106 bytes in v1, 170 in v2), as
/// the writer makes it. (`BackupHeader::encode` is public since v2; this stays for the targets.)
pub fn backup_header_encode(header: &crate::backup::BackupHeader) -> Vec<u8> {
    header.encode()
}
