//! Entry points for the fuzz targets under `fuzz/` to decoders that are private because, in
//! normal use, they only ever see bytes that an AEAD or a signature has already vouched for.
//! A fuzzer cannot forge those, so it calls the inner decoders directly.
//!
//! Compiled only under `--cfg fuzzing` (which `cargo fuzz` sets): no normal build has it.

use crate::error::Result;
use crate::patient_index::PatientIndex;

/// Decodes a patient index *body* (the plaintext inside the sealed index; see the byte tables
/// on [`PatientIndex`]), v1 or v2 by its first byte; returns the index and the patient
/// fingerprint. A v1 body gets sequence number `seq` (v1 keeps it in the clear header); a v2
/// body carries its own, and its zero padding.
///
/// # Errors
/// As the body decoders inside [`PatientIndex::open`].
pub fn patient_index_decode_body(body: &[u8], seq: u64) -> Result<(PatientIndex, [u8; 32])> {
    match body.first() {
        Some(&crate::patient_index::INDEX_V1) => PatientIndex::decode_body_v1(body, seq),
        _ => PatientIndex::decode_body_v2(body),
    }
}

/// Encodes a patient index body of `version` (1 or 2), the inverse of
/// [`patient_index_decode_body`]; a v2 body is padded with zeros to `len` bytes (a v1 body,
/// and a v2 body that is longer already, is not).
pub fn patient_index_encode_body(
    index: &PatientIndex,
    patient_key_id: [u8; 32],
    version: u8,
    len: usize,
) -> Vec<u8> {
    if version == crate::patient_index::INDEX_V1 {
        return index.encode_body_v1(patient_key_id);
    }
    let mut body = index.encode_body_v2(patient_key_id);
    if body.len() < len {
        body.resize(len, 0);
    }
    body
}

/// The clear header of a backup file (see [`crate::backup`]: 106 bytes in v1, 170 in v2), as
/// the writer makes it. (`BackupHeader::encode` is public since v2; this stays for the targets.)
pub fn backup_header_encode(header: &crate::backup::BackupHeader) -> Vec<u8> {
    header.encode()
}
