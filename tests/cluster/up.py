#!/usr/bin/env python3
"""One command for a local Kubernetes cluster with fake GPU nodes, until Ctrl-C.

    python tests/cluster/up.py --kubeconfig /tmp/wf.kubeconfig
    python tests/cluster/up.py --kubeconfig /tmp/wf.kubeconfig --demo        # + whisperfleet
    python tests/cluster/up.py --kubeconfig /tmp/wf.kubeconfig --real-node   # + a real node

Run it with the project's virtualenv Python (pods the stand-in kubelet runs use the runner
installed there). Builds the binaries if the cache lacks them, starts the control plane, the
fake nodes, the stand-in kubelet and a moto S3 server, writes the admin kubeconfig, prints
ONE JSON line on stdout once everything is ready, hints on stderr, and serves until SIGINT
or SIGTERM; then it stops everything it started and removes its temporary state.

`--operator` also installs the Helm chart with the built helm and runs its operator (as the
chart would, with its ServiceAccount's token). `--demo` adds, besides, a namespace `demo`
with the storage Secret and a bucket holding the example audio under in/, and prints a
TranscriptionJob to apply.

`--real-node` (as root) adds a real node, `real-1` (kubelet, containerd, runc, CNI, kube-proxy
and fake GPUs, in namespaces of its own), builds the operator and runner images from their
Dockerfiles (tests/cluster/images.py), loads them into the node's containerd and installs the
chart with only the image references set: its operator runs as the Deployment's pod there.
The JSON line then names the images too.

`--kueue` adds Kueue v0.17 (its manager built from sigs.k8s.io/kueue, tests/cluster/kueue.py)
and applies examples/kueue.yaml's flavors, ClusterQueue and priority classes, plus its
LocalQueue `gpu-batch` in the namespace `demo` (with --demo) or `default`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# Run as a script, this folder is sys.path[0]: drop it, so the infrastructure is imported
# the one way pytest and tests import it (tests.cluster.<module>), never twice.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.cluster import kueue_build  # noqa: E402
from tests.cluster import real_node_release as rnr  # noqa: E402
from tests.cluster import transcription_jobs as tjs  # noqa: E402
from tests.cluster.images import BuiltImage, build_images  # noqa: E402
from tests.cluster.kueue import KueueManager  # noqa: E402
from tests.cluster.local_cluster import LocalCluster  # noqa: E402
from tests.cluster.manifests import POD_SECURITY_LABELS  # noqa: E402
from tests.cluster.node_gpus import REAL_NODE_NAME  # noqa: E402
from tests.cluster.whisperfleet_release import OperatorProcess, install_chart  # noqa: E402

DEMO = """apiVersion: whisperfleet.io/v1alpha1
kind: TranscriptionJob
metadata: {{name: demo, namespace: demo}}
spec:
  input: {{uri: "s3://{bucket}/in/"}}
  output: {{uri: "s3://{bucket}/out/"}}
  storage: {{secretName: s3-credentials, endpoint: "{endpoint}", region: us-east-1}}
  model: {model}
  workers:
    parallelism: 2
    gpu: {{products: [{product}]}}
    resources: {{requests: {{cpu: {cpu}, memory: 1Gi}}}}
"""


def _demo(cluster: LocalCluster, real_node: bool) -> str:
    """Namespace, Secret and a bucket with the example audio (and on the real node the model
    claim); returns a job to apply."""
    cluster.rest().create("/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "demo", "labels": POD_SECURITY_LABELS}})
    tjs.storage_secret(cluster, "demo")
    files = {f"in/{p.name}": p for p in sorted((REPO / "examples" / "audio").glob("*.wav"))}
    bucket = tjs.bucket_with(cluster, files)
    if real_node:  # two vCPUs here: two workers of half a CPU each, on the node's L4s
        claim = rnr.model_claim(cluster, "demo")
        model = f"{{name: tiny.en, cacheVolume: {{claimName: {claim}}}}}"
        return DEMO.format(bucket=bucket, endpoint=cluster.s3.endpoint, model=model,
                           product="NVIDIA-L4", cpu='"500m"')
    return DEMO.format(bucket=bucket, endpoint=cluster.s3.endpoint, model="{name: tiny.en}",
                       product="NVIDIA-H100-80GB-HBM3", cpu='"1"')


def ready_line(cluster: LocalCluster, images: dict[str, BuiltImage] | None) -> dict[str, object]:
    """What the JSON line on stdout says once everything is ready."""
    s3 = cluster.s3
    line: dict[str, object] = {
        "kubeconfig": str(cluster.kubeconfig),
        "s3": {"endpoint": s3.endpoint, "access_key": s3.access_key,
               "secret_key": s3.secret_key},
        "nodes": [{"name": name, "kubelet": kubelet}
                  for name, kubelet in cluster.node_kubelets.items()],
    }
    if images is not None:
        line["images"] = {name: image.ref for name, image in images.items()}
    return line


def _hints(cluster: LocalCluster) -> str:
    kubectl = cluster.bin_dir / "kubectl"
    return "\n".join([
        f"local cluster ready in {sum(cluster.startup_seconds.values()):.1f}s "
        f"({', '.join(f'{k} {v}s' for k, v in cluster.startup_seconds.items())})",
        f"  kubectl:   {kubectl} --kubeconfig {cluster.kubeconfig} get nodes",
        f"             (or: export KUBECONFIG={cluster.kubeconfig}; built kubectl/helm are in "
        f"{cluster.bin_dir})",
        f"  S3 (moto): {cluster.s3.endpoint} (credentials in the JSON line on stdout)",
        f"  logs:      {cluster.logs_dir} (kubelet.log, kube-*.log, etcd.log; with a real "
        "node containerd.log, kube-proxy.log, fake-*-plugin.log); stand-in pods' output "
        f"under {cluster.state_dir / 'pods'}, real-node pods' with kubectl logs",
        "  Ctrl-C (or SIGTERM) stops everything and removes the state dir.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True,
                        help="where to write the admin kubeconfig")
    parser.add_argument("--keep-state", action="store_true",
                        help="keep the state dir (logs, pod folders) after stopping")
    parser.add_argument("--operator", action="store_true",
                        help="install the Helm chart and run its operator")
    parser.add_argument("--demo", action="store_true",
                        help="--operator, plus a demo namespace, Secret and bucket")
    parser.add_argument("--real-node", action="store_true",
                        help="(root) a real node, the images built here loaded into it, and "
                             "the chart's operator running as a pod there")
    parser.add_argument("--kueue", action="store_true",
                        help="Kueue v0.17 and the queues of examples/kueue.yaml")
    args = parser.parse_args(argv)
    if args.real_node and os.geteuid() != 0:
        parser.error("--real-node makes network, mount and PID namespaces, cgroups and a "
                     "veth link: run it as root")

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    kubeconfig = args.kubeconfig.resolve()
    images = build_images() if args.real_node else None  # before the cluster idles
    kueue_bin = kueue_build.ensure_kueue() if args.kueue else None
    with LocalCluster(kubeconfig=kubeconfig, keep_state=args.keep_state,
                      real_node=args.real_node) as cluster:
        operator, kueue = None, None
        if images is not None:
            took = rnr.load_images(cluster, images)
            release = rnr.install(cluster, images)
        print(json.dumps(ready_line(cluster, images)), flush=True)
        print(_hints(cluster), file=sys.stderr, flush=True)
        if images is not None:
            print(f"  real node: {REAL_NODE_NAME}; images loaded in {took} s; the operator "
                  f"runs as a pod: kubectl -n {release.namespace} get pods", file=sys.stderr,
                  flush=True)
        elif args.operator or args.demo:
            release = install_chart(cluster, "whisperfleet", "whisperfleet")
            operator = OperatorProcess(cluster, release, cluster.state_dir / "operator").start()
            print(f"  operator:  running as {release.namespace}/{release.service_account} "
                  f"(log {operator.log_path})", file=sys.stderr, flush=True)
        demo = _demo(cluster, args.real_node) if args.demo else None
        if kueue_bin is not None:
            kueue = KueueManager(cluster, kueue_bin).start()
            queue_namespace = "demo" if demo else "default"
            cluster.kubectl("apply", "-n", queue_namespace, "-f",
                            str(REPO / "examples" / "kueue.yaml"),
                            "--selector", "!kueue.x-k8s.io/queue-name")
            print(f"  kueue:     v0.17 (log {cluster.logs_dir / 'kueue.log'}); LocalQueue "
                  f"gpu-batch in {queue_namespace}: label a TranscriptionJob "
                  "kueue.x-k8s.io/queue-name=gpu-batch", file=sys.stderr, flush=True)
        if demo:
            print("  demo: apply this TranscriptionJob, then watch it:\n"
                  f"    kubectl apply -f - <<'EOF'\n{demo}EOF\n"
                  "    kubectl -n demo get tj -w", file=sys.stderr, flush=True)
        stop.wait()
        print("stopping the local cluster ...", file=sys.stderr, flush=True)
        if operator is not None:
            operator.stop()
        if kueue is not None:
            kueue.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
