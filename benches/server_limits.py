#!/usr/bin/env python3
"""The patient API and connection limits under attack: figures, not pass/fail.

    PATH=/work/venv/bin:$PATH python benches/server_limits.py [--n 400] [--flood 10000] [--idle 2000]

MEDGATE_BIN picks the binary (default target/release/medgate). In one run, against a fresh
`medgate serve` started with a soft open-files limit of 1024 (systemd's default) and a header
deadline of --deadline seconds (default 5):

  1. registers patient alice, then times --n `POST /v1/patient/challenge` calls each (one
     keep-alive connection, registered and unregistered calls interleaved) for alice and for
     an id nobody has, then by alice's key and by a stranger's key, and prints the latency
     medians side by side (they should match: no store lookup either way);
  2. floods the challenge endpoint with --flood requests for alice from 8 connections and
     prints the rate and the statuses; sends 2,000 junk signatures and prints their refusal
     rate; then times alice's real sign-in (challenge, signature, GET /v1/patient/grants, via
     the CLI);
  3. sends a request head a byte every 0.5 s and prints when the server closes it;
  4. prints the server's VmRSS and the median latency of a small S3 GET (20 runs) before and
     while --idle idle connections are open, and the open-files limits it runs with;
  5. peer nonces (item 6): as a configured peer, sends --peer-calls authenticated calls, each
     with a fresh nonce, then as many with junk signatures, and prints the server's VmRSS and
     the median latency of 200 authenticated calls at the start, after the authenticated ones
     and after the junk (flat latency: O(1) per call; junk leaves no trace).

Every server is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

from support import Gateway, client_for  # noqa: E402
from test_attacks_server import (  # noqa: E402
    LimitedGateway, closed_within, forged_token, open_files_limits, post_json,
    register_patient)
from test_sharing import cli, keygen  # noqa: E402
from test_two_gateways import wait_api, write_config  # noqa: E402
from test_attacks_peer import bech32_recipient, peer_header  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.2f} ms"


def challenge_latencies(gw: Gateway, bodies: list[dict], n: int) -> list[list[float]]:
    """`n` rounds; each round calls once with every body in turn, so that drift on a shared
    machine (load, frequency) falls on every body alike. One latency list per body."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.api_port, timeout=30)
    out: list[list[float]] = [[] for _ in bodies]
    for _ in range(n):
        for i, body in enumerate(bodies):
            t0 = time.perf_counter()
            status, _ = post_json(conn, "/v1/patient/challenge", body)
            out[i].append(time.perf_counter() - t0 if status == 200 else float("nan"))
    conn.close()
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--flood", type=int, default=10_000)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--deadline", type=float, default=5.0)
    ap.add_argument("--peer-calls", type=int, default=20_000)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.idle + 1024)), hard))

    work = Path(tempfile.mkdtemp(prefix="medgate-limits-"))
    gw = LimitedGateway(work / "gw")
    gw.extra_env["MEDGATE_HEADER_TIMEOUT"] = f"{args.deadline:g}s"
    peer_key = Ed25519PrivateKey.generate()
    peer = (X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            + peer_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    write_config(gw, [{"name": "bench-peer", "recipient": bech32_recipient(peer)}])
    try:
        gw.start()
        wait_api(gw)
        alice_key, alice_recipient = register_patient(gw, work, "alice")
        stranger, _ = keygen(gw, work / "stranger.key")

        print("1. challenge latency medians, registered vs unregistered "
              f"({args.n} calls each, one keep-alive connection)")
        pairs = [("by id ", {"patient": "alice"}, {"patient": "nobody-here"}),
                 ("by key", {"recipient": alice_recipient}, {"recipient": stranger})]
        for name, reg, unreg in pairs:
            challenge_latencies(gw, [reg, unreg], 50)  # warm-up
            a, b = challenge_latencies(gw, [reg, unreg], args.n)
            print(f"   {name}: registered {ms(a)}   unregistered {ms(b)} (calls interleaved)")

        print(f"2. challenge flood: {args.flood} requests for alice from 8 connections")
        statuses: list[int] = []
        lock = threading.Lock()

        def flood(count: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", gw.api_port, timeout=30)
            seen = [post_json(conn, "/v1/patient/challenge", {"patient": "alice"})[0]
                    for _ in range(count)]
            conn.close()
            with lock:
                statuses.extend(seen)

        t0 = time.perf_counter()
        workers = [threading.Thread(target=flood, args=(args.flood // 8,)) for _ in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        took = time.perf_counter() - t0
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        print(f"   {len(statuses) / took:.0f} requests/s over {took:.1f} s; statuses {counts}")
        conn = http.client.HTTPConnection("127.0.0.1", gw.api_port, timeout=30)
        _, ch = post_json(conn, "/v1/patient/challenge", {"patient": "alice"})
        refused, t0 = 0, time.perf_counter()
        for _ in range(2000):
            conn.request("GET", "/v1/patient/grants", headers={
                "Authorization": forged_token(ch["challenge"], "GET", "/v1/patient/grants")})
            resp = conn.getresponse()
            resp.read()
            refused += resp.status == 401
        took = time.perf_counter() - t0
        conn.close()
        print(f"   junk signatures: {refused}/2000 refused (401), {2000 / took:.0f} requests/s")
        t0 = time.perf_counter()
        rc, out, _ = cli(gw, "patient", "grants", "--gateway", gw.api_endpoint,
                         "--identity", str(alice_key), ok=False)
        print(f"   alice's real sign-in after the flood: exit {rc} in "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms (CLI process included)")

        print(f"3. slowloris: a head sent a byte every 0.5 s (header deadline {args.deadline:g}s)")
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        closed_after = closed_within(s, args.deadline * 4, b"X-Slow: 1\r\n")
        s.close()
        print(f"   closed by the server after {closed_after:.2f} s" if closed_after is not None
              else f"   still open after {args.deadline * 4:g} s")

        print(f"4. {args.idle} idle connections on the S3 port")
        soft, hard = open_files_limits(gw.proc.pid)
        print(f"   server open-files limit: soft {soft}, hard {hard} (started with soft 1024)")
        s3 = client_for(gw, read_timeout=30)
        s3.create_bucket(Bucket="bench")
        s3.put_object(Bucket="bench", Key="small", Body=b"x" * 1024)

        def get_latencies() -> list[float]:
            xs = []
            for _ in range(20):
                t0 = time.perf_counter()
                s3.get_object(Bucket="bench", Key="small")["Body"].read()
                xs.append(time.perf_counter() - t0)
            return xs

        before_rss, before = rss_kib(gw.proc.pid), get_latencies()
        socks = [socket.create_connection(("127.0.0.1", gw.port), timeout=5)
                 for _ in range(args.idle)]
        time.sleep(0.5)
        during_rss, during = rss_kib(gw.proc.pid), get_latencies()
        for c in socks:
            c.close()
        print(f"   RSS {before_rss / 1024:.1f} MiB before, {during_rss / 1024:.1f} MiB with them "
              f"({(during_rss - before_rss) / args.idle:.1f} KiB each)")
        print(f"   1 KiB GET median {ms(before)} before, {ms(during)} with them")

        print(f"5. peer nonces: {args.peer_calls} authenticated calls, then as many junk ones")
        inst = cli(gw, "keys", "--data-dir", str(gw.data_dir))[1].strip().splitlines()[-1]
        host = f"127.0.0.1:{gw.api_port}"
        target = "/v1/peer/objects?grant=" + "0" * 32
        conn = http.client.HTTPConnection("127.0.0.1", gw.api_port, timeout=30)

        def call(signer) -> tuple[int, float]:
            hdr = {"Authorization": peer_header(peer, signer, inst, "GET", host, target, b"")}
            t0 = time.perf_counter()
            conn.request("GET", target, headers=hdr)
            r = conn.getresponse()
            r.read()
            return r.status, time.perf_counter() - t0

        def sample() -> str:
            lat = [call(peer_key)[1] for _ in range(200)]
            return f"median {ms(lat)}, RSS {rss_kib(gw.proc.pid) / 1024:.1f} MiB"

        print(f"   at start: {sample()}; answer to a valid call: {call(peer_key)[0]}")
        t0 = time.monotonic()
        for _ in range(args.peer_calls):
            call(peer_key)
        took = time.monotonic() - t0
        print(f"   after {args.peer_calls} authenticated calls ({args.peer_calls / took:.0f}/s): "
              f"{sample()}")
        junk = Ed25519PrivateKey.generate()
        statuses: dict[int, int] = {}
        for _ in range(args.peer_calls):
            st = call(junk)[0]
            statuses[st] = statuses.get(st, 0) + 1
        print(f"   after {args.peer_calls} junk signatures (statuses {statuses}): {sample()}")
        conn.close()
    finally:
        gw.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
