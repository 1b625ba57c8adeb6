//! Institution key rollover: the statement by which an institution hands its identity over to a
//! new one ([`Rollover`], [`SignedRollover`]).
//!
//! Peers, witnesses and patients pin an institution by its whole [`Recipient`]. When the
//! institution must replace its key (compromise, policy), it signs a rollover with the OLD key
//! (so whoever pinned the old key can follow it) and with the NEW key (proof of possession: no
//! one can hand an institution over to a key they cannot use). The rollover names the log's
//! origin (which does not change: witnesses see a handover of one log, not a fork) and the log
//! size at the handover. [`SignedRollover::verify`] checks both signatures and compares the
//! pinned key in constant time; [`follow_chain`] walks a sequence of rollovers from a pinned key
//! to the current one.
//!
//! Encoding conventions are those of [`crate::consent`]: version byte, big-endian fixed-width
//! integers, `str` = u32 length ‖ UTF-8, strict decoding (truncation and trailing bytes are
//! errors), text form = unpadded base64url.

use crate::error::{Error, Result};
use crate::identity::{Identity, Recipient, Signature};
use crate::wire::{names, put_str, wire_methods, Names, Reader, Wire};

/// Signature context of both signatures of a [`SignedRollover`].
pub const ROLLOVER_CONTEXT: &str = "medgate/v1/key-rollover";

/// Version byte of the v1 rollover.
pub const ROLLOVER_V1: u8 = 0x01;

/// Longest origin line, in bytes.
pub const MAX_ORIGIN_LEN: usize = 256;

/// An institution's move from one identity to the next.
///
/// Rollover, v1:
///
/// | offset | len   | field                                                      |
/// |--------|-------|------------------------------------------------------------|
/// | 0      | 1     | version = 0x01                                             |
/// | 1      | 4     | seq (u32): 1 for the first rollover of this log, then +1   |
/// | 5      | 64    | old: the Recipient handing over (X25519 ‖ Ed25519)         |
/// | 69     | 64    | new: the Recipient taking over                             |
/// | 133    | 8     | log_size (u64): entries in the log when the new key takes over |
/// | 141    | 8     | time_ms (u64): Unix milliseconds                           |
/// | 149    | 4 + n | origin (`str`, 1..=256 bytes of printable ASCII): the log's origin line, unchanged by the rollover |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollover {
    /// 1 for the first rollover of the log, then one more each time.
    pub seq: u32,
    /// The identity handing over; signs the rollover.
    pub old: Recipient,
    /// The identity taking over; signs it too (proof of possession).
    pub new: Recipient,
    /// The log size at the handover: checkpoints of this size or larger are signed by `new`.
    pub log_size: u64,
    /// When the rollover was made, Unix milliseconds.
    pub time_ms: u64,
    /// The log's origin line (C2SP checkpoint origin), the same before and after.
    pub origin: String,
}

impl Rollover {
    /// Signs with both identities, old first.
    ///
    /// # Errors
    /// [`Error::AuthMismatch`] ("old key", "new key") if the identities are not the keys the
    /// rollover names, or if old and new are the same key; [`Error::Malformed`] for an origin
    /// the decoder would refuse.
    pub fn sign(&self, old: &Identity, new: &Identity) -> Result<SignedRollover> {
        self.validate()?;
        if !old.recipient().ct_eq(&self.old) {
            return Err(Error::AuthMismatch("old key"));
        }
        if !new.recipient().ct_eq(&self.new) {
            return Err(Error::AuthMismatch("new key"));
        }
        let msg = self.encode();
        Ok(SignedRollover {
            old_signature: old.sign(ROLLOVER_CONTEXT, &msg),
            new_signature: new.sign(ROLLOVER_CONTEXT, &msg),
            rollover: self.clone(),
        })
    }

    fn validate(&self) -> Result<()> {
        if self.origin.is_empty()
            || self.origin.len() > MAX_ORIGIN_LEN
            || !self.origin.bytes().all(|b| (0x21..0x7f).contains(&b))
        {
            return Err(Error::Malformed("rollover: origin"));
        }
        if self.seq == 0 {
            return Err(Error::Malformed("rollover: seq"));
        }
        if self.old.ct_eq(&self.new) {
            return Err(Error::AuthMismatch("new key"));
        }
        Ok(())
    }
}

impl Wire for Rollover {
    const NAMES: &'static Names = &names!("rollover");

    fn write(&self, out: &mut Vec<u8>) {
        out.push(ROLLOVER_V1);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.old.to_bytes());
        out.extend_from_slice(&self.new.to_bytes());
        out.extend_from_slice(&self.log_size.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        put_str(out, &self.origin);
    }

    fn read(r: &mut Reader<'_>) -> Result<Rollover> {
        r.version()?;
        let v = Rollover {
            seq: r.u32()?,
            old: r.recipient()?,
            new: r.recipient()?,
            log_size: r.u64()?,
            time_ms: r.u64()?,
            origin: r.string()?,
        };
        v.validate()?;
        Ok(v)
    }
}

wire_methods!(Rollover, "rollover");

/// A [`Rollover`] signed by the old and by the new identity.
///
/// Encoding: the rollover's encoding ‖ old key's signature (64) ‖ new key's signature (64), both
/// over the rollover's encoding under [`ROLLOVER_CONTEXT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRollover {
    /// The statement.
    pub rollover: Rollover,
    /// The old key's signature.
    pub old_signature: Signature,
    /// The new key's signature.
    pub new_signature: Signature,
}

impl SignedRollover {
    /// Checks that this rollover hands over from `pinned` (compared in constant time, both
    /// keys) and carries valid signatures by the old and the new key. Returns the new key.
    ///
    /// # Errors
    /// [`Error::AuthMismatch`] ("old key") if it does not start from `pinned`;
    /// [`Error::BadSignature`] if either signature does not verify.
    pub fn verify(&self, pinned: &Recipient) -> Result<&Recipient> {
        let r = &self.rollover;
        if !r.old.ct_eq(pinned) {
            return Err(Error::AuthMismatch("old key"));
        }
        let msg = r.encode();
        pinned.verify(ROLLOVER_CONTEXT, &msg, &self.old_signature)?;
        r.new.verify(ROLLOVER_CONTEXT, &msg, &self.new_signature)?;
        Ok(&r.new)
    }
}

impl Wire for SignedRollover {
    const NAMES: &'static Names = &names!("signed rollover");

    fn write(&self, out: &mut Vec<u8>) {
        self.rollover.write(out);
        out.extend_from_slice(&self.old_signature.0);
        out.extend_from_slice(&self.new_signature.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<SignedRollover> {
        Ok(SignedRollover {
            rollover: Rollover::read(r)?,
            old_signature: Signature(r.array()?),
            new_signature: Signature(r.array()?),
        })
    }
}

wire_methods!(SignedRollover, "signed rollover");

/// Follows `chain` (rollovers in order, seq 1, 2, ...) from `pinned`: skips the rollovers
/// before the one that starts from `pinned`, then checks each of the rest against the key the
/// previous one handed over to. Returns the last key (`pinned` itself when no rollover starts
/// from it and the chain does not name it) and the rollovers followed.
///
/// # Errors
/// [`Error::AuthMismatch`] ("old key") when a rollover after the first followed one does not
/// start from the previous one's new key, or ("origin") when the origin changes along the way;
/// [`Error::Malformed`] ("rollover: seq") for a chain out of order; [`Error::BadSignature`]
/// for a bad signature.
pub fn follow_chain<'a>(
    pinned: &Recipient,
    chain: &'a [SignedRollover],
) -> Result<(Recipient, Vec<&'a SignedRollover>)> {
    for (i, s) in chain.iter().enumerate() {
        if s.rollover.seq as usize != i + 1 {
            return Err(Error::Malformed("rollover: seq"));
        }
    }
    let Some(start) = chain.iter().position(|s| s.rollover.old.ct_eq(pinned)) else {
        return Ok((pinned.clone(), Vec::new()));
    };
    let mut key = pinned.clone();
    let mut followed = Vec::new();
    for s in &chain[start..] {
        if s.rollover.origin != chain[start].rollover.origin {
            return Err(Error::AuthMismatch("origin"));
        }
        key = s.verify(&key)?.clone();
        followed.push(s);
    }
    Ok((key, followed))
}

/// The `testdata/rollover_*.txt` vectors: a deterministic generator (run by the one
/// generator, `crate::vectors::generate_vectors`) and the check that
/// every file decodes and verifies (or fails) as its header says. Ed25519 signatures are
/// deterministic, so the `ok` file is re-signed and must reproduce byte for byte.
///
/// Headers: `pinned` (64-byte Recipient, hex) is the key the verifier knows; the `ok` file also
/// carries `old-identity` and `new-identity` (test secrets) to re-sign with.
#[cfg(test)]
pub(crate) mod rollover_vectors {
    use super::*;
    use crate::testkit::{self, outcome, read_all, write, Body, Vector};

    fn h(b: impl AsRef<[u8]>) -> String {
        hex::encode(b)
    }

    pub(super) fn sample() -> Rollover {
        Rollover {
            seq: 1,
            old: testkit::institution().recipient(),
            new: testkit::other().recipient(),
            log_size: 42,
            time_ms: testkit::CREATED_MS,
            origin: "medgate.log/00112233445566778899aabbccddeeff".into(),
        }
    }

    pub(crate) fn generate_rollover_vectors() {
        let (old, new, stranger) = (
            testkit::institution(),
            testkit::other(),
            testkit::requester(),
        );
        let ok = sample().sign(&old, &new).expect("sign").encode();
        let pinned = |r: &Recipient| vec![("pinned", h(r.to_bytes()))];
        let case = |comment, expect: &str, header, body| Vector {
            comment,
            expect: expect.into(),
            header,
            body: Body::Bytes(body),
        };
        let mut ok_header = pinned(&old.recipient());
        ok_header.push(("old-identity", h(old.to_bytes().as_ref())));
        ok_header.push(("new-identity", h(new.to_bytes().as_ref())));
        write(
            "rollover_v1_ok",
            case(
                "The institution `old-identity` hands over to `new-identity` at log size 42,\nsigned by both; verified against the pinned old key.",
                "ok",
                ok_header,
                ok.clone(),
            ),
        );
        let forged = Rollover {
            old: stranger.recipient(),
            ..sample()
        }
        .sign(&stranger, &new)
        .expect("sign")
        .encode();
        write(
            "rollover_other_signer",
            case(
                "A rollover made by another key (a fork): it does not start from the pinned key.",
                "auth-mismatch/old key",
                pinned(&old.recipient()),
                forged.clone(),
            ),
        );
        // The forger puts the pinned key in `old` but can only sign with its own.
        let mut claimed = Rollover { ..sample() }.encode();
        let msg = claimed.clone();
        claimed.extend_from_slice(&stranger.sign(ROLLOVER_CONTEXT, &msg).0);
        claimed.extend_from_slice(&new.sign(ROLLOVER_CONTEXT, &msg).0);
        write(
            "rollover_bad_old_signature",
            case(
                "Names the pinned key as old, but the old signature is another key's.",
                "bad-signature",
                pinned(&old.recipient()),
                claimed,
            ),
        );
        let mut no_proof = ok.clone();
        let n = no_proof.len();
        no_proof[n - 1] ^= 0x01;
        write(
            "rollover_bad_new_signature",
            case(
                "Last byte of the new key's signature flipped (no proof of possession).",
                "bad-signature",
                pinned(&old.recipient()),
                no_proof,
            ),
        );
        let mut edited = ok.clone();
        edited[140] ^= 0x01;
        write(
            "rollover_edited_size",
            case(
                "The log size edited after signing.",
                "bad-signature",
                pinned(&old.recipient()),
                edited,
            ),
        );
        let mut bad_version = ok.clone();
        bad_version[0] = 0x02;
        write(
            "rollover_bad_version",
            case(
                "Version byte 0x02.",
                "unsupported-version",
                pinned(&old.recipient()),
                bad_version,
            ),
        );
        write(
            "rollover_truncated",
            case(
                "The new key's signature cut short.",
                "malformed",
                pinned(&old.recipient()),
                ok[..ok.len() - 1].to_vec(),
            ),
        );
        let mut trailing = ok.clone();
        trailing.push(0);
        write(
            "rollover_trailing",
            case(
                "One byte after the new key's signature.",
                "malformed",
                pinned(&old.recipient()),
                trailing,
            ),
        );
    }

    #[test]
    fn vectors() {
        let all = read_all("rollover_");
        assert!(all.len() >= 8, "rollover vectors missing");
        for v in all {
            let pinned = v.recipient("pinned");
            let got = outcome(SignedRollover::decode(&v.body).and_then(|s| {
                s.verify(&pinned)?;
                Ok(s)
            }));
            assert_eq!(got, v.expect, "{}", v.name);
            if v.expect == "ok" {
                let s = SignedRollover::decode(&v.body).expect("decodes");
                assert_eq!(s.encode(), v.body, "{}: re-encode", v.name);
                let again = s
                    .rollover
                    .sign(&v.identity("old-identity"), &v.identity("new-identity"))
                    .expect("sign");
                assert_eq!(again.encode(), v.body, "{}: re-sign", v.name);
                assert_eq!(s.rollover, sample(), "{}: sample", v.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rollover_vectors::sample;
    use super::*;
    use crate::testkit;

    #[test]
    fn round_trip_and_text() {
        let s = sample()
            .sign(&testkit::institution(), &testkit::other())
            .unwrap();
        assert_eq!(SignedRollover::decode(&s.encode()).unwrap(), s);
        assert_eq!(SignedRollover::from_text(&s.to_text()).unwrap(), s);
        assert_eq!(
            s.verify(&testkit::institution().recipient()).unwrap(),
            &testkit::other().recipient()
        );
    }

    #[test]
    fn sign_refuses_wrong_identities_and_same_key() {
        let (old, new) = (testkit::institution(), testkit::other());
        assert_eq!(
            sample().sign(&new, &new).unwrap_err(),
            Error::AuthMismatch("old key")
        );
        assert_eq!(
            sample().sign(&old, &old).unwrap_err(),
            Error::AuthMismatch("new key")
        );
        let same = Rollover {
            new: old.recipient(),
            ..sample()
        };
        assert_eq!(
            same.sign(&old, &old).unwrap_err(),
            Error::AuthMismatch("new key")
        );
        let bad_origin = Rollover {
            origin: "with space".into(),
            ..sample()
        };
        assert!(matches!(
            bad_origin.sign(&old, &new),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn verify_refuses_other_pinned_key() {
        let s = sample()
            .sign(&testkit::institution(), &testkit::other())
            .unwrap();
        assert_eq!(
            s.verify(&testkit::requester().recipient()).unwrap_err(),
            Error::AuthMismatch("old key")
        );
        // The new key is not the pinned key either: a rollover cannot be followed backwards.
        assert_eq!(
            s.verify(&testkit::other().recipient()).unwrap_err(),
            Error::AuthMismatch("old key")
        );
    }

    #[test]
    fn chains() {
        let (a, b, c) = (
            testkit::institution(),
            testkit::other(),
            testkit::requester(),
        );
        let first = sample().sign(&a, &b).unwrap();
        let second = Rollover {
            seq: 2,
            old: b.recipient(),
            new: c.recipient(),
            log_size: 50,
            ..sample()
        }
        .sign(&b, &c)
        .unwrap();
        let chain = vec![first.clone(), second.clone()];
        let (k, followed) = follow_chain(&a.recipient(), &chain).unwrap();
        assert!(k.ct_eq(&c.recipient()));
        assert_eq!(followed.len(), 2);
        let (k, followed) = follow_chain(&b.recipient(), &chain).unwrap();
        assert!(k.ct_eq(&c.recipient()));
        assert_eq!(followed.len(), 1);
        let (k, followed) = follow_chain(&c.recipient(), &chain).unwrap();
        assert!(k.ct_eq(&c.recipient()));
        assert!(followed.is_empty());
        // Out of order.
        assert!(follow_chain(&a.recipient(), &[second.clone(), first.clone()]).is_err());
        // A gap: the second does not start where the first ended.
        let stray = Rollover {
            seq: 2,
            old: c.recipient(),
            new: a.recipient(),
            ..sample()
        }
        .sign(&c, &a)
        .unwrap();
        assert_eq!(
            follow_chain(&a.recipient(), &[first.clone(), stray]).unwrap_err(),
            Error::AuthMismatch("old key")
        );
        // Another origin on the way.
        let moved = Rollover {
            seq: 2,
            old: b.recipient(),
            new: c.recipient(),
            origin: "medgate.log/other".into(),
            ..sample()
        }
        .sign(&b, &c)
        .unwrap();
        assert_eq!(
            follow_chain(&a.recipient(), &[first, moved]).unwrap_err(),
            Error::AuthMismatch("origin")
        );
    }
}
