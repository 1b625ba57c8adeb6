//! The `testdata/consent_*.txt` vectors: a deterministic generator (run by the one
//! generator, `crate::vectors::generate_vectors`) and the check that every
//! file still decodes and verifies (or fails) as its header says. Ed25519 signatures are
//! deterministic, so `ok` files are also re-signed and must reproduce byte for byte.
//!
//! Headers: `kind` picks the check; keys are hex (`*-identity` are the test secrets, others
//! public recipients, 64 bytes, or fingerprints, 32 bytes); times are decimal Unix milliseconds.

use super::*;
use crate::testkit::{self, outcome, seq, write, Body, Parsed, Vector};

fn h(b: impl AsRef<[u8]>) -> String {
    hex::encode(b)
}

fn case(
    comment: &'static str,
    expect: &str,
    header: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Vector {
    Vector {
        comment,
        expect: expect.into(),
        header,
        body: Body::Bytes(body),
    }
}

fn flip_last(mut b: Vec<u8>) -> Vec<u8> {
    if let Some(x) = b.last_mut() {
        *x ^= 0x01;
    }
    b
}

pub(crate) fn generate_consent_vectors() {
    let (inst, req_id, pat, other) = (
        testkit::institution(),
        testkit::requester(),
        testkit::patient(),
        testkit::other(),
    );
    let inst_fp = inst.recipient().fingerprint();
    let request = testkit::request();
    let req_bytes = request.encode();

    // Share requests.
    let req_header = || {
        vec![
            ("kind", "request".to_string()),
            ("hash", h(request.hash())),
            ("text", request.to_text()),
        ]
    };
    write(
        "consent_request_ok",
        case(
            "consent::testkit::request(): a prefix scope, non-ASCII and a newline in the purpose.",
            "ok",
            req_header(),
            req_bytes.clone(),
        ),
    );
    let mut v2 = req_bytes.clone();
    v2[0] = 0x02;
    write(
        "consent_request_bad_version",
        case(
            "Version byte 0x02.",
            "unsupported-version",
            req_header(),
            v2,
        ),
    );
    write(
        "consent_request_truncated",
        case(
            "Last byte of the purpose text missing.",
            "malformed",
            req_header(),
            req_bytes[..req_bytes.len() - 1].to_vec(),
        ),
    );
    write(
        "consent_request_trailing",
        case(
            "One byte after the purpose text.",
            "malformed",
            req_header(),
            [req_bytes.as_slice(), &[0]].concat(),
        ),
    );
    let mut esc = request.clone();
    esc.requester = "Evil\u{1b}[2J Clinic".into();
    write(
        "consent_request_control_char",
        case(
            "The requester name carries a terminal escape: refused.",
            "malformed",
            req_header(),
            esc.encode(),
        ),
    );

    let signed_req = request.sign(&req_id);
    let sreq_header = |signer: &Identity, with_secret: bool| {
        let mut hd = vec![
            ("kind", "signed-request".to_string()),
            ("signer", h(signer.recipient().to_bytes())),
        ];
        if with_secret {
            hd.push(("signer-identity", h(signer.to_bytes().as_ref())));
        }
        hd
    };
    write(
        "consent_signed_request_ok",
        case(
            "The request signed by its recipient (context medgate/v1/request).",
            "ok",
            sreq_header(&req_id, true),
            signed_req.encode(),
        ),
    );
    write(
        "consent_signed_request_other_signer",
        case(
            "The same signed request checked against another key.",
            "bad-signature",
            sreq_header(&other, false),
            signed_req.encode(),
        ),
    );

    // Grants.
    let grant = testkit::grant();
    let signed = grant.sign(&pat);
    let sg = signed.encode();
    let grant_header = |inst_fp: [u8; 32], req: &ShareRequest, now: u64| {
        vec![
            ("kind", "grant".to_string()),
            ("patient", h(pat.recipient().to_bytes())),
            ("institution", h(inst_fp)),
            ("request", h(req.encode())),
            ("now-ms", now.to_string()),
        ]
    };
    let now = testkit::ISSUED_MS + 1;
    let mut ok_header = grant_header(inst_fp, &request, now);
    ok_header.extend([
        ("id", h(signed.id())),
        ("text", signed.to_text()),
        ("signer-identity", h(pat.to_bytes().as_ref())),
    ]);
    write(
            "consent_grant_ok",
            case(
                "consent::testkit::grant() signed by the patient, checked against the request it approves.",
                "ok",
                ok_header,
                sg.clone(),
            ),
        );
    write(
        "consent_grant_bad_signature",
        case(
            "Last signature byte flipped.",
            "bad-signature",
            grant_header(inst_fp, &request, now),
            flip_last(sg.clone()),
        ),
    );
    write(
        "consent_grant_other_key",
        case(
            "The same grant (naming the patient's key id) signed by another key.",
            "bad-signature",
            grant_header(inst_fp, &request, now),
            grant.sign(&other).encode(),
        ),
    );
    let mut edited = sg.clone();
    // The scope's include_future flag: the byte after the kind at offset 193.
    edited[194] ^= 0x01;
    write(
        "consent_grant_edited_scope",
        case(
            "include_future switched on after signing.",
            "bad-signature",
            grant_header(inst_fp, &request, now),
            edited,
        ),
    );
    let mut edited = sg.clone();
    edited[169] ^= 0x01;
    write(
        "consent_grant_edited_expiry",
        case(
            "The expiry's top byte changed after signing.",
            "bad-signature",
            grant_header(inst_fp, &request, now),
            edited,
        ),
    );
    let mut another = request.clone();
    another.nonce = seq(0xa1);
    write(
        "consent_grant_other_request",
        case(
            "A valid grant replayed for another request (same fields, another nonce).",
            "grant-mismatch/request",
            grant_header(inst_fp, &another, now),
            sg.clone(),
        ),
    );
    write(
        "consent_grant_wrong_institution",
        case(
            "A valid grant presented to another institution.",
            "grant-mismatch/institution",
            grant_header(other.recipient().fingerprint(), &request, now),
            sg.clone(),
        ),
    );
    write(
        "consent_grant_expired",
        case(
            "Checked at the expiry instant.",
            "grant-expired",
            grant_header(inst_fp, &request, testkit::EXPIRES_MS),
            sg.clone(),
        ),
    );
    let mut longer = grant.clone();
    longer.expires_ms += 1;
    write(
        "consent_grant_longer_expiry",
        case(
            "Signed by the patient with an expiry past the one requested.",
            "grant-mismatch/expiry",
            grant_header(inst_fp, &request, now),
            longer.sign(&pat).encode(),
        ),
    );
    let mut wider = grant.clone();
    wider.scope.records = Records::Patient;
    write(
        "consent_grant_wider_scope",
        case(
            "Signed by the patient with a wider scope than requested.",
            "grant-mismatch/scope",
            grant_header(inst_fp, &request, now),
            wider.sign(&pat).encode(),
        ),
    );
    write(
        "consent_grant_truncated",
        case(
            "Last signature byte missing.",
            "malformed",
            grant_header(inst_fp, &request, now),
            sg[..sg.len() - 1].to_vec(),
        ),
    );
    write(
        "consent_grant_trailing",
        case(
            "One byte after the signature.",
            "malformed",
            grant_header(inst_fp, &request, now),
            [sg.as_slice(), &[0]].concat(),
        ),
    );

    // Revocation and denial.
    let revocation = Revocation {
        grant_id: signed.id(),
        issued_ms: testkit::ISSUED_MS + 1000,
        nonce: seq(0xc0),
    };
    let rev_header = |g: &SignedGrant, with_secret: bool| {
        let mut hd = vec![
            ("kind", "revocation".to_string()),
            ("patient", h(pat.recipient().to_bytes())),
            ("grant", h(g.encode())),
        ];
        if with_secret {
            hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
        }
        hd
    };
    let sr = revocation.sign(&pat).encode();
    write(
        "consent_revocation_ok",
        case(
            "The patient revokes consent_grant_ok's grant.",
            "ok",
            rev_header(&signed, true),
            sr.clone(),
        ),
    );
    let mut other_grant = grant.clone();
    other_grant.nonce = seq(0xb1);
    write(
        "consent_revocation_other_grant",
        case(
            "The revocation checked against another grant.",
            "grant-mismatch/grant id",
            rev_header(&other_grant.sign(&pat), false),
            sr,
        ),
    );
    let denial = Denial {
        request_hash: request.hash(),
        issued_ms: testkit::ISSUED_MS,
        nonce: seq(0xd0),
    };
    let den_header = |r: &ShareRequest, with_secret: bool| {
        let mut hd = vec![
            ("kind", "denial".to_string()),
            ("patient", h(pat.recipient().to_bytes())),
            ("request", h(r.encode())),
        ];
        if with_secret {
            hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
        }
        hd
    };
    let sd = denial.sign(&pat).encode();
    write(
        "consent_denial_ok",
        case(
            "The patient refuses consent_request_ok's request.",
            "ok",
            den_header(&request, true),
            sd.clone(),
        ),
    );
    write(
        "consent_denial_other_request",
        case(
            "The denial checked against another request.",
            "grant-mismatch/request",
            den_header(&another, false),
            sd,
        ),
    );

    // Patient authentication.
    let challenge = AuthChallenge {
        institution: inst_fp,
        patient_id: testkit::PATIENT_ID.into(),
        challenge: seq(0xe0),
        issued_ms: testkit::CREATED_MS,
    };
    let body = br#"{"grant":"..."}"#;
    let token = AuthToken::new(challenge.clone(), "POST", "/v1/consent/grants", body);
    let st = token.sign(&pat).encode();
    let auth_header = |expected: &AuthToken, now: u64, with_secret: bool| {
        let mut hd = vec![
            ("kind", "auth".to_string()),
            ("patient", h(pat.recipient().to_bytes())),
            ("expected", h(expected.encode())),
            ("now-ms", now.to_string()),
            ("max-age-ms", "300000".to_string()),
        ];
        if with_secret {
            hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
        }
        hd
    };
    write(
        "consent_auth_ok",
        case(
            "A patient's token for POST /v1/consent/grants, 10 s after the challenge.",
            "ok",
            auth_header(&token, testkit::CREATED_MS + 10_000, true),
            st.clone(),
        ),
    );
    write(
        "consent_auth_stale",
        case(
            "The same token presented 5 min 1 ms after the challenge.",
            "auth-expired",
            auth_header(&token, testkit::CREATED_MS + 300_001, false),
            st.clone(),
        ),
    );
    let elsewhere = AuthToken::new(challenge.clone(), "POST", "/v1/consent/revocations", body);
    write(
        "consent_auth_wrong_path",
        case(
            "The token replayed on another path.",
            "auth-mismatch/path",
            auth_header(&elsewhere, testkit::CREATED_MS + 10_000, false),
            st.clone(),
        ),
    );
    let other_body = AuthToken::new(challenge, "POST", "/v1/consent/grants", b"{}");
    write(
        "consent_auth_wrong_body",
        case(
            "The token replayed with another body.",
            "auth-mismatch/body",
            auth_header(&other_body, testkit::CREATED_MS + 10_000, false),
            st,
        ),
    );

    // Institution-to-institution requests.
    let peer_auth = PeerAuth {
        caller: req_id.recipient(),
        callee: inst_fp,
        timestamp_ms: testkit::CREATED_MS,
        nonce: seq(0x70),
        method: "POST".into(),
        host: "gateway-a.example:9443".into(),
        target: "/v1/peer/exchange?grant=g1".into(),
        body_sha256: Sha256::digest(br#"{"bucket":"b","key":"k"}"#).into(),
    };
    let peer_header = |callee: [u8; 32], target: &str, now: u64, with_secret: bool| {
        let mut hd = vec![
            ("kind", "peer".to_string()),
            ("callee", h(callee)),
            ("method", "POST".to_string()),
            ("host", "gateway-a.example:9443".to_string()),
            ("target", target.to_string()),
            ("body", h(br#"{"bucket":"b","key":"k"}"#)),
            ("now-ms", now.to_string()),
            ("window-ms", "300000".to_string()),
        ];
        if with_secret {
            hd.push(("signer-identity", h(req_id.to_bytes().as_ref())));
        }
        hd
    };
    let sp = peer_auth.sign(&req_id).encode();
    write(
        "consent_peer_ok",
        case(
            "Gateway B's signed exchange call to gateway A, 2 s after B made it.",
            "ok",
            peer_header(
                inst_fp,
                "/v1/peer/exchange?grant=g1",
                testkit::CREATED_MS + 2_000,
                true,
            ),
            sp.clone(),
        ),
    );
    write(
        "consent_peer_stale",
        case(
            "The same call replayed 5 min 1 ms later.",
            "auth-expired",
            peer_header(
                inst_fp,
                "/v1/peer/exchange?grant=g1",
                testkit::CREATED_MS + 300_001,
                false,
            ),
            sp.clone(),
        ),
    );
    write(
        "consent_peer_other_query",
        case(
            "The same signature on another query string.",
            "auth-mismatch/target",
            peer_header(
                inst_fp,
                "/v1/peer/exchange?grant=g2",
                testkit::CREATED_MS + 2_000,
                false,
            ),
            sp.clone(),
        ),
    );
    write(
        "consent_peer_other_callee",
        case(
            "The same call presented to another gateway.",
            "auth-mismatch/callee",
            peer_header(
                other.recipient().fingerprint(),
                "/v1/peer/exchange?grant=g1",
                testkit::CREATED_MS + 2_000,
                false,
            ),
            sp.clone(),
        ),
    );
    let mut forged = peer_auth.clone();
    forged.caller = other.recipient();
    let mut forged_bytes = forged.encode();
    forged_bytes.extend_from_slice(&peer_auth.sign(&req_id).signature.0);
    write(
        "consent_peer_other_caller",
        case(
            "B's signature presented as if another institution had made the call.",
            "bad-signature",
            peer_header(
                inst_fp,
                "/v1/peer/exchange?grant=g1",
                testkit::CREATED_MS + 2_000,
                false,
            ),
            forged_bytes,
        ),
    );
    // Someone who knows B's Recipient puts B's X25519 key beside their own Ed25519 key and
    // signs with it: refused against B's configured Recipient.
    let mut impersonated = peer_auth.clone();
    impersonated.caller = Recipient {
        x25519: *req_id.recipient().x25519(),
        ed25519: other.recipient().ed25519,
    };
    let mut hd = peer_header(
        inst_fp,
        "/v1/peer/exchange?grant=g1",
        testkit::CREATED_MS + 2_000,
        false,
    );
    hd.push(("caller", h(req_id.recipient().to_bytes())));
    write(
        "consent_peer_impersonated",
        case(
            "B's X25519 key with another Ed25519 key, signed by that key, checked against B.",
            "bad-signature",
            hd,
            impersonated.sign(&other).encode(),
        ),
    );

    // Registration and key change.
    let reg_header = |inst_fp: [u8; 32], with_secret: bool| {
        let mut hd = vec![
            ("kind", "register".to_string()),
            ("recipient", h(pat.recipient().to_bytes())),
            ("institution", h(inst_fp)),
            ("patient-id", testkit::PATIENT_ID.to_string()),
        ];
        if with_secret {
            hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
        }
        hd
    };
    let proof = registration_proof(&pat, inst_fp, testkit::PATIENT_ID)
        .0
        .to_vec();
    write(
        "consent_register_ok",
        case(
            "Proof of possession for registering the patient's key (context medgate/v1/register).",
            "ok",
            reg_header(inst_fp, true),
            proof.clone(),
        ),
    );
    write(
        "consent_register_other_institution",
        case(
            "The proof replayed at another institution.",
            "bad-signature",
            reg_header(other.recipient().fingerprint(), false),
            proof,
        ),
    );
    let change = KeyChange {
        institution: inst_fp,
        patient_id: testkit::PATIENT_ID.into(),
        old: pat.recipient().fingerprint(),
        new: other.recipient(),
        issued_ms: testkit::CREATED_MS,
        nonce: seq(0xf0),
    };
    let skc = change.sign(&pat, &other).expect("matching keys");
    let kc_header = |with_secret: bool| {
        let mut hd = vec![
            ("kind", "key-change".to_string()),
            ("current", h(pat.recipient().to_bytes())),
            ("institution", h(inst_fp)),
            ("patient-id", testkit::PATIENT_ID.to_string()),
            ("now-ms", (testkit::CREATED_MS + 1000).to_string()),
            ("max-age-ms", "300000".to_string()),
        ];
        if with_secret {
            hd.push(("signer-identity", h(pat.to_bytes().as_ref())));
            hd.push(("new-identity", h(other.to_bytes().as_ref())));
        }
        hd
    };
    write(
            "consent_key_change_ok",
            case(
                "The patient moves from their key to `new-identity`'s, signed by the old key, with the new key's proof.",
                "ok",
                kc_header(true),
                skc.encode(),
            ),
        );
    let mut bad = skc.clone();
    bad.new_proof = registration_proof(&other, inst_fp, "patient-0043");
    write(
        "consent_key_change_bad_proof",
        case(
            "The new key's proof is for another patient id.",
            "bad-signature",
            kc_header(false),
            bad.encode(),
        ),
    );
}

/// Re-signs `payload` with `signer-identity` (when the header has one) and compares.
fn resigned(v: &Parsed, context: &str, payload: &[u8], sig: &Signature) {
    if v.has("signer-identity") {
        let again = v.identity("signer-identity").sign(context, payload);
        assert_eq!(
            &again, sig,
            "{}: re-signing must reproduce the signature",
            v.name
        );
    }
}

fn check(v: &Parsed) -> String {
    match v.get("kind") {
        "request" => {
            let r = ShareRequest::decode(&v.body);
            if let Ok(req) = &r {
                assert_eq!(req, &testkit::request());
                assert_eq!(req.encode(), v.body);
                assert_eq!(req.hash().to_vec(), v.hex("hash"));
                assert_eq!(req.to_text(), v.get("text"));
                assert_eq!(ShareRequest::from_text(v.get("text")).as_ref(), Ok(req));
            }
            outcome(r)
        }
        "signed-request" => {
            let r = SignedRequest::decode(&v.body).and_then(|s| {
                s.verify(&v.recipient("signer"))?;
                Ok(s)
            });
            if let Ok(s) = &r {
                assert_eq!(s.encode(), v.body);
                resigned(v, REQUEST_CONTEXT, &s.request.encode(), &s.signature);
            }
            outcome(r)
        }
        "grant" => {
            let request = ShareRequest::decode(&v.hex("request")).expect("request");
            let r = SignedGrant::decode(&v.body).and_then(|g| {
                g.check(
                    &v.recipient("patient"),
                    v.array("institution"),
                    &request,
                    v.u64("now-ms"),
                )?;
                Ok(g)
            });
            if let Ok(g) = &r {
                assert_eq!(g.encode(), v.body);
                assert_eq!(g.id().to_vec(), v.hex("id"));
                assert_eq!(g.to_text(), v.get("text"));
                assert_eq!(SignedGrant::from_text(v.get("text")).as_ref(), Ok(g));
                resigned(v, GRANT_CONTEXT, &g.grant.encode(), &g.signature);
            }
            outcome(r)
        }
        "revocation" => {
            let grant = SignedGrant::decode(&v.hex("grant")).expect("grant");
            let r = SignedRevocation::decode(&v.body).and_then(|s| {
                s.check(&v.recipient("patient"), &grant)?;
                Ok(s)
            });
            if let Ok(s) = &r {
                assert_eq!(s.encode(), v.body);
                resigned(v, REVOKE_CONTEXT, &s.revocation.encode(), &s.signature);
            }
            outcome(r)
        }
        "denial" => {
            let request = ShareRequest::decode(&v.hex("request")).expect("request");
            let r = SignedDenial::decode(&v.body).and_then(|s| {
                s.check(&v.recipient("patient"), &request)?;
                Ok(s)
            });
            if let Ok(s) = &r {
                assert_eq!(s.encode(), v.body);
                resigned(v, DENY_CONTEXT, &s.denial.encode(), &s.signature);
            }
            outcome(r)
        }
        "auth" => {
            let expected = AuthToken::decode(&v.hex("expected")).expect("expected token");
            let r = SignedAuth::decode(&v.body).and_then(|s| {
                s.verify(
                    &v.recipient("patient"),
                    &expected,
                    v.u64("now-ms"),
                    v.u64("max-age-ms"),
                )?;
                Ok(s)
            });
            if let Ok(s) = &r {
                assert_eq!(s.encode(), v.body);
                resigned(v, AUTH_CONTEXT, &s.token.encode(), &s.signature);
            }
            outcome(r)
        }
        "peer" => {
            let r = SignedPeerAuth::decode(&v.body).and_then(|s| {
                // The configured caller; older vectors pin the one the request names.
                let caller = if v.has("caller") {
                    v.recipient("caller")
                } else {
                    s.auth.caller.clone()
                };
                s.verify(
                    &caller,
                    &v.array("callee"),
                    v.get("method"),
                    v.get("host"),
                    v.get("target"),
                    &v.hex("body"),
                    v.u64("now-ms"),
                    v.u64("window-ms"),
                )?;
                Ok(s)
            });
            if let Ok(s) = &r {
                assert_eq!(s.encode(), v.body);
                resigned(v, PEER_CONTEXT, &s.auth.encode(), &s.signature);
            }
            outcome(r)
        }
        "register" => {
            let (recipient, inst) = (v.recipient("recipient"), v.array("institution"));
            let patient_id = v.get("patient-id");
            let r = Signature::from_bytes(&v.body).and_then(|sig| {
                verify_registration(&recipient, inst, patient_id, &sig)?;
                Ok(sig)
            });
            if let Ok(sig) = &r {
                if v.has("signer-identity") {
                    let id = v.identity("signer-identity");
                    assert_eq!(&registration_proof(&id, inst, patient_id), sig);
                }
            }
            outcome(r)
        }
        "key-change" => {
            let r = SignedKeyChange::decode(&v.body).and_then(|s| {
                s.verify(
                    &v.recipient("current"),
                    v.array("institution"),
                    v.get("patient-id"),
                    v.u64("now-ms"),
                    v.u64("max-age-ms"),
                )?;
                Ok(s)
            });
            if let Ok(s) = &r {
                assert_eq!(s.encode(), v.body);
                if v.has("signer-identity") {
                    let again = s
                        .change
                        .sign(&v.identity("signer-identity"), &v.identity("new-identity"))
                        .expect("matching keys");
                    assert_eq!(&again, s, "re-signing must reproduce the change");
                }
            }
            outcome(r)
        }
        kind => panic!("{}: unknown kind {kind}", v.name),
    }
}

#[test]
fn consent_vectors() {
    testkit::check_all("consent_", 30, check);
}
