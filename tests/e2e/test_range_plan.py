"""Range reads over a multipart object fetch only the chunks they need: 200 random ranges
compared with the source, and the gateway's per-read plan (a debug log line) shows a 1 MiB
range touching at most 2 chunks of each part."""

from __future__ import annotations

import os
import random
import re

from support import MIB, client_for


def test_random_ranges_over_multipart_fetch_few_chunks(gateway_factory):
    gw = gateway_factory(start=False)
    gw.extra_env = {"MEDGATE_LOG": "info,gateway::engine::record=debug"}
    gw.start()
    s3 = client_for(gw)
    s3.create_bucket(Bucket="ranges")
    size = 100 * MIB
    src = os.urandom(size)
    part = 8 * MIB + 7  # parts not aligned to the 1 MiB chunk size
    up = s3.create_multipart_upload(Bucket="ranges", Key="big")["UploadId"]
    parts = []
    for n, off in enumerate(range(0, size, part), start=1):
        r = s3.upload_part(Bucket="ranges", Key="big", UploadId=up, PartNumber=n,
                           Body=src[off:off + part])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket="ranges", Key="big", UploadId=up,
                                 MultipartUpload={"Parts": parts})

    rng = random.Random(20261126)
    before = len(re.findall(r"read plan", gw.log_text()))
    one_mib_reads = 0
    for i in range(200):
        length = MIB if i % 2 == 0 else rng.randint(1, 3 * MIB)
        start = rng.randrange(0, size - length + 1)
        got = s3.get_object(Bucket="ranges", Key="big",
                            Range=f"bytes={start}-{start + length - 1}")["Body"].read()
        assert got == src[start:start + length], (start, length)
        one_mib_reads += length == MIB

    plans = re.findall(
        r"read plan start=(\d+) end=(\d+) parts=(\d+) chunks=(\d+) max_chunks_per_part=(\d+)",
        gw.log_text())[before:]
    assert len(plans) == 200, f"expected one read plan per GET, found {len(plans)}"
    checked = 0
    for start, end, parts_n, chunks, max_per_part in plans:
        start, end, parts_n, chunks, max_per_part = map(int, (start, end, parts_n, chunks,
                                                             max_per_part))
        if end - start == MIB:
            checked += 1
            assert max_per_part <= 2, (start, end, parts_n, chunks)
            assert parts_n <= 2
        # Never more than the chunks the range spans, plus one at each part edge.
        assert chunks <= (end - start) // MIB + 2 * parts_n
    assert checked == one_mib_reads >= 100
