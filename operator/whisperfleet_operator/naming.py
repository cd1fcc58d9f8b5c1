"""Deterministic names and labels for everything the operator creates.

Names derive from the TranscriptionJob's name plus a short hash of its uid, so:
- an operator restart computes the same name again and finds the existing Job (no second Job);
- a TranscriptionJob deleted and recreated under the same name gets fresh Jobs, never the
  old ones still being garbage-collected;
- names fit where Kubernetes copies them: the Job controller puts the Job name into the
  `batch.kubernetes.io/job-name` label (63 chars) and Indexed pods get the hostname
  `<job>-<index>`, a DNS label (63 chars), so the Job name is capped well below that.
"""

from __future__ import annotations

import hashlib
import re

import kopf

from whisperfleet_operator.objects import Obj
from whisperfleet_operator.spec import KUEUE_QUEUE_LABEL, TranscriptionJob

GROUP = "whisperfleet.io"
VERSION = "v1alpha1"
KIND = "TranscriptionJob"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_JOB_UID = f"{GROUP}/job-uid"  # the TranscriptionJob's uid (names may exceed 63 chars)
LABEL_KUEUE_QUEUE = KUEUE_QUEUE_LABEL
# On pods (via the Job templates): the TranscriptionJob's name, so a pod event finds its
# TranscriptionJob with one GET. An annotation, as names may exceed a label value's 63 chars.
ANNOTATION_TJ_NAME = f"{GROUP}/transcriptionjob"

COMPONENT_PLANNER = "planner"
COMPONENT_WORKER = "worker"
COMPONENT_CLEANUP = "cleanup"  # removes the state folder when the TTL ends

MAX_NAME = 52  # leaves room for "-<index>" (up to 10 digits) in Indexed pods' hostnames
_HASH_LEN = 6


def _derived(job: TranscriptionJob, suffix: str) -> str:
    digest = hashlib.sha256(job.uid.encode()).hexdigest()[:_HASH_LEN]
    tail = f"-{suffix}-{digest}"
    # Dots are legal in object names but not in the pods' DNS-label hostnames.
    stem = re.sub(r"[^a-z0-9-]", "-", job.name.lower())[: MAX_NAME - len(tail)].strip("-")
    return f"{stem or 'tj'}{tail}"


def planner_job_name(job: TranscriptionJob) -> str:
    return _derived(job, "plan")


def worker_job_name(job: TranscriptionJob) -> str:
    return _derived(job, "work")


def cleanup_job_name(job: TranscriptionJob) -> str:
    return _derived(job, "clean")


def claim_template_name(job: TranscriptionJob) -> str:
    return _derived(job, "gpu")


def labels_for(job: TranscriptionJob, component: str) -> dict[str, str]:
    """Labels on the Jobs, their pods and claim templates; select pods of one TranscriptionJob
    with `LABEL_JOB_UID` (plus `LABEL_COMPONENT` for planner vs worker)."""
    return {
        LABEL_NAME: "whisperfleet",
        LABEL_MANAGED_BY: "whisperfleet-operator",
        LABEL_COMPONENT: component,
        LABEL_JOB_UID: job.uid,
    }


# Labels the Job controller and Kueue set on pods themselves: a TranscriptionJob's label
# with one of these keys would clash with theirs, so it is not copied.
_NOT_COPIED = ("job-name", "controller-uid")
_NOT_COPIED_PREFIXES = ("batch.kubernetes.io/", "kueue.x-k8s.io/")


def pod_labels(job: TranscriptionJob, component: str) -> dict[str, str]:
    """Labels of the pods' templates: the TranscriptionJob's own labels and
    spec.workers.podLabels (cost allocation, service meshes, policies see the job's pods as
    the job), then ours, which win."""
    copied = {key: value for key, value in {**job.labels, **job.workers.pod_labels}.items()
              if key not in _NOT_COPIED and not key.startswith(_NOT_COPIED_PREFIXES)}
    return {**copied, **labels_for(job, component)}


def pod_annotations(job: TranscriptionJob) -> dict[str, str]:
    """Annotations on the job's pods: spec.workers.podAnnotations, then ours
    (`ANNOTATION_TJ_NAME`), which win."""
    return {**job.workers.pod_annotations, ANNOTATION_TJ_NAME: job.name}


def owner_reference(job: TranscriptionJob) -> Obj:
    """Controller owner reference: deleting the TranscriptionJob deletes what it owns."""
    return dict(kopf.build_owner_reference({
        "apiVersion": job.api_version or f"{GROUP}/{VERSION}",
        "kind": job.kind or KIND,
        "metadata": {"name": job.name, "uid": job.uid},
    }, controller=True, block_owner_deletion=True))


def metadata(job: TranscriptionJob, name: str, component: str) -> Obj:
    """Metadata of an object the TranscriptionJob owns, in its namespace."""
    meta: Obj = {"name": name, "labels": labels_for(job, component),
                            "ownerReferences": [owner_reference(job)]}
    if job.namespace:
        meta["namespace"] = job.namespace
    return meta
