#!/usr/bin/env python3
"""One command for a local Kubernetes cluster with fake GPU nodes, until Ctrl-C.

    python tests/cluster/up.py --kubeconfig /tmp/wf.kubeconfig

Run it with the project's virtualenv Python (pods it runs use the runner installed there).
Builds the binaries if the cache lacks them, starts the control plane, the fake nodes,
the stand-in kubelet and a moto S3 server, writes the admin kubeconfig, prints ONE JSON
line on stdout once everything is ready, hints on stderr, and serves until SIGINT or
SIGTERM; then it stops everything it started and removes its temporary state.
"""

from __future__ import annotations

import argparse
import json
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

from tests.cluster.local_cluster import LocalCluster  # noqa: E402


def _hints(cluster: LocalCluster) -> str:
    kubectl = cluster.bin_dir / "kubectl"
    return "\n".join([
        f"local cluster ready in {sum(cluster.startup_seconds.values()):.1f}s "
        f"({', '.join(f'{k} {v}s' for k, v in cluster.startup_seconds.items())})",
        f"  kubectl:   {kubectl} --kubeconfig {cluster.kubeconfig} get nodes",
        f"             (or: export KUBECONFIG={cluster.kubeconfig}; built kubectl/helm are in "
        f"{cluster.bin_dir})",
        f"  S3 (moto): {cluster.s3.endpoint} (credentials in the JSON line on stdout)",
        f"  logs:      {cluster.logs_dir} (kubelet.log, kube-*.log, etcd.log); "
        f"pod output under {cluster.state_dir / 'pods'}",
        "  Ctrl-C (or SIGTERM) stops everything and removes the state dir.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True,
                        help="where to write the admin kubeconfig")
    parser.add_argument("--keep-state", action="store_true",
                        help="keep the state dir (logs, pod folders) after stopping")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    kubeconfig = args.kubeconfig.resolve()
    with LocalCluster(kubeconfig=kubeconfig, keep_state=args.keep_state) as cluster:
        s3 = cluster.s3
        print(json.dumps({
            "kubeconfig": str(kubeconfig),
            "s3": {"endpoint": s3.endpoint, "access_key": s3.access_key,
                   "secret_key": s3.secret_key},
            "nodes": cluster.nodes,
        }), flush=True)
        print(_hints(cluster), file=sys.stderr, flush=True)
        stop.wait()
        print("stopping the local cluster ...", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
