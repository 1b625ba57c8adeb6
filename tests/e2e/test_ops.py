"""Operations (issue 7): the ops port (/healthz, /readyz, Prometheus /metrics) scraped
during an aws CLI run, readiness following the public store, `medgate healthcheck`, TLS
on the S3 and ops ports with the aws CLI and a certificate reload on SIGHUP, plain HTTP
refused beyond loopback, and `medgate config check`.

Certificates are made here with `cryptography` (installed in the venv with moto[server]).
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import os
import signal
import ssl
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support import (
    MIB,
    REPO_ROOT,
    blobs,
    client_for,
    free_port,
    medgate_bin,
    random_name,
    read_object,
)

EXAMPLE_CONFIG = REPO_ROOT / "deploy" / "medgate.example.toml"


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDGATE_"))}
    env.update(extra)
    return env


def run_medgate(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([medgate_bin(), *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else clean_env(), stdin=subprocess.DEVNULL)


def scrape(url: str, verify: str | bool = True) -> dict[str, float]:
    """Every sample of /metrics, by its name with labels as printed."""
    r = requests.get(url, timeout=10, verify=verify)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/openmetrics-text"), r.headers
    assert r.text.endswith("# EOF\n")
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def requests_total(m: dict[str, float], op: str, status: int) -> float:
    return m.get(f'medgate_s3_requests_total{{op="{op}",status="{status}"}}', 0.0)


def grew(after: dict, before: dict, name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def wait_for(what: str, check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# -- a test PKI ---------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert, cn: str):
    """A certificate for 127.0.0.1 and localhost, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def served_cert(port: int) -> bytes:
    """The DER certificate a fresh TLS connection to the port is shown (not verified)."""
    return ssl.PEM_cert_to_DER_cert(ssl.get_server_certificate(("127.0.0.1", port), timeout=10))


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------
# Health, readiness and metrics
# ---------------------------------------------------------------------------


@pytest.mark.timeout_s(180)
def test_health_ready_and_metrics_during_an_aws_cli_run(gateway, aws, tmp_path):
    gw = gateway
    r = requests.get(gw.ops_endpoint + "/healthz", timeout=10)
    assert (r.status_code, r.text) == (200, "ok\n")
    r = requests.get(gw.ops_endpoint + "/readyz", timeout=10)
    assert (r.status_code, r.text) == (200, "ready\n")
    assert requests.get(gw.ops_endpoint + "/nope", timeout=10).status_code == 404
    metrics = gw.ops_endpoint + "/metrics"
    before = scrape(metrics)

    body = os.urandom(3 * MIB + 5)  # 4 chunks of 1 MiB
    src, down, part = tmp_path / "scan.bin", tmp_path / "down.bin", tmp_path / "range.bin"
    src.write_bytes(body)
    bucket = random_name("ops")
    aws(gw, "s3", "mb", f"s3://{bucket}")
    aws(gw, "s3", "cp", str(src), f"s3://{bucket}/scan.bin")

    # Scraped mid-run: the upload is counted before anything is read back.
    mid = scrape(metrics)
    assert requests_total(mid, "CreateBucket", 200) - requests_total(before, "CreateBucket", 200) == 1
    assert requests_total(mid, "PutObject", 200) - requests_total(before, "PutObject", 200) == 1
    assert grew(mid, before, "medgate_s3_received_bytes_total") >= len(body)
    assert grew(mid, before, "medgate_chunks_sealed_total") >= 4
    assert grew(mid, before, "medgate_stanza_wraps_total") >= 1
    assert grew(mid, before, "medgate_chunks_opened_total") == 0

    aws(gw, "s3", "cp", f"s3://{bucket}/scan.bin", str(down))
    assert down.read_bytes() == body
    # A range across the first chunk boundary: 2 chunks fetched and opened.
    aws(gw, "s3api", "get-object", "--bucket", bucket, "--key", "scan.bin",
        "--range", f"bytes={MIB - 6}-{MIB + 4}", str(part))
    assert part.read_bytes() == body[MIB - 6:MIB + 5]
    assert aws(gw, "s3api", "head-object", "--bucket", bucket, "--key", "absent",
               check=False).returncode != 0
    assert aws(gw, "s3", "ls", f"s3://{bucket}", secret="not-the-secret" * 3,
               check=False).returncode != 0

    after = scrape(metrics)
    assert requests_total(after, "GetObject", 200) - requests_total(mid, "GetObject", 200) == 1
    assert requests_total(after, "GetObject", 206) - requests_total(mid, "GetObject", 206) == 1
    assert requests_total(after, "HeadObject", 404) - requests_total(mid, "HeadObject", 404) >= 1
    # A bad signature fails before s3s names the operation.
    forbidden = sum(v for k, v in after.items()
                    if k.startswith("medgate_s3_requests_total") and 'status="403"' in k)
    assert forbidden >= 1, after
    assert grew(after, mid, "medgate_s3_sent_bytes_total") >= len(body) + 11
    assert grew(after, mid, "medgate_chunks_opened_total") >= 4 + 2
    assert grew(after, mid, "medgate_chunks_fetched_total") >= 4 + 2
    assert grew(after, mid, "medgate_read_chunks_count") == 2
    assert grew(after, mid, "medgate_read_chunks_sum") == 4 + 2
    assert after.get('medgate_s3_request_duration_seconds_count{op="PutObject"}', 0) >= 1
    assert after.get('medgate_public_store_requests_total{op="get"}', 0) >= 6
    assert not [k for k in after if k.startswith("medgate_public_store_errors_total")], after
    assert grew(after, before, "medgate_integrity_failures_total") == 0
    # The log (published every second) holds at least the write and the two reads.
    deadline = time.monotonic() + 10
    while scrape(metrics).get("medgate_log_size", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scrape(metrics).get("medgate_log_size", 0) >= 3

    # Tampering with the blob shows as an integrity failure.
    (blob,) = [rel for rel, size in blobs(gw.public_files()).items() if size > MIB]
    path = gw.blob_path(blob)
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    out = read_object(client_for(gw), bucket, "scan.bin")
    assert out.kind != "ok", out
    tampered = scrape(metrics)
    assert grew(tampered, after, "medgate_integrity_failures_total") >= 1


def moto_public_store(moto) -> dict:
    moto.client().create_bucket(Bucket="medgate-public")
    return dict(public_store="s3://medgate-public/pfx", public_store_opts={
        "endpoint": moto.endpoint, "allow_http": "true", "access_key_id": "test",
        "secret_access_key": "test", "region": "us-east-1"})


@pytest.mark.timeout_s(120)
def test_readyz_fails_when_the_public_store_stops(moto, gateway_factory):
    gw = gateway_factory(**moto_public_store(moto))
    readyz = gw.ops_endpoint + "/readyz"
    assert requests.get(readyz, timeout=10).status_code == 200

    moto.stop()
    t0 = time.monotonic()
    r = requests.get(readyz, timeout=20)
    took = time.monotonic() - t0
    assert r.status_code == 503, r.text
    assert r.text.startswith("not ready: public store"), r.text
    assert "private store" not in r.text, r.text
    assert took < 8, f"/readyz took {took:.1f} s: it must answer within its timeout"
    assert requests.get(gw.ops_endpoint + "/healthz", timeout=10).status_code == 200
    cp = run_medgate("healthcheck", "--ops-url", readyz)
    assert cp.returncode != 0 and "503" in cp.stderr and "public store" in cp.stderr, cp
    assert gw.running()


@pytest.mark.timeout_s(60)
def test_readyz_fails_when_the_public_store_port_is_closed(gateway_factory):
    gw = gateway_factory(public_store="s3://medgate-public/pfx", public_store_opts={
        "endpoint": f"http://127.0.0.1:{free_port()}", "allow_http": "true",
        "access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"})
    r = requests.get(gw.ops_endpoint + "/readyz", timeout=20)
    assert r.status_code == 503 and "public store" in r.text, r.text
    assert "secret" not in r.text.lower()
    assert requests.get(gw.ops_endpoint + "/healthz", timeout=10).text == "ok\n"


# ---------------------------------------------------------------------------
# medgate healthcheck
# ---------------------------------------------------------------------------


def test_healthcheck_subcommand_exit_codes(gateway, tmp_path):
    gw = gateway
    cp = run_medgate("healthcheck", "--ops-url", gw.ops_endpoint + "/healthz")
    assert cp.returncode == 0 and "healthy" in cp.stdout, cp

    # What the container HEALTHCHECK runs: no flags; the address comes from the server's
    # environment (a wildcard address is probed on loopback) or its config file.
    env = clean_env(MEDGATE_OPS_LISTEN=f"0.0.0.0:{gw.ops_port}")
    cp = run_medgate("healthcheck", env=env)
    assert cp.returncode == 0, cp
    assert f"http://127.0.0.1:{gw.ops_port}/healthz" in cp.stdout
    config = tmp_path / "medgate.toml"
    config.write_text(f'[ops]\nlisten = "127.0.0.1:{gw.ops_port}"\n')
    cp = run_medgate("healthcheck", env=clean_env(MEDGATE_CONFIG=str(config)))
    assert cp.returncode == 0, cp

    cp = run_medgate("healthcheck", "--ops-url", gw.ops_endpoint + "/nope")
    assert cp.returncode != 0 and "answered 404" in cp.stderr, cp
    closed = f"http://127.0.0.1:{free_port()}/healthz"
    cp = run_medgate("healthcheck", "--ops-url", closed)
    assert cp.returncode != 0 and "unhealthy" in cp.stderr and closed in cp.stderr, cp
    cp = run_medgate("healthcheck", "--ops-url", "ftp://127.0.0.1/healthz")
    assert cp.returncode != 0 and "scheme" in cp.stderr, cp

    assert gw.stop() == 0
    cp = run_medgate("healthcheck", env=env)
    assert cp.returncode != 0 and "unhealthy" in cp.stderr, cp


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------


@pytest.mark.timeout_s(240)
def test_tls_with_the_aws_cli_and_a_certificate_reload_on_sighup(gateway_factory, aws, tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    ca1_key, ca1 = make_ca("medgate test CA one")
    ca2_key, ca2 = make_ca("medgate test CA two")
    leaf1_key, leaf1 = make_server_cert(ca1_key, ca1, "medgate one")
    leaf2_key, leaf2 = make_server_cert(ca2_key, ca2, "medgate two")
    ca1_pem, ca2_pem = pki / "ca1.pem", pki / "ca2.pem"
    ca1_pem.write_bytes(pem(ca1))
    ca2_pem.write_bytes(pem(ca2))
    cert_path, key_path = pki / "tls.crt", pki / "tls.key"
    cert_path.write_bytes(pem(leaf1))
    key_path.write_bytes(key_pem(leaf1_key))

    gw = gateway_factory(extra_args=["--tls-cert", str(cert_path), "--tls-key", str(key_path)])
    s3_url = f"https://127.0.0.1:{gw.port}"
    ops_url = f"https://127.0.0.1:{gw.ops_port}"
    assert f"medgate listening on {s3_url}" in gw.log_text()
    assert served_cert(gw.port) == der(leaf1) and served_cert(gw.ops_port) == der(leaf1)
    creds = dict(access_key_id=gw.access_key_id, secret=gw.secret_access_key)

    # The aws CLI, up and down, trusting the test CA.
    body = os.urandom(2 * MIB + 7)
    src = tmp_path / "up.bin"
    src.write_bytes(body)
    bucket = random_name("tls")
    aws(s3_url, "s3", "mb", f"s3://{bucket}", "--ca-bundle", str(ca1_pem), **creds)
    aws(s3_url, "s3", "cp", str(src), f"s3://{bucket}/x.bin", "--ca-bundle", str(ca1_pem), **creds)
    down = tmp_path / "down1.bin"
    aws(s3_url, "s3", "cp", f"s3://{bucket}/x.bin", str(down), "--ca-bundle", str(ca1_pem), **creds)
    assert down.read_bytes() == body
    # Without the CA, the CLI refuses the certificate; plain HTTP gets no S3 answer.
    cp = aws(s3_url, "s3", "ls", check=False, **creds)
    assert cp.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in cp.stderr, cp.stderr
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{gw.port}/", timeout=10)

    # The JSON API port serves the same certificate.
    assert served_cert(gw.api_port) == der(leaf1)
    r = requests.get(f"https://127.0.0.1:{gw.api_port}/openapi.json", timeout=10,
                     verify=str(ca1_pem))
    assert r.status_code == 200 and r.json()["info"]["title"] == "medgate"

    # The ops port serves the same certificate; healthcheck speaks TLS.
    assert requests.get(ops_url + "/healthz", timeout=10, verify=str(ca1_pem)).text == "ok\n"
    cp = run_medgate("healthcheck", "--ops-url", ops_url + "/healthz", "--ca-bundle", str(ca1_pem))
    assert cp.returncode == 0, cp
    cp = run_medgate("healthcheck", "--ops-url", ops_url + "/healthz", "--ca-bundle", str(ca2_pem))
    assert cp.returncode != 0 and "TLS" in cp.stderr, cp
    # The container HEALTHCHECK: https because MEDGATE_TLS_CERT is set.
    env = clean_env(MEDGATE_OPS_LISTEN=f"0.0.0.0:{gw.ops_port}", MEDGATE_TLS_CERT=str(cert_path))
    cp = run_medgate("healthcheck", env=env)
    assert cp.returncode == 0 and "https://" in cp.stdout, cp

    # Connections opened before the reload, on both ports.
    ctx1 = ssl.create_default_context(cafile=str(ca1_pem))
    old_ops = http.client.HTTPSConnection("127.0.0.1", gw.ops_port, context=ctx1, timeout=10)
    old_s3 = http.client.HTTPSConnection("127.0.0.1", gw.port, context=ctx1, timeout=10)

    def still_answers(conn, path: str, status: int) -> None:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == status

    still_answers(old_ops, "/healthz", 200)
    still_answers(old_s3, "/", 403)  # unsigned: AccessDenied, on a kept-alive connection

    # Renewal: new files from another CA, then SIGHUP.
    write_atomically(cert_path, pem(leaf2))
    write_atomically(key_path, key_pem(leaf2_key, serialization.PrivateFormat.TraditionalOpenSSL))
    os.kill(gw.proc.pid, signal.SIGHUP)
    wait_for("the new certificate on the S3 port", lambda: served_cert(gw.port) == der(leaf2))
    assert served_cert(gw.ops_port) == der(leaf2)
    assert gw.running()
    still_answers(old_ops, "/healthz", 200)
    still_answers(old_s3, "/", 403)
    old_ops.close()
    old_s3.close()

    down2 = tmp_path / "down2.bin"
    aws(s3_url, "s3", "cp", f"s3://{bucket}/x.bin", str(down2), "--ca-bundle", str(ca2_pem), **creds)
    assert down2.read_bytes() == body
    cp = aws(s3_url, "s3", "ls", "--ca-bundle", str(ca1_pem), check=False, **creds)
    assert cp.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in cp.stderr, cp.stderr
    m = scrape(ops_url + "/metrics", verify=str(ca2_pem))
    assert m.get('medgate_tls_reloads_total{outcome="ok"}') == 1, m

    # A broken renewal keeps the certificate in use.
    write_atomically(cert_path, b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    os.kill(gw.proc.pid, signal.SIGHUP)
    wait_for("the failed reload to be counted", lambda: scrape(
        ops_url + "/metrics", verify=str(ca2_pem)).get('medgate_tls_reloads_total{outcome="error"}'))
    assert served_cert(gw.port) == der(leaf2) and gw.running()
    assert "could not reload the TLS certificate" in gw.log_text()
    assert "PRIVATE KEY" not in gw.log_text()
    assert gw.stop() == 0


def test_plain_http_is_refused_beyond_loopback(gateway_factory):
    gw = gateway_factory(start=False)
    for flags, setting in (
        (["--listen", f"0.0.0.0:{free_port()}"], "(listen (--listen))"),
        (["--listen", f"127.0.0.1:{gw.port}", "--ops-listen", f"0.0.0.0:{free_port()}"],
         "([ops] listen (--ops-listen))"),
    ):
        cp = subprocess.run([gw.bin, "serve", "--data-dir", str(gw.data_dir), *flags],
                            capture_output=True, text=True, timeout=30, env=gw.env(),
                            stdin=subprocess.DEVNULL)
        assert cp.returncode != 0, cp
        assert "refusing to serve plain HTTP" in cp.stderr and setting in cp.stderr, cp.stderr
        assert "--allow-plain-http" in cp.stderr and "--tls-cert" in cp.stderr
    assert not gw.data_dir.exists(), "it must refuse before touching the data dir"

    # Explicitly allowed (a TLS proxy in front): it serves.
    gw.extra_args = ["--ops-listen", f"0.0.0.0:{gw.ops_port}", "--allow-plain-http"]
    gw.start()
    assert requests.get(gw.ops_endpoint + "/healthz", timeout=10).status_code == 200


# ---------------------------------------------------------------------------
# medgate config check
# ---------------------------------------------------------------------------


def test_config_check_accepts_the_example_config():
    cp = run_medgate("config", "check", str(EXAMPLE_CONFIG))
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr.strip().endswith(": OK")
    effective = tomllib.loads(cp.stdout)
    assert effective["listen"] == "127.0.0.1:9000"
    assert effective["ops"] == {"listen": "127.0.0.1:9003"}
    assert effective["tls"] == {"allow_plain_http": False}
    assert effective["public_store"]["url"] == "s3://hospital-medgate-public/medgate"
    assert effective["engine"] == {"chunk_size": 1048576, "part_size": 8388608,
                                   "index_interval": "10s", "index_cover": 32}
    assert effective["backup"] == {"max_age": "7d"}


def test_config_check_prints_defaults_and_redacts_secrets(tmp_path):
    ca_key, ca = make_ca("config check CA")
    leaf_key, leaf = make_server_cert(ca_key, ca, "config check")
    (tmp_path / "tls.crt").write_bytes(pem(leaf))
    (tmp_path / "tls.key").write_bytes(key_pem(leaf_key))
    secrets = ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AKIAIOSFODNN7EXAMPLE",
               "FwoGZXIvYXdzEXAMPLETOKEN", "sv=2024-01-01&sig=EXAMPLESAS"]
    config = tmp_path / "medgate.toml"
    config.write_text(f"""
listen = "0.0.0.0:9000"

[public_store]
url = "s3://bucket/prefix"

[public_store.options]
region = "eu-central-1"
secret_access_key = "{secrets[0]}"
access_key_id = "{secrets[1]}"
token = "{secrets[2]}"
timeout = "30s"

[tls]
cert = "{tmp_path / 'tls.crt'}"
key = "{tmp_path / 'tls.key'}"

[ops]
listen = "0.0.0.0:9090"
""")
    cp = run_medgate("config", "check", str(config))
    assert cp.returncode == 0, cp.stderr
    for s in secrets:
        assert s not in cp.stdout + cp.stderr
    effective = tomllib.loads(cp.stdout)
    options = effective["public_store"]["options"]
    assert options == {"region": "eu-central-1", "timeout": "30s", "secret_access_key": "<redacted>",
                       "access_key_id": "<redacted>", "token": "<redacted>"}
    assert effective["tls"]["cert"] == str(tmp_path / "tls.crt")
    assert effective["tls"]["allow_plain_http"] is False
    # Defaults filled in.
    assert effective["data_dir"] == "./medgate-data"
    assert effective["log_format"] == "human"
    assert effective["engine"] == {"chunk_size": 1048576, "part_size": 5 * MIB,
                                   "index_interval": "10s", "index_cover": 32}
    assert effective["private_store"] == {"cache_bytes": 16 * MIB}

    # A URL's password is redacted too.
    config.write_text('[public_store]\nurl = "https://user:hunter2pass@example.org/store"\n')
    cp = run_medgate("config", "check", str(config))
    assert cp.returncode == 0 and "hunter2pass" not in cp.stdout + cp.stderr, cp


@pytest.mark.parametrize("text, named", [
    ('[ops]\nlisten = "127.0.0.1:9090"\nlisten_addr = "127.0.0.1:1"\n', "listen_addr"),
    ('[opps]\nlisten = "127.0.0.1:9090"\n', "opps"),
    ('colour = "blue"\n', "colour"),
    ('[engine]\nchunk_size = 100\n', "[engine] chunk_size"),
    ('[engine]\nindex_cover = 8\n', "[engine] index_cover = 8"),
    ('[engine]\nindex_interval = "0s"\n', "[engine] index_interval"),
    ('log_format = "xml"\n', "log_format"),
    ('[s3]\ndomain = "not a domain"\n', "[s3] domain"),
    ('[public_store]\nurl = "s3://b/p"\n[public_store.options]\nregoin = "eu-central-1"\n',
     "regoin"),
    ('[public_store]\nurl = "s3://b/p"\n[public_store.options]\ntimeout = "soon"\n', "soon"),
    ('[tls]\ncert = "/nonexistent/tls.crt"\nkey = "/nonexistent/tls.key"\n', "/nonexistent/tls.crt"),
    ('[tls]\nkey = "/nonexistent/tls.key"\n', "[tls] key"),
    ('listen = "0.0.0.0:9000"\n', "0.0.0.0:9000 (listen"),
    ('[ops]\nlisten = "10.1.2.3:9090"\n', "[ops] listen"),
    ('[ops]\nlisten = "not an address"\n', "line 2"),
    ('[[peers]]\nname = "St Elsewhere"\nrecipient = "medgate1nope"\n', "St Elsewhere"),
    ('[public_store.options]\nsecret_access_key = 31415926535\n', "line 2"),
    ('[public_store]\nurl = "ftp://user:31415926535@example.org/x"\n', "ftp://user:redacted@"),
], ids=["bad-key", "bad-section", "bad-top-level-key", "chunk-size", "index-cover",
        "index-interval", "log-format", "domain",
        "store-option", "store-option-value", "tls-files", "tls-half", "plain-http-s3",
        "plain-http-ops", "bad-address", "peer-recipient", "unquoted-secret", "url-password"])
def test_config_check_names_the_bad_setting(tmp_path, text, named):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    cp = run_medgate("config", "check", str(config))
    assert cp.returncode != 0, cp
    assert named in cp.stderr and "bad.toml" in cp.stderr, cp.stderr
    assert not cp.stdout, "nothing is printed as effective when the file is bad"
    assert "31415926535" not in cp.stderr, "a secret must not be echoed"
