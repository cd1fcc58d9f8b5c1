"""Plain-JSON calls to the Kubernetes API through a `kubernetes.client.ApiClient`.

Owns the few verbs the stand-in kubelet and the cluster setup need on arbitrary paths
(get, create, strategic-merge patch, delete), taking and returning dicts, so objects keep
every field the server sent (the generated models drop what they do not know).
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]
REQUEST_TIMEOUT = 30


class Rest:
    """JSON in, JSON out; `get` returns None for 404."""

    def __init__(self, api_client: ApiClient) -> None:
        self._client = api_client

    def _call(self, method: str, path: str, body: Obj | None = None,
              content_type: str = "application/json") -> Obj:
        request = self._client.param_serialize(
            method, path, header_params={"Accept": "application/json",
                                         "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"])
        response = self._client.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response,
                                             body=data.decode(errors="replace"), data=None)
        return json.loads(data) if data else {}

    def get(self, path: str) -> Obj | None:
        try:
            return self._call("GET", path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create(self, path: str, body: Obj) -> Obj:
        return self._call("POST", path, body)

    def replace(self, path: str, body: Obj) -> Obj:
        """PUT: the whole object (with its resourceVersion)."""
        return self._call("PUT", path, body)

    def strategic_merge_patch(self, path: str, patch: Obj) -> Obj:
        return self._call("PATCH", path, patch, "application/strategic-merge-patch+json")

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        """JSON merge patch: custom resources take this, not a strategic merge."""
        return self._call("PATCH", path, patch, "application/merge-patch+json")

    def delete(self, path: str, options: Obj) -> None:
        """DELETE with DeleteOptions; an object already gone or replaced is not an error."""
        try:
            self._call("DELETE", path, options)
        except ApiException as error:
            if error.status not in (404, 409):
                raise
