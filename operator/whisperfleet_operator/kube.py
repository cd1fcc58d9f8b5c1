"""The operator's edge: every Kubernetes API call it makes (except kopf's own).

Bodies go in and come out as plain dicts (`_preload_content=False` + JSON), so what the
pure builders produce is exactly what is sent, and no client model validation gets in the
way of reading what the API server returns. Never reads Secrets.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from whisperfleet_operator import kueue, metrics, naming
from whisperfleet_operator.objects import Obj

logger = logging.getLogger(__name__)

JOBS = ("batch", "v1", "jobs")
CLAIM_TEMPLATES = ("resource.k8s.io", "v1", "resourceclaimtemplates")
TRANSCRIPTION_JOBS = (naming.GROUP, naming.VERSION, "transcriptionjobs")
TIMEOUT = 30  # seconds per call; a stuck API call must not block a handler thread forever

class Rejected(Exception):
    """The API server refused an object as invalid (HTTP 400/422): retrying cannot help."""


class Conflict(Exception):
    """The object changed since it was read (HTTP 409 on a patch naming its resourceVersion)."""


def transient(exc: BaseException) -> bool:
    """Whether a failed API call may succeed if made again later: a conflict (409),
    throttling (429), a server error (5xx) or a broken connection — what is left of them
    once the client's own retries (`Kube.from_environment`) gave up."""
    if isinstance(exc, Conflict):
        return True
    if isinstance(exc, ApiException):
        return exc.status in (409, 429) or (exc.status or 0) >= 500
    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))


def error_reason(exc: BaseException) -> str:
    """What stopped a call, in one word (the operator's errors metric): conflict, throttled,
    api_server_error, api_refused (another 4xx), api_unreachable, internal (not the API's)."""
    if isinstance(exc, Conflict):
        return "conflict"
    if isinstance(exc, Rejected):
        return "api_refused"
    if isinstance(exc, ApiException):
        code = exc.status or 0
        if code in (409, 429):
            return "conflict" if code == 409 else "throttled"
        if code >= 500:
            return "api_server_error"
        return "api_refused" if code else "api_unreachable"
    return "api_unreachable" if transient(exc) else "internal"


def summary(exc: BaseException) -> str:
    """One line naming an API failure. An ApiException's own text adds the response's
    headers and body, which log readers do not need."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    return str(exc) or type(exc).__name__


def _api_message(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or b"{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or f"HTTP {exc.status}")


class Kube:
    """A thin wrapper over the `kubernetes` client for the objects whisperfleet manages.

    Jobs, claim templates and TranscriptionJobs all go through the generic
    group/version/plural calls: they take and return plain dicts, where the typed calls
    would first coerce our manifests into client models (and could drop newer fields).
    """

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.objects = client.CustomObjectsApi(api)

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account first, then the kubeconfig (as kopf itself does)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            # $KUBECONFIG read now, not when the client library was imported.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                    client_configuration=configuration)
        # Transient API errors (throttling, restarts) are retried rather than lost: Job
        # events are not re-delivered, so a failed status update would stay stale.
        # One connection per handler thread and progress reader at once, not urllib3's 10.
        configuration.connection_pool_maxsize = 32
        configuration.retries = urllib3.Retry(
            total=4, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None, raise_on_status=False,
        )
        return cls(metrics.instrument(client.ApiClient(configuration)))

    def close(self) -> None:
        self.api.close()

    # --- generic, by (group, version, plural) ---------------------------------------------

    def create(self, gvp: tuple[str, str, str], namespace: str, body: Obj, *,
               dry_run: bool = False) -> bool:
        """Create; False (and no error) when it already exists — restarts never duplicate.
        Raises Rejected when the API server refuses the object as invalid. `dry_run`: every
        admission step runs (defaults, validation, webhooks), nothing is stored."""
        extra = {"dry_run": "All"} if dry_run else {}
        try:
            self.objects.create_namespaced_custom_object(
                *gvp[:2], namespace, gvp[2], body, _preload_content=False,
                _request_timeout=TIMEOUT, **extra)
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status in (400, 422):
                raise Rejected(_api_message(exc)) from None
            raise
        if dry_run:
            return True
        logger.info("created %s %s/%s", body.get("kind"), namespace,
                    (body.get("metadata") or {}).get("name"))
        return True

    def delete(self, gvp: tuple[str, str, str], namespace: str, name: str, uid: str) -> bool:
        """Delete that incarnation (uid precondition: never a namesake re-created since);
        what it owns goes by garbage collection. False when it is gone already."""
        try:
            self.objects.delete_namespaced_custom_object(
                *gvp[:2], namespace, gvp[2], name, _request_timeout=TIMEOUT,
                body={"preconditions": {"uid": uid}, "propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or a namesake holds the name now
                return False
            raise
        logger.info("deleted %s %s/%s", gvp[2], namespace, name)
        return True

    def get(self, gvp: tuple[str, str, str], namespace: str, name: str) -> Obj | None:
        try:
            response = self.objects.get_namespaced_custom_object(
                *gvp[:2], namespace, gvp[2], name, _preload_content=False,
                _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _json(response)

    def patch(self, gvp: tuple[str, str, str], namespace: str, name: str, patch: Obj,
              *, status: bool = False) -> bool:
        """JSON merge patch (valid for built-in and custom resources alike); False on 404.
        A patch naming metadata.resourceVersion raises Conflict if the object changed."""
        fn = (self.objects.patch_namespaced_custom_object_status if status
              else self.objects.patch_namespaced_custom_object)
        try:
            fn(*gvp[:2], namespace, gvp[2], name, patch, _preload_content=False,
               _request_timeout=TIMEOUT, _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status == 409:
                raise Conflict(_api_message(exc)) from None
            raise
        return True

    # --- specific ----------------------------------------------------------------------------

    def list_pods(self, namespace: str, job_uid: str, component: str) -> list[Obj]:
        selector = f"{naming.LABEL_JOB_UID}={job_uid},{naming.LABEL_COMPONENT}={component}"
        return list(_json(self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False,
            _request_timeout=TIMEOUT)).get("items") or [])


    def list_workloads(self, namespace: str, job_uid: str) -> list[Obj] | None:
        """Kueue's Workloads of one Job (by the Job's uid); None where the API server does
        not serve Kueue's Workloads (Kueue is not installed)."""
        try:
            response = self.objects.list_namespaced_custom_object(
                *kueue.WORKLOADS[:2], namespace, kueue.WORKLOADS[2],
                label_selector=f"{kueue.LABEL_JOB_UID}={job_uid}", _preload_content=False,
                _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return list(_json(response).get("items") or [])


def _json(response: Any) -> Obj:
    return json.loads(response.data or b"{}")
