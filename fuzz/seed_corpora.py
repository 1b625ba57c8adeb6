#!/usr/bin/env python3
"""Seeds fuzz/corpus/<target>/ from the checked-in vectors under keyring/testdata.

    python3 fuzz/seed_corpora.py          (re)writes the seed files, named after their vectors

Each vector file is `# comments`, `key: value` header lines, a blank line and a body (hex, or
text with `encoding: text`). A file's body seeds the target its name prefix maps to (TARGETS);
a few header fields carry a second encoded value (a grant's request, its text form, an auth
challenge, a signer's vkey) and seed theirs too. Formats with no vector of their own (the
patient index bodies (v1 and v2), log entries, proofs, tiles, the backup payload framing) get seeds built here
from vector bytes, by the byte tables in keyring's doc comments. Seeds are named
`<vector>[.<field>]`, so a corpus says where each seed came from; inputs the fuzzer adds are
named by their SHA-1, as libFuzzer does.
"""
import hashlib
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "keyring" / "testdata"
CORPUS = ROOT / "fuzz" / "corpus"

# Vector file name prefix -> fuzz target (longest prefix wins).
TARGETS = {
    "stanza_": "stanza",
    "manifest_": "manifest",
    "dek_record_": "dek_record",
    "backup_": "backup",
    "idfile_": "idfile",
    "consent_request_": "consent_request",
    "consent_signed_request_": "consent_request",
    "consent_grant_": "consent_grant",
    "consent_revocation_": "consent_revocation",
    "consent_denial_": "consent_denial",
    "consent_auth_": "consent_auth",
    "consent_peer_": "consent_peer",
    "consent_key_change_": "consent_key_change",
    "consent_register_": "consent_key_change",
    "checkpoint_": "checkpoint",
    "cosignature_": "checkpoint",
    "note_": "checkpoint",
    "peer_answer_": "peer_answer",
    "peer_chunk_": "peer_chunk",
    "rollover_": "rollover",
    "logentry_": "logentry",
}
# Header fields that hold another encoded value: field -> (target, hex or text).
FIELDS = {
    "request": ("consent_request", "hex"),
    "text": (None, "text"),  # the text form of the body: same target
    "expected": ("consent_auth", "hex"),
    "signer": ("checkpoint", "text"),
    "witness": ("checkpoint", "text"),
    "recipient": ("idfile", "text"),
}


def read_vector(path):
    header, body, in_body = {}, [], False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if in_body:
            body.append(line)
        elif line.startswith("#"):
            continue
        elif line == "":
            in_body = True
        else:
            key, _, value = line.partition(": ")
            header[key] = value
    if header.get("encoding") == "text":
        return header, "\n".join(body).encode()
    return header, bytes.fromhex("".join(body))


def target_of(name):
    best = max((p for p in TARGETS if name.startswith(p)), key=len, default=None)
    return TARGETS.get(best)


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def put_str(b):
    return struct.pack(">I", len(b)) + b


def main():
    vectors = {}
    for path in sorted(TESTDATA.rglob("*.txt")):
        if path.name == "rfc6962_vectors.txt":
            continue
        header, body = read_vector(path)
        vectors[path.stem] = (header, body)
        target = target_of(path.stem)
        if target is None:
            continue
        write(target, path.stem, body)
        for field, (ftarget, enc) in FIELDS.items():
            if field not in header or (field == "recipient" and not header[field].startswith("medgate1")):
                continue
            value = header[field]
            if field == "witness":
                value = value.split(" ")[0]  # "<vkey> <timestamp>"
            data = bytes.fromhex(value) if enc == "hex" else value.encode()
            write(ftarget or target, f"{path.stem}.{field}", data)

    # A vkey whose key id is in uppercase hex: accepted (as Go's note package does), printed in
    # lowercase. The first harness took that for a round-trip failure.
    name, key_id, key = vectors["checkpoint_v1_ok"][0]["signer"].split("+", 2)
    write("checkpoint", "checkpoint_v1_ok.signer-uppercase-id", f"{name}+{key_id.upper()}+{key}".encode())

    # Unsigned peer answers: the signed ok vectors without their 64-byte signature.
    for kind in ["request", "objects", "exchange"]:
        name = f"peer_answer_{kind}_ok"
        write("peer_answer", f"{name}.unsigned", vectors[name][1][:-64])

    # Backup payload framing: piece size byte ‖ the plaintext payload of the ok vector.
    payload = bytes.fromhex(vectors["backup_v1_ok"][0]["payload"])
    write("backup", "backup_v1_ok.payload", bytes([64]) + payload)
    write("backup", "backup_v1_ok.payload-bytewise", bytes([1]) + payload)

    # Patient index body, v1: version ‖ institution recipient ‖ patient fingerprint ‖ created ‖
    # patient id ‖ count ‖ records (bucket, key, manifest bytes, stanza).
    institution = bytes.fromhex(vectors["patient_index_v1_ok"][0]["institution"])
    manifest = vectors["manifest_v1_ok"][1]
    stanza = vectors["stanza_v1_ok"][1]
    record = put_str(b"radiology") + put_str(b"patient-0042/ct/1.dcm") + put_str(manifest) + stanza
    body = (b"\x01" + institution + bytes(range(32)) + struct.pack(">Q", 1700000000000)
            + put_str(b"patient-0042") + struct.pack(">I", 2) + record + record)
    write("patient_index", "patient_index_v1_ok.body", body)
    write("patient_index", "patient_index_empty.body",
          body[:1 + 64 + 32 + 8] + put_str(b"p") + struct.pack(">I", 0))
    # Body, v2: version 0x02 ‖ seq ‖ the v1 fields ‖ zero padding (to the 4 KiB bucket: the
    # sealed index adds 241 bytes of header, AEAD tag and signature).
    body_v2 = b"\x02" + struct.pack(">Q", 7) + body[1:]
    write("patient_index", "patient_index_v2_ok.body", body_v2 + bytes(4096 - 241 - len(body_v2)))
    write("patient_index", "patient_index_v2_unpadded.body", body_v2)
    empty_v2 = b"\x02" + struct.pack(">Q", 1) + body[1:1 + 64 + 32 + 8] + put_str(b"p") + struct.pack(">I", 0)
    write("patient_index", "patient_index_v2_empty.body", empty_v2 + bytes(4096 - 241 - len(empty_v2)))

    # Log entry, v1 (keyring/src/logentry.rs): one with every optional field, one with none.
    def entry(opt):
        s = lambda b: b"\x01" + put_str(b) if opt else b"\x00"
        return (b"\x01" + struct.pack(">QQ", 5, 1700000000000) + put_str(b"grant") + put_str(b"patient")
                + s(b"patient-0042") + struct.pack(">Q", 2) + bytes(32) + s(b"radiology")
                + s(b"patient-0042/ct/1.dcm") + s(b"fb1bb5a948d14aad9d65c83ce6dd5f2e")
                + (b"\x01" + bytes(range(32)) if opt else b"\x00") + put_str(b"{}"))
    write("logentry", "entry_full", entry(True))
    write("logentry", "entry_minimal", entry(False))

    # Proofs and tiles from the RFC 6962 known answers.
    leaves, roots = [], {}
    lines = (TESTDATA / "tlog" / "rfc6962_vectors.txt").read_text().splitlines()
    for line in lines:
        parts = line.split(" ")
        if parts[0] == "leaf":
            data = b"" if parts[1] == "-" else bytes.fromhex(parts[1])
            leaves.append(hashlib.sha256(b"\x00" + data).digest())
        elif parts[0] == "root":
            roots[int(parts[1])] = bytes.fromhex(parts[2])
    proof = lambda p: b"" if p == "-" else b"".join(bytes.fromhex(h) for h in p.split(","))
    for line in lines:
        parts = line.split(" ")
        if parts[0] == "inclusion":
            i, n = int(parts[1]), int(parts[2])
            write("merkle_proof", f"rfc6962.inclusion-{i}-{n}",
                  struct.pack(">QQ", i, n) + leaves[i] + roots[n] + proof(parts[3]))
        elif parts[0] == "consistency":
            a, b = int(parts[1]), int(parts[2])
            write("merkle_proof", f"rfc6962.consistency-{a}-{b}",
                  struct.pack(">QQ", a, b) + roots.get(a, bytes(32)) + roots[b] + proof(parts[3]))
    write("tiles", "rfc6962.size-8", struct.pack(">Q", 8) + b"".join(leaves))
    write("tiles", "rfc6962.size-5", struct.pack(">Q", 5) + b"".join(leaves[:5]))
    for path in ["tile/0/x001/x234/067.p/8", "tile/1/000", "0/x001/000", "tile/2/255.p/255"]:
        write("tiles", "path." + path.replace("/", "_"), path.encode())


if __name__ == "__main__":
    main()
