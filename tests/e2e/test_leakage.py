"""What the public store (the default folder DATA_DIR/public) may learn: blob
sizes and write times, nothing else. No names, no metadata, no plaintext."""

from __future__ import annotations

import json
import os
import secrets

import pytest

from support import BLOB_PATH_RE, MIB, blobs, client_for, get_bytes, sealed_size

WINDOW = 64  # no 64-byte window of any plaintext may appear in the public store
PROBE = WINDOW // 2  # stride/length of the probes that make the window check exact


def marker() -> str:
    return "MARK" + secrets.token_hex(12)


def plaintext_probes(plaintexts: list[bytes]) -> set[bytes]:
    """The PROBE-byte pieces of every plaintext at offsets that are multiples of PROBE.

    Any 64-byte window of a plaintext contains one of these whole (the first
    multiple of 32 at or after its start is at most 31 bytes in, and 31 + 32 <= 64),
    so a blob shares a 64-byte window with a plaintext only if it contains a probe.
    """
    probes = set()
    for p in plaintexts:
        for off in range(0, len(p) - PROBE + 1, PROBE):
            probes.add(p[off:off + PROBE])
    return probes


def first_shared_window(blob: bytes, probes: set[bytes]) -> int | None:
    for off in range(0, len(blob) - PROBE + 1):
        if blob[off:off + PROBE] in probes:
            return off
    return None


def fhir_bundle(tag: str) -> bytes:
    entries = [{"resource": {"resourceType": "Observation", "id": f"obs-{i}",
                             "subject": {"reference": f"Patient/{tag}"},
                             "valueQuantity": {"value": i * 1.5, "unit": "mmol/L"}}}
               for i in range(400)]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries},
                      indent=2).encode()


@pytest.mark.timeout_s(180)
def test_public_store_leaks_nothing(gateway):
    s3 = client_for(gateway)
    markers: list[str] = []

    def m() -> str:
        markers.append(marker())
        return markers[-1]

    buckets = [m().lower(), "records-" + m()[4:].lower()]
    objects: dict[tuple[str, str], dict] = {}
    for b in buckets:
        s3.create_bucket(Bucket=b)

    def put(bucket, key, body, meta=None, ctype=None):
        kw = {"Metadata": meta} if meta else {}
        if ctype:
            kw["ContentType"] = ctype
        s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)
        objects[(bucket, key)] = {"body": body, "meta": meta or {}}

    for i, b in enumerate(buckets):
        # Random bodies of 1-3 MiB with markers spliced in at chunk edges and inside.
        body = bytearray(os.urandom((1 + i) * MIB + 4321))
        for off in (0, 1000, MIB - 10, len(body) - 40):
            mk = m().encode()
            body[off:off + len(mk)] = mk
        put(b, f"patients/{m()}/ct-{m()}.dcm", bytes(body),
            meta={"patient-name": m(), "study-uid": m()}, ctype="application/dicom")
        # Text bodies: repetitive, low-entropy, the worst case for a weak cipher mode.
        put(b, f"fhir/{m()}.json", fhir_bundle(m()), meta={"source": m()},
            ctype="application/fhir+json")
        put(b, f"notes/{m()}.txt", (f"Patient {m()} has a history of {m()}.\n" * 5000).encode(),
            meta={"author": m()})
        put(b, f"tiny/{m()}", m().encode())
        put(b, f"empty/{m()}", b"")

    everything = gateway.public_files()
    files = blobs(everything)
    assert files, "nothing was written to DATA_DIR/public"
    # Beside the blobs, only the transparency log's checkpoint and hash tiles, published in the
    # background once a second (so they may or may not be there yet); they are searched for
    # plaintext below like the blobs.
    log = sorted(set(everything) - set(files))
    assert all(r == "v1/log/checkpoint" or r.startswith("v1/log/tile/") for r in log), log

    # Layout: only v1/b/<2 hex>/<32 hex>, the folder being the id's first byte.
    for rel in files:
        match = BLOB_PATH_RE.match(rel)
        assert match, f"unexpected file in the public store: {rel!r}"
        assert match.group(1) == match.group(2)[:2], f"{rel}: folder is not the id's first byte"
    assert sorted(files.values()) == sorted(sealed_size(len(o["body"])) for o in objects.values()), \
        "each single-PUT object should be exactly one blob of N + 16 * chunks bytes"

    names = set(buckets)
    for b, k in objects:
        names.add(k)
        names.update(part for part in k.split("/") if len(part.encode()) >= 8)
    needles = {n.encode() for n in names if len(n.encode()) >= 8}
    for mk in markers:
        needles.add(mk.encode())
        needles.add(mk[4:].encode())  # the random part alone
    probes = plaintext_probes([o["body"] for o in objects.values()])

    for rel in [*files, *log]:
        content = gateway.blob_path(rel).read_bytes()
        for needle in needles:
            assert needle not in content, f"{rel} contains plaintext {needle!r}"
        off = first_shared_window(content, probes)
        assert off is None, f"{rel} contains a 64-byte window of a plaintext near offset {off}"

    # And the records still read back (the check above is about the right blobs).
    for (b, k), o in objects.items():
        assert get_bytes(s3, b, k) == o["body"]
        assert s3.head_object(Bucket=b, Key=k)["Metadata"] == o["meta"]


def test_same_plaintext_gives_unrelated_blobs(gateway):
    """Two PUTs of the same bytes (same or different key) share no ciphertext."""
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="dedupe")
    body = (b"identical record body " * 50000)[:MIB + 100]
    s3.put_object(Bucket="dedupe", Key="a", Body=body)
    s3.put_object(Bucket="dedupe", Key="b", Body=body)
    s3.put_object(Bucket="dedupe", Key="a", Body=body)
    files = blobs(gateway.public_files())
    assert len(files) == 3
    contents = [gateway.blob_path(r).read_bytes() for r in files]
    probes = plaintext_probes([contents[0]])
    assert first_shared_window(contents[1], probes) is None
    assert first_shared_window(contents[2], probes) is None
    assert first_shared_window(contents[2], plaintext_probes([contents[1]])) is None


def test_secret_access_key_not_in_logs_or_public_store(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="secrets-check")
    s3.put_object(Bucket="secrets-check", Key="k", Body=b"x" * 1000)
    bad = client_for(gateway, secret="Z" * 40)
    try:
        bad.list_buckets()
    except Exception:
        pass
    assert gateway.stop() == 0
    secret = gateway.secret_access_key
    assert secret not in gateway.log_text(), "the S3 secret key appears in the gateway's output"
    for rel in gateway.public_files():
        assert secret.encode() not in gateway.blob_path(rel).read_bytes()
