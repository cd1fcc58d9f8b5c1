"""A real Kubernetes node on this machine: kubelet, containerd, runc, CNI, kube-proxy, fake GPUs.

Owns starting and stopping the node's components inside its sandbox (node_sandbox), in
order: containerd (with the pause image made here), the kubelet (registering the Node with
GPU Feature Discovery's labels), kube-proxy (the `kubernetes` Service's address, and every
other ClusterIP, for pods), the stand-in GPU device plugin and DRA kubelet plugin
(go/gpuplugins); the credentials each gets (static tokens of the node's own users, a
ServiceAccount with least-privilege RBAC for the DRA plugin, certificates from the cluster's
CA), and importing image archives into containerd (`ctr images import`, nothing pulled).

What the node is not: one node only (there is no multi-node pod network); no cluster DNS;
no node-lifecycle controller (a node that stops reporting is not tainted or evicted); the
GPUs are fake (device plugin, DRA plugin and NVML stand in; CTranslate2 runs on the CPU).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.cluster import node_config, oci_archive
from tests.cluster.control_plane import KUBELET_CLIENT_USER, ControlPlane, RealNodeAccess
from tests.cluster.fake_nodes import NodeSpec
from tests.cluster.kubeconfigs import write_token_kubeconfig
from tests.cluster.node_build import cni_bin_dir
from tests.cluster.node_gpus import node_labels, write_plugin_config
from tests.cluster.node_sandbox import NodeSandbox
from tests.cluster.pki import issue
from tests.cluster.processes import ServerProcess
from tests.cluster.rest import Rest
from tests.cluster.waiting import eventually

Obj = dict[str, Any]
DRA_DRIVER_ACCOUNT = ("kube-system", "whisperfleet-fake-gpu-driver")
# What a DRA kubelet plugin's helper calls: claims it prepares, the node's ResourceSlices,
# and the Node (their owner).
DRA_DRIVER_RULES = [
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["get"]},
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # iptables, mount, ip: Debian's


def rbac_objects() -> list[tuple[str, Obj]]:
    """(collection path, object): the API server may use the kubelet's API (logs, exec),
    and the DRA plugin's ServiceAccount may do what its helper does, nothing more."""
    namespace, account = DRA_DRIVER_ACCOUNT
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    role = "whisperfleet:fake-gpu-driver"
    return [
        (f"{rbac}/clusterrolebindings", {
            "metadata": {"name": "whisperfleet:kube-apiserver-kubelet-client"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:kubelet-api-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": KUBELET_CLIENT_USER}]}),
        (f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": account}}),
        (f"{rbac}/clusterroles", {"metadata": {"name": role}, "rules": DRA_DRIVER_RULES}),
        (f"{rbac}/clusterrolebindings", {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account,
                          "namespace": namespace}]}),
    ]


def _raise_failure(outcome: object) -> None:
    # A probe returns a component's failure instead of raising it: `eventually` would
    # take an exception for "not yet" and wait out its whole timeout.
    if isinstance(outcome, Exception):
        raise outcome


class RealNode:
    """The node's components; `start` returns once the Node is Ready with its GPUs."""

    def __init__(self, spec: NodeSpec, binaries: dict[str, Path], sandbox: NodeSandbox,
                 plane: ControlPlane, rest: Rest, logs_dir: Path) -> None:
        assert plane.real_node is not None, "the control plane was not made for a real node"
        self.spec = spec
        self.binaries = binaries
        self.sandbox = sandbox
        self.plane = plane
        self.access: RealNodeAccess = plane.real_node
        self.rest = rest
        self.logs_dir = logs_dir
        self.files_dir = sandbox.state_dir / "files"
        self.components: list[ServerProcess] = []
        self.startup_seconds: dict[str, float] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    def _kubeconfig(self, name: str, token: str) -> Path:
        return write_token_kubeconfig(self.files_dir / f"{name}.kubeconfig",
                                      server=self.plane.server, ca_pem=self.plane.pki.ca_pem,
                                      token=token, user=name)

    def _server(self, name: str, argv: list[str]) -> ServerProcess:
        env = {"PATH": f"{self.binaries['containerd'].parent}:{SYSTEM_PATH}"}
        server = self.sandbox.server(name, argv, self.logs_dir / f"{name}.log", env=env)
        self.components.append(server)
        return server

    def ctr(self, *args: str) -> str:
        """Run containerd's `ctr` in the node (namespace k8s.io, where the kubelet's are)."""
        return self.sandbox.run([str(self.binaries["ctr"]), "--address",
                                 node_config.CONTAINERD_SOCKET, "--namespace", "k8s.io", *args])

    def import_image(self, archive: Path) -> None:
        """Load an image archive (OCI or docker-archive) into containerd, as a pulled image."""
        self.ctr("images", "import", str(archive))

    def _timed(self, name: str, began: float) -> float:
        now = time.monotonic()
        self.startup_seconds[name] = round(now - began, 2)
        return now

    def start(self, timeout: float = 180.0) -> None:
        began = time.monotonic()
        self.files_dir.mkdir(parents=True, exist_ok=True)
        for path, body in rbac_objects():
            self.rest.create(path, body)
        self._start_containerd(timeout)
        began = self._timed("containerd", began)
        self._start_kubelet()
        self._start_kube_proxy()
        self._start_gpu_plugins()
        self._wait_ready(timeout)
        self._timed("kubelet_ready", began)

    def _start_containerd(self, timeout: float) -> None:
        conf_dir = self.files_dir / "cni"
        conf_dir.mkdir(exist_ok=True)
        (conf_dir / "10-whisperfleet.conflist").write_text(node_config.cni_conflist())
        config = self.files_dir / "containerd.toml"
        config.write_text(node_config.containerd_config(
            runc=self.binaries["runc"], cni_bin_dir=cni_bin_dir(self.binaries),
            cni_conf_dir=conf_dir))
        server = self._server("containerd", [str(self.binaries["containerd"]),
                                             "--config", str(config)])
        server.start()

        def answering() -> Exception | bool:
            if not server.running():
                return server.failure("exited")
            self.ctr("version")
            return True

        _raise_failure(eventually(answering, timeout=timeout, what="containerd to answer"))
        pause = oci_archive.ImageSpec(
            node_config.PAUSE_IMAGE,
            (oci_archive.ImageFile("pause", self.binaries["pause"].read_bytes()),),
            entrypoint=("/pause",), user="65535:65535")
        self.import_image(oci_archive.write_archive(pause, self.files_dir / "pause.tar"))

    def _start_kubelet(self) -> None:
        cert, key = issue(self.plane.pki, f"kubelet-{self.name}",
                          ip_addresses=(self.sandbox.node_ip,), dns_names=(self.name,))
        files = node_config.NodeFiles(
            kubeconfig=self._kubeconfig("kubelet",
                                        self.plane.node_tokens[self.access.kubelet_user]),
            serving_cert=cert, serving_key=key, client_ca=self.plane.pki.ca_cert,
            cni_conf_dir=self.files_dir / "cni")
        config = self.files_dir / "kubelet.json"
        config.write_text(node_config.kubelet_config(
            files, node_ip=self.sandbox.node_ip, cgroup_root=self.sandbox.cgroup_root))
        self._server("kubelet", [
            str(self.binaries["kubelet"]), f"--config={config}",
            f"--kubeconfig={files.kubeconfig}", f"--hostname-override={self.name}",
            f"--node-ip={self.sandbox.node_ip}", f"--node-labels={node_labels(self.spec)}",
            "--v=1",
        ]).start()

    def _start_kube_proxy(self) -> None:
        config = self.files_dir / "kube-proxy.json"
        config.write_text(node_config.kube_proxy_config(
            kubeconfig=self._kubeconfig("kube-proxy",
                                        self.plane.node_tokens["system:kube-proxy"]),
            node_name=self.name))
        self._server("kube-proxy", [str(self.binaries["kube-proxy"]), f"--config={config}",
                                    "--v=1"]).start()

    def _start_gpu_plugins(self) -> None:
        config = write_plugin_config(self.spec, self.files_dir / "fake-gpus.json")
        self._server("fake-device-plugin", [str(self.binaries["fake-device-plugin"]),
                                            f"--config={config}"]).start()
        namespace, account = DRA_DRIVER_ACCOUNT
        token = self.rest.create(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": 24 * 3600}})["status"]["token"]
        self._server("fake-dra-plugin", [
            str(self.binaries["fake-dra-plugin"]), f"--config={config}",
            f"--kubeconfig={self._kubeconfig('fake-dra-plugin', token)}",
            f"--cdi-dir={node_config.CDI_DIR}"]).start()

    def _wait_ready(self, timeout: float) -> None:
        wanted = self.spec.extended_resources()

        def ready() -> Obj | Exception | None:
            for component in self.components:
                if not component.running():
                    return component.failure("exited")
            node = self.rest.get(f"/api/v1/nodes/{self.name}")
            if node is None:
                return None
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            allocatable = node["status"].get("allocatable", {})
            if conditions.get("Ready") != "True" or any(
                    allocatable.get(k) != v for k, v in wanted.items()):
                return None
            slices = self.rest.get("/apis/resource.k8s.io/v1/resourceslices"
                                   f"?fieldSelector=spec.nodeName={self.name}") or {}
            return node if slices.get("items") else None

        _raise_failure(eventually(
            ready, timeout=timeout, interval=0.5,
            what=f"node {self.name} Ready with {json.dumps(wanted)} and its ResourceSlice"))

    def stop(self) -> None:
        """Stop the components (the kubelet first), then end everything in the sandbox."""
        for component in reversed(self.components):
            component.stop(grace_seconds=5)
        self.components.clear()
