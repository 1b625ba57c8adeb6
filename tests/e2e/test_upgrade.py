"""Upgrades: a data dir and public folder written by main e15ed43 (tests/fixtures/upgrade-e15ed43,
made once by its generate.py with that release's binary) open with the binary under test, which
serves every record byte-identical to the SHA-256 recorded when it was written, passes
`verify --deep` on the old log and manifests, honours the old grant and revocation, and whose
`patient pull` accepts the old patient index straight from the old public folder."""

from __future__ import annotations

import hashlib
import json
import os
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
