"""The real aws CLI (`aws s3 ...`) against medgate: buckets, uploads, downloads, listings."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib

import pytest

from support import MIB, REGION, random_name

SIZES = {
    "empty": 0,
    "one-byte": 1,
    "5MiB-plus-1": 5 * MIB + 1,
    "64MiB": 64 * MIB,
}


def write_random(path, size: int) -> str:
    """Writes `size` random bytes to `path` in pieces; returns their SHA-256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, 4 * MIB))
            h.update(piece)
            f.write(piece)
            left -= len(piece)
    return h.hexdigest()


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(4 * MIB), b""):
            h.update(piece)
    return h.hexdigest()


def ls_entries(stdout: str) -> dict[str, int]:
    """Parses `aws s3 ls s3://b/[prefix]` object lines: name -> size."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0][:4].isdigit():  # "2024-01-01 12:00:00  SIZE NAME"
            out[" ".join(parts[3:])] = int(parts[2])
    return out


def test_mb_ls_rb(gateway, aws):
    bucket = random_name("cli-mb")
    out = aws(gateway, "s3", "mb", f"s3://{bucket}")
    assert f"make_bucket: {bucket}" in out.stdout
    listing = aws(gateway, "s3", "ls").stdout
    assert bucket in [line.split()[-1] for line in listing.splitlines() if line.strip()]
    assert ls_entries(aws(gateway, "s3", "ls", f"s3://{bucket}").stdout) == {}
    out = aws(gateway, "s3", "rb", f"s3://{bucket}")
    assert f"remove_bucket: {bucket}" in out.stdout
    listing = aws(gateway, "s3", "ls").stdout
    assert bucket not in listing
    # The bucket is really gone: listing it now fails.
    gone = aws(gateway, "s3", "ls", f"s3://{bucket}", check=False)
    assert gone.returncode != 0
    assert "NoSuchBucket" in gone.stderr


@pytest.mark.timeout_s(300)
@pytest.mark.parametrize("label", list(SIZES))
def test_cp_roundtrip(gateway, aws, tmp_path, label):
    size = SIZES[label]
    bucket = random_name("cli-cp")
    key = f"studies/{label}.bin"
    src = tmp_path / "src.bin"
    dst = tmp_path / "dst.bin"
    digest = write_random(src, size)

    aws(gateway, "s3", "mb", f"s3://{bucket}")
    up = aws(gateway, "s3", "cp", str(src), f"s3://{bucket}/{key}")
    assert "upload: " in up.stdout and f"s3://{bucket}/{key}" in up.stdout

    entries = ls_entries(aws(gateway, "s3", "ls", f"s3://{bucket}/studies/").stdout)
    assert entries == {f"{label}.bin": size}

    down = aws(gateway, "s3", "cp", f"s3://{bucket}/{key}", str(dst))
    assert "download: " in down.stdout
    assert dst.stat().st_size == size
    assert file_sha256(dst) == digest, "downloaded bytes differ from the uploaded ones"

    rm = aws(gateway, "s3", "rm", f"s3://{bucket}/{key}")
    assert f"delete: s3://{bucket}/{key}" in rm.stdout
    assert ls_entries(aws(gateway, "s3", "ls", f"s3://{bucket}", "--recursive").stdout) == {}
    aws(gateway, "s3", "rb", f"s3://{bucket}")


@pytest.mark.timeout_s(180)
def test_full_flow_several_objects(gateway, aws, tmp_path):
    """mb, several uploads under prefixes, ls (flat and recursive), downloads, rm, rb."""
    bucket = random_name("cli-flow")
    files = {
        "empty.txt": 0,
        "a/one.bin": 1,
        "a/b/five.bin": 5 * MIB + 1,
        "report.pdf": 12345,
    }
    digests = {}
    aws(gateway, "s3", "mb", f"s3://{bucket}")
    for i, (key, size) in enumerate(files.items()):
        src = tmp_path / f"src{i}"
        digests[key] = write_random(src, size)
        aws(gateway, "s3", "cp", str(src), f"s3://{bucket}/{key}")

    top = aws(gateway, "s3", "ls", f"s3://{bucket}").stdout
    assert ls_entries(top) == {"empty.txt": 0, "report.pdf": 12345}
    assert "PRE a/" in top
    recursive = ls_entries(aws(gateway, "s3", "ls", f"s3://{bucket}", "--recursive").stdout)
    assert recursive == files

    for i, key in enumerate(files):
        dst = tmp_path / f"dst{i}"
        aws(gateway, "s3", "cp", f"s3://{bucket}/{key}", str(dst))
        assert file_sha256(dst) == digests[key], f"{key}: downloaded bytes differ"

    # rb refuses a non-empty bucket.
    refused = aws(gateway, "s3", "rb", f"s3://{bucket}", check=False)
    assert refused.returncode != 0
    assert "BucketNotEmpty" in refused.stderr

    aws(gateway, "s3", "rm", f"s3://{bucket}", "--recursive")
    assert ls_entries(aws(gateway, "s3", "ls", f"s3://{bucket}", "--recursive").stdout) == {}
    aws(gateway, "s3", "rb", f"s3://{bucket}")
    assert bucket not in aws(gateway, "s3", "ls").stdout


def test_odd_key_names_survive_listing(gateway, aws, tmp_path):
    """`aws s3 ls`/`rm --recursive` list with encoding-type=url: keys with '+', spaces,
    '%' or non-ASCII must come back exactly, or recursive operations miss them."""
    bucket = random_name("cli-keys")
    keys = ["plus+sign.txt", "space name.txt", "percent%41.txt", "ünï/cødé.txt", "amp&eq=.txt"]
    aws(gateway, "s3", "mb", f"s3://{bucket}")
    for i, key in enumerate(keys):
        src = tmp_path / f"src{i}"
        src.write_bytes(f"body {i}".encode())
        aws(gateway, "s3", "cp", str(src), f"s3://{bucket}/{key}")
    listed = ls_entries(aws(gateway, "s3", "ls", f"s3://{bucket}", "--recursive").stdout)
    assert sorted(listed) == sorted(keys)
    down = tmp_path / "down"
    aws(gateway, "s3", "cp", f"s3://{bucket}", str(down), "--recursive")
    for i, key in enumerate(keys):
        assert (down / key).read_bytes() == f"body {i}".encode(), key
    aws(gateway, "s3", "rm", f"s3://{bucket}", "--recursive")
    assert ls_entries(aws(gateway, "s3", "ls", f"s3://{bucket}", "--recursive").stdout) == {}
    aws(gateway, "s3", "rb", f"s3://{bucket}")


def test_wrong_secret_is_refused(gateway, aws):
    bucket = random_name("cli-auth")
    aws(gateway, "s3", "mb", f"s3://{bucket}")
    bad = aws(gateway, "s3", "ls", f"s3://{bucket}", check=False,
              secret="x" * 40)
    assert bad.returncode != 0
    assert "SignatureDoesNotMatch" in bad.stderr


def composite_crc32(path, part_size: int) -> tuple[str, int]:
    """S3's COMPOSITE CRC32 of a file uploaded in `part_size` parts: base64 of the CRC32
    of the concatenated part CRC32s, then -N."""
    raw = b""
    n = 0
    with open(path, "rb") as f:
        for part in iter(lambda: f.read(part_size), b""):
            raw += zlib.crc32(part).to_bytes(4, "big")
            n += 1
    return base64.b64encode(zlib.crc32(raw).to_bytes(4, "big")).decode() + f"-{n}", n


@pytest.mark.timeout_s(600)
@pytest.mark.parametrize("size", [100 * MIB, 1024 * MIB], ids=["100MiB", "1GiB"])
def test_cp_large_with_default_settings(gateway, aws, tmp_path, size):
    """`aws s3 cp` with no tuning: 8 MiB multipart parts, CRC32 on every part (botocore's
    default since 1.36). The object keeps the composite CRC32 S3 would give it, and reads
    back byte for byte."""
    # A config file with no s3 section, so the CLI's defaults apply (the fixture's raises
    # the multipart threshold).
    config = tmp_path / "aws-config-defaults"
    config.write_text(f"[default]\nregion = {REGION}\n")
    aws.config_path = config
    bucket = random_name("cli-big")
    src = tmp_path / "src.bin"
    dst = tmp_path / "dst.bin"
    digest = write_random(src, size)
    aws(gateway, "s3", "mb", f"s3://{bucket}")
    aws(gateway, "s3", "cp", "--no-progress", str(src), f"s3://{bucket}/big.bin", timeout=600)
    head = json.loads(aws(gateway, "s3api", "head-object", "--bucket", bucket,
                          "--key", "big.bin", "--checksum-mode", "ENABLED").stdout)
    want, parts = composite_crc32(src, 8 * MIB)
    assert head["ContentLength"] == size
    assert head["ETag"].endswith(f'-{parts}"'), head["ETag"]
    assert head["ChecksumCRC32"] == want
    assert head["ChecksumType"] == "COMPOSITE"
    aws(gateway, "s3", "cp", "--no-progress", f"s3://{bucket}/big.bin", str(dst), timeout=600)
    assert dst.stat().st_size == size
    assert file_sha256(dst) == digest, "downloaded bytes differ from the uploaded ones"
    src.unlink()
    dst.unlink()
