//! Unit and property tests of the consent formats.

use super::*;
use crate::testkit::{self, seq};
use proptest::prelude::*;

/// One named way to spoil a value, for table-driven negative tests.
type Edit<T> = Box<dyn Fn(&mut T)>;

fn now() -> u64 {
    testkit::ISSUED_MS + 1
}

fn inst_fp() -> [u8; 32] {
    testkit::institution().recipient().fingerprint()
}

fn check(g: &SignedGrant, request: &ShareRequest) -> Result<()> {
    g.check(&testkit::patient().recipient(), inst_fp(), request, now())
}

#[test]
fn base64url_rfc4648_vectors() {
    // RFC 4648 §10, without padding and with the URL-safe alphabet.
    for (plain, text) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64url::encode(plain.as_bytes()), text);
        assert_eq!(base64url::decode(text, "t").unwrap(), plain.as_bytes());
    }
    assert_eq!(base64url::encode(&[0xfb, 0xff]), "-_8");
    for bad in [
        "Zg==", "Zm9v+", "Zm9v/w", "Z", "Zh", "Zm9", "Zm9vY", "Zm 9v", "é",
    ] {
        assert!(base64url::decode(bad, "t").is_err(), "{bad}");
    }
}

#[test]
fn scope_covers() {
    let object = Scope {
        records: Records::Object {
            bucket: "b".into(),
            key: "p1/a.dcm".into(),
        },
        include_future: false,
    };
    assert!(object.covers("b", "p1/a.dcm"));
    assert!(!object.covers("b", "p1/a.dcm2"));
    assert!(!object.covers("c", "p1/a.dcm"));
    let prefix = Scope {
        records: Records::Prefix {
            bucket: "b".into(),
            prefix: "p1/".into(),
        },
        include_future: true,
    };
    assert!(prefix.covers("b", "p1/a.dcm"));
    assert!(prefix.covers("b", "p1/"));
    assert!(!prefix.covers("b", "p1"));
    assert!(!prefix.covers("b", "p2/a.dcm"));
    assert!(!prefix.covers("bb", "p1/a.dcm"));
    let patient = Scope {
        records: Records::Patient,
        include_future: false,
    };
    assert!(patient.covers("any", "thing"));
    // Versions added after the grant only with include_future.
    assert!(patient.covers_version("b", "k", 10, 10));
    assert!(!patient.covers_version("b", "k", 11, 10));
    assert!(prefix.covers_version("b", "p1/x", 11, 10));
    assert!(!prefix.covers_version("b", "p2/x", 1, 10));
}

#[test]
fn validate_rules() {
    let ok = testkit::request();
    ok.validate().unwrap();
    let cases: Vec<(&str, Edit<ShareRequest>)> = vec![
        ("empty patient", Box::new(|r| r.patient_id.clear())),
        ("patient NUL", Box::new(|r| r.patient_id.push('\0'))),
        ("patient long", Box::new(|r| r.patient_id = "p".repeat(257))),
        ("requester newline", Box::new(|r| r.requester.push('\n'))),
        (
            "requester bidi ctl",
            Box::new(|r| r.requester.push('\u{85}')),
        ),
        ("purpose ESC", Box::new(|r| r.purpose_text.push('\u{1b}'))),
        (
            "purpose long",
            Box::new(|r| r.purpose_text = "x".repeat(4097)),
        ),
        ("code empty", Box::new(|r| r.purpose_code.clear())),
        ("code space", Box::new(|r| r.purpose_code = "TRE AT".into())),
        ("code long", Box::new(|r| r.purpose_code = "A".repeat(65))),
        ("expiry", Box::new(|r| r.expires_ms = r.created_ms)),
        (
            "bucket slash",
            Box::new(|r| {
                r.scope.records = Records::Prefix {
                    bucket: "a/b".into(),
                    prefix: String::new(),
                }
            }),
        ),
        (
            "empty bucket",
            Box::new(|r| {
                r.scope.records = Records::Object {
                    bucket: String::new(),
                    key: "k".into(),
                }
            }),
        ),
        (
            "empty key",
            Box::new(|r| {
                r.scope.records = Records::Object {
                    bucket: "b".into(),
                    key: String::new(),
                }
            }),
        ),
        (
            "long key",
            Box::new(|r| {
                r.scope.records = Records::Object {
                    bucket: "b".into(),
                    key: "k".repeat(1025),
                }
            }),
        ),
    ];
    for (what, edit) in cases {
        let mut r = ok.clone();
        edit(&mut r);
        assert!(matches!(r.validate(), Err(Error::Malformed(_))), "{what}");
        assert!(
            matches!(ShareRequest::decode(&r.encode()), Err(Error::Malformed(_))),
            "{what}"
        );
    }
    let mut r = ok.clone();
    r.purpose_code = "ETREAT.v3-x_1".into();
    r.purpose_text = "multi\nline".into();
    r.requester.clear();
    r.scope.records = Records::Prefix {
        bucket: "b".into(),
        prefix: String::new(),
    };
    assert_eq!(ShareRequest::decode(&r.encode()).unwrap(), r);
}

#[test]
fn decode_rejects_bad_framing() {
    let good = testkit::request().encode();
    let mut bad = good.clone();
    bad[0] = 0;
    assert_eq!(
        ShareRequest::decode(&bad),
        Err(Error::UnsupportedVersion(0))
    );
    assert_eq!(
        ShareRequest::decode(&[]),
        Err(Error::Malformed("share request: truncated"))
    );
    assert_eq!(
        ShareRequest::decode(&[good.as_slice(), b"x"].concat()),
        Err(Error::Malformed("share request: trailing bytes"))
    );
    // Scope kind and flag bytes follow the patient id.
    let scope_at = 129 + 4 + testkit::PATIENT_ID.len();
    let mut bad = good.clone();
    bad[scope_at] = 9;
    assert_eq!(
        ShareRequest::decode(&bad),
        Err(Error::Malformed("scope: unknown kind"))
    );
    let mut bad = good.clone();
    bad[scope_at + 1] = 2;
    assert_eq!(
        ShareRequest::decode(&bad),
        Err(Error::Malformed("share request: bad flag byte"))
    );
    // A length prefix far past the end is truncation, not an allocation.
    let mut bad = good.clone();
    bad[129..133].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        ShareRequest::decode(&bad),
        Err(Error::Malformed("share request: truncated"))
    );
    // Invalid UTF-8 in the patient id.
    let mut bad = good.clone();
    bad[133] = 0xff;
    assert_eq!(
        ShareRequest::decode(&bad),
        Err(Error::Malformed("share request: invalid UTF-8"))
    );
    // A low-order recipient key.
    let mut bad = good;
    bad[33..65].fill(0);
    assert!(matches!(
        ShareRequest::decode(&bad),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn request_hash_and_signature() {
    let r = testkit::request();
    let mut other = r.clone();
    other.nonce = seq(0x01);
    assert_ne!(r.hash(), other.hash());
    let signed = r.sign(&testkit::requester());
    signed.verify(&r.recipient).unwrap();
    assert_eq!(
        signed.verify(&testkit::other().recipient()),
        Err(Error::BadSignature)
    );
    let mut edited = signed.clone();
    edited.request.purpose_code = "HPAYMT".into();
    assert_eq!(edited.verify(&r.recipient), Err(Error::BadSignature));
    assert_eq!(SignedRequest::decode(&signed.encode()).unwrap(), signed);
}

#[test]
fn grant_happy_path_and_id() {
    let request = testkit::request();
    let patient = testkit::patient();
    let g = Grant::for_request(&request, &patient.recipient(), testkit::ISSUED_MS);
    let signed = g.sign(&patient);
    check(&signed, &request).unwrap();
    let again = SignedGrant::decode(&signed.encode()).unwrap();
    assert_eq!(again, signed);
    assert_eq!(again.id(), signed.id());
    // Fresh nonces: two approvals of one request are two grants.
    let g2 = Grant::for_request(&request, &patient.recipient(), testkit::ISSUED_MS);
    assert_ne!(g2.sign(&patient).id(), signed.id());
    // The id does not depend on the signature bytes.
    let mut resigned = signed.clone();
    resigned.signature = Signature([7; 64]);
    assert_eq!(resigned.id(), signed.id());
    // A patient may shorten the access.
    let mut shorter = g.clone();
    shorter.expires_ms = testkit::ISSUED_MS + 2;
    check(&shorter.sign(&patient), &request).unwrap();
}

#[test]
fn grant_every_check() {
    let request = testkit::request();
    let patient = testkit::patient();
    let other = testkit::other();
    let g = testkit::grant();
    let signed = g.sign(&patient);

    // Forged: signed by another key, naming the patient's key id, or its own.
    assert_eq!(check(&g.sign(&other), &request), Err(Error::BadSignature));
    let mut own = g.clone();
    own.patient_key_id = other.recipient().fingerprint();
    assert_eq!(check(&own.sign(&other), &request), Err(Error::BadSignature));
    // Signed by the patient but naming another key.
    assert_eq!(
        check(&own.sign(&patient), &request),
        Err(Error::GrantMismatch("patient key"))
    );

    // Edited after signing.
    let mut edited = signed.clone();
    edited.grant.scope.include_future = true;
    assert_eq!(check(&edited, &request), Err(Error::BadSignature));
    let mut edited = signed.clone();
    edited.grant.expires_ms += 1;
    assert_eq!(check(&edited, &request), Err(Error::BadSignature));
    let mut edited = signed.clone();
    edited.grant.recipient = other.recipient();
    assert_eq!(check(&edited, &request), Err(Error::BadSignature));

    // Replayed with another request.
    let mut another = request.clone();
    another.nonce = seq(0x99);
    assert_eq!(
        check(&signed, &another),
        Err(Error::GrantMismatch("request"))
    );

    // Presented to another institution, or for a request to another one.
    assert_eq!(
        signed.check(
            &patient.recipient(),
            other.recipient().fingerprint(),
            &request,
            now()
        ),
        Err(Error::GrantMismatch("institution"))
    );
    let mut elsewhere = request.clone();
    elsewhere.institution = other.recipient().fingerprint();
    let mut g2 = Grant::for_request(&elsewhere, &patient.recipient(), 0);
    g2.institution = inst_fp();
    assert_eq!(
        check(&g2.sign(&patient), &elsewhere),
        Err(Error::GrantMismatch("institution"))
    );

    // Signed by the patient, but not what was asked.
    let mut wider = g.clone();
    wider.scope.include_future = true;
    assert_eq!(
        check(&wider.sign(&patient), &request),
        Err(Error::GrantMismatch("scope"))
    );
    let mut to_other = g.clone();
    to_other.recipient = other.recipient();
    assert_eq!(
        check(&to_other.sign(&patient), &request),
        Err(Error::GrantMismatch("recipient"))
    );
    let mut longer = g.clone();
    longer.expires_ms = request.expires_ms + 1;
    assert_eq!(
        check(&longer.sign(&patient), &request),
        Err(Error::GrantMismatch("expiry"))
    );

    // Expired.
    let at = |t| signed.check(&patient.recipient(), inst_fp(), &request, t);
    at(g.expires_ms - 1).unwrap();
    assert_eq!(
        at(g.expires_ms),
        Err(Error::GrantExpired {
            expires_ms: g.expires_ms,
            now_ms: g.expires_ms
        })
    );
    assert!(matches!(at(u64::MAX), Err(Error::GrantExpired { .. })));
}

#[test]
fn every_bit_flip_of_a_signed_grant_fails() {
    let request = testkit::request();
    let bytes = testkit::grant().sign(&testkit::patient()).encode();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            let r = SignedGrant::decode(&b).and_then(|g| check(&g, &request));
            assert!(r.is_err(), "byte {i} bit {bit}");
        }
    }
    for cut in 0..bytes.len() {
        assert!(SignedGrant::decode(&bytes[..cut]).is_err());
    }
    assert!(SignedGrant::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
}

#[test]
fn signatures_do_not_cross_kinds() {
    let patient = testkit::patient();
    let signed = testkit::grant().sign(&patient);
    let bytes = signed.grant.encode();
    for ctx in [REQUEST_CONTEXT, REVOKE_CONTEXT, DENY_CONTEXT, AUTH_CONTEXT] {
        assert_eq!(
            patient.recipient().verify(ctx, &bytes, &signed.signature),
            Err(Error::BadSignature)
        );
    }
}

#[test]
fn revocation_and_denial() {
    let (patient, other) = (testkit::patient(), testkit::other());
    let request = testkit::request();
    let grant = testkit::grant().sign(&patient);
    let rev = Revocation::for_grant(&grant, 5).sign(&patient);
    rev.check(&patient.recipient(), &grant).unwrap();
    assert_eq!(SignedRevocation::decode(&rev.encode()).unwrap(), rev);
    assert_eq!(rev.revocation.encode().len(), 41);
    assert_eq!(
        rev.check(&other.recipient(), &grant),
        Err(Error::BadSignature)
    );
    let other_grant = Grant::for_request(&request, &patient.recipient(), 0).sign(&patient);
    assert_eq!(
        rev.check(&patient.recipient(), &other_grant),
        Err(Error::GrantMismatch("grant id"))
    );
    // Another key cannot revoke the patient's grant, even naming it.
    let foreign = Revocation::for_grant(&grant, 5).sign(&other);
    assert_eq!(
        foreign.check(&other.recipient(), &grant),
        Err(Error::GrantMismatch("patient key"))
    );

    let den = Denial::for_request(&request, 5).sign(&patient);
    den.check(&patient.recipient(), &request).unwrap();
    assert_eq!(den.denial.encode().len(), 57);
    assert_eq!(SignedDenial::decode(&den.encode()).unwrap(), den);
    assert_eq!(
        den.check(&other.recipient(), &request),
        Err(Error::BadSignature)
    );
    let mut another = request.clone();
    another.purpose_code = "HRESCH".into();
    assert_eq!(
        den.check(&patient.recipient(), &another),
        Err(Error::GrantMismatch("request"))
    );
    // A denial's signature is not a revocation's.
    let as_rev = SignedRevocation::decode(&den.encode());
    assert!(as_rev.is_err());
}

#[test]
fn challenge_key_recognises_only_its_own_unchanged_challenges() {
    let (inst, other) = (testkit::patient(), testkit::other());
    let key = inst.challenge_key();
    let c = key.issue(inst_fp(), testkit::PATIENT_ID, 1_000_000);
    assert_eq!(c.patient_id, testkit::PATIENT_ID);
    assert_eq!(c.issued_ms, 1_000_000);
    assert_eq!(key.check(&c), Ok(()));
    // Through its text form, as a patient sends it back.
    assert_eq!(
        key.check(&AuthChallenge::from_text(&c.to_text()).unwrap()),
        Ok(())
    );
    // The same key derived again (another gateway of the institution) accepts it.
    assert_eq!(inst.challenge_key().check(&c), Ok(()));
    // Two issues differ (random nonce), both valid.
    let c2 = key.issue(inst_fp(), testkit::PATIENT_ID, 1_000_000);
    assert_ne!(c.challenge, c2.challenge);
    assert_eq!(key.check(&c2), Ok(()));
    let refused = Err(Error::AuthMismatch("challenge"));
    assert_eq!(other.challenge_key().check(&c), refused);
    let edits: Vec<Edit<AuthChallenge>> = vec![
        Box::new(|c| c.patient_id.push('x')),
        Box::new(|c| c.issued_ms += 1),
        Box::new(|c| c.institution[0] ^= 1),
        Box::new(|c| c.challenge[0] ^= 1),
        Box::new(|c| c.challenge[31] ^= 1),
    ];
    for edit in edits {
        let mut e = c.clone();
        edit(&mut e);
        assert_eq!(key.check(&e), refused);
    }
    // A random (old-style) challenge is not one of ours.
    let random = AuthChallenge::new(inst_fp(), testkit::PATIENT_ID, 1_000_000);
    assert_eq!(key.check(&random), refused);
    assert_eq!(format!("{key:?}"), "ChallengeKey(<redacted>)");
}

#[test]
fn auth_token_checks() {
    let (patient, other) = (testkit::patient(), testkit::other());
    let challenge = AuthChallenge::new(inst_fp(), testkit::PATIENT_ID, 1_000_000);
    assert_ne!(
        challenge.challenge,
        AuthChallenge::new(inst_fp(), testkit::PATIENT_ID, 1_000_000).challenge
    );
    assert_eq!(
        AuthChallenge::decode(&challenge.encode()).unwrap(),
        challenge
    );
    assert_eq!(
        AuthChallenge::from_text(&challenge.to_text()).unwrap(),
        challenge
    );
    let token = AuthToken::new(challenge.clone(), "GET", "/v1/consent/requests?x=1", b"");
    let signed = token.sign(&patient);
    let verify = |s: &SignedAuth, expected: &AuthToken, now| {
        s.verify(&patient.recipient(), expected, now, 60_000)
    };
    verify(&signed, &token, 1_000_000).unwrap();
    verify(&signed, &token, 1_060_000).unwrap();
    verify(&signed, &token, 940_000).unwrap();
    assert_eq!(verify(&signed, &token, 1_060_001), Err(Error::AuthExpired));
    assert_eq!(verify(&signed, &token, 939_999), Err(Error::AuthExpired));
    assert_eq!(
        signed.verify(&other.recipient(), &token, 1_000_000, 60_000),
        Err(Error::BadSignature)
    );
    assert_eq!(SignedAuth::decode(&signed.encode()).unwrap(), signed);

    let mismatches: Vec<(&str, Edit<AuthToken>)> = vec![
        ("institution", Box::new(|t| t.challenge.institution[0] ^= 1)),
        ("patient", Box::new(|t| t.challenge.patient_id.push('9'))),
        ("challenge", Box::new(|t| t.challenge.challenge[31] ^= 1)),
        ("challenge", Box::new(|t| t.challenge.issued_ms += 1)),
        ("method", Box::new(|t| t.method = "POST".into())),
        (
            "path",
            Box::new(|t| t.path = "/v1/consent/requests?x=2".into()),
        ),
        (
            "body",
            Box::new(|t| t.body_sha256 = Sha256::digest(b"x").into()),
        ),
    ];
    for (field, edit) in mismatches {
        let mut expected = token.clone();
        edit(&mut expected);
        assert_eq!(
            verify(&signed, &expected, 1_000_000),
            Err(Error::AuthMismatch(field)),
            "{field}"
        );
        // And a token edited after signing no longer verifies.
        let mut forged = signed.clone();
        edit(&mut forged.token);
        assert_eq!(
            verify(&forged, &token, 1_000_000),
            Err(Error::BadSignature),
            "{field}"
        );
    }

    for (method, path) in [("get", "/x"), ("", "/x"), ("GET", "x"), ("GET", "/a\nb")] {
        let t = AuthToken::new(challenge.clone(), method, path, b"");
        assert!(t.validate().is_err(), "{method} {path}");
        assert!(AuthToken::decode(&t.encode()).is_err(), "{method} {path}");
    }
}

#[test]
fn registration_and_key_change() {
    let (patient, other, inst) = (testkit::patient(), testkit::other(), inst_fp());
    let id = testkit::PATIENT_ID;
    let proof = registration_proof(&patient, inst, id);
    verify_registration(&patient.recipient(), inst, id, &proof).unwrap();
    for (r, i, p) in [
        (other.recipient(), inst, id),
        (patient.recipient(), other.recipient().fingerprint(), id),
        (patient.recipient(), inst, "patient-0043"),
    ] {
        assert_eq!(
            verify_registration(&r, i, p, &proof),
            Err(Error::BadSignature)
        );
    }

    let change = KeyChange::new(inst, id, &patient.recipient(), &other.recipient(), 1_000);
    assert_eq!(
        change.sign(&other, &other).err(),
        Some(Error::AuthMismatch("old key"))
    );
    assert_eq!(
        change.sign(&patient, &patient).err(),
        Some(Error::AuthMismatch("new key"))
    );
    let signed = change.sign(&patient, &other).unwrap();
    assert_eq!(SignedKeyChange::decode(&signed.encode()).unwrap(), signed);
    assert_eq!(
        SignedKeyChange::from_text(&signed.to_text()).unwrap(),
        signed
    );
    let verify = |s: &SignedKeyChange, current: &Recipient, inst, pid: &str, now| {
        s.verify(current, inst, pid, now, 60_000)
    };
    verify(&signed, &patient.recipient(), inst, id, 2_000).unwrap();
    assert_eq!(
        verify(&signed, &other.recipient(), inst, id, 2_000),
        Err(Error::BadSignature)
    );
    assert_eq!(
        verify(
            &signed,
            &patient.recipient(),
            other.recipient().fingerprint(),
            id,
            2_000
        ),
        Err(Error::AuthMismatch("institution"))
    );
    assert_eq!(
        verify(&signed, &patient.recipient(), inst, "patient-0043", 2_000),
        Err(Error::AuthMismatch("patient"))
    );
    assert_eq!(
        verify(&signed, &patient.recipient(), inst, id, 62_001),
        Err(Error::AuthExpired)
    );
    let mut bad = signed.clone();
    bad.new_proof = registration_proof(&other, inst, "patient-0043");
    assert_eq!(
        verify(&bad, &patient.recipient(), inst, id, 2_000),
        Err(Error::BadSignature)
    );
    // Signed by the key on file but naming another old key.
    let mut wrong_old = change.clone();
    wrong_old.old = other.recipient().fingerprint();
    let forged = SignedKeyChange {
        signature: patient.sign(KEY_CHANGE_CONTEXT, &wrong_old.encode()),
        new_proof: signed.new_proof,
        change: wrong_old,
    };
    assert_eq!(
        verify(&forged, &patient.recipient(), inst, id, 2_000),
        Err(Error::AuthMismatch("old key"))
    );
    // A "change" to the same key.
    let same = KeyChange::new(inst, id, &patient.recipient(), &patient.recipient(), 1_000)
        .sign(&patient, &patient)
        .unwrap();
    assert_eq!(
        verify(&same, &patient.recipient(), inst, id, 2_000),
        Err(Error::AuthMismatch("new key"))
    );
}

#[test]
fn text_forms() {
    let g = testkit::grant().sign(&testkit::patient());
    let text = g.to_text();
    assert!(text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(SignedGrant::from_text(&format!("  {text}\n")).unwrap(), g);
    assert_eq!(
        SignedGrant::from_text(&format!("{text}=")),
        Err(Error::Malformed("signed grant: bad base64url text"))
    );
    assert!(SignedGrant::from_text(&text.replace('-', "+")).is_err());
    // Another kind's text is not a grant.
    assert!(SignedGrant::from_text(&testkit::request().to_text()).is_err());
    assert!(ShareRequest::from_text(&text).is_err());
}

fn arb_text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 ./äü€😀-]{{0,{max}}}"))
        .expect("valid regex")
}

fn arb_scope() -> impl Strategy<Value = Scope> {
    let bucket = || proptest::string::string_regex("[a-z0-9.-]{1,12}").expect("valid regex");
    let records = prop_oneof![
        (
            bucket(),
            arb_text(20).prop_filter("non-empty", |k| !k.is_empty())
        )
            .prop_map(|(bucket, key)| Records::Object { bucket, key }),
        (bucket(), arb_text(20)).prop_map(|(bucket, prefix)| Records::Prefix { bucket, prefix }),
        Just(Records::Patient),
    ];
    (records, any::<bool>()).prop_map(|(records, include_future)| Scope {
        records,
        include_future,
    })
}

prop_compose! {
    fn arb_request()(
        institution in any::<[u8; 32]>(),
        patient_id in proptest::string::string_regex("[a-z0-9-]{1,20}").expect("valid regex"),
        scope in arb_scope(),
        recipient in any::<[u8; 64]>(),
        requester in arb_text(20),
        purpose_text in arb_text(40),
        purpose_code in proptest::string::string_regex("[A-Z]{1,8}").expect("valid regex"),
        created_ms in 0u64..u64::MAX - 1,
        span in 1u64..1 << 40,
        nonce in any::<[u8; 16]>(),
    ) -> ShareRequest {
        ShareRequest {
            institution,
            patient_id,
            scope,
            recipient: Identity::from_bytes(&recipient).expect("any 64 bytes").recipient(),
            requester,
            purpose_text,
            purpose_code,
            created_ms,
            expires_ms: created_ms.saturating_add(span),
            nonce,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn request_round_trip(r in arb_request()) {
        let bytes = r.encode();
        prop_assert_eq!(ShareRequest::decode(&bytes).unwrap(), r.clone());
        prop_assert_eq!(ShareRequest::from_text(&r.to_text()).unwrap(), r.clone());
        for cut in 0..bytes.len() {
            prop_assert!(ShareRequest::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn grant_round_trip_and_check(r in arb_request(), issued in any::<u64>()) {
        let patient = testkit::patient();
        let signed = Grant::for_request(&r, &patient.recipient(), issued).sign(&patient);
        let again = SignedGrant::decode(&signed.encode()).unwrap();
        prop_assert_eq!(&again, &signed);
        let ok = again.check(&patient.recipient(), r.institution, &r, r.expires_ms - 1);
        prop_assert_eq!(ok, Ok(()));
        prop_assert_eq!(SignedGrant::from_text(&signed.to_text()).unwrap(), signed);
    }

    #[test]
    fn base64url_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let text = base64url::encode(&bytes);
        prop_assert_eq!(base64url::decode(&text, "t").unwrap(), bytes);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut v = vec![CONSENT_V1];
        v.extend(&bytes);
        for b in [&bytes, &v] {
            let _ = ShareRequest::decode(b);
            let _ = SignedGrant::decode(b);
            let _ = SignedRevocation::decode(b);
            let _ = SignedDenial::decode(b);
            let _ = SignedAuth::decode(b);
            let _ = SignedKeyChange::decode(b);
            let _ = AuthChallenge::decode(b);
        }
        let _ = base64url::decode(&String::from_utf8_lossy(&bytes), "t");
    }
}
