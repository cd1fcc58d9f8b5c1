"""whisperfleet installed as the chart installs it, and its operator run as the chart runs it.

`install_chart` runs the real helm against the local cluster: the CRD comes from the chart,
RBAC from its templates. There is no Deployment controller and no container runtime, so
`OperatorProcess` starts the Deployment's own command (kopf) as a local process, with the
Deployment's environment and a token of the chart's ServiceAccount (TokenRequest): every API
call the operator makes passes the chart's RBAC, as in a cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.local_cluster import LocalCluster
from tests.cluster.manifests import POD_SECURITY_LABELS
from tests.cluster.processes import free_port
from tests.cluster.waiting import eventually
from tests.support.paths import CHART

CRD_NAME = "transcriptionjobs.whisperfleet.io"
Obj = dict[str, Any]


@dataclass
class Release:
    name: str
    namespace: str
    service_account: str
    args: list[str]  # the operator container's command + args
    env: dict[str, str]  # its literal env values


def install_chart(cluster: LocalCluster, name: str, namespace: str,
                  values: dict[str, Any] | None = None, chart: Path = CHART) -> Release:
    """`helm install` into `namespace` (created, PodSecurity restricted), then read back the
    Deployment helm made: the operator is started from exactly its command and env."""
    if cluster.rest().get(f"/api/v1/namespaces/{namespace}") is None:
        cluster.rest().create("/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": POD_SECURITY_LABELS}})
    values_file = cluster.state_dir / f"values-{name}.json"
    values_file.write_text(json.dumps(values or {}))
    cluster.helm("install", name, str(chart), "--namespace", namespace, "-f", str(values_file))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    return release_of(cluster, name, namespace)


def release_of(cluster: LocalCluster, name: str, namespace: str) -> Release:
    """The release as its Deployment stands now (after an install or an upgrade)."""
    deployments = json.loads(cluster.kubectl(
        "get", "deployments", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}",
        "-o", "json").stdout)["items"]
    (deployment,) = deployments
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return Release(name=name, namespace=namespace, service_account=pod["serviceAccountName"],
                   args=[*container["command"], *container.get("args", [])],
                   env={e["name"]: e["value"] for e in container.get("env", []) if "value" in e})


@dataclass
class OperatorProcess:
    """The chart's operator container as a local process (see the module docstring)."""

    cluster: LocalCluster
    release: Release
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    server: str | None = None  # where it reaches the API server; None: directly
    log_path: Path = field(init=False)
    metrics_url: str = ""  # the operator's own /metrics, on a free loopback port

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "operator.log"

    def start(self) -> OperatorProcess:
        token = self.cluster.token_for(self.release.namespace, self.release.service_account,
                                       seconds=24 * 3600)
        kubeconfig = self.cluster.kubeconfig_for_token(token, self.workdir / "kubeconfig",
                                                       server=self.server)
        port = free_port()
        args = [f"--liveness=http://127.0.0.1:{port}/healthz" if a.startswith("--liveness=")
                else a for a in self.release.args]
        executable = Path(sys.executable).parent / args[0]  # kopf, from this environment
        metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        env = {"PATH": f"{executable.parent}{os.pathsep}/usr/bin:/bin", "HOME": str(self.workdir),
               "KUBECONFIG": str(kubeconfig), **self.release.env,
               "WHISPERFLEET_OPERATOR_METRICS_PORT": str(metrics_port),
               "WHISPERFLEET_OPERATOR_METRICS_HOST": "127.0.0.1"}
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            self.process = subprocess.Popen([str(executable), *args[1:]], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.workdir,
                                            start_new_session=True)

        def healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    return True
            except OSError:
                return False

        eventually(healthy, timeout=60, what="the operator's liveness endpoint")
        return self

    def stop(self, *, kill: bool = False) -> None:
        """Stop it (SIGTERM, as a rollout would; `kill`: SIGKILL, as a node failure would)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
