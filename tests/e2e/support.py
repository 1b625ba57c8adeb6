"""Helpers for medgate's end-to-end tests: the gateway process, clients, moto.

Imported by conftest.py (fixtures and hooks) and by the test modules. Nothing
here skips: a missing tool or binary is a test failure.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from pathlib import Path

import pytest

import boto3
import botocore
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY_ID = "AKIAMEDGATETEST00001"
REGION = "us-east-1"
MIB = 1024 * 1024
CHUNK = MIB  # medgate's default plaintext chunk size
TAG = 16  # ChaCha20-Poly1305 tag appended to every sealed chunk
BLOB_PATH_RE = re.compile(r"^v1/b/([0-9a-f]{2})/([0-9a-f]{32})$")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
DEFAULT_TEST_TIMEOUT_S = 120


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


# Ports this process already handed out: the kernel may offer a port again as soon as the
# probing socket closes, and one gateway takes three (S3, ops, API) before it starts.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port that was not handed out already")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


def random_name(prefix: str, n: int = 6) -> str:
    """A valid, unique, lower-case bucket name."""
    return f"{prefix}-{secrets.token_hex(n)}"


def chunks_of(size: int) -> int:
    return max(1, -(-size // CHUNK))


def sealed_size(size: int) -> int:
    """Size of the public blob of a single-PUT object of `size` bytes."""
    return size + TAG * chunks_of(size)


def published_files(folder: Path) -> list[Path]:
    """The complete files a reader of a folder public store sees in `folder`, sorted.

    object_store's LocalFileSystem writes `name#N` and renames it to `name`, so a listing
    taken during a write holds a staging file that is gone a moment later: those are skipped
    (opaque names never contain `#`)."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if "#" not in p.name)


def published_bytes(folder: Path) -> dict[str, bytes]:
    """Every complete file of `folder` by name, with its bytes. A file deleted between the
    listing and the read is left out (a rename onto a name never makes it disappear)."""
    out = {}
    for p in published_files(folder):
        try:
            out[p.name] = p.read_bytes()
        except FileNotFoundError:
            continue
    return out


def tail(path: Path, lines: int = 200) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"required tool {name!r} is not on PATH (run tests/run.sh, which installs it "
            f"into target/e2e-venv); PATH={os.environ.get('PATH')}"
        )
    return path


def medgate_bin() -> str:
    path = os.environ.get("MEDGATE_BIN") or str(REPO_ROOT / "target" / "release" / "medgate")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"medgate binary not found or not executable at {path} (set MEDGATE_BIN)")
    return path


# ---------------------------------------------------------------------------
# The gateway under test
# ---------------------------------------------------------------------------

# Servers running right now, whose logs a failing test report shows.
LIVE_GATEWAYS: list["Gateway"] = []
LIVE_MOTOS: list["MotoServer"] = []


class Gateway:
    """One `medgate serve` process on a fixed port and data dir.

    It can be stopped, killed and started again on the same data dir and port;
    the log file accumulates every run's stdout and stderr.
    """

    def __init__(self, workdir: Path, public_store: str | None = None,
                 public_store_opts: dict[str, str] | None = None,
                 extra_args: list[str] | None = None):
        self.bin = medgate_bin()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.log_path = workdir / "medgate.log"
        self.port = free_port()
        # Every gateway has its own ops port (/healthz, /readyz, /metrics), given through
        # MEDGATE_OPS_LISTEN so that subclasses with their own argv get one too.
        self.ops_port = free_port()
        # ... and its own JSON API port (MEDGATE_ADMIN_LISTEN).
        self.api_port = free_port()
        self.access_key_id = ACCESS_KEY_ID
        alphabet = string.ascii_letters + string.digits
        self.secret_access_key = "".join(secrets.choice(alphabet) for _ in range(40))
        self.public_store = public_store
        self.public_store_opts = dict(public_store_opts or {})
        self.extra_args = list(extra_args or [])
        self.extra_env: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None
        self._log_fh = None
        self.runs = 0

    # -- paths and addresses ------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ops_port}"

    @property
    def api_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def public_dir(self) -> Path:
        return self.data_dir / "public"

    def env(self) -> dict[str, str]:
        # Nothing inherited may redirect the gateway (MEDGATE_DATA_DIR, MEDGATE_LISTEN, ...).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "MEDGATE_"))}
        env["MEDGATE_ACCESS_KEY_ID"] = self.access_key_id
        env["MEDGATE_SECRET_ACCESS_KEY"] = self.secret_access_key
        env.setdefault("RUST_BACKTRACE", "1")
        env["MEDGATE_OPS_LISTEN"] = f"127.0.0.1:{self.ops_port}"
        env["MEDGATE_ADMIN_LISTEN"] = f"127.0.0.1:{self.api_port}"
        # Patient indexes every second (the default is 10s), so that tests which wait for an
        # index need not wait long. Binaries before index v2 publish every second anyway.
        env["MEDGATE_INDEX_INTERVAL"] = "1s"
        env.update(self.extra_env)
        return env

    def argv(self) -> list[str]:
        argv = [self.bin, "serve", "--data-dir", str(self.data_dir),
                "--listen", f"127.0.0.1:{self.port}"]
        if self.public_store:
            argv += ["--public-store", self.public_store]
        for k, v in self.public_store_opts.items():
            argv += ["--public-store-opt", f"{k}={v}"]
        return argv + self.extra_args

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "Gateway":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        self._log_fh = open(self.log_path, "ab", buffering=0)
        self._log_fh.write(f"\n===== run {self.runs}: {' '.join(self.argv())}\n".encode())
        self.proc = subprocess.Popen(
            self.argv(), stdout=self._log_fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=self.env(), start_new_session=True,
        )
        if self not in LIVE_GATEWAYS:
            LIVE_GATEWAYS.append(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                pytest.fail(f"medgate serve exited with {rc} before listening; log:\n{self.log_tail()}")
            if port_open(self.port):
                return self
            time.sleep(0.05)
        self.kill9()
        pytest.fail(f"medgate serve did not accept on port {self.port} within {START_TIMEOUT_S} s; "
                    f"log:\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                self._close_log()
                return None
        self._close_log()
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def restart(self) -> "Gateway":
        rc = self.stop()
        assert rc == 0, f"medgate serve should exit 0 on SIGTERM, got {rc}"
        return self.start()

    def _close_log(self):
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 200) -> str:
        return tail(self.log_path, lines)

    def teardown(self):
        try:
            self.stop()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
            if self in LIVE_GATEWAYS:
                LIVE_GATEWAYS.remove(self)

    # -- running other medgate commands on this data dir ----------------------
    def run_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [self.bin, *args]
        with open(self.log_path, "ab") as fh:
            fh.write(f"\n===== cli: {' '.join(argv)}\n".encode())
        cp = subprocess.run(argv, capture_output=True, env=self.env(), timeout=timeout,
                            stdin=subprocess.DEVNULL)
        with open(self.log_path, "ab") as fh:
            fh.write(b"--- stdout\n" + cp.stdout + b"--- stderr\n" + cp.stderr
                     + f"--- exit {cp.returncode}\n".encode())
        return cp

    # -- the default folder public store --------------------------------------
    def public_files(self) -> dict[str, int]:
        """Every file under DATA_DIR/public, relative path -> size."""
        out = {}
        root = self.public_dir
        if not root.exists():
            return out
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                out[p.relative_to(root).as_posix()] = p.stat().st_size
        return out

    def blob_path(self, rel: str) -> Path:
        return self.public_dir / rel


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


def s3_client(endpoint: str, access_key_id: str, secret: str, read_timeout: float = 60,
              verify: str | None = None, **cfg):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        verify=verify,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=read_timeout,
            **cfg,
        ),
    )


def client_for(gw: Gateway, secret: str | None = None, access_key_id: str | None = None,
               **kw):
    return s3_client(gw.endpoint, access_key_id or gw.access_key_id,
                     secret if secret is not None else gw.secret_access_key, **kw)


class AwsCli:
    """The real aws CLI pointed at one endpoint with its own config file."""

    def __init__(self, workdir: Path):
        self.exe = require_tool("aws")
        self.config_path = workdir / "aws-config"
        self.config_path.write_text(
            "[default]\n"
            f"region = {REGION}\n"
            "s3 =\n"
            "    multipart_threshold = 2GB\n"
            "    multipart_chunksize = 1GB\n"
            "    addressing_style = path\n"
        )

    def __call__(self, gw_or_endpoint, *args: str, check: bool = True, timeout: float = 300,
                 access_key_id: str | None = None, secret: str | None = None,
                 extra_env: dict | None = None) -> subprocess.CompletedProcess:
        if isinstance(gw_or_endpoint, Gateway):
            endpoint = gw_or_endpoint.endpoint
            access_key_id = access_key_id or gw_or_endpoint.access_key_id
            secret = secret or gw_or_endpoint.secret_access_key
        else:
            endpoint = gw_or_endpoint
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({
            "AWS_CONFIG_FILE": str(self.config_path),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.config_path.parent / "no-credentials"),
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
        })
        if access_key_id is not None:
            env["AWS_ACCESS_KEY_ID"] = access_key_id
        if secret is not None:
            env["AWS_SECRET_ACCESS_KEY"] = secret
        env.update(extra_env or {})
        argv = [self.exe, *args, "--endpoint-url", endpoint]
        cp = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                            stdin=subprocess.DEVNULL)
        if check and cp.returncode != 0:
            pytest.fail(f"`aws {' '.join(args)}` exited {cp.returncode}\n"
                        f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
        return cp


# ---------------------------------------------------------------------------
# moto_server: a real S3 API to use as medgate's public store
# ---------------------------------------------------------------------------


class MotoServer:
    """moto_server on a free loopback port; over TLS when given a certificate and key (PEM
    files, e.g. from test_ops.make_server_cert) and the CA that signed them, which clients
    then verify against (`self.ca`)."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path, Path] | None = None):
        self.exe = require_tool("moto_server")
        self.port = free_port()
        self.log_path = workdir / "moto.log"
        self._log_fh = open(self.log_path, "ab", buffering=0)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        argv = [self.exe, "-H", "127.0.0.1", "-p", str(self.port)]
        self.ca: Path | None = None
        if tls is not None:
            cert, key, self.ca = tls
            argv += ["--ssl-cert", str(cert), "--ssl-key", str(key)]
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )
        LIVE_MOTOS.append(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"moto_server exited early:\n{tail(self.log_path)}")
            if port_open(self.port):
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"moto_server did not listen within {START_TIMEOUT_S} s:\n{tail(self.log_path)}")

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.ca else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> str | None:
        """What boto3 and requests verify the server's certificate with (None: plain HTTP)."""
        return str(self.ca) if self.ca else None

    def client(self):
        return s3_client(self.endpoint, "test", "test", verify=self.verify)

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


# ---------------------------------------------------------------------------
# Reading objects and classifying failures
# ---------------------------------------------------------------------------

# Errors that mean "the body was cut short or the connection aborted".
STREAM_ERRORS = (
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.EndpointConnectionError,
    ConnectionError,
    TimeoutError,
)
try:  # urllib3's own errors can surface when botocore does not wrap them
    import urllib3.exceptions as _u3

    STREAM_ERRORS = STREAM_ERRORS + (_u3.ProtocolError, _u3.ReadTimeoutError, _u3.HTTPError)
except ImportError:  # pragma: no cover
    pass


class ReadOutcome:
    """What one GET produced: 'ok' (full body), 'error' (S3 error) or 'truncated'."""

    def __init__(self, kind: str, body: bytes | None = None, detail: str = "",
                 status: int | None = None, code: str | None = None):
        self.kind, self.body, self.detail, self.status, self.code = kind, body, detail, status, code

    def __repr__(self):
        size = None if self.body is None else len(self.body)
        return (f"ReadOutcome(kind={self.kind}, status={self.status}, code={self.code}, "
                f"body_len={size}, detail={self.detail[:300]!r})")


def read_object(client, bucket: str, key: str, **kw) -> ReadOutcome:
    try:
        resp = client.get_object(Bucket=bucket, Key=key, **kw)
    except botocore.exceptions.ClientError as e:
        return ReadOutcome("error", detail=str(e),
                           status=e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
                           code=e.response.get("Error", {}).get("Code"))
    except STREAM_ERRORS as e:
        return ReadOutcome("truncated", detail=f"{type(e).__name__}: {e}")
    status = resp["ResponseMetadata"]["HTTPStatusCode"]
    expected_len = resp.get("ContentLength")
    body = bytearray()
    try:
        stream = resp["Body"]
        while True:
            piece = stream.read(256 * 1024)
            if not piece:
                break
            body += piece
    except STREAM_ERRORS as e:
        return ReadOutcome("truncated", body=bytes(body), detail=f"{type(e).__name__}: {e}",
                           status=status)
    if expected_len is not None and len(body) != expected_len:
        return ReadOutcome("truncated", body=bytes(body),
                           detail=f"got {len(body)} of Content-Length {expected_len}", status=status)
    return ReadOutcome("ok", body=bytes(body), status=status)


def get_bytes(client, bucket: str, key: str, **kw) -> bytes:
    out = read_object(client, bucket, key, **kw)
    assert out.kind == "ok", f"GET {bucket}/{key} {kw} failed: {out!r}"
    return out.body


def blobs(files: dict[str, int]) -> dict[str, int]:
    """Only the v1/b/ blobs of a public-store listing."""
    return {k: v for k, v in files.items() if k.startswith("v1/b/")}

