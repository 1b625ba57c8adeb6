"""Patients and consent on one gateway: patient keys, registration with proof, records
tagged with x-amz-meta-medgate-patient, share requests approved by the patient's
signature, re-wrapping (the recipient decrypts with only its own key and the public
store), refusal of forged, replayed and out-of-scope grants, revocation and expiry."""

from __future__ import annotations

import os
import re
import time

import pytest
from botocore.exceptions import ClientError

from support import MIB, client_for, published_files


def cli(gw, *args, ok=True, env=None):
    cp = gw.run_cli(*args)
    out = cp.stdout.decode(errors="replace")
    err = cp.stderr.decode(errors="replace")
    if ok:
        assert cp.returncode == 0, f"medgate {' '.join(args)} failed:\n{out}\n{err}"
    return cp.returncode, out, err


def keygen(gw, path, institution=None, pid=None):
    args = ["patient", "keygen", "-o", str(path)]
    if institution:
        args += ["--institution", institution, "--id", pid]
    _, out, _ = cli(gw, *args)
    lines = out.strip().splitlines()
    recipient = lines[-1].split()[-1]  # the labelled last line ends with the key
    assert recipient.startswith("medgate1")
    proof = next((l.split(": ", 1)[1] for l in lines if l.startswith("proof: ")), None)
    return recipient, proof


def institution(gw):
    return cli(gw, "keys", "--data-dir", str(gw.data_dir))[1].strip().splitlines()[-1]


def register(gw, tmp_path, pid):
    inst = institution(gw)
    key = tmp_path / f"{pid}.key"
    recipient, proof = keygen(gw, key, inst, pid)
    cli(gw, "patient", "register", "--data-dir", str(gw.data_dir), "--id", pid,
        "--recipient", recipient, "--proof", proof)
    return key, recipient


def request(gw, pid, recipient, *scope, expires="1h"):
    _, out, _ = cli(gw, "share", "request", "--data-dir", str(gw.data_dir), "--patient", pid,
                    "--recipient", recipient, *scope, "--requester", "Dr. Who, cardiology",
                    "--purpose", "second opinion", "--purpose-code", "TREAT",
                    "--expires-in", expires)
    return out.strip().splitlines()[-1]


def approve(gw, key, req_id, ok=True):
    return cli(gw, "patient", "approve", "--data-dir", str(gw.data_dir), "--identity", str(key),
               req_id, "--yes", ok=ok)


def fetch(gw, key, grant, obj, out, ok=True):
    return cli(gw, "share", "fetch", "--data-dir", str(gw.data_dir), "--identity", str(key),
               "--grant", grant, "--object", obj, "-o", str(out), ok=ok)


def grant_id(approve_out: str) -> str:
    m = re.search(r"grant ([0-9a-f]{32})", approve_out)
    assert m, approve_out
    return m.group(1)


def test_patient_registration_and_tagged_records(gateway, tmp_path):
    gw = gateway
    key, recipient = register(gw, tmp_path, "p-1001")
    # A proof made for another id, or no valid proof, is refused.
    other = tmp_path / "other.key"
    r2, proof2 = keygen(gw, other, institution(gw), "p-1002")
    rc, _, err = cli(gw, "patient", "register", "--data-dir", str(gw.data_dir), "--id", "p-9999",
                     "--recipient", r2, "--proof", proof2, ok=False)
    assert rc != 0 and "proof does not verify" in err
    # Registering the same id twice is refused (a key change needs the old key).
    rc, _, err = cli(gw, "patient", "register", "--data-dir", str(gw.data_dir), "--id", "p-1001",
                     "--recipient", r2, "--proof", proof2, ok=False)
    assert rc != 0

    s3 = client_for(gw)
    s3.create_bucket(Bucket="ehr")
    s3.put_object(Bucket="ehr", Key="p-1001/note.txt", Body=b"hello",
                  Metadata={"medgate-patient": "p-1001"})
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="ehr", Key="x", Body=b"x", Metadata={"medgate-patient": "nobody"})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    assert "unknown patient" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        s3.create_multipart_upload(Bucket="ehr", Key="y", Metadata={"medgate-patient": "nobody"})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"
    _, out, _ = cli(gw, "patient", "show", "--data-dir", str(gw.data_dir), "--id", "p-1001")
    assert "records:    1" in out
    _, out, _ = cli(gw, "patient", "list", "--data-dir", str(gw.data_dir))
    assert "p-1001" in out and recipient in out


def test_share_approve_fetch_revoke(gateway, tmp_path):
    gw = gateway
    alice_key, _ = register(gw, tmp_path, "alice")
    bob_key, _ = register(gw, tmp_path, "bob")
    reader_key = tmp_path / "reader.key"
    reader, _ = keygen(gw, reader_key)

    s3 = client_for(gw)
    s3.create_bucket(Bucket="pacs")
    scan = os.urandom(6 * MIB + 5)
    s3.put_object(Bucket="pacs", Key="alice/ct.dcm", Body=scan,
                  Metadata={"medgate-patient": "alice"})
    s3.put_object(Bucket="pacs", Key="alice/xray.dcm", Body=b"x" * 1000,
                  Metadata={"medgate-patient": "alice"})
    # Bob's record under alice's prefix: a prefix never reaches another patient's record.
    s3.put_object(Bucket="pacs", Key="alice/misfiled-bob.dcm", Body=b"bob's",
                  Metadata={"medgate-patient": "bob"})
    s3.put_object(Bucket="pacs", Key="alice/untagged.dcm", Body=b"nobody's")

    # Multipart records are tagged too.
    up = s3.create_multipart_upload(Bucket="pacs", Key="alice/mri.dcm",
                                    Metadata={"medgate-patient": "alice"})
    parts = [os.urandom(5 * MIB), os.urandom(100)]
    etags = [s3.upload_part(Bucket="pacs", Key="alice/mri.dcm", UploadId=up["UploadId"],
                            PartNumber=i + 1, Body=p)["ETag"] for i, p in enumerate(parts)]
    s3.complete_multipart_upload(Bucket="pacs", Key="alice/mri.dcm", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": t}
                                                            for i, t in enumerate(etags)]})

    req = request(gw, "alice", reader, "--bucket", "pacs", "--prefix", "alice/")
    _, out, _ = cli(gw, "patient", "requests", "--data-dir", str(gw.data_dir),
                    "--identity", str(alice_key))
    assert req in out and "second opinion" in out
    assert "NOT one of this gateway's configured peers" in out
    # Bob cannot approve alice's request.
    rc, _, err = approve(gw, bob_key, req, ok=False)
    assert rc != 0 and "not about you" in err

    # Before approval the reader has no key.
    rc, _, err = fetch(gw, reader_key, "0" * 32, "pacs/alice/ct.dcm", tmp_path / "no", ok=False)
    assert rc != 0

    _, out, _ = approve(gw, alice_key, req)
    gid = grant_id(out)
    assert "3 records shared" in out, out  # ct, xray, mri; not bob's, not the untagged one

    got = tmp_path / "ct.dcm"
    fetch(gw, reader_key, gid, "pacs/alice/ct.dcm", got)
    assert got.read_bytes() == scan
    fetch(gw, reader_key, gid, "pacs/alice/mri.dcm", tmp_path / "mri.dcm")
    assert (tmp_path / "mri.dcm").read_bytes() == b"".join(parts)
    rc, _, err = fetch(gw, reader_key, gid, "pacs/alice/misfiled-bob.dcm", tmp_path / "b",
                       ok=False)
    assert rc != 0 and "not covered" in err
    assert not (tmp_path / "b").exists()

    # The same grant replayed, or the request approved again, is refused.
    rc, _, err = approve(gw, alice_key, req, ok=False)
    assert rc != 0 and "already" in err

    # Revocation: the reader's keys are gone at once.
    cli(gw, "patient", "revoke", "--data-dir", str(gw.data_dir), "--identity", str(alice_key), gid)
    rc, _, err = fetch(gw, reader_key, gid, "pacs/alice/ct.dcm", tmp_path / "again", ok=False)
    assert rc != 0 and "revoked" in err

    _, out, _ = cli(gw, "share", "events", "--data-dir", str(gw.data_dir), "--patient", "alice")
    for kind in ("patient-register", "share-request", "grant", "rewrap", "read", "revocation",
                 "grant-refused"):
        assert f"\t{kind}\t" in out, (kind, out)


def test_forged_and_expired_grants_are_refused(gateway, tmp_path):
    """Grants are checked by the gateway, not trusted from the channel: a grant signed by
    the wrong key is refused; an expired grant stops working with nobody acting."""
    gw = gateway
    carol_key, _ = register(gw, tmp_path, "carol")
    mallory_key = tmp_path / "mallory.key"
    keygen(gw, mallory_key)
    reader_key = tmp_path / "reader.key"
    reader, _ = keygen(gw, reader_key)
    s3 = client_for(gw)
    s3.create_bucket(Bucket="labs")
    s3.put_object(Bucket="labs", Key="carol/a1c.json", Body=b'{"a1c": 6.1}',
                  Metadata={"medgate-patient": "carol"})

    req = request(gw, "carol", reader, "--object", "labs/carol/a1c.json")
    # Mallory is not a registered patient: the CLI cannot even find her.
    rc, _, err = approve(gw, mallory_key, req, ok=False)
    assert rc != 0 and "no patient is registered with this key" in err

    short = request(gw, "carol", reader, "--object", "labs/carol/a1c.json", expires="3s")
    _, out, _ = approve(gw, carol_key, short)
    gid = grant_id(out)
    fetch(gw, reader_key, gid, "labs/carol/a1c.json", tmp_path / "a1c.json")
    assert (tmp_path / "a1c.json").read_bytes() == b'{"a1c": 6.1}'
    time.sleep(3.5)
    rc, _, err = fetch(gw, reader_key, gid, "labs/carol/a1c.json", tmp_path / "late", ok=False)
    assert rc != 0 and "expired" in err


def pull(gw, key, inst, out, ok=True):
    return cli(gw, "patient", "pull", "--identity", str(key), "--institution", inst,
               "--public-store", str(gw.public_dir), "--out", str(out), ok=ok)


def index_files(gw):
    return published_files(gw.public_dir / "v1" / "p")


def test_patient_pull_with_the_gateway_stopped(gateway, tmp_path):
    """The patient recovers every record with only their key and read access to the
    public store; a forged or rolled-back index is refused."""
    gw = gateway
    inst = institution(gw)
    key, _ = register(gw, tmp_path, "dana")
    s3 = client_for(gw)
    s3.create_bucket(Bucket="records")
    files = {
        "dana/visit-1.txt": b"blood pressure 120/80",
        "dana/scans/ct.dcm": os.urandom(3 * MIB + 11),
        "dana/empty": b"",
    }
    for k, v in files.items():
        s3.put_object(Bucket="records", Key=k, Body=v, Metadata={"medgate-patient": "dana"})
    s3.put_object(Bucket="records", Key="someone-else", Body=b"no")
    # Batched publication: one index file for dana appears within a few seconds.
    deadline = time.monotonic() + 15
    while not index_files(gw) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(index_files(gw)) == 1
    gw.stop()  # publishes what is pending, then exits

    out = tmp_path / "pulled"
    _, stdout, _ = pull(gw, key, inst, out)
    assert "3 records, 3 verified" in stdout, stdout
    for k, v in files.items():
        assert (out / "records" / k).read_bytes() == v, k
    assert not (out / "records" / "someone-else").exists()
    old_index = index_files(gw)[0].read_bytes()

    # Another institution's key: no index under that name.
    other_inst, _ = keygen(gw, tmp_path / "other-inst.key")
    rc, _, err = pull(gw, key, other_inst, tmp_path / "x", ok=False)
    assert rc != 0 and "no index for you" in err

    # A newer index, then the old one put back: refused as a rollback.
    gw.start()
    s3.put_object(Bucket="records", Key="dana/visit-2.txt", Body=b"second visit",
                  Metadata={"medgate-patient": "dana"})
    gw.stop()
    _, stdout, _ = pull(gw, key, inst, out)
    assert "4 records, 4 verified" in stdout, stdout
    path = index_files(gw)[0]
    current = path.read_bytes()
    path.write_bytes(old_index)
    rc, _, err = pull(gw, key, inst, out, ok=False)
    assert rc != 0 and "rolled-back" in err, err
    # A flipped byte: refused as forged.
    forged = bytearray(current)
    forged[200] ^= 1
    path.write_bytes(bytes(forged))
    rc, _, err = pull(gw, key, inst, out, ok=False)
    assert rc != 0 and "forged" in err, err
    # A tampered blob is named and not written.
    path.write_bytes(current)
    blob = max((p for p in (gw.public_dir / "v1" / "b").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    raw = bytearray(blob.read_bytes())
    raw[10] ^= 1
    blob.write_bytes(bytes(raw))
    out2 = tmp_path / "pulled-again"
    rc, stdout, err = pull(gw, key, inst, out2, ok=False)
    assert rc != 0 and "FAILED\trecords/dana/scans/ct.dcm" in err, err
    assert not (out2 / "records" / "dana" / "scans" / "ct.dcm").exists()
    assert (out2 / "records" / "dana" / "visit-1.txt").read_bytes() == files["dana/visit-1.txt"]


def test_patient_rekey(gateway, tmp_path):
    """A patient replaces a key with the old key's signature; records follow the new key."""
    gw = gateway
    inst = institution(gw)
    old_key, _ = register(gw, tmp_path, "erin")
    new_key = tmp_path / "erin-new.key"
    keygen(gw, new_key)
    s3 = client_for(gw)
    s3.create_bucket(Bucket="rekey")
    s3.put_object(Bucket="rekey", Key="erin/a", Body=b"alpha", Metadata={"medgate-patient": "erin"})
    deadline = time.monotonic() + 15
    while not index_files(gw) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(index_files(gw)) == 1, "erin's index was not published"
    before = index_files(gw)
    # Someone without the old key cannot move erin's records to their key.
    thief = tmp_path / "thief.key"
    keygen(gw, thief)
    rc, _, err = cli(gw, "patient", "rekey", "--data-dir", str(gw.data_dir), "--identity",
                     str(thief), "--new-identity", str(thief), "--institution", inst,
                     "--id", "erin", ok=False)
    assert rc != 0 and "key change" in err
    _, out, _ = cli(gw, "patient", "rekey", "--data-dir", str(gw.data_dir), "--identity",
                    str(old_key), "--new-identity", str(new_key), "--institution", inst,
                    "--id", "erin")
    assert "1 records re-wrapped" in out
    after = index_files(gw)
    assert len(after) == 1 and after != before, "the index must move to the new key's name"
    gw.stop()
    _, out, _ = pull(gw, new_key, inst, tmp_path / "new")
    assert (tmp_path / "new" / "rekey" / "erin" / "a").read_bytes() == b"alpha"
    rc, _, err = pull(gw, old_key, inst, tmp_path / "old", ok=False)
    assert rc != 0 and "no index for you" in err


def test_break_glass_key_change_is_logged(gateway, tmp_path):
    """A patient who lost their key gets a new one without the old key's signature only
    through the logged break-glass procedure: the new key's proof and a reason are
    required, the records move to the new key, and the log says who did it and why."""
    gw = gateway
    inst = institution(gw)
    register(gw, tmp_path, "frank")
    lost = tmp_path / "frank.key"
    s3 = client_for(gw)
    s3.create_bucket(Bucket="breakglass")
    s3.put_object(Bucket="breakglass", Key="frank/a", Body=b"alpha", Metadata={"medgate-patient": "frank"})
    new_key = tmp_path / "frank-new.key"
    new_recipient, new_proof = keygen(gw, new_key, inst, "frank")
    _, wrong_proof = keygen(gw, tmp_path / "other.key", inst, "frank")
    base = ["patient", "break-glass", "--data-dir", str(gw.data_dir), "--id", "frank",
            "--recipient", new_recipient, "--admin", "ops-oncall"]
    rc, _, err = cli(gw, *base, "--proof", new_proof, "--reason", "lost", ok=False)
    assert rc != 0 and "reason of at least 10 characters" in err
    rc, _, err = cli(gw, *base, "--proof", wrong_proof, "--reason", "identity checked at desk",
                     ok=False)
    assert rc != 0 and "proof does not verify" in err
    _, out, _ = cli(gw, *base, "--proof", new_proof, "--reason", "identity checked at desk #4711")
    assert "1 records re-wrapped" in out and "break glass" in out
    _, out, _ = cli(gw, "share", "events", "--data-dir", str(gw.data_dir), "--patient", "frank")
    line = next(l for l in out.splitlines() if "\tkey-break-glass\t" in l)
    assert "admin:ops-oncall" in line and "identity checked at desk #4711" in line
    gw.stop()
    pull(gw, new_key, inst, tmp_path / "new")
    assert (tmp_path / "new" / "breakglass" / "frank" / "a").read_bytes() == b"alpha"
    rc, _, err = pull(gw, lost, inst, tmp_path / "old", ok=False)
    assert rc != 0 and "no index for you" in err
