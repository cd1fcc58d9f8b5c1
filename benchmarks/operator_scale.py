"""The operator at scale: many TranscriptionJobs created at once among thousands of other pods.

    .venv/bin/python benchmarks/operator_scale.py                    # 300 jobs, 2,000 pods
    .venv/bin/python benchmarks/operator_scale.py --jobs 20 --unrelated-pods 200   # quick

Runs on the local control plane the tests use (real etcd, API server, controller manager
and scheduler built from Go; the stand-in kubelet runs pods as local processes; moto S3),
with the Helm chart installed by the real helm and its operator run as the chart runs it.

1. `--unrelated-pods` pods that are nothing to whisperfleet go into namespace `bystanders`
   (held by a scheduling gate, so nothing runs them: they only exist, as in a busy cluster).
2. `--jobs` TranscriptionJobs are created at once (from threads) over 10 namespaces, all
   suspended (planning runs, no worker pod starts: the CPU goes to the operator and the
   planners), one small input file each.
3. Measured: seconds until every job is planned (phase Suspended with Planned=True, the
   planner pods included); the reconcile latency from each job's creation to the operator's
   first status write, and from a spec change (parallelism 1 -> 2 on every job at once) to
   the operator's patch of its worker Job (p50/p95/max, from the API server's audit log);
   the operator's peak RSS and CPU seconds; and the requests it made.
4. Proven from the audit log: every pod list/watch the operator ever sent carries the label
   selector of whisperfleet's pods, so the API server sends it no event for any other pod.

Prints one JSON object. Time until planned is bound by running the planner pods (Python
processes) on this machine's cores, not by the operator; the latencies are the operator's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from tests.cluster import transcription_jobs as tjs  # noqa: E402
from tests.cluster.local_cluster import LocalCluster  # noqa: E402
from tests.cluster.manifests import POD_SECURITY_LABELS  # noqa: E402
from tests.cluster.waiting import eventually  # noqa: E402
from tests.cluster.whisperfleet_release import OperatorProcess, install_chart  # noqa: E402
from tests.support.paths import AUDIO  # noqa: E402

Obj = dict[str, Any]
NAMESPACES = 10
BYSTANDERS = "bystanders"
POD_SELECTOR_LABEL = "whisperfleet.io/job-uid"
THREADS = 16


def _in_parallel(fn: Callable[[int], Any], count: int) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(fn, range(count)))


def _namespace(cluster: LocalCluster, name: str, labels: dict[str, str]) -> None:
    if cluster.rest().get(f"/api/v1/namespaces/{name}") is None:
        cluster.rest().create("/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}})
        eventually(lambda: cluster.rest().get(f"/api/v1/namespaces/{name}/serviceaccounts/"
                                              "default"),
                   timeout=30, what=f"the default ServiceAccount of {name}")


def unrelated_pods(cluster: LocalCluster, count: int) -> None:
    """Pods a busy cluster has: not whisperfleet's, never scheduled (a scheduling gate)."""
    _namespace(cluster, BYSTANDERS, {})
    rest = cluster.rest()

    def create(i: int) -> None:
        rest.create(f"/api/v1/namespaces/{BYSTANDERS}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"web-{i:05d}", "labels": {"app": "web"}},
            "spec": {"schedulingGates": [{"name": "example.com/held"}],
                     "containers": [{"name": "web", "image": "registry.example/web:1"}]}})

    _in_parallel(create, count)


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _spread(values: Iterable[float]) -> Obj:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "p50": round(statistics.median(ordered), 3),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "max": round(ordered[-1], 3)}


def _process_figures(pid: int) -> Obj:
    """Peak RSS (VmHWM) and CPU seconds of a process (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("VmHWM:")))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return {"peak_rss_mib": round(peak_kib / 1024, 1),
            "cpu_seconds": round(ticks / os.sysconf("SC_CLK_TCK"), 1)}


def _operator_requests(events: list[Obj], user: str) -> list[Obj]:
    return [e for e in events if (e.get("user") or {}).get("username") == user]


def pod_watch_proof(events: list[Obj], user: str) -> Obj:
    """Every pod list/watch the operator sent, and those without whisperfleet's selector."""
    pods = [e for e in _operator_requests(events, user)
            if (e.get("objectRef") or {}).get("resource") == "pods"
            and not (e.get("objectRef") or {}).get("subresource")
            and e.get("verb") in ("list", "watch")]
    unfiltered = sorted({e["requestURI"] for e in pods
                         if f"labelSelector={POD_SELECTOR_LABEL}" not in
                         e["requestURI"].replace("%2F", "/")})
    return {"pod_list_and_watch_requests": len(pods), "without_selector": unfiltered}


def measure(cluster: LocalCluster, operator: OperatorProcess, user: str, jobs: int,
            unrelated: int, timeout: float = 1800) -> Obj:
    """The run described in the module docstring, on a cluster whose operator is running."""
    unrelated_pods(cluster, unrelated)
    bucket = tjs.bucket_with(cluster, {"in/hello.wav": AUDIO / "hello.wav"})
    namespaces = [f"scale-{n}" for n in range(NAMESPACES)]
    for ns in namespaces:
        _namespace(cluster, ns, POD_SECURITY_LABELS)
        if cluster.rest().get(f"/api/v1/namespaces/{ns}/secrets/{tjs.SECRET}") is None:
            tjs.storage_secret(cluster, ns)
    names = [(namespaces[i % NAMESPACES], f"load-{i:04d}") for i in range(jobs)]
    rest = cluster.rest()

    def create(i: int) -> None:
        ns, name = names[i]
        spec = tjs.job_spec(cluster, bucket, suspend=True, shards=1,
                            output={"uri": f"s3://{bucket}/out/{name}/", "formats": ["txt"]},
                            workers={"parallelism": 1})
        rest.create(tjs.tj_path(ns), {"apiVersion": "whisperfleet.io/v1alpha1",
                                      "kind": "TranscriptionJob",
                                      "metadata": {"name": name}, "spec": spec})

    began = time.monotonic()
    _in_parallel(create, jobs)
    created_seconds = time.monotonic() - began

    def planned() -> list[Obj] | None:
        items = [tj for tj in tjs.listed(cluster, "/apis/whisperfleet.io/v1alpha1/"
                                         "transcriptionjobs")
                 if tj["metadata"]["name"].startswith("load-")]
        done = [tj for tj in items if (tj.get("status") or {}).get("phase") == "Suspended"
                and tjs.condition(tj, "Planned").get("status") == "True"]
        failed = [tj for tj in items if (tj.get("status") or {}).get("phase") == "Failed"]
        assert not failed, json.dumps(failed[0].get("status"), indent=1)
        return done if len(done) == jobs else None

    done = eventually(planned, timeout=timeout, interval=1.0,
                      what=f"all {jobs} TranscriptionJobs planned")
    planned_seconds = time.monotonic() - began
    worker_jobs = {(tj["metadata"]["namespace"], tj["status"]["jobName"]):
                   tj["metadata"]["name"] for tj in done}

    changed = time.monotonic()

    def scale(i: int) -> None:
        ns, name = names[i]
        rest.merge_patch(tjs.tj_path(ns, name), {"spec": {"workers": {"parallelism": 2}}})

    _in_parallel(scale, jobs)

    def scaled() -> bool:
        listed = tjs.listed(cluster, "/apis/batch/v1/jobs")
        return sum(1 for j in listed if (j["metadata"]["namespace"], j["metadata"]["name"])
                   in worker_jobs and j["spec"].get("parallelism") == 2) == jobs

    eventually(scaled, timeout=timeout, interval=0.5, what="every worker Job scaled to 2")
    scaled_seconds = time.monotonic() - changed
    figures = _process_figures(operator.process.pid) if operator.process else {}
    return {"jobs": jobs, "unrelated_pods": unrelated, "create_seconds": round(created_seconds, 1),
            "seconds_until_all_planned": round(planned_seconds, 1),
            "seconds_until_all_scaled": round(scaled_seconds, 1), **figures,
            **latencies(cluster.audit_events(), user, set(names), worker_jobs)}


def latencies(events: list[Obj], user: str, names: set[tuple[str, str]],
              worker_jobs: dict[tuple[str, str], str]) -> Obj:
    """Reconcile latencies and request counts from the API server's audit log."""
    created: dict[tuple[str, str], float] = {}
    changed: dict[tuple[str, str], float] = {}
    first_status: dict[tuple[str, str], float] = {}
    job_patched: dict[tuple[str, str], float] = {}
    mine = []
    for e in events:
        ref = e.get("objectRef") or {}
        key = (ref.get("namespace", ""), ref.get("name", ""))
        by_operator = (e.get("user") or {}).get("username") == user
        at = _time(e.get("stageTimestamp") or e["requestReceivedTimestamp"])
        if ref.get("resource") == "transcriptionjobs" and key in names:
            if by_operator and ref.get("subresource") == "status" and e.get("verb") == "patch":
                first_status.setdefault(key, _time(e["requestReceivedTimestamp"]))
            elif not by_operator and e.get("verb") == "create":
                created[key] = at
            elif not by_operator and e.get("verb") == "patch":
                changed[key] = at
        if by_operator and ref.get("resource") == "jobs" and e.get("verb") == "patch" and \
                key in worker_jobs:
            job_patched[(key[0], worker_jobs[key])] = _time(e["requestReceivedTimestamp"])
        if by_operator and (key in names or key[0].startswith("scale-")):
            mine.append(e)
    kinds: dict[str, int] = {}
    for e in mine:
        ref = e.get("objectRef") or {}
        what = f"{e.get('verb')} {ref.get('resource')}" + (
            f"/{ref['subresource']}" if ref.get("subresource") else "")
        kinds[what] = kinds.get(what, 0) + 1
    return {
        "creation_to_first_status_seconds": _spread(
            first_status[k] - created[k] for k in created if k in first_status),
        "spec_change_to_worker_job_patch_seconds": _spread(
            job_patched[k] - changed[k] for k in changed if k in job_patched),
        "operator_requests_per_job": round(len(mine) / max(1, len(names)), 1),
        "operator_requests_by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "api_call_seconds": _spread(
            _time(e["stageTimestamp"]) - _time(e["requestReceivedTimestamp"]) for e in mine
            if e.get("verb") not in ("watch",) and e.get("stageTimestamp")),
        **pod_watch_proof(events, user),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--unrelated-pods", type=int, default=2000)
    args = parser.parse_args()
    with LocalCluster() as cluster:
        # Planners ask for 8 CPUs here, so the scheduler runs at most 8 per 64-CPU fake node
        # at once: hundreds of Python processes at once would only swap on a small machine.
        release = install_chart(cluster, "wf", "whisperfleet", {
            "runner": {"plannerResources": {"requests": {"cpu": "8", "memory": "256Mi"}}}})
        operator = OperatorProcess(cluster, release, cluster.state_dir / "operator").start()
        try:
            user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
            result = measure(cluster, operator, user, args.jobs, args.unrelated_pods)
        finally:
            operator.stop()
    print(json.dumps(result, indent=1))
    if result["without_selector"]:
        sys.exit("the operator listed or watched pods without whisperfleet's label selector")


if __name__ == "__main__":
    main()
