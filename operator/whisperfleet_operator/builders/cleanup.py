"""The cleanup Job of a finished TranscriptionJob whose TTL ended (pure: dict in, dict out).

The operator never holds storage credentials, so removing the job's state folder
(`<output>/.whisperfleet/<job-uid>/`) is a one-pod Job like the planner's: the user's
storage environment, no GPU, no API token, `whisperfleet forget-state`. It has a deadline,
so a cleanup that cannot run (the Secret is gone, the store refuses) ends and the
TranscriptionJob is deleted all the same, with a Warning Event naming what was left.
"""

from __future__ import annotations

import copy
import dataclasses

from whisperfleet_operator import naming
from whisperfleet_operator.builders import pods
from whisperfleet_operator.builders.workorder import work_order_for
from whisperfleet_operator.objects import Obj
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_operator.spec import TranscriptionJob

CLEANUP_BACKOFF_LIMIT = 2  # storage errors are often transient


def build_cleanup_job(job: TranscriptionJob, settings: OperatorSettings) -> Obj:
    """One pod that deletes the job's state folder and nothing else."""
    order = dataclasses.replace(work_order_for(job, settings), metrics_port=0)
    container = pods.base_container(job, settings, ["forget-state"], order.to_json())
    container["resources"] = copy.deepcopy(settings.planner_resources)
    pod_spec = pods.base_pod_spec(job, settings)
    pod_spec["containers"] = [container]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": naming.metadata(job, naming.cleanup_job_name(job), naming.COMPONENT_CLEANUP),
        "spec": {
            "backoffLimit": CLEANUP_BACKOFF_LIMIT,
            "activeDeadlineSeconds": settings.cleanup_deadline_seconds,
            "template": {"metadata": {"labels": naming.pod_labels(job, naming.COMPONENT_CLEANUP),
                                      "annotations": naming.pod_annotations(job)},
                         "spec": pod_spec},
        },
    }
