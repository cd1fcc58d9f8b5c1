"""The pod status the stand-in kubelet reports, shaped as the real kubelet's.

Owns the strategic-merge patches for pods/status (waiting, running, terminated), the
phase a finished pod gets, and the termination message (the file's content cut to 4096
bytes; with FallbackToLogsOnError, the log tail on a failure that left the file empty).
Conditions and container statuses are merged by key, so conditions others wrote (the
scheduler's PodScheduled, the API server's DisruptionTarget) stay as they are.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.cluster.pod_env import HOST_IP, pod_ip

Obj = dict[str, Any]
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _conditions(ready: bool, *, sandbox: bool, reason: str | None, message: str | None,
                at: str) -> list[Obj]:
    conditions = [
        {"type": "PodReadyToStartContainers", "status": str(sandbox), "lastTransitionTime": at},
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
    ]
    for kind in ("ContainersReady", "Ready"):
        condition: Obj = {"type": kind, "status": str(ready), "lastTransitionTime": at}
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        conditions.append(condition)
    return conditions


def _container_status(container: Obj, state: Obj, *, running: bool,
                      container_id: str | None = None) -> Obj:
    status = {"name": container["name"], "image": container.get("image", ""), "imageID": "",
              "ready": running, "started": running, "restartCount": 0, "state": state}
    if container_id:
        status["containerID"] = container_id
    return status


def _patch(pod: Obj, status: Obj) -> Obj:
    # The uid makes the API server refuse the patch if the name now belongs to a new pod.
    return {"metadata": {"uid": pod["metadata"]["uid"]}, "status": status}


def _addresses(pod: Obj) -> Obj:
    return {"hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}],
            "podIP": pod_ip(pod), "podIPs": [{"ip": pod_ip(pod)}]}


def waiting(pod: Obj, container: Obj, reason: str, message: str, start_time: str) -> Obj:
    """Pending with the container waiting, e.g. CreateContainerConfigError."""
    name = container["name"]
    return _patch(pod, {
        "phase": "Pending", "startTime": start_time, **_addresses(pod),
        "conditions": _conditions(False, sandbox=True, reason="ContainersNotReady",
                                  message=f"containers with unready status: [{name}]",
                                  at=start_time),
        "containerStatuses": [_container_status(
            container, {"waiting": {"reason": reason, "message": message}}, running=False)],
    })


def running(pod: Obj, container: Obj, *, start_time: str, started_at: str,
            container_id: str) -> Obj:
    return _patch(pod, {
        "phase": "Running", "startTime": start_time, **_addresses(pod),
        "conditions": _conditions(True, sandbox=True, reason=None, message=None, at=started_at),
        "containerStatuses": [_container_status(
            container, {"running": {"startedAt": started_at}}, running=True,
            container_id=container_id)],
    })


def terminal_phase(pod: Obj, exit_code: int) -> str:
    # As the kubelet: a pod whose containers all exited 0 succeeded unless it was meant to
    # run forever (restartPolicy Always), which a stopped container never satisfies.
    restart_policy = pod["spec"].get("restartPolicy", "Always")
    return "Succeeded" if exit_code == 0 and restart_policy != "Always" else "Failed"


def terminated(pod: Obj, container: Obj, *, exit_code: int, reason: str, message: str,
               start_time: str, started_at: str | None, finished_at: str,
               container_id: str | None = None) -> Obj:
    state: Obj = {"exitCode": exit_code, "reason": reason, "finishedAt": finished_at,
                  "startedAt": started_at or finished_at}
    if message:
        state["message"] = message
    return _patch(pod, {
        "phase": terminal_phase(pod, exit_code), "startTime": start_time, **_addresses(pod),
        "conditions": _conditions(False, sandbox=False, reason="PodCompleted", message=None,
                                  at=finished_at),
        "containerStatuses": [_container_status(container, {"terminated": state},
                                                running=False, container_id=container_id)],
    })


def exit_reason(exit_code: int) -> str:
    return "Completed" if exit_code == 0 else "Error"


def _tail_bytes(data: bytes, limit: int) -> bytes:
    return data[-limit:] if len(data) > limit else data


def termination_message(container: Obj, message_file: Path, log_file: Path,
                        exit_code: int) -> str:
    """What the kubelet puts in state.terminated.message for this container."""
    try:
        with message_file.open("rb") as handle:
            message = handle.read(MAX_MESSAGE_BYTES)
    except OSError:
        message = b""
    policy = container.get("terminationMessagePolicy", "File")
    if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
        try:
            lines = log_file.read_bytes().splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        except OSError:
            lines = []
        message = _tail_bytes(b"".join(lines), MAX_MESSAGE_BYTES)
    return message.decode("utf-8", errors="replace")
