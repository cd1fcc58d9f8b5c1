"""The stand-in kubelet's view of the pods bound to nodes: list, then watch, then relist.

Owns a cache of bound pods (uid -> the object as last seen) kept current by a list+watch
loop that relists after every watch timeout (a periodic resync), after errors and after
the API server restarts, and reports each uid that changed — or vanished — to a callback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api

Obj = dict[str, Any]
BOUND_PODS = "spec.nodeName!="
RESYNC_SECONDS = 20  # each watch ends after this long and the loop relists
RETRY_SECONDS = 0.5


class PodWatch:
    """Runs the list+watch loop in a daemon thread; `changed(uid)` is called per change."""

    def __init__(self, api_client: ApiClient, changed: Callable[[str], None],
                 log: logging.Logger) -> None:
        self._core = CoreV1Api(api_client)
        self._changed = changed
        self._log = log
        self._pods: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._current: watch.Watch | None = None
        self._thread = threading.Thread(target=self._loop, name="kubelet-pod-watch",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        # An open watch would hold the API server's graceful shutdown; end the read now.
        response = getattr(self._current, "_resp", None)
        with contextlib.suppress(Exception):
            response.shutdown()  # type: ignore[union-attr]  # urllib3 >= 2.3
        self._thread.join(timeout=1)

    def get(self, uid: str) -> Obj | None:
        with self._lock:
            return self._pods.get(uid)

    def _relist(self) -> str:
        response = self._core.list_pod_for_all_namespaces(
            field_selector=BOUND_PODS, _preload_content=False, _request_timeout=30)
        body = json.loads(response.data)
        seen = {pod["metadata"]["uid"]: pod for pod in body["items"]}
        with self._lock:
            gone = set(self._pods) - set(seen)
            self._pods = seen
        for uid in [*seen, *gone]:
            self._changed(uid)
        return str(body["metadata"]["resourceVersion"])

    def _watch(self, resource_version: str) -> None:
        self._current = current = watch.Watch()
        # deserialize=False: plain dicts, every field kept; an ERROR event (e.g. 410 Gone)
        # raises, and the loop relists.
        stream = current.stream(
            self._core.list_pod_for_all_namespaces, field_selector=BOUND_PODS,
            resource_version=resource_version, timeout_seconds=RESYNC_SECONDS,
            _request_timeout=RESYNC_SECONDS + 10, deserialize=False)
        for event in stream:
            if self._stopping.is_set():
                return
            pod = event["object"]
            uid = pod["metadata"]["uid"]
            with self._lock:
                if event["type"] == "DELETED":
                    self._pods.pop(uid, None)
                else:
                    self._pods[uid] = pod
            self._changed(uid)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._watch(self._relist())
            except Exception as error:  # the API server restarting, a timeout, ...
                if not self._stopping.is_set():
                    self._log.info("pod watch interrupted (%s); relisting",
                                   type(error).__name__)
                    self._stopping.wait(RETRY_SECONDS)
