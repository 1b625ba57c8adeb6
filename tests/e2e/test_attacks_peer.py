"""Attacks at the institution-to-institution boundary (issue 13), each beside the legitimate
flow it must not break.

Three real `medgate serve` processes on loopback, shared by the module: hospital A holds
alice's records; hospital B mounts them, alice approves at A, and B reads them byte-identical
(the control). E is a gateway with its own identity standing at a URL that B's config names
for A's key (a hijacked DNS name or a rogue proxy in front of A). Then:

- impersonation: someone who knows B's public Recipient signs with their own Ed25519 key
  beside B's X25519 key and calls A as B (refused with 401, nothing logged as B);
- forged records: E answers B as A with a record of its own wrapped to B's key (refused: the
  answer is not signed by A's configured key, so nothing E says reaches B's clients);
- out-of-scope blobs: B, with a valid grant, asks A's blob endpoint for a record in the grant's
  prefix added after the grant, which was never wrapped for it (refused with 403);
- plain http to a peer without `allow_plain_http` is refused at config check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from support import MIB, AwsCli, Gateway, client_for

from test_sharing import cli, institution
from test_two_gateways import get_denied, mount, patient, register_at, wait_api, write_config

PEER_CONTEXT = b"medgate/v1/peer"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_bytes(text: str) -> bytes:
    """The payload of a medgate Bech32 string (recipient or secret key), checksum dropped:
    the gateway checks it when it matters; the test only needs the key bytes."""
    data = text.strip().lower().rsplit("1", 1)[1][:-6]
    acc, bits, out = 0, 0, bytearray()
    for c in data:
        acc = (acc << 5) | BECH32.index(c)
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out)


def bech32_recipient(raw: bytes) -> str:
    """`medgate1...` text of 64 recipient bytes (BIP 173 Bech32, as keyring writes it)."""
    def polymod(values):
        gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
        chk = 1
        for v in values:
            top = chk >> 25
            chk = (chk & 0x1FFFFFF) << 5 ^ v
            for i in range(5):
                chk ^= gen[i] if ((top >> i) & 1) else 0
        return chk

    acc, bits, data = 0, 0, []
    for byte in raw:
        acc = (acc << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            data.append((acc >> bits) & 31)
    if bits:
        data.append((acc << (5 - bits)) & 31)
    hrp = "medgate"
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    pm = polymod(expanded + data + [0] * 6) ^ 1
    checksum = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32[d] for d in data + checksum)


def secret_of(gw: Gateway) -> bytes:
    """The 64 secret bytes (X25519 ‖ Ed25519 seed) of a gateway's plain identity file."""
    line = next(l for l in (gw.data_dir / "institution.key").read_text().splitlines()
                if l.startswith("MEDGATE-SECRET-KEY-"))
    return bech32_bytes(line)


def peer_header(caller: bytes, signer: Ed25519PrivateKey, callee_recipient: str, method: str,
                host: str, target: str, body: bytes) -> str:
    """`Authorization: Medgate-Peer ...`: a PeerAuth v1 (keyring::consent) naming `caller`
    (64 bytes: X25519 pk ‖ Ed25519 pk), signed by `signer`."""
    def s(x: str) -> bytes:
        return len(x.encode()).to_bytes(4, "big") + x.encode()

    callee = hashlib.sha256(bech32_bytes(callee_recipient)[:32]).digest()
    auth = (b"\x01" + caller + callee + int(time.time() * 1000).to_bytes(8, "big")
            + os.urandom(16) + s(method) + s(host) + s(target) + hashlib.sha256(body).digest())
    sig = signer.sign(PEER_CONTEXT + b"\x00" + auth)
    return "Medgate-Peer " + base64.urlsafe_b64encode(auth + sig).decode().rstrip("=")


def peer_call(gw: Gateway, a_recipient: str, caller: bytes, signer: Ed25519PrivateKey,
              method: str, target: str, body: bytes = b"") -> requests.Response:
    host = f"127.0.0.1:{gw.api_port}"
    headers = {"Authorization": peer_header(caller, signer, a_recipient, method, host, target,
                                            body)}
    if body:
        headers["Content-Type"] = "application/json"
    return requests.request(method, gw.api_endpoint + target, data=body or None,
                            headers=headers, timeout=30)


def b_signer(b: Gateway) -> tuple[bytes, Ed25519PrivateKey]:
    """B's real Recipient bytes and signing key (B's own gateway would sign the same)."""
    secret = secret_of(b)
    key = Ed25519PrivateKey.from_private_bytes(secret[32:])
    recipient = bech32_bytes(institution(b))
    assert recipient[32:] == key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return recipient, key


def new_blobs(gw: Gateway, before: set[str]) -> list[str]:
    return [p.rsplit("/", 1)[1] for p in gw.public_files()
            if p.startswith("v1/b/") and p not in before]


class FakeA:
    """What stands at the URL B's config names for A: a proxy to gateway E that re-signs B's
    calls as an institution E knows, whose Recipient is B's X25519 key beside the attacker's
    Ed25519 key (B's public key is all the attacker needs). E's answers pass back untouched,
    so E's records come to B wrapped to B's key."""

    def __init__(self, e: Gateway, e_recipient: str, b_recipient: bytes):
        self.e, self.e_recipient = e, e_recipient
        self.key = Ed25519PrivateKey.generate()
        self.caller = b_recipient[:32] + self.key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)
        self.recipient = bech32_recipient(self.caller)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def relay(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                r = peer_call(fake.e, fake.e_recipient, fake.caller, fake.key, self.command,
                              self.path, body)
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = relay

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A, B and E running; alice's records at A; B's mount approved and read (the control)."""
    tmp = tmp_path_factory.mktemp("attacks-peer")
    gws = [Gateway(tmp_path_factory.mktemp(n)) for n in ("gw-a", "gw-b", "gw-e")]
    a, b, e = gws
    aws = AwsCli(tmp_path_factory.mktemp("awscli"))
    fake = None
    try:
        for gw in gws:
            gw.start()
        ra, rb, re_ = institution(a), institution(b), institution(e)
        for gw in gws:
            gw.stop()
        fake = FakeA(e, re_, bech32_bytes(rb))
        write_config(a, [{"name": "hospital-b", "recipient": rb}])
        # E knows the attacker's half-B Recipient as "hospital-b"; B's config names A's key
        # at the fake A's URL (a hijacked DNS name).
        write_config(e, [{"name": "hospital-b", "recipient": fake.recipient}])
        write_config(b, [
            {"name": "hospital-a", "recipient": ra, "url": f"http://127.0.0.1:{a.api_port}"},
            {"name": "hospital-a-via-e", "recipient": ra,
             "url": f"http://127.0.0.1:{fake.port}"},
        ])
        for gw in gws:
            gw.start()
            wait_api(gw)

        alice = register_at(a, tmp, "alice")
        aws(a, "s3", "mb", "s3://ehr")
        ct = os.urandom(2 * MIB + 4321)
        (tmp / "ct.dcm").write_bytes(ct)
        before = set(a.public_files())
        aws(a, "s3", "cp", str(tmp / "ct.dcm"), "s3://ehr/alice/ct.dcm",
            "--metadata", "medgate-patient=alice")
        ct_blob = new_blobs(a, before)
        assert len(ct_blob) == 1, ct_blob

        # The legitimate flow: B asks, alice approves at A, B reads byte-identical.
        req = mount(b, "from-a", "--peer-bucket", "ehr", "--prefix", "alice/")
        _, out, _ = patient(a, "approve", "--identity", str(alice), req, "--yes")
        gid = out.split("grant ", 1)[1].split()[0]
        aws(b, "s3", "cp", "s3://from-a/ehr/alice/ct.dcm", str(tmp / "ct.out"))
        assert (tmp / "ct.out").read_bytes() == ct
        yield {"a": a, "b": b, "e": e, "ra": ra, "rb": rb, "aws": aws, "tmp": tmp,
               "alice": alice, "ct": ct, "ct_blob": ct_blob[0], "grant": gid}
    finally:
        if fake:
            fake.close()
        for gw in gws:
            gw.teardown()


def requests_at(gw: Gateway) -> list[dict]:
    r = requests.get(gw.api_endpoint + "/v1/admin/requests", timeout=10,
                     headers={"Authorization": "Bearer " + gw.admin_token()})
    assert r.status_code == 200, r.text
    return r.json()["requests"]


def test_impersonating_b_with_another_signing_key_is_refused(world):
    a, b, ra = world["a"], world["b"], world["ra"]
    b_recipient, b_key = b_signer(b)
    # The attacker knows B's Recipient (it is public) and has a key of their own.
    attacker = Ed25519PrivateKey.generate()
    forged_caller = b_recipient[:32] + attacker.public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    body = (b'{"patient":"alice","scope":"patient","purpose_text":"second opinion",'
            b'"purpose_code":"TREAT","expires_ms":' + str(int(time.time() * 1000) + 3_600_000).encode()
            + b'}')
    before = len(requests_at(a))

    # The attack: a share request shown to alice as coming from hospital-b, and B's listing.
    r = peer_call(a, ra, forged_caller, attacker, "POST", "/v1/peer/requests", body)
    assert r.status_code == 401, (r.status_code, r.text)
    assert "peer" in r.json()["message"], r.text
    target = "/v1/peer/objects?grant=" + world["grant"]
    r = peer_call(a, ra, forged_caller, attacker, "GET", target)
    assert r.status_code == 401, (r.status_code, r.text)
    exchange = ('{"grant":"%s","bucket":"ehr","key":"alice/ct.dcm"}' % world["grant"]).encode()
    r = peer_call(a, ra, forged_caller, attacker, "POST", "/v1/peer/exchange", exchange)
    assert r.status_code == 401, (r.status_code, r.text)
    # Nothing was recorded as B: no new share request, no read by peer:hospital-b since.
    assert len(requests_at(a)) == before

    # The control: the same calls signed with B's real key are answered.
    r = peer_call(a, ra, b_recipient, b_key, "GET", target)
    assert r.status_code == 200, r.text
    r = peer_call(a, ra, b_recipient, b_key, "POST", "/v1/peer/requests", body)
    assert r.status_code == 200, r.text
    assert len(requests_at(a)) == before + 1


def test_a_fake_a_cannot_serve_b_a_forged_record(world):
    b, e, aws, tmp = world["b"], world["e"], world["aws"], world["tmp"]
    # E holds a fabricated "alice" record and its own patient "alice" who approves anything.
    e_alice = register_at(e, tmp, "alice-at-e")
    aws(e, "s3", "mb", "s3://ehr")
    fake = b"FABRICATED: no allergies, discharge now\n" * 1000
    (tmp / "fake.txt").write_bytes(fake)
    aws(e, "s3", "cp", str(tmp / "fake.txt"), "s3://ehr/alice-at-e/ct.dcm",
        "--metadata", "medgate-patient=alice-at-e")

    # The attack: B mounts "A" through the hijacked URL, E's patient approves, B's users read.
    rc, out, err = cli(b, "share", "mount", "--data-dir", str(b.data_dir),
                       "--peer", "hospital-a-via-e", "--bucket", "hijacked",
                       "--patient", "alice-at-e", "--all", "--purpose", "second opinion",
                       "--purpose-code", "TREAT", "--expires-in", "1h", ok=False)
    if rc == 0:
        # B accepted E's answer as A's: let the attack run to its end.
        req = out.strip().splitlines()[-1]
        patient(e, "approve", "--identity", str(e_alice), req, "--yes")
        cp = aws(b, "s3api", "get-object", "--bucket", "hijacked", "--key",
                 "ehr/alice-at-e/ct.dcm", str(tmp / "fake.out"), check=False)
        served = cp.returncode == 0 and (tmp / "fake.out").read_bytes() == fake
        assert not served, "B served E's fabricated record as hospital A's"
        pytest.fail("B mounted a share from a gateway that does not hold A's key")
    assert "answer refused" in err and "not signed by the key configured" in err, err
    assert "hijacked" not in cli(b, "share", "mounts", "--data-dir", str(b.data_dir))[1]

    # The control: the real A at the real URL still serves B.
    aws(b, "s3", "cp", "s3://from-a/ehr/alice/ct.dcm", str(tmp / "ct.again"))
    assert (tmp / "ct.again").read_bytes() == world["ct"]


def test_blob_endpoint_serves_only_versions_the_peer_holds_a_key_for(world):
    a, b, ra, aws, tmp = world["a"], world["b"], world["ra"], world["aws"], world["tmp"]
    b_recipient, b_key = b_signer(b)
    # A record in the grant's prefix added after the grant (include_future is off): alice
    # never shared it, and B holds no key for it.
    later = os.urandom(200_000)
    (tmp / "later.bin").write_bytes(later)
    before = set(a.public_files())
    aws(a, "s3", "cp", str(tmp / "later.bin"), "s3://ehr/alice/later.bin",
        "--metadata", "medgate-patient=alice")
    later_blob = new_blobs(a, before)
    assert len(later_blob) == 1, later_blob

    def blob(key: str, blob_id: str) -> requests.Response:
        q = urllib.parse.urlencode({"grant": world["grant"], "bucket": "ehr", "key": key,
                                    "blob": blob_id, "start": 0, "end": 100, "chunk": 0})
        return peer_call(a, ra, b_recipient, b_key, "GET", "/v1/peer/blob?" + q)

    # The attack: B's valid grant, the new record's blob.
    r = blob("alice/later.bin", later_blob[0])
    assert r.status_code == 403, (r.status_code, len(r.content))
    assert "not covered" in r.json()["message"], r.text
    # Not listed, not readable at B either.
    cp = aws(b, "s3", "ls", "s3://from-a/", "--recursive")
    assert "later.bin" not in cp.stdout and "ct.dcm" in cp.stdout
    err = get_denied(aws, b, "from-a", "ehr/alice/later.bin", tmp / "later.out")
    assert "AccessDenied" in err, err

    # The control: the granted record's blob is served (and B reads it byte-identical).
    r = blob("alice/ct.dcm", world["ct_blob"])
    assert r.status_code == 200 and len(r.content) > 100, (r.status_code, r.text[:200])
    aws(b, "s3", "cp", "s3://from-a/ehr/alice/ct.dcm", str(tmp / "ct.third"))
    assert (tmp / "ct.third").read_bytes() == world["ct"]


def test_plain_http_peer_needs_allow_plain_http(world, tmp_path):
    b, ra = world["b"], world["ra"]
    cfg = tmp_path / "plain.toml"
    cfg.write_text(f'[[peers]]\nname = "hospital-a"\nrecipient = "{ra}"\n'
                   f'url = "http://a.example:9001"\n')
    rc, out, err = cli(b, "config", "check", str(cfg), ok=False)
    assert rc != 0, "a plain-http peer URL was accepted without allow_plain_http"
    assert "allow_plain_http" in err + out, err + out
    # The control: https, or plain http with the entry's consent, passes.
    cfg.write_text(f'[[peers]]\nname = "hospital-a"\nrecipient = "{ra}"\n'
                   f'url = "https://a.example:9001"\n')
    cli(b, "config", "check", str(cfg))


def test_a_peer_ca_file_is_the_only_ca_trusted_for_that_peer(gateway_factory, tmp_path):
    """`ca_file` pins a peer's CA: a server with a certificate from another CA is refused at
    the TLS handshake even when `[api] peer_ca` (added to the system roots) trusts it."""
    import ssl

    from test_ops import key_pem, make_ca, make_server_cert, pem

    ca1_key, ca1 = make_ca("hospitals CA")
    ca2_key, ca2 = make_ca("A's own CA")
    leaf_key, leaf = make_server_cert(ca1_key, ca1, "a.example")
    for name, data in (("ca1.pem", pem(ca1)), ("ca2.pem", pem(ca2)), ("leaf.pem", pem(leaf)),
                       ("leaf.key", key_pem(leaf_key))):
        (tmp_path / name).write_bytes(data)

    class Answer(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"answer":"not-a-signed-answer"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        c = gateway_factory()
        someone = institution(c)  # any valid Recipient: nothing gets far enough to check it
        c.stop()
        url = f"https://127.0.0.1:{server.server_address[1]}"
        cfg = c.workdir / "medgate.toml"
        cfg.write_text(
            f'[api]\npeer_ca = "{tmp_path / "ca1.pem"}"\n\n'
            f'[[peers]]\nname = "pinned-other"\nrecipient = "{someone}"\nurl = "{url}"\n'
            f'ca_file = "{tmp_path / "ca2.pem"}"\n\n'
            f'[[peers]]\nname = "pinned-right"\nrecipient = "{someone}"\nurl = "{url}"\n'
            f'ca_file = "{tmp_path / "ca1.pem"}"\n')
        c.extra_args = ["--config", str(cfg)]
        c.start()
        wait_api(c)

        def ask(peer: str, bucket: str) -> str:
            rc, out, err = cli(c, "share", "mount", "--data-dir", str(c.data_dir),
                               "--peer", peer, "--bucket", bucket, "--patient", "alice",
                               "--all", "--purpose", "x", "--purpose-code", "TREAT",
                               "--expires-in", "1h", ok=False)
            assert rc != 0, out
            return err

        # The attack: a certificate from a CA the peer entry does not pin.
        err = ask("pinned-other", "pinned-other")
        assert "unreachable" in err and "certificate" in err.lower(), err
        # The control: the pinned CA gets through TLS; the server's answer is then refused
        # because it is not a signed answer (it never gets further).
        err = ask("pinned-right", "pinned-right")
        assert "unreachable" not in err and "unreadable answer" in err, err
    finally:
        server.shutdown()
        server.server_close()


def test_a_replayed_peer_call_is_refused(world):
    """Item 6: a peer call captured on the wire (or by a proxy in front of A) and sent again
    is refused; the same call freshly signed is answered."""
    a, b, ra = world["a"], world["b"], world["ra"]
    b_recipient, b_key = b_signer(b)
    host = f"127.0.0.1:{a.api_port}"
    target = "/v1/peer/objects?grant=" + world["grant"]
    captured = {"Authorization": peer_header(b_recipient, b_key, ra, "GET", host, target, b"")}

    # The legitimate call, once.
    r = requests.get(a.api_endpoint + target, headers=captured, timeout=30)
    assert r.status_code == 200, r.text
    # The same bytes again: refused as a replay.
    r = requests.get(a.api_endpoint + target, headers=captured, timeout=30)
    assert r.status_code == 401, (r.status_code, r.text)
    assert "single use" in r.json()["message"], r.text

    # A replayed share request creates no second request.
    body = (b'{"patient":"alice","scope":"patient","purpose_text":"replay check",'
            b'"purpose_code":"TREAT","expires_ms":'
            + str(int(time.time() * 1000) + 3_600_000).encode() + b'}')
    post = {"Authorization": peer_header(b_recipient, b_key, ra, "POST", host,
                                         "/v1/peer/requests", body),
            "Content-Type": "application/json"}
    before = len(requests_at(a))
    r = requests.post(a.api_endpoint + "/v1/peer/requests", data=body, headers=post, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.post(a.api_endpoint + "/v1/peer/requests", data=body, headers=post, timeout=30)
    assert r.status_code == 401 and "single use" in r.json()["message"], r.text
    assert len(requests_at(a)) == before + 1

    # Fresh signatures still work, and B's own gateway still reads through its mount.
    r = peer_call(a, ra, b_recipient, b_key, "GET", target)
    assert r.status_code == 200, r.text
    out = world["tmp"] / "ct.replay-check"
    world["aws"](b, "s3", "cp", "s3://from-a/ehr/alice/ct.dcm", str(out))
    assert out.read_bytes() == world["ct"]


# ---------------------------------------------------------------------------
# Item 12: B does not trust A's sizes
# ---------------------------------------------------------------------------

EXCHANGE_CONTEXT = b"medgate/v1/exchange-answer"
OBJECTS_CONTEXT = b"medgate/v1/objects-answer"
MANIFEST_PART_LEN = 60


def read_str(buf: bytes, at: int) -> tuple[bytes, int]:
    n = int.from_bytes(buf[at:at + 4], "big")
    return buf[at + 4:at + 4 + n], at + 4 + n


class HostileA:
    """A's own key in hostile hands (A compromised, or A lying): in front of the real A, it
    re-asks every call B makes as B, then answers B with A's answer changed as `mode` says,
    signed with A's key for B's nonce, so B's signature and nonce checks all pass and only
    B's limits stand between the claim and B's memory.

    Modes: "pass" (A's answer as it is, re-signed), "endless" (an answer body that never
    ends), "count" (a listing claiming 4 billion records), "chunk1" (a manifest of 1-byte
    chunks), "huge" (a manifest claiming a 1 PiB record of 1 KiB chunks: 2^40 chunks)."""

    def __init__(self, a: Gateway, a_recipient: str, a_secret: bytes, b: Gateway):
        self.a, self.ra = a, a_recipient
        self.a_key = Ed25519PrivateKey.from_private_bytes(a_secret[32:])
        self.b_recipient, self.b_key = b_signer(b)
        self.mode = "pass"
        self.sent = 0
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def relay(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                auth = self.headers.get("Authorization", "").split(" ", 1)[-1]
                raw = base64.urlsafe_b64decode(auth + "=" * (-len(auth) % 4))
                b_nonce = raw[105:121]
                if hostile.mode == "endless" and self.path.startswith("/v1/peer/objects"):
                    return self.endless()
                r = peer_call(hostile.a, hostile.ra, hostile.b_recipient, hostile.b_key,
                              self.command, self.path, body)
                out = r.content
                if r.status_code == 200 and "answer" in r.text:
                    answer = r.json()["answer"]
                    signed = base64.urlsafe_b64decode(answer + "=" * (-len(answer) % 4))
                    msg = hostile.rewrite(bytearray(signed[:-64]), b_nonce)
                    context = {1: b"medgate/v1/request-answer", 2: OBJECTS_CONTEXT,
                               3: EXCHANGE_CONTEXT}[msg[1]]
                    sig = hostile.a_key.sign(context + b"\x00" + bytes(msg))
                    text = base64.urlsafe_b64encode(bytes(msg) + sig).decode().rstrip("=")
                    out = json.dumps({"answer": text}).encode()
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def endless(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                piece = b"A" * (1 << 20)
                hostile.sent = 0
                try:
                    self.wfile.write(b'{"answer":"')
                    while hostile.sent < (400 << 20):
                        self.wfile.write(piece)
                        hostile.sent += len(piece)
                except OSError:
                    pass  # B hung up: what the test wants

            do_GET = do_POST = relay

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rewrite(self, msg: bytearray, nonce: bytes) -> bytearray:
        msg[2:18] = nonce
        at = 82
        for _ in range(4):  # grant, bucket, key, version id
            _, at = read_str(msg, at)
        if msg[1] == 2 and self.mode == "count":
            msg[at:at + 4] = (4_000_000_000).to_bytes(4, "big")
        if msg[1] == 3 and self.mode in ("chunk1", "huge"):
            manifest, end = read_str(msg, at)
            manifest = bytearray(manifest)
            parts = int.from_bytes(manifest[-4 - MANIFEST_PART_LEN * 1:][:4], "big")
            assert parts == 1, "the test record is one part"
            part = len(manifest) - MANIFEST_PART_LEN
            if self.mode == "chunk1":
                manifest[part + 16:part + 20] = (1).to_bytes(4, "big")
            else:
                manifest[18:26] = (1 << 50).to_bytes(8, "big")            # size
                manifest[part + 16:part + 20] = (1024).to_bytes(4, "big")  # chunk size
                manifest[part + 20:part + 28] = (1 << 50).to_bytes(8, "big")
            msg[at:end] = len(manifest).to_bytes(4, "big") + bytes(manifest)
        return msg

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout_s(240)
def test_b_bounds_what_a_hostile_a_claims(tmp_path_factory):
    """Item 12, with A's key in hostile hands: an endless answer, a listing of 4 billion
    records, a manifest of 1-byte chunks and one of 2^40 chunks are each refused by B within
    seconds and without B's memory growing with the claim; the same mount then reads the
    record byte-identical when A answers honestly (the control)."""
    a = Gateway(tmp_path_factory.mktemp("gw-a"))
    b = Gateway(tmp_path_factory.mktemp("gw-b"))
    aws = AwsCli(tmp_path_factory.mktemp("awscli"))
    tmp = tmp_path_factory.mktemp("hostile")
    hostile = None
    try:
        a.start()
        b.start()
        ra, rb = institution(a), institution(b)
        a.stop()
        b.stop()
        hostile = HostileA(a, ra, secret_of(a), b)
        write_config(a, [{"name": "hospital-b", "recipient": rb}])
        write_config(b, [{"name": "hospital-a", "recipient": ra,
                          "url": f"http://127.0.0.1:{hostile.port}"}])
        a.start()
        b.start()
        wait_api(a)
        wait_api(b)
        alice = register_at(a, tmp, "alice")
        aws(a, "s3", "mb", "s3://ehr")
        ct = os.urandom(3 * MIB + 77)
        (tmp / "ct.dcm").write_bytes(ct)
        aws(a, "s3", "cp", str(tmp / "ct.dcm"), "s3://ehr/alice/ct.dcm",
            "--metadata", "medgate-patient=alice")
        req = mount(b, "from-a", "--peer-bucket", "ehr", "--prefix", "alice/")
        patient(a, "approve", "--identity", str(alice), req, "--yes")
        s3 = client_for(b)

        # Each claim, refused quickly, B's memory not following it.
        base = rss_kib(b.proc.pid)
        for mode, call in (
            ("endless", lambda: s3.list_objects_v2(Bucket="from-a")),
            ("count", lambda: s3.list_objects_v2(Bucket="from-a")),
            ("chunk1", lambda: s3.get_object(Bucket="from-a", Key="ehr/alice/ct.dcm")["Body"].read()),
            ("huge", lambda: s3.get_object(Bucket="from-a", Key="ehr/alice/ct.dcm")["Body"].read()),
        ):
            hostile.mode = mode
            t0 = time.monotonic()
            with pytest.raises(Exception) as e:
                call()
            took = time.monotonic() - t0
            assert took < 30, (mode, took)
            grown = rss_kib(b.proc.pid) - base
            assert grown < 160 * 1024, (mode, f"B's RSS grew by {grown} KiB")
            assert b.running(), (mode, b.log_tail())
            print(f"{mode}: refused in {took:.2f} s ({type(e.value).__name__}), RSS +{grown} KiB")
        assert hostile.sent < (100 << 20), f"B read {hostile.sent} bytes of an endless answer"
        log = b.log_text()
        for why in ("answer longer than",                      # endless
                    "malformed signed peer answer",            # 4 billion records
                    "a chunk size of 1 bytes is out of range",  # 1-byte chunks
                    "integrity check failed for blob"):        # 2^40 chunks, walked lazily
            assert why in log, (why, b.log_tail())

        # The control: the same mount, A honest again.
        hostile.mode = "pass"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="from-a").get("Contents", [])]
        assert keys == ["ehr/alice/ct.dcm"], keys
        assert s3.get_object(Bucket="from-a", Key="ehr/alice/ct.dcm")["Body"].read() == ct
    finally:
        if hostile:
            hostile.close()
        a.teardown()
        b.teardown()
