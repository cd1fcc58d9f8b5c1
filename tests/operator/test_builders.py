"""The operator's pure manifest builders: names, work order, planner Job, worker Job.

Every built object is validated offline against the Kubernetes OpenAPI schemas (strict:
unknown fields are errors), so a typo in a field name fails here, not in a cluster.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from tests.support.transcription_jobs import parsed, tj_object
from whisperfleet_operator import naming, spec
from whisperfleet_operator.builders import cleanup, jobs, workorder
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.spec import TranscriptionJob
from whisperfleet_runner import contract

K8S = kubernetes_validate.latest_version()  # the newest schemas it ships (>= 1.35)
SECRET_VALUE = "wJalrXUtnFEMI-not-a-real-key"


def make_tj(**spec: Any) -> TranscriptionJob:
    """A TranscriptionJob as the operator reads it (parsed from the API server's object)."""
    return parsed(**spec)


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S, strict=True)


def container(job: dict[str, Any]) -> dict[str, Any]:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


PLAN = contract.PlanReport(files=40, bytes=10**9, shards=12, manifest_uri="s3://x/m.jsonl")
SETTINGS = OperatorSettings()


def test_schemas_are_recent_enough() -> None:
    # resource.k8s.io/v1 and backoffLimitPerIndex need a 1.34+ schema set.
    assert tuple(int(p) for p in K8S.split(".")[:2]) >= (1, 35)


# --- names ---------------------------------------------------------------------------------


def test_names_are_deterministic_distinct_and_short() -> None:
    tj = make_tj()
    names = {naming.planner_job_name(tj), naming.worker_job_name(tj),
             naming.claim_template_name(tj)}
    assert len(names) == 3
    again = copy.deepcopy(tj)
    assert naming.worker_job_name(again) == naming.worker_job_name(tj)  # operator restart
    assert naming.worker_job_name(tj).startswith("podcasts-nov-work-")


def test_recreated_job_with_same_name_gets_new_names() -> None:
    old, new = make_tj(), parsed(uid="0d4a7c2b-2222-4b4b-8c8c-ba9876543210")
    assert naming.worker_job_name(old) != naming.worker_job_name(new)
    assert naming.planner_job_name(old) != naming.planner_job_name(new)


def test_long_and_dotted_names_fit_pod_hostnames() -> None:
    tj = parsed(name="a." + "very-long-name." * 16 + "z")
    name = naming.worker_job_name(tj)
    # Indexed pods are named/hostnamed "<job>-<index>": a DNS label of at most 63 chars.
    assert len(f"{name}-99999") <= 63
    assert all(c.isalnum() or c == "-" for c in name) and name[0].isalnum()
    validate(jobs.build_worker_job(tj, PLAN, SETTINGS))


def test_names_need_a_uid() -> None:
    obj = tj_object()
    del obj["metadata"]["uid"]
    with pytest.raises(ValueError, match="uid"):
        spec.parse(obj)


# --- work order ----------------------------------------------------------------------------


def test_work_order_defaults_from_config() -> None:
    order = workorder.work_order_for(make_tj())
    assert order.job_uid == "6f1c9d2e-1111-4a4a-9b9b-0123456789ab"
    assert order.device == "cuda"
    assert order.include == contract.DEFAULT_INCLUDE
    assert order.output.formats == contract.DEFAULT_FORMATS
    assert order.model.name == contract.DEFAULT_MODEL and order.model.cache_dir is None
    assert order.transcription.language is None and order.transcription.initial_prompt is None
    assert order.transcription.beam_size == contract.DEFAULT_BEAM_SIZE
    assert order.shards == 0


def test_work_order_maps_every_spec_field() -> None:
    tj = make_tj(
        input={"uri": "gs://b/in/", "include": ["*.flac"]},
        output={"uri": "gs://b/out/", "formats": ["json", "tsv"], "overwrite": True,
                "keepPartial": True},
        model={"name": "tiny.en", "computeType": "int8", "cacheVolume": {"claimName": "models"}},
        transcription={"language": "de", "task": "translate", "beamSize": 2, "batchSize": 1,
                       "vadFilter": False, "wordTimestamps": True, "initialPrompt": "Hallo",
                       "hotwords": "Whisperfleet Kubernetes", "packShortClips": False},
        shards=7,
    )
    order = workorder.work_order_for(tj)
    assert (order.input_uri, order.include) == ("gs://b/in/", ("*.flac",))
    assert order.output == contract.OutputOptions("gs://b/out/", ("json", "tsv"), True, True)
    assert order.model == contract.ModelOptions("tiny.en", "int8", contract.MODEL_CACHE_MOUNT)
    t = order.transcription
    assert (t.language, t.task, t.beam_size, t.batch_size) == ("de", "translate", 2, 1)
    assert (t.vad_filter, t.word_timestamps, t.initial_prompt) == (False, True, "Hallo")
    assert t.pack_short_clips is False
    assert t.hotwords == "Whisperfleet Kubernetes"
    assert order.shards == 7
    # What the pod receives round-trips through the contract unchanged.
    assert contract.WorkOrder.from_json(order.to_json()) == order


def test_language_candidates_reach_the_work_order() -> None:
    order = workorder.work_order_for(make_tj(transcription={"languageCandidates": ["en", "de"]}))
    assert order.transcription.language is None
    assert order.transcription.language_candidates == ("en", "de")
    assert contract.WorkOrder.from_json(order.to_json()) == order


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"input": {}}, "spec.input.uri"),
        ({"output": {"uri": ""}}, "spec.output.uri"),
        ({"output": {"uri": "s3://b/", "formats": ["docx"]}}, "spec.output.formats"),
        ({"model": {"computeType": "fp8"}}, "spec.model.computeType"),
        ({"transcription": {"task": "summarise"}}, "spec.transcription.task"),
        ({"transcription": {"languageCandidates": ["en", "xx"]}},
         "spec.transcription.languageCandidates"),
        ({"shards": -1}, "spec.shards"),
    ],
)
def test_bad_spec_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        workorder.work_order_for(make_tj(**spec))


# --- planner Job ---------------------------------------------------------------------------


def test_planner_job() -> None:
    tj = make_tj(storage={"secretName": "s3-credentials", "endpoint": "http://minio.minio:9000",
                          "region": "eu-west-1"})
    job = jobs.build_planner_job(tj, SETTINGS)
    validate(job)
    assert job["metadata"]["name"] == naming.planner_job_name(tj)
    assert job["metadata"]["namespace"] == "media"
    spec = job["spec"]
    assert "completionMode" not in spec and spec.get("parallelism", 1) == 1
    assert 0 <= spec["backoffLimit"] <= 3
    c = container(job)
    assert c["image"] == SETTINGS.runner_image
    assert c["command"] == ["whisperfleet"] and c["args"] == ["plan", "--workers", "4"]
    asked = {**c["resources"].get("requests", {}), **c["resources"].get("limits", {})}
    assert not [k for k in asked if k.startswith("nvidia.com/")]  # the planner needs no GPU
    assert "resourceClaims" not in spec["template"]["spec"]
    env = env_of(job)
    order = contract.WorkOrder.from_json(env[contract.ENV_WORK_ORDER])
    assert order == workorder.work_order_for(tj)
    assert env["AWS_ENDPOINT_URL"] == "http://minio.minio:9000"
    assert env["AWS_DEFAULT_REGION"] == env["AWS_REGION"] == "eu-west-1"
    assert c["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["terminationMessagePath"] == contract.TERMINATION_MESSAGE_PATH
    pod = spec["template"]["spec"]
    assert "tolerations" not in pod and "affinity" not in pod  # runs on any node
    # A missing bucket or bad spec fails the planner at once instead of retrying.
    fail_job = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert set(fail_job[0]["onExitCodes"]["values"]) == {contract.EXIT_USAGE, contract.EXIT_STORAGE}


def test_storage_env_without_endpoint_region_or_secret() -> None:
    tj = make_tj(storage={})
    for job in (jobs.build_planner_job(tj, SETTINGS), jobs.build_worker_job(tj, PLAN, SETTINGS)):
        validate(job)
        env = env_of(job)
        assert not {"AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"} & set(env)
        assert "envFrom" not in container(job)


# --- worker Job ----------------------------------------------------------------------------


def test_worker_job_shape() -> None:
    tj = make_tj(retries={"perShard": 2, "maxFailedShards": 3})
    job = jobs.build_worker_job(tj, PLAN, SETTINGS)
    validate(job)
    spec = job["spec"]
    assert job["metadata"]["name"] == naming.worker_job_name(tj)
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == PLAN.shards
    assert spec["parallelism"] == 4
    assert spec["backoffLimitPerIndex"] == 2
    assert spec["maxFailedIndexes"] == 3
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["suspend"] is False
    assert "activeDeadlineSeconds" not in spec and "ttlSecondsAfterFinished" not in spec
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    c = container(job)
    assert c["args"] == ["run-shard"]
    env = env_of(job)
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    # CUDA reads it at initialisation: it must precede anything else the runner sees.
    assert c["env"][0]["name"] == "CUDA_DEVICE_ORDER"
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    order = contract.WorkOrder.from_json(env[contract.ENV_WORK_ORDER])
    assert order.shards == PLAN.shards and order.device == "cuda"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_pod_failure_policy() -> None:
    rules = jobs.build_worker_job(make_tj(), PLAN, SETTINGS)["spec"]["podFailurePolicy"]["rules"]
    # Evictions and preemptions come first so they are never counted as failures.
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    by_code = {code: r["action"] for r in rules if "onExitCodes" in r
               for code in r["onExitCodes"]["values"]}
    assert by_code[contract.EXIT_BAD_INPUT] == "FailIndex"  # bad media: no retry of the shard
    assert by_code[contract.EXIT_USAGE] == "FailJob"  # a bad work order fails everywhere
    assert contract.EXIT_NO_GPU not in by_code  # counted: a replacement may get a good GPU
    assert all(r["onExitCodes"]["containerName"] == "runner" for r in rules[1:])


def test_max_failed_shards_means_max_failed_indexes_unset_is_unlimited_and_capped() -> None:
    job = jobs.build_worker_job(make_tj(), PLAN, SETTINGS)
    assert "maxFailedIndexes" not in job["spec"]
    # 0, as for a Job: fail fast, at the first failed shard.
    job = jobs.build_worker_job(make_tj(retries={"maxFailedShards": 0}), PLAN, SETTINGS)
    validate(job)
    assert job["spec"]["maxFailedIndexes"] == 0
    job = jobs.build_worker_job(make_tj(retries={"maxFailedShards": 99}), PLAN, SETTINGS)
    validate(job)
    assert job["spec"]["maxFailedIndexes"] == PLAN.shards


def test_deadline_ttl_suspend_and_queue() -> None:
    tj = make_tj(activeDeadlineSeconds=7200, ttlSecondsAfterFinished=86400, suspend=True)
    job = jobs.build_worker_job(tj, PLAN, SETTINGS)
    validate(job)
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    # The TTL deletes the TranscriptionJob (and this Job with it), not the Job alone.
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert job["spec"]["suspend"] is True
    assert naming.LABEL_KUEUE_QUEUE not in job["metadata"]["labels"]

    queued = jobs.build_worker_job(make_tj(queueName="gpu-queue"), PLAN, SETTINGS)
    validate(queued)
    assert queued["metadata"]["labels"][naming.LABEL_KUEUE_QUEUE] == "gpu-queue"
    assert queued["spec"]["suspend"] is True  # Kueue admits it by unsuspending


def test_restricted_pod_security_and_no_api_token() -> None:
    tj = make_tj()
    for job in (jobs.build_planner_job(tj, SETTINGS), jobs.build_worker_job(tj, PLAN, SETTINGS)):
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["runAsUser"] > 0 and psc["runAsGroup"] > 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = container(job)["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        # The writable paths a read-only root needs are emptyDirs, and HOME points into one.
        mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        home = env_of(job)["HOME"]
        for path in ("/tmp", home):
            assert "emptyDir" in volumes[mounts[path]]
        assert env_of(job)["HF_HOME"].startswith(home)
        assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_secret_values_are_never_inlined() -> None:
    # Even if someone tucks credentials into the spec, only the Secret reference travels.
    tj = make_tj(storage={"secretName": "s3-credentials", "region": "us-east-1",
                          "accessKeyId": SECRET_VALUE})
    for job in (jobs.build_planner_job(tj, SETTINGS), jobs.build_worker_job(tj, PLAN, SETTINGS)):
        text = json.dumps(job)
        assert SECRET_VALUE not in text
        assert container(job)["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
        names = {e["name"] for e in container(job)["env"]}
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & names


def test_owner_reference_and_labels() -> None:
    tj = make_tj()
    for job in (jobs.build_planner_job(tj, SETTINGS), jobs.build_worker_job(tj, PLAN, SETTINGS)):
        (ref,) = job["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "whisperfleet.io/v1alpha1", "kind": "TranscriptionJob",
            "name": "podcasts-nov", "uid": tj.uid,
            "controller": True, "blockOwnerDeletion": True,
        }
        pod_labels = job["spec"]["template"]["metadata"]["labels"]
        assert pod_labels[naming.LABEL_JOB_UID] == tj.uid
    planner = jobs.build_planner_job(tj, SETTINGS)
    worker = jobs.build_worker_job(tj, PLAN, SETTINGS)
    assert planner["metadata"]["labels"][naming.LABEL_COMPONENT] == naming.COMPONENT_PLANNER
    assert worker["metadata"]["labels"][naming.LABEL_COMPONENT] == naming.COMPONENT_WORKER


def test_model_cache_volume_is_mounted_read_only() -> None:
    tj = make_tj(model={"name": "large-v3", "cacheVolume": {"claimName": "whisper-models"}})
    job = jobs.build_worker_job(tj, PLAN, SETTINGS)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert vol["persistentVolumeClaim"] == {"claimName": "whisper-models", "readOnly": True}
    (mount,) = [m for m in container(job)["volumeMounts"] if m["name"] == vol["name"]]
    assert mount == {"name": vol["name"], "mountPath": contract.MODEL_CACHE_MOUNT, "readOnly": True}
    env = env_of(job)
    assert env[contract.ENV_MODEL_CACHE] == contract.MODEL_CACHE_MOUNT
    order = contract.WorkOrder.from_json(env[contract.ENV_WORK_ORDER])
    assert order.model.cache_dir == contract.MODEL_CACHE_MOUNT
    # The planner needs no models.
    planner = jobs.build_planner_job(tj, SETTINGS)
    assert all("persistentVolumeClaim" not in v for v in planner["spec"]["template"]["spec"]
               ["volumes"])


def data_mounts(job: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pod = job["spec"]["template"]["spec"]
    volumes = [v for v in pod["volumes"] if v["name"] == "data"]
    return volumes, [m for m in container(job)["volumeMounts"] if m["name"] == "data"]


def test_data_volume_is_mounted_writable_in_planner_and_workers() -> None:
    tj = make_tj(input={"uri": "file:///data/audio/"}, output={"uri": "file:///data/out/"},
                 storage={"volume": {"claimName": "media", "mountPath": "/data"}},
                 model={"cacheVolume": {"claimName": "whisper-models"}})
    for job in (jobs.build_planner_job(tj, SETTINGS), jobs.build_worker_job(tj, PLAN, SETTINGS)):
        validate(job)
        volumes, mounts = data_mounts(job)
        assert volumes == [{"name": "data", "persistentVolumeClaim": {"claimName": "media"}}]
        assert mounts == [{"name": "data", "mountPath": "/data"}]  # writable: no readOnly
        # The kubelet hands the volume to the runner's group, once, not file by file per pod.
        psc = job["spec"]["template"]["spec"]["securityContext"]
        assert psc["fsGroup"] == SETTINGS.run_as_group
        assert psc["fsGroupChangePolicy"] == "OnRootMismatch"
        # Volume names and mount paths stay distinct next to the scratch and model mounts.
        names = [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]]
        paths = [m["mountPath"] for m in container(job)["volumeMounts"]]
        assert len(names) == len(set(names)) and len(paths) == len(set(paths))
        order = contract.WorkOrder.from_json(env_of(job)[contract.ENV_WORK_ORDER])
        assert (order.input_uri, order.output.uri) == ("file:///data/audio/", "file:///data/out/")


def test_read_only_data_volume_for_input_only() -> None:
    tj = make_tj(input={"uri": "file:///mnt/media/talks/"},
                 storage={"volume": {"claimName": "media", "mountPath": "/mnt/media",
                                     "readOnly": True}})
    for job in (jobs.build_planner_job(tj, SETTINGS), jobs.build_worker_job(tj, PLAN, SETTINGS)):
        validate(job)
        volumes, mounts = data_mounts(job)
        assert volumes[0]["persistentVolumeClaim"] == {"claimName": "media", "readOnly": True}
        assert mounts == [{"name": "data", "mountPath": "/mnt/media", "readOnly": True}]


def test_data_volume_mount_path_defaults_to_data_as_in_the_crd() -> None:
    tj = make_tj(output={"uri": "file:///data/out/"}, storage={"volume": {"claimName": "m"}})
    job = jobs.build_worker_job(tj, PLAN, SETTINGS)
    assert data_mounts(job)[1] == [{"name": "data", "mountPath": "/data"}]


def test_no_data_volume_without_spec_storage_volume() -> None:
    for job in (jobs.build_planner_job(make_tj(), SETTINGS),
                jobs.build_worker_job(make_tj(), PLAN, SETTINGS)):
        assert data_mounts(job) == ([], [])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"input": {"uri": "file:///data/in/"}}, r"spec\.input\.uri is a file:// path"),
        ({"output": {"uri": "file:///database/out/"}, "storage": {"volume": {"claimName": "m"}}},
         r"spec\.output\.uri must be file:///data or a path under it"),
        ({"input": {"uri": "file:///data/../etc/"}, "storage": {"volume": {"claimName": "m"}}},
         r"spec\.input\.uri must be file:///data"),
        ({"output": {"uri": "file:///data/out/"},
          "storage": {"volume": {"claimName": "m", "readOnly": True}}},
         r"spec\.storage\.volume\.readOnly must be false"),
    ],
)
def test_file_uris_outside_the_volume_are_refused_without_admission(
    spec: dict[str, Any], message: str
) -> None:
    # A CRD installed without its CEL rules must not yield pods that find no files.
    tj = make_tj(**spec)
    for build in (lambda: jobs.build_planner_job(tj, SETTINGS),
                  lambda: jobs.build_worker_job(tj, PLAN, SETTINGS)):
        with pytest.raises(ValueError, match=message):
            build()


def test_operator_default_model_cache_and_none() -> None:
    settings = OperatorSettings(model_cache_claim="shared-models")
    job = jobs.build_worker_job(make_tj(), PLAN, settings)
    validate(job)
    claims = [v["persistentVolumeClaim"]["claimName"]
              for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["shared-models"]
    bare = jobs.build_worker_job(make_tj(), PLAN, SETTINGS)
    assert contract.ENV_MODEL_CACHE not in env_of(bare)
    assert all("persistentVolumeClaim" not in v
               for v in bare["spec"]["template"]["spec"]["volumes"])


def test_pass_through_of_worker_scheduling_and_image_options() -> None:
    tj = make_tj(workers={
        "parallelism": 2,
        "nodeSelector": {"pool": "gpu-a"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "asr",
                         "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app": "x"}}}}]}},
        "priorityClassName": "batch-low",
        "resources": {"requests": {"cpu": "6", "memory": "24Gi"}, "limits": {"memory": "32Gi"}},
        "image": "registry.example/whisperfleet-runner:dev",
        "imagePullSecrets": [{"name": "regcred"}],
    })
    settings = OperatorSettings(image_pull_policy="Always", image_pull_secrets=("ops-cred",),
                                worker_service_account="asr-workers")
    job = jobs.build_worker_job(tj, PLAN, settings)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["parallelism"] == 2
    assert pod["nodeSelector"] == {"pool": "gpu-a"}
    assert {"key": "dedicated", "operator": "Equal", "value": "asr",
            "effect": "NoSchedule"} in pod["tolerations"]
    assert tj.workers.affinity is not None
    assert pod["affinity"]["podAntiAffinity"] == tj.workers.affinity["podAntiAffinity"]
    assert pod["priorityClassName"] == "batch-low"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "ops-cred"}]
    assert pod["serviceAccountName"] == "asr-workers"
    assert pod["automountServiceAccountToken"] is False
    c = container(job)
    assert c["image"] == "registry.example/whisperfleet-runner:dev"
    assert c["imagePullPolicy"] == "Always"
    assert c["resources"]["requests"] == {"cpu": "6", "memory": "24Gi"}
    assert c["resources"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "1"}
    # The planner runs the same runner image, where the job's pods may run (a pool whose
    # every node is tainted too), with the job's priority, but asks for no GPU.
    planner = jobs.build_planner_job(tj, settings)
    validate(planner)
    assert container(planner)["image"] == "registry.example/whisperfleet-runner:dev"
    planner_pod = planner["spec"]["template"]["spec"]
    assert planner_pod["nodeSelector"] == {"pool": "gpu-a"}
    assert planner_pod["tolerations"] == [{"key": "dedicated", "operator": "Equal",
                                           "value": "asr", "effect": "NoSchedule"}]
    assert planner_pod["priorityClassName"] == "batch-low"
    assert "affinity" not in planner_pod
    assert "nvidia.com/gpu" not in json.dumps(planner_pod)


def test_the_transcriptionjob_labels_reach_its_pods_and_ours_win() -> None:
    obj = tj_object(name="labelled")
    obj["metadata"]["labels"] = {"team": "speech", "cost-center": "4711",
                                 "app.kubernetes.io/component": "mine", "job-name": "x",
                                 "batch.kubernetes.io/job-name": "x"}
    tj = spec.parse(obj)
    built = [jobs.build_planner_job(tj, SETTINGS), jobs.build_worker_job(tj, PLAN, SETTINGS),
             cleanup.build_cleanup_job(tj, SETTINGS)]
    for job, component in zip(built, ("planner", "worker", "cleanup"), strict=True):
        validate(job)
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels["team"] == "speech" and labels["cost-center"] == "4711"
        assert labels["app.kubernetes.io/component"] == component
        assert labels[naming.LABEL_JOB_UID] == tj.uid
        assert "job-name" not in labels and "batch.kubernetes.io/job-name" not in labels
        # The Jobs themselves keep only ours.
        assert "team" not in job["metadata"]["labels"]


def test_worker_job_refuses_empty_plan_and_bad_numbers() -> None:
    with pytest.raises(ValueError, match="0 shards"):
        jobs.build_worker_job(make_tj(), contract.PlanReport(shards=0), SETTINGS)
    with pytest.raises(ValueError, match="parallelism"):
        jobs.build_worker_job(make_tj(workers={"parallelism": 0}), PLAN, SETTINGS)
    with pytest.raises(ValueError, match="perShard"):
        jobs.build_worker_job(make_tj(retries={"perShard": -1}), PLAN, SETTINGS)


def test_builders_do_not_mutate_their_input() -> None:
    tj = make_tj(workers={"parallelism": 2, "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "gpu": {"minMemoryMiB": 20000}})
    before = copy.deepcopy(tj)
    jobs.build_planner_job(tj, SETTINGS)
    jobs.build_worker_job(tj, PLAN, SETTINGS)
    assert tj == before


# --- settings ------------------------------------------------------------------------------


def test_settings_from_env() -> None:
    s = OperatorSettings.from_env({
        "WHISPERFLEET_RUNNER_IMAGE": "reg/runner:1",
        "WHISPERFLEET_IMAGE_PULL_POLICY": "Always",
        "WHISPERFLEET_MODEL_CACHE_CLAIM": "models",
        "WHISPERFLEET_IMAGE_PULL_SECRETS": "a, b,,",
        "WHISPERFLEET_RUN_AS_USER": "2000",
        "WHISPERFLEET_WORKER_RESOURCES": '{"requests": {"cpu": "1"}}',
    })
    assert s.runner_image == "reg/runner:1" and s.image_pull_policy == "Always"
    assert s.model_cache_claim == "models" and s.image_pull_secrets == ("a", "b")
    assert s.run_as_user == 2000 and s.worker_resources == {"requests": {"cpu": "1"}}
    assert OperatorSettings.from_env({}) == OperatorSettings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WHISPERFLEET_IMAGE_PULL_POLICY": "Sometimes"}, "IMAGE_PULL_POLICY"),
        ({"WHISPERFLEET_RUN_AS_USER": "0"}, "non-root"),
        ({"WHISPERFLEET_RUN_AS_USER": "root"}, "RUN_AS_USER must be an integer"),
        ({"WHISPERFLEET_WORKER_RESOURCES": "{cpu: 1"}, "WORKER_RESOURCES is not valid JSON"),
        ({"WHISPERFLEET_WORKER_RESOURCES": '{"cpu": "1"}'}, "requests"),
        ({"WHISPERFLEET_RUNNER_IMAGE": ""}, "RUNNER_IMAGE"),
    ],
)
def test_bad_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorSettings.from_env(env)


def test_worker_job_follows_suspend_and_parallelism_but_not_into_kueue() -> None:
    running_job = {"spec": {"parallelism": 4, "suspend": False}}
    suspended_job = {"spec": {"parallelism": 4, "suspend": True}}
    drift = jobs.worker_job_drift
    assert drift(make_tj(), False, running_job) == {}
    assert drift(make_tj(suspend=True), False, running_job) == {"suspend": True}
    assert drift(make_tj(workers={"parallelism": 9}), False, running_job) == {"parallelism": 9}
    # Resume lifts only the operator's own suspension, and never Kueue's admission gate.
    assert drift(make_tj(), True, suspended_job) == {"suspend": False}
    assert drift(make_tj(), False, suspended_job) == {}
    assert drift(make_tj(queueName="q"), True, suspended_job) == {}
    finished = {**running_job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert drift(make_tj(suspend=True), False, finished) == {}


# --- cleanup Job (the TTL) ------------------------------------------------------------------


def test_cleanup_job_forgets_the_state_with_the_storage_env_and_a_deadline() -> None:
    tj = make_tj(storage={"secretName": "s3-credentials"}, ttlSecondsAfterFinished=0)
    job = cleanup.build_cleanup_job(tj, SETTINGS)
    validate(job)
    assert job["metadata"]["name"] == naming.cleanup_job_name(tj)
    assert job["metadata"]["ownerReferences"][0]["uid"] == tj.uid
    assert container(job)["args"] == ["forget-state"]
    assert container(job)["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert job["spec"]["activeDeadlineSeconds"] == SETTINGS.cleanup_deadline_seconds
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "nvidia.com/gpu" not in json.dumps(container(job).get("resources"))
    order = contract.WorkOrder.from_json(env_of(job)[contract.ENV_WORK_ORDER])
    assert order.job_uid == tj.uid and order.output.uri == tj.output.uri


def test_per_job_env_labels_annotations_and_service_account_reach_every_pod() -> None:
    tj = make_tj(workers={
        "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                {"name": "AWS_CA_BUNDLE", "value": "/etc/ssl/private-ca.pem"}],
        "podLabels": {"cost-center": "4711"},
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
        "serviceAccountName": "transcribers"})
    built = [jobs.build_planner_job(tj, SETTINGS), jobs.build_worker_job(tj, PLAN, SETTINGS),
             cleanup.build_cleanup_job(tj, SETTINGS)]
    for job in built:
        validate(job)
        template = job["spec"]["template"]
        assert env_of(job)["HTTPS_PROXY"] == "http://proxy:3128"
        assert env_of(job)["AWS_CA_BUNDLE"] == "/etc/ssl/private-ca.pem"
        assert template["metadata"]["labels"]["cost-center"] == "4711"
        assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
        assert template["metadata"]["annotations"][naming.ANNOTATION_TJ_NAME] == tj.name
        assert template["spec"]["serviceAccountName"] == "transcribers"
        assert template["spec"]["automountServiceAccountToken"] is False


def test_the_crd_refuses_every_env_name_the_builders_set() -> None:
    """One list in the CRD's env rule; every name a builder sets itself is on it (or under
    a refused prefix), so a user's variable never clashes with ours."""
    import re

    import yaml

    from tests.support.paths import CRD

    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    (version,) = crd["spec"]["versions"]
    env = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["workers"][
        "properties"]["env"]
    (rule,) = env["items"]["x-kubernetes-validations"]
    listed = set(re.findall(r"'([A-Z_]+)'", rule["rule"].split(" in ", 1)[1]))
    prefixes = tuple(re.findall(r"startsWith\('([A-Z_]+)'\)", rule["rule"]))
    tj = make_tj(storage={"secretName": "s3", "endpoint": "http://minio:9000",
                          "region": "eu-west-1"})
    ours = {name for job in (jobs.build_planner_job(tj, SETTINGS),
                             jobs.build_worker_job(tj, PLAN, SETTINGS),
                             cleanup.build_cleanup_job(tj, SETTINGS))
            for name in env_of(job)}
    assert sorted(n for n in ours if n not in listed and not n.startswith(prefixes)) == []


def test_the_users_volumes_reach_every_pod_of_the_job_after_ours() -> None:
    ca = {"name": "private-ca", "configMap": {"name": "store-ca",
                                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
    mount = {"name": "private-ca", "mountPath": "/etc/ssl/private-ca", "readOnly": True}
    tj = make_tj(workers={"volumes": [ca], "volumeMounts": [mount],
                          "env": [{"name": "AWS_CA_BUNDLE",
                                   "value": "/etc/ssl/private-ca/ca.crt"}]})
    for job in (jobs.build_planner_job(tj, SETTINGS), jobs.build_worker_job(tj, PLAN, SETTINGS),
                cleanup.build_cleanup_job(tj, SETTINGS)):
        validate(job)
        pod = job["spec"]["template"]["spec"]
        assert pod["volumes"][-1] == ca
        assert container(job)["volumeMounts"][-1] == mount
        assert env_of(job)["AWS_CA_BUNDLE"] == "/etc/ssl/private-ca/ca.crt"
