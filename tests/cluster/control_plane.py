"""The real Kubernetes control plane on loopback: etcd, API server, controller manager, scheduler.

Owns their command lines (which flags, and why), their start order and readiness checks,
restarting the API server in place, and stopping all of them. Every component logs to
`<state_dir>/logs/<name>.log`; the admin kubeconfig (a `system:masters` token, CA embedded)
is written where the caller asks.

With a real node (`RealNodeAccess`), the API server listens on the host's address of the
link to the node's network namespace instead of loopback (pods reach it there, through the
`kubernetes` Service), authorizes kubelets with the Node authorizer, shows kubelets a client
certificate, and the controllers that a Deployment and projected service-account tokens
need run too.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.kubeconfigs import write_token_kubeconfig
from tests.cluster.pki import Pki, add_token, issue, write_pki
from tests.cluster.processes import ServerProcess, free_port

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# Only the controllers the tests rely on. Deliberately absent: the node-lifecycle
# controller (the fake nodes send no heartbeats, so it would taint and evict them).
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "resourceclaim-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "ttl-after-finished-controller",
    "pod-garbage-collector-controller",
    # Beyond the minimum: a pod with a PVC is only scheduled once the claim is bound, and
    # a deleted PVC/PV (and so its namespace) only goes away when the protection
    # finalizers are removed. No provisioner: tests pre-create PVs (LocalCluster.add_volume).
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    # The chart's user roles are aggregated into the built-in edit/view/admin roles.
    "clusterrole-aggregation-controller",
)
# Only with a real node: the chart's Deployment becomes a pod there, and every pod with a
# service-account token (the operator's) mounts the kube-root-ca.crt ConfigMap beside it.
# Left out otherwise: the stand-in kubelet would run the operator's pod as a second operator.
REAL_NODE_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "root-ca-certificate-publisher-controller",
)
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"  # the API server's name to kubelets


@dataclass(frozen=True)
class RealNodeAccess:
    """Where a real node reaches the API server, and who its components are."""

    address: str  # the host's end of the link to the node's network namespace
    node_name: str

    @property
    def kubelet_user(self) -> str:
        return f"system:node:{self.node_name}"  # the Node authorizer's naming


# The API server's audit log records what service accounts (the operator; nothing else here
# holds one) ask of it, plus TranscriptionJob writes by anyone: tests read from it which
# requests the operator made (e.g. that every pod watch carries a label selector, so the
# server never sends it other pods) and when. Metadata level: the request line, no bodies.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: Metadata
    verbs: [create, update, patch]
    resources: [{group: whisperfleet.io, resources: [transcriptionjobs]}]
  - level: None
"""


class ControlPlane:
    """Starts and stops the four control-plane servers; see the module docstring."""

    def __init__(self, bin_dir: Path, state_dir: Path, kubeconfig: Path,
                 real_node: RealNodeAccess | None = None) -> None:
        self.bin_dir = bin_dir
        self.state_dir = state_dir
        self.kubeconfig = kubeconfig
        self.real_node = real_node
        self.address = real_node.address if real_node else "127.0.0.1"
        self.pki: Pki = write_pki(state_dir / "pki", (self.address,))
        self.node_tokens: dict[str, str] = {}  # user -> token, for the real node's components
        if real_node is not None:
            self.node_tokens = {
                real_node.kubelet_user: add_token(self.pki, real_node.kubelet_user,
                                                  ("system:nodes",)),
                # bound to system:node-proxier by Kubernetes' own bootstrap RBAC
                "system:kube-proxy": add_token(self.pki, "system:kube-proxy"),
            }
        self.apiserver_port = free_port()
        self.server = f"https://{self.address}:{self.apiserver_port}"
        self._etcd_client_url = f"http://127.0.0.1:{free_port()}"
        self.etcd = self._etcd()
        self.apiserver = self._apiserver()
        self.controller_manager = self._controller_manager()
        self.scheduler = self._scheduler()

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def audit_log(self) -> Path:
        """One JSON audit event per line (see AUDIT_POLICY)."""
        return self.logs_dir / "audit.log"

    def _server(self, name: str, args: list[str]) -> ServerProcess:
        return ServerProcess(name, [str(self.bin_dir / name), *args],
                             self.logs_dir / f"{name}.log")

    def _etcd(self) -> ServerProcess:
        peer_url = f"http://127.0.0.1:{free_port()}"
        return self._server("etcd", [
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd-data'}",
            f"--listen-client-urls={self._etcd_client_url}",
            f"--advertise-client-urls={self._etcd_client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync",  # throwaway data: durability only costs time here
            "--log-level=warn",
        ])

    def _apiserver(self) -> ServerProcess:
        pki = self.pki
        policy = self.state_dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        return self._server("kube-apiserver", [
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            *self._node_flags(),
            f"--secure-port={self.apiserver_port}",
            f"--etcd-servers={self._etcd_client_url}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # The API audiences default to the issuer, which TokenRequest then uses.
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={pki.service_account_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--authorization-mode={'Node,RBAC' if self.real_node else 'RBAC'}",
            f"--token-auth-file={pki.token_file}",
            # Would taint every new node not-ready until a node-lifecycle controller (absent
            # on purpose) clears it. PodSecurity stays on, as in every real cluster.
            "--disable-admission-plugins=TaintNodesByCondition",
            # As kubeadm and managed clusters set it: privileged pods are then PodSecurity's
            # to refuse, not API validation's.
            "--allow-privileged=true",
            "--profiling=false",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            # Written as requests complete, so a test reads what happened before it asks.
            "--audit-log-mode=blocking",
        ])

    def _node_flags(self) -> list[str]:
        if self.real_node is None:
            # Nothing reaches the API through the `kubernetes` Service here, and the
            # reconciler refuses a loopback advertise address.
            return ["--endpoint-reconciler-type=none"]
        cert, key = issue(self.pki, KUBELET_CLIENT_USER, client=True)
        return [
            # The default (lease) reconciler: the `kubernetes` Service's endpoint is
            # --advertise-address, which pods reach through kube-proxy.
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={cert}",
            f"--kubelet-client-key={key}",
            f"--kubelet-certificate-authority={self.pki.ca_cert}",
            # The kubelet's serving certificate names its address; no DNS knows its name.
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _controller_manager(self) -> ServerProcess:
        controllers = [*CONTROLLERS, *(REAL_NODE_CONTROLLERS if self.real_node else ())]
        return self._server("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            f"--controllers={','.join(controllers)}",
            f"--service-account-private-key-file={self.pki.service_account_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            "--use-service-account-credentials=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--profiling=false",
        ])

    def _scheduler(self) -> ServerProcess:
        return self._server("kube-scheduler", [
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--profiling=false",
        ])

    def _api_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))

    @staticmethod
    def _self_signed_ssl() -> ssl.SSLContext:
        # The controller manager and scheduler serve health on an in-memory self-signed
        # certificate; only liveness is asked of them, not identity.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    @staticmethod
    def _port_of(server: ServerProcess) -> str:
        return next(a.split("=", 1)[1] for a in server.command if a.startswith("--secure-port="))

    def _wait_apiserver(self, timeout: float) -> None:
        self.apiserver.wait_healthy(f"{self.server}/readyz", timeout=timeout,
                                    ssl_context=self._api_ssl(), token=self.pki.admin_token)

    def start(self, timeout: float = 120.0) -> None:
        """Start all four in dependency order; each must be healthy within `timeout` seconds."""
        self.etcd.start()
        self.etcd.wait_healthy(f"{self._etcd_client_url}/readyz", timeout=timeout)
        self.apiserver.start()
        write_token_kubeconfig(self.kubeconfig, server=self.server, ca_pem=self.pki.ca_pem,
                               token=self.pki.admin_token)
        self._wait_apiserver(timeout)
        self.controller_manager.start()
        self.scheduler.start()
        # The controller manager serves /healthz only (no /readyz or /livez).
        for server, path in ((self.controller_manager, "healthz"), (self.scheduler, "readyz")):
            server.wait_healthy(f"https://127.0.0.1:{self._port_of(server)}/{path}",
                                timeout=timeout, ssl_context=self._self_signed_ssl())

    def restart_apiserver(self, timeout: float = 120.0) -> None:
        """Stop kube-apiserver and start it again on the same port; clients reconnect."""
        # It would wait for the other components' open watches to end; 3 s is enough
        # for a clean stop of everything else.
        self.apiserver.stop(grace_seconds=3)
        self.apiserver.start()
        self._wait_apiserver(timeout)

    def stop(self) -> None:
        """Stop every server this started, clients before the store they depend on."""
        for server in (self.scheduler, self.controller_manager, self.apiserver, self.etcd):
            server.stop(grace_seconds=3)  # the state is thrown away: no need to wait long
