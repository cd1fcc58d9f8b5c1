"""Kueue's manager on the local cluster: a process on the host, with its webhooks reachable by the
API server on loopback.

Owns how the manager is installed and run: its namespace (`kueue-system`), ServiceAccount and
ClusterRole (Kueue's own, kueue_manifests.py) and a token for them — least privilege, as in a
real install, not the admin's — its CRDs and webhook configurations (pointed at the process),
its serving certificates (signed by the cluster's CA, pki.issue), its Configuration (`CONFIG`)
and its life: start, wait until ready, stop.

Why a process and not a pod: the fast tests run on fake nodes, whose stand-in kubelet runs no
images; the manager binary here is the one Kueue releases, built from its module, and it
talks to the API server and serves its webhooks exactly as in a pod — only the Service in
front of the webhooks becomes a URL. One wrinkle: without Kueue's internal certificate
management (which would need that Service), v0.17 reads its metrics certificate from the fixed
path /etc/kueue/metrics/certs. The manager therefore runs in a mount namespace of its own
(`unshare --mount`) whose /etc is an overlay on the host's: the certificate appears there for
Kueue only, and the host's /etc is never written.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import kueue_manifests
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.pki import issue
from tests.cluster.processes import ServerProcess, free_port
from tests.cluster.waiting import eventually

Obj = dict[str, Any]
NAMESPACE = "kueue-system"
SERVICE_ACCOUNT = "kueue-controller-manager"
METRICS_CERT_PATH = Path("/etc/kueue/metrics/certs")  # fixed in Kueue v0.17's cmd/kueue
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
TOKEN_SECONDS = 24 * 3600  # outlives any test session
# Kueue's alpha features the local cluster turns on: elastic batch Jobs (`kubectl scale` of an
# admitted job, README "Queueing with Kueue") and DRA claims counted against quota. Off: the
# visibility API server (pending-workload listings, an APIService nothing here uses), whose
# certificate v0.17 reads from the fixed path /visibility without internal cert management.
FEATURE_GATES = {"ElasticJobsViaWorkloadSlices": True, "DynamicResourceAllocation": True,
                 "VisibilityOnDemand": False}
# DRA claims of these DeviceClasses count as `nvidia.com/gpu`, the quota device plugin GPUs
# count against (fake_nodes.device_class_manifests: whole GPUs).
DEVICE_CLASS_MAPPINGS = [{"name": "nvidia.com/gpu", "deviceClassNames": ["gpu.nvidia.com"]}]


def _established(crd: Obj | None) -> bool:
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in ((crd or {}).get("status") or {}).get("conditions") or [])


def manager_config(*, webhook_port: int, health_port: int, metrics_port: int,
                   cert_dir: Path) -> Obj:
    """Kueue's Configuration for the local cluster: one manager (no leader election), the
    certificates made here (no internal cert management), batch Jobs only."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        # Only Jobs carrying kueue.x-k8s.io/queue-name are Kueue's (its default).
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
        # No waitForPodsReady (off, Kueue's default): it would hold admissions until the
        # admitted pods are ready, which only adds delay where pods start at once.
        "resources": {"deviceClassMappings": DEVICE_CLASS_MAPPINGS},
        "featureGates": FEATURE_GATES,
    }


class KueueManager:
    """Kueue v0.17's manager for a running LocalCluster; `start()` installs and runs it."""

    def __init__(self, cluster: LocalCluster, bin_dir: Path) -> None:
        self.cluster = cluster
        self.binary = bin_dir / "kueue"
        self.config_dir = bin_dir.parent / "config"
        self.state_dir = cluster.state_dir / "kueue"
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.process: ServerProcess | None = None

    @property
    def webhook_url(self) -> str:
        return f"https://127.0.0.1:{self.webhook_port}"

    def start(self, timeout: float = 120) -> KueueManager:
        ca_pem = self.cluster.pki().ca_pem
        self._install_rbac()
        crds = kueue_manifests.crds(self.config_dir, self.webhook_url, ca_pem)
        for crd in crds:
            self._apply(CRDS, crd)
        for configuration in kueue_manifests.webhook_configurations(
                self.config_dir, self.webhook_url, ca_pem):
            kind = configuration["kind"].lower() + "s"
            self._apply(f"/apis/admissionregistration.k8s.io/v1/{kind}", configuration)
        for crd in crds:  # the manager fails at once on a kind the API does not serve yet
            name = crd["metadata"]["name"]
            eventually(lambda name=name: _established(self.cluster.rest().get(f"{CRDS}/{name}")),
                       timeout=timeout, what=f"CRD {name} to be established")
        self.process = self._process()
        self.process.start()
        self.process.wait_healthy(f"http://127.0.0.1:{self.health_port}/readyz",
                                  timeout=timeout)
        self._wait_webhooks_answer(timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace_seconds=5)
            self.process = None

    # --- installing -------------------------------------------------------------------------

    def _apply(self, path: str, body: Obj) -> None:
        rest = self.cluster.rest()
        existing = rest.get(f"{path}/{body['metadata']['name']}")
        if existing is None:
            rest.create(path, body)
            return
        body = {**body, "metadata": {**body["metadata"],
                                     "resourceVersion": existing["metadata"]["resourceVersion"]}}
        rest.replace(f"{path}/{body['metadata']['name']}", body)

    def _install_rbac(self) -> None:
        rest = self.cluster.rest()
        if rest.get(f"/api/v1/namespaces/{NAMESPACE}") is None:
            rest.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": NAMESPACE}})
        if rest.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}") is None:
            rest.create(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": SERVICE_ACCOUNT}})
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        for doc in kueue_manifests.manager_namespaced_rbac(self.config_dir, NAMESPACE):
            plural = "roles" if doc["kind"] == "Role" else "rolebindings"
            self._apply(f"{rbac}/namespaces/{NAMESPACE}/{plural}", doc)
        role = kueue_manifests.manager_cluster_role(self.config_dir)
        self._apply("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
        self._apply("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role["metadata"]["name"].replace("-role", "-rolebinding")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role["metadata"]["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                          "namespace": NAMESPACE}]})

    def _certificates(self) -> tuple[Path, Path]:
        """The webhook server's and the metrics server's certificate folders (tls.crt/key)."""
        pki = self.cluster.pki()
        folders = []
        for name in ("kueue-webhook", "kueue-metrics"):
            cert, key = issue(pki, name, ip_addresses=("127.0.0.1",), dns_names=("localhost",))
            folder = self.state_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(cert, folder / "tls.crt")
            shutil.copy(key, folder / "tls.key")
            folders.append(folder)
        return folders[0], folders[1]

    def _process(self) -> ServerProcess:
        webhook_certs, metrics_certs = self._certificates()
        config = self.state_dir / "config.yaml"
        config.write_text(yaml.safe_dump(manager_config(
            webhook_port=self.webhook_port, health_port=self.health_port,
            metrics_port=free_port(), cert_dir=webhook_certs)), encoding="utf-8")
        token = self.cluster.token_for(NAMESPACE, SERVICE_ACCOUNT, TOKEN_SECONDS)
        kubeconfig = self.cluster.kubeconfig_for_token(token, self.state_dir / "kubeconfig")
        upper, work = self.state_dir / "etc-upper", self.state_dir / "etc-work"
        for folder in (upper, work):
            folder.mkdir(parents=True, exist_ok=True)
        manager = [str(self.binary), f"--config={config}", f"--kubeconfig={kubeconfig}"]
        script = " && ".join([
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc",
            f"mkdir -p {METRICS_CERT_PATH}",
            f"cp {metrics_certs}/tls.crt {metrics_certs}/tls.key {METRICS_CERT_PATH}/",
            "exec " + shlex.join(manager),
        ])
        return ServerProcess("kueue", ["unshare", "--mount", "--propagation", "private",
                                       "sh", "-c", script],
                             self.cluster.logs_dir / "kueue.log")

    def _wait_webhooks_answer(self, timeout: float) -> None:
        # Ready means the webhook server listens; a dry-run ResourceFlavor goes through
        # Kueue's mutating and validating webhooks, so the API server reaches them too.
        probe = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
                 "metadata": {"name": "webhook-probe"}}
        rest = self.cluster.rest()
        eventually(lambda: rest.create("/apis/kueue.x-k8s.io/v1beta2/resourceflavors"
                                       "?dryRun=All", probe),
                   timeout=timeout, what="Kueue's webhooks to answer the API server")
