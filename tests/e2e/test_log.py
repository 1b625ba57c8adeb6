"""The transparency log end to end: S3 and sharing activity produce entries (reads
included, logged before the response), the gateway publishes a signed checkpoint and
tiles under v1/log/, and `medgate verify` passes, then names a flipped blob byte (--deep)
and a replaced checkpoint."""

from __future__ import annotations

import os
import re
import time

import pytest
from botocore.exceptions import ClientError

from support import MIB, client_for


def verify(gw, *extra):
    cp = gw.run_cli("verify", "--data-dir", str(gw.data_dir), *extra)
    return cp.returncode, cp.stdout.decode(errors="replace"), cp.stderr.decode(errors="replace")


def test_verify_passes_then_names_tampering(gateway):
    gw = gateway
    s3 = client_for(gw)
    s3.create_bucket(Bucket="logged")
    body = os.urandom(2 * MIB + 3)
    s3.put_object(Bucket="logged", Key="a", Body=body)
    s3.put_object(Bucket="logged", Key="b", Body=b"bee")
    s3.copy_object(Bucket="logged", Key="c", CopySource={"Bucket": "logged", "Key": "b"})
    s3.delete_object(Bucket="logged", Key="b")
    checkpoint = gw.public_dir / "v1" / "log" / "checkpoint"
    deadline = time.monotonic() + 15
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "no checkpoint published"
    text = checkpoint.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("medgate.log/") and lines[1].isdigit(), text
    assert "\n\n\u2014 " in text, "C2SP signed note: blank line, then an em-dash signature line"
    assert (gw.public_dir / "v1" / "log" / "tile" / "0").is_dir()

    rc, out, err = verify(gw, "--deep")
    assert rc == 0, out + err
    assert "verify: OK" in out and "2 manifests checked, 2 blobs re-hashed" in out, out

    # A flipped byte in the blob of "a".
    blobs = sorted((p for p in (gw.public_dir / "v1" / "b").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    big = blobs[-1]
    raw = bytearray(big.read_bytes())
    raw[MIB] ^= 1
    big.write_bytes(bytes(raw))
    rc, out, _ = verify(gw)
    assert rc == 0, "without --deep blobs are not re-read"
    rc, out, err = verify(gw, "--deep")
    assert rc != 0 and "MISMATCH object logged/a: blob" in out, out + err
    raw[MIB] ^= 1
    big.write_bytes(bytes(raw))

    # A checkpoint with a broken signature in the public store.
    gw.stop()
    checkpoint.write_text(text.replace(lines[1], str(int(lines[1]) + 1), 1))
    rc, out, err = verify(gw)
    assert rc != 0 and "published checkpoint: signature does not verify" in out, out + err
    checkpoint.write_text(text)
    rc, out, err = verify(gw, "--deep")
    assert rc == 0, out + err


def events(gw):
    cp = gw.run_cli("share", "events", "--data-dir", str(gw.data_dir))
    assert cp.returncode == 0, cp.stderr.decode(errors="replace")
    # seq, time, kind, actor[ bucket/key], detail
    return [line.split("\t") for line in cp.stdout.decode().splitlines()]


def test_reads_are_logged(gateway):
    """GetObject and HeadObject append a read entry, durable before the response: each
    one is in the log as soon as the client has its answer; a failed read logs nothing."""
    gw = gateway
    s3 = client_for(gw)
    s3.create_bucket(Bucket="readlog")
    s3.put_object(Bucket="readlog", Key="r", Body=b"0123456789")
    ours = lambda: [e for e in events(gw) if e[3].endswith(" readlog/r")]  # noqa: E731
    assert [e[2] for e in ours()] == ["put"]

    assert s3.get_object(Bucket="readlog", Key="r", Range="bytes=2-4")["Body"].read() == b"234"
    got = ours()
    assert [e[2] for e in got] == ["put", "read"], got
    assert got[1][3] == f"{gw.access_key_id} readlog/r" and got[1][4] == "GET bytes 2..5 of 10"

    s3.head_object(Bucket="readlog", Key="r")
    assert s3.get_object(Bucket="readlog", Key="r")["Body"].read() == b"0123456789"
    got = ours()
    assert [(e[2], e[4]) for e in got[1:]] == [
        ("read", "GET bytes 2..5 of 10"), ("read", "HEAD"), ("read", "GET bytes 0..10 of 10")]
    seqs = [int(e[0]) for e in events(gw)]
    assert seqs == list(range(len(seqs))), "dense indices"

    with pytest.raises(ClientError):
        s3.get_object(Bucket="readlog", Key="missing")
    assert not [e for e in events(gw) if e[3].endswith(" readlog/missing")]

    rc, out, err = verify(gw)
    assert rc == 0, out + err


def test_writes_are_attributed_to_their_access_key(gateway):
    """Every write is logged under the access key id that made it (PUT, CopyObject,
    CompleteMultipartUpload, DeleteObject, DeleteObjects), as reads are: two keys write, and
    `share events` and `GET /v1/admin/events` show each write under its own key, beside a
    read. No secret appears in either, and the log still verifies."""
    import requests

    gw = gateway
    first = client_for(gw)
    first.create_bucket(Bucket="attributed")
    cp = gw.run_cli("access-key", "create", "--data-dir", str(gw.data_dir))
    assert cp.returncode == 0, cp.stderr
    text = cp.stdout.decode()
    second_id = re.search(r"^aws_access_key_id = (\S+)$", text, re.M).group(1)
    second_secret = re.search(r"^aws_secret_access_key = (\S+)$", text, re.M).group(1)
    assert second_id != gw.access_key_id
    second = client_for(gw, access_key_id=second_id, secret=second_secret)

    # The legitimate flow: each key writes, one reads, and the bytes come back.
    first.put_object(Bucket="attributed", Key="one", Body=b"by the first key")
    second.put_object(Bucket="attributed", Key="two", Body=b"by the second key")
    second.copy_object(Bucket="attributed", Key="two-copy",
                       CopySource={"Bucket": "attributed", "Key": "one"})
    up = first.create_multipart_upload(Bucket="attributed", Key="multi")
    part = first.upload_part(Bucket="attributed", Key="multi", UploadId=up["UploadId"],
                             PartNumber=1, Body=b"one part")
    first.complete_multipart_upload(
        Bucket="attributed", Key="multi", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert first.get_object(Bucket="attributed", Key="two")["Body"].read() == b"by the second key"
    second.delete_object(Bucket="attributed", Key="one")
    first.delete_objects(Bucket="attributed", Delete={"Objects": [{"Key": "two-copy"}]})

    got = [(e[2], e[3]) for e in events(gw) if e[3].split(" ")[-1].startswith("attributed/")]
    assert got == [
        ("put", f"{gw.access_key_id} attributed/one"),
        ("put", f"{second_id} attributed/two"),
        ("copy", f"{second_id} attributed/two-copy"),
        ("put", f"{gw.access_key_id} attributed/multi"),
        ("read", f"{gw.access_key_id} attributed/two"),
        ("delete", f"{second_id} attributed/one"),
        ("delete", f"{gw.access_key_id} attributed/two-copy"),
    ], got
    assert not any(e[3].startswith("s3 ") for e in events(gw)), "no write is logged as s3 any more"

    r = requests.get(gw.api_endpoint + "/v1/admin/events", params={"limit": 1000}, timeout=10,
                     headers={"Authorization": "Bearer " + gw.admin_token()})
    assert r.status_code == 200, r.text
    api = [(e["kind"], e["actor"], e["key"]) for e in r.json()["events"]
           if e.get("bucket") == "attributed"]
    want = [(kind, who_what.split(" ")[0], who_what.split(" ")[1].split("/", 1)[1])
            for kind, who_what in got]
    assert api == want, api
    for secret in (gw.secret_access_key, second_secret):
        assert secret not in r.text
        assert secret not in "\n".join("\t".join(e) for e in events(gw))

    rc, out, err = verify(gw)
    assert rc == 0, out + err
