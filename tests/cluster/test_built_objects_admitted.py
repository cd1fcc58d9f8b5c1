"""What the operator builds for a TranscriptionJob, admitted by the real API server.

For a spread of TranscriptionJobs (every example, device plugin, MIG, DRA, a PVC, a Kueue
queue, every worker option at once, the longest names and the largest counts), the
TranscriptionJob is admitted (server-side dry run; the server's defaults and uid), and the
operator's builders (`build_planner_job`, `build_worker_job`,
`build_resource_claim_template`) turn it into objects the server admits in a namespace
enforcing PodSecurity "restricted": without a refusal and without a warning (PodSecurity
only warns about a Job's pod template), and so are the pods the Job controller would make
from them (PodSecurity enforced, PriorityClass, pod-only checks).

Then what the worker Job's validation (or its pods') would refuse: the CRD refuses it first.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.cluster.admission import Admission, resource_path, tj
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.transcription_jobs import tj_path
from tests.cluster.whisperfleet_release import Release
from tests.support.paths import REPO
from whisperfleet_operator import naming, spec
from whisperfleet_operator.builders import gpu, jobs
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_runner import contract

pytestmark = [pytest.mark.slow]
Obj = dict[str, Any]
EXAMPLES = ("minimal", "multi-gpu", "mig", "dra", "kueue", "pvc")
PRIORITY_CLASS = "batch-low"  # what the examples and `everything` name
SERVICE_ACCOUNT = "transcribers"  # what `everything` names


@pytest.fixture(scope="module")
def admission(cluster: LocalCluster) -> Admission:
    return Admission(cluster.api_client())


@pytest.fixture(scope="module")
def priority_class(admission: Admission, cluster: LocalCluster) -> Iterator[str]:
    """The PriorityClass the jobs name (pods naming a missing one are refused); made here
    unless the cluster has it, and then removed again."""
    path = "/apis/scheduling.k8s.io/v1/priorityclasses"
    made = admission.create(path, {
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": PRIORITY_CLASS}, "value": 100}, dry_run=False)
    assert made.accepted or made.status == 409, made
    yield PRIORITY_CLASS
    if made.accepted:
        cluster.rest().delete(f"{path}/{PRIORITY_CLASS}", {})


# --- the TranscriptionJobs ----------------------------------------------------------------------


def example(name: str) -> Obj:
    """The TranscriptionJob of an example file (some ship a PVC or Secret beside it)."""
    [found] = [d for d in yaml.safe_load_all((REPO / "examples" / f"{name}.yaml").read_text())
               if d and d["kind"] == "TranscriptionJob"]
    return dict(found)


def everything() -> Obj:
    """Every optional field set: gpusPerWorker 4, a compute capability needing two node
    selector terms, ANDed with a user affinity of two terms, pod anti-affinity."""
    return tj(
        "everything", input={"uri": "s3://média/録音/", "include": ["*.wav", "**/*.flac"]},
        output={"uri": "s3://média/transcripts/録音/", "formats": ["json", "tsv"],
                "overwrite": True},
        storage={"secretName": "s3-credentials", "endpoint": "https://s3.example.com:9000",
                 "region": "eu-central-1"},
        model={"name": "Systran/faster-whisper-large-v3", "computeType": "int8_float16",
               "cacheVolume": {"claimName": "whisper-models"}},
        transcription={"language": "haw", "task": "translate", "beamSize": 1, "batchSize": 256,
                       "vadFilter": False, "wordTimestamps": True,
                       "initialPrompt": "Ōlelo Hawaiʻi — «Grüße» 你好 🎙️"},
        workers={
            "parallelism": 3, "gpusPerWorker": 4,
            "gpu": {"resourceName": "nvidia.com/gpu",
                    "products": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"],
                    "minMemoryMiB": 81000, "minComputeCapability": "8.6"},
            "nodeSelector": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu",
                             "effect": "NoSchedule"},
                            {"key": "spot", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 600},
                            {"operator": "Exists"}],
            "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "topology.kubernetes.io/zone",
                                           "operator": "In", "values": ["eu-central-1a"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In",
                                      "values": ["gpu-node-7"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "preference": {
                    "matchExpressions": [{"key": "nvidia.com/gpu.count", "operator": "Gt",
                                          "values": ["4"]}]}}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 50, "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"team": "speech"}},
                        "matchLabelKeys": ["batch.kubernetes.io/job-name"]}}]}},
            "priorityClassName": PRIORITY_CLASS,
            "resources": {"requests": {"cpu": 4, "memory": "32Gi", "ephemeral-storage": "10Gi"},
                          "limits": {"memory": "64Gi", "example.com/fpga": 1}},
            "image": "registry.example.com/whisperfleet/runner@sha256:" + "a" * 64,
            "imagePullSecrets": [{"name": "registry-credentials"}, {"name": "mirror"}],
            "env": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"},
                    {"name": "AWS_CA_BUNDLE", "value": "/etc/ssl/private/ca.pem"}],
            "podLabels": {"cost-center": "4711", "example.com/team": "speech"},
            "podAnnotations": {"sidecar.istio.io/inject": "false",
                               "example.com/notes": "Ōlelo — «Grüße» 🎙️"},
            "serviceAccountName": SERVICE_ACCOUNT,
        },
        shards=12, retries={"perShard": 0, "maxFailedShards": 12},
        activeDeadlineSeconds=172800, ttlSecondsAfterFinished=600, suspend=False)


def long_name() -> str:
    """253 characters: the longest legal object name, dotted."""
    return ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])


def spread() -> list[Obj]:
    bodies = [example(name) for name in EXAMPLES]
    bodies += [
        everything(),
        tj("dra-full", workers={"parallelism": 2, "gpusPerWorker": 2, "gpu": {
            "deviceClassName": "gpu.nvidia.com", "products": ["NVIDIA-H100-80GB-HBM3"],
            "minMemoryMiB": 40960, "minComputeCapability": "9.0"}}),
        tj("dra-any", workers={"gpu": {"deviceClassName": "mig.nvidia.com"}}),
        tj("paused-at-birth", suspend=True, shards=2),
        tj("mig-7", workers={"parallelism": 7, "gpu": {"resourceName": "nvidia.com/mig-3g.40gb"}}),
        tj(long_name()),
        tj("x" * 63, shards=100000, workers={"parallelism": 1000},
           retries={"perShard": 100, "maxFailedShards": 100000}),
        tj("queued", queueName="gpu-batch.team-a", suspend=True),
        # Media read from a read-only PVC at a custom path, transcripts to object storage.
        tj("pvc-in-s3-out", input={"uri": "file:///mnt/média/录音/"},
           storage={"secretName": "s3-credentials", "volume": {
               "claimName": "archive.media", "mountPath": "/mnt/média", "readOnly": True}}),
    ]
    return bodies


SETTINGS = [
    OperatorSettings(),
    # As a chart could configure it: a cache claim for every job, pull secrets, a pinned image.
    OperatorSettings(runner_image="registry.example.com/whisperfleet/runner:0.1.0",
                     image_pull_policy="Always", image_pull_secrets=("registry", "mirror"),
                     model_cache_claim="shared-models", run_as_user=2000, run_as_group=3000,
                     planner_backoff_limit=0, planner_deadline_seconds=0,
                     worker_resources={"requests": {"cpu": "500m", "memory": "2Gi"}}),
]


# --- what the Job controller would create -------------------------------------------------------


def pod_of(job: Obj, index: int | None) -> Obj:
    """A pod as the Job controller makes it from `job`'s template (the fields admission
    looks at: its labels, the completion index, the Indexed pod's hostname)."""
    template = copy.deepcopy(job["spec"]["template"])
    name = job["metadata"]["name"]
    meta = template.get("metadata") or {}
    meta["generateName"] = f"{name}-" if index is None else f"{name}-{index}-"
    meta["labels"] = {**meta.get("labels", {}), "batch.kubernetes.io/job-name": name,
                      "job-name": name}
    pod_spec = template["spec"]
    if index is not None:
        meta["labels"]["batch.kubernetes.io/job-completion-index"] = str(index)
        meta.setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = str(
            index)
        pod_spec["hostname"] = f"{name}-{index}"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def built_objects(stored: Obj, settings: OperatorSettings) -> list[Obj]:
    job = spec.parse(stored)
    plan = contract.PlanReport(files=10, bytes=10**9, shards=job.shards or 3)
    planner = jobs.build_planner_job(job, settings)
    worker = jobs.build_worker_job(job, plan, settings)
    claim = gpu.build_resource_claim_template(job, settings)
    objects = [planner, worker, *([claim] if claim else [])]
    return [*objects, pod_of(planner, None), pod_of(worker, plan.shards - 1)]


def admission_problems(admission: Admission, namespace: str, obj: Obj) -> str:
    answer = admission.create(resource_path(obj, namespace), obj)
    name = obj["metadata"].get("name") or obj["metadata"]["generateName"]
    if not answer.accepted:
        return f"{obj['kind']} {name}: {answer}"
    if answer.warnings:
        return f"{obj['kind']} {name}: warnings {answer.warnings}"
    return ""


# --- the spread ---------------------------------------------------------------------------------


def test_everything_the_operator_builds_is_admitted_in_a_restricted_namespace(
    admission: Admission, namespace: str, release: Release, priority_class: str,
    cluster: LocalCluster,
) -> None:
    # The ServiceAccount `everything` names (pods naming a missing one are refused).
    cluster.rest().create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT}})
    problems: list[str] = []
    kinds: set[str] = set()
    for body in spread():
        answer = admission.create(tj_path(namespace), body)
        assert answer.accepted, f"{body['metadata']['name']}: {answer}"
        stored = answer.body
        for settings in SETTINGS:
            for obj in built_objects(stored, settings):
                kinds.add(obj["kind"])
                # The builders set the namespace and the names naming derives.
                if obj["kind"] != "Pod":
                    assert obj["metadata"]["namespace"] == namespace
                    assert naming.LABEL_JOB_UID in obj["metadata"]["labels"]
                problem = admission_problems(admission, namespace, obj)
                problems += [f"{stored['metadata']['name'][:40]}: {problem}"] if problem else []
    assert kinds == {"Job", "ResourceClaimTemplate", "Pod"}
    assert problems == []


def test_the_api_server_would_refuse_a_job_that_breaks_its_rules(
    admission: Admission, namespace: str, release: Release,
) -> None:
    """The check above can fail: a worker Job the server refuses is reported, by field."""
    answer = admission.create(tj_path(namespace), tj("bad-index"))
    assert answer.accepted, answer
    worker = jobs.build_worker_job(spec.parse(answer.body), contract.PlanReport(shards=2),
                                   OperatorSettings())
    worker["spec"]["maxFailedIndexes"] = 5  # more than completions
    refused = admission.create(resource_path(worker, namespace), worker)
    assert refused.status == 422
    assert [f for f, _ in refused.causes] == ["spec.maxFailedIndexes"]
    # And a pod template breaking PodSecurity "restricted" is a warning on the Job.
    worker["spec"].pop("maxFailedIndexes")
    worker["spec"]["template"]["spec"]["containers"][0]["securityContext"].pop(
        "allowPrivilegeEscalation")
    warned = admission.create(resource_path(worker, namespace), worker)
    assert warned.accepted and "allowPrivilegeEscalation" in " ".join(warned.warnings)
    assert "allowPrivilegeEscalation" in admission_problems(admission, namespace, worker)


# --- what the worker Job would refuse is refused at admission ------------------------------------


def _node_terms(**term: Any) -> Obj:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [term]}}}


def _pod_term(**term: Any) -> Obj:
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "zone", **term}]}}


def _match_fields(operator: str, values: list[str] | None = None) -> Obj:
    field: Obj = {"key": "metadata.name", "operator": operator}
    return _node_terms(matchFields=[field if values is None else {**field, "values": values}])


def _selector(operator: str, values: list[str] | None = None) -> Obj:
    expression: Obj = {"key": "app", "operator": operator}
    if values is not None:
        expression["values"] = values
    return {"matchExpressions": [expression]}


AFFINITY = "spec.template.spec.affinity"
NODE_TERM = f"{AFFINITY}.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution" \
    ".nodeSelectorTerms[0]"
POD_TERM = f"{AFFINITY}.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
RESOURCES = "spec.template.spec.containers[0].resources"
W_AFFINITY = "spec.workers.affinity"
W_NODE_TERM = f"{W_AFFINITY}.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution" \
    ".nodeSelectorTerms[0]"
W_POD_TERM = f"{W_AFFINITY}.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0]"
W_RESOURCES = "spec.workers.resources"


@dataclass(frozen=True)
class Refused:
    """Worker options the API server refuses in the worker Job (`kind` Job) or only in its
    pods (`kind` Pod), at `built_field` there; the CRD must refuse them at `field`."""

    workers: Obj
    field: str
    kind: str
    built_field: str


# The first 18 were admitted by the CRD and refused only in the worker Job (JobRejected,
# after planning); the rest were found the same way later.
REFUSED = {
    "nodeSelector-key": Refused({"nodeSelector": {"gpu pool": "a"}}, "spec.workers.nodeSelector",
                                "Job", "spec.template.spec.nodeSelector"),
    "nodeSelector-key-prefix": Refused({"nodeSelector": {"Example.com/pool": "a"}},
                                       "spec.workers.nodeSelector", "Job",
                                       "spec.template.spec.nodeSelector"),
    "resource-name": Refused({"resources": {"limits": {"gpu": 1}}}, f"{W_RESOURCES}.limits",
                             "Job", f"{RESOURCES}.limits[gpu]"),
    "requests-above-limits": Refused({"resources": {"requests": {"memory": "64Gi"},
                                                    "limits": {"memory": "32Gi"}}},
                                     f"{W_RESOURCES}.requests", "Job", f"{RESOURCES}.requests"),
    "negative-quantity": Refused({"resources": {"requests": {"cpu": "-1"}}},
                                 f"{W_RESOURCES}.requests", "Job", f"{RESOURCES}.requests[cpu]"),
    "fractional-extended-resource": Refused(
        {"resources": {"limits": {"example.com/fpga": "0.5"}}}, f"{W_RESOURCES}.limits", "Job",
        f"{RESOURCES}.limits[example.com/fpga]"),
    "hugepages-without-limit": Refused(
        {"resources": {"requests": {"hugepages-2Mi": "2Mi", "memory": "1Gi"}}},
        f"{W_RESOURCES}.limits", "Job", f"{RESOURCES}.limits"),
    "in-without-values": Refused(
        {"affinity": _node_terms(matchExpressions=[{"key": "zone", "operator": "In"}])},
        f"{W_NODE_TERM}.matchExpressions[0].values", "Job",
        f"{NODE_TERM}.matchExpressions[0].values"),
    "exists-with-values": Refused(
        {"affinity": _node_terms(matchExpressions=[{"key": "zone", "operator": "Exists",
                                                    "values": ["a"]}])},
        f"{W_NODE_TERM}.matchExpressions[0].values", "Job",
        f"{NODE_TERM}.matchExpressions[0].values"),
    "gt-with-two-values": Refused(
        {"affinity": _node_terms(matchExpressions=[{"key": "n", "operator": "Gt",
                                                    "values": ["1", "2"]}])},
        f"{W_NODE_TERM}.matchExpressions[0].values", "Job",
        f"{NODE_TERM}.matchExpressions[0].values"),
    "match-fields-key": Refused(
        {"affinity": _node_terms(matchFields=[{"key": "metadata.labels", "operator": "In",
                                               "values": ["a"]}])},
        f"{W_NODE_TERM}.matchFields[0].key", "Job", f"{NODE_TERM}.matchFields[0].key"),
    "match-fields-two-values": Refused(
        {"affinity": _match_fields("In", ["a", "b"])}, f"{W_NODE_TERM}.matchFields[0].values",
        "Job", f"{NODE_TERM}.matchFields[0].values"),
    "topology-key": Refused({"affinity": _pod_term(topologyKey="bad key!")},
                            f"{W_POD_TERM}.topologyKey", "Job", f"{POD_TERM}.topologyKey"),
    "match-labels-key": Refused(
        {"affinity": _pod_term(labelSelector={"matchLabels": {"a b": "c"}})},
        f"{W_POD_TERM}.labelSelector.matchLabels", "Job", f"{POD_TERM}.labelSelector.matchLabels"),
    "namespace-name": Refused({"affinity": _pod_term(namespaces=["Media_NS"])},
                              f"{W_POD_TERM}.namespaces[0]", "Job", f"{POD_TERM}.namespace"),
    "match-label-keys-without-selector": Refused(
        {"affinity": _pod_term(matchLabelKeys=["app"])}, f"{W_POD_TERM}.matchLabelKeys", "Job",
        f"{POD_TERM}.matchLabelKeys"),
    "toleration-value": Refused(
        {"tolerations": [{"key": "k", "operator": "Equal", "value": "gpu batch"}]},
        # Kubernetes names the operator for a bad value.
        "spec.workers.tolerations[0].value", "Job", "spec.template.spec.tolerations[0].operator"),
    # Job templates let it through; the pods are refused.
    "image-whitespace": Refused({"image": " registry.example.com/runner:1"},
                                "spec.workers.image", "Pod", "spec.containers[0].image"),
    # matchFields takes only In and NotIn, with exactly one value.
    **{f"match-fields-{op.lower()}": Refused(
        {"affinity": _match_fields(op, values)}, f"{W_NODE_TERM}.matchFields[0].operator",
        "Job", f"{NODE_TERM}.matchFields[0].operator")
       for op, values in (("Exists", None), ("DoesNotExist", None), ("Gt", ["1"]),
                          ("Lt", ["1"]))},
    "match-fields-no-value": Refused({"affinity": _match_fields("NotIn", [])},
                                     f"{W_NODE_TERM}.matchFields[0].values", "Job",
                                     f"{NODE_TERM}.matchFields[0].values"),
    "node-selector-value": Refused(
        {"affinity": _node_terms(matchExpressions=[{"key": "zone", "operator": "In",
                                                    "values": ["eu west"]}])},
        f"{W_NODE_TERM}.matchExpressions[0].values[0]", "Job",
        f"{NODE_TERM}.matchExpressions[0].values[0]"),
    # Pod-affinity selectors: labelSelector and namespaceSelector alike.
    **{f"{selector}-{case}": Refused(
        {"affinity": _pod_term(**{selector: _selector(*args)})},
        f"{W_POD_TERM}.{selector}.matchExpressions[0].values{suffix}", "Job",
        f"{POD_TERM}.{selector}.matchExpressions[0].values{suffix}")
       for selector in ("labelSelector", "namespaceSelector")
       for case, args, suffix in (("in-without-values", ("In",), ""),
                                  ("exists-with-values", ("Exists", ["a"]), ""),
                                  ("value", ("NotIn", ["a b"]), "[0]"))},
    "namespace-selector-match-labels-key": Refused(
        {"affinity": _pod_term(namespaceSelector={"matchLabels": {"a b": "c"}})},
        f"{W_POD_TERM}.namespaceSelector.matchLabels", "Job",
        f"{POD_TERM}.namespaceSelector.matchLabels"),
    "mismatch-label-keys-without-selector": Refused(
        {"affinity": _pod_term(mismatchLabelKeys=["app"])}, f"{W_POD_TERM}.mismatchLabelKeys",
        "Job", f"{POD_TERM}.mismatchLabelKeys"),
    "label-keys-in-both": Refused(
        {"affinity": _pod_term(labelSelector={"matchLabels": {"team": "a"}},
                               matchLabelKeys=["app"], mismatchLabelKeys=["app"])},
        f"{W_POD_TERM}.matchLabelKeys", "Job", f"{POD_TERM}.matchLabelKeys[0]"),
    "match-label-keys-key": Refused(
        {"affinity": _pod_term(labelSelector={"matchLabels": {"team": "a"}},
                               matchLabelKeys=["a b"])},
        f"{W_POD_TERM}.matchLabelKeys[0]", "Job", f"{POD_TERM}.matchLabelKeys[0]"),
    "resource-name-requests-prefix": Refused(
        {"resources": {"limits": {"requests.example.com/fpga": 1}}}, f"{W_RESOURCES}.limits",
        "Job", f"{RESOURCES}.limits[requests.example.com/fpga]"),
    "extended-request-not-limit": Refused(
        {"resources": {"requests": {"example.com/fpga": 1}, "limits": {"example.com/fpga": 2}}},
        f"{W_RESOURCES}.requests", "Job", f"{RESOURCES}.requests"),
    "extended-request-without-limit": Refused(
        {"resources": {"requests": {"example.com/fpga": 1}}}, f"{W_RESOURCES}.limits", "Job",
        f"{RESOURCES}.limits"),
    "hugepages-alone": Refused({"resources": {"limits": {"hugepages-2Mi": "2Mi"}}}, W_RESOURCES,
                               "Job", RESOURCES),
    "hugepages-size": Refused({"resources": {"limits": {"hugepages-3x": "2Mi",
                                                        "memory": "1Gi"}}},
                              f"{W_RESOURCES}.limits", "Job", f"{RESOURCES}.limits[hugepages-3x]"),
}


def merged(base: Obj, extra: Obj) -> Obj:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else copy.deepcopy(value)
    return out


@pytest.mark.parametrize("case", list(REFUSED))
def test_worker_options_the_job_would_refuse_are_refused_at_admission(
    admission: Admission, namespace: str, release: Release, case: str,
) -> None:
    """`kubectl apply` says what the worker Job (or its pods) would be refused for, at the
    TranscriptionJob's own field, instead of the job planning and then failing
    (JobRejected). And the case is real: the operator's worker Job built from the same
    options (on a job the server admitted and defaulted) is refused by the server."""
    refused = REFUSED[case]
    answer = admission.create(tj_path(namespace), tj("refused", workers=refused.workers))
    assert answer.status == 422, answer
    fields = [f for f, _ in answer.causes]
    assert fields and all(f == refused.field or f.startswith((f"{refused.field}.",
                                                              f"{refused.field}["))
                          for f in fields), answer
    assert f"{refused.field}" in answer.message, answer
    good = admission.create(tj_path(namespace), tj("good"))
    assert good.accepted, good
    stored = copy.deepcopy(good.body)
    stored["spec"]["workers"] = merged(stored["spec"]["workers"], refused.workers)
    worker = jobs.build_worker_job(spec.parse(stored), contract.PlanReport(shards=2),
                                   OperatorSettings())
    built = worker if refused.kind == "Job" else pod_of(worker, 1)
    rejected = admission.create(resource_path(built, namespace), built)
    assert rejected.status in (403, 422), rejected
    assert refused.built_field in [f for f, _ in rejected.causes], rejected
