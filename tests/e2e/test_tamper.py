"""A hostile public store: flipped bytes, swapped, truncated, deleted and rolled-back
blobs must make every read fail loudly, never return wrong bytes as a success.

Blobs are opaque by design, so each object's blob is found by listing the public
folder (DATA_DIR/public) before and after its PUT.
"""

from __future__ import annotations

import os

import pytest

from support import CHUNK, MIB, TAG, blobs, client_for, get_bytes, read_object, sealed_size

SIZE = 3 * MIB + 777  # four chunks, the last one short
SEALED_CHUNK = CHUNK + TAG


class Store:
    """A gateway, a client, one bucket and an untouched control object."""

    def __init__(self, gateway):
        self.gw = gateway
        # Short read timeout: a gateway that stalls instead of aborting shows as truncation.
        self.s3 = client_for(gateway, read_timeout=20)
        self.bucket = "tamper"
        self.s3.create_bucket(Bucket=self.bucket)
        self.control_body = os.urandom(SIZE)
        self.control_blob = self.put("control", self.control_body)

    def put(self, key: str, body: bytes) -> str:
        """PUTs and returns the relative path of the one new blob it wrote."""
        before = set(blobs(self.gw.public_files()))
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        after = blobs(self.gw.public_files())
        new = sorted(set(after) - before)
        assert len(new) == 1, f"PUT {key} should write exactly one blob, wrote {new}"
        assert after[new[0]] == sealed_size(len(body)), "unexpected blob size"
        return new[0]

    def path(self, rel: str):
        return self.gw.blob_path(rel)

    def flip(self, rel: str, offset: int):
        p = self.path(rel)
        data = bytearray(p.read_bytes())
        data[offset] ^= 0x01
        p.write_bytes(bytes(data))

    def check_control(self):
        assert self.path(self.control_blob).exists()
        assert get_bytes(self.s3, self.bucket, "control") == self.control_body, \
            "the untouched control object no longer reads identically"


@pytest.fixture
def store(gateway):
    return Store(gateway)


def assert_s3_error(out, what):
    """The read must fail before any body: a clean S3 error response."""
    assert out.kind == "error", f"{what}: expected an S3 error response, got {out!r}"
    assert out.status is not None and out.status >= 400, f"{what}: {out!r}"


def assert_no_wrong_bytes(out, body, what):
    """The read must fail, as an S3 error or a body cut short; never a full body."""
    if out.kind == "ok":
        if out.body == body:
            pytest.fail(f"{what}: tampering went unnoticed (full, correct body returned): {out!r}")
        pytest.fail(f"{what}: WRONG BYTES returned as a success: {out!r}")
    if out.kind == "truncated" and out.body is not None:
        assert len(out.body) < len(body), f"{what}: {out!r}"
        # What did arrive must be a true prefix: nothing wrong before the cut.
        assert out.body == body[:len(out.body)], f"{what}: wrong bytes before the abort"


def test_flip_byte_in_first_chunk(store):
    body = os.urandom(SIZE)
    rel = store.put("k", body)
    assert get_bytes(store.s3, store.bucket, "k") == body
    store.flip(rel, 10)
    assert_s3_error(read_object(store.s3, store.bucket, "k"), "flipped byte in chunk 0")
    assert_s3_error(read_object(store.s3, store.bucket, "k", Range="bytes=0-99"),
                    "range read of flipped chunk 0")
    store.check_control()


def test_flip_tag_byte_of_first_chunk(store):
    body = os.urandom(SIZE)
    rel = store.put("k", body)
    store.flip(rel, SEALED_CHUNK - 1)  # last byte of chunk 0's tag
    assert_s3_error(read_object(store.s3, store.bucket, "k"), "flipped tag byte of chunk 0")
    store.check_control()


def test_flip_byte_in_last_chunk(store):
    body = os.urandom(SIZE)
    rel = store.put("k", body)
    last_chunk_start = 3 * SEALED_CHUNK
    store.flip(rel, last_chunk_start + 100)
    out = read_object(store.s3, store.bucket, "k")
    assert_no_wrong_bytes(out, body, "flipped byte in the last chunk")
    # A range inside the last chunk alone: its first chunk is the tampered one.
    out = read_object(store.s3, store.bucket, "k", Range=f"bytes={3 * MIB}-{3 * MIB + 10}")
    assert_no_wrong_bytes(out, body[3 * MIB:3 * MIB + 11], "range read of the tampered last chunk")
    store.check_control()


@pytest.mark.parametrize("chunk", [8, 12])
def test_flip_byte_in_late_chunk_of_large_object(store, chunk):
    """Far enough in that the gateway has already sent headers and earlier chunks:
    the body must stop short of Content-Length, and what arrived must be correct."""
    body = os.urandom(12 * MIB + 5)  # 13 chunks, the last one 5 bytes
    rel = store.put("large", body)
    store.flip(rel, chunk * SEALED_CHUNK + 2)
    out = read_object(store.s3, store.bucket, "large")
    assert_no_wrong_bytes(out, body, f"flipped byte in chunk {chunk} of 13")
    if out.kind == "truncated" and out.body is not None:
        assert len(out.body) <= chunk * CHUNK, "bytes of the tampered chunk were released"
    store.check_control()


def test_flip_byte_in_middle_chunk(store):
    body = os.urandom(SIZE)
    rel = store.put("k", body)
    store.flip(rel, SEALED_CHUNK + 5)
    assert_no_wrong_bytes(read_object(store.s3, store.bucket, "k"), body, "flipped byte in chunk 1")
    store.check_control()


def test_swap_two_blobs(store):
    a, b = os.urandom(SIZE), os.urandom(SIZE)
    rel_a, rel_b = store.put("a", a), store.put("b", b)
    pa, pb = store.path(rel_a), store.path(rel_b)
    data_a, data_b = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(data_b)
    pb.write_bytes(data_a)
    for key, body in (("a", a), ("b", b)):
        out = read_object(store.s3, store.bucket, key)
        assert_no_wrong_bytes(out, body, f"swapped blob of {key}")
        assert_s3_error(out, f"swapped blob of {key} (chunk 0 is foreign)")
    store.check_control()


def test_swap_chunks_within_blob(store):
    body = os.urandom(SIZE)
    rel = store.put("k", body)
    p = store.path(rel)
    data = p.read_bytes()
    c0, c1 = data[:SEALED_CHUNK], data[SEALED_CHUNK:2 * SEALED_CHUNK]
    p.write_bytes(c1 + c0 + data[2 * SEALED_CHUNK:])
    assert_s3_error(read_object(store.s3, store.bucket, "k"), "reordered chunks 0 and 1")
    store.check_control()


def test_truncated_blob(store):
    body = os.urandom(SIZE)
    rel = store.put("k", body)
    p = store.path(rel)
    data = p.read_bytes()
    p.write_bytes(data[:-100])
    assert_no_wrong_bytes(read_object(store.s3, store.bucket, "k"), body, "truncated blob")
    store.check_control()


def test_blob_cut_to_whole_chunks(store):
    """Dropping the final chunk entirely (a clean chunk-boundary truncation)."""
    body = os.urandom(SIZE)
    rel = store.put("k", body)
    p = store.path(rel)
    p.write_bytes(p.read_bytes()[:3 * SEALED_CHUNK])
    assert_no_wrong_bytes(read_object(store.s3, store.bucket, "k"), body,
                          "blob without its last chunk")
    store.check_control()


def test_missing_blob(store):
    body = os.urandom(SIZE)
    rel = store.put("k", body)
    store.path(rel).unlink()
    assert_s3_error(read_object(store.s3, store.bucket, "k"), "deleted blob")
    store.check_control()


def test_rollback_to_previous_version(store):
    v1, v2 = os.urandom(SIZE), os.urandom(SIZE)
    b1 = store.put("k", v1)
    b2 = store.put("k", v2)  # the overwrite leaves B1 in place until gc
    assert b1 != b2
    assert store.path(b1).exists(), "an overwrite must not delete the old blob inline"
    assert get_bytes(store.s3, store.bucket, "k") == v2
    store.path(b2).write_bytes(store.path(b1).read_bytes())
    out = read_object(store.s3, store.bucket, "k")
    if out.kind == "ok" and out.body == v1:
        pytest.fail("rollback went unnoticed: the OLD version was served as the current one")
    assert_no_wrong_bytes(out, v2, "B1's bytes copied over B2")
    assert_s3_error(out, "B1's bytes copied over B2")
    store.check_control()


def test_splice_chunk_from_other_object(store):
    """Chunk 2 of object B pasted into object A at the same position."""
    a, b = os.urandom(SIZE), os.urandom(SIZE)
    rel_a, rel_b = store.put("a", a), store.put("b", b)
    da, db = bytearray(store.path(rel_a).read_bytes()), store.path(rel_b).read_bytes()
    lo, hi = 2 * SEALED_CHUNK, 3 * SEALED_CHUNK
    da[lo:hi] = db[lo:hi]
    store.path(rel_a).write_bytes(bytes(da))
    assert_no_wrong_bytes(read_object(store.s3, store.bucket, "a"), a, "spliced chunk")
    assert get_bytes(store.s3, store.bucket, "b") == b
    store.check_control()
