"""`LocalCluster`: the whole local test cluster behind one object (a context manager).

Owns the start and stop order of its parts — the built binaries (build, node_build), the
control plane, the fake nodes with their DRA objects, the stand-in kubelet, with
`real_node=True` a real node (real_node) in namespaces of its own (node_sandbox), a moto S3
server — its temporary state directory, and the client helpers tests use: kubectl, helm, an
admin `ApiClient`, service-account tokens and kubeconfigs for them.

With a real node, the API server and S3 listen on the host's end of the node's link instead
of 127.0.0.1 (pods reach them there), and the fake nodes carry STAND_IN_TAINT.
"""

from __future__ import annotations

import json
import secrets
import shutil
import string
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import kubernetes.config
from kubernetes.client import ApiClient

from tests.cluster import build, node_build
from tests.cluster.control_plane import ControlPlane, RealNodeAccess
from tests.cluster.fake_nodes import (
    STAND_IN_TAINT,
    NodeSpec,
    default_nodes,
    device_class_manifests,
)
from tests.cluster.kubeconfigs import write_token_kubeconfig
from tests.cluster.kubelet import StandInKubelet
from tests.cluster.node_gpus import real_node_spec
from tests.cluster.node_sandbox import NodeSandbox
from tests.cluster.pki import Pki
from tests.cluster.processes import free_port
from tests.cluster.real_node import RealNode
from tests.cluster.rest import Rest


@dataclass(frozen=True)
class S3Server:
    """Where the moto S3 server listens and the credentials it was given."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def __repr__(self) -> str:  # keeps the secret out of logs and assertion messages
        return f"S3Server(endpoint={self.endpoint!r}, access_key={self.access_key!r})"


class CommandFailed(subprocess.CalledProcessError):
    """kubectl/helm exited non-zero; the message carries its stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}\nstdout:\n{self.output}"


def _run(argv: list[str], *, env: dict[str, str] | None, input: str | None, check: bool,
         timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, env=env,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise CommandFailed(result.returncode, argv, result.stdout, result.stderr)
    return result


class LocalCluster:
    """A real control plane + fake GPU nodes + stand-in kubelet + moto S3, on loopback.

    `kubeconfig`: where to write the admin kubeconfig (default: in the state dir).
    `state_dir`: where logs, PKI, etcd data and pod folders go (default: a temp dir that
    `stop()` removes unless `keep_state`). `real_node`: a real node (`real-1`) beside the
    fake ones (`node_binaries`: node_build's, if already at hand).
    """

    def __init__(self, *, kubeconfig: Path | None = None, state_dir: Path | None = None,
                 nodes: list[NodeSpec] | None = None, bin_dir: Path | None = None,
                 keep_state: bool = False, start_timeout: float = 120.0,
                 real_node: bool = False, node_binaries: dict[str, Path] | None = None,
                 ) -> None:
        self._owns_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="whisperfleet-cluster-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = kubeconfig or self.state_dir / "admin.kubeconfig"
        self._real_node_spec = real_node_spec() if real_node else None
        self._node_specs = [self._fake(n) for n in
                            (nodes if nodes is not None else default_nodes())]
        self._sandbox: NodeSandbox | None = None
        self._real_node: RealNode | None = None
        self._node_binaries = node_binaries
        self._bin_dir = bin_dir
        self.keep_state = keep_state
        self.start_timeout = start_timeout
        self.control_plane: ControlPlane | None = None
        self._kubelet: StandInKubelet | None = None
        self._moto: object | None = None
        self._s3: S3Server | None = None
        self._rest: Rest | None = None
        self.startup_seconds: dict[str, float] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _timed(self, name: str, began: float) -> float:
        now = time.monotonic()
        self.startup_seconds[name] = round(now - began, 2)
        return now

    def _start(self) -> None:
        began = time.monotonic()
        self._bin_dir = self._bin_dir or build.ensure_binaries()
        node_binaries: dict[str, Path] = {}
        if self._real_node_spec is not None:
            node_binaries = self._node_binaries or node_build.ensure_node_binaries()
        began = self._timed("binaries", began)
        access = None
        if self._real_node_spec is not None:
            self._sandbox = NodeSandbox(self.state_dir / "real-node", node_binaries["pause"])
            self._sandbox.start()
            access = RealNodeAccess(self._sandbox.host_ip, self._real_node_spec.name)
        # The components read their own copy: the caller may move or edit `kubeconfig`.
        self.control_plane = ControlPlane(self._bin_dir, self.state_dir,
                                          self.state_dir / "components.kubeconfig", access)
        self.control_plane.start(timeout=self.start_timeout)
        self._write_admin_kubeconfig()
        began = self._timed("control_plane", began)
        rest = self.rest()
        for device_class in device_class_manifests():
            rest.create("/apis/resource.k8s.io/v1/deviceclasses", device_class)
        self._kubelet = StandInKubelet(self.api_client(), [], self.state_dir)
        self._kubelet.start()
        for node in self._node_specs:
            self._publish_node(rest, node)
        began = self._timed("nodes_and_kubelet", began)
        if self._sandbox is not None and self._real_node_spec is not None:
            self._real_node = RealNode(self._real_node_spec, node_binaries, self._sandbox,
                                       self.control_plane, rest, self.logs_dir)
            self._real_node.start(timeout=self.start_timeout)
            began = self._timed("real_node", began)
        self._start_s3()
        self._timed("s3", began)

    def _write_admin_kubeconfig(self) -> None:
        plane = self._plane()
        write_token_kubeconfig(self.kubeconfig, server=plane.server, ca_pem=plane.pki.ca_pem,
                               token=plane.pki.admin_token)

    def _start_s3(self) -> None:
        from moto.server import ThreadedMotoServer

        port = free_port()
        address = self._plane().address  # the real node's pods reach S3 where they reach the API
        self._moto = server = ThreadedMotoServer(ip_address=address, port=port, verbose=False)
        server.start()
        alphabet = string.ascii_uppercase + string.digits
        self._s3 = S3Server(endpoint=f"http://{address}:{port}",
                            access_key="AKIA" + "".join(secrets.choice(alphabet)
                                                        for _ in range(16)),
                            secret_key=secrets.token_urlsafe(30))

    def stop(self) -> None:
        """Stop everything this started (pods first) and remove the temporary state."""
        if self._kubelet is not None:
            self._kubelet.stop()
            self._kubelet = None
        if self._real_node is not None:
            self._real_node.stop()
            self._real_node = None
        if self._sandbox is not None:
            self._sandbox.stop()  # ends every process of the node, containers included
            if self._owns_state_dir and not self.keep_state:
                self._sandbox.remove_state()
            self._sandbox = None
        if self._moto is not None:
            self._moto.stop()  # type: ignore[attr-defined]
            self._moto = None
        if self.control_plane is not None:
            self.control_plane.stop()
            self.control_plane = None
        self._rest = None
        if self._owns_state_dir and not self.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    # --- parts -------------------------------------------------------------------------------

    def _plane(self) -> ControlPlane:
        if self.control_plane is None:
            raise RuntimeError("the cluster is not running")
        return self.control_plane

    def pki(self) -> Pki:
        """The control plane's CA, keys and tokens (pki.issue signs more certificates)."""
        return self._plane().pki

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            raise RuntimeError("the cluster is not started")
        return self._bin_dir

    @property
    def server(self) -> str:
        return self._plane().server

    @property
    def kubelet(self) -> StandInKubelet:
        if self._kubelet is None:
            raise RuntimeError("the cluster is not running")
        return self._kubelet

    @property
    def s3(self) -> S3Server:
        if self._s3 is None:
            raise RuntimeError("the cluster is not running")
        return self._s3

    @property
    def s3_server(self) -> object:
        """The in-process moto server behind `s3` (tests/support/s3_reads counts its reads)."""
        if self._moto is None:
            raise RuntimeError("the cluster is not running")
        return self._moto

    @property
    def real_node(self) -> RealNode:
        if self._real_node is None:
            raise RuntimeError("the cluster has no real node running")
        return self._real_node

    @property
    def nodes(self) -> list[str]:
        real = [self._real_node_spec.name] if self._real_node_spec else []
        return [*(node.name for node in self._node_specs), *real]

    @property
    def node_kubelets(self) -> dict[str, str]:
        """Node name -> "real" (kubelet + containerd) or "stand-in" (kubelet.py)."""
        return {name: "real" if self._real_node_spec and name == self._real_node_spec.name
                else "stand-in" for name in self.nodes}

    @property
    def node_specs(self) -> list[NodeSpec]:
        return list(self._node_specs)

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def audit_events(self) -> list[dict[str, Any]]:
        """The API server's audit events so far, oldest first: every request a service
        account (the operator) made, and TranscriptionJob writes (control_plane.AUDIT_POLICY)."""
        path = self._plane().audit_log
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _publish_node(self, rest: Rest, node: NodeSpec) -> None:
        self.kubelet.add_node(node)  # first, so a pod bound at once finds its kubelet
        rest.create("/api/v1/nodes", node.node_manifest())
        if node.gpus:
            rest.create("/apis/resource.k8s.io/v1/resourceslices",
                        node.resource_slice_manifest())

    def _fake(self, node: NodeSpec) -> NodeSpec:
        """A fake node as this cluster has it: beside a real node, with the stand-in taint."""
        if self._real_node_spec is None or STAND_IN_TAINT in node.taints:
            return node
        return replace(node, taints=(*node.taints, STAND_IN_TAINT))

    def add_node(self, node: NodeSpec) -> None:
        """Add a fake node (Node, its ResourceSlice, the kubelet's knowledge of it)."""
        node = self._fake(node)
        self._publish_node(self.rest(), node)
        self._node_specs.append(node)

    def add_volume(self, namespace: str, claim_name: str, size: str = "1Gi") -> None:
        """A PersistentVolume plus a PVC bound to it (by the real binder controller).

        The stand-in kubelet backs a claim with `<state_dir>/pvcs/<namespace>/<claim_name>`,
        kept across pods; the PV's hostPath names that folder.
        """
        folder = self.state_dir / "pvcs" / namespace / claim_name
        folder.mkdir(parents=True, exist_ok=True)
        rest = self.rest()
        volume_name = f"pv-{namespace}-{claim_name}"[:253]
        rest.create("/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume_name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "", "hostPath": {"path": str(folder)},
                     "claimRef": {"namespace": namespace, "name": claim_name}}})
        rest.create(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim_name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "volumeName": volume_name, "resources": {"requests": {"storage": size}}}})

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port and state."""
        self._plane().restart_apiserver(timeout=self.start_timeout)

    # --- clients -----------------------------------------------------------------------------

    def api_client(self) -> ApiClient:
        """A new admin `kubernetes.client.ApiClient`."""
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def rest(self) -> Rest:
        """Admin access with plain dicts: get/create/strategic_merge_patch/delete by path.

        One shared client (and connection pool), so polling does not pay a TLS handshake.
        """
        if self._rest is None:
            self._rest = Rest(self.api_client())
        return self._rest

    def kubectl(self, *args: str, as_user: str | None = None, check: bool = True,
                input: str | None = None, timeout: float = 60,
                ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl with the admin kubeconfig (impersonating `as_user`)."""
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}"]
        if as_user:
            argv.append(f"--as={as_user}")
        return _run([*argv, *args], env=None, input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, input: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the built helm with its own HELM_* folders and the admin kubeconfig."""
        home = self.state_dir / "helm"
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": str(self.kubeconfig),
               **{f"HELM_{kind}_HOME": str(home / kind.lower())
                  for kind in ("CACHE", "CONFIG", "DATA")}}
        return _run([str(self.bin_dir / "helm"), *args], env=env, input=input, check=check,
                    timeout=timeout)

    def pod_log(self, namespace: str, name: str) -> str:
        """A pod's output: `kubectl logs` (all containers) on the real node, the stand-in
        kubelet's log file on a fake one ("" when there is none yet)."""
        pod = self.rest().get(f"/api/v1/namespaces/{namespace}/pods/{name}") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if node and self.node_kubelets.get(node) == "real":
            result = self.kubectl("logs", "-n", namespace, name, "--all-containers",
                                  check=False)
            return result.stdout if result.returncode == 0 else ""
        return self.kubelet.pod_log(namespace, name)

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A bound token of the service account via the TokenRequest API (min 600 s)."""
        response = self.rest().create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": seconds}})
        return str(response["status"]["token"])

    def kubeconfig_for_token(self, token: str, path: Path, namespace: str | None = None,
                             server: str | None = None) -> Path:
        """Write a kubeconfig for this cluster that authenticates with `token`; `server`:
        another address serving the API server's certificate (a proxy in front of it)."""
        return write_token_kubeconfig(path, server=server or self.server,
                                      ca_pem=self._plane().pki.ca_pem, token=token,
                                      user="token-user", namespace=namespace)
