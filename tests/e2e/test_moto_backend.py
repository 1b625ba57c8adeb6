"""medgate with an S3 public store (a real moto_server): the aws CLI flow works,
and the store holds only opaque blobs under `<prefix>/v1/b/<2 hex>/<32 hex>`."""

from __future__ import annotations

import os
import re
import secrets

import pytest

from support import MIB, random_name, sealed_size

PUBLIC_BUCKET = "medgate-public"
PREFIX = "pfx"
BLOB_KEY_RE = re.compile(rf"^{PREFIX}/v1/b/([0-9a-f]{{2}})/([0-9a-f]{{32}})$")


def all_objects(client, bucket: str) -> dict[str, int]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


@pytest.mark.timeout_s(180)
def test_aws_cli_flow_over_s3_public_store(moto, gateway_factory, aws, tmp_path):
    moto_s3 = moto.client()
    moto_s3.create_bucket(Bucket=PUBLIC_BUCKET)
    gw = gateway_factory(
        public_store=f"s3://{PUBLIC_BUCKET}/{PREFIX}",
        public_store_opts={
            "endpoint": moto.endpoint,
            "allow_http": "true",
            "access_key_id": "test",
            "secret_access_key": "test",
            "region": "us-east-1",
        },
    )

    marker = "MARK" + secrets.token_hex(12)
    bucket = random_name("moto-" + marker[4:16])
    bodies = {
        f"{marker}/one.bin": b"\x5a",
        f"scans/{marker}-five.bin": marker.encode() + os.urandom(5 * MIB + 1 - len(marker)),
        "notes/report.txt": (f"patient {marker} report line\n" * 2000).encode(),
    }

    aws(gw, "s3", "mb", f"s3://{bucket}")
    for i, (key, body) in enumerate(bodies.items()):
        src = tmp_path / f"src{i}"
        src.write_bytes(body)
        aws(gw, "s3", "cp", str(src), f"s3://{bucket}/{key}")

    listed = aws(gw, "s3", "ls", f"s3://{bucket}", "--recursive").stdout
    for key, body in bodies.items():
        assert any(line.split()[2] == str(len(body)) and line.endswith(key)
                   for line in listed.splitlines()), f"{key} missing from `aws s3 ls`:\n{listed}"

    for i, (key, body) in enumerate(bodies.items()):
        dst = tmp_path / f"dst{i}"
        aws(gw, "s3", "cp", f"s3://{bucket}/{key}", str(dst))
        assert dst.read_bytes() == body, f"{key}: downloaded bytes differ"

    # What the public store holds: opaque names, sealed sizes, no plaintext.
    stored = all_objects(moto_s3, PUBLIC_BUCKET)
    assert stored, "nothing was written to the S3 public store"
    # The transparency log's signed checkpoint and leaf tiles (hashes only) live beside
    # the blobs; nothing else may.
    log = {n for n in stored if n.startswith(f"{PREFIX}/v1/log/")}
    assert all(n == f"{PREFIX}/v1/log/checkpoint" or n.startswith(f"{PREFIX}/v1/log/tile/")
               for n in log), sorted(log)
    stored = {n: s for n, s in stored.items() if n not in log}
    for name, size in stored.items():
        m = BLOB_KEY_RE.match(name)
        assert m, f"public object {name!r} is not under {PREFIX}/v1/b/<2 hex>/<32 hex>"
        assert m.group(1) == m.group(2)[:2], f"{name}: the folder is not the id's first byte"
    assert sorted(stored.values()) == sorted(sealed_size(len(b)) for b in bodies.values()), \
        "each single PUT should be one blob of N + 16 * chunks bytes"
    needles = [marker.encode(), marker[4:].encode(), bucket.encode(), b"report.txt",
               b"patient ", bodies[f"scans/{marker}-five.bin"][100:164]]
    for name in stored:
        content = moto_s3.get_object(Bucket=PUBLIC_BUCKET, Key=name)["Body"].read()
        for needle in needles:
            assert needle not in content, f"public blob {name} contains plaintext {needle[:40]!r}"

    for key in bodies:
        aws(gw, "s3", "rm", f"s3://{bucket}/{key}")
    assert aws(gw, "s3", "ls", f"s3://{bucket}", "--recursive").stdout.strip() == ""
    aws(gw, "s3", "rb", f"s3://{bucket}")
    # Deletes leave the blobs for gc (never deleted inline).
    left = all_objects(moto_s3, PUBLIC_BUCKET)
    assert {n: s for n, s in left.items() if not n.startswith(f"{PREFIX}/v1/log/")} == stored


def test_public_store_prefix_is_respected(moto, gateway_factory, aws, tmp_path):
    """Nothing is written outside the configured prefix of the public bucket."""
    moto_s3 = moto.client()
    moto_s3.create_bucket(Bucket=PUBLIC_BUCKET)
    moto_s3.put_object(Bucket=PUBLIC_BUCKET, Key="unrelated/keep.txt", Body=b"not medgate's")
    gw = gateway_factory(
        public_store=f"s3://{PUBLIC_BUCKET}/{PREFIX}",
        public_store_opts={"endpoint": moto.endpoint, "allow_http": "true",
                           "access_key_id": "test", "secret_access_key": "test",
                           "region": "us-east-1"},
    )
    bucket = random_name("prefix")
    aws(gw, "s3", "mb", f"s3://{bucket}")
    src = tmp_path / "one"
    src.write_bytes(b"1")
    aws(gw, "s3", "cp", str(src), f"s3://{bucket}/one")
    stored = all_objects(moto_s3, PUBLIC_BUCKET)
    outside = sorted(k for k in stored if not k.startswith(f"{PREFIX}/"))
    assert outside == ["unrelated/keep.txt"]
    assert moto_s3.get_object(Bucket=PUBLIC_BUCKET, Key="unrelated/keep.txt")["Body"].read() \
        == b"not medgate's"
    ours = {k: s for k, s in stored.items() if k.startswith(f"{PREFIX}/")}
    # One sealed blob; the rest, if the log has published yet, is the log's checkpoint and tiles,
    # also under the prefix (publication runs after the write's batch, so it may or may not be there).
    assert [s for k, s in ours.items() if k.startswith(f"{PREFIX}/v1/b/")] == [sealed_size(1)]
    assert all(k.startswith((f"{PREFIX}/v1/b/", f"{PREFIX}/v1/log/")) for k in ours), sorted(ours)
