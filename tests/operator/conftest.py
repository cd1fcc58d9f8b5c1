"""The Kubernetes API (kmock's emulator over real HTTP) and the real operator running on it.

The tests play the Kubernetes Job controller themselves: they write Job status and create
the pods (with termination messages) through the same HTTP API the operator watches.

What the emulator does not do, and how that is handled here (see `ApiServer`):
- it assigns no uid/creationTimestamp/generation/resourceVersion and ignores generateName
  (kopf posts Events with generateName): `ApiServer` fills these in, as the API server does;
- it ignores label selectors: the operator re-checks labels on what it lists (kube.py);
- it has no garbage collector: deletion tests assert the owner references instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kmock
import kopf
import kubernetes.config.kube_config
import pytest
import pytest_asyncio
import yaml

import whisperfleet_operator  # noqa: F401  # registers the handlers in kopf's default registry
from tests.support.paths import REPO

CRD_PATH = REPO / "crds" / "transcriptionjob.yaml"
NAMESPACE = "media"
TJ_RESOURCE = "whisperfleet.io/v1alpha1/transcriptionjobs"
ALL_VERBS = ["list", "watch", "get", "create", "patch", "update", "delete"]
Obj = dict[str, Any]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata bookkeeping a real API server does."""

    _versions = itertools.count(1)

    async def _handle(self, request: kmock.Request) -> Any:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta["generation"] = 1
                meta["resourceVersion"] = str(next(self._versions))
            elif request.action == kmock.action.UPDATE and request.name:
                meta["resourceVersion"] = str(next(self._versions))
                key = (request.resource, request.namespace, request.name)
                # Like the API server: spec changes (not status) bump metadata.generation.
                if "spec" in data and request.subresource is None and key in self.objects:
                    current = self.objects[key]
                    if not current.deleted:
                        generation = int(current.get("metadata", {}).get("generation", 1))
                        meta["generation"] = generation + 1
        return await super()._handle(request)


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[ApiServer]:
    async with ApiServer() as server, kmock.Server(server):
        def info(kind: str, namespaced: bool, *subresources: str) -> kmock.ResourceInfo:
            return kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=ALL_VERBS,
                                      subresources=set(subresources))
        crd = yaml.safe_load(CRD_PATH.read_text())
        server.resources["v1/namespaces"] = info("Namespace", False)
        server.resources["v1/events"] = info("Event", True)
        server.resources["v1/pods"] = info("Pod", True, "status")
        server.resources["batch/v1/jobs"] = info("Job", True, "status")
        server.resources["resource.k8s.io/v1/resourceclaimtemplates"] = info(
            "ResourceClaimTemplate", True)
        server.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
            "CustomResourceDefinition", False)
        server.resources[TJ_RESOURCE] = kmock.ResourceInfo(
            kind="TranscriptionJob", singular="transcriptionjob", namespaced=True,
            verbs=ALL_VERBS, shortnames={"tj"}, categories={"whisperfleet"},
            subresources={"status", "scale"})
        # The emulator cannot POST cluster-scoped objects such as namespaces: pre-create.
        server.objects["apiextensions.k8s.io/v1/customresourcedefinitions", None,
                       crd["metadata"]["name"]] = crd
        for ns in (NAMESPACE, "default"):
            server.objects["v1/namespaces", None, ns] = {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        yield server


@pytest.fixture()
def kubeconfig(api: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig pointing at the emulator: kopf's login and kube.py both read it."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(api.url).rstrip("/")}}],
        "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(path))
    # kopf logs in through the kubernetes client, which read $KUBECONFIG at import time.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("WHISPERFLEET_PEERING", raising=False)
    return path


@contextlib.asynccontextmanager
async def running_operator() -> AsyncIterator[None]:
    """The real operator (kopf.operator with the package's handlers) until the block ends.

    It runs in its own thread and event loop, as `kopf run` would in its own process: on
    stopping, kopf cancels every task its loop gained since startup, which in a shared loop
    would include the emulator's request handlers and pytest's own fixture teardown.
    """
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(kopf.operator(clusterwide=True, standalone=True, stop_flag=stop,
                                      ready_flag=ready, memo=kopf.Memo()))
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=target, name="operator", daemon=True)
    thread.start()
    try:
        await eventually(ready.is_set, what="the operator to start")
        assert not errors, f"the operator failed to start: {errors!r}"
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive(), "the operator did not stop within 30 s"
    assert not errors, f"the operator crashed: {errors!r}"


OperatorFactory = Callable[[], contextlib.AbstractAsyncContextManager[None]]


@pytest_asyncio.fixture()
async def operator(kubeconfig: Path) -> AsyncIterator[OperatorFactory]:
    """Starts the operator; yields a factory for tests that stop and start it again."""
    async with running_operator():
        yield running_operator


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], *, timeout: float = 20.0, what: str = "",
) -> Any:
    """Poll `check` until it returns something truthy (and return that) or fail at the
    deadline with the last value seen — never a fixed sleep."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")
        await asyncio.sleep(0.05)  # yield to the emulator and the operator between polls


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)
