"""Where a test's output lands, read for the secret guard: files under a folder, objects
of the in-process moto S3 server, and what a local-cluster namespace shows its users.

Each reader is cheap enough to run after every test: files are read once in chunks, moto
objects straight from the server's in-process store (no HTTP), a namespace with a handful
of list calls.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.secrets_guard import Leak, Secrets

CHUNK = 8 << 20


def file_leaks(root: Path, secrets: Secrets) -> list[Leak]:
    """Leaks in the files under `root` (symlinks not followed: they point at inputs)."""
    shortest = min((len(raw) for _, raw, _ in secrets.forms()), default=0)
    overlap = max(0, secrets.longest - 1)
    leaks: list[Leak] = []
    for path, size in _files(str(root)):
        if size < shortest:  # many tests write thousands of tiny files: skip them unread
            continue
        channel = f"file {os.path.relpath(path, root)}"
        try:
            with open(path, "rb") as fh:
                tail = b""
                while chunk := fh.read(CHUNK):
                    # The overlap finds a value cut by a chunk boundary.
                    if found := secrets.find(channel, tail + chunk):
                        leaks += found
                        break
                    tail = chunk[-overlap:] if overlap else b""
        except OSError:
            continue  # removed or unreadable meanwhile: not written output
    return leaks


def _files(folder: str) -> Iterator[tuple[str, int]]:
    """(path, size) of the regular files under `folder`, symlinks left out."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _files(entry.path)
            elif entry.is_file(follow_symlinks=False):
                yield entry.path, entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue


def _s3_backends() -> list[Any]:
    models = sys.modules.get("moto.s3.models")
    if models is None:  # no in-process moto server has run in this session
        return []
    return [backend for account in list(models.s3_backends.values())
            for backend in list(account.values())]


def moto_buckets() -> frozenset[str]:
    """Names of the buckets of the in-process moto server (every one started here shares it)."""
    return frozenset(name for backend in _s3_backends() for name in list(backend.buckets))


def moto_objects(buckets: frozenset[str]) -> Iterator[tuple[str, bytes]]:
    """(s3 URI, body) of every object in `buckets`."""
    for backend in _s3_backends():
        for name in buckets:
            bucket = backend.buckets.get(name)
            if bucket is None:
                continue
            for key in list(bucket.keys.values()):
                value = getattr(key, "value", None)
                if isinstance(value, bytes):
                    yield f"s3://{name}/{key.name}", value


def cluster_secrets(cluster: Any, namespace: str) -> dict[str, str]:
    """Credentials a cluster test holds: the cluster's own (admin token, S3 keys) and every
    value of the Secrets in `namespace`, by label."""
    found = {"the cluster's admin token": cluster.control_plane.pki.admin_token,
             "the cluster's S3 access key": cluster.s3.access_key,
             "the cluster's S3 secret key": cluster.s3.secret_key}
    listed = cluster.rest().get(f"/api/v1/namespaces/{namespace}/secrets") or {}
    for secret in listed.get("items") or []:
        name = secret["metadata"]["name"]
        for key, value in (secret.get("data") or {}).items():
            text = base64.b64decode(value).decode("utf-8", "replace")
            found[f"Secret {namespace}/{name} {key}"] = text
    return found


def cluster_texts(cluster: Any, namespace: str) -> Iterator[tuple[str, str]]:
    """What users of `namespace` read: TranscriptionJob status, Events, pods' status (their
    termination messages) and logs."""
    rest = cluster.rest()
    tjs = rest.get(f"/apis/whisperfleet.io/v1alpha1/namespaces/{namespace}"
                   "/transcriptionjobs") or {}  # None: the CRD is not installed
    for tj in tjs.get("items") or []:
        yield (f"TranscriptionJob {namespace}/{tj['metadata']['name']} status",
               json.dumps(tj.get("status") or {}, ensure_ascii=False))
    events = rest.get(f"/api/v1/namespaces/{namespace}/events") or {}
    for event in events.get("items") or []:
        about = event.get("involvedObject") or {}
        yield (f"Event {event.get('reason', '')} of {about.get('kind')}/{about.get('name')}",
               event.get("message") or "")
    pods = rest.get(f"/api/v1/namespaces/{namespace}/pods") or {}
    for pod in pods.get("items") or []:
        name = pod["metadata"]["name"]
        yield f"pod {namespace}/{name} status", json.dumps(pod.get("status") or {},
                                                           ensure_ascii=False)
        yield f"pod {namespace}/{name} log", cluster.pod_log(namespace, name)
