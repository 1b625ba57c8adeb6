"""`medgate rotate`: records get new data keys and new blobs; every copy moves with them;
the patient and grants in force keep access; old blobs become gc's; an interrupted rotation
resumes where it stopped."""

from __future__ import annotations

import json
import os
import re

import requests

from support import MIB, client_for, get_bytes

from test_sharing import cli, grant_id, institution, keygen, register, request


def blob_files(gw) -> set[str]:
    return {p for p in gw.public_files() if p.startswith("v1/b/")}


def log_size(gw) -> int:
    r = requests.get(gw.api_endpoint + "/v1/admin/events?from=0&limit=1000000", timeout=30,
                     headers={"Authorization": "Bearer " + gw.admin_token()})
    assert r.status_code == 200, r.text
    return len(r.json()["events"])


def test_rotate_prefix_keeps_every_reader_and_resumes(gateway, tmp_path):
    gw = gateway
    alice_key, _ = register(gw, tmp_path, "alice")
    reader_key = tmp_path / "reader.key"
    reader, _ = keygen(gw, reader_key)
    s3 = client_for(gw)
    s3.create_bucket(Bucket="ehr")
    bodies = {"alice/ct.dcm": os.urandom(3 * MIB + 7), "alice/note.txt": b"note " * 1000,
              "alice/lab.json": b'{"a1c": 6.1}'}
    for k, v in bodies.items():
        s3.put_object(Bucket="ehr", Key=k, Body=v, Metadata={"medgate-patient": "alice"})
    s3.copy_object(Bucket="ehr", Key="archive/ct-copy.dcm",
                   CopySource={"Bucket": "ehr", "Key": "alice/ct.dcm"})
    etags = {k: s3.head_object(Bucket="ehr", Key=k)["ETag"] for k in bodies}
    req = request(gw, "alice", reader, "--bucket", "ehr", "--prefix", "alice/")
    _, out, _ = cli(gw, "patient", "approve", "--data-dir", str(gw.data_dir),
                    "--identity", str(alice_key), req, "--yes")
    gid = grant_id(out)
    before = blob_files(gw)

    # An interrupted prefix rotation: it had rotated alice/lab.json when it stopped.
    start = log_size(gw)
    cli(gw, "rotate", "--data-dir", str(gw.data_dir), "--object", "ehr/alice/lab.json",
        "--state", str(tmp_path / "one.json"))
    state = tmp_path / "rotate.json"
    state.write_text(json.dumps({"scope": {"scope": "prefix", "bucket": "ehr",
                                           "prefix": "alice/"}, "since": start}))
    _, out, err = cli(gw, "rotate", "--data-dir", str(gw.data_dir), "--bucket", "ehr",
                      "--prefix", "alice/", "--state", str(state))
    assert "resuming" in err
    m = re.search(r"rotated (\d+) data keys \((\d+) manifests moved.*; (\d+) already rotated", out)
    assert m, out
    # ct (with its copy: 2 manifests) and note; lab.json was done by the first run.
    assert (int(m.group(1)), int(m.group(2)), int(m.group(3))) == (2, 3, 1), out
    assert not state.exists(), "a finished rotation forgets its state"

    # Same content, ETags and metadata; new blobs; the copy moved too.
    after = blob_files(gw)
    assert len(after - before) == 3, (before, after)  # one new blob per data key
    for k, v in bodies.items():
        assert get_bytes(s3, "ehr", k) == v
        assert s3.head_object(Bucket="ehr", Key=k)["ETag"] == etags[k]
    assert get_bytes(s3, "ehr", "archive/ct-copy.dcm") == bodies["alice/ct.dcm"]
    cli(gw, "gc", "--data-dir", str(gw.data_dir), "--grace", "0s", "--apply")
    assert not (blob_files(gw) & before), "the old blobs are garbage after rotation"
    for k, v in bodies.items():
        assert get_bytes(s3, "ehr", k) == v
    assert get_bytes(s3, "ehr", "archive/ct-copy.dcm") == bodies["alice/ct.dcm"]

    # The grant in force still reads (its key was re-wrapped), the log is consistent.
    out_file = tmp_path / "ct.out"
    cli(gw, "share", "fetch", "--data-dir", str(gw.data_dir), "--identity", str(reader_key),
        "--grant", gid, "--object", "ehr/alice/ct.dcm", "-o", str(out_file))
    assert out_file.read_bytes() == bodies["alice/ct.dcm"]
    _, out, _ = cli(gw, "verify", "--data-dir", str(gw.data_dir), "--deep")
    assert "verify: OK" in out
    _, out, _ = cli(gw, "share", "events", "--data-dir", str(gw.data_dir), "--patient", "alice")
    assert out.count("\trotate\t") == 4, out  # lab, ct, its copy (still alice's), note

    # And the patient, from the public store alone, with the gateway stopped.
    inst = institution(gw)
    gw.stop()
    cli(gw, "patient", "pull", "--identity", str(alice_key), "--institution", inst,
        "--public-store", str(gw.public_dir), "--out", str(tmp_path / "pulled"))
    for k, v in bodies.items():
        assert (tmp_path / "pulled" / "ehr" / k).read_bytes() == v
