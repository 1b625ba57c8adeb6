"""Upgrades: a data dir and public folder written by an earlier main open with the binary under
test. One fixture per release before a format change (tests/fixtures/upgrade-<commit>, each made
once by its generate.py with that release's binary); every test here that takes `old` runs
against each of them: the binary serves every record byte-identical to the SHA-256 recorded when
it was written, passes `verify --deep` on the old log and manifests, honours the old grant and
revocation, its `patient pull` accepts the old patient index straight from the old public folder,
and new writes beside the old records survive a restart.

What only one fixture has is tested against that one (`@for_fixture`):
- e15ed43: DEK records version 1 (stanzas without their Recipient) are upgraded once, when the
  store first opens (gateway/tests/upgrade_fixture.rs checks the rows themselves); patient index
  v1 gives way to v2; access keys from before --label-patients keep the right and are named at
  every start; its unsigned (v1) backup restores only with --allow-unsigned.
- 2e5dec1: an institution key rollover whose re-wrap is still pending (records before it are
  wrapped to the previous key, kept in data/institution.key.old-<fp>, records after it to the
  new one): both kinds are served, the log with the rollover entry verifies, the patient who
  pinned the first key pulls the v2 index through the rollover, the current binary finishes the
  re-wrap; access keys with and without the label right keep it; its signed (v2) backup restores
  without --allow-unsigned."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from support import REPO_ROOT, Gateway, client_for, published_files

FIXTURES = ("e15ed43", "2e5dec1")
# What the gateway keeps private beside the store: 0600 as an operator restores them (git keeps
# no permission bits).
SECRET_FILES = ("institution.key", "credentials", "admin.token")


@dataclass(frozen=True)
class Old:
    """One upgrade fixture: its folder and expected.json."""
    name: str
    dir: Path
    exp: dict

    @property
    def pinned(self) -> str:
        """The institution Recipient the patient and the reader were given when the fixture
        was written (before any key rollover)."""
        return self.exp.get("institution_before_rotation", self.exp["institution"])

    def copy_data(self, dest: Path) -> None:
        """The data dir as an operator would restore it: files copied, secrets back to 0600."""
        shutil.copytree(self.dir / "data", dest)
        for path in dest.iterdir():
            if path.name in SECRET_FILES or path.name.startswith("institution.key.old-"):
                path.chmod(0o600)

    def identity(self, tmp: Path, name: str) -> Path:
        path = tmp / name
        shutil.copyfile(self.dir / name, path)
        path.chmod(0o600)
        return path


def load(name: str) -> Old:
    folder = REPO_ROOT / "tests" / "fixtures" / f"upgrade-{name}"
    return Old(name, folder, json.loads((folder / "expected.json").read_text()))


@pytest.fixture(scope="module", params=FIXTURES)
def old(request) -> Old:
    return load(request.param)


def for_fixture(name: str):
    """A test of what only fixture `name` holds: `old` (and `upgraded`) are that one."""
    assert name in FIXTURES
    return pytest.mark.parametrize("old", [name], indirect=True)


def cli(gw: Gateway, *args: str, ok: bool = True):
    cp = gw.run_cli(*args)
    out, err = cp.stdout.decode(errors="replace"), cp.stderr.decode(errors="replace")
    if ok:
        assert cp.returncode == 0, f"medgate {' '.join(args)} failed:\n{out}\n{err}"
    return cp.returncode, out, err


def gateway_on(old: Old, work: Path, **kw) -> Gateway:
    gw = Gateway(work, **kw)
    gw.access_key_id = old.exp["access_key_id"]
    gw.secret_access_key = old.exp["secret_access_key"]
    return gw


@pytest.fixture(scope="module")
def upgraded(old, tmp_path_factory):
    gw = gateway_on(old, tmp_path_factory.mktemp(f"upgrade-{old.name}"))
    old.copy_data(gw.data_dir)
    gw.start()
    yield gw
    gw.teardown()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_every_record(s3, old: Old) -> None:
    listed = set()
    for bucket in ("radiology", "labs"):
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            listed.add(f"{bucket}/{obj['Key']}")
    records = old.exp["records"]
    assert listed == set(records), listed ^ set(records)
    for name, want in records.items():
        bucket, key = name.split("/", 1)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert (len(body), sha256(body)) == (want["size"], want["sha256"]), name
    # A range inside the multi-chunk record (chunk size 1024 when written).
    name = f"radiology/{old.exp['patient']['id']}/ct.dcm"
    whole = s3.get_object(Bucket="radiology", Key=name.split("/", 1)[1])["Body"].read()
    part = s3.get_object(Bucket="radiology", Key=name.split("/", 1)[1],
                         Range="bytes=1000-3100")["Body"].read()
    assert part == whole[1000:3101]


def test_every_old_record_is_served_byte_identical(old, upgraded):
    s3 = client_for(upgraded)
    check_every_record(s3, old)
    head = s3.head_object(Bucket="radiology", Key="notes/readme.txt")
    assert head["ContentType"] == "text/plain"
    head = s3.head_object(Bucket="labs", Key=f"{old.exp['patient']['id']}/a1c.json")
    assert head["Metadata"]["lab"] == "hba1c"


def test_verify_deep_accepts_the_old_log_and_blobs(old, upgraded):
    """The old log verifies, a key rollover entry in it included (2e5dec1), and `keys show`
    lists the rollovers the old release published, unchanged."""
    _, out, _ = cli(upgraded, "verify", "--data-dir", str(upgraded.data_dir), "--deep")
    assert "verify: OK" in out and "blobs re-hashed" in out, out
    if "keys_show" in old.exp:
        _, out, _ = cli(upgraded, "keys", "show", "--data-dir", str(upgraded.data_dir))
        assert out.strip().splitlines() == old.exp["keys_show"], out


def test_old_grant_still_opens_and_old_revocation_still_holds(old, upgraded, tmp_path):
    reader = old.identity(tmp_path, "reader.key")
    pid = old.exp["patient"]["id"]
    base = ["share", "fetch", "--data-dir", str(upgraded.data_dir), "--identity", str(reader)]
    got = tmp_path / "ct.dcm"
    cli(upgraded, *base, "--grant", old.exp["grant"], "--object", f"radiology/{pid}/ct.dcm",
        "-o", str(got))
    assert sha256(got.read_bytes()) == old.exp["records"][f"radiology/{pid}/ct.dcm"]["sha256"]
    rc, _, err = cli(upgraded, *base, "--grant", old.exp["revoked_grant"], "--object",
                     f"labs/{pid}/a1c.json", "-o", str(tmp_path / "no"), ok=False)
    assert rc != 0 and "revoked" in err, err
    assert not (tmp_path / "no").exists()


def test_patient_pull_accepts_the_old_index(old, upgraded, tmp_path):
    """Pulled from a pristine copy of the old public folder, so it is the old index's bytes
    that are read, not one the new gateway may have republished; with the institution key the
    patient was given (2e5dec1: the key before the rollover, which the pull follows)."""
    public = tmp_path / "public"
    shutil.copytree(old.dir / "data" / "public", public)
    pristine = {p.name: p.read_bytes() for p in (public / "v1" / "p").iterdir()}
    assert pristine
    key = old.identity(tmp_path, "patient.key")
    out_dir = tmp_path / "pulled"
    _, out, err = cli(upgraded, "patient", "pull", "--identity", str(key), "--institution",
                      old.pinned, "--public-store", str(public), "--out", str(out_dir))
    records = old.exp["patient"]["records"]
    assert f"{len(records)} records, {len(records)} verified" in out, out
    for name in records:
        assert sha256((out_dir / name).read_bytes()) == old.exp["records"][name]["sha256"], name
    if old.pinned != old.exp["institution"]:
        assert "rolled its key over" in err, err
    assert {p.name: p.read_bytes() for p in (public / "v1" / "p").iterdir()} == pristine


@for_fixture("e15ed43")
def test_pull_moves_from_the_old_index_to_the_new_format(old, upgraded, tmp_path):
    """A patient who pulled the old (v1) index takes the upgraded gateway's next one (v2:
    sequence number sealed, padded to 4 KiB) because its number is higher, and then refuses
    the old one put back as a rollback."""
    pid = old.exp["patient"]["id"]
    pristine = tmp_path / "pristine"
    shutil.copytree(old.dir / "data" / "public", pristine)
    key = old.identity(tmp_path, "patient.key")
    out_dir = tmp_path / "pulled"
    pull = ["patient", "pull", "--identity", str(key), "--institution", old.exp["institution"],
            "--out", str(out_dir)]
    _, out, _ = cli(upgraded, *pull, "--public-store", str(pristine))
    live = upgraded.public_dir / "v1" / "p"
    [old_index] = published_files(live)
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
        n = len(old.exp["patient"]["records"]) + 1
        _, out, _ = cli(upgraded, *pull, "--public-store", str(upgraded.public_dir))
        assert f"{n} records, {n} verified" in out, out
        assert (out_dir / "labs" / pid / "after-upgrade.json").read_bytes() == b'{"ok": true}'
        # The v1 index put back is older than the v2 one this patient has seen.
        rc, _, err = cli(upgraded, *pull, "--public-store", str(pristine), ok=False)
        assert rc != 0 and "rolled-back" in err, err
    finally:
        s3.delete_object(Bucket="labs", Key=f"{pid}/after-upgrade.json")


def test_new_writes_beside_old_records_survive_a_restart(old, upgraded):
    s3 = client_for(upgraded)
    fresh = os.urandom(3000)
    s3.put_object(Bucket="labs", Key="after-upgrade.bin", Body=fresh)
    upgraded.restart()
    s3 = client_for(upgraded)
    assert s3.get_object(Bucket="labs", Key="after-upgrade.bin")["Body"].read() == fresh
    s3.delete_object(Bucket="labs", Key="after-upgrade.bin")
    check_every_record(s3, old)
    _, out, _ = cli(upgraded, "verify", "--data-dir", str(upgraded.data_dir), "--deep")
    assert "verify: OK" in out, out


LABEL_WARNING = "access keys created before --label-patients existed"


@for_fixture("e15ed43")
def test_start_names_access_keys_that_kept_the_label_right(old, upgraded):
    """Access keys from before --label-patients keep the right (nothing an old client did
    stops working), and every start names them so an admin can replace them."""
    log = upgraded.log_text()
    assert LABEL_WARNING in log, upgraded.log_tail()
    assert old.exp["access_key_id"] in log
    # The old key does label records with the patient, as it did before the upgrade.
    s3 = client_for(upgraded)
    pid = old.exp["patient"]["id"]
    s3.put_object(Bucket="labs", Key=f"{pid}/labelled-after-upgrade.json", Body=b"{}",
                  Metadata={"medgate-patient": pid})
    _, out, _ = cli(upgraded, "patient", "show", "--data-dir", str(upgraded.data_dir),
                    "--id", pid, "--json")
    assert json.loads(out)["records"] == len(old.exp["patient"]["records"]) + 1, out
    s3.delete_object(Bucket="labs", Key=f"{pid}/labelled-after-upgrade.json")
    # A key made now has no such right unless asked for, and is not named.
    _, out, _ = cli(upgraded, "access-key", "list", "--data-dir", str(upgraded.data_dir),
                    "--json")
    keys = {k["id"]: k for k in json.loads(out)}
    assert keys[old.exp["access_key_id"]]["label_patients"] is True, keys


@for_fixture("2e5dec1")
def test_access_keys_keep_their_buckets_and_label_right(old, upgraded):
    """2e5dec1's key rows (v2) say themselves whether a key may label patients: nothing is
    upgraded or named at start, the operator's key still labels, the second key (labs only,
    no label right) still writes to labs and is still refused a label and another bucket."""
    assert LABEL_WARNING not in upgraded.log_text(), upgraded.log_tail()
    _, out, _ = cli(upgraded, "access-key", "list", "--data-dir", str(upgraded.data_dir),
                    "--json")
    keys = {k["id"]: k for k in json.loads(out)}
    second = old.exp["second_access_key"]
    assert set(keys) == {old.exp["access_key_id"], second["id"]}, keys
    assert keys[old.exp["access_key_id"]]["label_patients"] is True, keys
    assert keys[second["id"]]["label_patients"] is False, keys
    pid = old.exp["patient"]["id"]
    operator = client_for(upgraded)
    operator.put_object(Bucket="labs", Key=f"{pid}/labelled-after-upgrade.json", Body=b"{}",
                        Metadata={"medgate-patient": pid})
    try:
        _, out, _ = cli(upgraded, "patient", "show", "--data-dir", str(upgraded.data_dir),
                        "--id", pid, "--json")
        assert json.loads(out)["records"] == len(old.exp["patient"]["records"]) + 1, out
    finally:
        operator.delete_object(Bucket="labs", Key=f"{pid}/labelled-after-upgrade.json")
    app = client_for(upgraded, secret=second["secret"], access_key_id=second["id"])
    app.put_object(Bucket="labs", Key="from-the-lab-app.txt", Body=b"ok")
    try:
        assert app.get_object(Bucket="labs", Key="from-the-lab-app.txt")["Body"].read() == b"ok"
        for kw in ({"Bucket": "labs", "Key": f"{pid}/label-refused.json",
                    "Metadata": {"medgate-patient": pid}},
                   {"Bucket": "radiology", "Key": "other-bucket.txt"}):
            with pytest.raises(ClientError) as e:
                app.put_object(Body=b"no", **kw)
            assert e.value.response["Error"]["Code"] == "AccessDenied", e.value.response
        listed = {o["Key"] for o in operator.list_objects_v2(Bucket="labs")["Contents"]}
        assert f"{pid}/label-refused.json" not in listed
    finally:
        app.delete_object(Bucket="labs", Key="from-the-lab-app.txt")


@for_fixture("e15ed43")
def test_an_old_unsigned_backup_restores_only_with_allow_unsigned(old, tmp_path):
    """A backup written by e15ed43 (format v1, signed by nobody): refused without
    --allow-unsigned, since anyone who knows the recovery Recipient could have written it;
    with it, restored and serving every record byte-identical."""
    recovery = old.identity(tmp_path, "recovery.key")
    public = tmp_path / "public"
    shutil.copytree(old.dir / "data" / "public", public)
    gw = gateway_on(old, tmp_path / "restored", public_store=str(public))
    base = ["restore", str(old.dir / "backup-v1.mgb"), "--data-dir", str(gw.data_dir),
            "--identity", str(recovery), "--institution", old.exp["institution"],
            "--public-store", str(public)]
    rc, _, err = cli(gw, *base, ok=False)
    assert rc != 0 and "unsigned (v1) backup" in err and "--allow-unsigned" in err, err
    assert not (gw.data_dir / "private").exists(), "a refused restore leaves nothing behind"
    _, _, err = cli(gw, *base, "--allow-unsigned")
    assert "restored because of --allow-unsigned" in err, err
    gw.start()
    try:
        check_every_record(client_for(gw), old)
        _, out, _ = cli(gw, "verify", "--data-dir", str(gw.data_dir))
        assert "verify: OK" in out, out
    finally:
        gw.teardown()


@for_fixture("2e5dec1")
def test_a_signed_backup_restores_without_allow_unsigned(old, tmp_path):
    """A backup written by 2e5dec1 (format v2, signed by the institution key after the
    rollover): restored without --allow-unsigned, against the public folder it was published
    to, and serving every record byte-identical. A signature by the key before the rollover
    is not what the backup carries: --institution naming that key is refused."""
    recovery = old.identity(tmp_path, "recovery.key")
    public = tmp_path / "public"
    shutil.copytree(old.dir / "data" / "public", public)
    gw = gateway_on(old, tmp_path / "restored", public_store=str(public))
    base = ["restore", str(old.dir / "backup-v2.mgb"), "--data-dir", str(gw.data_dir),
            "--identity", str(recovery), "--public-store", str(public)]
    rc, _, err = cli(gw, *base, "--institution", old.exp["institution_before_rotation"],
                     ok=False)
    assert rc != 0 and "--institution" in err, err
    assert not (gw.data_dir / "private").exists(), "a refused restore leaves nothing behind"
    _, out, err = cli(gw, *base, "--institution", old.exp["institution"])
    assert "restored" in out + err and "unsigned" not in out + err, out + err
    # 2e5dec1's backup carries institution.key only (the new key; backups made since carry the
    # rotation's files, test_key_rotate.py): the records still wrapped to the
    # previous key open with the previous identity, which the operator keeps until the re-wrap
    # is done (`keys rotate` says so) and puts back beside it.
    previous = gw.data_dir / old.exp["previous_identity_file"]
    if not previous.exists():
        shutil.copyfile(old.dir / "data" / previous.name, previous)
        previous.chmod(0o600)
    gw.start()
    try:
        check_every_record(client_for(gw), old)
        _, out, _ = cli(gw, "verify", "--data-dir", str(gw.data_dir))
        assert "verify: OK" in out, out
    finally:
        gw.teardown()


UPGRADE_LINE = "DEK records upgraded to version 2"


@for_fixture("e15ed43")
def test_dek_records_are_upgraded_once_when_the_store_opens(old, upgraded):
    log = upgraded.log_text()
    lines = [line for line in log.splitlines() if UPGRADE_LINE in line]
    assert len(lines) == 1, log[-4000:]
    counts = {k: int(v) for k, v in re.findall(r"(rows|stanzas|unknown_recipient)=(\d+)", lines[0])}
    # Six records, five DEKs (the copy shares the scan's), each with the institution's stanza;
    # the patient's also with the patient's, the granted ones with the reader's.
    assert counts["rows"] == len(old.exp["records"]) - 1, lines[0]
    assert counts["stanzas"] > counts["rows"], lines[0]
    assert counts["unknown_recipient"] == 0, lines[0]
    assert "unknown recipient" not in log
    # The legitimate flow after the upgrade: records still serve, and a restart does not
    # upgrade again.
    check_every_record(client_for(upgraded), old)
    upgraded.restart()
    again = [line for line in upgraded.log_text().splitlines() if UPGRADE_LINE in line]
    assert len(again) == 1
    check_every_record(client_for(upgraded), old)


@for_fixture("2e5dec1")
def test_the_pending_rewrap_of_the_key_rotation_finishes(old, tmp_path):
    """The fixture stopped after `keys rotate --handover-only`: its state file and the previous
    identity are there, and the records written before the rollover are wrapped to the previous
    key. Served as they are, then `medgate keys rotate` (the current binary, through the running
    server) resumes 2e5dec1's rotation: it re-wraps exactly those data keys, finds the ones
    written after the rollover done already, and every record still reads byte-identical,
    after a restart too; the log verifies."""
    gw = gateway_on(old, tmp_path)
    old.copy_data(gw.data_dir)
    state = gw.data_dir / "keys-rotate.state"
    assert json.loads(state.read_text()) == {"stage": "rewrap", "new": old.exp["institution"]}
    assert (gw.data_dir / old.exp["previous_identity_file"]).exists()
    gw.start()
    try:
        assert UPGRADE_LINE not in gw.log_text(), "2e5dec1's DEK records are version 2"
        check_every_record(client_for(gw), old)
        _, out, err = cli(gw, "keys", "rotate", "--data-dir", str(gw.data_dir))
        assert "resuming the re-wrap" in err, err
        m = re.search(r"re-wrapped (\d+) data keys \((\d+) already re-wrapped; (\d+) records\)",
                      out)
        assert m, out
        rewrapped, skipped, records = map(int, m.groups())
        before = old.exp["records_before_rotation"]
        assert records == len(old.exp["records"]), out
        # The copy shares the scan's data key.
        assert rewrapped == len(before) - 1, out
        assert skipped == len(old.exp["records"]) - len(before), out
        assert f"institution key rotated: {old.exp['institution']}" in out, out
        assert not state.exists()
        check_every_record(client_for(gw), old)
        gw.restart()
        check_every_record(client_for(gw), old)
        _, out, _ = cli(gw, "verify", "--data-dir", str(gw.data_dir), "--deep")
        assert "verify: OK" in out, out
    finally:
        gw.teardown()
