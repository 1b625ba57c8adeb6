"""`medgate keys rotate`: hospital A replaces its institution key.

A hands over offline (a rollover signed by the old and the new key, logged and published at
v1/rollover/1, checkpoints signed by the new key under the same origin), starts again, and
re-wraps its records through the running server; the server is killed part way and the
re-wrap resumes. Afterwards every record reads byte-identical over S3, `medgate verify`
passes, the patient pulls with the key they knew, and B, witnessing A's log with A's old key
pinned, follows the rollover, and so does B's mount of a record A shares with it (B pins A's
old key in its config; it keeps the new pin in its private store and says so at start).
Beside it, the attacks: a rollover made by another institution's key (C's, copied into A's
public store, so A's own API serves it) is refused by B's mount and, with C's checkpoint, by
the witness as a fork.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from support import client_for, get_bytes

from test_sharing import cli, institution
from test_two_gateways import (  # noqa: F401 (two is a fixture)
    get_denied, grant_of, mount, patient, register_at, two, wait_api)


def wait_checkpoint_size(gw, at_least: int, timeout: float = 20) -> str:
    path = gw.public_dir / "v1" / "log" / "checkpoint"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if int(text.splitlines()[1]) >= at_least:
                return text
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of size >= {at_least}; log:\n{gw.log_tail()}")


def read_all(gw, bodies):
    s3 = client_for(gw)
    for k, v in bodies.items():
        assert get_bytes(s3, "ehr", k) == v, k


def test_key_rotate_hands_over_rewraps_and_witness_follows(two, gateway_factory, aws,
                                                            tmp_path):
    a, b, old = two
    # C, another institution, rotates its own key: its rollover is the attacker's material.
    c = gateway_factory()
    cs3 = client_for(c)
    cs3.create_bucket(Bucket="xrays")
    cs3.put_object(Bucket="xrays", Key="y", Body=b"z")
    wait_checkpoint_size(c, 1)
    c.stop()
    cli(c, "keys", "rotate", "--data-dir", str(c.data_dir))

    alice_key = register_at(a, tmp_path, "alice")
    s3 = client_for(a)
    s3.create_bucket(Bucket="ehr")
    bodies = {f"alice/n{i:03}.txt": f"note {i}\n".encode() * (i + 1) for i in range(150)}
    bodies["alice/ct.dcm"] = os.urandom(2 * 1024 * 1024 + 5)
    for k, v in bodies.items():
        s3.put_object(Bucket="ehr", Key=k, Body=v, Metadata={"medgate-patient": "alice"})
    s3.copy_object(Bucket="ehr", Key="archive/ct-copy.dcm",
                   CopySource={"Bucket": "ehr", "Key": "alice/ct.dcm"})
    bodies["archive/ct-copy.dcm"] = bodies["alice/ct.dcm"]
    # Enough records that the re-wrap is still running when the server is killed.
    bulk = {f"bulk/r{i:05}": os.urandom(64) for i in range(2500)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket="ehr", Key=kv[0], Body=kv[1]),
                      bulk.items()))
    bodies.update(bulk)

    # B mounts alice's records from A (the patient approves at A) and reads one.
    req = mount(b, "from-a", "--all")
    _, out, _ = patient(a, "approve", "--identity", str(alice_key), req, "--yes")
    grant_of(out)
    aws(b, "s3", "cp", "s3://from-a/ehr/alice/n007.txt", str(tmp_path / "n7.out"))
    assert (tmp_path / "n7.out").read_bytes() == bodies["alice/n007.txt"]

    # B witnesses A's log with A's key pinned.
    state = tmp_path / "witness.json"
    witness = ["log", "witness", "--identity", str(b.data_dir / "institution.key"),
               "--institution", old, "--public-store", str(a.public_dir),
               "--gateway", a.api_endpoint, "--state", str(state)]
    wait_checkpoint_size(a, len(bodies))
    time.sleep(1.5)
    cli(b, *witness)
    origin_before = wait_checkpoint_size(a, 1).splitlines()[0]

    # The handover, with A stopped (a running server is refused).
    rc, _, err = cli(a, "keys", "rotate", "--data-dir", str(a.data_dir), ok=False)
    assert rc != 0 and "stop it first" in err, err
    a.stop()
    _, out, err = cli(a, "keys", "rotate", "--data-dir", str(a.data_dir), "--handover-only")
    assert "handed over" in out, out + err
    new = institution(a)
    assert new != old and new.startswith("medgate1")
    assert (a.public_dir / "v1" / "rollover" / "1").exists()
    olds = list(a.data_dir.glob("institution.key.old-*"))
    assert len(olds) == 1
    note = (a.public_dir / "v1" / "log" / "checkpoint").read_text()
    assert note.splitlines()[0] == origin_before, "the origin must not change"
    _, out, _ = cli(a, "keys", "show", "--data-dir", str(a.data_dir))
    assert f"recipient: {new}" in out and "rollover 1:" in out, out

    # Attack on B: the cloud swaps A's rollover for C's (A's API serves what its public
    # store holds). B pins A's old key: C's rollover is not signed by it, so B refuses the
    # answers signed by A's new key, and reads nothing.
    real_rollover = (a.public_dir / "v1" / "rollover" / "1").read_bytes()
    shutil.copy(c.public_dir / "v1" / "rollover" / "1", a.public_dir / "v1" / "rollover" / "1")
    a.start()
    wait_api(a)
    get_denied(aws, b, "from-a", "ehr/alice/ct.dcm", tmp_path / "ct-forged")
    assert "key rollover refused" in b.log_text() or "answer refused" in b.log_text(), \
        b.log_tail()
    (a.public_dir / "v1" / "rollover" / "1").write_bytes(real_rollover)

    # Records not yet re-wrapped still open (the old identity is kept).
    read_all(a, bodies)

    # The re-wrap through the server; the server is killed part way.
    rotate = subprocess.Popen([*a.argv()[:1], "keys", "rotate", "--data-dir", str(a.data_dir)],
                              env=a.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Killed once the job reports progress part way (a line per 5 % without a terminal).
    seen = []
    for line in rotate.stderr:
        seen.append(line)
        m = re.match(rb"re-wrapping: (\d+)/(\d+) records", line)
        if m and 0 < int(m.group(1)) < int(m.group(2)):
            break
    a.kill9()
    out, err = rotate.communicate(timeout=120)
    out, err = out.decode(), b"".join(seen).decode() + err.decode()
    # The command found the server gone, opened the store itself and resumed: what the
    # killed server had re-wrapped (and flushed) is skipped.
    assert rotate.returncode == 0, out + err
    assert "no server running: opened the store" in err, err
    m = re.search(r"re-wrapped (\d+) data keys \((\d+) already re-wrapped; (\d+) records\)", out)
    assert m, out
    rewrapped, skipped, records = map(int, m.groups())
    assert records == len(bodies)
    assert rewrapped + skipped == len(bodies) - 1  # the copy shares the CT's key
    assert skipped > 0, "nothing had been re-wrapped when the server was killed"
    a.start()
    wait_api(a)
    assert not (a.data_dir / "keys-rotate.state").exists()

    # Every record byte-identical; the log verifies; new writes are signed by the new key.
    read_all(a, bodies)
    s3 = client_for(a)
    s3.put_object(Bucket="ehr", Key="alice/after.txt", Body=b"after the rotation",
                  Metadata={"medgate-patient": "alice"})
    bodies["alice/after.txt"] = b"after the rotation"
    _, out, _ = cli(a, "verify", "--data-dir", str(a.data_dir))
    assert "verify: OK" in out, out

    # B follows the real rollover (signed by the key it pinned) and its mount keeps working;
    # the new pin survives a restart, with a warning to update the config.
    aws(b, "s3", "cp", "s3://from-a/ehr/alice/ct.dcm", str(tmp_path / "ct.out"))
    assert (tmp_path / "ct.out").read_bytes() == bodies["alice/ct.dcm"]
    assert f"update [[peers]] recipient to {new}" in b.log_text(), b.log_tail()
    b.restart()
    wait_api(b)
    run = b.log_text().rsplit("===== run", 1)[-1]
    assert f"peer hospital-a rotated its key: update [[peers]] recipient to {new}" in run, run
    aws(b, "s3", "cp", "s3://from-a/ehr/alice/n042.txt", str(tmp_path / "n42.out"))
    assert (tmp_path / "n42.out").read_bytes() == bodies["alice/n042.txt"]

    # The patient's audit, with the institution key they knew: every entry about them in the
    # log published under the new key, same origin.
    time.sleep(1.5)
    _, out, _ = patient(a, "audit", "--identity", str(alice_key), "--institution", old,
                        "--public-store", str(a.public_dir),
                        "--state", str(tmp_path / "audit.json"))
    assert "in order and without gaps" in out, out

    # The witness follows the rollover signed by the key it pinned.
    time.sleep(2.5)
    _, _, err = cli(b, *witness)
    assert "rolled its key over" in err, err
    st = json.loads(state.read_text())
    assert st["key"] == new
    assert "medgate.witness/" in (a.public_dir / "v1" / "log" / "checkpoint").read_text()

    # The patient pulls with the institution key they knew, gateway down.
    a.stop()
    _, _, err = cli(a, "patient", "pull", "--identity", str(alice_key), "--institution", old,
                    "--public-store", str(a.public_dir), "--out", str(tmp_path / "pulled"))
    assert "rolled its key over" in err, err
    for k, v in bodies.items():
        if k.startswith("alice/"):
            assert (tmp_path / "pulled" / "ehr" / k).read_bytes() == v, k

    # The attack on the witness: C's rollover and checkpoint in A's public store. The
    # witness pinned A's key: a fork, refused.
    saved = {p: (a.public_dir / p).read_bytes()
             for p in ("v1/rollover/1", "v1/log/checkpoint")}
    fresh = tmp_path / "fresh-witness.json"
    for p in saved:
        shutil.copy(c.public_dir / p, a.public_dir / p)
    before = state.read_text()
    rc, _, err = cli(b, *witness, ok=False)
    assert rc != 0 and "fork" in err, err
    assert state.read_text() == before, "nothing is cosigned or re-pinned"
    # A witness starting fresh with A's old key pinned refuses it too.
    fresh_witness = [*witness[:-1], str(fresh)]
    rc, _, err = cli(b, *fresh_witness, ok=False)
    assert rc != 0 and "fork" in err, err
    # The legitimate files back: the witness carries on.
    for p, data in saved.items():
        (a.public_dir / p).write_bytes(data)
    a.start()
    wait_api(a)
    cli(b, *witness)


def test_a_backup_taken_before_the_rewrap_ends_restores_every_record(gateway_factory,
                                                                       tmp_path):
    """A backup taken between the handover and the end of the re-wrap carries the previous
    identity and the rotation's state: after a restore every record opens, those still
    wrapped to the previous key included, and `keys rotate` finishes the re-wrap there.
    Beside it, the restored dir without its previous identity serves the records written
    after the handover and refuses the older ones with a message naming the missing file."""
    from botocore.exceptions import ClientError

    from test_backup import keygen as recovery_keygen

    gw = gateway_factory()
    s3 = client_for(gw)
    s3.create_bucket(Bucket="ehr")
    bodies = {f"before/{i}": os.urandom(3000 + i) for i in range(5)}
    for k, v in bodies.items():
        s3.put_object(Bucket="ehr", Key=k, Body=v)
    wait_checkpoint_size(gw, len(bodies))
    gw.stop()
    _, out, err = cli(gw, "keys", "rotate", "--data-dir", str(gw.data_dir), "--handover-only")
    assert "handed over" in out, out + err
    gw.start()
    s3 = client_for(gw)
    s3.put_object(Bucket="ehr", Key="after/1", Body=b"written under the new key")
    bodies["after/1"] = b"written under the new key"

    recovery = tmp_path / "recovery.key"
    recipient = recovery_keygen(gw, recovery)
    out_file = tmp_path / "backups" / "mid-rotation.mgb"
    out_file.parent.mkdir()
    cp = gw.run_cli("backup", "--data-dir", str(gw.data_dir), "--out", str(out_file),
                    "--recipient", recipient)
    assert cp.returncode == 0 and b"through the running server" in cp.stderr, cp.stderr
    assert b"MEDGATE-SECRET-KEY" not in out_file.read_bytes().upper()
    gw.stop()

    restored = tmp_path / "restored" / "data"
    cp = gw.run_cli("restore", str(out_file), "--data-dir", str(restored),
                    "--identity", str(recovery), "--institution", institution(gw),
                    "--public-store", str(gw.public_dir))
    assert cp.returncode == 0, cp.stderr.decode()
    olds = sorted(p.name for p in gw.data_dir.glob("institution.key.old-*"))
    assert len(olds) == 1
    assert sorted(p.name for p in restored.glob("institution.key.old-*")) == olds
    for name in [*olds, "keys-rotate.state", "institution.key"]:
        assert (restored / name).read_bytes() == (gw.data_dir / name).read_bytes(), name

    gw2 = gateway_factory(start=False, public_store=f"file://{gw.public_dir}")
    gw2.data_dir = restored
    gw2.secret_access_key = gw.secret_access_key
    gw2.start()
    s3b = client_for(gw2)
    for k, v in bodies.items():
        assert get_bytes(s3b, "ehr", k) == v, k

    # Without the previous identity: the new record opens, the old ones are refused with a
    # message that says what is missing (not "integrity").
    gw2.stop()
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in olds:
        shutil.move(restored / name, aside / name)
    gw2.start()
    s3b = client_for(gw2)
    assert get_bytes(s3b, "ehr", "after/1") == bodies["after/1"]
    try:
        s3b.get_object(Bucket="ehr", Key="before/0")["Body"].read()
        raise AssertionError("a record wrapped to the missing key was served")
    except ClientError as e:
        err = e.response["Error"]
        assert err["Code"] == "InternalError", err
        assert "institution.key.old-" in err["Message"], err
        assert "integrity" not in err["Message"], err
    gw2.stop()
    for name in olds:
        shutil.move(aside / name, restored / name)

    # The rotation resumes on the restored dir and ends; every record still reads.
    _, out, err = cli(gw2, "keys", "rotate", "--data-dir", str(restored))
    assert "re-wrapped" in out, out + err
    assert not (restored / "keys-rotate.state").exists()
    gw2.start()
    s3b = client_for(gw2)
    for k, v in bodies.items():
        assert get_bytes(s3b, "ehr", k) == v, k
