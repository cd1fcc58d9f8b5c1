"""pytest fixtures for tests on the local cluster: `cluster` (one per session) and `namespace`.

Skip policy: without `go` on PATH (and no binaries cached already) the tests using
`cluster` skip with one line saying how to enable them — unless
WHISPERFLEET_REQUIRE_CLUSTER=1 (CI sets it), which makes a missing Go, a failed build or a
cluster that does not come up an error. WHISPERFLEET_KEEP_CLUSTER_STATE=1 keeps the state
dir (logs, pod folders) after the session for debugging.

Tests that need the binaries or the images run last, and those are built just before the
first test that needs them, outside its timeout (hooks in tests/conftest.py call
`run_binary_tests_last` and `build_before`). The images (tests/cluster/images.py) need root,
mmdebstrap and buildah; without them the `built_images` tests fail, saying so. So do the real
node's binaries (`node_binaries`, tests/cluster/node_build.py): root, gcc and libseccomp-dev.

Registered by tests/cluster/conftest.py.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import build, images, kueue_build, node_build
from tests.cluster.kueue import KueueManager
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.manifests import POD_SECURITY_LABELS
from tests.cluster.transcription_jobs import storage_secret
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import OperatorProcess, Release, install_chart
from tests.support.paths import REPO

REQUIRE_ENV = "WHISPERFLEET_REQUIRE_CLUSTER"
KUEUE_EXAMPLE = REPO / "examples" / "kueue.yaml"
# The example's TranscriptionJob carries it; the queues it needs do not.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KEEP_STATE_ENV = "WHISPERFLEET_KEEP_CLUSTER_STATE"
SKIP_REASON = (
    "local-cluster tests need Go >= 1.26 on PATH to build Kubernetes, etcd and helm from Go "
    f"modules (through the Go module proxy); install Go to run them ({REQUIRE_ENV}=1 turns "
    "this skip into an error)")
_prebuilt: dict[str, Path | BaseException] = {}


def _cluster_required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def _can_build() -> bool:
    return build.go_available() or build.cached_bin_dir() is not None


BINARY_FIXTURES = ("cluster", "helm_bin")
IMAGE_FIXTURES = ("built_images",)
NODE_FIXTURES = ("node_binaries",)
KUEUE_FIXTURES = ("kueue",)
_prebuilt_images: dict[str, dict[str, images.BuiltImage] | BaseException] = {}
_prebuilt_node: dict[str, dict[str, Path] | BaseException] = {}
_prebuilt_kueue: dict[str, Path | BaseException] = {}


def needs_binaries(item: pytest.Item) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in BINARY_FIXTURES)


def needs_images(item: pytest.Item) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in IMAGE_FIXTURES)


def needs_node_binaries(item: pytest.Item) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in NODE_FIXTURES)


def needs_kueue(item: pytest.Item) -> bool:
    return any(name in getattr(item, "fixturenames", ()) for name in KUEUE_FIXTURES)


def run_binary_tests_last(items: list[pytest.Item]) -> None:
    """Tests that need the built binaries or images go last (a stable sort), so a cold build
    (CI starts both beside `pip install`) overlaps every other test instead of holding them
    up."""
    items.sort(key=lambda item: needs_binaries(item) or needs_images(item))


def build_before(item: pytest.Item) -> None:
    """Before the first test that needs them, and outside its timeout: find or build the
    binaries and the images (waiting for a build already under way). A failure is reported
    by the fixture, as that test's error."""
    if needs_images(item) and not _prebuilt_images:
        try:
            _prebuilt_images["images"] = images.build_images()
        except Exception as error:
            _prebuilt_images["error"] = error
    if needs_kueue(item) and not _prebuilt_kueue and (_can_build() or _cluster_required()):
        try:
            _prebuilt_kueue["bin_dir"] = kueue_build.ensure_kueue()
        except Exception as error:
            _prebuilt_kueue["error"] = error
    if needs_node_binaries(item) and not _prebuilt_node:
        try:
            _prebuilt_node["binaries"] = node_build.ensure_node_binaries()
        except Exception as error:
            _prebuilt_node["error"] = error
    if _prebuilt or not needs_binaries(item) or not (_can_build() or _cluster_required()):
        return
    try:
        _prebuilt["bin_dir"] = build.ensure_binaries()
    except Exception as error:
        _prebuilt["error"] = error


def skip_without_go() -> None:
    """Skip the calling fixture's tests where the binaries cannot be had: no Go, nothing
    built yet, and WHISPERFLEET_REQUIRE_CLUSTER unset."""
    if not _cluster_required() and not _can_build():
        pytest.skip(SKIP_REASON)


def fold_go_skip(report: pytest.TestReport) -> None:
    """Point a test skipped for want of Go at `skip_without_go`, not at the test: the
    summary then says it in one line ("SKIPPED [87] …"), not once per test."""
    if report.skipped and isinstance(report.longrepr, tuple) and \
            report.longrepr[2].endswith(SKIP_REASON):
        report.longrepr = (__file__, skip_without_go.__code__.co_firstlineno,
                           report.longrepr[2])


def prebuilt_bin_dir() -> Path:
    error = _prebuilt.get("error")
    if isinstance(error, BaseException):
        raise error
    prebuilt = _prebuilt.get("bin_dir")
    return prebuilt if isinstance(prebuilt, Path) else build.ensure_binaries()


@pytest.fixture(scope="session")
def built_images() -> dict[str, images.BuiltImage]:
    """The operator and runner images, built here from their Dockerfiles (cached)."""
    error = _prebuilt_images.get("error")
    if isinstance(error, BaseException):
        raise error
    found = _prebuilt_images.get("images")
    return found if isinstance(found, dict) else images.build_images()


@pytest.fixture(scope="session")
def node_binaries() -> dict[str, Path]:
    """The real node's binaries (kubelet, containerd, runc, CNI, ...), built from Go modules."""
    error = _prebuilt_node.get("error")
    if isinstance(error, BaseException):
        raise error
    found = _prebuilt_node.get("binaries")
    return found if isinstance(found, dict) else node_build.ensure_node_binaries()


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """The local cluster (control plane, fake GPU nodes, stand-in kubelet, moto S3)."""
    skip_without_go()
    keep = os.environ.get(KEEP_STATE_ENV) == "1"
    with LocalCluster(bin_dir=prebuilt_bin_dir(), keep_state=keep) as local:
        yield local
    if keep:
        print(f"\nlocal cluster state kept in {local.state_dir}")


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace enforcing PodSecurity "restricted"; its deletion starts after the test."""
    name = _namespace_name(request.node.name)
    rest = cluster.rest()
    rest.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": name, "labels": POD_SECURITY_LABELS}})
    eventually(lambda: rest.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
               timeout=30, what=f"the default ServiceAccount of {name}")
    yield name
    # Not waited for: the namespace controller takes ~5 s per namespace, and the cluster's
    # stop() ends whatever is still running at the end of the session.
    rest.delete(f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"})


@pytest.fixture(scope="session")
def kueue(cluster: LocalCluster) -> Iterator[KueueManager]:
    """Kueue's manager (kueue.py), started for the first test that asks for it and kept for
    the rest of the session; modules that do not ask never pay for it."""
    error = _prebuilt_kueue.get("error")
    if isinstance(error, BaseException):
        raise error
    found = _prebuilt_kueue.get("bin_dir")
    manager = KueueManager(cluster, found if isinstance(found, Path)
                           else kueue_build.ensure_kueue()).start()
    yield manager
    manager.stop()


@pytest.fixture
def kueue_namespace(job_namespace: str, cluster: LocalCluster, kueue: KueueManager) -> str:
    """A job namespace with the queues of examples/kueue.yaml, applied as a user would (the
    cluster-wide flavors, ClusterQueue and priority classes once; the LocalQueue here)."""
    cluster.kubectl("apply", "-n", job_namespace, "-f", str(KUEUE_EXAMPLE),
                    "--selector", f"!{KUEUE_QUEUE_LABEL}")
    return job_namespace


@pytest.fixture(scope="session")
def release(cluster: LocalCluster) -> Release:
    """The chart, installed by the real helm (all namespaces; its CRD from the chart). The
    operator reads running pods' progress every second, not every 30: jobs here are short."""
    return install_chart(cluster, "wf", "whisperfleet",
                         {"metrics": {"progressIntervalSeconds": 1}})


@pytest.fixture(scope="session")
def operator(cluster: LocalCluster, release: Release) -> Iterator[OperatorProcess]:
    """The chart's operator, running with its ServiceAccount's token for the session. A test
    that stops or restarts it must leave it running."""
    process = OperatorProcess(cluster, release, cluster.state_dir / "operator").start()
    yield process
    process.stop()


@pytest.fixture
def job_namespace(namespace: str, cluster: LocalCluster, operator: OperatorProcess) -> str:
    """A fresh restricted namespace holding the storage Secret, watched by the operator."""
    storage_secret(cluster, namespace)
    return namespace
