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


def upload_parts(s3, bucket, key, pieces, client_computes=True, **create):
    """Uploads `pieces` as parts. With `client_computes`, botocore computes each part's
    checksum and sends it; otherwise (CRC32C and CRC64NVME need botocore[crt]) the
    gateway computes the upload's algorithm on every part and returns it."""
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)
    parts = []
    extra = {"ChecksumAlgorithm": create["ChecksumAlgorithm"]} if client_computes else {}
    for n, piece in enumerate(pieces, start=1):
        out = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n,
                             Body=piece, **extra)
        part = {"PartNumber": n, "ETag": out["ETag"]}
        field = "Checksum" + create["ChecksumAlgorithm"]
        part[field] = out[field]  # S3 returns the part's checksum; clients send it back
        parts.append(part)
    return up, parts


def test_multipart_object_checksums(gateway):
    """Part checksums make the object's as S3 does: COMPOSITE (hash of the part
    checksums, -N) or FULL_OBJECT (the CRC of the whole object, combined from the parts'
    CRCs without re-reading them). Both are returned by Complete, HEAD and GET."""
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="mpsums")
    pieces = [os.urandom(5 * MIB + 7), os.urandom(5 * MIB + 7), os.urandom(12345)]
    whole = b"".join(pieces)

    # COMPOSITE CRC32, checked against zlib.
    up, parts = upload_parts(s3, "mpsums", "comp", pieces, ChecksumAlgorithm="CRC32")
    listed = s3.list_parts(Bucket="mpsums", Key="comp", UploadId=up["UploadId"])["Parts"]
    assert [p["ChecksumCRC32"] for p in listed] == [crc32_b64(p) for p in pieces]
    done = s3.complete_multipart_upload(Bucket="mpsums", Key="comp", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts})
    raw = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in pieces)
    want = crc32_b64(raw) + "-3"
    assert done["ChecksumCRC32"] == want
    head = s3.head_object(Bucket="mpsums", Key="comp", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (want, "COMPOSITE")

    # COMPOSITE SHA256.
    up, parts = upload_parts(s3, "mpsums", "sha", pieces, ChecksumAlgorithm="SHA256")
    s3.complete_multipart_upload(Bucket="mpsums", Key="sha", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": parts})
    cat = b"".join(hashlib.sha256(p).digest() for p in pieces)
    head = s3.head_object(Bucket="mpsums", Key="sha", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == b64(hashlib.sha256(cat).digest()) + "-3"

    # FULL_OBJECT CRC32 equals zlib's CRC32 of the whole object.
    up, parts = upload_parts(s3, "mpsums", "full32", pieces, ChecksumAlgorithm="CRC32",
                             ChecksumType="FULL_OBJECT")
    done = s3.complete_multipart_upload(Bucket="mpsums", Key="full32", UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts},
                                        ChecksumCRC32=crc32_b64(whole))
    assert done["ChecksumCRC32"] == crc32_b64(whole)
    got = s3.get_object(Bucket="mpsums", Key="full32", ChecksumMode="ENABLED")
    assert got["Body"].read() == whole
    assert (got["ChecksumCRC32"], got["ChecksumType"]) == (crc32_b64(whole), "FULL_OBJECT")

    # FULL_OBJECT CRC32C and CRC64NVME (S3's default type for CRC64NVME): three parts
    # combined equal one part of the same bytes, whose CRC the hasher computes directly.
    for algo, create in (("CRC32C", {"ChecksumType": "FULL_OBJECT"}), ("CRC64NVME", {})):
        key = f"full-{algo}"
        results = []
        for name, split in ((key, pieces), (key + "-one", [whole])):
            up, parts = upload_parts(s3, "mpsums", name, split, client_computes=False,
                                     ChecksumAlgorithm=algo, **create)
            done = s3.complete_multipart_upload(Bucket="mpsums", Key=name,
                                                UploadId=up["UploadId"],
                                                MultipartUpload={"Parts": parts})
            results.append(done["Checksum" + algo])
        assert results[0] == results[1], algo
        assert "-" not in results[0]
        head = s3.head_object(Bucket="mpsums", Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumType"] == "FULL_OBJECT"


def test_multipart_checksum_mismatches(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="mpbad")
    pieces = [os.urandom(5 * MIB), os.urandom(10)]
    # A part checksum in Complete that is not the part's: InvalidPart, nothing committed.
    up, parts = upload_parts(s3, "mpbad", "k", pieces, ChecksumAlgorithm="CRC32")
    bad = [dict(parts[0], ChecksumCRC32=crc32_b64(b"x")), parts[1]]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="mpbad", Key="k", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": bad})
    assert e.value.response["Error"]["Code"] == "InvalidPart"
    # A whole-object checksum that does not match: BadDigest, nothing committed.
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket="mpbad", Key="k", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": parts},
                                     ChecksumCRC32=crc32_b64(b"not the object") + "-2")
    assert e.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="mpbad", Key="k")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # The upload is still there and completes with the right values.
    s3.complete_multipart_upload(Bucket="mpbad", Key="k", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket="mpbad", Key="k")["Body"].read() == b"".join(pieces)
    # FULL_OBJECT is for CRCs only.
    with pytest.raises(ClientError) as e:
        s3.create_multipart_upload(Bucket="mpbad", Key="s", ChecksumAlgorithm="SHA256",
                                   ChecksumType="FULL_OBJECT")
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
