"""Issue 14: the first hour of a hospital admin. Each test runs the step the admin gets
wrong beside the one they get right, and asserts what medgate says: an error that names
what was wrong and what to do, or the behaviour the README promises.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support import Gateway, client_for, medgate_bin
from test_sharing import cli, keygen, institution, register
from test_two_gateways import (  # noqa: F401  (two is a fixture)
    aws_error, get_denied, grant_of, mount, patient, register_at, two,
)


def run(gw: Gateway, *args: str, timeout: float = 120, env_extra: dict | None = None,
        **kw) -> subprocess.CompletedProcess:
    env = gw.env()
    env.update(env_extra or {})
    return subprocess.run([gw.bin, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)


# ---------------------------------------------------------------------------
# S3 errors: a message for every error
# ---------------------------------------------------------------------------


def test_s3_errors_say_what_was_wrong(module_gateway, aws):
    gw = module_gateway
    # The right secret lists; a wrong one gets SignatureDoesNotMatch with a message, not
    # "Unknown".
    aws(gw, "s3", "ls")
    cp = aws(gw, "s3", "ls", secret="x" * 40, check=False)
    assert cp.returncode != 0
    err = aws_error(cp)
    assert "SignatureDoesNotMatch" in err and "Unknown" not in err, err
    assert "secret access key" in err, err

    # A good bucket name is made; bad ones get InvalidBucketName saying what a name is.
    aws(gw, "s3", "mb", "s3://first-hour-ok")
    for bad in ("x", "UPPER_bad"):
        cp = aws(gw, "s3", "mb", f"s3://{bad}", check=False)
        err = aws_error(cp)
        assert cp.returncode != 0 and "InvalidBucketName" in err, err
        assert "Unknown" not in err and "3 to 63" in err and "lower-case" in err, err


# ---------------------------------------------------------------------------
# The data dir
# ---------------------------------------------------------------------------


def test_data_dir_not_owned_by_the_service_user(tmp_path):
    binary = medgate_bin()
    ports = ["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0",
             "--admin-listen", "127.0.0.1:0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDGATE_"))}
    if os.geteuid() == 0:
        # root may chmod anything: run medgate as nobody on a directory root owns.
        owned = Path(tempfile.mkdtemp(prefix="medgate-not-yours-"))
        owned.chmod(0o755)

        def as_nobody():
            os.setgid(65534)
            os.setuid(65534)
        preexec = as_nobody
        # The binary must be reachable by nobody.
        assert os.access(binary, os.X_OK)
    else:
        # Not root: a directory this user does not own and cannot chmod.
        owned = Path("/")
        preexec = None
    try:
        cp = subprocess.run([binary, "serve", "--data-dir", str(owned), *ports],
                            capture_output=True, text=True, env=env, timeout=30,
                            stdin=subprocess.DEVNULL, preexec_fn=preexec, cwd="/")
        assert cp.returncode != 0
        assert str(owned) in cp.stderr, cp.stderr
        assert "must be owned by the user medgate runs as" in cp.stderr, cp.stderr
        assert "os error" in cp.stderr  # the system's own reason stays beside the fix
    finally:
        if owned != Path("/"):
            owned.rmdir()


def test_second_gateway_on_the_same_data_dir(gateway):
    # The first gateway serves; a second one on its data dir is refused with a sentence.
    assert gateway.running()
    other = Gateway(gateway.workdir / "second")
    argv = [gateway.bin, "serve", "--data-dir", str(gateway.data_dir),
            "--listen", f"127.0.0.1:{other.port}"]
    env = other.env()
    cp = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30,
                        stdin=subprocess.DEVNULL)
    assert cp.returncode != 0
    assert f"another medgate process is using {gateway.data_dir}" in cp.stderr, cp.stderr
    assert "Os {" not in cp.stderr and "code: 11" not in cp.stderr, cp.stderr
    assert gateway.running()


# ---------------------------------------------------------------------------
# Admin commands against a server that does not answer
# ---------------------------------------------------------------------------


@pytest.mark.timeout_s(150)
def test_admin_commands_time_out_on_a_stopped_server(gateway):
    args = ("access-key", "list", "--data-dir", str(gateway.data_dir))
    cp = run(gateway, *args)
    assert cp.returncode == 0 and gateway.access_key_id in cp.stdout, cp.stderr
    os.kill(gateway.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        cp = run(gateway, *args, timeout=90)
        took = time.monotonic() - t0
    finally:
        os.kill(gateway.proc.pid, signal.SIGCONT)
    assert cp.returncode != 0
    assert "did not answer or report progress within 30 s" in cp.stderr, cp.stderr
    assert str(gateway.data_dir / "admin.sock") in cp.stderr, cp.stderr
    assert took < 60, took
    # Resumed, it answers again.
    cp = run(gateway, *args)
    assert cp.returncode == 0 and gateway.access_key_id in cp.stdout, cp.stderr


def _over_moto(moto, gateway_factory):
    store = moto.client()
    store.create_bucket(Bucket="medgate-public")
    gw = gateway_factory(
        public_store="s3://medgate-public/pfx",
        public_store_opts={"endpoint": moto.endpoint, "allow_http": "true",
                           "access_key_id": "test", "secret_access_key": "test",
                           "region": "us-east-1"},
    )
    s3 = client_for(gw)
    s3.create_bucket(Bucket="scans")
    for i in range(3):
        s3.put_object(Bucket="scans", Key=f"p-1/{i}.dcm", Body=os.urandom(300_000 + i))
    return gw


@pytest.mark.timeout_s(240)
@pytest.mark.parametrize("job", [("verify", "--deep"),
                                 ("rotate", "--bucket", "scans", "--prefix", "p-1/")])
def test_long_jobs_outlast_the_timeout_but_not_a_stopped_server(moto, gateway_factory,
                                                                tmp_path, job):
    """verify and rotate wait on a public store that stopped answering for longer than the
    admin timeout and still finish (the server sends progress while it waits); a server stopped
    in the middle of the job is reported within the timeout."""
    gw = _over_moto(moto, gateway_factory)
    env = {"MEDGATE_ADMIN_TIMEOUT": "4s"}
    args = (*job, "--data-dir", str(gw.data_dir))
    if job[0] == "rotate":
        args += ("--state", str(tmp_path / "rotate.json"))

    def start():
        e = gw.env()
        e.update(env)
        return subprocess.Popen([gw.bin, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=e, stdin=subprocess.DEVNULL)

    # 1. The store is stopped for 10 s, 2.5 times the timeout: the job waits and finishes.
    os.kill(moto.proc.pid, signal.SIGSTOP)
    try:
        proc = start()
        time.sleep(10)
        assert proc.poll() is None, proc.communicate()
    finally:
        os.kill(moto.proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "did not answer" not in err

    # 2. Now the server stops in the middle of the job (the job waits on the stopped store
    #    again): the command gives up within the timeout, saying what to check.
    os.kill(moto.proc.pid, signal.SIGSTOP)
    try:
        proc = start()
        time.sleep(6)
        assert proc.poll() is None, proc.communicate()
        os.kill(gw.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        os.kill(moto.proc.pid, signal.SIGCONT)
        os.kill(gw.proc.pid, signal.SIGCONT)
    assert proc.returncode != 0
    assert "did not answer or report progress within 4 s" in err, err
    assert took < 20, took

    # 3. Resumed, the same command runs to the end (rotate resumes from its state file).
    cp = run(gw, *args, env_extra=env)
    assert cp.returncode == 0, cp.stderr


@pytest.mark.timeout_s(120)
def test_backup_times_out_on_a_stopped_server(gateway, tmp_path):
    recovery = tmp_path / "recovery.key"
    rcp = run(gateway, "recovery", "keygen", "-o", str(recovery))
    assert rcp.returncode == 0, rcp.stderr
    args = ("backup", "--data-dir", str(gateway.data_dir), "--out", str(tmp_path / "b.mgb"),
            "--recipient", rcp.stdout.split()[-1])
    env = {"MEDGATE_ADMIN_TIMEOUT": "4s"}
    os.kill(gateway.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        cp = run(gateway, *args, timeout=60, env_extra=env)
        took = time.monotonic() - t0
    finally:
        os.kill(gateway.proc.pid, signal.SIGCONT)
    assert cp.returncode != 0
    assert "did not answer or report progress within 4 s" in cp.stderr, cp.stderr
    assert took < 20, took
    cp = run(gateway, *args, env_extra=env)
    assert cp.returncode == 0 and "backup complete" in cp.stderr, cp.stderr


def test_an_unusable_admin_timeout_is_said(gateway):
    cp = run(gateway, "access-key", "list", "--data-dir", str(gateway.data_dir),
             env_extra={"MEDGATE_ADMIN_TIMEOUT": "soon"})
    assert cp.returncode == 0, cp.stderr
    assert 'MEDGATE_ADMIN_TIMEOUT="soon" is not a duration of at least 2s' in cp.stderr


# ---------------------------------------------------------------------------
# Backup and restore: one unit, and S3 access afterwards
# ---------------------------------------------------------------------------


@pytest.mark.timeout_s(180)
def test_restore_says_how_to_get_s3_access_back(gateway_factory, aws, tmp_path):
    gw = gateway_factory()
    aws(gw, "s3", "mb", "s3://before")
    recovery = tmp_path / "recovery.key"
    cp = run(gw, "recovery", "keygen", "-o", str(recovery))
    assert cp.returncode == 0, cp.stderr
    last = cp.stdout.strip().splitlines()[-1]
    assert last.startswith("public key (Recipient): medgate1"), cp.stdout
    backup = tmp_path / "b.mgb"
    cp = run(gw, "backup", "--data-dir", str(gw.data_dir), "--out", str(backup),
             "--recipient", last.split()[-1])
    assert cp.returncode == 0, cp.stderr
    m = re.search(r"backup complete: (\d+) entries", cp.stderr)
    assert m, cp.stderr
    target = tmp_path / "restored"
    inst = run(gw, "keys", "--data-dir", str(gw.data_dir)).stdout.strip().splitlines()[-1]
    cp = run(gw, "restore", str(backup), "--data-dir", str(target), "--identity", str(recovery),
             "--institution", inst, "--public-store", str(gw.public_dir))
    assert cp.returncode == 0, cp.stderr
    r = re.search(r"restored (\d+) entries", cp.stdout)
    assert r, cp.stdout
    assert r.group(1) == m.group(1), (cp.stdout, m.group(0))  # the same unit, the same count
    assert "access-key create" in cp.stderr, cp.stderr
    gw.stop()

    restored = gateway_factory(start=False, public_store=str(gw.public_dir))
    restored.data_dir = target
    restored.secret_access_key = gw.secret_access_key  # the key the backup holds
    restored.start()
    assert not (target / "credentials").exists()
    deadline = time.monotonic() + 15  # the port opens a moment before the lines print
    while "access-key create" not in restored.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    out = restored.log_text()
    assert "no credentials file" in out and "medgate access-key create --data-dir" in out, out
    assert "try: AWS_SHARED_CREDENTIALS_FILE" not in out
    # What it says works: a new key lists the restored bucket; the old key works too.
    cp = run(restored, "access-key", "create", "--data-dir", str(target))
    assert cp.returncode == 0, cp.stderr
    kid = re.search(r"aws_access_key_id = (\S+)", cp.stdout).group(1)
    secret = re.search(r"aws_secret_access_key = (\S+)", cp.stdout).group(1)
    listed = aws(restored, "s3", "ls", access_key_id=kid, secret=secret)
    assert "before" in listed.stdout
    assert "before" in aws(restored, "s3", "ls").stdout


# ---------------------------------------------------------------------------
# The CLI: labels, one convention for flags, a help line for every option
# ---------------------------------------------------------------------------


def all_commands(binary: str, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    cp = subprocess.run([binary, *path, "--help"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    out = [path] if path else []
    if "Commands:" in cp.stdout:
        body = cp.stdout.split("Commands:", 1)[1].split("\n\n", 1)[0]
        for ln in body.splitlines():
            if ln.startswith("  ") and ln.split() and ln.split()[0] != "help":
                out += all_commands(binary, (*path, ln.split()[0]))
    return out


def test_every_option_has_a_help_line_and_none_is_ignored(module_gateway, tmp_path):
    binary = medgate_bin()
    commands = all_commands(binary)
    assert ("patient", "show") in commands and ("rotate",) in commands
    bare = []
    for cmd in commands:
        cp = subprocess.run([binary, *cmd, "-h"], capture_output=True, text=True, timeout=30)
        lines = cp.stdout.splitlines()
        for i, ln in enumerate(lines):
            if not re.match(r"^\s+(-\w, )?--?[\w-]+", ln) or re.search(r"--(help|version)\b", ln):
                continue
            described = re.search(r"\S\s{2,}\S", ln.strip())
            next_is_text = i + 1 < len(lines) and re.match(r"^\s{8,}\S", lines[i + 1]) \
                and not re.match(r"^\s+-", lines[i + 1])
            if not described and not next_is_text:
                bare.append(f"medgate {' '.join(cmd)}: {ln.strip()}")
    assert not bare, "options without a help line:\n" + "\n".join(bare)

    # `keys` and `access-key` never touch the public store: they refuse its options.
    d = str(module_gateway.data_dir)
    for args in (("keys",), ("access-key", "list")):
        cp = run(module_gateway, *args, "--data-dir", d, "--public-store", "s3://x/y")
        assert cp.returncode != 0 and "--public-store" in cp.stderr, cp.stderr
        cp = run(module_gateway, *args, "--data-dir", d)
        assert cp.returncode == 0, cp.stderr

    # The patient id is --id everywhere: register, show, break-glass.
    key, recipient = register(module_gateway, tmp_path, "p-first-hour")
    _, out, _ = cli(module_gateway, "patient", "show", "--data-dir", d, "--id", "p-first-hour")
    assert "p-first-hour" in out and recipient in out
    code, _, err = cli(module_gateway, "patient", "show", "--data-dir", d, "p-first-hour",
                       ok=False)
    assert code != 0 and "--id" in err, err


def test_patient_keygen_labels_the_public_key(module_gateway, tmp_path):
    inst = institution(module_gateway)
    _, out, _ = cli(module_gateway, "patient", "keygen", "-o", str(tmp_path / "k.key"),
                    "--institution", inst, "--id", "p-label")
    last = out.strip().splitlines()[-1]
    assert last.startswith("public key (Recipient): "), out
    assert re.fullmatch(r"medgate1[0-9a-z]+", last.split()[-1]), last
    assert any(ln.startswith("proof: ") for ln in out.splitlines()), out


def test_default_ports(tmp_path):
    cfg = tmp_path / "empty.toml"
    cfg.write_text("")
    cp = subprocess.run([medgate_bin(), "config", "check", str(cfg)], capture_output=True,
                        text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert "127.0.0.1:9000" in cp.stdout and "127.0.0.1:9003" in cp.stdout, cp.stdout
    assert "9090" not in cp.stdout and "9001" not in cp.stdout, cp.stdout
    cp = subprocess.run([medgate_bin(), "serve", "--help"], capture_output=True, text=True,
                        timeout=30)
    assert "127.0.0.1:9002" in cp.stdout and "127.0.0.1:9003" in cp.stdout, cp.stdout
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for row in ("`127.0.0.1:9000`", "`127.0.0.1:9002`", "`127.0.0.1:9003`", "`127.0.0.1:9004`"):
        assert row in readme


# ---------------------------------------------------------------------------
# Sharing: --bucket/--prefix, and a warning when a request matches nothing
# ---------------------------------------------------------------------------


def test_share_request_scope_and_empty_match_warning(module_gateway, aws, tmp_path):
    gw = module_gateway
    d = str(gw.data_dir)
    key, _ = register(gw, tmp_path, "p-1001")
    aws(gw, "s3", "mb", "s3://pacs")
    src = tmp_path / "ct.dcm"
    src.write_bytes(b"DICM" + os.urandom(1000))
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        aws(gw, "s3", "cp", str(src), f"s3://pacs/p-1001/{name}",
            "--metadata", "medgate-patient=p-1001")
    reader, _ = keygen(gw, tmp_path / "reader.key")
    base = ["share", "request", "--data-dir", d, "--patient", "p-1001", "--recipient", reader,
            "--requester", "Cardiology", "--purpose", "second opinion", "--expires-in", "1d"]

    # The old README's literal BUCKET/PREFIX without --bucket: refused, saying what to add.
    code, _, err = cli(gw, *base, "--prefix", "pacs/p-1001/", ok=False)
    assert code != 0 and "--bucket" in err, err

    # The right scope: no warning, and the approval shares all three.
    _, out, err = cli(gw, *base, "--bucket", "pacs", "--prefix", "p-1001/")
    good = out.strip().splitlines()[-1]
    assert "matches none" not in err, err
    # A scope that matches nothing (the bucket repeated in the prefix): warned at request...
    _, out, err = cli(gw, *base, "--bucket", "pacs", "--prefix", "pacs/p-1001/")
    empty = out.strip().splitlines()[-1]
    assert f"request {empty} matches none of patient p-1001's records" in err, err
    # ... to the patient when listing ...
    _, out, err = cli(gw, "patient", "requests", "--data-dir", d, "--identity", str(key))
    assert good in out and empty in out
    assert f"request {empty} matches none" in err and f"request {good} matches none" not in err
    # ... and at approval.
    _, out, err = cli(gw, "patient", "approve", "--data-dir", d, "--identity", str(key),
                      "--yes", good)
    assert "3 records shared" in out and "shares none" not in err, (out, err)
    _, out, err = cli(gw, "patient", "approve", "--data-dir", d, "--identity", str(key),
                      "--yes", empty)
    assert "0 records shared" in out, out
    assert "warning: the grant shares none of your records now" in err, err
    assert f"medgate patient revoke {grant_of(out)}" in err, err


def test_rotate_takes_bucket_and_prefix_like_share_request(module_gateway):
    gw = module_gateway
    d = str(gw.data_dir)
    # The old BUCKET/PREFIX form: refused before anything runs, naming --bucket.
    code, _, err = cli(gw, "rotate", "--data-dir", d, "--prefix", "pacs/p-1001/", ok=False)
    assert code != 0 and "--bucket" in err, err
    code, _, err = cli(gw, "rotate", "--data-dir", d, "--bucket", "pacs/p-1001/", ok=False)
    assert code != 0 and "--bucket is a bucket name alone" in err, err
    code, _, err = cli(gw, "rotate", "--data-dir", d, ok=False)
    assert code != 0 and "--bucket BUCKET [--prefix PREFIX]" in err, err
    # (test_rotate.py runs the right form, --bucket ehr --prefix alice/, to the end.)


# ---------------------------------------------------------------------------
# Two institutions: mounts in ListBuckets, their state, errors said once
# ---------------------------------------------------------------------------


@pytest.mark.timeout_s(240)
def test_mount_is_listed_with_its_state(two, aws, tmp_path):
    a, b, _ = two
    alice = register_at(a, tmp_path, "alice")
    aws(a, "s3", "mb", "s3://ehr")
    (tmp_path / "n.txt").write_bytes(b"note")
    aws(a, "s3", "cp", str(tmp_path / "n.txt"), "s3://ehr/alice/n.txt",
        "--metadata", "medgate-patient=alice")
    aws(b, "s3", "mb", "s3://local-b")

    req = mount(b, "from-a", "--all")
    _, out, _ = cli(b, "share", "mounts", "--data-dir", str(b.data_dir))
    assert re.search(r"^from-a\tfrom hospital-a\trequest " + req + r"\t.*state: pending$",
                     out, re.M), out
    # ListBuckets shows the mount beside B's own bucket.
    listed = aws(b, "s3", "ls").stdout
    assert "local-b" in listed and "from-a" in listed, listed

    _, out, _ = patient(a, "approve", "--identity", str(alice), req, "--yes")
    gid = grant_of(out)
    assert aws(b, "s3", "cp", "s3://from-a/ehr/alice/n.txt", "-").stdout == "note"
    _, out, _ = cli(b, "share", "mounts", "--data-dir", str(b.data_dir))
    assert f"grant {gid}" in out and "state: in force" in out, out

    patient(a, "revoke", "--identity", str(alice), gid)
    deadline = time.monotonic() + 60
    while True:
        _, out, _ = cli(b, "share", "mounts", "--data-dir", str(b.data_dir))
        if "state: revoked" in out:
            break
        assert time.monotonic() < deadline, out
        time.sleep(1)
    err = get_denied(aws, b, "from-a", "ehr/alice/n.txt", tmp_path / "late")
    assert "revoked" in err, err
    assert err.count("grant refused") == 1 and err.count("refused:") <= 1, err


# ---------------------------------------------------------------------------
# s3cmd with its default bucket_location (US)
# ---------------------------------------------------------------------------


def s3cmd_config(gw: Gateway, workdir: Path, secret: str) -> Path:
    hostport = f"127.0.0.1:{gw.port}"
    cfg = workdir / f"s3cfg-{len(secret)}-{secret[:4]}"
    # s3cmd's defaults but for where the server is: no bucket_location line, so `US`.
    cfg.write_text(
        "[default]\n"
        f"access_key = {gw.access_key_id}\n"
        f"secret_key = {secret}\n"
        f"host_base = {hostport}\n"
        f"host_bucket = {hostport}\n"
        "use_https = False\n"
        "progress_meter = False\n"
        "max_retries = 0\n"
        "cache_file =\n"
    )
    return cfg


def test_s3cmd_default_region_us(module_gateway, tmp_path):
    from support import require_tool
    exe = require_tool("s3cmd")
    gw = module_gateway
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3CMD"))}
    env["HOME"] = str(tmp_path)

    def s3cmd(cfg, *args):
        return subprocess.run([exe, "-c", str(cfg), *args], capture_output=True, text=True,
                              env=env, timeout=60, stdin=subprocess.DEVNULL)

    good = s3cmd_config(gw, tmp_path, gw.secret_access_key)
    assert "bucket_location" not in good.read_text()
    cp = s3cmd(good, "mb", "s3://s3cmd-us")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(200_000))
    cp = s3cmd(good, "put", str(src), "s3://s3cmd-us/dir/f.bin?x")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = s3cmd(good, "ls", "s3://s3cmd-us/dir/")
    assert cp.returncode == 0 and "s3://s3cmd-us/dir/f.bin?x" in cp.stdout, cp.stdout + cp.stderr
    cp = s3cmd(good, "get", "s3://s3cmd-us/dir/f.bin?x", str(tmp_path / "back.bin"))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    # In region US too, a wrong secret is refused.
    bad = s3cmd_config(gw, tmp_path, "y" * 40)
    cp = s3cmd(bad, "ls", "s3://s3cmd-us/")
    assert cp.returncode != 0 and "SignatureDoesNotMatch" in cp.stdout + cp.stderr, \
        cp.stdout + cp.stderr


# ---------------------------------------------------------------------------
# The recipient reads from anywhere: share fetch --gateway
# ---------------------------------------------------------------------------


def test_share_fetch_through_a_remote_gateway(module_gateway, aws, tmp_path):
    gw = module_gateway
    d = str(gw.data_dir)
    key, _ = register(gw, tmp_path, "p-remote")
    aws(gw, "s3", "mb", "s3://remote-read")
    record = os.urandom(3 * 1024 * 1024 + 5)  # several chunks
    (tmp_path / "scan.dcm").write_bytes(record)
    aws(gw, "s3", "cp", str(tmp_path / "scan.dcm"), "s3://remote-read/p-remote/scan.dcm",
        "--metadata", "medgate-patient=p-remote")
    reader, _ = keygen(gw, tmp_path / "reader.key")
    keygen(gw, tmp_path / "mallory.key")
    _, out, _ = cli(gw, "share", "request", "--data-dir", d, "--patient", "p-remote",
                    "--recipient", reader, "--bucket", "remote-read", "--prefix", "p-remote/",
                    "--requester", "Radiology elsewhere", "--purpose", "second opinion",
                    "--expires-in", "1d")
    req = out.strip().splitlines()[-1]
    _, out, _ = cli(gw, "patient", "approve", "--data-dir", d, "--identity", str(key),
                    "--yes", req)
    gid = grant_of(out)

    # Times: the JSON API gives each *_ms time as an ISO 8601 *_at string beside it; the
    # CLI shows dates with their UTC offset.
    import datetime
    import requests
    r = requests.get(gw.api_endpoint + "/v1/admin/grants",
                     headers={"Authorization": f"Bearer {gw.admin_token()}"}, timeout=30)
    assert r.status_code == 200, r.text
    (g,) = [g for g in r.json()["grants"] if g["id"] == gid]
    for field in ("issued", "expires"):
        want = datetime.datetime.fromtimestamp(g[f"{field}_ms"] // 1000, datetime.timezone.utc)
        assert g[f"{field}_at"] == want.strftime("%Y-%m-%dT%H:%M:%SZ"), g
    _, out, _ = cli(gw, "share", "grants", "--data-dir", d, "--patient", "p-remote")
    assert re.search(r"in force until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d", out), out
    assert str(g["expires_ms"]) not in out, out
    # --json: the API's document, *_at beside each *_ms.
    _, out, _ = cli(gw, "share", "grants", "--data-dir", d, "--patient", "p-remote", "--json")
    (jg,) = [x for x in json.loads(out) if x["id"] == gid]
    assert jg == g, (jg, g)
    _, out, _ = cli(gw, "share", "events", "--data-dir", d, "--patient", "p-remote", "--json")
    events = json.loads(out)
    assert any(e["kind"] == "grant" for e in events), events
    for e in events:
        want = datetime.datetime.fromtimestamp(e["time_ms"] // 1000, datetime.timezone.utc)
        assert e["time_at"] == want.strftime("%Y-%m-%dT%H:%M:%SZ"), e
    _, out, _ = cli(gw, "patient", "list", "--data-dir", d, "--json")
    (p,) = [x for x in json.loads(out) if x["id"] == "p-remote"]
    assert p["recipient"].startswith("medgate1") and p["registered_at"].endswith("Z"), p
    _, out, _ = cli(gw, "access-key", "list", "--data-dir", d, "--json")
    keys = json.loads(out)
    assert gw.access_key_id in [k["id"] for k in keys], keys
    assert not any("secret" in k for k in keys), keys

    # Elsewhere: no data dir, no admin socket; the JSON API and the public store only.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in gw.env().items() if k != "MEDGATE_DATA_DIR"}

    def fetch(identity, out_name):
        return subprocess.run(
            [gw.bin, "share", "fetch", "--gateway", gw.api_endpoint,
             "--public-store", str(gw.public_dir), "--identity", str(identity),
             "--grant", gid, "--object", "remote-read/p-remote/scan.dcm",
             "-o", str(elsewhere / out_name)],
            capture_output=True, text=True, env=env, cwd=elsewhere, timeout=60,
            stdin=subprocess.DEVNULL)

    cp = fetch(tmp_path / "reader.key", "scan.dcm")
    assert cp.returncode == 0, cp.stderr
    assert (elsewhere / "scan.dcm").read_bytes() == record
    assert not (elsewhere / "medgate-data").exists()
    # Another key with the same grant id is refused by the gateway.
    cp = fetch(tmp_path / "mallory.key", "stolen.dcm")
    assert cp.returncode != 0 and "recipient signature" in cp.stderr, cp.stderr
    assert not (elsewhere / "stolen.dcm").exists()
    # Revoked: refused from anywhere.
    cli(gw, "patient", "revoke", "--data-dir", d, "--identity", str(key), gid)
    cp = fetch(tmp_path / "reader.key", "late.dcm")
    assert cp.returncode != 0 and "revoked" in cp.stderr, cp.stderr
    assert not (elsewhere / "late.dcm").exists()
