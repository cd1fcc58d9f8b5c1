"""TranscriptionJob objects for tests: as the API server returns them, and parsed."""

from __future__ import annotations

from typing import Any

from whisperfleet_operator import spec

UID = "6f1c9d2e-1111-4a4a-9b9b-0123456789ab"


def tj_object(name: str = "podcasts-nov", namespace: str = "media", uid: str = UID,
              status: dict[str, Any] | None = None, generation: int = 1,
              **fields: Any) -> dict[str, Any]:
    """A TranscriptionJob as the API server hands it to the operator; `fields` replace
    top-level spec sections."""
    base: dict[str, Any] = {
        "input": {"uri": "s3://media/podcasts/"},
        "output": {"uri": "s3://media/transcripts/nov/"},
        "storage": {"secretName": "s3-credentials"},
        "workers": {"parallelism": 4},
    }
    base.update(fields)
    obj: dict[str, Any] = {
        "apiVersion": "whisperfleet.io/v1alpha1",
        "kind": "TranscriptionJob",
        "metadata": {"name": name, "namespace": namespace, "uid": uid,
                     "generation": generation},
        "spec": base,
    }
    if status is not None:
        obj["status"] = status
    return obj


def parsed(**fields: Any) -> spec.TranscriptionJob:
    """The same, parsed as the operator reads it."""
    return spec.parse(tj_object(**fields))
