"""A stand-in kubelet: runs the pods the real scheduler bound to the fake nodes as local processes.

What it does, as a kubelet would: watches pods bound to its nodes (relisting after errors,
timeouts and API server restarts); admits each (assigning GPUs, see gpu_allocation); builds
the container's environment (pod_env) plus what the node provides (PATH of this Python
environment, HF_HUB_OFFLINE=1, the fake NVML of the node and on GPU nodes the GPU-on-CPU
test switch, NVIDIA_VISIBLE_DEVICES for allocated devices); runs `command` + `args` in its
own session in a per-pod folder; reports Pending/Running/Succeeded/Failed through
pods/status (pod_status); stops the process group on deletion (SIGTERM, the grace period
capped at 10 s, SIGKILL), then deletes the pod with grace period 0.

What it does NOT do: pull images or know their entrypoints (a container needs `command`);
apply cgroups or resource limits; give a read-only root filesystem, users/uids,
capabilities or seccomp (securityContext is only admitted by the API server, not applied);
network namespaces (every pod shares the host's loopback; hostIP is 127.0.0.1 and each
pod gets its own podIP in 127.0.0.0/8, derived from its uid, to bind to);
probes; `kubectl logs`/exec/attach/port-forward (use `pod_log`); container restarts
(restartPolicy OnFailure/Always: a stopped container ends the pod); init or sidecar
containers and more than one container per pod; service-link or KUBERNETES_SERVICE_* env;
projected/downwardAPI volumes (service-account tokens are not mounted); node heartbeats
or node status. There is no mount namespace: volumes are host folders, and only env
VALUES equal to or under a mountPath (or equal to terminationMessagePath) are rewritten to
them — paths in command/args or hard-coded in programs are not. All of that is what the
real node (real_node.py, `LocalCluster(real_node=True)`) does with a real kubelet and
containerd; this stand-in stays for the fast tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from tests.cluster import pod_status
from tests.cluster.fake_nodes import NodeSpec
from tests.cluster.gpu_allocation import AllocationError, GpuAllocator
from tests.cluster.pod_env import ContainerConfigError, EnvBuilder, configmap_data, secret_data
from tests.cluster.pod_process import StartFailure, launch_spec
from tests.cluster.pod_watch import PodWatch
from tests.cluster.processes import stop_process_group, stop_process_groups
from tests.cluster.rest import Rest

Obj = dict[str, Any]
MAX_GRACE_SECONDS = 10
START_ERROR_EXIT_CODE = 128  # what container runtimes report when exec fails


@dataclass
class PodRun:
    """The kubelet's record of one pod (by uid) it admitted."""

    pod_key: str  # "namespace/name"
    directory: Path
    start_time: str
    process: subprocess.Popen[bytes] | None = None
    container_id: str | None = None
    started_at: str | None = None
    running_reported: bool = False
    waiting_reported: str | None = None
    exit_code: int | None = None
    exit_reason: str | None = None
    exit_message: str | None = None
    finished_at: str | None = None
    terminating: bool = False
    reported: bool = False  # the terminal status is written
    delete_requested: bool = False

    @property
    def log_path(self) -> Path:
        return self.directory / "container.log"

    @property
    def message_path(self) -> Path:
        return self.directory / "termination-log"


class StandInKubelet:
    """Runs bound pods of `nodes` as processes; see the module docstring for its limits."""

    def __init__(self, api_client: ApiClient, nodes: list[NodeSpec], state_dir: Path) -> None:
        self._rest = Rest(api_client)
        self._nodes = {node.name: node for node in nodes}
        self.state_dir = state_dir
        self._allocator = GpuAllocator(self._rest.get)
        self._env = EnvBuilder(self._read("secrets", secret_data),
                               self._read("configmaps", configmap_data))
        self._runs: dict[str, PodRun] = {}  # uid -> what this kubelet did with it
        self._latest_run: dict[str, PodRun] = {}  # "namespace/name" -> newest run
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()
        self._stopping = threading.Event()
        self.log_path = state_dir / "logs" / "kubelet.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = logging.getLogger(f"{__name__}.{id(self):x}")
        self._log.propagate = False
        self._log.setLevel(logging.INFO)
        self._handler = logging.FileHandler(self.log_path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._log.addHandler(self._handler)
        self._watch = PodWatch(api_client, self._queue.put, self._log)
        self._worker = threading.Thread(target=self._work_loop, name="kubelet-worker",
                                        daemon=True)

    # --- public ------------------------------------------------------------------------------

    def start(self) -> None:
        self._watch.start()
        self._worker.start()

    def stop(self) -> None:
        """Stop watching and kill every pod process still running."""
        self._stopping.set()
        self._watch.stop()
        with self._lock:
            processes = [run.process for run in self._runs.values() if run.process is not None]
        stop_process_groups(processes, grace_seconds=2)
        self._worker.join(timeout=2)
        self._log.removeHandler(self._handler)
        self._handler.close()

    def add_node(self, node: NodeSpec) -> None:
        with self._lock:
            self._nodes[node.name] = node

    def node(self, name: str) -> NodeSpec:
        return self._nodes[name]

    def allocations(self) -> dict[str, list[str]]:
        """Devices held right now: "namespace/name" -> device UUIDs."""
        return self._allocator.allocations()

    def pod_log(self, namespace: str, name: str) -> str:
        """stdout+stderr of the newest container run for this pod name ("" if none)."""
        run = self._latest_run.get(f"{namespace}/{name}")
        if run is None or not run.log_path.exists():
            return ""
        return run.log_path.read_text(encoding="utf-8", errors="replace")

    def pod_pid(self, namespace: str, name: str) -> int | None:
        """The pid (= process group id) the newest run of this pod was started with."""
        run = self._latest_run.get(f"{namespace}/{name}")
        return None if run is None or run.process is None else run.process.pid

    # --- syncing ------------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                uid = self._queue.get(timeout=1.0)
            except queue.Empty:
                with self._lock:  # retry what is not settled: waiting pods, failed writes
                    pending = [uid for uid, run in self._runs.items() if not run.delete_requested]
                for uid in pending:
                    self._queue.put(uid)
                continue
            try:
                self._sync(uid)
            except Exception:
                self._log.exception("syncing pod %s failed; will retry", uid)

    # --- one pod -----------------------------------------------------------------------------

    def _sync(self, uid: str) -> None:
        pod = self._watch.get(uid)
        with self._lock:
            run = self._runs.get(uid)
        if pod is None:
            if run is not None:
                self._forget(uid, run)
            return
        if pod["spec"].get("nodeName") not in self._nodes:
            return
        meta = pod["metadata"]
        deleting = meta.get("deletionTimestamp") is not None
        if run is None:
            if deleting or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                if deleting:
                    self._delete(pod)
                return
            run = self._admit(pod)
        if run.reported or (deleting and run.process is None and run.exit_code is None):
            if deleting and not run.delete_requested:
                self._allocator.release(uid)
                self._delete(pod)
                run.delete_requested = True
            return
        if deleting and run.exit_code is None:
            if not run.terminating:
                run.terminating = True
                grace = meta.get("deletionGracePeriodSeconds",
                                 pod["spec"].get("terminationGracePeriodSeconds", 30))
                threading.Thread(target=self._terminate, args=(run, grace), daemon=True).start()
            return
        if run.process is None and run.exit_code is None:
            self._start(pod, run)
        elif run.exit_code is None and not run.running_reported:
            self._report_running(pod, run)
        if run.exit_code is not None:
            self._report_terminated(pod, run)
            if deleting:
                self._delete(pod)
                run.delete_requested = True

    def _admit(self, pod: Obj) -> PodRun:
        meta = pod["metadata"]
        folder = f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        directory = self.state_dir / "pods" / folder
        directory.mkdir(parents=True, exist_ok=True)
        run = PodRun(pod_key=f"{meta['namespace']}/{meta['name']}", directory=directory,
                     start_time=pod_status.now())
        with self._lock:
            self._runs[meta["uid"]] = run
            self._latest_run[run.pod_key] = run
        self._log.info("admitted %s on %s", run.pod_key, pod["spec"]["nodeName"])
        return run

    def _start(self, pod: Obj, run: PodRun) -> None:
        containers = pod["spec"]["containers"]
        container = containers[0]
        node = self._nodes[pod["spec"]["nodeName"]]
        try:
            if len(containers) != 1 or pod["spec"].get("initContainers"):
                raise StartFailure("the stand-in kubelet runs pods of exactly one container "
                                   "and no init containers")
            devices = self._allocator.allocate(pod, container, node)
            launch = launch_spec(pod, container, node, devices, pod_dir=run.directory,
                                 message_file=run.message_path, state_dir=self.state_dir,
                                 env_builder=self._env)
        except AllocationError as error:
            self._reject(pod, run, str(error))
            return
        except ContainerConfigError as error:
            if run.waiting_reported != str(error):
                self._write_status(pod, pod_status.waiting(
                    pod, container, error.reason, str(error), run.start_time))
                run.waiting_reported = str(error)
                self._log.info("%s waits: %s", run.pod_key, error)
            return
        except StartFailure as error:
            self._allocator.release(pod["metadata"]["uid"])
            self._finish(run, START_ERROR_EXIT_CODE, "StartError", str(error))
            self._report_terminated(pod, run)
            return
        run.message_path.touch()
        with run.log_path.open("ab") as log:
            process = subprocess.Popen(launch.argv, cwd=launch.workdir, env=launch.env,
                                       stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        run.process = process
        run.container_id = f"standin://{pod['metadata']['uid']}-{process.pid}"
        run.started_at = pod_status.now()
        self._log.info("started %s: pid %d, devices %s", run.pod_key, process.pid, devices)
        threading.Thread(target=self._reap, args=(pod["metadata"]["uid"], run),
                         daemon=True).start()
        self._report_running(pod, run)

    def _reap(self, uid: str, run: PodRun) -> None:
        assert run.process is not None
        code = run.process.wait()
        # The container's other processes die with it, as in a PID namespace.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.process.pid, signal.SIGKILL)
        exit_code = code if code >= 0 else 128 - code  # killed by signal N -> 128+N
        self._finish(run, exit_code, pod_status.exit_reason(exit_code), None)
        self._allocator.release(uid)
        self._log.info("%s exited with %d", run.pod_key, exit_code)
        self._queue.put(uid)

    def _terminate(self, run: PodRun, grace: int) -> None:
        assert run.process is not None
        self._log.info("stopping %s (grace %ss)", run.pod_key, grace)
        stop_process_group(run.process, grace_seconds=min(max(grace, 0), MAX_GRACE_SECONDS))

    @staticmethod
    def _finish(run: PodRun, exit_code: int, reason: str, message: str | None) -> None:
        run.exit_reason, run.exit_message = reason, message
        run.finished_at = pod_status.now()
        run.exit_code = exit_code

    # --- writing to the API ------------------------------------------------------------------

    def _status_path(self, pod: Obj) -> str:
        meta = pod["metadata"]
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"

    def _write_status(self, pod: Obj, patch: Obj) -> None:
        self._rest.strategic_merge_patch(self._status_path(pod), patch)

    def _report_running(self, pod: Obj, run: PodRun) -> None:
        assert run.started_at is not None and run.container_id is not None
        self._write_status(pod, pod_status.running(
            pod, pod["spec"]["containers"][0], start_time=run.start_time,
            started_at=run.started_at, container_id=run.container_id))
        run.running_reported = True

    def _report_terminated(self, pod: Obj, run: PodRun) -> None:
        if run.reported:
            return
        assert run.exit_code is not None and run.finished_at is not None
        container = pod["spec"]["containers"][0]
        message = run.exit_message or pod_status.termination_message(
            container, run.message_path, run.log_path, run.exit_code)
        self._write_status(pod, pod_status.terminated(
            pod, container, exit_code=run.exit_code, reason=run.exit_reason or "Error",
            message=message, start_time=run.start_time, started_at=run.started_at,
            finished_at=run.finished_at, container_id=run.container_id))
        run.reported = True
        self._log.info("%s reported terminated (exit %d)", run.pod_key, run.exit_code)

    def _reject(self, pod: Obj, run: PodRun, message: str) -> None:
        self._write_status(pod, {"metadata": {"uid": pod["metadata"]["uid"]}, "status": {
            "phase": "Failed", "reason": "UnexpectedAdmissionError",
            "message": f"Pod was rejected: {message}", "startTime": run.start_time}})
        run.reported = True
        self._log.info("%s rejected: %s", run.pod_key, message)

    def _delete(self, pod: Obj) -> None:
        meta = pod["metadata"]
        # Finalizers (the Job controller's job-tracking) still hold it until they are removed.
        self._rest.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                          {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}})
        self._log.info("deleted %s/%s", meta["namespace"], meta["name"])

    def _forget(self, uid: str, run: PodRun) -> None:
        """The pod is gone from the API: make sure nothing of it keeps running."""
        if run.process is not None and run.exit_code is None:
            threading.Thread(target=stop_process_group, args=(run.process, 2),
                             daemon=True).start()
        self._allocator.release(uid)
        with self._lock:
            self._runs.pop(uid, None)

    def _read(self, resource: str, decode: Any) -> Any:
        def read(namespace: str, name: str) -> dict[str, str] | None:
            obj = self._rest.get(f"/api/v1/namespaces/{namespace}/{resource}/{name}")
            return None if obj is None else decode(obj)
        return read

