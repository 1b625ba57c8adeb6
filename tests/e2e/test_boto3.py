"""boto3 against medgate: round trips, ranges across chunk boundaries, metadata,
ETags, ListObjectsV2 and the standard S3 error codes."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from botocore.exceptions import ClientError

from support import CHUNK, MIB, client_for, get_bytes, md5_etag, random_name

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * MIB + 1]


@pytest.fixture(scope="module")
def gw(module_gateway):
    return module_gateway


@pytest.fixture
def client(gw):
    return client_for(gw)


@pytest.fixture
def bucket(client):
    name = random_name("boto")
    client.create_bucket(Bucket=name)
    return name


def client_error(fn, *args, **kwargs) -> ClientError:
    with pytest.raises(ClientError) as exc:
        fn(*args, **kwargs)
    return exc.value


def code_and_status(e: ClientError) -> tuple[str, int]:
    return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_put_get_roundtrip(client, bucket, size):
    body = os.urandom(size)
    put = client.put_object(Bucket=bucket, Key=f"obj-{size}", Body=body)
    assert put["ETag"] == md5_etag(body)
    got = client.get_object(Bucket=bucket, Key=f"obj-{size}")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert got["ContentLength"] == size
    assert got["ETag"] == md5_etag(body)
    data = got["Body"].read()
    assert len(data) == size
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()


@pytest.mark.timeout_s(240)
def test_put_get_64mib(client, bucket):
    body = os.urandom(64 * MIB)
    put = client.put_object(Bucket=bucket, Key="big", Body=body)
    assert put["ETag"] == md5_etag(body)
    head = client.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == len(body)
    data = get_bytes(client, bucket, "big")
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()


def test_upload_fileobj_download_fileobj(client, bucket, tmp_path):
    body = os.urandom(3 * MIB + 17)
    src = tmp_path / "src"
    src.write_bytes(body)
    client.upload_file(str(src), bucket, "via-transfer")
    dst = tmp_path / "dst"
    client.download_file(bucket, "via-transfer", str(dst))
    assert dst.read_bytes() == body


def test_overwrite_returns_latest(client, bucket):
    client.put_object(Bucket=bucket, Key="k", Body=b"version one")
    client.put_object(Bucket=bucket, Key="k", Body=b"version two, longer")
    assert get_bytes(client, bucket, "k") == b"version two, longer"
    assert client.head_object(Bucket=bucket, Key="k")["ContentLength"] == len(b"version two, longer")


def test_delete_object(client, bucket):
    client.put_object(Bucket=bucket, Key="gone", Body=b"x")
    resp = client.delete_object(Bucket=bucket, Key="gone")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    e = client_error(client.get_object, Bucket=bucket, Key="gone")
    assert code_and_status(e) == ("NoSuchKey", 404)
    # Deleting a missing key is not an error in S3.
    resp = client.delete_object(Bucket=bucket, Key="never-existed")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_list_buckets(client):
    names = {random_name("lb") for _ in range(3)}
    for n in names:
        client.create_bucket(Bucket=n)
    listed = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert names <= listed
    client.head_bucket(Bucket=next(iter(names)))


def test_unicode_and_odd_keys(client, bucket):
    keys = ["dir/sub dir/file with spaces.txt", "ünïcødé/章节/ファイル.dcm",
            "a+b=c&d?e#f", "trailing/", "x" * 1024]
    for i, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=key, Body=f"body {i}".encode())
    for i, key in enumerate(keys):
        assert get_bytes(client, bucket, key) == f"body {i}".encode(), key
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())


# ---------------------------------------------------------------------------
# Ranges at chunk boundaries (default chunk size 1 MiB)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranged(gw):
    client = client_for(gw)
    bucket = random_name("range")
    client.create_bucket(Bucket=bucket)
    body = os.urandom(3 * MIB + 123)
    client.put_object(Bucket=bucket, Key="r", Body=body)
    aligned = os.urandom(2 * MIB)
    client.put_object(Bucket=bucket, Key="aligned", Body=aligned)
    return bucket, {"r": body, "aligned": aligned}


def expected_slice(body: bytes, spec: str):
    """(bytes, first, last) that `bytes=spec` selects (RFC 9110), None if unsatisfiable."""
    n = len(body)
    a, b = spec.split("-")
    if a == "":
        first = max(0, n - int(b))
        last = n - 1
    else:
        first = int(a)
        last = n - 1 if b == "" else min(int(b), n - 1)
    if first >= n:
        return None
    return body[first:last + 1], first, last


RANGES = [
    "0-0",
    "LAST-LAST",
    "1048575-1048576",
    "-1",
    "-1048577",
    "1048576-",
    "0-1048575",
    "1048576-2097151",
    "2097151-2097152",
    "1048575-3145728",
    "3145727-",
    "100-200",
    "3145000-99999999",
    "-99999999",
]


@pytest.mark.parametrize("key", ["r", "aligned"])
@pytest.mark.parametrize("spec", RANGES)
def test_range_reads(client, ranged, key, spec):
    bucket, bodies = ranged
    body = bodies[key]
    spec = spec.replace("LAST", str(len(body) - 1))
    expected = expected_slice(body, spec)
    if expected is None:  # e.g. an offset past the end of the 2 MiB object
        e = client_error(client.get_object, Bucket=bucket, Key=key, Range=f"bytes={spec}")
        assert code_and_status(e) == ("InvalidRange", 416)
        return
    want, first, last = expected
    resp = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={spec}")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert resp["ContentRange"] == f"bytes {first}-{last}/{len(body)}"
    assert resp["ContentLength"] == len(want)
    data = resp["Body"].read()
    assert len(data) == len(want)
    assert data == want, f"range {spec} of {key} returned wrong bytes"


@pytest.mark.parametrize("spec", ["3145851-", "3145851-3145900", "9999999-"])
def test_unsatisfiable_range(client, ranged, spec):
    bucket, bodies = ranged
    assert len(bodies["r"]) == 3145851
    e = client_error(client.get_object, Bucket=bucket, Key="r", Range=f"bytes={spec}")
    assert code_and_status(e) == ("InvalidRange", 416)


# ---------------------------------------------------------------------------
# Metadata, content type, ETag
# ---------------------------------------------------------------------------


def test_metadata_and_content_type_roundtrip(client, bucket):
    body = b'{"resourceType": "Bundle"}'
    meta = {"patient-id": "p-000123", "study": "CT thorax"}
    client.put_object(Bucket=bucket, Key="bundle.json", Body=body, Metadata=meta,
                      ContentType="application/fhir+json")
    for resp in (client.get_object(Bucket=bucket, Key="bundle.json"),
                 client.head_object(Bucket=bucket, Key="bundle.json")):
        assert resp["Metadata"] == meta
        assert resp["ContentType"] == "application/fhir+json"
        assert resp["ContentLength"] == len(body)
        assert resp["ETag"] == md5_etag(body)
        assert "LastModified" in resp


def test_overwrite_replaces_metadata(client, bucket):
    client.put_object(Bucket=bucket, Key="m", Body=b"1", Metadata={"a": "1"},
                      ContentType="text/plain")
    client.put_object(Bucket=bucket, Key="m", Body=b"2", Metadata={"b": "2"},
                      ContentType="application/pdf")
    head = client.head_object(Bucket=bucket, Key="m")
    assert head["Metadata"] == {"b": "2"}
    assert head["ContentType"] == "application/pdf"


@pytest.mark.parametrize("size", [0, 1, CHUNK + 5])
def test_etag_is_md5_everywhere(client, bucket, size):
    body = os.urandom(size)
    key = f"etag-{size}"
    assert client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"] == md5_etag(body)
    assert client.head_object(Bucket=bucket, Key=key)["ETag"] == md5_etag(body)
    assert client.get_object(Bucket=bucket, Key=key)["ETag"] == md5_etag(body)
    listed = client.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]
    assert [(o["Key"], o["ETag"], o["Size"]) for o in listed] == [(key, md5_etag(body), size)]


def test_correct_content_md5_is_accepted(client, bucket):
    body = b"checked body"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    client.put_object(Bucket=bucket, Key="md5ok", Body=body, ContentMD5=md5)
    assert get_bytes(client, bucket, "md5ok") == body


# ---------------------------------------------------------------------------
# ListObjectsV2
# ---------------------------------------------------------------------------

LIST_KEYS = ["a/1", "a/2", "a/b/3", "a1", "b/1", "c", "d/e/f", "d/g"]


@pytest.fixture(scope="module")
def listing(gw):
    client = client_for(gw)
    bucket = random_name("list")
    client.create_bucket(Bucket=bucket)
    for k in LIST_KEYS:
        client.put_object(Bucket=bucket, Key=k, Body=k.encode())
    return bucket


def keys_of(resp) -> list[str]:
    return [o["Key"] for o in resp.get("Contents", [])]


def prefixes_of(resp) -> list[str]:
    return [p["Prefix"] for p in resp.get("CommonPrefixes", [])]


def test_list_all_sorted_with_sizes(client, listing):
    resp = client.list_objects_v2(Bucket=listing)
    assert keys_of(resp) == sorted(LIST_KEYS)
    assert resp["KeyCount"] == len(LIST_KEYS)
    assert resp["IsTruncated"] is False
    for o in resp["Contents"]:
        assert o["Size"] == len(o["Key"].encode())
        assert o["ETag"] == md5_etag(o["Key"].encode())


def test_list_prefix(client, listing):
    resp = client.list_objects_v2(Bucket=listing, Prefix="a/")
    assert keys_of(resp) == ["a/1", "a/2", "a/b/3"]
    assert prefixes_of(resp) == []
    assert keys_of(client.list_objects_v2(Bucket=listing, Prefix="zzz")) == []


def test_list_delimiter(client, listing):
    resp = client.list_objects_v2(Bucket=listing, Delimiter="/")
    assert keys_of(resp) == ["a1", "c"]
    assert prefixes_of(resp) == ["a/", "b/", "d/"]
    assert resp["KeyCount"] == 5


def test_list_prefix_and_delimiter(client, listing):
    resp = client.list_objects_v2(Bucket=listing, Prefix="a/", Delimiter="/")
    assert keys_of(resp) == ["a/1", "a/2"]
    assert prefixes_of(resp) == ["a/b/"]
    resp = client.list_objects_v2(Bucket=listing, Prefix="d/", Delimiter="/")
    assert keys_of(resp) == ["d/g"]
    assert prefixes_of(resp) == ["d/e/"]


@pytest.mark.parametrize("max_keys", [1, 2, 3])
def test_list_pagination(client, listing, max_keys):
    seen = []
    token = None
    pages = 0
    while True:
        kw = {"Bucket": listing, "MaxKeys": max_keys}
        if token:
            kw["ContinuationToken"] = token
        resp = client.list_objects_v2(**kw)
        pages += 1
        assert len(keys_of(resp)) <= max_keys
        assert resp["MaxKeys"] == max_keys
        seen += keys_of(resp)
        if not resp["IsTruncated"]:
            assert "NextContinuationToken" not in resp
            break
        assert len(keys_of(resp)) == max_keys
        token = resp["NextContinuationToken"]
        assert pages < 50, "pagination does not terminate"
    assert seen == sorted(LIST_KEYS)
    assert pages == -(-len(LIST_KEYS) // max_keys)


def test_list_pagination_with_delimiter(client, listing):
    seen = []
    token = None
    for _ in range(20):
        kw = {"Bucket": listing, "MaxKeys": 2, "Delimiter": "/"}
        if token:
            kw["ContinuationToken"] = token
        resp = client.list_objects_v2(**kw)
        seen += keys_of(resp) + prefixes_of(resp)
        if not resp["IsTruncated"]:
            break
        token = resp["NextContinuationToken"]
    assert sorted(seen) == ["a/", "a1", "b/", "c", "d/"]
    assert len(seen) == len(set(seen))


def test_list_start_after(client, listing):
    resp = client.list_objects_v2(Bucket=listing, StartAfter="a/b/3")
    assert keys_of(resp) == ["a1", "b/1", "c", "d/e/f", "d/g"]
    resp = client.list_objects_v2(Bucket=listing, StartAfter="b")
    assert keys_of(resp) == ["b/1", "c", "d/e/f", "d/g"]
    resp = client.list_objects_v2(Bucket=listing, StartAfter="zzz")
    assert keys_of(resp) == []
    resp = client.list_objects_v2(Bucket=listing, StartAfter="a/2", MaxKeys=2)
    assert keys_of(resp) == ["a/b/3", "a1"]
    assert resp["IsTruncated"] is True


def test_list_paginator(client, listing):
    paginator = client.get_paginator("list_objects_v2")
    keys = [o["Key"] for page in paginator.paginate(Bucket=listing, PaginationConfig={"PageSize": 3})
            for o in page.get("Contents", [])]
    assert keys == sorted(LIST_KEYS)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_wrong_secret_is_signature_does_not_match(gw, bucket):
    bad = client_for(gw, secret="W" * 40)
    e = client_error(bad.list_buckets)
    assert code_and_status(e) == ("SignatureDoesNotMatch", 403)
    e = client_error(bad.put_object, Bucket=bucket, Key="nope", Body=b"x")
    assert code_and_status(e) == ("SignatureDoesNotMatch", 403)
    good = client_for(gw)
    assert "Contents" not in good.list_objects_v2(Bucket=bucket)


def test_unknown_access_key(gw, bucket):
    bad = client_for(gw, access_key_id="AKIAUNKNOWNKEY000000")
    e = client_error(bad.list_buckets)
    assert code_and_status(e) == ("InvalidAccessKeyId", 403)
    e = client_error(bad.get_object, Bucket=bucket, Key="k")
    assert code_and_status(e) == ("InvalidAccessKeyId", 403)


def test_no_such_bucket(client):
    missing = random_name("missing")
    for call, kw in [(client.get_object, {"Key": "k"}),
                     (client.put_object, {"Key": "k", "Body": b"x"}),
                     (client.list_objects_v2, {}),
                     (client.delete_bucket, {})]:
        e = client_error(call, Bucket=missing, **kw)
        assert code_and_status(e) == ("NoSuchBucket", 404), call.__name__
    e = client_error(client.head_bucket, Bucket=missing)
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_no_such_key(client, bucket):
    e = client_error(client.get_object, Bucket=bucket, Key="absent")
    assert code_and_status(e) == ("NoSuchKey", 404)
    e = client_error(client.head_object, Bucket=bucket, Key="absent")
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert e.response["Error"]["Code"] in ("404", "NoSuchKey", "Not Found")


def test_key_too_long(client, bucket):
    client.put_object(Bucket=bucket, Key="k" * 1024, Body=b"ok")
    e = client_error(client.put_object, Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert code_and_status(e) == ("KeyTooLongError", 400)
    # 1025 bytes in UTF-8 but fewer characters: the limit is in bytes.
    e = client_error(client.put_object, Bucket=bucket, Key="é" * 512 + "x", Body=b"x")
    assert code_and_status(e) == ("KeyTooLongError", 400)


@pytest.mark.parametrize("name", ["Bad_Bucket", "ab", "a" * 64, "-leading-dash", "192.168.5.4",
                                  "double..dot"])
def test_invalid_bucket_name(client, name):
    e = client_error(client.create_bucket, Bucket=name)
    assert code_and_status(e) == ("InvalidBucketName", 400)


def test_create_bucket_twice(client):
    name = random_name("twice")
    client.create_bucket(Bucket=name)
    e = client_error(client.create_bucket, Bucket=name)
    assert code_and_status(e) == ("BucketAlreadyOwnedByYou", 409)


def test_delete_bucket_not_empty(client, bucket):
    client.put_object(Bucket=bucket, Key="keep", Body=b"x")
    e = client_error(client.delete_bucket, Bucket=bucket)
    assert code_and_status(e) == ("BucketNotEmpty", 409)
    assert get_bytes(client, bucket, "keep") == b"x"
    client.delete_object(Bucket=bucket, Key="keep")
    client.delete_bucket(Bucket=bucket)
    e = client_error(client.head_bucket, Bucket=bucket)
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_content_md5_mismatch_is_bad_digest(client, bucket):
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    e = client_error(client.put_object, Bucket=bucket, Key="bad-md5", Body=b"the real body",
                     ContentMD5=wrong)
    assert code_and_status(e) == ("BadDigest", 400)
    e = client_error(client.head_object, Bucket=bucket, Key="bad-md5")
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404, "a refused PUT must not store"
