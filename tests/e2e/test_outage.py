"""The public store goes away mid-run: clients get a quick ServiceUnavailable, never a
hang, nothing half-written is committed, and everything comes back once the store does.

Two ways a store fails, each with the S3 server that can show it:

* **killed** (connection refused): `rclone serve s3` over a folder. It keeps its objects
  on disk, so when it is restarted on the same port over the same folder, it has the
  same data, as a real S3 service would after an outage. (moto_server keeps everything
  in memory: a killed moto loses every blob, which is not an outage but data loss.)
  rclone answers a ranged GET with 200 instead of 206, so medgate reaches it through
  test_clients' PartialContentShim; "killed" stops both, so the address medgate uses
  refuses connections, and "restarted" brings both back on the same ports.
* **hung** (SIGSTOP): moto_server. The kernel still accepts connections into the
  listen backlog but nothing ever answers: only medgate's timeouts end the wait.
  SIGCONT resumes it with its memory, so moto's in-memory state is no obstacle here,
  and no relay in the test process stands between medgate and the stopped server.

medgate runs with short timeouts from its config file ([public_store] and
[public_store.retry]), and boto3 with retries off, so each measured time is one request.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

import botocore
import pytest

from support import (
    LIVE_MOTOS,
    MIB,
    MotoServer,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    STREAM_ERRORS,
    client_for,
    free_port,
    get_bytes,
    medgate_bin,
    port_open,
    random_name,
    read_object,
    require_tool,
    s3_client,
    tail,
)
from test_clients import PartialContentShim, clean_env, rclone_ranged_get_status

PUBLIC_BUCKET = "medgate-public"
# What medgate is configured with: a refused connection is retried twice within
# 2 s; an unanswered request gives up after 2 s; no operation outlives 4 s.
TIMEOUT_S = 2
OPERATION_TIMEOUT_S = 4
CONFIG = f"""
[public_store]
timeout = "{TIMEOUT_S}s"
connect_timeout = "1s"
operation_timeout = "{OPERATION_TIMEOUT_S}s"

[public_store.retry]
max_retries = 2
backoff_initial = "50ms"
backoff_max = "200ms"
backoff_base = 2.0
retry_timeout = "2s"
"""
# A dead store must fail well within this; a hung one within the operation deadline
# plus this much slack (the S3 request around it, a loaded 2-core machine).
REFUSED_BOUND_S = 5.0
HUNG_BOUND_S = OPERATION_TIMEOUT_S + 3.0


class RcloneStore:
    """`rclone serve s3` over a folder, on a fixed port, that can be killed and started
    again over the same folder; stopped by PID."""

    def __init__(self, workdir: Path):
        self.exe = require_tool("rclone")
        self.workdir = workdir
        self.root = workdir / "served"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.access_key = "RCLONEOUTAGE" + secrets.token_hex(4).upper()
        self.secret_key = secrets.token_hex(20)
        self.log_path = workdir / "rclone-serve-s3.log"
        (workdir / "rclone.conf").write_text("")
        self.proc: subprocess.Popen | None = None
        self._log_fh = None

    def start(self) -> "RcloneStore":
        self._log_fh = open(self.log_path, "ab", buffering=0)
        argv = [self.exe, "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
                "--auth-key", f"{self.access_key},{self.secret_key}",
                "--vfs-cache-mode", "off", "--log-level", "INFO", str(self.root)]
        self._log_fh.write(f"===== {' '.join(argv)}\n".encode())
        self.proc = subprocess.Popen(
            argv, stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=clean_env(RCLONE_CONFIG=str(self.workdir / "rclone.conf"),
                          HOME=str(self.workdir),
                          XDG_CACHE_HOME=str(self.workdir / "cache")),
            start_new_session=True,
        )
        if self not in LIVE_MOTOS:
            LIVE_MOTOS.append(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"rclone serve s3 exited early:\n{tail(self.log_path)}")
            if port_open(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"rclone serve s3 did not listen within {START_TIMEOUT_S} s")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        return s3_client(self.endpoint, self.access_key, self.secret_key,
                         response_checksum_validation="when_required")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def log_tail(self) -> str:
        return tail(self.log_path)

    def teardown(self) -> None:
        self.kill()
        if self in LIVE_MOTOS:
            LIVE_MOTOS.remove(self)


def outage_gateway(gateway_factory, tmp_path: Path, endpoint: str, key: str, secret: str):
    config = tmp_path / "medgate.toml"
    config.write_text(CONFIG)
    check = subprocess.run([medgate_bin(), "config", "check", str(config)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert f'operation_timeout = "{OPERATION_TIMEOUT_S}s"' in check.stdout, check.stdout
    assert "max_retries = 2" in check.stdout, check.stdout
    gw = gateway_factory(
        start=False,
        public_store=f"s3://{PUBLIC_BUCKET}/pfx",
        public_store_opts={"endpoint": endpoint, "allow_http": "true",
                           "access_key_id": key, "secret_access_key": secret,
                           "region": "us-east-1"},
        extra_args=["--config", str(config)],
    )
    return gw.start()


def timed(what: str, fn, times: dict[str, float]):
    started = time.monotonic()
    try:
        return fn()
    finally:
        times[what] = round(time.monotonic() - started, 2)


def expect_unavailable(what: str, fn, times: dict[str, float], bound: float) -> None:
    """`fn` must fail with S3 ServiceUnavailable (503) within `bound` seconds."""
    with pytest.raises(botocore.exceptions.ClientError) as err:
        timed(what, fn, times)
    code = err.value.response.get("Error", {}).get("Code")
    status = err.value.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    assert (code, status) == ("ServiceUnavailable", 503), f"{what}: {err.value}"
    assert times[what] < bound, f"{what} took {times[what]} s (bound {bound} s): {times}"


def upload(s3, bucket: str, key: str, parts: list[bytes]) -> str:
    """A multipart upload of `parts`, completed; returns its upload id."""
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = []
    for n, body in enumerate(parts, start=1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n,
                              Body=body)["ETag"]
        done.append({"PartNumber": n, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up,
                                 MultipartUpload={"Parts": done})
    return up


def check_consistent(gw, bucket: str, s3, acknowledged: dict[str, bytes],
                     referenced_blobs: int) -> None:
    """Every acknowledged object reads back byte-identical; `verify --deep` finds every
    referenced blob whole; gc (dry run) counts exactly the referenced blobs as live, so
    what failed writes left behind is only unreferenced garbage."""
    for key, body in acknowledged.items():
        got = get_bytes(s3, bucket, key)
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), key
    verify = gw.run_cli("verify", "--deep", "--data-dir", str(gw.data_dir))
    assert verify.returncode == 0 and b"verify: OK" in verify.stdout, (
        verify.stdout + verify.stderr)
    gc = gw.run_cli("gc", "--data-dir", str(gw.data_dir))
    assert gc.returncode == 0, gc.stderr
    m = re.search(rb"scanned (\d+) blobs: (\d+) live", gc.stdout)
    assert m, gc.stdout
    assert int(m.group(2)) == referenced_blobs, gc.stdout


@pytest.mark.timeout_s(90)
def test_killed_store_fails_fast_and_recovers_with_its_data(gateway_factory, tmp_path,
                                                            request):
    store = RcloneStore(tmp_path / "rclone").start()
    request.addfinalizer(store.teardown)
    store.client().create_bucket(Bucket=PUBLIC_BUCKET)
    shim_port = None
    shim = None
    if rclone_ranged_get_status(store) == 200:
        shim_port = free_port()
        shim = PartialContentShim(store.port, port=shim_port)
    shims = [shim]
    request.addfinalizer(lambda: shims[0] is not None and shims[0].stop())
    endpoint = shim.endpoint if shim else store.endpoint
    gw = outage_gateway(gateway_factory, tmp_path, endpoint, store.access_key,
                        store.secret_key)
    s3 = client_for(gw)
    bucket = random_name("outage")
    s3.create_bucket(Bucket=bucket)

    # Before the outage: a small object, a 24 MiB one (a multipart public blob), and
    # a two-part S3 multipart upload; plus an upload with its first part only.
    acknowledged = {
        "small.bin": os.urandom(MIB + 5),
        "big.bin": os.urandom(24 * MIB),
        "multi.bin": None,
    }
    parts = [os.urandom(5 * MIB), os.urandom(MIB + 7)]
    for key in ("small.bin", "big.bin"):
        s3.put_object(Bucket=bucket, Key=key, Body=acknowledged[key])
    upload(s3, bucket, "multi.bin", parts)
    acknowledged["multi.bin"] = b"".join(parts)
    # Parts uploaded before the outage, completed during it (only the private store).
    late_parts = [os.urandom(5 * MIB), os.urandom(2)]
    late = s3.create_multipart_upload(Bucket=bucket, Key="late.bin")["UploadId"]
    late_etags = [s3.upload_part(Bucket=bucket, Key="late.bin", UploadId=late, PartNumber=n,
                                 Body=body)["ETag"]
                  for n, body in enumerate(late_parts, start=1)]
    pending_parts = [os.urandom(5 * MIB), os.urandom(3 * MIB)]
    pending = s3.create_multipart_upload(Bucket=bucket, Key="pending.bin")["UploadId"]
    etag1 = s3.upload_part(Bucket=bucket, Key="pending.bin", UploadId=pending,
                           PartNumber=1, Body=pending_parts[0])["ETag"]

    def kill_store():
        store.kill()
        if shims[0] is not None:
            shims[0].stop()
            shims[0] = None
        assert not port_open(shim_port or store.port)

    # A GET under way when the store dies ends short, never with wrong bytes.
    resp = s3.get_object(Bucket=bucket, Key="big.bin")
    head = resp["Body"].read(MIB)
    kill_store()
    rest = bytearray()
    with pytest.raises(STREAM_ERRORS):
        while True:
            piece = resp["Body"].read(256 * 1024)
            if not piece:
                break
            rest += piece
        # A body that ended early without an exception is caught here too.
        assert len(head) + len(rest) == 24 * MIB
        raise AssertionError("a GET whose chunks could not be fetched ended whole")
    received = head + bytes(rest)
    assert received == acknowledged["big.bin"][:len(received)], "wrong bytes were sent"
    assert len(received) < 24 * MIB

    times: dict[str, float] = {}
    expect_unavailable("put 1 MiB", lambda: s3.put_object(
        Bucket=bucket, Key="during.bin", Body=os.urandom(MIB)), times, REFUSED_BOUND_S)
    expect_unavailable("put 8 MiB", lambda: s3.put_object(
        Bucket=bucket, Key="during-big.bin", Body=os.urandom(8 * MIB)), times,
        REFUSED_BOUND_S)
    expect_unavailable("upload part", lambda: s3.upload_part(
        Bucket=bucket, Key="pending.bin", UploadId=pending, PartNumber=2,
        Body=pending_parts[1]), times, REFUSED_BOUND_S)
    expect_unavailable("get", lambda: s3.get_object(
        Bucket=bucket, Key="small.bin"), times, REFUSED_BOUND_S)
    expect_unavailable("ranged get", lambda: s3.get_object(
        Bucket=bucket, Key="big.bin", Range="bytes=10485760-10485800"), times,
        REFUSED_BOUND_S)
    print(f"\nstore killed: times to error (s): {times}")
    # What lives in the private store alone still answers.
    assert s3.head_object(Bucket=bucket, Key="small.bin")["ContentLength"] == MIB + 5
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == set(acknowledged), "a failed write must not be listed"
    s3.complete_multipart_upload(
        Bucket=bucket, Key="late.bin", UploadId=late,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                   for n, e in enumerate(late_etags, start=1)]})
    acknowledged["late.bin"] = b"".join(late_parts)

    # The store comes back on the same port with the same folder.
    store.start()
    if shim_port is not None:
        shims[0] = PartialContentShim(store.port, port=shim_port)
    s3.put_object(Bucket=bucket, Key="after.bin", Body=b"after the outage")
    acknowledged["after.bin"] = b"after the outage"
    etag2 = s3.upload_part(Bucket=bucket, Key="pending.bin", UploadId=pending,
                           PartNumber=2, Body=pending_parts[1])["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="pending.bin", UploadId=pending,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1},
                                   {"PartNumber": 2, "ETag": etag2}]})
    acknowledged["pending.bin"] = b"".join(pending_parts)
    # small, big, after: one blob each; multi, late and pending: one per part.
    check_consistent(gw, bucket, s3, acknowledged, referenced_blobs=3 + 2 + 2 + 2)
    # Each refused request was retried (max_retries = 2) before it failed, and counted.
    metrics = s3_metrics(gw)
    assert re.search(r'medgate_public_store_errors_total\{op="put"\} [1-9]', metrics), metrics
    retries = re.search(r"^medgate_public_store_retries_total (\d+)", metrics, re.M)
    assert retries and int(retries.group(1)) >= 2 * 4, metrics


def s3_metrics(gw) -> str:
    import urllib.request

    with urllib.request.urlopen(gw.ops_endpoint + "/metrics", timeout=5) as r:
        return r.read().decode()


class Moto:
    """moto_server that can be stopped (SIGSTOP) and resumed; stopped by PID."""

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.srv = MotoServer(workdir)

    def pause(self):
        os.kill(self.srv.proc.pid, signal.SIGSTOP)

    def resume(self):
        if self.srv.proc.poll() is None:
            os.kill(self.srv.proc.pid, signal.SIGCONT)


@pytest.mark.timeout_s(90)
def test_hung_store_fails_within_the_timeout_and_recovers(gateway_factory, tmp_path,
                                                          request):
    moto = Moto(tmp_path / "moto")
    request.addfinalizer(moto.srv.stop)
    request.addfinalizer(moto.resume)  # runs first: a stopped process ignores SIGTERM
    moto.srv.client().create_bucket(Bucket=PUBLIC_BUCKET)
    gw = outage_gateway(gateway_factory, tmp_path, moto.srv.endpoint, "test", "test")
    s3 = client_for(gw)
    bucket = random_name("hung")
    s3.create_bucket(Bucket=bucket)
    acknowledged = {"small.bin": os.urandom(MIB + 3), "big.bin": os.urandom(7 * MIB)}
    for key, body in acknowledged.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    pending_parts = [os.urandom(5 * MIB), os.urandom(MIB)]
    pending = s3.create_multipart_upload(Bucket=bucket, Key="pending.bin")["UploadId"]
    etag1 = s3.upload_part(Bucket=bucket, Key="pending.bin", UploadId=pending,
                           PartNumber=1, Body=pending_parts[0])["ETag"]

    moto.pause()
    times: dict[str, float] = {}
    expect_unavailable("put 1 MiB", lambda: s3.put_object(
        Bucket=bucket, Key="during.bin", Body=os.urandom(MIB)), times, HUNG_BOUND_S)
    expect_unavailable("upload part", lambda: s3.upload_part(
        Bucket=bucket, Key="pending.bin", UploadId=pending, PartNumber=2,
        Body=pending_parts[1]), times, HUNG_BOUND_S)
    expect_unavailable("get", lambda: s3.get_object(
        Bucket=bucket, Key="big.bin"), times, HUNG_BOUND_S)
    print(f"\nstore hung: times to error (s): {times}")
    assert min(times.values()) >= TIMEOUT_S * 0.5, f"failed before any timeout: {times}"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == set(acknowledged), "a failed write must not be listed"

    moto.resume()
    s3.put_object(Bucket=bucket, Key="after.bin", Body=b"after the outage")
    acknowledged["after.bin"] = b"after the outage"
    etag2 = s3.upload_part(Bucket=bucket, Key="pending.bin", UploadId=pending,
                           PartNumber=2, Body=pending_parts[1])["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="pending.bin", UploadId=pending,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1},
                                   {"PartNumber": 2, "ETag": etag2}]})
    acknowledged["pending.bin"] = b"".join(pending_parts)
    out = read_object(s3, bucket, "big.bin")
    assert out.kind == "ok", out
    check_consistent(gw, bucket, s3, acknowledged, referenced_blobs=3 + 2)
