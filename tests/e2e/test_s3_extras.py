"""Conditional GET/HEAD, ListObjects v1, ListObjectVersions, versioning and ACL reads,
and `aws s3 sync` (which relies on listings and sizes/times being right)."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from botocore.exceptions import ClientError

from support import client_for, md5_etag


def status(e: ClientError) -> int:
    return e.response["ResponseMetadata"]["HTTPStatusCode"]


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def test_conditional_get_and_head(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="cond")
    body = b"conditional record"
    s3.put_object(Bucket="cond", Key="r", Body=body)
    tag = md5_etag(body)
    head = s3.head_object(Bucket="cond", Key="r")
    modified = head["LastModified"]
    before = modified - dt.timedelta(hours=1)
    after = modified + dt.timedelta(hours=1)

    for call in (s3.get_object, s3.head_object):
        assert call(Bucket="cond", Key="r", IfMatch=tag)["ETag"] == tag
        assert call(Bucket="cond", Key="r", IfNoneMatch='"0000"')["ETag"] == tag
        assert call(Bucket="cond", Key="r", IfModifiedSince=before)["ETag"] == tag
        assert call(Bucket="cond", Key="r", IfUnmodifiedSince=after)["ETag"] == tag
        for kw, want in (({"IfMatch": '"0000"'}, 412),
                         ({"IfUnmodifiedSince": before}, 412),
                         ({"IfNoneMatch": tag}, 304),
                         ({"IfNoneMatch": "*"}, 304),
                         ({"IfModifiedSince": after}, 304)):
            with pytest.raises(ClientError) as e:
                call(Bucket="cond", Key="r", **kw)
            assert status(e.value) == want, (call.__name__, kw)
        # If-Match wins over a failing If-Unmodified-Since (RFC 9110 13.2.2).
        assert call(Bucket="cond", Key="r", IfMatch=tag, IfUnmodifiedSince=before)["ETag"] == tag
    assert s3.get_object(Bucket="cond", Key="r", IfMatch=tag)["Body"].read() == body


def test_list_objects_v1_and_versions(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="v1list")
    keys = sorted([f"a/{i:02d}" for i in range(7)] + [f"b/x/{i}" for i in range(3)] + ["c", "d"])
    for k in keys:
        s3.put_object(Bucket="v1list", Key=k, Body=k.encode())

    got = []
    for page in s3.get_paginator("list_objects").paginate(Bucket="v1list",
                                                           PaginationConfig={"PageSize": 3}):
        got += [o["Key"] for o in page.get("Contents", [])]
    assert got == keys

    seen_keys, seen_prefixes = [], []
    marker = ""
    for _ in range(10):
        page = s3.list_objects(Bucket="v1list", Delimiter="/", MaxKeys=2, Marker=marker)
        seen_keys += [o["Key"] for o in page.get("Contents", [])]
        seen_prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
    assert seen_keys == ["c", "d"]
    assert seen_prefixes == ["a/", "b/"]

    versions = s3.list_object_versions(Bucket="v1list", Prefix="a/")
    assert [v["Key"] for v in versions["Versions"]] == [k for k in keys if k.startswith("a/")]
    assert {v["VersionId"] for v in versions["Versions"]} == {"null"}
    assert all(v["IsLatest"] for v in versions["Versions"])

    assert "Status" not in s3.get_bucket_versioning(Bucket="v1list")
    for acl in (s3.get_bucket_acl(Bucket="v1list"), s3.get_object_acl(Bucket="v1list", Key="c")):
        assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL"]
        assert acl["Grants"][0]["Grantee"]["ID"] == acl["Owner"]["ID"]
    with pytest.raises(ClientError) as e:
        s3.get_object_acl(Bucket="v1list", Key="missing")
    assert code(e.value) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.list_objects(Bucket="no-such-bucket-v1")
    assert code(e.value) == "NoSuchBucket"


def test_aws_s3_sync_twice_copies_nothing_the_second_time(gateway, aws, tmp_path):
    tree = tmp_path / "tree"
    for i in range(300):
        d = tree / f"dir{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i}.txt").write_bytes(os.urandom(100 + i))
    aws(gateway, "s3", "mb", "s3://synced")
    first = aws(gateway, "s3", "sync", str(tree), "s3://synced/tree")
    assert first.stdout.count("upload:") == 300, first.stdout[-2000:]
    second = aws(gateway, "s3", "sync", str(tree), "s3://synced/tree")
    assert "upload:" not in second.stdout, second.stdout[-2000:]
    back = tmp_path / "back"
    aws(gateway, "s3", "sync", "s3://synced/tree", str(back))
    for p in tree.rglob("*.txt"):
        assert (back / p.relative_to(tree)).read_bytes() == p.read_bytes()


def test_presigned_get_put_and_expiry(gateway):
    import time

    import requests

    s3 = client_for(gateway, signature_version="s3v4")
    s3.create_bucket(Bucket="presigned")
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "presigned", "Key": "p"},
                                        ExpiresIn=300)
    r = requests.put(put_url, data=b"via presigned put", timeout=30)
    assert r.status_code == 200, r.text
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "p"},
                                        ExpiresIn=300)
    r = requests.get(get_url, timeout=30)
    assert r.status_code == 200 and r.content == b"via presigned put"
    head_url = s3.generate_presigned_url("head_object", Params={"Bucket": "presigned", "Key": "p"},
                                         ExpiresIn=300)
    r = requests.head(head_url, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(b"via presigned put"))

    short = s3.generate_presigned_url("get_object", Params={"Bucket": "presigned", "Key": "p"},
                                      ExpiresIn=1)
    time.sleep(2.5)
    r = requests.get(short, timeout=30)
    assert r.status_code == 403, r.text
    assert "<Code>AccessDenied</Code>" in r.text, r.text


def test_response_overrides_acl_and_tagging_headers(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="hdrs", ACL="private")
    s3.put_object(Bucket="hdrs", Key="report.pdf", Body=b"%PDF-1.7", ContentType="application/pdf",
                  ACL="bucket-owner-full-control", Tagging="ward=cardio&kind=report",
                  CacheControl="no-store", ContentDisposition="inline")
    got = s3.get_object(Bucket="hdrs", Key="report.pdf",
                        ResponseContentType="application/octet-stream",
                        ResponseContentDisposition='attachment; filename="r.pdf"',
                        ResponseCacheControl="max-age=60")
    assert got["ContentType"] == "application/octet-stream"
    assert got["ContentDisposition"] == 'attachment; filename="r.pdf"'
    assert got["CacheControl"] == "max-age=60"
    plain = s3.get_object(Bucket="hdrs", Key="report.pdf")
    assert plain["ContentType"] == "application/pdf"
    assert plain["CacheControl"] == "no-store"
    assert plain["ContentDisposition"] == "inline"
    # A grant to another account cannot be enforced here: refused, not ignored.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="hdrs", Key="shared", Body=b"x",
                      GrantRead='id="0123456789abcdef"')
    assert code(e.value) == "NotImplemented"


def test_virtual_host_addressing_with_domain(gateway_factory):
    import boto3
    import requests
    from botocore.config import Config

    gw = gateway_factory(start=False, extra_args=["--domain", "s3.medgate.test"])
    gw.start()
    s3 = client_for(gw)
    s3.create_bucket(Bucket="vhost")
    s3.put_object(Bucket="vhost", Key="dir/obj", Body=b"virtual host body")
    # Presign for the virtual-host name (no DNS needed: the request goes to the loopback
    # address with that Host header, which is what the signature covers).
    vsigner = boto3.session.Session().client(
        "s3", endpoint_url=f"http://s3.medgate.test:{gw.port}",
        aws_access_key_id=gw.access_key_id, aws_secret_access_key=gw.secret_access_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "virtual"}, signature_version="s3v4"))
    vurl = vsigner.generate_presigned_url("get_object",
                                          Params={"Bucket": "vhost", "Key": "dir/obj"},
                                          ExpiresIn=300)
    vhost = f"vhost.s3.medgate.test:{gw.port}"
    assert vurl.startswith(f"http://{vhost}/dir/obj?"), vurl
    path_and_query = vurl[len(f"http://{vhost}"):]
    r = requests.get(f"http://127.0.0.1:{gw.port}{path_and_query}", headers={"Host": vhost},
                     timeout=30)
    assert r.status_code == 200, r.text
    assert r.content == b"virtual host body"
    # Path style still works on the same server, by IP and by a host name that is not
    # under the domain.
    assert s3.get_object(Bucket="vhost", Key="dir/obj")["Body"].read() == b"virtual host body"
    by_name = boto3.session.Session().client(
        "s3", endpoint_url=f"http://localhost:{gw.port}",
        aws_access_key_id=gw.access_key_id, aws_secret_access_key=gw.secret_access_key,
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
    assert by_name.get_object(Bucket="vhost", Key="dir/obj")["Body"].read() == b"virtual host body"


def test_conditional_writes_race_exactly_one_wins(gateway):
    import threading

    s3a, s3b = client_for(gateway), client_for(gateway)
    s3a.create_bucket(Bucket="race")
    for round_ in range(10):
        key = f"claim-{round_}"
        results: dict[str, str] = {}
        barrier = threading.Barrier(2)

        def put(name, client, body):
            barrier.wait()
            try:
                client.put_object(Bucket="race", Key=key, Body=body, IfNoneMatch="*")
                results[name] = "won"
            except ClientError as e:
                results[name] = code(e)

        bodies = {"a": os.urandom(200_000), "b": os.urandom(200_000)}
        threads = [threading.Thread(target=put, args=(n, c, bodies[n]))
                   for n, c in (("a", s3a), ("b", s3b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results.values()) == ["PreconditionFailed", "won"], results
        winner = next(n for n, r in results.items() if r == "won")
        assert s3a.get_object(Bucket="race", Key=key)["Body"].read() == bodies[winner]

    # If-Match: only the writer holding the current ETag replaces it.
    s3a.put_object(Bucket="race", Key="versioned", Body=b"v1")
    s3a.put_object(Bucket="race", Key="versioned", Body=b"v2", IfMatch=md5_etag(b"v1"))
    with pytest.raises(ClientError) as e:
        s3a.put_object(Bucket="race", Key="versioned", Body=b"v3", IfMatch=md5_etag(b"v1"))
    assert code(e.value) == "PreconditionFailed"
    assert s3a.get_object(Bucket="race", Key="versioned")["Body"].read() == b"v2"
