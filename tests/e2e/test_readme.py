"""The README cannot drift from the binary.

Every fenced ``sh`` block of README.md runs, in order, in one temporary directory, with
the release binary on PATH as ``medgate`` and the venv's aws CLI, and must exit 0. A block
is left out only when the line before it says ``<!-- readme-check: skip: REASON -->``.
The harness fills in what a reader's machine would have: free ports stand in for the
default ones (9000, 9002, 9003), given to ``medgate`` through MEDGATE_LISTEN,
MEDGATE_ADMIN_LISTEN and MEDGATE_OPS_LISTEN and substituted in the blocks' text.

Beside that: every relative link of the README names a file of the repository, and the
README names every command and subcommand ``medgate --help`` lists.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from support import REPO_ROOT, free_port, medgate_bin, require_tool

README = REPO_ROOT / "README.md"
SKIP_RE = re.compile(r"^<!-- readme-check: skip: (\S.*?) -->$")
BLOCK_TIMEOUT_S = 180


def sh_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """Every fenced sh block as (line number, body, skip reason or None)."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            assert j < len(lines), f"README.md:{i + 1}: the sh block is not closed"
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            m = SKIP_RE.match(lines[k].strip()) if k >= 0 else None
            out.append((start, "\n".join(lines[start:j]) + "\n", m.group(1) if m else None))
            i = j + 1
        else:
            i += 1
    return out


def test_every_sh_block_of_the_readme_runs(tmp_path):
    aws = require_tool("aws")
    binary = medgate_bin()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "medgate").symlink_to(binary)
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    ports = {9000: free_port(), 9002: free_port(), 9003: free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDGATE_"))}
    env.update(
        PATH=f"{bindir}:{Path(aws).parent}:{env.get('PATH', '')}",
        HOME=str(home),  # no aws config of the machine's user
        MEDGATE_LISTEN=f"127.0.0.1:{ports[9000]}",
        MEDGATE_ADMIN_LISTEN=f"127.0.0.1:{ports[9002]}",
        MEDGATE_OPS_LISTEN=f"127.0.0.1:{ports[9003]}",
        AWS_EC2_METADATA_DISABLED="true",
    )
    blocks = sh_blocks(README.read_text())
    ran = skipped = 0
    sessions: list[int] = []
    try:
        for line, body, skip in blocks:
            if skip is not None:
                skipped += 1
                continue
            script = body
            for default, port in ports.items():
                script = script.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
            path = work / f".readme-block-{line}.sh"
            path.write_text(script)
            proc = subprocess.Popen(
                ["bash", "-eo", "pipefail", str(path)], cwd=work, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            sessions.append(proc.pid)
            try:
                out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                pytest.fail(f"README.md:{line}: the sh block did not finish within "
                            f"{BLOCK_TIMEOUT_S} s:\n{body}\n--- output\n{out.decode(errors='replace')}")
            assert proc.returncode == 0, (
                f"README.md:{line}: the sh block exited {proc.returncode}:\n{body}\n"
                f"--- output\n{out.decode(errors='replace')}\n--- serve.log\n"
                + ((work / "serve.log").read_text(errors="replace")
                   if (work / "serve.log").exists() else "(none)"))
            ran += 1
    finally:
        # Servers a block left in the background run in its session.
        for sid in sessions:
            try:
                os.killpg(sid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    # The quick start, the first S3 listing and the sharing example at least.
    assert ran >= 2, f"only {ran} sh blocks ran ({skipped} skipped)"
    # What the blocks did is on disk: the shared record came back byte for byte.
    assert (work / "ct-copy.dcm").read_bytes() == (work / "ct.dcm").read_bytes()


def test_readme_skip_markers_give_a_reason():
    text = README.read_text()
    for m in re.finditer(r"<!-- readme-check:[^\n]*-->", text):
        assert SKIP_RE.match(m.group(0)), f"a readme-check marker without a reason: {m.group(0)}"
    blocks = sh_blocks(text)
    assert blocks[0][2], "the README's first block (cargo run, tests/run.sh) is marked skip"
    assert "cargo run --release -- serve" in blocks[0][1] and "./tests/run.sh" in blocks[0][1]


def test_readme_links_are_in_the_repository():
    text = README.read_text()
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"^[a-z]+://", target):
            continue
        assert (REPO_ROOT / target).exists(), f"README links {target}, which is not in the repository"
    assert "docs/design.md" in text and (REPO_ROOT / "docs" / "design.md").is_file()


def help_text(*args: str) -> str:
    cp = subprocess.run([medgate_bin(), *args, "--help"], capture_output=True, timeout=30)
    assert cp.returncode == 0, cp.stderr.decode()
    return cp.stdout.decode()


def subcommands(help_out: str) -> list[str]:
    section = help_out.split("Commands:", 1)
    if len(section) < 2:
        return []
    body = section[1].split("\n\n", 1)[0]
    names = [ln.split()[0] for ln in body.splitlines() if ln.startswith("  ") and ln.split()]
    return [n for n in names if n != "help"]


def test_readme_names_every_command_help_lists():
    readme = README.read_text()
    top = subcommands(help_text())
    assert {"serve", "rotate", "backup", "share", "patient"} <= set(top), top
    for cmd in top:
        assert re.search(rf"\bmedgate {cmd}\b", readme), f"the README never names `medgate {cmd}`"
        for sub in subcommands(help_text(cmd)):
            assert re.search(rf"\bmedgate {cmd}\b[^\n]*\b{sub}\b", readme), \
                f"the README never names `medgate {cmd} {sub}`"
