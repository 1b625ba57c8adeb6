"""Fixtures and hooks for medgate's end-to-end tests.

Every test talks to a real `medgate serve` process (``MEDGATE_BIN``) over
loopback with real clients: boto3, the aws CLI and, for the S3 public-store
backend, a real moto_server. Nothing may skip: a missing tool or binary fails
the test, and with ``CI=true`` any skip or xfail that slips through is turned
into a failure (a green CI must mean that every test ran).
"""

from __future__ import annotations

import os
import signal

import pytest

from support import (
    DEFAULT_TEST_TIMEOUT_S,
    LIVE_GATEWAYS,
    LIVE_MOTOS,
    AwsCli,
    Gateway,
    MotoServer,
    client_for,
)

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "timeout_s(seconds): wall-clock limit for one test (default 120 s)"
    )


# ---------------------------------------------------------------------------
# Skips are failures in CI; failing tests show the servers' logs
# ---------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped:
        # xfail too: in CI nothing may silently not run.
        why = getattr(rep, "wasxfail", None) or rep.longrepr
        rep.outcome = "failed"
        rep.longrepr = f"CI=true: a skipped/xfailed test is a failure: {why}"
    if rep.failed:
        for gw in list(LIVE_GATEWAYS):
            rep.sections.append((f"medgate log ({gw.log_path})", gw.log_tail()))
        for srv in list(LIVE_MOTOS):
            rep.sections.append((f"moto_server log ({srv.log_path})", srv.log_tail()))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = f"CI=true: a skipped module is a failure: {rep.longrepr}"


def pytest_sessionfinish(session, exitstatus):
    # Belt and braces: whatever was skipped in CI fails the run.
    if not IN_CI:
        return
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None and (tr.stats.get("skipped") or tr.stats.get("xfailed")):
        session.exitstatus = 1


# ---------------------------------------------------------------------------
# Per-test wall-clock limit (no pytest-timeout needed)
# ---------------------------------------------------------------------------


class TimeLimitExceeded(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("timeout_s")
    limit = int(marker.args[0]) if marker else DEFAULT_TEST_TIMEOUT_S

    def on_alarm(signum, frame):
        raise TimeLimitExceeded(f"test exceeded its {limit} s limit")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def gateway_factory(tmp_path_factory):
    """Makes gateways (started unless start=False); all are stopped by PID at teardown."""
    made: list[Gateway] = []

    def make(start: bool = True, **kw) -> Gateway:
        gw = Gateway(tmp_path_factory.mktemp("gw"), **kw)
        made.append(gw)
        if start:
            gw.start()
        return gw

    yield make
    for gw in made:
        gw.teardown()


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


@pytest.fixture(scope="module")
def module_gateway(tmp_path_factory):
    """One gateway shared by a module's tests (each test uses its own buckets)."""
    gw = Gateway(tmp_path_factory.mktemp("gw-module"))
    gw.start()
    yield gw
    gw.teardown()


@pytest.fixture
def s3(gateway):
    return client_for(gateway)


@pytest.fixture
def aws(tmp_path_factory) -> AwsCli:
    return AwsCli(tmp_path_factory.mktemp("awscli"))


@pytest.fixture
def moto(tmp_path_factory):
    srv = MotoServer(tmp_path_factory.mktemp("moto"))
    yield srv
    srv.stop()
