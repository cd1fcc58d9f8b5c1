"""A bucket on the GCS emulator or a container on Azurite, seen through the tests' own client
(gcsfs or adlfs made here, not the runner's `storage.fs`): what a test puts there and what
it finds there afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The buckets made for the running test, (URI, files): the secret guard reads their objects.
_made: list[tuple[str, Any]] = []


def made(uri: str, files: Any) -> None:
    """Have the secret guard read every object of the bucket at `uri` after this test."""
    _made.append((uri.rstrip("/"), files))


def made_objects() -> Iterator[tuple[str, bytes]]:
    """(URI, body) of every object in the buckets made for the running test."""
    for uri, files in _made:
        root = uri.split("://", 1)[1]
        for name in files.find(root):
            yield f"{uri.split('://', 1)[0]}://{name}", bytes(files.cat_file(name))


def forget_made() -> None:
    _made.clear()


def new_bucket(scheme: str, files: Any) -> str:
    """A fresh, empty bucket (container) made through `files`; the secret guard reads what
    the test leaves there."""
    import uuid

    name = f"wf-{uuid.uuid4().hex[:12]}"
    files.mkdir(name)
    made(f"{scheme}://{name}", files)
    return name


def gcs_files(endpoint: str) -> Any:
    """gcsfs on the emulator, anonymous (the emulator checks no credentials)."""
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(token="anon", endpoint_url=endpoint, skip_instance_cache=True,
                         use_listings_cache=False)


def azure_files(connection_string: str) -> Any:
    from adlfs import AzureBlobFileSystem

    return AzureBlobFileSystem(connection_string=connection_string, skip_instance_cache=True,
                               use_listings_cache=False)


@dataclass(frozen=True)
class Bucket:
    scheme: str  # "gs" or "az"
    name: str
    # The environment that points the runner at it (never in a report: it holds the key).
    env: dict[str, str] = field(repr=False)
    files: Any = field(repr=False)  # an fsspec filesystem of the test's own

    def uri(self, key: str = "") -> str:
        return f"{self.scheme}://{self.name}/{key}"

    def put(self, key: str, source: Path) -> None:
        self.files.pipe_file(f"{self.name}/{key}", source.read_bytes())

    def read(self, key: str) -> bytes:
        return bytes(self.files.cat_file(f"{self.name}/{key}"))

    def size(self, key: str) -> int:
        return int(self.files.info(f"{self.name}/{key}")["size"])

    def keys(self, prefix: str = "") -> dict[str, int]:
        """{key: size} of every object whose key starts with `prefix`."""
        found = self.files.find(f"{self.name}/{prefix}", detail=True)
        return {name.split("/", 1)[1]: int(info["size"]) for name, info in found.items()
                if info.get("type") != "directory"}


def bucket_of(scheme: str, request: Any) -> Bucket:
    """A fresh bucket (container) for `scheme`, from the conftest fixtures of `request`."""
    if scheme == "gs":
        name, env = request.getfixturevalue("gcs_bucket"), request.getfixturevalue("gcs_env")
        return Bucket("gs", name, env, gcs_files(env["STORAGE_EMULATOR_HOST"]))
    name, env = request.getfixturevalue("azure_container"), request.getfixturevalue("azure_env")
    return Bucket("az", name, env, azure_files(env["AZURE_STORAGE_CONNECTION_STRING"]))
