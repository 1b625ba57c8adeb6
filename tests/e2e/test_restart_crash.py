"""Restarts, cut-off uploads, kill -9 in the middle of a PUT, and `medgate gc`.

A crash at any step leaves either the old object or the new one, never an error
or a mixture; an upload that did not finish never becomes visible.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.parse

import pytest
from botocore.exceptions import ClientError

from support import BLOB_PATH_RE, MIB, blobs, client_for, get_bytes, read_object, sealed_size

# ---------------------------------------------------------------------------
# Raw uploads through a presigned URL (SigV4 in the query, UNSIGNED-PAYLOAD),
# so the test controls exactly how much of the body is sent, and when.
# ---------------------------------------------------------------------------


def presigned_put_target(gw, bucket: str, key: str) -> tuple[str, str]:
    # SigV4 explicitly: boto3 presigns S3 URLs with SigV2 unless told otherwise.
    url = client_for(gw, signature_version="s3v4").generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600)
    u = urllib.parse.urlsplit(url)
    return f"{u.path}?{u.query}", u.netloc


def read_status(sock: socket.socket, timeout: float = 30) -> tuple[int, bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    if not data:
        raise ConnectionError("connection closed without a response")
    status = int(data.split(b" ", 2)[1])
    return status, data


class RawPut:
    """A PUT whose body goes out in pieces from a thread; the test decides when
    to stop sending (cut off) or to kill the server under it."""

    def __init__(self, gw, bucket: str, key: str, body: bytes, send_bytes: int | None = None,
                 piece: int = 64 * 1024, delay: float = 0.0, content_length: int | None = None):
        self.path, self.host = presigned_put_target(gw, bucket, key)
        self.port = gw.port
        self.body = body
        self.send_bytes = len(body) if send_bytes is None else send_bytes
        self.piece, self.delay = piece, delay
        self.content_length = len(body) if content_length is None else content_length
        self.sent = 0
        self.progress = threading.Condition()
        self.error: BaseException | None = None
        self.status: int | None = None
        self.response = b""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RawPut":
        self.thread.start()
        return self

    def _run(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                head = (f"PUT {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
                        f"Content-Length: {self.content_length}\r\n\r\n")
                sock.sendall(head.encode())
                while self.sent < self.send_bytes:
                    n = min(self.piece, self.send_bytes - self.sent)
                    sock.sendall(self.body[self.sent:self.sent + n])
                    with self.progress:
                        self.sent += n
                        self.progress.notify_all()
                    if self.delay:
                        time.sleep(self.delay)
                if self.send_bytes >= self.content_length:
                    self.status, self.response = read_status(sock)
                # else: close with the body cut short.
        except BaseException as e:  # noqa: BLE001 - the thread reports, the test decides
            self.error = e
        finally:
            with self.progress:
                self.progress.notify_all()

    def wait_sent(self, n: int, timeout: float = 30):
        deadline = time.monotonic() + timeout
        with self.progress:
            while self.sent < n and self.thread.is_alive():
                left = deadline - time.monotonic()
                assert left > 0, f"only {self.sent} of {n} bytes sent in {timeout} s"
                self.progress.wait(left)

    def join(self, timeout: float = 60):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the uploading thread did not finish"


def listed_keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def assert_absent(s3, bucket: str, key: str):
    out = read_object(s3, bucket, key)
    assert out.kind == "error" and out.code == "NoSuchKey", f"{key} should not exist: {out!r}"
    try:
        s3.head_object(Bucket=bucket, Key=key)
        pytest.fail(f"HEAD {key} succeeded; the key should not exist")
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert key not in listed_keys(s3, bucket)


# ---------------------------------------------------------------------------
# Restarts
# ---------------------------------------------------------------------------


def put_sample_objects(s3, bucket: str) -> dict[str, dict]:
    objs = {
        "empty": {"body": b"", "meta": {}, "ctype": "application/octet-stream"},
        "one": {"body": b"1", "meta": {"k": "v"}, "ctype": "text/plain"},
        "dir/three-mib": {"body": os.urandom(3 * MIB + 9), "meta": {"patient": "p-1"},
                          "ctype": "application/dicom"},
        "dir/text.json": {"body": b'{"a": 1}' * 1000, "meta": {}, "ctype": "application/json"},
    }
    for key, o in objs.items():
        s3.put_object(Bucket=bucket, Key=key, Body=o["body"], Metadata=o["meta"],
                      ContentType=o["ctype"])
    return objs


def assert_objects(s3, bucket: str, objs: dict[str, dict]):
    assert listed_keys(s3, bucket) == sorted(objs)
    for key, o in objs.items():
        assert get_bytes(s3, bucket, key) == o["body"], f"{key} changed"
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["Metadata"] == o["meta"], key
        assert head["ContentType"] == o["ctype"], key
        assert head["ContentLength"] == len(o["body"]), key


def test_restart_keeps_everything(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="restart")
    objs = put_sample_objects(s3, "restart")
    assert_objects(s3, "restart", objs)
    assert gateway.stop() == 0, "SIGTERM should end medgate serve with exit code 0"
    gateway.start()
    s3 = client_for(gateway)
    assert "restart" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert_objects(s3, "restart", objs)
    gateway.restart()
    assert_objects(client_for(gateway), "restart", objs)


def test_acknowledged_puts_survive_kill9(gateway):
    """A 200 to a PUT means the object is durable: kill -9 right after loses nothing."""
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="durable")
    objs = put_sample_objects(s3, "durable")
    s3.put_object(Bucket="durable", Key="one", Body=b"2", Metadata={"k": "v2"},
                  ContentType="text/plain")
    objs["one"] = {"body": b"2", "meta": {"k": "v2"}, "ctype": "text/plain"}
    s3.delete_object(Bucket="durable", Key="empty")
    del objs["empty"]
    gateway.kill9()
    gateway.start()
    assert_objects(client_for(gateway), "durable", objs)


# ---------------------------------------------------------------------------
# Uploads cut off mid-body
# ---------------------------------------------------------------------------


def test_raw_presigned_put_works(gateway):
    """Positive control for the raw-socket technique used by the tests below."""
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="raw")
    body = os.urandom(2 * MIB + 5)
    put = RawPut(gateway, "raw", "whole", body).start()
    put.join()
    assert put.error is None, f"raw PUT failed: {put.error!r}"
    assert put.status == 200, put.response
    assert get_bytes(s3, "raw", "whole") == body


@pytest.mark.parametrize("existing", [False, True], ids=["new-key", "overwrite"])
def test_put_cut_off_mid_body_is_invisible(gateway, existing):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="cut")
    old = os.urandom(MIB + 1)
    if existing:
        s3.put_object(Bucket="cut", Key="k", Body=old)
    body = os.urandom(3 * MIB)
    put = RawPut(gateway, "cut", "k", body, send_bytes=MIB + 12345).start()
    put.join()
    time.sleep(1.0)  # let the server notice the closed connection

    def check():
        if existing:
            assert get_bytes(s3, "cut", "k") == old, "a cut-off overwrite changed the object"
            assert s3.head_object(Bucket="cut", Key="k")["ContentLength"] == len(old)
            assert "k" in listed_keys(s3, "cut")
        else:
            assert_absent(s3, "cut", "k")

    check()
    # The server is still healthy, and nothing surfaces after a restart either.
    s3.put_object(Bucket="cut", Key="after", Body=b"fine")
    assert get_bytes(s3, "cut", "after") == b"fine"
    gateway.restart()
    s3 = client_for(gateway)
    check()


# ---------------------------------------------------------------------------
# kill -9 during a slow PUT
# ---------------------------------------------------------------------------


def kill_during_put(gateway, bucket: str, key: str, body: bytes, kill_after: int | None):
    """Streams `body` slowly and kill -9s the server once `kill_after` bytes went out
    (None: right after the last byte, before the response)."""
    put = RawPut(gateway, bucket, key, body, piece=128 * 1024, delay=0.01)
    put.start()
    want = len(body) if kill_after is None else kill_after
    put.wait_sent(want)
    assert put.sent >= want, f"the upload stopped early ({put.sent} bytes): {put.error!r}"
    gateway.kill9()
    put.join()
    return put


# Bodies below the public store's part size go up in one PUT at the end; larger ones
# stream up as a multipart upload while the client is still sending.
CRASH_SIZES = {"4MiB": 4 * MIB + 3, "20MiB": 20 * MIB + 3}


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("size", list(CRASH_SIZES))
@pytest.mark.parametrize("when", ["mid-body", "after-body"])
def test_kill9_during_new_key_put(gateway, when, size):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="crash")
    body = os.urandom(CRASH_SIZES[size])
    put = kill_during_put(gateway, "crash", "new", body,
                          kill_after=len(body) * 2 // 3 if when == "mid-body" else None)
    gateway.start()
    s3 = client_for(gateway)
    out = read_object(s3, "crash", "new")
    if when == "mid-body":
        assert_absent(s3, "crash", "new")
    elif out.kind == "error":
        assert out.code == "NoSuchKey", f"after kill -9 the key must be absent or complete: {out!r}"
        assert "new" not in listed_keys(s3, "crash")
        assert put.status != 200, "the server answered 200 but the object was lost"
    else:
        assert out.kind == "ok" and out.body == body, f"new key is not complete: {out!r}"
        assert listed_keys(s3, "crash") == ["new"]


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("size", list(CRASH_SIZES))
@pytest.mark.parametrize("when", ["mid-body", "after-body"])
def test_kill9_during_overwrite(gateway, when, size):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="crash")
    old = os.urandom(3 * MIB + 1)
    s3.put_object(Bucket="crash", Key="k", Body=old, Metadata={"v": "old"})
    new = os.urandom(CRASH_SIZES[size])
    put = kill_during_put(gateway, "crash", "k", new,
                          kill_after=len(new) * 2 // 3 if when == "mid-body" else None)
    gateway.start()
    s3 = client_for(gateway)
    out = read_object(s3, "crash", "k")
    assert out.kind == "ok", f"after kill -9 the key must read as old or new, got {out!r}"
    if when == "mid-body":
        assert out.body == old, "an unfinished overwrite replaced the object"
    else:
        assert out.body in (old, new), "the object is neither the old nor the new content"
        if put.status == 200:
            assert out.body == new, "the server answered 200 but the overwrite was lost"
    head = s3.head_object(Bucket="crash", Key="k")
    assert head["ContentLength"] == len(out.body)
    assert head["Metadata"] == ({"v": "old"} if out.body == old else {})
    assert listed_keys(s3, "crash") == ["k"]


# ---------------------------------------------------------------------------
# gc on a stopped server's data dir
# ---------------------------------------------------------------------------


def not_log(files: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in files.items() if not k.startswith("v1/log/")}


@pytest.mark.timeout_s(150)
def test_gc_removes_only_unreferenced_blobs(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="gc-main")
    s3.create_bucket(Bucket="gc-other")
    live = {
        ("gc-main", "empty"): b"",
        ("gc-main", "one"): b"1",
        ("gc-main", "big"): os.urandom(2 * MIB + 3),
        ("gc-other", "x/y"): os.urandom(5000),
    }
    for (b, k), body in live.items():
        s3.put_object(Bucket=b, Key=k, Body=body)
    # Garbage: overwritten versions, deleted objects, a cut-off PUT, a PUT killed midway.
    s3.put_object(Bucket="gc-main", Key="one", Body=b"old one, overwritten below")
    s3.put_object(Bucket="gc-main", Key="one", Body=b"1")
    s3.put_object(Bucket="gc-main", Key="doomed", Body=os.urandom(MIB + 1))
    s3.delete_object(Bucket="gc-main", Key="doomed")
    s3.put_object(Bucket="gc-other", Key="x/y", Body=os.urandom(10))
    s3.put_object(Bucket="gc-other", Key="x/y", Body=live[("gc-other", "x/y")])
    RawPut(gateway, "gc-main", "cut", os.urandom(2 * MIB), send_bytes=MIB + 100).start().join()
    time.sleep(0.5)
    kill_during_put(gateway, "gc-main", "killed", os.urandom(3 * MIB), kill_after=MIB + 200)
    gateway.start()
    # A large PUT killed after more than one public-store part went up.
    kill_during_put(gateway, "gc-main", "killed-big", os.urandom(24 * MIB), kill_after=18 * MIB)
    gateway.start()
    assert gateway.stop() == 0

    before = blobs(gateway.public_files())
    assert len(before) >= len(live) + 4, f"expected garbage blobs, found {len(before)}"
    time.sleep(1.1)  # every blob is now clearly older than --grace 0s

    dry = gateway.run_cli("gc", "--data-dir", str(gateway.data_dir), "--grace", "0s")
    assert dry.returncode == 0, f"gc dry run failed: {dry.stderr.decode()}"
    assert (dry.stdout + dry.stderr).strip(), "gc dry run printed nothing"
    assert blobs(gateway.public_files()) == before, "a dry run must not delete anything"

    applied = gateway.run_cli("gc", "--data-dir", str(gateway.data_dir), "--grace", "0s",
                              "--apply")
    assert applied.returncode == 0, f"gc --apply failed: {applied.stderr.decode()}"
    assert (applied.stdout + applied.stderr).strip(), "gc --apply printed nothing"
    # Every file, staging leftovers included, except the transparency log's checkpoint
    # and tiles (v1/log/), which gc never lists.
    after = not_log(gateway.public_files())
    assert len(after) == len(live), (
        f"after gc the public store should hold exactly one blob per live object: "
        f"{len(after)} blobs for {len(live)} objects: {sorted(after.items())}\n"
        f"gc said:\n{applied.stdout.decode()}{applied.stderr.decode()}")
    assert sorted(after.values()) == sorted(sealed_size(len(b)) for b in live.values())
    assert set(after) <= set(before)
    assert all(BLOB_PATH_RE.match(p) for p in after), f"not only blobs left: {sorted(after)}"

    # A second gc has nothing left to do and still succeeds.
    again = gateway.run_cli("gc", "--data-dir", str(gateway.data_dir), "--grace", "0s", "--apply")
    assert again.returncode == 0
    assert not_log(gateway.public_files()) == after

    gateway.start()
    s3 = client_for(gateway)
    for (b, k), body in live.items():
        assert get_bytes(s3, b, k) == body, f"{b}/{k} no longer reads after gc"
    assert listed_keys(s3, "gc-main") == ["big", "empty", "one"]
    assert listed_keys(s3, "gc-other") == ["x/y"]


def test_gc_grace_keeps_recent_blobs(gateway):
    """With a long grace period nothing recent is deleted, garbage or not."""
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="grace")
    s3.put_object(Bucket="grace", Key="k", Body=b"v1")
    s3.put_object(Bucket="grace", Key="k", Body=b"v2")
    assert gateway.stop() == 0
    before = blobs(gateway.public_files())
    assert len(before) == 2
    cp = gateway.run_cli("gc", "--data-dir", str(gateway.data_dir), "--grace", "1h", "--apply")
    assert cp.returncode == 0, cp.stderr.decode()
    assert blobs(gateway.public_files()) == before
    gateway.start()
    assert get_bytes(client_for(gateway), "grace", "k") == b"v2"


# ---------------------------------------------------------------------------
# Graceful shutdown and process hardening
# ---------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_put_finish(gateway):
    s3 = client_for(gateway)
    s3.create_bucket(Bucket="drain")
    body = os.urandom(3 * MIB)
    put = RawPut(gateway, "drain", "slow", body, piece=256 * 1024, delay=0.15).start()
    put.wait_sent(MIB)
    gateway.proc.send_signal(__import__("signal").SIGTERM)
    put.join()
    assert put.error is None, f"the in-flight PUT failed: {put.error!r}"
    assert put.status == 200, put.response[:500]
    assert gateway.proc.wait(timeout=30) == 0, "SIGTERM: expected exit 0 after draining"
    gateway.start()
    assert get_bytes(client_for(gateway), "drain", "slow") == body


def test_core_dumps_are_disabled(gateway):
    limits = open(f"/proc/{gateway.proc.pid}/limits").read()
    line = next(l for l in limits.splitlines() if l.startswith("Max core file size"))
    soft, hard = line.split()[4:6]
    assert (soft, hard) == ("0", "0"), f"core dumps must be off (secrets in memory): {line}"
