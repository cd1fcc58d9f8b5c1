"""The real node's configuration files: kubelet, containerd, CNI and kube-proxy.

Pure builders (text in, text out), so every setting and why it is set sits in one place.
Paths under /var/lib, /run and /var/log are the node's private folders (node_sandbox).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.node_build import PAUSE_VERSION

POD_CIDR = "10.244.0.0/24"  # inside the node's network namespace only
CNI_BRIDGE = "cni0"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CDI_DIR = "/var/run/cdi"  # the node's private /run
# Made here from the pause binary node_build builds (real_node imports it), never pulled.
PAUSE_IMAGE = f"whisperfleet.local/pause:{PAUSE_VERSION}"


@dataclass(frozen=True)
class NodeFiles:
    """Where the node's own files are on the host (state dir)."""

    kubeconfig: Path  # the kubelet's (a system:node:<name> token)
    serving_cert: Path
    serving_key: Path
    client_ca: Path  # verifies the API server's client certificate
    cni_conf_dir: Path


def kubelet_config(files: NodeFiles, *, node_ip: str, cgroup_root: str) -> str:
    """The KubeletConfiguration. Besides the defaults:

    - failCgroupV1: false — this host has cgroup v1 (hybrid); 1.35+ kubelets refuse it
      otherwise (KEP 5573) and only warn with it;
    - cgroupDriver cgroupfs (no systemd runs here) and a cgroupRoot of this node's own, so
      pods of two nodes on one machine never share a cgroup;
    - resolvConf "": pods get no name servers (nothing here resolves names, and the host's
      resolver would lie outside this machine);
    - image garbage collection off (100 %) and eviction only at 1 % free disk: the images are
      made and imported here, none can be pulled back, and the disk is shared with others;
    - the API server is authenticated by its client certificate and authorized by
      SubjectAccessReview (Webhook), as kubeadm sets it up, so `kubectl logs` works;
    - protectKernelDefaults stays false, and the kernel settings it would change hold the
      wanted values already, in the node's mount namespace only (node_sandbox).
    """
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "address": node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "tlsCertFile": str(files.serving_cert),
        "tlsPrivateKeyFile": str(files.serving_key),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(files.client_ca)}},
        "authorization": {"mode": "Webhook"},
        "resolvConf": "",
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "failSwapOn": False,
        "serializeImagePulls": False,
        "protectKernelDefaults": False,
    }
    return json.dumps(config, indent=1)


def containerd_config(*, runc: Path, cni_bin_dir: Path, cni_conf_dir: Path) -> str:
    """containerd 2's configuration (version 3). Its defaults already keep state in the
    node's private /var/lib/containerd and /run/containerd; set here: the runc built here
    (cgroupfs), the CNI folders, CDI specs only from the node's /var/run/cdi (not the host's
    /etc/cdi), the pause image made here as the pinned sandbox image, no config imports from
    the host, and no NRI or /opt/containerd (host paths).

    restrict_oom_score_adj: processes on this machine lack CAP_SYS_RESOURCE, so none may
    lower its OOM score below its parent's; without it every sandbox fails with "runc create
    failed: ... nsexec: failed to update /proc/self/oom_score_adj: Permission denied"
    (containerd asks -998 for the pause container). With it, scores below the node's own
    (0) become 0: Guaranteed pods and sandboxes are not shielded from the OOM killer here."""
    return f"""version = 3
imports = []
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  cdi_spec_dirs = ["{CDI_DIR}"]
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = "{runc}"
  SystemdCgroup = false

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["{cni_bin_dir}"]
  conf_dir = "{cni_conf_dir}"
"""


def cni_conflist() -> str:
    """One bridge network: pods get an address of POD_CIDR on cni0 (host-local IPAM keeps
    its leases in the node's /var/lib/cni); traffic leaving the pod network is masqueraded
    to the node's address, so the host answers pods without a route to them; hairpin lets a
    pod reach itself through a Service."""
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": "whisperfleet",
        "plugins": [
            {"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=1)


def kube_proxy_config(*, kubeconfig: Path, node_name: str) -> str:
    """kube-proxy in iptables mode, in the node's network namespace. conntrack limits stay
    as the kernel has them (0 = do not set): they are the host's, shared with everyone."""
    return json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node_name,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
    }, indent=1)
