"""Operator reaction time, as a ratio: whisperfleet's operator against a minimal kopf operator.

    .venv/bin/python benchmarks/operator_reaction.py                  # 300 jobs, 2 rounds
    .venv/bin/python benchmarks/operator_reaction.py --jobs 50 --rounds 1   # quick

On the local control plane the tests use (real etcd, API server, controller manager and
scheduler built from Go; moto S3), with the Helm chart installed by the real helm and each
operator run with the chart's ServiceAccount (so both pass the same RBAC):

- `whisperfleet`: the operator as the chart runs it;
- `minimal`: benchmarks/minimal_operator.py — one kopf handler that writes a status on
  create and nothing else: what kopf, the API server and this machine cost per job.

Each round runs both sides, one after the other, in alternating order: the side's operator
starts, `--jobs` TranscriptionJobs are created at once (from threads) over 10 fresh
namespaces, and the time from each job's creation to the first status its operator writes is
read from the API server's audit log (creation's stageTimestamp to the status patch's
requestReceivedTimestamp); then the operator stops and the jobs are deleted, so the next side
starts on an empty cluster. The jobs' pods select a node label no node has, so no planner
runs: the figures are the operators' own, not this machine's cores running planners.
whisperfleet's side also waits for every job's planner Job and reports the time to it.

Prints one JSON object: p50/p95/max per side (all rounds pooled) and the ratios
whisperfleet / minimal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (str(REPO), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)
from operator_scale import NAMESPACES, _in_parallel, _namespace, _spread, _time  # noqa: E402

from tests.cluster import transcription_jobs as tjs  # noqa: E402
from tests.cluster.local_cluster import LocalCluster  # noqa: E402
from tests.cluster.manifests import POD_SECURITY_LABELS  # noqa: E402
from tests.cluster.waiting import eventually  # noqa: E402
from tests.cluster.whisperfleet_release import OperatorProcess, Release, install_chart  # noqa: E402
from tests.support.paths import AUDIO  # noqa: E402

Obj = dict[str, Any]
SIDES = ("whisperfleet", "minimal")
PLANNER_SUFFIX = "-plan-"  # naming.planner_job_name: <job>-plan-<hash>
# No node has this label: the jobs' pods (planners too: they follow spec.workers'
# placement) stay Pending, so no planner competes with the operators for the CPU.
NOWHERE = {"whisperfleet.io/benchmark": "nowhere"}


def minimal_release(release: Release) -> Release:
    """The chart's release, its operator command swapped for the minimal operator's."""
    return replace(release, env={}, args=[
        "kopf", "run", str(HERE / "minimal_operator.py"), "--standalone", "--all-namespaces",
        "--liveness=http://127.0.0.1:0/healthz"])


def reactions(events: list[Obj], user: str, names: set[tuple[str, str]]
              ) -> Obj:
    """Per job, from its creation: to the first status patch `user` sent for it, and to the
    planner Job `user` created for it (whisperfleet's first real work; none for minimal);
    and how many jobs had their first status before their planner Job."""
    created: dict[tuple[str, str], float] = {}
    first: dict[tuple[str, str], float] = {}
    planner: dict[tuple[str, str], float] = {}
    for e in events:
        ref = e.get("objectRef") or {}
        key = (ref.get("namespace", ""), ref.get("name", ""))
        by_operator = (e.get("user") or {}).get("username") == user
        if (by_operator and ref.get("resource") == "jobs" and e.get("verb") == "create"
                and "dryRun" not in e.get("requestURI", "")):
            owner = (key[0], key[1].rsplit(PLANNER_SUFFIX, 1)[0])
            if PLANNER_SUFFIX in key[1] and owner in names:
                planner.setdefault(owner, _time(e["requestReceivedTimestamp"]))
        if ref.get("resource") != "transcriptionjobs" or key not in names:
            continue
        if by_operator and ref.get("subresource") == "status" and e.get("verb") == "patch":
            first.setdefault(key, _time(e["requestReceivedTimestamp"]))
        elif not by_operator and e.get("verb") == "create" and e.get("stageTimestamp"):
            created[key] = _time(e["stageTimestamp"])
    missing = names - first.keys()
    assert not missing, f"no status written for {len(missing)} jobs, e.g. {sorted(missing)[0]}"
    return {"first_status": [first[k] - created[k] for k in names],
            "planner_job": [planner[k] - created[k] for k in planner],
            "status_before_planner_job": sum(1 for k in planner if first[k] < planner[k])}


def one_side(cluster: LocalCluster, operator: OperatorProcess, user: str, bucket: str,
             tag: str, jobs: int, timeout: float, plans: bool) -> Obj:
    """Start `operator`, create `jobs` jobs at once, wait for every first status, stop it,
    delete the jobs; each job's reaction times (`reactions`). `plans`: the operator goes on
    to plan, and the side ends once every job's phase is past Pending."""
    namespaces = [f"react-{tag}-{n}" for n in range(NAMESPACES)]
    for ns in namespaces:
        _namespace(cluster, ns, POD_SECURITY_LABELS)
        tjs.storage_secret(cluster, ns)
    names = [(namespaces[i % NAMESPACES], f"react-{i:04d}") for i in range(jobs)]
    rest = cluster.rest()

    def create(i: int) -> None:
        ns, name = names[i]
        spec = tjs.job_spec(cluster, bucket, suspend=True, shards=1,
                            output={"uri": f"s3://{bucket}/out/{tag}/{name}/",
                                    "formats": ["txt"]},
                            workers={"parallelism": 1, "nodeSelector": NOWHERE})
        rest.create(tjs.tj_path(ns), {"apiVersion": "whisperfleet.io/v1alpha1",
                                      "kind": "TranscriptionJob",
                                      "metadata": {"name": name}, "spec": spec})

    def statuses() -> int:
        return sum(1 for ns in namespaces for tj in tjs.listed(cluster, tjs.tj_path(ns))
                   if (tj.get("status") or {}).get("phase"))

    def planned() -> int:
        return sum(1 for ns in namespaces for tj in tjs.listed(cluster, tjs.tj_path(ns))
                   if (tj.get("status") or {}).get("phase") not in (None, "Pending"))

    operator.start()
    try:
        _in_parallel(create, jobs)
        eventually(lambda: statuses() == jobs, timeout=timeout, interval=0.5,
                   what=f"a status on all {jobs} jobs of {tag}")
        if plans:  # whisperfleet's goes on to plan: wait for that too
            eventually(lambda: planned() == jobs, timeout=timeout, interval=0.5,
                       what=f"all {jobs} jobs of {tag} planning")
    finally:
        operator.stop()
    for ns in namespaces:
        rest.delete(tjs.tj_path(ns), {"propagationPolicy": "Background"})  # all of them
    eventually(lambda: not any(tjs.listed(cluster, tjs.tj_path(ns)) for ns in namespaces),
               timeout=timeout, what=f"the jobs of {tag} gone")
    return reactions(cluster.audit_events(), user, set(names))


def measure(cluster: LocalCluster, release: Release, jobs: int, rounds: int,
            timeout: float = 900) -> Obj:
    """Both sides, `rounds` times in alternating order; figures pooled per side."""
    user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    bucket = tjs.bucket_with(cluster, {"in/hello.wav": AUDIO / "hello.wav"})
    operators = {
        "whisperfleet": OperatorProcess(cluster, release, cluster.state_dir / "op-whisperfleet"),
        "minimal": OperatorProcess(cluster, minimal_release(release),
                                   cluster.state_dir / "op-minimal"),
    }
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    planner: list[float] = []
    status_first = 0  # whisperfleet's jobs whose first status came before their planner Job
    per_round: list[Obj] = []
    began = time.monotonic()
    for r in range(rounds):
        for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
            found = one_side(cluster, operators[side], user, bucket, f"{side[:3]}{r}", jobs,
                             timeout, plans=side == "whisperfleet")
            seconds[side] += found["first_status"]
            per_round.append({"round": r, "side": side, **_spread(found["first_status"])})
            if side == "whisperfleet":
                planner += found["planner_job"]
                status_first += found["status_before_planner_job"]
    spread = {side: _spread(values) for side, values in seconds.items()}
    ours, base = spread["whisperfleet"], spread["minimal"]
    return {"jobs": jobs, "rounds": rounds, "seconds": round(time.monotonic() - began, 1),
            "creation_to_first_status_seconds": spread,
            "whisperfleet_creation_to_planner_job_seconds": _spread(planner),
            "whisperfleet_jobs_with_a_status_before_their_planner_job": status_first,
            "ratio_p50": round(ours["p50"] / base["p50"], 2),
            "ratio_p95": round(ours["p95"] / base["p95"], 2), "each_side": per_round}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with LocalCluster() as cluster:
        release = install_chart(cluster, "wf", "whisperfleet")
        result = measure(cluster, release, args.jobs, args.rounds)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
