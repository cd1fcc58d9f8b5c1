"""Pod-spec pieces shared by planner and worker pods.

Every pod runs under the `restricted` Pod Security Standard with a read-only root
filesystem; the few writable paths (/tmp, a home for library caches) are emptyDirs.
Storage credentials reach pods only through `envFrom` of the user's Secret: the operator
never reads, copies or inlines them. `file://` URIs point into the user's PVC
(spec.storage.volume), mounted at the same path in the planner and every worker. The user's
own volumes (spec.workers.volumes and volumeMounts: a private CA for an S3-compatible store,
a config file) reach every pod too, after ours; admission keeps them to the volume types
the `restricted` level allows and off the names and paths used here.
"""

from __future__ import annotations

from whisperfleet_operator.objects import Obj
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.spec import TranscriptionJob
from whisperfleet_runner import contract

CONTAINER_NAME = "runner"
HOME_DIR = "/home/whisperfleet"
TMP_DIR = "/tmp"
MODEL_CACHE_VOLUME = "model-cache"
DATA_VOLUME = "data"
FILE_SCHEME = "file://"


def pod_security_context(settings: OperatorSettings) -> Obj:
    """Restricted; the uid and gid are fixed unless the settings leave them to the platform
    (which then also assigns the fsGroup, e.g. OpenShift's restricted-v2)."""
    context: Obj = {"runAsNonRoot": True}
    if settings.run_as_user is not None:
        context["runAsUser"] = settings.run_as_user
    if settings.run_as_group is not None:
        context["runAsGroup"] = settings.run_as_group
        # The kubelet gives writable volumes (the data PVC) to this group, so the non-root
        # runner can write transcripts there. OnRootMismatch: a PVC full of audio is not
        # re-chowned file by file at every pod start, only when its root is not ours yet.
        context["fsGroup"] = settings.run_as_group
        context["fsGroupChangePolicy"] = "OnRootMismatch"
    context["seccompProfile"] = {"type": "RuntimeDefault"}
    return context


def container_security_context() -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def storage_env(job: TranscriptionJob) -> tuple[list[Obj], list[Obj]]:
    """(env, envFrom) for object storage: endpoint/region as plain values, secrets by ref."""
    storage = job.storage
    env: list[Obj] = []
    if storage.endpoint:
        # botocore (and so s3fs) reads AWS_ENDPOINT_URL for every AWS client.
        env.append({"name": "AWS_ENDPOINT_URL", "value": storage.endpoint})
    if storage.region:
        # AWS_DEFAULT_REGION for botocore, AWS_REGION for the newer SDKs and tools.
        env.append({"name": "AWS_DEFAULT_REGION", "value": storage.region})
        env.append({"name": "AWS_REGION", "value": storage.region})
    env_from: list[Obj] = []
    if storage.secret_name:
        env_from.append({"secretRef": {"name": storage.secret_name}})
    return env, env_from


def runtime_env() -> list[Obj]:
    """Identity via the downward API (POD_IP: where workers serve their metrics) and
    writable homes for library caches."""
    field = [("NODE_NAME", "spec.nodeName"), ("POD_NAME", "metadata.name"),
             ("POD_NAMESPACE", "metadata.namespace"), ("POD_IP", "status.podIP")]
    env: list[Obj] = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in field
    ]
    env += [
        {"name": "HOME", "value": HOME_DIR},
        {"name": "XDG_CACHE_HOME", "value": f"{HOME_DIR}/.cache"},
        {"name": "HF_HOME", "value": f"{HOME_DIR}/.cache/huggingface"},
        {"name": "TMPDIR", "value": TMP_DIR},
    ]
    return env


def scratch_volumes() -> tuple[list[Obj], list[Obj]]:
    """(volumes, mounts) for the writable paths a read-only root filesystem lacks."""
    volumes = [{"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": TMP_DIR}, {"name": "home", "mountPath": HOME_DIR}]
    return volumes, mounts


def model_cache(claim: str) -> tuple[list[Obj], list[Obj], list[dict]]:
    """(volumes, mounts, env) mounting the pre-staged model PVC read-only, or nothing."""
    if not claim:
        return [], [], []
    volumes = [{
        "name": MODEL_CACHE_VOLUME,
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }]
    mounts = [{"name": MODEL_CACHE_VOLUME, "mountPath": contract.MODEL_CACHE_MOUNT,
               "readOnly": True}]
    env = [{"name": contract.ENV_MODEL_CACHE, "value": contract.MODEL_CACHE_MOUNT}]
    return volumes, mounts, env


def _under(uri: str, mount: str) -> bool:
    path = uri[len(FILE_SCHEME):]
    inside = path == mount or path.startswith(mount.rstrip("/") + "/")
    return inside and ".." not in path.split("/")


def data_volume(job: TranscriptionJob) -> tuple[list[Obj], list[Obj]]:
    """(volumes, mounts) for spec.storage.volume, or nothing.

    Admission refuses what is checked here; this catches a CRD installed without its rules,
    so a file:// job fails with a message instead of pods that find no files.
    """
    volume = job.storage.volume
    uris = {"input": job.input_uri, "output": job.output.uri}
    for field, uri in uris.items():
        if not uri.startswith(FILE_SCHEME):
            continue
        if volume is None:
            raise ValueError(f"spec.{field}.uri is a file:// path, which needs "
                             "spec.storage.volume (the PersistentVolumeClaim mounted in the pods)")
        if not _under(uri, volume.mount_path):
            raise ValueError(f"spec.{field}.uri must be file://{volume.mount_path} or a path "
                             "under it, without .. segments")
    if volume is None:
        return [], []
    read_only = volume.read_only
    if read_only and uris["output"].startswith(FILE_SCHEME):
        raise ValueError("spec.storage.volume.readOnly must be false when spec.output.uri is "
                         "file:// (the transcripts are written to the volume)")
    claim: Obj = {"claimName": volume.claim_name}
    mounted: Obj = {"name": DATA_VOLUME, "mountPath": volume.mount_path}
    if read_only:
        claim["readOnly"] = True
        mounted["readOnly"] = True
    return [{"name": DATA_VOLUME, "persistentVolumeClaim": claim}], [mounted]


def image_for(job: TranscriptionJob, settings: OperatorSettings) -> str:
    """The job's own runner image override, else the operator's; planner and workers share it
    so both run the same version of the runner."""
    return job.workers.image or settings.runner_image


def image_pull_secrets(job: TranscriptionJob, settings: OperatorSettings
                       ) -> list[dict[str, str]]:
    names = dict.fromkeys([*job.workers.image_pull_secrets, *settings.image_pull_secrets])
    return [{"name": n} for n in names if n]


def base_container(
    job: TranscriptionJob, settings: OperatorSettings, args: list[str], work_order_json: str
) -> Obj:
    """The runner container both pod kinds start from; callers add resources and mounts."""
    env, env_from = storage_env(job)
    container: Obj = {
        "name": CONTAINER_NAME,
        "image": image_for(job, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["whisperfleet"],
        "args": args,
        "env": [{"name": contract.ENV_WORK_ORDER, "value": work_order_json}, *runtime_env(),
                # The runner reads its report's path from here: one source with the field.
                {"name": contract.ENV_TERMINATION_LOG, "value": contract.TERMINATION_MESSAGE_PATH},
                *env,
                # The user's own (admission refuses the names above).
                *({"name": name, "value": value} for name, value in job.workers.env)],
        "securityContext": container_security_context(),
        "terminationMessagePath": contract.TERMINATION_MESSAGE_PATH,
        # The runner writes its report there; if it dies first, the log tail explains why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*scratch_volumes()[1], *data_volume(job)[1],
                         *(dict(m) for m in job.workers.volume_mounts)],
    }
    if env_from:
        container["envFrom"] = env_from
    return container


def base_pod_spec(job: TranscriptionJob, settings: OperatorSettings) -> Obj:
    """Pod spec without containers: no API token, restricted security, scratch volumes,
    and where the job's pods may run: spec.workers' tolerations, nodeSelector and priority
    class hold for the planner and cleanup pods too (where every node is tainted, they
    could not schedule otherwise); the worker adds its GPU toleration and node terms."""
    spec: Obj = {
        "restartPolicy": "Never",  # the Job controller retries; required by podFailurePolicy
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # keep the env small and free of unrelated services
        "securityContext": pod_security_context(settings),
        "volumes": [*scratch_volumes()[0], *data_volume(job)[0],
                    *(dict(v) for v in job.workers.volumes)],
    }
    workers = job.workers
    if workers.tolerations:
        spec["tolerations"] = [dict(t) for t in workers.tolerations]
    if workers.node_selector:
        spec["nodeSelector"] = dict(workers.node_selector)
    if workers.priority_class_name:
        spec["priorityClassName"] = workers.priority_class_name
    account = workers.service_account_name or settings.worker_service_account
    if account:
        spec["serviceAccountName"] = account
    secrets = image_pull_secrets(job, settings)
    if secrets:
        spec["imagePullSecrets"] = secrets
    return spec
