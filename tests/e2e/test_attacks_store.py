"""Attacks at the store boundaries (issue 13): forged and rolled-back backups, restored
gateways that rewind patient index numbers, revocations that delete nothing, and public store
settings that put records where nobody expects them.

Each test performs the attack and asserts it is refused, with the legitimate flow beside it
(a genuine signed backup restores, a narrow grant survives the wide grant's revocation with
exactly its keys, a valid folder store starts, ...), so refusing everything cannot pass.
Run against the e15ed43 binary (MEDGATE_BIN) every attack succeeds, so every test fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import requests

from support import Gateway, client_for, free_port
from test_sharing import approve, cli, grant_id, index_files, keygen, register, request

SETTLE_S = 2.5  # > the 1 s publication tick (indexes and checkpoints), with margin


def institution_of(gw: Gateway) -> str:
    out = cli(gw, "keys", "--data-dir", str(gw.data_dir))[1]
    found = re.findall(r"medgate1[0-9a-z]+", out.strip().splitlines()[-1])
    assert found, out
    return found[-1]


def recovery_keygen(gw: Gateway, path) -> str:
    _, out, _ = cli(gw, "recovery", "keygen", "-o", str(path))
    found = re.findall(r"medgate1[0-9a-z]+", out.strip().splitlines()[-1])
    assert found, out
    return found[-1]


def backup(gw: Gateway, out, recipient: str) -> None:
    cli(gw, "backup", "--data-dir", str(gw.data_dir), "--out", str(out), "--recipient", recipient)
    assert out.read_bytes().startswith(b"MGBACKUP")


def restore_checks(gw: Gateway, inst: str, public_dir) -> list[str]:
    """The flags naming the expected signer and the public store to compare with, when this
    binary has them (e15ed43 has neither: its restore checks nothing, which is the attack)."""
    helptext = gw.run_cli("restore", "--help").stdout.decode()
    if "--institution" not in helptext:
        return []
    return ["--institution", inst, "--public-store", str(public_dir)]


def restore(gw: Gateway, file, target, recovery, checks, *extra):
    cp = gw.run_cli("restore", str(file), "--data-dir", str(target), "--identity", str(recovery),
                    *checks, *extra)
    return cp.returncode, cp.stdout.decode(errors="replace"), cp.stderr.decode(errors="replace")


def wait_for(pred, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def pull(gw: Gateway, key, inst: str, out, public_dir, ok=True):
    return cli(gw, "patient", "pull", "--identity", str(key), "--institution", inst,
               "--public-store", str(public_dir), "--out", str(out), ok=ok)


# ---------------------------------------------------------------------------
# Item 7: forgeable backups
# ---------------------------------------------------------------------------


def test_forged_backup_is_refused(gateway_factory, tmp_path):
    gw = gateway_factory()
    inst = institution_of(gw)
    recovery = tmp_path / "recovery.key"
    recovery_recipient = recovery_keygen(gw, recovery)
    s3 = client_for(gw)
    s3.create_bucket(Bucket="ehr")
    s3.put_object(Bucket="ehr", Key="note.txt", Body=b"genuine")
    genuine = tmp_path / "genuine.mgb"
    backup(gw, genuine, recovery_recipient)

    # Mallory knows the recovery Recipient (it is public, in the config) and runs her own
    # gateway: its backup, encrypted to that Recipient, would install her institution key.
    mallory = gateway_factory()
    assert institution_of(mallory) != inst
    client_for(mallory).create_bucket(Bucket="ehr")
    forged = tmp_path / "forged.mgb"
    backup(mallory, forged, recovery_recipient)
    mallory.stop()
    assert gw.stop() == 0
    checks = restore_checks(gw, inst, gw.public_dir)

    # The legitimate flow: the genuine, signed backup restores and serves its record.
    ok_dir = tmp_path / "ok" / "data"
    rc, out, err = restore(gw, genuine, ok_dir, recovery, checks)
    assert rc == 0, err
    assert (ok_dir / "institution.key").read_bytes() == (gw.data_dir / "institution.key").read_bytes()

    # The attack: refused, naming the signer, and nothing written.
    bad_dir = tmp_path / "forged" / "data"
    rc, out, err = restore(gw, forged, bad_dir, recovery, checks)
    assert rc != 0, f"a backup signed by another institution was restored:\n{out}\n{err}"
    assert "not by the institution" in err, err
    assert not bad_dir.exists()
    assert "panicked" not in err


# ---------------------------------------------------------------------------
# Item 7 (rollback) and item 16: an older genuine backup
# ---------------------------------------------------------------------------


def shared_then_revoked(gateway_factory, tmp_path):
    """A gateway where alice granted a reader her records, backed up, then revoked the grant
    and added a record: returns (gw, inst, alice key, recovery key, its Recipient, the old
    backup, the grant id)."""
    gw = gateway_factory()
    inst = institution_of(gw)
    alice_key, _ = register(gw, tmp_path, "alice")
    reader, _ = keygen(gw, tmp_path / "reader.key")
    s3 = client_for(gw)
    s3.create_bucket(Bucket="ehr")
    s3.put_object(Bucket="ehr", Key="alice/1", Body=b"first", Metadata={"medgate-patient": "alice"})
    req = request(gw, "alice", reader, "--bucket", "ehr", "--prefix", "alice/")
    gid = grant_id(approve(gw, alice_key, req)[1])
    wait_for(lambda: index_files(gw), "alice's index")
    recovery = tmp_path / "recovery.key"
    recovery_recipient = recovery_keygen(gw, recovery)
    old = tmp_path / "before-revocation.mgb"
    backup(gw, old, recovery_recipient)

    cli(gw, "patient", "revoke", "--data-dir", str(gw.data_dir), "--identity", str(alice_key), gid)
    # Two more publications of alice's index, so its number is well past the backup's.
    for k in ("alice/2", "alice/2b"):
        before = index_files(gw)[0].read_bytes()
        s3.put_object(Bucket="ehr", Key=k, Body=k.encode(), Metadata={"medgate-patient": "alice"})
        wait_for(lambda: index_files(gw)[0].read_bytes() != before, "alice's new index")
    time.sleep(SETTLE_S)  # the checkpoint after the revocation is published
    return gw, inst, alice_key, recovery, recovery_recipient, old, gid


def test_backup_older_than_the_published_log_is_refused(gateway_factory, tmp_path):
    gw, inst, _, recovery, recovery_recipient, old, gid = \
        shared_then_revoked(gateway_factory, tmp_path)
    # The legitimate flow: a backup taken now restores with the check.
    current = tmp_path / "current.mgb"
    backup(gw, current, recovery_recipient)
    assert gw.stop() == 0
    checks = restore_checks(gw, inst, gw.public_dir)
    rc, out, err = restore(gw, current, tmp_path / "current" / "data", recovery, checks)
    assert rc == 0, err

    # The attack: the genuine but older backup would bring the revoked grant back.
    target = tmp_path / "old" / "data"
    rc, out, err = restore(gw, old, target, recovery, checks)
    assert rc != 0, f"a backup older than the published log was restored:\n{out}\n{err}"
    assert "older than what the gateway published" in err and "--accept-rollback" in err, err
    assert not target.exists()

    # Accepted on purpose: restored, and what may be lost is listed (the revoked grant).
    rc, out, err = restore(gw, old, target, recovery, checks, "--accept-rollback")
    assert rc == 0, err
    assert "rollback accepted" in out and f"grant {gid}" in out, out


def test_restore_never_rewinds_patient_index_numbers(gateway_factory, tmp_path):
    gw, inst, alice_key, recovery, _, old, _ = shared_then_revoked(gateway_factory, tmp_path)
    assert gw.stop() == 0
    public = gw.public_dir
    # alice pulls the newest index and remembers its number.
    out = tmp_path / "alice-pulled"
    _, stdout, _ = pull(gw, alice_key, inst, out, public)
    assert "3 records" in stdout, stdout

    checks = restore_checks(gw, inst, public)
    extra = ["--accept-rollback"] if checks else []
    restored = tmp_path / "restored" / "data"
    rc, _, err = restore(gw, old, restored, recovery, checks, *extra)
    assert rc == 0, err
    gw2 = gateway_factory(start=False, public_store=f"file://{public}")
    gw2.data_dir = restored
    gw2.secret_access_key = gw.secret_access_key
    gw2.start()
    before = index_files(gw)[0].read_bytes()  # gw's public dir is the shared store
    client_for(gw2).put_object(Bucket="ehr", Key="alice/3", Body=b"third",
                               Metadata={"medgate-patient": "alice"})
    wait_for(lambda: index_files(gw)[0].read_bytes() != before, "the restored gateway's index")
    assert gw2.stop() == 0

    # The legitimate flow beside the attack: a fresh pull (no memory) reads the new index.
    _, stdout, _ = pull(gw2, alice_key, inst, tmp_path / "fresh", public)
    assert "2 records, 2 verified" in stdout, stdout  # alice/1 from the backup, alice/3
    # alice, who saw a higher number before the restore, must not see a rollback.
    rc, stdout, err = pull(gw2, alice_key, inst, out, public, ok=False)
    assert rc == 0, f"the restored gateway published an index numbered below one it had " \
                    f"published before:\n{stdout}\n{err}"


# ---------------------------------------------------------------------------
# Item 8: revocation that deletes nothing
# ---------------------------------------------------------------------------


def test_revoking_a_wide_grant_deletes_what_no_other_grant_covers(gateway, tmp_path):
    gw = gateway
    alice_key, _ = register(gw, tmp_path, "alice")
    reader_key = tmp_path / "reader.key"
    reader, _ = keygen(gw, reader_key)
    s3 = client_for(gw)
    s3.create_bucket(Bucket="pacs")
    records = {"alice/scans/1": b"scan one", "alice/scans/2": b"scan two",
               "alice/notes/1": b"a note", "alice/labs/1": b"a lab"}
    for k, v in records.items():
        s3.put_object(Bucket="pacs", Key=k, Body=v, Metadata={"medgate-patient": "alice"})
    narrow = grant_id(approve(gw, alice_key, request(gw, "alice", reader, "--bucket", "pacs",
                                                     "--prefix", "alice/scans/"))[1])
    _, out, _ = approve(gw, alice_key, request(gw, "alice", reader, "--all"))
    wide = grant_id(out)
    assert "4 records shared" in out, out

    _, revoked, _ = cli(gw, "patient", "revoke", "--data-dir", str(gw.data_dir),
                        "--identity", str(alice_key), wide)
    # The legitimate flow: the narrow grant still reads exactly its records.
    for k in ("alice/scans/1", "alice/scans/2"):
        got = tmp_path / k.replace("/", "_")
        cli(gw, "share", "fetch", "--data-dir", str(gw.data_dir), "--identity", str(reader_key),
            "--grant", narrow, "--object", f"pacs/{k}", "-o", str(got))
        assert got.read_bytes() == records[k]
    rc, _, err = cli(gw, "share", "fetch", "--data-dir", str(gw.data_dir), "--identity",
                     str(reader_key), "--grant", wide, "--object", "pacs/alice/notes/1",
                     "-o", str(tmp_path / "no"), ok=False)
    assert rc != 0 and "revoked" in err, err
    # The attack (by omission): revoking the wide grant must have deleted the reader's keys
    # of the two records only it covered, and said so.
    assert "2 wrapped keys deleted" in revoked, f"the wide grant's keys were kept: {revoked}"
    # Revoking the narrow grant too deletes the rest: one stanza per grant on each scan.
    _, out, _ = cli(gw, "patient", "revoke", "--data-dir", str(gw.data_dir),
                    "--identity", str(alice_key), narrow)
    assert "4 wrapped keys deleted" in out, out


# ---------------------------------------------------------------------------
# Misconfiguration: records where nobody expects them
# ---------------------------------------------------------------------------


def start_outcome(gw: Gateway, cwd, wait: float = 6.0) -> tuple[int | None, str]:
    """Runs `medgate serve` as configured in `cwd`: its exit code, or None when it was still
    running after `wait` seconds (then stopped), and its output."""
    env = gw.env()
    proc = subprocess.Popen(gw.argv(), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=wait)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        return None, out.decode(errors="replace")


def test_public_store_settings_are_strict(gateway_factory, tmp_path):
    # The legitimate flow: an existing folder starts, and says which store it resolved.
    existing = tmp_path / "existing"
    existing.mkdir()
    ok = gateway_factory(public_store=str(existing))
    assert requests.get(f"{ok.ops_endpoint}/readyz", timeout=10).status_code == 200
    ok.stop()

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # One slash: not a URL of any known scheme, and not a folder named "s3:".
    gw = gateway_factory(start=False, public_store="s3:/hospital-archive")
    rc, out = start_outcome(gw, cwd)
    assert not (cwd / "s3:").exists(), "a folder named s3: was created"
    assert rc not in (None, 0), f"serve started on s3:/hospital-archive:\n{out}"
    assert "write s3://hospital-archive" in out, out
    assert not gw.data_dir.exists(), "a refused start must not create the data dir"
    # A folder that does not exist is not created (a typo would start an empty store).
    missing = tmp_path / "mnt" / "archive"
    gw = gateway_factory(start=False, public_store=str(missing))
    rc, out = start_outcome(gw, cwd)
    assert not missing.exists(), "a missing public store folder was created"
    assert rc not in (None, 0) and "does not exist" in out, out
    # patient pull only reads: it creates nothing either.
    key = tmp_path / "p.key"
    recipient, _ = keygen(gw, key)
    nowhere = tmp_path / "nowhere"
    cp = gw.run_cli("patient", "pull", "--identity", str(key), "--institution", recipient,
                    "--public-store", str(nowhere), "--out", str(tmp_path / "out"))
    assert cp.returncode != 0
    assert not nowhere.exists(), "patient pull created the public store folder"
    assert b"does not exist" in cp.stderr, cp.stderr

    # The resolved store is logged at start; create = true in the config creates a missing
    # folder on purpose.
    assert f"folder {existing}" in ok.log_text(), ok.log_tail()
    config = tmp_path / "create.toml"
    made = tmp_path / "made-on-purpose"
    config.write_text(f'[public_store]\nurl = "{made}"\ncreate = true\n')
    ok2 = gateway_factory(extra_args=["--config", str(config)])
    assert made.is_dir()
    assert requests.get(f"{ok2.ops_endpoint}/readyz", timeout=10).status_code == 200


def test_s3_store_without_credentials_says_so(gateway_factory):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: no answer either way
    opts = {"endpoint": endpoint, "allow_http": "true", "region": "us-east-1"}
    # The legitimate flow: with credentials, no such warning, and /readyz gives the store's
    # own reason; the store is logged without its secret.
    keyed = gateway_factory(public_store="s3://hospital-archive/medgate",
                            public_store_opts={**opts, "access_key_id": "AKIDTEST",
                                               "secret_access_key": "not-a-secret"})
    r = requests.get(f"{keyed.ops_endpoint}/readyz", timeout=15)
    assert r.status_code == 503 and "no credentials" not in r.text, r.text
    # (The "=====" lines are the test harness's own record of the command line.)
    logged = "\n".join(l for l in keyed.log_text().splitlines() if not l.startswith("===== "))
    assert "no credentials" not in logged and "not-a-secret" not in logged, logged

    # Without credentials: a plain warning at start and a plain reason in /readyz, not an
    # instance-metadata URL error.
    bare = gateway_factory(public_store="s3://hospital-archive/medgate", public_store_opts=opts)
    want = "no credentials for s3://hospital-archive/medgate: set access_key_id"
    assert want in bare.log_text(), bare.log_tail()
    r = requests.get(f"{bare.ops_endpoint}/readyz", timeout=15)
    assert r.status_code == 503 and want in r.text, r.text
    assert "s3://hospital-archive/medgate" in logged, "the resolved store is logged at start"
