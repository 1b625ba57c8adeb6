"""Attacks on the gateway's own boundaries (issue 13), each beside the legitimate flow.

One pair of real gateways on loopback: A (started with a soft open-files limit of 1024, as
systemd gives services) holds the patients; B is a peer institution that asks A for shares.
A second gateway with short connection limits is started for the slowloris and cap test.

- a flood of patient challenges does not lock a real patient out, and junk signatures do
  not fill anything (item 3);
- a registered and an unregistered patient are answered alike by the challenge endpoint
  (by id and by key) and by peer share requests (item 4);
- a partial request head is closed within the header deadline, idle connections beyond
  the cap close the oldest, and 2,000 idle connections do not stop a normal request
  (item 5);
- a key without --label-patients cannot plant records on a patient (item 9);
- UploadPartCopy cannot move a patient's data out of their records (item 10).

Run against e15ed43 (MEDGATE_BIN=/work/bin/medgate-e15ed43) every attack succeeds there and
its test fails; figures (flood rate, close time, RSS, latency) come from
benches/server_limits.py, not from here.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from support import Gateway, client_for, medgate_bin, port_open, require_tool

from test_sharing import cli, institution, keygen
from test_two_gateways import patient_api, wait_api, write_config

SOFT_NOFILE = 1024


class LimitedGateway(Gateway):
    """A gateway started with a soft RLIMIT_NOFILE of 1024 (the hard limit unchanged)."""

    def argv(self) -> list[str]:
        return ["sh", "-c", f'ulimit -Sn {SOFT_NOFILE} && exec "$@"', "sh"] + super().argv()


def register_patient(gw: Gateway, workdir: Path, pid: str) -> tuple[Path, str]:
    key = workdir / f"{pid}.key"
    recipient, proof = keygen(gw, key, institution(gw), pid)
    cli(gw, "patient", "register", "--data-dir", str(gw.data_dir), "--id", pid,
        "--recipient", recipient, "--proof", proof)
    return key, recipient


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A (patients alice; soft NOFILE 1024) and B, each configured as the other's peer."""
    a = LimitedGateway(tmp_path_factory.mktemp("gw-a"))
    b = Gateway(tmp_path_factory.mktemp("gw-b"))
    try:
        a.start()
        b.start()
        ra, rb = institution(a), institution(b)
        a.stop()
        b.stop()
        write_config(a, [{"name": "hospital-b", "recipient": rb}])
        write_config(b, [{"name": "hospital-a", "recipient": ra,
                          "url": f"http://127.0.0.1:{a.api_port}"}])
        a.start()
        b.start()
        wait_api(a)
        wait_api(b)
        work = tmp_path_factory.mktemp("patients")
        alice_key, alice_recipient = register_patient(a, work, "alice")
        yield {"a": a, "b": b, "work": work, "alice_key": alice_key,
               "alice_recipient": alice_recipient}
    finally:
        a.teardown()
        b.teardown()


def post_json(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"{}")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def put_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def forged_token(challenge_text: str, method: str, path: str, body: bytes = b"") -> str:
    """A well-formed SignedAuth (keyring/src/consent/patient_auth.rs) over `challenge_text` whose
    signature is 64 random bytes: what anyone can send without the patient's key."""
    challenge = b64url_decode(challenge_text)
    token = (b"\x01" + struct.pack(">I", len(challenge)) + challenge + put_str(method)
             + put_str(path) + hashlib.sha256(body).digest())
    return "Medgate-Patient " + b64url(token + bytes(64))


# ---------------------------------------------------------------------------------------
# Item 4: who is a patient here


def shape(v):
    """The JSON structure without values: keys and types."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [shape(x) for x in v]
    return type(v).__name__


def test_challenge_and_peer_requests_do_not_tell_who_is_a_patient(pair, tmp_path):
    a, b = pair["a"], pair["b"]
    api = a.api_endpoint
    stranger_recipient, _ = keygen(a, tmp_path / "stranger.key")

    by_id = [requests.post(api + "/v1/patient/challenge", json={"patient": pid}, timeout=10)
             for pid in ("alice", "nobody-here")]
    by_key = [requests.post(api + "/v1/patient/challenge", json={"recipient": r}, timeout=10)
              for r in (pair["alice_recipient"], stranger_recipient)]
    for registered, unregistered in (by_id, by_key):
        assert registered.status_code == unregistered.status_code == 200, \
            (registered.text, unregistered.text)
        assert shape(registered.json()) == shape(unregistered.json())
    # Asked by key, the answer never names the patient.
    assert "alice" not in by_key[0].text
    assert "alice" not in base64.urlsafe_b64decode(
        by_key[0].json()["challenge"] + "==").decode(errors="replace")

    # The legitimate use of a by-key challenge: alice signs in with it (the CLI asks by key).
    assert patient_api(a, pair["alice_key"], "GET", "/v1/patient/me").status_code == 200

    # Peer share requests from B: for alice and for an id nobody has, the same outcome.
    outs = []
    for i, pid in enumerate(("alice", "nobody-here")):
        cp = b.run_cli("share", "mount", "--data-dir", str(b.data_dir), "--peer", "hospital-a",
                       "--bucket", f"from-a-{i}", "--patient", pid, "--all",
                       "--purpose", "second opinion", "--purpose-code", "TREAT",
                       "--expires-in", "1h")
        outs.append((cp.returncode, re.sub(r"[0-9a-f]{32,}", "ID",
                                           cp.stdout.decode().replace(f"from-a-{i}", "B"))
                     .replace(pid, "PID")))
    assert outs[0][0] == 0, outs
    assert outs[0] == outs[1], outs


# ---------------------------------------------------------------------------------------
# Item 5: slowloris, caps and idle floods


def closed_within(sock: socket.socket, limit: float, drip: bytes | None) -> float | None:
    """Seconds until the server closes `sock` (sending `drip` a byte every 0.5 s), or
    None if it is still open after `limit`."""
    t0 = time.monotonic()
    sock.settimeout(0.5)
    i = 0
    while time.monotonic() - t0 < limit:
        try:
            if drip is not None:
                sock.sendall(drip[i % len(drip):i % len(drip) + 1])
                i += 1
            data = sock.recv(4096)
            if data == b"" or b"408" in data or b"400" in data:
                return time.monotonic() - t0
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0
    return None


def is_closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


@pytest.mark.timeout_s(120)
def test_slowloris_is_cut_at_the_header_deadline_and_the_cap_closes_the_oldest_idle(
        gateway_factory):
    gw = gateway_factory(start=False)
    deadline, cap = 3.0, 40
    gw.extra_env.update({"MEDGATE_HEADER_TIMEOUT": f"{deadline:g}s",
                         "MEDGATE_MAX_CONNECTIONS": str(cap)})
    gw.start()
    wait_api(gw)
    s3 = client_for(gw, read_timeout=10)
    s3.create_bucket(Bucket="slow")

    for port in (gw.port, gw.api_port):
        # A head sent a byte every half second, and a connection that sends nothing.
        drip = socket.create_connection(("127.0.0.1", port))
        drip.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        silent = socket.create_connection(("127.0.0.1", port))
        # Meanwhile a normal request is answered.
        assert s3.list_objects_v2(Bucket="slow")["KeyCount"] == 0
        took = closed_within(drip, deadline + 6, b"X-Slow: 1\r\n")
        assert took is not None, f"port {port}: a partial head stayed open past {deadline + 6} s"
        assert took <= deadline + 2.5, f"port {port}: closed after {took:.1f} s"
        took = closed_within(silent, deadline + 6, None)
        assert took is not None and took <= deadline + 2.5, (port, took)
        drip.close()
        silent.close()

    # The cap: cap + 10 idle connections; the oldest 10 are closed for the newer ones,
    # and a normal request (one more connection) is still answered.
    socks = []
    for _ in range(cap + 10):
        socks.append(socket.create_connection(("127.0.0.1", gw.port)))
        time.sleep(0.005)
    assert s3.list_objects_v2(Bucket="slow")["KeyCount"] == 0
    time.sleep(0.2)
    closed = [is_closed(s) for s in socks]
    assert all(closed[:10]), closed
    assert not any(closed[-(cap - 12):]), closed
    for s in socks:
        s.close()


# ---------------------------------------------------------------------------------------
# Item 9: planting records on a patient


def access_key(gw: Gateway, *args: str) -> tuple[str, str]:
    _, out, _ = cli(gw, "access-key", "create", "--data-dir", str(gw.data_dir), *args)
    kid = re.search(r"aws_access_key_id = (\S+)", out).group(1)
    secret = re.search(r"aws_secret_access_key = (\S+)", out).group(1)
    return kid, secret


def alice_records(gw: Gateway) -> int:
    r = requests.get(gw.api_endpoint + "/v1/admin/patients/alice", timeout=10,
                     headers={"Authorization": "Bearer " + gw.admin_token()})
    assert r.status_code == 200, r.text
    return r.json()["records"]


def test_only_keys_with_label_patients_may_label_records(pair):
    a = pair["a"]
    admin = client_for(a)
    admin.create_bucket(Bucket="ehr-label")
    admin.create_bucket(Bucket="scratch")
    # The first access key (made at first start) may label.
    admin.put_object(Bucket="ehr-label", Key="alice/1.txt", Body=b"real",
                     Metadata={"medgate-patient": "alice"})
    before = alice_records(a)

    # The attack: a key limited to an unrelated bucket plants a record on alice.
    kid, secret = access_key(a, "--bucket", "scratch")
    intruder = client_for(a, secret=secret, access_key_id=kid)
    with pytest.raises(ClientError) as e:
        intruder.put_object(Bucket="scratch", Key="planted", Body=b"fake",
                            Metadata={"medgate-patient": "alice"})
    err = e.value.response["Error"]
    assert err["Code"] == "AccessDenied" and "--label-patients" in err["Message"], err
    with pytest.raises(ClientError) as e:
        intruder.create_multipart_upload(Bucket="scratch", Key="planted-mp",
                                         Metadata={"medgate-patient": "alice"})
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    # Unlabelled writes with that key work.
    intruder.put_object(Bucket="scratch", Key="plain", Body=b"ok")
    # Nothing joined alice's records.
    assert alice_records(a) == before

    # A key created with --label-patients may label.
    kid2, secret2 = access_key(a, "--bucket", "scratch", "--label-patients")
    labeller = client_for(a, secret=secret2, access_key_id=kid2)
    labeller.put_object(Bucket="scratch", Key="labelled", Body=b"real too",
                        Metadata={"medgate-patient": "alice"})
    assert alice_records(a) == before + 1
    listed = cli(a, "access-key", "list", "--data-dir", str(a.data_dir))[1]
    assert re.search(rf"{kid2}\s+scratch\s+label-patients", listed), listed
    assert re.search(rf"{kid}\s+scratch\s+-", listed), listed


# ---------------------------------------------------------------------------------------
# Item 10: UploadPartCopy follows CopyObject's patient rule


def test_upload_part_copy_keeps_a_patients_data_in_their_records(pair):
    a = pair["a"]
    s3 = client_for(a)
    s3.create_bucket(Bucket="ehr-copy")
    s3.put_object(Bucket="ehr-copy", Key="alice/scan", Body=b"alice's scan " * 100,
                  Metadata={"medgate-patient": "alice"})
    src = {"Bucket": "ehr-copy", "Key": "alice/scan"}

    # The attack: copy alice's data into a record of nobody.
    up = s3.create_multipart_upload(Bucket="ehr-copy", Key="loose")["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(Bucket="ehr-copy", Key="loose", UploadId=up, PartNumber=1,
                            CopySource=src)
    err = e.value.response["Error"]
    assert err["Code"] == "InvalidArgument" and "source's patient" in err["Message"], err
    s3.abort_multipart_upload(Bucket="ehr-copy", Key="loose", UploadId=up)
    # CopyObject's rule, which UploadPartCopy now shares: a copy stays alice's record.
    s3.copy_object(Bucket="ehr-copy", Key="loose2", CopySource=src,
                   MetadataDirective="REPLACE", Metadata={})
    assert s3.head_object(Bucket="ehr-copy", Key="loose2")["Metadata"].get(
        "medgate-patient") == "alice"

    # Legitimate: into an upload of alice's own record.
    up = s3.create_multipart_upload(Bucket="ehr-copy", Key="alice/scan-copy",
                                    Metadata={"medgate-patient": "alice"})["UploadId"]
    part = s3.upload_part_copy(Bucket="ehr-copy", Key="alice/scan-copy", UploadId=up,
                               PartNumber=1, CopySource=src)
    s3.complete_multipart_upload(
        Bucket="ehr-copy", Key="alice/scan-copy", UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1,
                                    "ETag": part["CopyPartResult"]["ETag"]}]})
    got = s3.get_object(Bucket="ehr-copy", Key="alice/scan-copy")
    assert got["Body"].read() == b"alice's scan " * 100
    assert got["Metadata"].get("medgate-patient") == "alice"


# ---------------------------------------------------------------------------------------
# Item 5, continued: an idle-connection flood on A (after the tests that need A healthy)


def open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files line")


@pytest.mark.timeout_s(120)
def test_two_thousand_idle_connections_do_not_stop_a_normal_request(pair):
    # This process needs the descriptors too.
    mine_soft, mine_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if mine_soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(mine_hard, 8192), mine_hard))
    a = pair["a"]
    soft, hard = open_files_limits(a.proc.pid)
    s3 = client_for(a, read_timeout=15)
    s3.create_bucket(Bucket="idle-flood")
    socks = []
    try:
        for _ in range(2000):
            socks.append(socket.create_connection(("127.0.0.1", a.port), timeout=5))
        s3.put_object(Bucket="idle-flood", Key="k", Body=b"still served")
        assert s3.get_object(Bucket="idle-flood", Key="k")["Body"].read() == b"still served"
        still_open = sum(not is_closed(s) for s in socks)
        assert still_open >= 1990, still_open
    finally:
        for s in socks:
            s.close()
    # It raised its own soft limit (started at 1024) to the hard limit.
    assert hard <= SOFT_NOFILE or soft == hard, (soft, hard)


# ---------------------------------------------------------------------------------------
# Item 3: challenge flood


def test_patient_challenge_is_single_use_and_bound_to_its_gateway(pair):
    a = pair["a"]
    api = a.api_endpoint
    header = cli(a, "patient", "auth-header", "--gateway", api, "--identity",
                 str(pair["alice_key"]), "--path", "/v1/patient/grants")[1].strip().splitlines()[-1]
    r = requests.get(api + "/v1/patient/grants", headers={"Authorization": header}, timeout=10)
    assert r.status_code == 200, r.text
    r = requests.get(api + "/v1/patient/grants", headers={"Authorization": header}, timeout=10)
    assert r.status_code == 401 and "used challenge" in r.json()["message"]
    # A challenge B issued is not one of A's, whatever it says.
    rb = requests.post(pair["b"].api_endpoint + "/v1/patient/challenge",
                       json={"patient": "alice"}, timeout=10)
    assert rb.status_code == 200
    r = requests.get(api + "/v1/patient/grants", timeout=10, headers={
        "Authorization": forged_token(rb.json()["challenge"], "GET", "/v1/patient/grants")})
    assert r.status_code == 401


@pytest.mark.timeout_s(240)
def test_challenge_flood_and_junk_signatures_do_not_lock_a_patient_out(pair):
    a = pair["a"]
    api = a.api_endpoint
    # The legitimate flow first: alice signs in.
    assert patient_api(a, pair["alice_key"], "GET", "/v1/patient/grants").status_code == 200

    # The attack: more unauthenticated challenge requests for alice than e15ed43's table
    # holds (10,000 for 5 minutes), from 8 connections at once.
    total, threads_n = 10_400, 8
    statuses: list[int] = []
    lock = threading.Lock()

    def flood(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", a.api_port, timeout=30)
        seen = []
        for _ in range(n):
            status, _ = post_json(conn, "/v1/patient/challenge", {"patient": "alice"})
            seen.append(status)
        conn.close()
        with lock:
            statuses.extend(seen)

    workers = [threading.Thread(target=flood, args=(total // threads_n,))
               for _ in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(statuses) == total
    # Every challenge was answered (nothing was refused for being "too many"), and the
    # real patient signs in right after the flood.
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert patient_api(a, pair["alice_key"], "GET", "/v1/patient/grants").status_code == 200

    # Junk signatures over real challenges: each refused, none uses anything up.
    conn = http.client.HTTPConnection("127.0.0.1", a.api_port, timeout=30)
    _, ch = post_json(conn, "/v1/patient/challenge", {"patient": "alice"})
    for _ in range(500):
        conn.request("GET", "/v1/patient/grants",
                     headers={"Authorization": forged_token(ch["challenge"], "GET",
                                                            "/v1/patient/grants")})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 401 and "signature" in body["message"], body
    conn.close()

    # The real patient still signs in, again and again.
    for _ in range(3):
        r = patient_api(a, pair["alice_key"], "GET", "/v1/patient/grants")
        assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------
# Item 15: process memory
# ---------------------------------------------------------------------------

NOBODY = 65534
# The Debian interpreter (tests/run.sh installs python3): the venv's or a pyenv shim may live
# under a directory the unprivileged user cannot enter.
SYSTEM_PYTHON = "/usr/bin/python3"


def as_service_user(argv: list[str]) -> list[str]:
    """`argv` run as an unprivileged user: nobody when the tests run as root (as in CI),
    else the current user (no change needed)."""
    if os.geteuid() != 0:
        return argv
    setpriv = require_tool("setpriv")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv]


class ServiceUserGateway(Gateway):
    """A gateway running as an unprivileged service user, from a copy of the binary that
    user may execute, with a data dir it owns."""

    def argv(self) -> list[str]:
        return as_service_user(super().argv())


def test_process_memory_is_closed_to_other_processes_of_the_same_user(tmp_path):
    """Item 15: another process of the service user (a compromised plugin, a shell of the
    same account) cannot read the gateway's memory or environment (which holds
    MEDGATE_SECRET_ACCESS_KEY here); the same process can read those of an ordinary process
    of that user, so the refusal is the gateway's doing. The gateway still serves."""
    base = Path(tempfile.mkdtemp(prefix="medgate-svc-", dir="/tmp"))
    gw = None
    other = None
    try:
        os.chmod(base, 0o755)
        binary = base / "medgate"
        shutil.copy2(medgate_bin(), binary)
        os.chmod(binary, 0o755)
        work = base / "gw"
        work.mkdir()
        if os.geteuid() == 0:
            os.chown(work, NOBODY, NOBODY)
        gw = ServiceUserGateway(work)
        gw.bin = str(binary)
        gw.start()
        s3 = client_for(gw)
        s3.create_bucket(Bucket="still-serving")
        s3.put_object(Bucket="still-serving", Key="k", Body=b"records")
        assert s3.get_object(Bucket="still-serving", Key="k")["Body"].read() == b"records"

        def read_as_service_user(pid: int, what: str) -> subprocess.CompletedProcess:
            return subprocess.run(as_service_user(["cat", f"/proc/{pid}/{what}"]),
                                  capture_output=True, timeout=30)

        # The control: an ordinary process of the same user is open to it.
        other = subprocess.Popen(as_service_user(["sleep", "120"]),
                                 env={"PATH": os.environ["PATH"], "CONTROL_MARK": "visible"})
        time.sleep(0.3)
        cp = read_as_service_user(other.pid, "environ")
        assert cp.returncode == 0 and b"CONTROL_MARK=visible" in cp.stdout, cp

        # The attack: the gateway's environment (the S3 secret) and memory.
        cp = read_as_service_user(gw.proc.pid, "environ")
        assert cp.returncode != 0, "the gateway's environment was readable"
        assert gw.secret_access_key.encode() not in cp.stdout
        assert b"Permission denied" in cp.stderr, cp.stderr
        m = subprocess.run(as_service_user(
            [SYSTEM_PYTHON, "-c", f"open('/proc/{gw.proc.pid}/mem', 'rb')"]),
            capture_output=True, timeout=30)
        assert m.returncode != 0 and b"PermissionError" in m.stderr, m
        assert s3.get_object(Bucket="still-serving", Key="k")["Body"].read() == b"records"
    finally:
        if other is not None:
            other.kill()
            other.wait(timeout=10)
        if gw is not None:
            gw.teardown()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# The S3 key, admin socket and JSON API boundaries
# ---------------------------------------------------------------------------


def test_a_bucket_limited_key_cannot_reach_other_buckets_by_copy_or_multipart(pair):
    """A key limited to one bucket reads and writes there (the control) but cannot pull
    another bucket's record into its own by CopyObject or UploadPartCopy, nor see it."""
    a = pair["a"]
    admin = client_for(a)
    admin.create_bucket(Bucket="ward-own")
    admin.create_bucket(Bucket="ward-other")
    secret_body = os.urandom(6 * 1024 * 1024)
    admin.put_object(Bucket="ward-other", Key="scan.dcm", Body=secret_body)
    kid, secret = access_key(a, "--bucket", "ward-own")
    limited = client_for(a, access_key_id=kid, secret=secret)

    limited.put_object(Bucket="ward-own", Key="mine.txt", Body=b"mine")
    limited.copy_object(Bucket="ward-own", Key="mine-copy.txt",
                        CopySource={"Bucket": "ward-own", "Key": "mine.txt"})
    assert limited.get_object(Bucket="ward-own", Key="mine-copy.txt")["Body"].read() == b"mine"

    def denied(call) -> None:
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDenied", e.value.response

    denied(lambda: limited.copy_object(Bucket="ward-own", Key="stolen.dcm",
                                       CopySource={"Bucket": "ward-other", "Key": "scan.dcm"}))
    up = limited.create_multipart_upload(Bucket="ward-own", Key="stolen-mp.dcm")
    denied(lambda: limited.upload_part_copy(
        Bucket="ward-own", Key="stolen-mp.dcm", UploadId=up["UploadId"], PartNumber=1,
        CopySource={"Bucket": "ward-other", "Key": "scan.dcm"}))
    limited.abort_multipart_upload(Bucket="ward-own", Key="stolen-mp.dcm",
                                   UploadId=up["UploadId"])
    with pytest.raises(ClientError) as e:  # HEAD answers carry no body: the status says it
        limited.head_object(Bucket="ward-other", Key="scan.dcm")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403, e.value.response
    denied(lambda: limited.delete_object(Bucket="ward-other", Key="scan.dcm"))
    keys = [o["Key"] for o in limited.list_objects_v2(Bucket="ward-own").get("Contents", [])]
    assert sorted(keys) == ["mine-copy.txt", "mine.txt"], keys
    assert admin.get_object(Bucket="ward-other", Key="scan.dcm")["Body"].read() == secret_body


def test_the_admin_socket_and_secrets_are_closed_to_other_local_users(pair, tmp_path):
    """Another local account (nobody) can neither talk to the admin socket nor read the
    data dir's secrets; the service user's own admin commands work (the control)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root to act as a second local user (CI runs as root)")
    a = pair["a"]
    _, out, _ = cli(a, "access-key", "list", "--data-dir", str(a.data_dir))
    assert a.access_key_id in out
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "s.connect(sys.argv[1])\n"
             "s.sendall(b'{\"AccessKeyList\":null}\\n')\n"
             "print(s.recv(65536))\n")
    cp = subprocess.run(as_service_user([SYSTEM_PYTHON, "-c", probe,
                                         str(a.data_dir / "admin.sock")]),
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode != 0 and "PermissionError" in cp.stderr, cp
    assert a.access_key_id not in cp.stdout
    for name in ("institution.key", "credentials", "admin.token", "private"):
        cp = subprocess.run(as_service_user(["ls", "-l", str(a.data_dir / name)]),
                            capture_output=True, text=True, timeout=30)
        assert cp.returncode != 0 and "Permission denied" in cp.stderr, (name, cp)


def test_json_api_admin_routes_need_the_admin_token(pair):
    """The admin routes answer the admin token only: not a missing, wrong, truncated or
    one-character-off token, not an S3 secret, not a patient's signed token."""
    a = pair["a"]
    url = a.api_endpoint + "/v1/admin/patients"
    token = a.admin_token()
    r = requests.get(url, headers={"Authorization": "Bearer " + token}, timeout=10)
    assert r.status_code == 200 and "alice" in r.text, r.text
    off_by_one = token[:-1] + ("A" if token[-1] != "A" else "B")
    for header in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer " + off_by_one},
                   {"Authorization": "Bearer " + token[:-1]},
                   {"Authorization": "Bearer " + token + "x"},
                   {"Authorization": "Bearer " + a.secret_access_key},
                   {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()},
                   {"Authorization": token}):
        r = requests.get(url, headers=header, timeout=10)
        assert r.status_code == 401, (header, r.status_code, r.text)
        assert token not in r.text and "alice" not in r.text
    # A patient's valid signed token opens the patient's routes, not the admin's.
    me = patient_api(a, pair["alice_key"], "GET", "/v1/patient/grants")
    assert me.status_code == 200, me.text
    forged = patient_api(a, pair["alice_key"], "GET", "/v1/admin/patients")
    assert forged.status_code == 401, (forged.status_code, forged.text)
