"""Two institutions: hospital A holds a patient's records, hospital B asks for them.

Two `medgate serve` processes on loopback, each with its own data dir and folder public
store. B asks A (a signed peer request), the patient approves at A through A's JSON API
with the patient CLI (`--gateway`), and B serves the records on its own S3 endpoint to the
aws CLI, reading key material and ciphertext only through A's exchange API. Then: another
patient's record is never readable at B, forged and replayed grants are refused, a
revocation at A reaches B within a minute, an expired grant stops working by itself, and
the patient recovers the records with A stopped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time

import pytest
import requests

from support import MIB, Gateway, port_open

from test_sharing import cli, keygen, institution


def wait_api(gw: Gateway, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(gw.api_port):
            return
        time.sleep(0.05)
    pytest.fail(f"the JSON API of {gw.workdir} did not open; log:\n{gw.log_tail()}")


def write_config(gw: Gateway, peers: list[dict]) -> None:
    lines = []
    for p in peers:
        lines += ["[[peers]]", f'name = "{p["name"]}"', f'recipient = "{p["recipient"]}"']
        if "url" in p:
            lines.append(f'url = "{p["url"]}"')
            # Loopback tests speak plain http to peers, which the entry must allow.
            # MEDGATE_E2E_NO_PLAIN_HTTP_KEY=1 leaves the key out, to run these tests
            # against binaries that predate it.
            if (p["url"].startswith("http://")
                    and os.environ.get("MEDGATE_E2E_NO_PLAIN_HTTP_KEY") != "1"):
                lines.append("allow_plain_http = true")
        lines.append("")
    cfg = gw.workdir / "medgate.toml"
    cfg.write_text("\n".join(lines))
    gw.extra_args = ["--config", str(cfg)]


@pytest.fixture
def two(gateway_factory):
    """Gateways A and B that know each other as peers (B knows A's API url)."""
    a = gateway_factory()
    b = gateway_factory()
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
    return a, b, ra


def register_at(gw, tmp_path, pid):
    key = tmp_path / f"{pid}.key"
    recipient, proof = keygen(gw, key, institution(gw), pid)
    cli(gw, "patient", "register", "--data-dir", str(gw.data_dir), "--id", pid,
        "--recipient", recipient, "--proof", proof)
    return key


def mount(b, bucket, *scope, expires="1h"):
    _, out, _ = cli(b, "share", "mount", "--data-dir", str(b.data_dir), "--peer", "hospital-a",
                    "--bucket", bucket, "--patient", "alice", *scope,
                    "--purpose", "second opinion on the CT", "--purpose-code", "TREAT",
                    "--expires-in", expires)
    return out.strip().splitlines()[-1]


def patient(gw, *args, ok=True):
    return cli(gw, "patient", *args, "--gateway", gw.api_endpoint, ok=ok)


def grant_of(out: str) -> str:
    m = re.search(r"grant ([0-9a-f]{32})", out)
    assert m, out
    return m.group(1)


def aws_error(cp) -> str:
    return cp.stderr + cp.stdout


def get_denied(aws, b, bucket, key, out) -> str:
    """GetObject at B that must be refused; returns the aws CLI's error text (GetObject, not
    `s3 cp`, whose HEAD shows no message)."""
    cp = aws(b, "s3api", "get-object", "--bucket", bucket, "--key", key, str(out), check=False)
    assert cp.returncode != 0, f"{bucket}/{key} was readable at B"
    assert not out.exists() or out.stat().st_size == 0
    return aws_error(cp)


def patient_api(gw, key, method, path, body: bytes | None = None):
    """One raw call to A's patient API, authenticated by the CLI's auth header."""
    args = ["patient", "auth-header", "--gateway", gw.api_endpoint, "--identity", str(key),
            "--method", method, "--path", path]
    if body is not None:
        f = gw.workdir / "body.json"
        f.write_bytes(body)
        args += ["--body-file", str(f)]
    _, out, _ = cli(gw, *args)
    header = out.strip().splitlines()[-1]
    return requests.request(method, gw.api_endpoint + path, data=body,
                            headers={"Authorization": header,
                                     "Content-Type": "application/json"}, timeout=30)


@pytest.mark.timeout_s(240)
def test_b_reads_what_the_patient_shares_at_a(two, aws, tmp_path):
    a, b, a_recipient = two
    alice = register_at(a, tmp_path, "alice")
    register_at(a, tmp_path, "bob")

    # Records at A, written with the aws CLI and tagged with their patient.
    aws(a, "s3", "mb", "s3://ehr")
    ct = os.urandom(3 * MIB + 12345)
    note = b"discharge summary: stable\n" * 100
    bobs = b"bob's record"
    for name, data in (("ct.dcm", ct), ("note.txt", note), ("bob.txt", bobs)):
        (tmp_path / name).write_bytes(data)
    aws(a, "s3", "cp", str(tmp_path / "ct.dcm"), "s3://ehr/alice/ct.dcm",
        "--metadata", "medgate-patient=alice")
    aws(a, "s3", "cp", str(tmp_path / "note.txt"), "s3://ehr/alice/note.txt",
        "--metadata", "medgate-patient=alice")
    aws(a, "s3", "cp", str(tmp_path / "bob.txt"), "s3://ehr/bob/scan.txt",
        "--metadata", "medgate-patient=bob")
    # Bob's record filed under alice's prefix: a grant of alice's never reaches it.
    aws(a, "s3", "cp", str(tmp_path / "bob.txt"), "s3://ehr/alice/misfiled.txt",
        "--metadata", "medgate-patient=bob")

    # B asks A for all of alice's records and mounts them as bucket from-a.
    req = mount(b, "from-a", "--all")
    assert re.fullmatch(r"[0-9a-f]{64}", req), req
    _, out, _ = cli(b, "share", "mounts", "--data-dir", str(b.data_dir))
    assert "from-a" in out and "pending" in out

    # Nothing readable at B before the patient decides.
    err = get_denied(aws, b, "from-a", "ehr/alice/note.txt", tmp_path / "early")
    assert "AccessDenied" in err and "pending" in err, err

    # The patient sees the request at A, with who asks taken from A's own peer config.
    _, out, _ = patient(a, "requests", "--identity", str(alice))
    assert req in out and "second opinion on the CT" in out
    assert "hospital-b" in out
    _, out, _ = patient(a, "approve", "--identity", str(alice), req, "--yes")
    gid = grant_of(out)
    assert "2 records shared" in out, out  # ct and note; not bob's misfiled record

    # B lists and reads alice's records through its own S3 endpoint, byte-identical.
    cp = aws(b, "s3", "ls", "s3://from-a/", "--recursive")
    assert "ehr/alice/ct.dcm" in cp.stdout and "ehr/alice/note.txt" in cp.stdout
    assert "bob" not in cp.stdout and "misfiled" not in cp.stdout
    aws(b, "s3", "cp", "s3://from-a/ehr/alice/ct.dcm", str(tmp_path / "ct.out"))
    assert (tmp_path / "ct.out").read_bytes() == ct
    aws(b, "s3", "cp", "s3://from-a/ehr/alice/note.txt", str(tmp_path / "note.out"))
    assert (tmp_path / "note.out").read_bytes() == note
    # A range read crossing a chunk boundary.
    cp = aws(b, "s3api", "get-object", "--bucket", "from-a", "--key", "ehr/alice/ct.dcm",
             "--range", f"bytes={MIB - 10}-{MIB + 9}", str(tmp_path / "range.out"))
    assert (tmp_path / "range.out").read_bytes() == ct[MIB - 10:MIB + 10]

    # Another patient's records are never readable at B, whatever the key names.
    for key in ("ehr/bob/scan.txt", "ehr/alice/misfiled.txt"):
        err = get_denied(aws, b, "from-a", key, tmp_path / "x")
        assert "AccessDenied" in err and "not covered" in err, err
    # The mount is read-only.
    cp = aws(b, "s3", "cp", str(tmp_path / "note.txt"), "s3://from-a/ehr/alice/new.txt",
             check=False)
    assert cp.returncode != 0 and "AccessDenied" in aws_error(cp)

    # A recorded B's read sessions; B holds no blob of its own (all came through A).
    _, out, _ = cli(a, "share", "events", "--data-dir", str(a.data_dir), "--patient", "alice")
    assert "peer:hospital-b" in out and "\tread\t" in out, out
    assert not [f for f in b.public_files() if f.startswith("v1/b/")], b.public_files()

    # The patient's audit at A: every entry about her is in A's published log (checked
    # against the checkpoint read from A's public store), chained without gaps, and shows
    # B's reads. A second audit must extend the first (consistency with the kept state).
    state = tmp_path / "audit.json"
    for _ in range(2):
        _, out, _ = patient(a, "audit", "--identity", str(alice), "--institution", a_recipient,
                            "--public-store", str(a.public_dir), "--state", str(state))
        assert "in order and without gaps" in out, out
        assert re.search(r"read\s+by peer:hospital-b ehr/alice/ct.dcm under grant " + gid, out), out
        assert "bob" not in out
    assert json.loads(state.read_text())["size"] > 0

    # Forged grants are refused by A, whatever the channel: a grant with a flipped byte
    # (bad signature), alice's valid grant replayed for another request, and the same
    # grant replayed on its own request.
    req2 = mount(b, "from-a-two", "--object", "ehr/alice/note.txt")
    grants = patient_api(a, alice, "GET", "/v1/patient/grants").json()["grants"]
    good = next(g["grant"] for g in grants if g["id"] == gid)
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[-70] ^= 0x01
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for grant, req_id, why in ((forged, req2, "signature"), (good, req2, "request"),
                               (good, req, "")):
        body = json.dumps({"grant": grant}).encode()
        r = patient_api(a, alice, "POST", f"/v1/patient/requests/{req_id}/approve", body)
        assert r.status_code in (400, 403), (r.status_code, r.text)
        assert why in r.json()["message"], r.text
    err = get_denied(aws, b, "from-a-two", "ehr/alice/note.txt", tmp_path / "y")
    assert "pending" in err, err

    # Revocation at A: B gets AccessDenied within a minute (here at once: every ciphertext
    # fetch checks the grant at A).
    _, out, _ = patient(a, "revoke", "--identity", str(alice), gid)
    deadline = time.monotonic() + 60
    while True:
        cp = aws(b, "s3api", "get-object", "--bucket", "from-a", "--key", "ehr/alice/note.txt",
                 str(tmp_path / "late"), check=False)
        if cp.returncode != 0:
            assert "AccessDenied" in aws_error(cp) and "revoked" in aws_error(cp), aws_error(cp)
            break
        assert time.monotonic() < deadline, "B still reads 60 s after the revocation"
        time.sleep(2)
    # The revoked grant replayed on its own request is refused too.
    r = patient_api(a, alice, "POST", f"/v1/patient/requests/{req}/approve",
                    json.dumps({"grant": good}).encode())
    assert r.status_code in (400, 403) and r.json()["status"] == "error", r.text

    # The patient recovers her records from A's public store alone, with A stopped.
    a.stop()
    out_dir = tmp_path / "pulled"
    cli(a, "patient", "pull", "--identity", str(alice), "--institution", a_recipient,
        "--public-store", str(a.public_dir), "--out", str(out_dir))
    assert (out_dir / "ehr" / "alice" / "ct.dcm").read_bytes() == ct
    assert (out_dir / "ehr" / "alice" / "note.txt").read_bytes() == note
    assert not (out_dir / "ehr" / "bob").exists()


@pytest.mark.timeout_s(120)
def test_expired_grant_stops_b_by_itself(two, aws, tmp_path):
    a, b, _ = two
    alice = register_at(a, tmp_path, "alice")
    aws(a, "s3", "mb", "s3://labs")
    (tmp_path / "a1c.json").write_bytes(b'{"a1c": 6.1}')
    aws(a, "s3", "cp", str(tmp_path / "a1c.json"), "s3://labs/alice/a1c.json",
        "--metadata", "medgate-patient=alice")
    req = mount(b, "labs-from-a", "--object", "labs/alice/a1c.json", expires="6s")
    patient(a, "approve", "--identity", str(alice), req, "--yes")
    aws(b, "s3", "cp", "s3://labs-from-a/labs/alice/a1c.json", str(tmp_path / "ok"))
    assert (tmp_path / "ok").read_bytes() == b'{"a1c": 6.1}'
    time.sleep(7)
    err = get_denied(aws, b, "labs-from-a", "labs/alice/a1c.json", tmp_path / "no")
    assert "AccessDenied" in err and "expired" in err, err


def test_api_authentication_and_openapi(two, tmp_path):
    a, b, _ = two
    alice = register_at(a, tmp_path, "alice")
    api = a.api_endpoint

    # The OpenAPI document names every route, with the three security schemes.
    doc = requests.get(api + "/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/admin/patients", "/v1/patient/challenge", "/v1/patient/requests/{id}/approve",
                 "/v1/peer/exchange", "/v1/peer/blob", "/v1/log/checkpoint",
                 "/v1/log/proofs/inclusion", "/v1/patient/entries"):
        assert path in doc["paths"], path
    assert set(doc["components"]["securitySchemes"]) == {"admin", "patient", "peer"}
    from openapi_spec_validator import validate
    validate(doc)

    # Admin calls need the admin token.
    r = requests.get(api + "/v1/admin/patients", timeout=10)
    assert r.status_code == 401 and r.json()["status"] == "error"
    r = requests.get(api + "/v1/admin/patients", timeout=10,
                     headers={"Authorization": "Bearer " + "x" * 40})
    assert r.status_code == 401 and "wrong admin token" in r.json()["message"]
    r = requests.get(api + "/v1/admin/patients", timeout=10,
                     headers={"Authorization": "Bearer " + a.admin_token()})
    assert r.status_code == 200 and [p["id"] for p in r.json()["patients"]] == ["alice"]
    r = requests.post(api + "/v1/admin/access-keys", json={"buckets": ["ehr"]}, timeout=10,
                      headers={"Authorization": "Bearer " + a.admin_token()})
    assert r.status_code == 200 and r.json()["status"] == "access-key-created"

    # Patient calls need a signed challenge; a token is single-use and bound to its path.
    r = requests.get(api + "/v1/patient/grants", timeout=10)
    assert r.status_code == 401
    header = cli(a, "patient", "auth-header", "--gateway", api, "--identity", str(alice),
                 "--path", "/v1/patient/grants")[1].strip().splitlines()[-1]
    r = requests.get(api + "/v1/patient/requests", headers={"Authorization": header}, timeout=10)
    assert r.status_code == 401 and "path" in r.json()["message"]
    # Only a verified signature uses a challenge up: the token still works where it was
    # signed for, once.
    r = requests.get(api + "/v1/patient/grants", headers={"Authorization": header}, timeout=10)
    assert r.status_code == 200, r.text
    r = requests.get(api + "/v1/patient/grants", headers={"Authorization": header}, timeout=10)
    assert r.status_code == 401 and "used challenge" in r.json()["message"]
    assert patient_api(a, alice, "GET", "/v1/patient/grants").status_code == 200

    # Peer calls need a configured peer's signature.
    r = requests.post(api + "/v1/peer/exchange", json={}, timeout=10)
    assert r.status_code == 401
    r = requests.post(api + "/v1/peer/exchange", json={}, timeout=10,
                      headers={"Authorization": "Medgate-Peer AAAA"})
    assert r.status_code == 401 and "peer signature" in r.json()["message"]

    # The public log endpoints answer without credentials.
    deadline = time.monotonic() + 10
    while True:
        r = requests.get(api + "/v1/log/checkpoint", timeout=10)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    cp = r.json()
    assert cp["note"].splitlines()[1] == str(cp["size"])
    r = requests.get(api + f"/v1/log/proofs/inclusion?index=0&size={cp['size']}", timeout=10)
    assert r.status_code == 200 and isinstance(r.json()["hashes"], list)


def test_b_witnesses_a_log(two, aws, tmp_path):
    """B cosigns A's checkpoints after checking that each extends the last one it cosigned;
    A publishes the cosignature with the checkpoint; a rolled-back checkpoint is refused."""
    a, b, a_recipient = two
    state = tmp_path / "witness.json"
    witness = ["log", "witness", "--identity", str(b.data_dir / "institution.key"),
               "--institution", a_recipient, "--public-store", str(a.public_dir),
               "--gateway", a.api_endpoint, "--state", str(state)]
    aws(a, "s3", "mb", "s3://witnessed")
    (tmp_path / "f").write_bytes(b"one")
    aws(a, "s3", "cp", str(tmp_path / "f"), "s3://witnessed/one")
    checkpoint = a.public_dir / "v1" / "log" / "checkpoint"
    deadline = time.monotonic() + 15
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # A publishes every second: let it catch up with the last write
    _, out, err = cli(b, *witness)
    assert "first checkpoint seen" in err
    first = checkpoint.read_text()
    assert "medgate.witness/" in first, first  # A published B's cosignature line
    size1 = json.loads(state.read_text())["size"]

    # More activity; the next checkpoint must be consistent with the cosigned one.
    aws(a, "s3", "cp", str(tmp_path / "f"), "s3://witnessed/two")
    deadline = time.monotonic() + 15
    while checkpoint.read_text().splitlines()[1] == str(size1) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    _, out, err = cli(b, *witness)
    assert json.loads(state.read_text())["size"] > size1
    assert "medgate.witness/" in checkpoint.read_text()

    # A checkpoint rolled back to the first one is refused, and nothing is cosigned.
    a.stop()
    checkpoint.write_text(first)
    rc, _, err = cli(b, *witness, ok=False)
    assert rc != 0 and "rollback" in err, err
