"""Admin commands: `medgate keys`, `access-key create/list/delete` and their bucket limits,
through a running server's admin socket and directly on a stopped server's data dir."""

from __future__ import annotations

import re
import stat

import pytest
from botocore.exceptions import ClientError

from support import ACCESS_KEY_ID, client_for, get_bytes


def parse_created(stdout: bytes) -> tuple[str, str]:
    text = stdout.decode()
    kid = re.search(r"^aws_access_key_id = (\S+)$", text, re.M)
    sec = re.search(r"^aws_secret_access_key = (\S+)$", text, re.M)
    assert kid and sec, text
    return kid.group(1), sec.group(1)


def server_output(gateway) -> str:
    """The server's own log, without the CLI transcripts the harness appends to it."""
    return re.sub(r"\n===== cli: .*?\n--- exit -?\d+\n", "\n", gateway.log_text(), flags=re.S)


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def test_bucket_limited_key_through_the_admin_socket(gateway):
    sock = gateway.data_dir / "admin.sock"
    assert sock.exists(), "the running server has no admin socket"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600

    admin = client_for(gateway)
    admin.create_bucket(Bucket="ward-a")
    admin.create_bucket(Bucket="ward-b")
    admin.put_object(Bucket="ward-b", Key="secret.pdf", Body=b"b only")

    cp = gateway.run_cli("access-key", "create", "--data-dir", str(gateway.data_dir),
                         "--bucket", "ward-a")
    assert cp.returncode == 0, cp.stderr
    assert b"admin socket" in cp.stderr, "must say it went through the running server"
    kid, secret = parse_created(cp.stdout)
    assert len(kid) == 20 and len(secret) >= 40

    limited = client_for(gateway, access_key_id=kid, secret=secret)
    limited.put_object(Bucket="ward-a", Key="scan.dcm", Body=b"a data")
    assert get_bytes(limited, "ward-a", "scan.dcm") == b"a data"
    names = [b["Name"] for b in limited.list_buckets()["Buckets"]]
    assert names == ["ward-a"], names
    for call in (
        lambda: limited.get_object(Bucket="ward-b", Key="secret.pdf"),
        lambda: limited.put_object(Bucket="ward-b", Key="x", Body=b"x"),
        lambda: limited.list_objects_v2(Bucket="ward-b"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e.value) == "AccessDenied"

    listed = gateway.run_cli("access-key", "list", "--data-dir", str(gateway.data_dir))
    assert listed.returncode == 0, listed.stderr
    assert kid.encode() in listed.stdout and ACCESS_KEY_ID.encode() in listed.stdout
    assert secret.encode() not in listed.stdout, "list must never show a secret"

    deleted = gateway.run_cli("access-key", "delete", "--data-dir", str(gateway.data_dir), kid)
    assert deleted.returncode == 0, deleted.stderr
    with pytest.raises(ClientError) as e:
        limited.list_buckets()
    assert code(e.value) == "InvalidAccessKeyId"

    # Secrets never reach the server's log.
    log = server_output(gateway)
    assert "request failed" in log, "the server log should show the denied requests"
    assert secret not in log
    assert gateway.secret_access_key not in log


def test_admin_commands_on_a_stopped_server(gateway):
    admin = client_for(gateway)
    admin.create_bucket(Bucket="offline")
    keys_running = gateway.run_cli("keys", "--data-dir", str(gateway.data_dir))
    assert keys_running.returncode == 0, keys_running.stderr
    recipient = keys_running.stdout.decode().strip()
    assert recipient.startswith("medgate1"), recipient

    assert gateway.stop() == 0
    keys_stopped = gateway.run_cli("keys", "--data-dir", str(gateway.data_dir))
    assert keys_stopped.returncode == 0, keys_stopped.stderr
    assert keys_stopped.stdout.decode().strip() == recipient
    assert b"directly" in keys_stopped.stderr, "must say it opened the store itself"

    cp = gateway.run_cli("access-key", "create", "--data-dir", str(gateway.data_dir))
    assert cp.returncode == 0, cp.stderr
    kid, secret = parse_created(cp.stdout)

    gateway.start()
    c = client_for(gateway, access_key_id=kid, secret=secret)
    assert "offline" in [b["Name"] for b in c.list_buckets()["Buckets"]]


def test_admin_errors_say_what_to_fix(gateway, tmp_path):
    missing = gateway.run_cli("keys", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode != 0
    assert b"not a medgate data dir" in missing.stderr, missing.stderr

    gone = gateway.run_cli("access-key", "delete", "--data-dir", str(gateway.data_dir), "NOSUCHKEY")
    assert gone.returncode != 0
    assert b"no access key NOSUCHKEY" in gone.stderr, gone.stderr

    bad = gateway.run_cli("gc", "--data-dir", str(gateway.data_dir), "--grace", "soon")
    assert bad.returncode != 0
    assert b"--grace" in bad.stderr, bad.stderr
