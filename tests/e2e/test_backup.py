"""Backup and restore: `medgate backup` under load through the running server, encrypted to
an offline recovery key; `medgate restore` into a new data dir; a server on it serves every
object byte for byte and `medgate verify --deep` passes. Refusals: a non-empty data dir, the
wrong recovery key, a tampered or truncated file, no recovery recipient. The start-up warning
when no recent backup exists, and none after one."""

from __future__ import annotations

import os
import random
import stat
import threading
import time

import requests

from support import Gateway, client_for, get_bytes

NO_BACKUP_WARNING = "no backup of the private store was ever recorded"


def keygen(gw: Gateway, path) -> str:
    cp = gw.run_cli("recovery", "keygen", "-o", str(path))
    assert cp.returncode == 0, cp.stderr.decode()
    recipient = cp.stdout.decode().strip().splitlines()[-1].split()[-1]
    assert recipient.startswith("medgate1"), cp.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "MEDGATE-SECRET-KEY-1" in path.read_text()
    return recipient


def run_section(gw: Gateway, run: int) -> str:
    return gw.log_text().split(f"===== run {run}:")[-1]


class Writer(threading.Thread):
    """PUTs new objects as fast as the gateway takes them; remembers when each was acknowledged."""

    def __init__(self, gw: Gateway, bucket: str):
        super().__init__(daemon=True)
        self.s3 = client_for(gw)
        self.bucket = bucket
        self.stop = threading.Event()
        self.acked: dict[str, tuple[float, bytes]] = {}
        self.error: Exception | None = None

    def run(self):
        i = 0
        rng = random.Random(7)
        try:
            while not self.stop.is_set():
                body = os.urandom(rng.choice([0, 1, 1000, 70_000, 1_200_000]))
                key = f"load/{i:05d}"
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                self.acked[key] = (time.monotonic(), body)
                i += 1
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_backup_under_load_restore_and_refusals(gateway_factory, tmp_path):
    gw = gateway_factory()
    assert NO_BACKUP_WARNING in gw.log_text(), gw.log_tail()
    recovery = tmp_path / "recovery.key"
    recipient = keygen(gw, recovery)

    s3 = client_for(gw)
    s3.create_bucket(Bucket="ehr")
    before = {}
    for i, size in enumerate([0, 1, 5000, 1_048_576, 2_500_000, 300]):
        body = os.urandom(size)
        s3.put_object(Bucket="ehr", Key=f"pre/{i}", Body=body)
        before[f"pre/{i}"] = body
    s3.copy_object(Bucket="ehr", Key="pre/copy", CopySource={"Bucket": "ehr", "Key": "pre/3"})
    before["pre/copy"] = before["pre/3"]
    s3.delete_object(Bucket="ehr", Key="pre/5")
    del before["pre/5"]

    # A backup without a recovery recipient is refused, and writes nothing.
    out = tmp_path / "backups" / "ehr.mgb"
    out.parent.mkdir()
    cp = gw.run_cli("backup", "--data-dir", str(gw.data_dir), "--out", str(out))
    assert cp.returncode != 0
    assert b"no recovery recipient" in cp.stderr and b"recovery_recipient" in cp.stderr, cp.stderr
    assert list(out.parent.iterdir()) == []

    # Under load: a writer PUTs while the backup runs through the server.
    writer = Writer(gw, "ehr")
    writer.start()
    time.sleep(0.5)
    started = time.monotonic()
    cp = gw.run_cli("backup", "--data-dir", str(gw.data_dir), "--out", str(out),
                    "--recipient", recipient)
    time.sleep(0.3)
    writer.stop.set()
    writer.join(timeout=30)
    assert writer.error is None, writer.error
    assert cp.returncode == 0, cp.stderr.decode()
    assert b"through the running server" in cp.stderr, cp.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["ehr.mgb"], "no partial file left"
    assert out.read_bytes().startswith(b"MGBACKUP")
    # Nothing in clear: no object name, no identity secret.
    raw = out.read_bytes()
    assert b"pre/copy" not in raw and b"MEDGATE-SECRET-KEY" not in raw.upper()
    acked_before = {k: b for k, (t, b) in writer.acked.items() if t < started}
    assert acked_before, "the writer should have acknowledged writes before the backup began"
    assert len(writer.acked) > len(acked_before), "writes should go on during the backup"

    # The backup never replaces a file.
    cp = gw.run_cli("backup", "--data-dir", str(gw.data_dir), "--out", str(out),
                    "--recipient", recipient)
    assert cp.returncode != 0 and b"already exists" in cp.stderr, cp.stderr

    # The backup's time is recorded: the gauge, and no warning at the next start.
    metrics = requests.get(f"{gw.ops_endpoint}/metrics", timeout=10).text
    gauge = [l for l in metrics.splitlines() if l.startswith("medgate_last_backup_timestamp_seconds ")]
    assert gauge and float(gauge[0].split()[1]) > time.time() - 120, gauge
    gw.restart()
    assert NO_BACKUP_WARNING not in run_section(gw, 2), gw.log_tail()
    assert "older than [backup] max_age" not in run_section(gw, 2)
    assert gw.stop() == 0

    # A max_age shorter than the backup's age warns.
    config = tmp_path / "short.toml"
    config.write_text(f'[backup]\nmax_age = "1ms"\nrecovery_recipient = "{recipient}"\n')
    gw.extra_args = ["--config", str(config)]
    gw.start()
    assert "older than [backup] max_age" in run_section(gw, 3), gw.log_tail()
    assert gw.stop() == 0
    # With the server stopped, backup opens the store itself; the recipient from the config.
    direct = tmp_path / "backups" / "direct.mgb"
    cp = gw.run_cli("backup", "--data-dir", str(gw.data_dir), "--config", str(config),
                    "--out", str(direct))
    assert cp.returncode == 0, cp.stderr.decode()
    assert b"directly" in cp.stderr, cp.stderr

    # Refusals, each leaving nothing behind. Every restore names the institution it expects
    # (the signer) and the public store whose checkpoint the backup must not be older than.
    inst = gw.run_cli("keys", "--data-dir", str(gw.data_dir)).stdout.decode().strip().splitlines()[-1]
    assert inst.startswith("medgate1"), inst
    checks = ["--institution", inst, "--public-store", str(gw.public_dir)]
    restored = tmp_path / "restored" / "data"
    cp = gw.run_cli("restore", str(out), "--data-dir", str(gw.data_dir),
                    "--identity", str(recovery), *checks)
    assert cp.returncode != 0 and b"not empty" in cp.stderr, cp.stderr
    other_key = tmp_path / "other.key"
    keygen(gw, other_key)
    cp = gw.run_cli("restore", str(out), "--data-dir", str(restored), "--identity", str(other_key),
                    *checks)
    assert cp.returncode != 0 and b"another recovery key" in cp.stderr, cp.stderr
    assert b"panicked" not in cp.stderr
    tampered = tmp_path / "tampered.mgb"
    data = bytearray(raw)
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    cp = gw.run_cli("restore", str(tampered), "--data-dir", str(restored), "--identity", str(recovery),
                    *checks)
    assert cp.returncode != 0 and b"damaged" in cp.stderr, cp.stderr
    truncated = tmp_path / "truncated.mgb"
    truncated.write_bytes(raw[:-100])
    cp = gw.run_cli("restore", str(truncated), "--data-dir", str(restored), "--identity", str(recovery),
                    *checks)
    assert cp.returncode != 0 and b"truncated" in cp.stderr, cp.stderr
    assert b"panicked" not in cp.stderr
    assert not restored.exists() and list(restored.parent.iterdir()) == [], \
        "a failed restore must leave nothing behind"

    # The backup was taken under load: writes went on after it, so it is older than the log
    # the gateway published, and restore refuses it unless the rollback is accepted.
    cp = gw.run_cli("restore", str(out), "--data-dir", str(restored), "--identity", str(recovery),
                    *checks)
    assert cp.returncode != 0 and b"older than what the gateway published" in cp.stderr, cp.stderr
    assert not restored.exists()

    # The real restore, into an absent data dir; what is lost is listed.
    cp = gw.run_cli("restore", str(out), "--data-dir", str(restored), "--identity", str(recovery),
                    *checks, "--accept-rollback")
    assert cp.returncode == 0, cp.stderr.decode()
    assert b"restored" in cp.stdout, cp.stdout
    assert b"rollback accepted" in cp.stdout and b"log entries made after the backup are lost" \
        in cp.stdout, cp.stdout
    assert (restored / "institution.key").read_bytes() == (gw.data_dir / "institution.key").read_bytes()
    assert stat.S_IMODE((restored / "institution.key").stat().st_mode) == 0o600
    assert [p.name for p in restored.parent.iterdir()] == ["data"]

    # A server on the restored dir, on the same public store, with the same access key.
    gw2 = gateway_factory(start=False, public_store=f"file://{gw.public_dir}")
    gw2.data_dir = restored
    gw2.secret_access_key = gw.secret_access_key
    gw2.start()
    assert NO_BACKUP_WARNING not in gw2.log_text(), "the restore counts as the last backup"
    s3b = client_for(gw2)
    listed = set()
    for page in s3b.get_paginator("list_objects_v2").paginate(Bucket="ehr"):
        listed.update(o["Key"] for o in page.get("Contents", []))
    for key, body in {**before, **acked_before}.items():
        assert key in listed, f"{key} was acknowledged before the backup began but is missing"
    assert "pre/5" not in listed
    for key in listed:
        got = get_bytes(s3b, "ehr", key)
        want = before.get(key)
        if want is None:
            want = writer.acked[key][1]
        assert got == want, f"{key} does not read back byte-identical"
    # The restored gateway takes writes and keeps its log: verify --deep passes.
    s3b.put_object(Bucket="ehr", Key="after-restore", Body=b"new")
    cp = gw2.run_cli("verify", "--deep", "--data-dir", str(restored))
    assert cp.returncode == 0, cp.stdout.decode() + cp.stderr.decode()
    assert b"verify: OK" in cp.stdout
