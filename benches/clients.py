#!/usr/bin/env python3
"""medgate vs moto_server with the real aws CLI (v1) and its default transfer settings.

    target/e2e-venv/bin/python benches/clients.py [--mib N] [--rss-mib N] [--rounds N]

In one run:
  1. makes a random file of --mib MiB (default 1024) in a temp dir (TMPDIR decides the disk);
  2. starts `medgate serve` (default folder public store, fresh data dir) and
     `moto_server`, each on a free loopback port;
  3. times `aws s3 cp FILE s3://bench/obj` (PUT) and `aws s3 cp s3://bench/obj OUT` (GET)
     against each, alternating medgate, moto, medgate, moto, ... for --rounds rounds (default 2),
     checks the MD5 of every download, and prints best/median MiB/s and medgate/moto ratios;
  4. starts a FRESH medgate, records its idle VmRSS, uploads and downloads a --rss-mib MiB
     file (default 2048) while a thread samples VmRSS every 50 ms, reads VmHWM at the end,
     and prints idle, peak sampled, VmHWM and peak - idle.

The aws CLI runs with an AWS_CONFIG_FILE holding only `[default] region = us-east-1`, so it
uses its defaults: multipart above 8 MiB in 8 MiB parts, 10 concurrent requests. Timings are
wall clock of the whole `aws` process (including its ~0.5 s Python start-up); reads come from
a warm page cache, downloads are written to a file (not fsynced). Every server is stopped by
PID at the end, even on failure. Exits non-zero on any MD5 mismatch or failed command.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
GIB = 1024 * MIB
REGION = "us-east-1"
BUCKET = "bench"
KEY = "obj"
ACCESS_KEY_ID = "AKIAMEDGATEBENCH0001"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CMD_TIMEOUT_S = 600.0
SAMPLE_EVERY_S = 0.05
MIN_FREE_BYTES = 8 * GIB


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Small helpers (same logic as tests/e2e/support.py, without pytest)
# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def venv_tool(name: str) -> str:
    """A tool next to this Python (the e2e venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"required tool {name!r} not found next to {sys.executable} nor on PATH "
                         f"(run with target/e2e-venv/bin/python)")
    return found


def medgate_bin() -> str:
    path = os.environ.get("MEDGATE_BIN") or str(REPO_ROOT / "target" / "release" / "medgate")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise BenchError(f"medgate binary not found or not executable at {path} (set MEDGATE_BIN)")
    return path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDGATE_"))}


def make_random_file(path: Path, mib: int) -> str:
    """Write `mib` MiB of random bytes; return the MD5 hex digest."""
    h = hashlib.md5()
    block = 8 * MIB
    left = mib * MIB
    with open(path, "wb") as f:
        while left:
            n = min(block, left)
            data = os.urandom(n)
            h.update(data)
            f.write(data)
            left -= n
    return h.hexdigest()


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            data = f.read(8 * MIB)
            if not data:
                break
            h.update(data)
    return h.hexdigest()


def proc_status_kib(pid: int, field: str) -> int | None:
    """A `kB` field (VmRSS, VmHWM) of /proc/PID/status, in KiB; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def stop_pid(proc: subprocess.Popen | None, what: str) -> None:
    """SIGTERM the process by PID, wait, SIGKILL if it does not exit."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"  ! {what} (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; SIGKILL",
              flush=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------


class Server:
    name: str
    access_key_id: str
    secret: str
    log_path: Path
    proc: subprocess.Popen | None = None
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        with open(self.log_path, "ab") as fh:
            fh.write(f"===== {' '.join(shlex.quote(a) for a in argv)}\n".encode())
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise BenchError(f"{self.name} exited with {rc} before listening; log:\n"
                                 f"{tail(self.log_path)}")
            if port_open(self.port):
                return
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not listen on port {self.port} within "
                         f"{START_TIMEOUT_S:.0f} s; log:\n{tail(self.log_path)}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        stop_pid(self.proc, self.name)


class Medgate(Server):
    def __init__(self, workdir: Path, name: str = "medgate"):
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.log_path = workdir / "medgate.log"
        self.port = free_port()
        self.access_key_id = ACCESS_KEY_ID
        alphabet = string.ascii_letters + string.digits
        self.secret = "".join(secrets.choice(alphabet) for _ in range(40))

    def start(self) -> "Medgate":
        env = clean_env()
        env["MEDGATE_ACCESS_KEY_ID"] = self.access_key_id
        env["MEDGATE_SECRET_ACCESS_KEY"] = self.secret
        env.setdefault("RUST_BACKTRACE", "1")
        # No --public-store: the default folder store, DATA_DIR/public.
        self._spawn([medgate_bin(), "serve", "--data-dir", str(self.data_dir),
                     "--listen", f"127.0.0.1:{self.port}", "--ops-listen", "127.0.0.1:0",
                     "--admin-listen", "127.0.0.1:0"], env)
        return self


class Moto(Server):
    def __init__(self, workdir: Path):
        self.name = "moto"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "moto.log"
        self.port = free_port()
        self.access_key_id = "test"
        self.secret = "test"

    def start(self) -> "Moto":
        env = clean_env()
        # moto spools object bodies to temp files; keep them in our temp dir.
        env["TMPDIR"] = str(self.log_path.parent)
        self._spawn([venv_tool("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], env)
        return self


# ---------------------------------------------------------------------------
# The aws CLI with default settings
# ---------------------------------------------------------------------------


class AwsCli:
    def __init__(self, workdir: Path):
        self.exe = venv_tool("aws")
        self.config_path = workdir / "aws-config"
        # Only the region: every s3 transfer setting stays at the CLI's default
        # (multipart_threshold = multipart_chunksize = 8 MiB, max_concurrent_requests = 10).
        self.config_path.write_text(f"[default]\nregion = {REGION}\n")
        self.no_creds = workdir / "no-credentials"

    def run(self, server: Server, *args: str) -> float:
        """Run `aws ARGS --endpoint-url ...`; return wall seconds; raise on failure."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({
            "AWS_CONFIG_FILE": str(self.config_path),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.no_creds),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
            "AWS_ACCESS_KEY_ID": server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": server.secret,
        })
        argv = [self.exe, *args, "--endpoint-url", server.endpoint]
        if args[:2] == ("s3", "cp"):
            argv.append("--only-show-errors")  # no progress output; transfer settings untouched
        t0 = time.perf_counter()
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, env=env,
                                timeout=CMD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BenchError(f"[{server.name}] `aws {' '.join(args)}` timed out after "
                             f"{CMD_TIMEOUT_S:.0f} s")
        elapsed = time.perf_counter() - t0
        if cp.returncode != 0:
            raise BenchError(f"[{server.name}] `aws {' '.join(args)}` exited {cp.returncode}\n"
                             f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}\n"
                             f"{server.name} log tail:\n{tail(server.log_path, 30)}")
        if not server.alive():
            raise BenchError(f"{server.name} died during `aws {' '.join(args)}`; log:\n"
                             f"{tail(server.log_path)}")
        return elapsed


# ---------------------------------------------------------------------------
# Memory sampler
# ---------------------------------------------------------------------------


class RssSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.samples = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            v = proc_status_kib(self.pid, "VmRSS")
            if v is not None:
                self.peak_kib = max(self.peak_kib, v)
                self.samples += 1
            self._stop_evt.wait(SAMPLE_EVERY_S)

    def finish(self) -> None:
        self._stop_evt.set()
        self.join(timeout=5)


# ---------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------

ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def log_problems(path: Path, limit: int = 8) -> tuple[int, list[str]]:
    """Count WARN/ERROR/panic lines of a medgate log; return (count, first distinct few)."""
    try:
        text = ANSI_RE.sub("", path.read_text(errors="replace"))
    except OSError:
        return 0, []
    hits = [ln for ln in text.splitlines()
            if re.search(r"\b(WARN|ERROR)\b|panicked|\"level\":\"(WARN|ERROR)\"", ln)]
    seen: list[str] = []
    for ln in hits:
        if ln not in seen:
            seen.append(ln)
        if len(seen) >= limit:
            break
    return len(hits), seen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="throughput object size (MiB)")
    ap.add_argument("--rss-mib", type=int, default=2048, help="memory-phase object size (MiB)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per target")
    args = ap.parse_args()
    if args.mib < 1 or args.rss_mib < 1 or args.rounds < 1:
        ap.error("--mib, --rss-mib and --rounds must be >= 1")

    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    print("command:", " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    print(f"nproc: {nproc}")

    tmp_parent = Path(tempfile.gettempdir())
    need = max(MIN_FREE_BYTES, 4 * max(args.mib, args.rss_mib) * MIB)
    free = shutil.disk_usage(tmp_parent).free
    if free < need:
        print(f"refusing to run: {free / GIB:.1f} GiB free under {tmp_parent}, need at least "
              f"{need / GIB:.1f} GiB (source + download + server copies); set TMPDIR to a "
              f"bigger disk", file=sys.stderr)
        return 2

    aws_version = subprocess.run([venv_tool("aws"), "--version"], capture_output=True,
                                 text=True).stdout.strip()
    print(f"aws: {aws_version}")
    print(f"temp dir under {tmp_parent} ({free / GIB:.0f} GiB free); "
          f"object {args.mib} MiB x {args.rounds} rounds; memory object {args.rss_mib} MiB")
    print(flush=True)

    # Turn SIGTERM into an exception so the finally block still stops the servers.
    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    work = Path(tempfile.mkdtemp(prefix="medgate-clients-bench-", dir=tmp_parent))
    servers: list[Server] = []
    failures: list[str] = []
    medgate_logs: list[tuple[str, Path]] = []
    try:
        aws = AwsCli(work)

        # ---- 1. source file --------------------------------------------------
        src = work / "src.bin"
        out = work / "out.bin"
        t0 = time.perf_counter()
        src_md5 = make_random_file(src, args.mib)
        print(f"made {args.mib} MiB random file in {time.perf_counter() - t0:.1f} s "
              f"(md5 {src_md5})", flush=True)

        # ---- 2. servers ------------------------------------------------------
        mg = Medgate(work / "medgate")
        servers.append(mg)
        mg.start()
        medgate_logs.append(("throughput medgate", mg.log_path))
        moto = Moto(work / "moto")
        servers.append(moto)
        moto.start()
        print(f"medgate pid {mg.pid} on {mg.endpoint}; moto_server pid {moto.pid} on "
              f"{moto.endpoint}", flush=True)
        for s in (mg, moto):
            aws.run(s, "s3", "mb", f"s3://{BUCKET}")

        # ---- 3. alternating PUT/GET -------------------------------------------
        rates: dict[str, dict[str, list[float]]] = {
            s.name: {"put": [], "get": []} for s in (mg, moto)}
        for rnd in range(1, args.rounds + 1):
            for s in (mg, moto):
                put_s = aws.run(s, "s3", "cp", str(src), f"s3://{BUCKET}/{KEY}")
                if out.exists():
                    out.unlink()
                get_s = aws.run(s, "s3", "cp", f"s3://{BUCKET}/{KEY}", str(out))
                got = md5_file(out)
                ok = got == src_md5
                if not ok:
                    failures.append(f"round {rnd} {s.name}: download md5 {got} != {src_md5}")
                out.unlink()
                put_r, get_r = args.mib / put_s, args.mib / get_s
                rates[s.name]["put"].append(put_r)
                rates[s.name]["get"].append(get_r)
                print(f"  round {rnd} {s.name:8s} PUT {put_s:6.2f} s {put_r:7.1f} MiB/s | "
                      f"GET {get_s:6.2f} s {get_r:7.1f} MiB/s | md5 "
                      f"{'ok' if ok else 'MISMATCH'}", flush=True)

        mg.stop()
        moto.stop()
        src.unlink()
        shutil.rmtree(mg.data_dir, ignore_errors=True)

        print()
        print(f"Throughput, aws CLI defaults (8 MiB parts, 10 concurrent), {args.mib} MiB object, "
              f"{args.rounds} rounds, MiB/s")
        def pair(best: float, med: float, prec: int = 1) -> str:
            return f"{best:8.{prec}f} / {med:8.{prec}f}"

        m, o = rates[mg.name], rates[moto.name]
        rows = [(name, pair(max(rates[name]["put"]), statistics.median(rates[name]["put"])),
                 pair(max(rates[name]["get"]), statistics.median(rates[name]["get"])))
                for name in (mg.name, moto.name)]
        rows.append(("medgate/moto",
                     pair(max(m["put"]) / max(o["put"]),
                          statistics.median(m["put"]) / statistics.median(o["put"]), 2),
                     pair(max(m["get"]) / max(o["get"]),
                          statistics.median(m["get"]) / statistics.median(o["get"]), 2)))
        print(f"{'target':12s} | {'PUT best / median':>19s} | {'GET best / median':>19s}")
        print(f"{'-' * 12}-+-{'-' * 19}-+-{'-' * 19}")
        for name, put, get in rows:
            print(f"{name:12s} | {put:>19s} | {get:>19s}")
        print(flush=True)

        # ---- 4. memory of a fresh medgate -------------------------------------
        rsrc = work / "rss-src.bin"
        rout = work / "rss-out.bin"
        t0 = time.perf_counter()
        rsrc_md5 = make_random_file(rsrc, args.rss_mib)
        print(f"made {args.rss_mib} MiB random file in {time.perf_counter() - t0:.1f} s",
              flush=True)
        mg2 = Medgate(work / "medgate-rss", name="medgate (fresh)")
        servers.append(mg2)
        mg2.start()
        medgate_logs.append(("memory medgate", mg2.log_path))
        time.sleep(1.0)  # let start-up settle before the idle reading
        idle_kib = proc_status_kib(mg2.pid, "VmRSS")
        if idle_kib is None:
            raise BenchError("cannot read VmRSS of the fresh medgate")
        aws.run(mg2, "s3", "mb", f"s3://{BUCKET}")
        sampler = RssSampler(mg2.pid)
        sampler.start()
        try:
            put_s = aws.run(mg2, "s3", "cp", str(rsrc), f"s3://{BUCKET}/{KEY}")
            put_peak_kib = sampler.peak_kib
            sampler.peak_kib = 0
            get_s = aws.run(mg2, "s3", "cp", f"s3://{BUCKET}/{KEY}", str(rout))
            get_peak_kib = sampler.peak_kib
            sampler.peak_kib = max(put_peak_kib, get_peak_kib)
        finally:
            sampler.finish()
        hwm_kib = proc_status_kib(mg2.pid, "VmHWM")
        end_kib = proc_status_kib(mg2.pid, "VmRSS")
        got = md5_file(rout)
        ok = got == rsrc_md5
        if not ok:
            failures.append(f"memory phase: download md5 {got} != {rsrc_md5}")
        print(f"  PUT {put_s:6.2f} s {args.rss_mib / put_s:7.1f} MiB/s | GET {get_s:6.2f} s "
              f"{args.rss_mib / get_s:7.1f} MiB/s | md5 {'ok' if ok else 'MISMATCH'} | "
              f"{sampler.samples} RSS samples", flush=True)
        mg2.stop()

        def mib(kib: int | None) -> str:
            return "n/a" if kib is None else f"{kib / 1024:8.1f}"

        peak = max(sampler.peak_kib, idle_kib)
        print()
        print(f"medgate memory, aws CLI defaults, {args.rss_mib} MiB PUT then GET (MiB)")
        print(f"  idle RSS            {mib(idle_kib)}")
        print(f"  peak sampled RSS    {mib(peak)}   (every {SAMPLE_EVERY_S * 1000:.0f} ms)")
        print(f"  VmHWM at end        {mib(hwm_kib)}")
        print(f"  RSS at end          {mib(end_kib)}")
        print(f"  peak - idle         {mib(peak - idle_kib)}")
        print(f"    during PUT        {mib(put_peak_kib - idle_kib)}")
        print(f"    during GET        {mib(get_peak_kib - idle_kib)}")
        if hwm_kib is not None:
            print(f"  VmHWM - idle        {mib(hwm_kib - idle_kib)}")
        print(flush=True)
    except BenchError as e:
        failures.append(str(e))
    except KeyboardInterrupt as e:
        failures.append(f"interrupted ({e or 'SIGINT'})")
    finally:
        for s in reversed(servers):
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                failures.append(f"stopping {s.name}: {e}")
        for label, path in medgate_logs:
            n, first = log_problems(path)
            print(f"{label} log: {n} WARN/ERROR/panic lines")
            for ln in first:
                print(f"    {ln[:240]}")
        shutil.rmtree(work, ignore_errors=True)

    if failures:
        print(file=sys.stderr)
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        return 1
    print("all downloads matched; all commands succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
