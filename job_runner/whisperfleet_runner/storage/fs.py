"""fsspec filesystems per URI, cached per storage environment, and S3 listings page by page.

s3fs (via botocore) honours the standard AWS environment itself, including
`AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3`, profiles and `AWS_DEFAULT_REGION`; only
`AWS_REGION` is passed on explicitly. Anonymous access is never used implicitly.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from whisperfleet_runner.config import Reason
from whisperfleet_runner.storage.errors import StorageError, wrap_error
from whisperfleet_runner.storage.keys import protocol

LOCAL = ("file", "local")
PART_BYTES = 5 << 20  # S3's smallest multipart part: uploads hold one part at a time
_S3 = ("s3", "s3a")
_fs_cache: dict[str, Any] = {}
_fs_lock = threading.Lock()
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS", "AZURE_", "FSSPEC_")


def is_local(uri: str) -> bool:
    return protocol(uri) in LOCAL


def is_s3(uri: str) -> bool:
    return protocol(uri) in _S3


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path) for a remote URI.

    fsspec caches instances by constructor arguments only, so an instance made before the
    credentials in the environment changed would keep using the old ones. We key our own
    cache on a digest of the storage environment instead, and disable listing caches so
    an existence check never answers from a stale directory listing.
    """
    from fsspec.core import url_to_fs

    scheme = protocol(uri)
    if re.match(r"^[^:/]+://[^/@]*:[^/@]*@", uri):
        # Libraries echo such URIs in their errors; refuse before any of them sees it.
        raise StorageError(Reason.INVALID_URI,
                           f"{uri}: credentials inside a URI are not accepted; "
                           "give them in the environment (the storage secret)")
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))
    digest = hashlib.sha256(repr((scheme, os.getpid(), env)).encode()).hexdigest()
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if scheme in _S3:
        region = os.environ.get("AWS_REGION")
        if region and not os.environ.get("AWS_DEFAULT_REGION"):
            options["client_kwargs"] = {"region_name": region}
    try:
        with _fs_lock:
            fs = _fs_cache.get(digest)
            if fs is None:
                fs, _ = url_to_fs(uri, **options)
                _fs_cache.clear()  # environment changed: drop instances with old credentials
                _fs_cache[digest] = fs
        return fs, fs._strip_protocol(uri)
    except Exception as exc:
        raise wrap_error(uri, exc) from exc


def s3_pages(fs: Any, bucket: str, prefix: str) -> Iterator[list[dict[str, Any]]]:
    """The objects whose keys start with `prefix`, one ListObjectsV2 page (≤ 1,000 keys) at a
    time, in key order. Memory holds two pages, not the listing: the next page is requested
    while the caller works through the current one, so the listing costs no extra time.

    s3fs's `find` would collect every object of the prefix first; `call_s3` keeps its
    credentials, retries and requester-pays settings. Errors are the raw client errors.
    """
    request = {"Bucket": bucket, "Prefix": prefix}
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisperfleet-list")
    try:
        pending: Future[dict[str, Any]] = pool.submit(fs.call_s3, "list_objects_v2", **request)
        while True:
            page = pending.result()
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if token:
                pending = pool.submit(fs.call_s3, "list_objects_v2", **request,
                                      ContinuationToken=token)
            yield page.get("Contents") or []
            if not token:
                return
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def s3_upload(fs: Any, path: str, source: IO[bytes], size: int) -> None:
    """Upload `size` bytes from `source` to bucket/key `path` holding one part in memory at a
    time, never the object: one PUT up to PART_BYTES, else a multipart upload, which only
    becomes visible when completed and is aborted when any part fails.

    (s3fs's put_file reads anything below two of its 50 MiB chunks whole.)"""
    bucket, _, key = path.partition("/")
    if size <= PART_BYTES:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=source.read())
        return
    upload = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    try:
        parts = []
        while part := source.read(PART_BYTES):
            sent = fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload,
                              PartNumber=len(parts) + 1, Body=part)
            parts.append({"PartNumber": len(parts) + 1, "ETag": sent["ETag"]})
        fs.call_s3("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload,
                   MultipartUpload={"Parts": parts})
    except BaseException:
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload)
        raise
