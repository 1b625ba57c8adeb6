"""Upgrades: a data dir and public folder written by main e15ed43 (tests/fixtures/upgrade-e15ed43,
made once by its generate.py with that release's binary) open with the binary under test, which
serves every record byte-identical to the SHA-256 recorded when it was written, passes
`verify --deep` on the old log and manifests, honours the old grant and revocation, and whose
`patient pull` accepts the old patient index straight from the old public folder. Its DEK records
(version 1: stanzas without their Recipient) are upgraded once, when the store first opens: every
stanza gets its Recipient (the old grant's reader finds its stanza by whole key afterwards), none
is left unknown; gateway/tests/upgrade_fixture.rs checks the rows themselves."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from support import REPO_ROOT, Gateway, client_for

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "upgrade-e15ed43"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def copy_fixture(dest: Path) -> None:
    """The fixture as an operator would restore it: files copied, secrets back to 0600 (git
    keeps no permission bits)."""
    shutil.copytree(FIXTURE / "data", dest)
    for name in ("institution.key", "credentials", "admin.token"):
        (dest / name).chmod(0o600)


def identity(tmp: Path, name: str) -> Path:
    path = tmp / name
    shutil.copyfile(FIXTURE / name, path)
    path.chmod(0o600)
    return path


def cli(gw: Gateway, *args: str, ok: bool = True):
    cp = gw.run_cli(*args)
    out, err = cp.stdout.decode(errors="replace"), cp.stderr.decode(errors="replace")
    if ok:
        assert cp.returncode == 0, f"medgate {' '.join(args)} failed:\n{out}\n{err}"
    return cp.returncode, out, err


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    work = tmp_path_factory.mktemp("upgrade")
    gw = Gateway(work)
    copy_fixture(gw.data_dir)
    gw.access_key_id = EXPECTED["access_key_id"]
    gw.secret_access_key = EXPECTED["secret_access_key"]
    gw.start()
    yield gw
    gw.teardown()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_every_record(s3) -> None:
    listed = set()
    for bucket in ("radiology", "labs"):
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            listed.add(f"{bucket}/{obj['Key']}")
    assert listed == set(EXPECTED["records"]), listed ^ set(EXPECTED["records"])
    for name, want in EXPECTED["records"].items():
        bucket, key = name.split("/", 1)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert (len(body), sha256(body)) == (want["size"], want["sha256"]), name
    # A range inside the multi-chunk record (chunk size 1024 when written).
    name = f"radiology/{EXPECTED['patient']['id']}/ct.dcm"
    whole = s3.get_object(Bucket="radiology", Key=name.split("/", 1)[1])["Body"].read()
    part = s3.get_object(Bucket="radiology", Key=name.split("/", 1)[1],
                         Range="bytes=1000-3100")["Body"].read()
    assert part == whole[1000:3101]


def test_every_old_record_is_served_byte_identical(upgraded):
    s3 = client_for(upgraded)
    check_every_record(s3)
    head = s3.head_object(Bucket="radiology", Key="notes/readme.txt")
    assert head["ContentType"] == "text/plain"
    head = s3.head_object(Bucket="labs", Key=f"{EXPECTED['patient']['id']}/a1c.json")
    assert head["Metadata"]["lab"] == "hba1c"


def test_verify_deep_accepts_the_old_log_and_blobs(upgraded):
    _, out, _ = cli(upgraded, "verify", "--data-dir", str(upgraded.data_dir), "--deep")
    assert "verify: OK" in out and "blobs re-hashed" in out, out


def test_old_grant_still_opens_and_old_revocation_still_holds(upgraded, tmp_path):
    reader = identity(tmp_path, "reader.key")
    pid = EXPECTED["patient"]["id"]
    base = ["share", "fetch", "--data-dir", str(upgraded.data_dir), "--identity", str(reader)]
    got = tmp_path / "ct.dcm"
    cli(upgraded, *base, "--grant", EXPECTED["grant"], "--object", f"radiology/{pid}/ct.dcm",
        "-o", str(got))
    assert sha256(got.read_bytes()) == EXPECTED["records"][f"radiology/{pid}/ct.dcm"]["sha256"]
    rc, _, err = cli(upgraded, *base, "--grant", EXPECTED["revoked_grant"], "--object",
                     f"labs/{pid}/a1c.json", "-o", str(tmp_path / "no"), ok=False)
    assert rc != 0 and "revoked" in err, err
    assert not (tmp_path / "no").exists()


def test_patient_pull_accepts_the_old_index(upgraded, tmp_path):
    """Pulled from a pristine copy of the old public folder, so it is the old index's bytes
    that are read, not one the new gateway may have republished."""
    public = tmp_path / "public"
    shutil.copytree(FIXTURE / "data" / "public", public)
    old_index = sorted((public / "v1" / "p").iterdir())
    assert len(old_index) == 1
    key = identity(tmp_path, "patient.key")
    out_dir = tmp_path / "pulled"
    _, out, _ = cli(upgraded, "patient", "pull", "--identity", str(key), "--institution",
                    EXPECTED["institution"], "--public-store", str(public), "--out", str(out_dir))
    records = EXPECTED["patient"]["records"]
    assert f"{len(records)} records, {len(records)} verified" in out, out
    for name in records:
        assert sha256((out_dir / name).read_bytes()) == EXPECTED["records"][name]["sha256"], name
    assert old_index[0].read_bytes() == (FIXTURE / "data" / "public" / "v1" / "p"
                                         / old_index[0].name).read_bytes()


def test_pull_moves_from_the_old_index_to_the_new_format(upgraded, tmp_path):
    """A patient who pulled the old (v1) index takes the upgraded gateway's next one (v2:
    sequence number sealed, padded to 4 KiB) because its number is higher, and then refuses
    the old one put back as a rollback."""
    pid = EXPECTED["patient"]["id"]
    pristine = tmp_path / "pristine"
    shutil.copytree(FIXTURE / "data" / "public", pristine)
    key = identity(tmp_path, "patient.key")
    out_dir = tmp_path / "pulled"
    pull = ["patient", "pull", "--identity", str(key), "--institution", EXPECTED["institution"],
            "--out", str(out_dir)]
    _, out, _ = cli(upgraded, *pull, "--public-store", str(pristine))
    live = upgraded.public_dir / "v1" / "p"
    [old_index] = sorted(live.iterdir())
    old_bytes = (pristine / "v1" / "p" / old_index.name).read_bytes()
    assert old_bytes[0] == 1

    s3 = client_for(upgraded)
    s3.put_object(Bucket="labs", Key=f"{pid}/after-upgrade.json", Body=b'{"ok": true}',
                  Metadata={"medgate-patient": pid})
    try:
        deadline = time.monotonic() + 30
        while old_index.read_bytes()[0] != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        new_bytes = old_index.read_bytes()
        assert new_bytes[0] == 2 and len(new_bytes) == 4096, (new_bytes[0], len(new_bytes))
        n = len(EXPECTED["patient"]["records"]) + 1
        _, out, _ = cli(upgraded, *pull, "--public-store", str(upgraded.public_dir))
        assert f"{n} records, {n} verified" in out, out
        assert (out_dir / "labs" / pid / "after-upgrade.json").read_bytes() == b'{"ok": true}'
        # The v1 index put back is older than the v2 one this patient has seen.
        rc, _, err = cli(upgraded, *pull, "--public-store", str(pristine), ok=False)
        assert rc != 0 and "rolled-back" in err, err
    finally:
        s3.delete_object(Bucket="labs", Key=f"{pid}/after-upgrade.json")


def test_new_writes_beside_old_records_survive_a_restart(upgraded):
    s3 = client_for(upgraded)
    fresh = os.urandom(3000)
    s3.put_object(Bucket="labs", Key="after-upgrade.bin", Body=fresh)
    upgraded.restart()
    s3 = client_for(upgraded)
    assert s3.get_object(Bucket="labs", Key="after-upgrade.bin")["Body"].read() == fresh
    s3.delete_object(Bucket="labs", Key="after-upgrade.bin")
    check_every_record(s3)
    _, out, _ = cli(upgraded, "verify", "--data-dir", str(upgraded.data_dir), "--deep")
    assert "verify: OK" in out, out


def test_start_names_access_keys_that_kept_the_label_right(upgraded):
    """Access keys from before --label-patients keep the right (nothing an old client did
    stops working), and every start names them so an admin can replace them."""
    log = upgraded.log_text()
    assert "access keys created before --label-patients existed" in log, upgraded.log_tail()
    assert EXPECTED["access_key_id"] in log
    # The old key does label records with the patient, as it did before the upgrade.
    s3 = client_for(upgraded)
    pid = EXPECTED["patient"]["id"]
    s3.put_object(Bucket="labs", Key=f"{pid}/labelled-after-upgrade.json", Body=b"{}",
                  Metadata={"medgate-patient": pid})
    _, out, _ = cli(upgraded, "patient", "show", "--data-dir", str(upgraded.data_dir),
                    "--id", pid, "--json")
    assert json.loads(out)["records"] == len(EXPECTED["patient"]["records"]) + 1, out
    s3.delete_object(Bucket="labs", Key=f"{pid}/labelled-after-upgrade.json")
    # A key made now has no such right unless asked for, and is not named.
    _, out, _ = cli(upgraded, "access-key", "list", "--data-dir", str(upgraded.data_dir),
                    "--json")
    keys = {k["id"]: k for k in json.loads(out)}
    assert keys[EXPECTED["access_key_id"]]["label_patients"] is True, keys


def test_an_old_unsigned_backup_restores_only_with_allow_unsigned(tmp_path):
    """A backup written by e15ed43 (format v1, signed by nobody): refused without
    --allow-unsigned, since anyone who knows the recovery Recipient could have written it;
    with it, restored and serving every record byte-identical."""
    recovery = identity(tmp_path, "recovery.key")
    public = tmp_path / "public"
    shutil.copytree(FIXTURE / "data" / "public", public)
    gw = Gateway(tmp_path / "restored", public_store=str(public))
    gw.access_key_id = EXPECTED["access_key_id"]
    gw.secret_access_key = EXPECTED["secret_access_key"]
    base = ["restore", str(FIXTURE / "backup-v1.mgb"), "--data-dir", str(gw.data_dir),
            "--identity", str(recovery), "--institution", EXPECTED["institution"],
            "--public-store", str(public)]
    rc, _, err = cli(gw, *base, ok=False)
    assert rc != 0 and "unsigned (v1) backup" in err and "--allow-unsigned" in err, err
    assert not (gw.data_dir / "private").exists(), "a refused restore leaves nothing behind"
    _, _, err = cli(gw, *base, "--allow-unsigned")
    assert "restored because of --allow-unsigned" in err, err
    gw.start()
    try:
        check_every_record(client_for(gw))
        _, out, _ = cli(gw, "verify", "--data-dir", str(gw.data_dir))
        assert "verify: OK" in out, out
    finally:
        gw.teardown()


UPGRADE_LINE = "DEK records upgraded to version 2"


def test_dek_records_are_upgraded_once_when_the_store_opens(upgraded):
    log = upgraded.log_text()
    lines = [line for line in log.splitlines() if UPGRADE_LINE in line]
    assert len(lines) == 1, log[-4000:]
    counts = {k: int(v) for k, v in re.findall(r"(rows|stanzas|unknown_recipient)=(\d+)", lines[0])}
    # Six records, five DEKs (the copy shares the scan's), each with the institution's stanza;
    # the patient's also with the patient's, the granted ones with the reader's.
    assert counts["rows"] == len(EXPECTED["records"]) - 1, lines[0]
    assert counts["stanzas"] > counts["rows"], lines[0]
    assert counts["unknown_recipient"] == 0, lines[0]
    assert "unknown recipient" not in log
    # The legitimate flow after the upgrade: records still serve, and a restart does not
    # upgrade again.
    check_every_record(client_for(upgraded))
    upgraded.restart()
    again = [line for line in upgraded.log_text().splitlines() if UPGRADE_LINE in line]
    assert len(again) == 1
    check_every_record(client_for(upgraded))
