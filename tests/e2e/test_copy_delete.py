"""CopyObject (O(1): shared blobs and data key, reference-counted) and DeleteObjects."""

from __future__ import annotations

import os
import re

import pytest
from botocore.exceptions import ClientError

from support import MIB, blobs, client_for, get_bytes, md5_etag


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def test_copy_shares_blobs_and_survives_deleting_either_side(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="src-bkt")
    s3.create_bucket(Bucket="dst-bkt")
    body = os.urandom(3 * MIB + 11)
    s3.put_object(Bucket="src-bkt", Key="scan.dcm", Body=body, ContentType="application/dicom",
                  Metadata={"study": "s-1"})
    before = blobs(gateway.public_files())

    out = s3.copy_object(Bucket="dst-bkt", Key="copy.dcm",
                         CopySource={"Bucket": "src-bkt", "Key": "scan.dcm"})
    assert out["CopyObjectResult"]["ETag"] == md5_etag(body)
    assert blobs(gateway.public_files()) == before, "a copy must not write any blob"
    head = s3.head_object(Bucket="dst-bkt", Key="copy.dcm")
    assert head["ContentType"] == "application/dicom"
    assert head["Metadata"] == {"study": "s-1"}
    assert get_bytes(s3, "dst-bkt", "copy.dcm") == body

    # Same-bucket copy with REPLACE metadata.
    s3.copy_object(Bucket="src-bkt", Key="renamed.dcm", MetadataDirective="REPLACE",
                   ContentType="application/octet-stream", Metadata={"study": "s-2"},
                   CopySource={"Bucket": "src-bkt", "Key": "scan.dcm"})
    head = s3.head_object(Bucket="src-bkt", Key="renamed.dcm")
    assert head["ContentType"] == "application/octet-stream"
    assert head["Metadata"] == {"study": "s-2"}

    # Deleting the source keeps the copies readable (reference counts).
    s3.delete_object(Bucket="src-bkt", Key="scan.dcm")
    assert get_bytes(s3, "dst-bkt", "copy.dcm") == body
    assert get_bytes(s3, "src-bkt", "renamed.dcm") == body
    assert gateway.stop() == 0
    gc = gateway.run_cli("gc", "--data-dir", str(gateway.data_dir), "--grace", "0s", "--apply")
    assert gc.returncode == 0, gc.stderr
    gateway.start()
    s3 = client_for(gateway)
    assert blobs(gateway.public_files()) == before, "gc must keep a blob that copies still use"
    assert get_bytes(s3, "dst-bkt", "copy.dcm") == body

    # Deleting every copy releases the blob; gc then removes it.
    s3.delete_object(Bucket="dst-bkt", Key="copy.dcm")
    s3.delete_object(Bucket="src-bkt", Key="renamed.dcm")
    assert gateway.stop() == 0
    gc = gateway.run_cli("gc", "--data-dir", str(gateway.data_dir), "--grace", "0s", "--apply")
    assert gc.returncode == 0, gc.stderr
    assert re.search(rb"deleted 1 unreferenced blobs", gc.stdout), gc.stdout
    assert blobs(gateway.public_files()) == {}


def test_copy_errors_and_conditions(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="cp-err")
    s3.put_object(Bucket="cp-err", Key="a", Body=b"alpha", Metadata={"m": "1"})
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="cp-err", Key="a", CopySource={"Bucket": "cp-err", "Key": "a"})
    assert code(e.value) == "InvalidRequest"
    # Copying onto itself with REPLACE is how clients change metadata.
    s3.copy_object(Bucket="cp-err", Key="a", CopySource={"Bucket": "cp-err", "Key": "a"},
                   MetadataDirective="REPLACE", Metadata={"m": "2"})
    assert s3.head_object(Bucket="cp-err", Key="a")["Metadata"] == {"m": "2"}
    assert get_bytes(s3, "cp-err", "a") == b"alpha"

    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="cp-err", Key="b", CopySource={"Bucket": "cp-err", "Key": "missing"})
    assert code(e.value) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="cp-err", Key="b", CopySource={"Bucket": "cp-err", "Key": "a"},
                       CopySourceIfMatch='"00000000000000000000000000000000"')
    assert code(e.value) == "PreconditionFailed"
    s3.copy_object(Bucket="cp-err", Key="b", CopySource={"Bucket": "cp-err", "Key": "a"},
                   CopySourceIfMatch=md5_etag(b"alpha"))
    assert get_bytes(s3, "cp-err", "b") == b"alpha"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="cp-err", Key="c", CopySource={"Bucket": "cp-err", "Key": "a"},
                       CopySourceIfNoneMatch=md5_etag(b"alpha"))
    assert code(e.value) == "PreconditionFailed"


def test_limited_key_cannot_copy_out_of_another_bucket(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="ward-x")
    s3.create_bucket(Bucket="ward-y")
    s3.put_object(Bucket="ward-y", Key="private.pdf", Body=b"y only")
    cp = gateway.run_cli("access-key", "create", "--data-dir", str(gateway.data_dir),
                         "--bucket", "ward-x")
    assert cp.returncode == 0, cp.stderr
    kid = re.search(rb"aws_access_key_id = (\S+)", cp.stdout).group(1).decode()
    secret = re.search(rb"aws_secret_access_key = (\S+)", cp.stdout).group(1).decode()
    limited = client_for(gateway, access_key_id=kid, secret=secret)
    with pytest.raises(ClientError) as e:
        limited.copy_object(Bucket="ward-x", Key="stolen.pdf",
                            CopySource={"Bucket": "ward-y", "Key": "private.pdf"})
    assert code(e.value) == "AccessDenied"
    with pytest.raises(ClientError):
        s3.head_object(Bucket="ward-x", Key="stolen.pdf")


def test_aws_cli_server_side_copy(gateway, aws, tmp_path):
    src = tmp_path / "rec.bin"
    src.write_bytes(os.urandom(2 * MIB + 5))
    aws(gateway, "s3", "mb", "s3://cli-a")
    aws(gateway, "s3", "mb", "s3://cli-b")
    aws(gateway, "s3", "cp", str(src), "s3://cli-a/rec.bin")
    before = blobs(gateway.public_files())
    aws(gateway, "s3", "cp", "s3://cli-a/rec.bin", "s3://cli-b/rec.bin")
    assert blobs(gateway.public_files()) == before, "aws s3 cp between buckets must copy server-side"
    out = tmp_path / "back.bin"
    aws(gateway, "s3", "cp", "s3://cli-b/rec.bin", str(out))
    assert out.read_bytes() == src.read_bytes()


def test_delete_objects_batch_quiet_and_verbose(gateway, aws):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="many")
    keys = [f"k/{i:04d}" for i in range(1000)]
    for k in keys:
        s3.put_object(Bucket="many", Key=k, Body=k.encode())
    out = s3.delete_objects(Bucket="many", Delete={
        "Objects": [{"Key": k} for k in keys[:500]] + [{"Key": "never-existed"}]})
    assert sorted(d["Key"] for d in out["Deleted"]) == sorted(keys[:500] + ["never-existed"])
    assert not out.get("Errors")
    out = s3.delete_objects(Bucket="many", Delete={
        "Objects": [{"Key": k} for k in keys[500:]], "Quiet": True})
    assert not out.get("Deleted") and not out.get("Errors")
    assert s3.list_objects_v2(Bucket="many")["KeyCount"] == 0
    with pytest.raises(ClientError) as e:
        s3.delete_objects(Bucket="no-such-bucket-here", Delete={"Objects": [{"Key": "a"}]})
    assert code(e.value) == "NoSuchBucket"

    # `aws s3 rm --recursive` uses DeleteObjects.
    for i in range(30):
        s3.put_object(Bucket="many", Key=f"tree/{i}", Body=b"x")
    aws(gateway, "s3", "rm", "--recursive", "s3://many/tree/")
    assert s3.list_objects_v2(Bucket="many")["KeyCount"] == 0
    aws(gateway, "s3", "rb", "s3://many")


def test_upload_part_copy_reseals_ranges_of_other_objects(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="upc-src")
    s3.create_bucket(Bucket="upc-dst")
    big = os.urandom(12 * MIB + 5)
    small = os.urandom(300_001)
    s3.put_object(Bucket="upc-src", Key="big", Body=big)
    s3.put_object(Bucket="upc-src", Key="small", Body=small)
    tail = os.urandom(1234)
    up = s3.create_multipart_upload(Bucket="upc-dst", Key="assembled")["UploadId"]
    first = 5 * MIB + 9
    p1 = s3.upload_part_copy(Bucket="upc-dst", Key="assembled", UploadId=up, PartNumber=1,
                             CopySource={"Bucket": "upc-src", "Key": "big"},
                             CopySourceRange=f"bytes=3-{3 + first - 1}")
    assert p1["CopyPartResult"]["ETag"] == md5_etag(big[3:3 + first])
    p2 = s3.upload_part_copy(Bucket="upc-dst", Key="assembled", UploadId=up, PartNumber=2,
                             CopySource={"Bucket": "upc-src", "Key": "big"})
    assert p2["CopyPartResult"]["ETag"] == md5_etag(big)
    p3 = s3.upload_part(Bucket="upc-dst", Key="assembled", UploadId=up, PartNumber=3, Body=tail)
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(Bucket="upc-dst", Key="assembled", UploadId=up, PartNumber=4,
                            CopySource={"Bucket": "upc-src", "Key": "small"},
                            CopySourceRange=f"bytes=0-{len(small)}")
    assert code(e.value) == "InvalidRange"
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(Bucket="upc-dst", Key="assembled", UploadId=up, PartNumber=4,
                            CopySource={"Bucket": "upc-src", "Key": "big"},
                            CopySourceIfMatch='"00000000000000000000000000000000"')
    assert code(e.value) == "PreconditionFailed"
    s3.complete_multipart_upload(Bucket="upc-dst", Key="assembled", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]},
                  {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]},
                  {"PartNumber": 3, "ETag": p3["ETag"]}]})
    assert get_bytes(s3, "upc-dst", "assembled") == big[3:3 + first] + big + tail

    # A key limited to the destination bucket may not read the source bucket this way.
    cp = gateway.run_cli("access-key", "create", "--data-dir", str(gateway.data_dir),
                         "--bucket", "upc-dst")
    kid = re.search(rb"aws_access_key_id = (\S+)", cp.stdout).group(1).decode()
    secret = re.search(rb"aws_secret_access_key = (\S+)", cp.stdout).group(1).decode()
    limited = client_for(gateway, access_key_id=kid, secret=secret)
    up2 = limited.create_multipart_upload(Bucket="upc-dst", Key="stolen")["UploadId"]
    with pytest.raises(ClientError) as e:
        limited.upload_part_copy(Bucket="upc-dst", Key="stolen", UploadId=up2, PartNumber=1,
                                 CopySource={"Bucket": "upc-src", "Key": "small"})
    assert code(e.value) == "AccessDenied"
