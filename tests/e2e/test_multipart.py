"""S3 multipart upload through medgate: boto3 (concurrent, out-of-order and replaced parts,
ListParts/ListMultipartUploads, Abort, every CompleteMultipartUpload error, If-None-Match),
the real aws CLI with its default multipart settings (file and stdin), and `medgate gc`
aborting idle uploads. Each part is sealed into its own public blob, so the public folder
is checked too: which blobs appear, which disappear on abort/gc and which stay."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from support import (
    BLOB_PATH_RE,
    MIB,
    REGION,
    blobs,
    client_for,
    get_bytes,
    md5_etag,
    random_name,
    sealed_size,
)

MIN_PART = 5 * MIB  # S3's minimum size of every part but the last


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def multipart_etag(parts: list[bytes]) -> str:
    """S3's multipart ETag: md5 of the concatenated binary part MD5s, dash, part count."""
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'


def client_error(fn, *args, **kwargs) -> ClientError:
    with pytest.raises(ClientError) as exc:
        fn(*args, **kwargs)
    return exc.value


def code_and_status(e: ClientError) -> tuple[str, int]:
    return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


def upload_part(client, bucket, key, upload_id, number, body) -> str:
    resp = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                              PartNumber=number, Body=body)
    assert resp["ETag"] == md5_etag(body), (
        f"UploadPart {number}: ETag {resp['ETag']} is not the MD5 of the part {md5_etag(body)}")
    return resp["ETag"]


def complete(client, bucket, key, upload_id, parts: list[tuple[int, str]], **kw):
    return client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]}, **kw)


def upload_ids(client, bucket, **kw) -> list[tuple[str, str]]:
    resp = client.list_multipart_uploads(Bucket=bucket, **kw)
    return sorted((u["Key"], u["UploadId"]) for u in resp.get("Uploads", []))


def new_blobs(gw, before: dict[str, int]) -> dict[str, int]:
    """Blobs in the public folder now that were not in `before`."""
    now = blobs(gw.public_files())
    return {k: v for k, v in now.items() if k not in before}


def gc(gw, *extra: str, grace: str = "0s") -> str:
    cp = gw.run_cli("gc", "--data-dir", str(gw.data_dir), "--grace", grace, *extra)
    out = (cp.stdout + cp.stderr).decode(errors="replace")
    assert cp.returncode == 0, f"medgate gc {' '.join(extra)} exited {cp.returncode}:\n{out}"
    return out


def aborted_count(gc_output: str, verb: str) -> int:
    m = re.search(rf"{verb} (\d+) multipart uploads", gc_output)
    assert m, f"gc output does not say how many multipart uploads it {verb!r}:\n{gc_output}"
    return int(m.group(1))


# ---------------------------------------------------------------------------
# 1. Concurrent, out-of-order, replaced parts; reads; blobs; gc keeps the object
# ---------------------------------------------------------------------------


@pytest.mark.timeout_s(120)
def test_multipart_roundtrip_out_of_order_replaced_part(gateway):
    s3 = client_for(gateway)
    bucket, key = random_name("mpu"), "scans/patient-7/ct.dcm"
    s3.create_bucket(Bucket=bucket)
    before = blobs(gateway.public_files())

    parts = [os.urandom(MIN_PART + 7), os.urandom(MIN_PART + 7), os.urandom(MIB + 3)]
    replacement = os.urandom(len(parts[1]))
    meta = {"patient": "p-0007", "modality": "CT"}
    created = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=meta,
                                         ContentType="application/dicom")
    upload_id = created["UploadId"]
    assert created["Key"] == key and upload_id

    # Three threads, each with its own client, in reverse order: part 3 goes up first,
    # then parts 2 and 1 concurrently.
    etags: dict[int, str] = {}
    errors: list[BaseException] = []
    part3_done = threading.Event()

    def worker(number: int):
        try:
            if number != 3:
                assert part3_done.wait(60), "part 3 never finished"
            c = client_for(gateway)
            etags[number] = upload_part(c, bucket, key, upload_id, number, parts[number - 1])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            if number == 3:
                part3_done.set()

    threads = [threading.Thread(target=worker, args=(n,)) for n in (3, 2, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, f"part uploads failed: {errors!r}"
    assert sorted(etags) == [1, 2, 3]

    # Part 2 again, with different bytes: the later upload replaces the earlier one.
    etags[2] = upload_part(s3, bucket, key, upload_id, 2, replacement)
    parts[1] = replacement
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (n, etags[n], len(parts[n - 1])) for n in (1, 2, 3)]

    done = complete(s3, bucket, key, upload_id, [(n, etags[n]) for n in (1, 2, 3)])
    expected_etag = multipart_etag(parts)
    assert done["ETag"] == expected_etag
    assert done["Key"] == key and done["Bucket"] == bucket
    assert upload_ids(s3, bucket) == [], "a completed upload must leave ListMultipartUploads"

    body = b"".join(parts)
    assert get_bytes(s3, bucket, key) == body, "GET of the completed object differs"
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == expected_etag
    assert head["Metadata"] == meta
    assert head["ContentType"] == "application/dicom"
    got = s3.get_object(Bucket=bucket, Key=key)
    got["Body"].close()
    assert got["ETag"] == expected_etag and got["Metadata"] == meta

    # 30 seeded random ranges, each spanning one or both part boundaries.
    b1, b2 = len(parts[0]), len(parts[0]) + len(parts[1])
    rng = random.Random(20240607)
    ranges = []
    for i in range(30):
        if i % 3 == 0:
            first, last = b1 - rng.randint(1, 3 * MIB), b1 + rng.randint(0, MIB)
        elif i % 3 == 1:
            first, last = b2 - rng.randint(1, 2 * MIB), b2 + rng.randint(0, len(parts[2]) - 1)
        else:  # across both boundaries
            first, last = b1 - rng.randint(1, MIB), b2 + rng.randint(0, MIB)
        ranges.append((first, last))
    # The exact edges as well.
    ranges += [(b1 - 1, b1), (b1, b1), (b2 - 1, b2), (b2, len(body) - 1), (0, len(body) - 1)]
    for first, last in ranges:
        resp = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")
        data = resp["Body"].read()
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 206, (first, last)
        assert resp["ContentRange"] == f"bytes {first}-{last}/{len(body)}"
        assert resp["ContentLength"] == last - first + 1, (first, last)
        assert data == body[first:last + 1], f"Range bytes={first}-{last} returned wrong bytes"

    # Each part is its own sealed blob; the replaced part 2 may linger until gc.
    sizes = sorted(sealed_size(len(p)) for p in parts)
    added = new_blobs(gateway, before)
    assert all(BLOB_PATH_RE.match(p) for p in added), sorted(added)
    assert len(added) in (3, 4), f"expected 3 part blobs (+1 replaced), got {sorted(added.items())}"
    if len(added) == 4:
        assert sorted(added.values()) == sorted(sizes + [sealed_size(len(replacement))])
    else:
        assert sorted(added.values()) == sizes

    assert gateway.stop() == 0
    time.sleep(1.1)  # every blob is now older than --grace 0s
    out = gc(gateway, "--apply")
    remaining = new_blobs(gateway, before)
    assert len(remaining) == 3 and sorted(remaining.values()) == sizes, (
        f"after gc exactly the object's 3 part blobs must remain: {sorted(remaining.items())}\n"
        f"gc said:\n{out}")
    assert set(remaining) <= set(added)
    assert blobs(gateway.public_files()) == {**before, **remaining}

    gateway.start()
    s3 = client_for(gateway)
    assert get_bytes(s3, bucket, key) == body, "the object no longer reads after gc"
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"] == expected_etag


# ---------------------------------------------------------------------------
# 2. ListParts, ListMultipartUploads, Abort
# ---------------------------------------------------------------------------


def test_list_parts_list_uploads_and_abort(gateway):
    s3 = client_for(gateway)
    bucket = random_name("mpu-list")
    s3.create_bucket(Bucket=bucket)
    before = blobs(gateway.public_files())

    key_a, key_b = "ward-1/a.bin", "ward-2/b.bin"
    up_a = s3.create_multipart_upload(Bucket=bucket, Key=key_a)["UploadId"]
    up_b = s3.create_multipart_upload(Bucket=bucket, Key=key_b)["UploadId"]
    assert up_a != up_b

    parts_a = {1: os.urandom(100_000), 2: os.urandom(MIB + 5), 3: os.urandom(77)}
    etags_a = {n: upload_part(s3, bucket, key_a, up_a, n, b) for n, b in parts_a.items()}
    part_b = os.urandom(4321)
    upload_part(s3, bucket, key_b, up_b, 1, part_b)

    after_upload = new_blobs(gateway, before)
    assert sorted(after_upload.values()) == sorted(
        sealed_size(len(b)) for b in [*parts_a.values(), part_b])

    # ListParts: everything, then MaxParts=2 pagination.
    full = s3.list_parts(Bucket=bucket, Key=key_a, UploadId=up_a)
    assert full["UploadId"] == up_a and full["Key"] == key_a
    assert not full["IsTruncated"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in full["Parts"]] == [
        (n, etags_a[n], len(parts_a[n])) for n in (1, 2, 3)]

    page1 = s3.list_parts(Bucket=bucket, Key=key_a, UploadId=up_a, MaxParts=2)
    assert page1["IsTruncated"] is True
    assert [p["PartNumber"] for p in page1["Parts"]] == [1, 2]
    assert page1["NextPartNumberMarker"] == 2
    assert page1["MaxParts"] == 2
    page2 = s3.list_parts(Bucket=bucket, Key=key_a, UploadId=up_a, MaxParts=2,
                          PartNumberMarker=page1["NextPartNumberMarker"])
    assert page2["IsTruncated"] is False
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in page2["Parts"]] == [
        (3, etags_a[3], len(parts_a[3]))]
    # The paginator walks the same pages.
    pages = s3.get_paginator("list_parts").paginate(
        Bucket=bucket, Key=key_a, UploadId=up_a, PaginationConfig={"PageSize": 2})
    assert [p["PartNumber"] for page in pages for p in page.get("Parts", [])] == [1, 2, 3]

    b_parts = s3.list_parts(Bucket=bucket, Key=key_b, UploadId=up_b)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in b_parts] == [(1, len(part_b))]

    # ListMultipartUploads, with and without a Prefix.
    assert upload_ids(s3, bucket) == sorted([(key_a, up_a), (key_b, up_b)])
    assert upload_ids(s3, bucket, Prefix="ward-1/") == [(key_a, up_a)]
    assert upload_ids(s3, bucket, Prefix="ward-2/") == [(key_b, up_b)]
    assert upload_ids(s3, bucket, Prefix="ward-3/") == []

    # Abort A: gone from every API, its part blobs gone from the public folder at once.
    resp = s3.abort_multipart_upload(Bucket=bucket, Key=key_a, UploadId=up_a)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    e = client_error(s3.upload_part, Bucket=bucket, Key=key_a, UploadId=up_a, PartNumber=4,
                     Body=b"late")
    assert code_and_status(e) == ("NoSuchUpload", 404)
    e = client_error(s3.list_parts, Bucket=bucket, Key=key_a, UploadId=up_a)
    assert code_and_status(e) == ("NoSuchUpload", 404)
    assert upload_ids(s3, bucket) == [(key_b, up_b)]

    remaining = new_blobs(gateway, before)
    assert sorted(remaining.values()) == [sealed_size(len(part_b))], (
        f"aborting must delete the upload's part blobs at once: {sorted(remaining.items())}")
    assert set(remaining) <= set(after_upload)
    # No object was created by the aborted upload.
    e = client_error(s3.head_object, Bucket=bucket, Key=key_a)
    assert code_and_status(e)[1] == 404

    # B is untouched and still completes (a single part may be small).
    done = complete(s3, bucket, key_b, up_b, [(1, md5_etag(part_b))])
    assert done["ETag"] == multipart_etag([part_b])
    assert get_bytes(s3, bucket, key_b) == part_b
    assert upload_ids(s3, bucket) == []


# ---------------------------------------------------------------------------
# 3. CompleteMultipartUpload errors; the upload survives each of them
# ---------------------------------------------------------------------------


@pytest.mark.timeout_s(120)
def test_complete_errors_leave_the_upload_usable(gateway):
    s3 = client_for(gateway)
    bucket, key = random_name("mpu-err"), "errors/obj.bin"
    s3.create_bucket(Bucket=bucket)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    # Both parts are >= 5 MiB so each bad request below is wrong in exactly one way.
    p1, p2 = os.urandom(MIN_PART + 1), os.urandom(MIN_PART + 2)
    e1 = upload_part(s3, bucket, key, upload_id, 1, p1)
    e2 = upload_part(s3, bucket, key, upload_id, 2, p2)

    def still_usable():
        listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
        assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, e1), (2, e2)]
        assert upload_ids(s3, bucket, Prefix=key) == [(key, upload_id)]
        assert client_error(s3.head_object, Bucket=bucket, Key=key).response[
            "ResponseMetadata"]["HTTPStatusCode"] == 404, "a failed Complete created the object"

    cases = [
        ("InvalidPartOrder", [(2, e2), (1, e1)]),
        ("InvalidPart", [(1, md5_etag(b"not part one")), (2, e2)]),  # wrong ETag
        ("InvalidPart", [(1, e1), (2, e1)]),  # another part's ETag
        ("InvalidPart", [(1, e1), (2, e2), (3, md5_etag(b"never uploaded"))]),  # no part 3
        ("InvalidPart", [(1, e1), (7, e2)]),  # no part 7
    ]
    for want, parts in cases:
        e = client_error(complete, s3, bucket, key, upload_id, parts)
        assert code_and_status(e) == (want, 400), f"Complete with {parts}: {e.response['Error']}"
        still_usable()

    e = client_error(complete, s3, bucket, key, "bogus-upload-id-0000", [(1, e1), (2, e2)])
    assert code_and_status(e) == ("NoSuchUpload", 404)
    still_usable()

    done = complete(s3, bucket, key, upload_id, [(1, e1), (2, e2)])
    assert done["ETag"] == multipart_etag([p1, p2])
    assert get_bytes(s3, bucket, key) == p1 + p2
    e = client_error(s3.list_parts, Bucket=bucket, Key=key, UploadId=upload_id)
    assert code_and_status(e) == ("NoSuchUpload", 404)


@pytest.mark.timeout_s(120)
def test_entity_too_small_then_fixed_and_unlisted_parts_left_out(gateway):
    s3 = client_for(gateway)
    bucket, key = random_name("mpu-small"), "small/obj.bin"
    s3.create_bucket(Bucket=bucket)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    small, tail = os.urandom(MIB), os.urandom(10)
    e_small = upload_part(s3, bucket, key, upload_id, 1, small)
    e_tail = upload_part(s3, bucket, key, upload_id, 2, tail)

    e = client_error(complete, s3, bucket, key, upload_id, [(1, e_small), (2, e_tail)])
    assert code_and_status(e) == ("EntityTooSmall", 400), e.response["Error"]
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, e_small), (2, e_tail)]
    assert code_and_status(client_error(s3.head_object, Bucket=bucket, Key=key))[1] == 404

    # Fix it: part 1 again at 5 MiB. Part 3 is uploaded but not listed in Complete,
    # so it is not part of the object.
    big = os.urandom(MIN_PART)
    e_big = upload_part(s3, bucket, key, upload_id, 1, big)
    upload_part(s3, bucket, key, upload_id, 3, os.urandom(MIN_PART))
    done = complete(s3, bucket, key, upload_id, [(1, e_big), (2, e_tail)])
    assert done["ETag"] == multipart_etag([big, tail])
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(big) + len(tail)
    assert get_bytes(s3, bucket, key) == big + tail


# ---------------------------------------------------------------------------
# 4. If-None-Match: * on CompleteMultipartUpload
# ---------------------------------------------------------------------------


def test_complete_if_none_match(gateway):
    s3 = client_for(gateway)
    bucket = random_name("mpu-cond")
    s3.create_bucket(Bucket=bucket)
    original = os.urandom(2000)
    s3.put_object(Bucket=bucket, Key="taken", Body=original)

    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="taken")["UploadId"]
    part = os.urandom(3000)
    etag = upload_part(s3, bucket, "taken", upload_id, 1, part)
    e = client_error(complete, s3, bucket, "taken", upload_id, [(1, etag)], IfNoneMatch="*")
    assert code_and_status(e) == ("PreconditionFailed", 412), e.response["Error"]
    assert get_bytes(s3, bucket, "taken") == original, "a refused Complete changed the object"
    assert s3.head_object(Bucket=bucket, Key="taken")["ETag"] == md5_etag(original)

    # On a free key the same conditional Complete succeeds.
    fresh = s3.create_multipart_upload(Bucket=bucket, Key="free")["UploadId"]
    etag = upload_part(s3, bucket, "free", fresh, 1, part)
    done = complete(s3, bucket, "free", fresh, [(1, etag)], IfNoneMatch="*")
    assert done["ETag"] == multipart_etag([part])
    assert get_bytes(s3, bucket, "free") == part


# ---------------------------------------------------------------------------
# 5. The aws CLI with its default multipart settings (8 MiB threshold and parts)
# ---------------------------------------------------------------------------


def write_random(path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def default_cli_env(aws, gw, config_path) -> dict[str, str]:
    """The environment AwsCli builds, but with a config file that has no s3 section."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_CONFIG_FILE": str(config_path),
        "AWS_SHARED_CREDENTIALS_FILE": str(config_path.parent / "no-credentials"),
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
        "AWS_ACCESS_KEY_ID": gw.access_key_id,
        "AWS_SECRET_ACCESS_KEY": gw.secret_access_key,
    })
    return env


def cli_with_stdin(aws, gw, config_path, *args, stdin) -> subprocess.CompletedProcess:
    cp = subprocess.run([aws.exe, *args, "--endpoint-url", gw.endpoint], stdin=stdin,
                        capture_output=True, env=default_cli_env(aws, gw, config_path),
                        timeout=180)
    assert cp.returncode == 0, (f"`aws {' '.join(args)}` exited {cp.returncode}\n"
                                f"stderr:\n{cp.stderr.decode(errors='replace')}")
    return cp


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.timeout_s(150)
def test_aws_cli_default_multipart(gateway, aws, tmp_path):
    # A fresh config file with no s3 section: the CLI's defaults apply (8 MiB threshold
    # and chunk size). The fixture's file raises the threshold to 2GB, so replace it.
    config = tmp_path / "aws-config-defaults"
    config.write_text(f"[default]\nregion = {REGION}\n")
    aws.config_path = config
    s3 = client_for(gateway)
    bucket = random_name("mpu-cli")
    aws(gateway, "s3", "mb", f"s3://{bucket}")
    before = blobs(gateway.public_files())

    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = write_random(src, 40 * MIB)
    aws(gateway, "s3", "cp", str(src), f"s3://{bucket}/big/file.bin")
    head = s3.head_object(Bucket=bucket, Key="big/file.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == multipart_etag(split(data, 8 * MIB)), (
        "the CLI should have uploaded 5 parts of 8 MiB")
    added = new_blobs(gateway, before)
    assert sorted(added.values()) == [sealed_size(8 * MIB)] * 5, sorted(added.items())
    aws(gateway, "s3", "cp", f"s3://{bucket}/big/file.bin", str(dst))
    assert dst.read_bytes() == data, "40 MiB CLI download differs from the upload"

    # Upload from stdin (size unknown to the CLI), download to stdout.
    piped = write_random(tmp_path / "piped.bin", 20 * MIB)
    before = blobs(gateway.public_files())
    with open(tmp_path / "piped.bin", "rb") as fh:
        cli_with_stdin(aws, gateway, config, "s3", "cp", "-", f"s3://{bucket}/piped.bin",
                       stdin=fh)
    head = s3.head_object(Bucket=bucket, Key="piped.bin")
    assert head["ContentLength"] == len(piped)
    assert head["ETag"] == multipart_etag(split(piped, 8 * MIB))
    added = new_blobs(gateway, before)
    assert sorted(added.values()) == sorted(
        sealed_size(len(p)) for p in split(piped, 8 * MIB)), sorted(added.items())
    out = cli_with_stdin(aws, gateway, config, "s3", "cp", f"s3://{bucket}/piped.bin", "-",
                         stdin=subprocess.DEVNULL)
    assert out.stdout == piped, "stdin-uploaded object does not round trip"
    assert get_bytes(s3, bucket, "piped.bin") == piped
    assert upload_ids(s3, bucket) == []


# ---------------------------------------------------------------------------
# 6. gc aborts idle multipart uploads and deletes their parts
# ---------------------------------------------------------------------------


@pytest.mark.timeout_s(120)
def test_gc_aborts_idle_multipart_uploads(gateway):
    s3 = client_for(gateway)
    bucket = random_name("mpu-gc")
    s3.create_bucket(Bucket=bucket)

    # A completed multipart object, which gc must keep.
    done_parts = [os.urandom(MIN_PART + 1), os.urandom(1234)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="done")["UploadId"]
    tags = [upload_part(s3, bucket, "done", up, i + 1, p) for i, p in enumerate(done_parts)]
    complete(s3, bucket, "done", up, [(i + 1, t) for i, t in enumerate(tags)])
    kept = blobs(gateway.public_files())
    assert len(kept) == 2

    idle = s3.create_multipart_upload(Bucket=bucket, Key="idle")["UploadId"]
    idle_parts = [os.urandom(MIB + 9), os.urandom(4000)]
    for i, p in enumerate(idle_parts):
        upload_part(s3, bucket, "idle", idle, i + 1, p)
    idle_blobs = new_blobs(gateway, kept)
    assert sorted(idle_blobs.values()) == sorted(sealed_size(len(p)) for p in idle_parts)

    assert gateway.stop() == 0
    everything = gateway.public_files()

    # A long grace period keeps the young upload.
    out = gc(gateway, "--apply", grace="1h")
    assert aborted_count(out, "aborted") == 0, out
    assert gateway.public_files() == everything

    time.sleep(1.1)  # now idle for longer than --grace 0s
    out = gc(gateway)
    assert aborted_count(out, "would abort") == 1, out
    assert gateway.public_files() == everything, "a gc dry run must delete nothing"

    out = gc(gateway, "--apply")
    assert aborted_count(out, "aborted") == 1, out
    left = blobs(gateway.public_files())
    assert left == kept, (f"gc should delete exactly the idle upload's part blobs: "
                          f"left {sorted(left.items())}, expected {sorted(kept.items())}\n{out}")

    gateway.start()
    s3 = client_for(gateway)
    assert upload_ids(s3, bucket) == []
    e = client_error(s3.list_parts, Bucket=bucket, Key="idle", UploadId=idle)
    assert code_and_status(e) == ("NoSuchUpload", 404)
    assert get_bytes(s3, bucket, "done") == b"".join(done_parts)
    assert s3.head_object(Bucket=bucket, Key="done")["ETag"] == multipart_etag(done_parts)
