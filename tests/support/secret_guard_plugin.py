"""A pytest plugin (registered by tests/conftest.py for the whole suite): a test fails when a
credential value reaches what people read.

Checked after each test's call, while its fixtures still stand: the test's captured
stdout/stderr and logs, the output its capture fixtures (capsys, capfd) read, what its
subprocesses printed to pipes (`Popen.communicate`, which `subprocess.run` uses), the text of
its failure, the files under its `tmp_path`, the objects of moto buckets created during it
and of the GCS emulator's and Azurite's buckets made for it (tests/support/object_stores),
and, for a test on the local cluster's `namespace`, that namespace's TranscriptionJob
status, Events, and pods' status (termination messages) and logs. Its teardown's output is
checked at teardown. The secrets: the tests' S3 and Azurite keys, values a test registers
(`secrets_guard.register`), and on the cluster its admin token and S3 keys and every value
of the namespace's Secrets. What a test only passes in (a deliberately wrong key in the
environment) is not a secret unless registered. Reports of a leak mask the values, and so
do the captured output and failure text shown with them.
"""

from __future__ import annotations

import subprocess
import time
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from tests.support import object_stores
from tests.support import secret_sources as sources
from tests.support import secrets_guard as guard

WATCH = pytest.StashKey[guard.Watch]()
_CAPTURE_FIXTURES = ("capsys", "capsysbinary", "capfd", "capfdbinary")
_spent: list[float] = []  # seconds the checks took, for the verbose summary
_original_communicate: Callable[..., Any] | None = None
_INSTALLED = pytest.StashKey[bool]()


def _communicate(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
    assert _original_communicate is not None
    out, err = _original_communicate(self, *args, **kwargs)
    watch = guard.current()
    if watch is not None:
        argv = self.args if isinstance(self.args, (list, tuple)) else [self.args]
        name = Path(str(argv[0])).name if argv else "?"
        watch.saw(f"stdout of subprocess {name}", out)
        watch.saw(f"stderr of subprocess {name}", err)
    return out, err


def pytest_configure(config: pytest.Config) -> None:
    # Once per process: a pytester run inside a test configures this plugin again.
    global _original_communicate
    if _original_communicate is None:
        _original_communicate = subprocess.Popen.communicate
        subprocess.Popen.communicate = _communicate  # type: ignore[method-assign]
        config.stash[_INSTALLED] = True


def pytest_unconfigure(config: pytest.Config) -> None:
    global _original_communicate
    if config.stash.get(_INSTALLED, False) and _original_communicate is not None:
        subprocess.Popen.communicate = _original_communicate  # type: ignore[method-assign]
        _original_communicate = None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[WATCH] = guard.begin(_moto_buckets())  # before any fixture makes a bucket
    return (yield)


@pytest.fixture(autouse=True)
def _secret_guard_reads(request: pytest.FixtureRequest) -> None:
    """What a capture fixture's readouterr() hands the test is gone from the captured
    output: keep a copy for the check."""
    watch = request.node.stash.get(WATCH, None)
    for name in _CAPTURE_FIXTURES:
        if watch is not None and name in request.fixturenames:
            _tee_reads(request.getfixturevalue(name), watch, name)


def _tee_reads(fixture: pytest.CaptureFixture[Any], watch: guard.Watch, name: str) -> None:
    read = fixture.readouterr

    def readouterr() -> Any:
        result = read()
        watch.saw(f"output read through {name}", result.out)
        watch.saw(f"error output read through {name}", result.err)
        return result

    fixture.readouterr = readouterr  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    watch = item.stash.get(WATCH, None)
    if watch is None:
        return report
    began = time.perf_counter()
    try:
        if report.when == "call" or (report.when == "setup" and report.failed):
            leaks = _check(item, report, watch, outputs=report.when == "call")
        elif report.when == "teardown":
            leaks = _check(item, report, watch, outputs=False)
        else:
            leaks = []
        if leaks:
            _fail(report, watch.secrets, leaks)
    finally:
        if report.when == "teardown":
            guard.end(watch)
            object_stores.forget_made()
        _spent.append(time.perf_counter() - began)
    return report


def _check(item: pytest.Item, report: pytest.TestReport, watch: guard.Watch, *,
           outputs: bool) -> list[guard.Leak]:
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    if outputs and "namespace" in funcargs and "cluster" in funcargs:
        _with_cluster_secrets(watch, funcargs["cluster"], funcargs["namespace"])
    # Setup's output is checked with the call's, or at teardown when there was no call.
    phases = {"setup", "call", "teardown"} - watch.phases_checked
    watch.phases_checked |= phases if report.when == "teardown" else {"setup", report.when}
    texts: list[tuple[str, str | bytes | None]] = [
        (f"captured {title.removeprefix('Captured ')}", content)
        for title, content in report.sections if title.rsplit(" ", 1)[-1] in phases]
    texts += watch.take_seen()
    if report.failed and report.longrepr is not None:
        texts.append((f"the failure report ({report.when})", str(report.longrepr)))
    leaks = watch.find_all(texts)
    if not outputs:
        return leaks
    tmp_path = funcargs.get("tmp_path")
    if isinstance(tmp_path, Path):
        leaks += sources.file_leaks(tmp_path, watch.secrets)
    new = _moto_buckets() - watch.buckets
    if new:
        leaks += watch.find_all(sources.moto_objects(new))
    leaks += watch.find_all(list(object_stores.made_objects()))
    if "namespace" in funcargs and "cluster" in funcargs:
        leaks += _cluster_leaks(watch, funcargs["cluster"], funcargs["namespace"])
    return leaks


def _moto_buckets() -> frozenset[str]:
    try:
        return sources.moto_buckets()
    except RuntimeError:  # a server thread added a bucket while we listed: once more
        return sources.moto_buckets()


def _with_cluster_secrets(watch: guard.Watch, cluster: Any, namespace: str) -> None:
    try:
        watch.secrets.add_found(sources.cluster_secrets(cluster, namespace))
    except Exception as exc:  # the API server may be down on purpose in this test
        warnings.warn(f"secret guard: cannot read the Secrets of {namespace}: {exc}",
                      stacklevel=1)


def _cluster_leaks(watch: guard.Watch, cluster: Any, namespace: str) -> list[guard.Leak]:
    try:
        return watch.find_all(list(sources.cluster_texts(cluster, namespace)))
    except Exception as exc:
        warnings.warn(f"secret guard: cannot read what namespace {namespace} shows: {exc}",
                      stacklevel=1)
        return []


def _fail(report: pytest.TestReport, secrets: guard.Secrets, leaks: list[guard.Leak]) -> None:
    """Fail the report with the leaks, masking the values in what it will show."""
    report.sections = [(title, secrets.mask(content)) for title, content in report.sections]
    text = guard.describe(leaks)
    if report.failed and report.longrepr is not None:
        text = secrets.mask(str(report.longrepr)) + "\n\n" + text
    report.outcome = "failed"
    report.longrepr = text


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if config.option.verbose > 0 and _spent:
        terminalreporter.write_line(f"secret guard: {len(_spent)} checks took "
                                    f"{sum(_spent):.2f} s")
