"""S3 additional checksums: verified on the plaintext, stored, returned with
x-amz-checksum-mode: ENABLED; a wrong value is BadDigest and stores nothing."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest
from botocore.exceptions import ClientError

from support import MIB, client_for


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def crc32_b64(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def test_checksums_are_checked_stored_and_returned(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="sums")
    body = os.urandom(2 * MIB + 3)

    s3.put_object(Bucket="sums", Key="sha", Body=body, ChecksumAlgorithm="SHA256")
    head = s3.head_object(Bucket="sums", Key="sha", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64(hashlib.sha256(body).digest())
    got = s3.get_object(Bucket="sums", Key="sha", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got["ChecksumSHA256"] == b64(hashlib.sha256(body).digest())
    # Without checksum mode, and for ranges, no checksum is claimed.
    assert "ChecksumSHA256" not in s3.head_object(Bucket="sums", Key="sha")
    part = s3.get_object(Bucket="sums", Key="sha", Range="bytes=0-9", ChecksumMode="ENABLED")
    assert "ChecksumSHA256" not in part

    s3.put_object(Bucket="sums", Key="crc", Body=body, ChecksumCRC32=crc32_b64(body))
    head = s3.head_object(Bucket="sums", Key="crc", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(body)

    for kw in ({"ChecksumCRC32": crc32_b64(b"something else")},
               {"ChecksumSHA256": b64(hashlib.sha256(b"other").digest())}):
        with pytest.raises(ClientError) as e:
            s3.put_object(Bucket="sums", Key="bad", Body=body, **kw)
        assert e.value.response["Error"]["Code"] == "BadDigest", kw
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="sums", Key="bad")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_part_checksums_are_checked(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="partsums")
    up = s3.create_multipart_upload(Bucket="partsums", Key="k")["UploadId"]
    data = os.urandom(MIB)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="partsums", Key="k", UploadId=up, PartNumber=1, Body=data,
                       ChecksumCRC32=crc32_b64(b"not the part"))
    assert e.value.response["Error"]["Code"] == "BadDigest"
    out = s3.upload_part(Bucket="partsums", Key="k", UploadId=up, PartNumber=1, Body=data,
                         ChecksumCRC32=crc32_b64(data))
    s3.complete_multipart_upload(Bucket="partsums", Key="k", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": out["ETag"]}]})
    assert s3.get_object(Bucket="partsums", Key="k")["Body"].read() == data
