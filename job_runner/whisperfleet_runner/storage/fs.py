"""fsspec filesystems per URI, cached per storage environment, and S3 listings page by page.

s3fs (via botocore) honours the standard AWS environment itself, including
`AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3`, profiles and `AWS_DEFAULT_REGION`; only
`AWS_REGION` is passed on explicitly. gcsfs and adlfs read their own environment
(`GOOGLE_APPLICATION_CREDENTIALS`, `STORAGE_EMULATOR_HOST`; `AZURE_STORAGE_*`). Anonymous
access is never used implicitly, except against a GCS emulator (`gcs_emulator`).

Retries are the storage client's own, never a loop of ours: botocore retries each S3
request (`s3_client_config`), and s3fs repeats a whole call once more (`S3FS_TRIES`); a
request that cannot connect at all gives up sooner (`patience`). A store the run judged
lost is asked once per request (`filesystem(…, once=True)`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from whisperfleet_runner.contract import Reason
from whisperfleet_runner.storage.errors import StorageError, wrap_error
from whisperfleet_runner.storage.keys import protocol
from whisperfleet_runner.storage.patience import CONNECT_PATIENCE, s3_session

log = logging.getLogger(__name__)
LOCAL = ("file", "local")
PART_BYTES = 5 << 20  # S3's smallest multipart part: uploads hold one part at a time
_S3 = ("s3", "s3a")
_GCS = ("gs", "gcs")
# Stores whose URIs start with a bucket (a container on Azure) that may be missing.
BUCKET_STORES = (*_S3, *_GCS, "az", "abfs", "abfss")
_fs_cache: dict[tuple[str, bool], Any] = {}  # (digest of the environment, once) -> fs
_fs_lock = threading.Lock()
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS", "AZURE_", "FSSPEC_", "STORAGE_EMULATOR_HOST")

# botocore's "standard" mode: exponential backoff with full jitter (up to 20 s between tries)
# on throttling (503 SlowDown), 5xx, timeouts and broken connections, and a retry quota that
# stops retrying after a long run of failures, so a dead store fails fast instead of being
# hammered. Not "adaptive": its client-side rate limiter slows every request of the
# process after a throttle, but throttling comes from the whole fleet's load on a prefix,
# which one pod's limiter cannot see. 8 attempts wait about 35 s in all on average (at
# most 71 s; botocore 1.43): enough to ride out a throttling burst or a MinIO restart,
# where giving up would throw away a finished transcription (or fail a pod).
# AWS_RETRY_MODE / AWS_MAX_ATTEMPTS in the environment (or retry_mode / max_attempts in the
# AWS config profile) replace these.
RETRY_MODE = "standard"
MAX_ATTEMPTS = 8  # in all, the first try included (what AWS_MAX_ATTEMPTS counts too)
RETRY_MODES = ("legacy", "standard", "adaptive")  # what botocore accepts
# A connection silent for these long is stalled and is retried (benchmarks/README.md,
# "Measurements behind design choices").
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 20
# s3fs repeats a whole call after botocore gave up on a timeout, a throttle or a body that
# broke off mid-download (which botocore cannot retry: it has returned the response by
# then). Its default of 5 would multiply botocore's attempts fivefold; twice is enough.
S3FS_TRIES = 2


def is_local(uri: str) -> bool:
    return protocol(uri) in LOCAL


def is_s3(uri: str) -> bool:
    return protocol(uri) in _S3


def bucket_missing(uri: str, fs: Any, path: str) -> bool:
    """Whether the bucket (container) that `path` lies in does not exist, on stores whose
    listings and writes cannot tell (gcsfs answers a missing bucket as a missing object,
    adlfs lists a missing container as empty); False for other stores."""
    bucket = path.lstrip("/").split("/", 1)[0]
    if protocol(uri) not in BUCKET_STORES or is_s3(uri) or not bucket:
        return False
    try:
        return not fs.exists(bucket)
    except Exception as exc:
        raise wrap_error(uri, exc) from exc


def _emulator_host() -> str:
    """STORAGE_EMULATOR_HOST as gcsfs reads it ("default": none)."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    return "" if host == "default" else host


def gcs_emulator(options: dict[str, Any]) -> Any:
    """A gcsfs filesystem for the GCS emulator that STORAGE_EMULATOR_HOST names.

    Anonymous, as Google's own clients are against an emulator: otherwise gcsfs would look
    for Google credentials (and ask the metadata server). The core class, not the one gcsfs
    registers for gs://: that one first asks the gRPC Storage Control API for each bucket's
    layout, which emulators do not serve, and waits 60 s for the answer."""
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(token="anon", **options)


def filesystem(uri: str, *, once: bool = False) -> tuple[Any, str]:
    """(fsspec filesystem, path) for a remote URI. `once`: on S3, a client that makes one
    attempt per request, for what is left to do on a store the run judged lost (removing
    its lock, a last ledger flush) and must not hold its exit up.

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
    once = once and scheme in _S3
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    try:
        with _fs_lock:
            fs = _fs_cache.get((digest, once))
            if fs is None:
                if scheme in _S3:
                    config = s3_client_config(once=once)
                    ours = "total_max_attempts" in config["retries"] and not once
                    options["config_kwargs"] = config
                    options["session"] = s3_session(CONNECT_PATIENCE if ours else None)
                    region = os.environ.get("AWS_REGION")
                    if region and not os.environ.get("AWS_DEFAULT_REGION"):
                        options["client_kwargs"] = {"region_name": region}
                if scheme in _GCS and _emulator_host():
                    fs = gcs_emulator(options)
                else:
                    fs, _ = url_to_fs(uri, **options)
                if scheme in _S3:
                    fs.retries = 1 if once else S3FS_TRIES
                # The environment changed: drop instances with old credentials.
                for key in [k for k in _fs_cache if k[0] != digest]:
                    del _fs_cache[key]
                _fs_cache[(digest, once)] = fs
        return fs, fs._strip_protocol(uri)
    except Exception as exc:
        raise wrap_error(uri, exc) from exc


def s3_client_config(*, once: bool = False) -> dict[str, Any]:
    """botocore Config arguments for S3 clients: our retry mode and attempts where the user
    set none (`once`: one attempt, whatever was set), and the timeouts.

    botocore lets an explicit client Config beat the environment and the config profile, so
    a setting of ours is left out wherever the user made one; botocore then reads it the
    way it always does (environment first, then the profile).
    """
    timeouts = {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT}
    if once:
        return {"retries": {"mode": RETRY_MODE, "total_max_attempts": 1}, **timeouts}
    import botocore.session
    from botocore.configprovider import ConfigChainFactory
    from botocore.exceptions import BotoCoreError

    chains = ConfigChainFactory(session=botocore.session.Session())

    def user_set(env: str, name: str) -> str | None:
        try:
            value = chains.create_config_chain(env_var_names=env,
                                               config_property_names=name).provide()
        except BotoCoreError:  # a missing profile: creating the client will say so
            return None
        return None if value is None else str(value)

    # botocore would refuse bad values too, but naming neither the variable nor the profile.
    retries: dict[str, Any] = {}
    mode = user_set("AWS_RETRY_MODE", "retry_mode")
    if mode is None:
        retries["mode"] = RETRY_MODE
    elif mode not in RETRY_MODES:
        raise StorageError(Reason.STORAGE_ERROR,
                           f"retry mode {mode!r} (AWS_RETRY_MODE, or retry_mode in the AWS "
                           f"config profile) is not one of {', '.join(RETRY_MODES)}")
    attempts = user_set("AWS_MAX_ATTEMPTS", "max_attempts")
    if attempts is None:
        retries["total_max_attempts"] = MAX_ATTEMPTS
    elif not attempts.strip().isdigit() or int(attempts) < 1:
        raise StorageError(Reason.STORAGE_ERROR,
                           f"max attempts {attempts!r} (AWS_MAX_ATTEMPTS, or max_attempts in "
                           "the AWS config profile) is not a whole number of 1 or more")
    return {"retries": retries, **timeouts}


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
        _abort(fs, bucket, key, upload)
        raise  # what made the upload fail, whatever became of the abort


def _abort(fs: Any, bucket: str, key: str, upload: str) -> None:
    """Abort a failed multipart upload, so its parts stop costing storage. A failed abort is
    logged, never raised: the caller must see why the upload failed (most often the abort
    fails for the same reason), and parts left behind are only cost, never a visible
    object (a bucket lifecycle rule for incomplete uploads removes them)."""
    try:
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload)
    except Exception as exc:
        log.warning("could not abort the failed upload of s3://%s/%s (its parts stay until a "
                    "lifecycle rule removes them): %s", bucket, key,
                    wrap_error(f"s3://{bucket}/{key}", exc))
