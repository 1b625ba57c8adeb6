"""Attacks on what the public store sees of patient indexes (issue 13, item 13): which index
file a write rewrites, when, and how large it is.

The public store (the cloud) watches `v1/p/`. Before index v2, a patient's index was the one
file rewritten about a second after their write, it grew with every record, and its sequence
number sat in the clear: the cloud linked a write (and its blobs) to one pseudonymous index
file and counted that patient's records and versions. Now a publication tick rewrites the
changed indexes together with randomly chosen unchanged ones (at least 32, or all), every
index is padded to a power-of-two bucket from 4 KiB, and the number is sealed.

The legitimate flow runs beside the attack: the patient whose record changed pulls it back
byte-identical with the gateway stopped, and so does a patient whose index was only rewritten
as cover. Run against the e15ed43 binary (MEDGATE_BIN) the attack succeeds (one file
rewritten, sizes off-bucket, the index grows, the numbers differ in the clear), so the test
fails.
"""

from __future__ import annotations

import os
import time

from support import Gateway, client_for, published_bytes
from test_sharing import cli, keygen

PATIENTS = 40
TARGET = "p17"
BUCKETS = {4096 << k for k in range(20)}


def index_dir(gw: Gateway):
    return gw.public_dir / "v1" / "p"


def observe(gw: Gateway) -> dict[str, bytes]:
    """What the cloud sees: every index file, by name."""
    return published_bytes(index_dir(gw))


def settle(gw: Gateway, want: int, quiet: float = 2.5, timeout: float = 60.0) -> dict[str, bytes]:
    """Waits until `want` index files exist and nothing changed for `quiet` seconds (more than
    the 1 s tick the tests run with): one tick's writes are complete."""
    deadline = time.monotonic() + timeout
    last, since = observe(gw), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = observe(gw)
        if now != last:
            last, since = now, time.monotonic()
        elif len(now) == want and time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"index files did not settle at {want}: {len(last)} files")


def pull(gw: Gateway, key, inst: str, out):
    return cli(gw, "patient", "pull", "--identity", str(key), "--institution", inst,
               "--public-store", str(gw.public_dir), "--out", str(out))


def test_index_publication_does_not_single_out_the_writer(gateway_factory, tmp_path):
    gw = gateway_factory()
    inst = cli(gw, "keys", "--data-dir", str(gw.data_dir))[1].strip().splitlines()[-1]
    s3 = client_for(gw)
    s3.create_bucket(Bucket="ehr")
    keys, records = {}, {}
    for i in range(PATIENTS):
        pid = f"p{i:02}"
        keys[pid] = tmp_path / f"{pid}.key"
        recipient, proof = keygen(gw, keys[pid], inst, pid)
        cli(gw, "patient", "register", "--data-dir", str(gw.data_dir), "--id", pid,
            "--recipient", recipient, "--proof", proof)
        records[(pid, f"{pid}/visit-1.txt")] = f"first visit of {pid}".encode()
    for (pid, key), body in records.items():
        s3.put_object(Bucket="ehr", Key=key, Body=body, Metadata={"medgate-patient": pid})
    before = settle(gw, PATIENTS)

    # The patient writes a record; the cloud watches which index files change.
    new_key = f"{TARGET}/scans/ct.dcm"
    records[(TARGET, new_key)] = os.urandom(70_000)
    s3.put_object(Bucket="ehr", Key=new_key, Body=records[(TARGET, new_key)],
                  Metadata={"medgate-patient": TARGET})
    after = settle(gw, PATIENTS)
    rewritten = {n for n in after if after[n] != before[n]}
    assert rewritten, "no index was rewritten after the write"
    assert len(rewritten) >= 32, \
        f"only {len(rewritten)} index file(s) rewritten with the write: the cloud links the " \
        f"write to {sorted(rewritten)[:3]}"

    # Sizes: every index in a bucket, and the writer's did not grow with its second record.
    sizes = {n: len(b) for n, b in after.items()}
    off = {n: s for n, s in sizes.items() if s not in BUCKETS}
    assert not off, f"index sizes outside the buckets: {sorted(set(off.values()))[:5]}"
    grew = {n for n in rewritten if len(after[n]) != len(before[n])}
    assert not grew, f"{len(grew)} rewritten index(es) changed size with the write"

    # No sequence number in the clear: what v1 kept at bytes 1..9 is the same in every file
    # (the institution's fingerprint), so it tells versions and patients nothing.
    clear = {b[1:9] for b in after.values()}
    assert len(clear) == 1, f"{len(clear)} distinct clear sequence fields across the indexes"

    # The legitimate flow: with the gateway stopped, the writer pulls both records back
    # byte-identical, and a patient whose index was (maybe) rewritten as cover pulls theirs.
    assert gw.stop() == 0
    out = tmp_path / "target"
    _, stdout, _ = pull(gw, keys[TARGET], inst, out)
    assert "2 records, 2 verified" in stdout, stdout
    for (pid, key), body in records.items():
        if pid == TARGET:
            assert (out / "ehr" / key).read_bytes() == body, key
    other = "p03"
    _, stdout, _ = pull(gw, keys[other], inst, tmp_path / "other")
    assert "1 records, 1 verified" in stdout, stdout
    assert (tmp_path / "other" / "ehr" / f"{other}/visit-1.txt").read_bytes() == \
        records[(other, f"{other}/visit-1.txt")]
