"""Storage errors: translate fsspec/s3fs/botocore, gcsfs, adlfs (azure-core) and OS failures into
one error with a reason.

Messages name the URI and what to do, and never hold credentials: secret values found in
the environment and URL user-info are scrubbed from every message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator

from whisperfleet_runner.contract import Reason


class StorageError(Exception):
    """Storage unusable for a URI. `reason` is one of contract.Reason's storage reasons; the
    message names the URI and what to do, and never holds credentials."""

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = reason
        super().__init__(_scrub(message))


# Storage failures no other object of the store would escape (its endpoint cannot be reached
# even after the client's retries, credentials are gone or expired, the bucket was deleted):
# a run stops at the first one instead of failing each remaining file after retries of its
# own, and exits with the storage code so that it is run again once the store is back (or
# with fresh credentials). Not AccessDenied (policies can deny single keys), InvalidCredentials
# (a wrong key: running again cannot help) nor StorageError (one object can be broken).
STORE_LOST = frozenset({Reason.UNREACHABLE, Reason.NO_CREDENTIALS, Reason.BUCKET_NOT_FOUND})


def store_lost(reason: str) -> bool:
    """Whether a failure `reason` (a Reason value) means the store itself is gone."""
    return Reason.parse(reason) in STORE_LOST


_SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING", "AZURE_CLIENT_SECRET", "AZURE_STORAGE_CLIENT_SECRET",
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",  # a hub token (models pull, named models)
)
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "InvalidClientTokenId",
    "AuthorizationHeaderMalformed",
}
# Temporary credentials that ran out mid-run (a session or role token): the credentials were
# right, so a run started again with fresh ones finishes. S3 answers ExpiredToken ("The
# provided token has expired") and TokenRefreshRequired; STS and other services
# ExpiredTokenException, EC2-style endpoints RequestExpired (the AWS SDKs' list of codes that
# mean "refresh the credentials").
_EXPIRED_CREDENTIALS = {"ExpiredToken", "TokenRefreshRequired", "ExpiredTokenException",
                        "RequestExpired"}
# botocore's own errors when a token (SSO, login session, role with MFA) cannot be had anew.
_REFRESH_FAILED = {"TokenRetrievalError", "NoAuthTokenError", "RefreshWithMFAUnsupportedError",
                   "SSOTokenLoadError", "UnauthorizedSSOTokenError", "LoginRefreshRequired",
                   "LoginTokenLoadError"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "Forbidden",
           # Azure: a SAS or role without the permission, a firewall rule
           "AuthorizationPermissionMismatch",
           "AuthorizationSourceIPMismatch", "AuthorizationResourceTypeMismatch"}
# Azure's codes (azure-core's `error_code`) that mean what S3's above mean.
_AZURE_CODES = {"ContainerNotFound": "NoSuchBucket", "BlobNotFound": "NoSuchKey",
                "AuthenticationFailed": "SignatureDoesNotMatch",
                "InvalidAuthenticationInfo": "InvalidToken"}
# Throttling and server errors (a HEAD's carry only the status): retried by the client.
_SERVER_TROUBLE = {"SlowDown", "InternalError", "ServiceUnavailable", "500", "502", "503",
                   "504"}
_CREDENTIAL_HINT = (
    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or the profile/role) in the storage secret"
)
# What configures each store, for the hints: (bucket word, credentials, endpoint).
_STORE_HINTS = {
    "gs": ("bucket", "check GOOGLE_APPLICATION_CREDENTIALS (or the workload identity) in the "
           "storage secret", "STORAGE_EMULATOR_HOST for an emulator"),
    "az": ("container", "check AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME "
           "with AZURE_STORAGE_ACCOUNT_KEY / AZURE_STORAGE_SAS_TOKEN, in the storage secret",
           "the account and endpoint in AZURE_STORAGE_CONNECTION_STRING / "
           "AZURE_STORAGE_ACCOUNT_NAME"),
}
_STORE_OF = {"gs": "gs", "gcs": "gs", "az": "az", "abfs": "az", "abfss": "az"}
# Connection-string fields that are secrets themselves: a message may hold one alone.
_SECRET_FIELDS = re.compile(r"(?:AccountKey|SharedAccessSignature)=([^;]+)", re.IGNORECASE)


def _hints(uri: str) -> tuple[str, str, str]:
    store = _STORE_OF.get(uri.split("://", 1)[0].lower()) if "://" in uri else None
    if store is None:
        return "bucket", _CREDENTIAL_HINT, "AWS_ENDPOINT_URL"
    return _STORE_HINTS[store]


def missing_bucket(uri: str) -> StorageError:
    """The error for a URI whose bucket (an Azure container) does not exist."""
    word, _, endpoint = _hints(uri)
    bucket = uri.split("://", 1)[-1].split("/", 1)[0]
    region = ", the region" if endpoint == "AWS_ENDPOINT_URL" else ""
    return StorageError(Reason.BUCKET_NOT_FOUND,
                        f"{word} {bucket!r} of {uri} does not exist: check the URI{region} and "
                        f"the endpoint ({endpoint})")


def write_error(uri: str, exc: BaseException) -> StorageError:
    """Why a write failed. An object needs no folder to be written, so on an object store a
    write that found nothing there found no bucket: that is how gcsfs reports a missing
    bucket (a bare 404), which wrap_error alone would call a missing object."""
    if isinstance(exc, FileNotFoundError) and "://" in uri and not uri.startswith("file://"):
        return missing_bucket(uri)
    return wrap_error(uri, exc)


def _scrub(text: str) -> str:
    """Remove secret values and URL user-info (`s3://key:secret@…`) from a message."""
    text = re.sub(r"(://)[^/@\s:]*:[^/@\s]*@", r"\1***@", text)
    values = [os.environ.get(name) or "" for name in _SECRET_ENV]
    values += _SECRET_FIELDS.findall(os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or "")
    for value in sorted(values, key=len, reverse=True):  # a whole string before its parts
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def wrap_error(uri: str, exc: BaseException) -> StorageError:
    """Translate fsspec/s3fs/botocore/OS errors into a StorageError with a useful reason."""
    if isinstance(exc, StorageError):
        return exc
    code = ""
    for cause in _causes(exc):
        response = getattr(cause, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):
            code = str(response["Error"]["Code"])
            break
        azure = getattr(cause, "error_code", None)  # azure-core's HttpResponseError
        if isinstance(azure, str) and azure:  # a str or azure's StorageErrorCode (a str enum)
            code = _AZURE_CODES.get(azure, str(getattr(azure, "value", azure)))
            break
    names = {type(c).__name__ for c in _causes(exc)}
    _, credential_hint, endpoint = _hints(uri)
    if code in ("NoSuchBucket",) or (code == "" and "bucket does not exist" in str(exc)):
        return missing_bucket(uri)
    if code in _BAD_CREDENTIALS:
        return StorageError(Reason.INVALID_CREDENTIALS, f"{uri}: credentials rejected ({code}); "
                            + credential_hint)
    if code in _EXPIRED_CREDENTIALS:
        return StorageError(Reason.NO_CREDENTIALS,
                            f"{uri}: the credentials expired ({code}); run again with fresh "
                            "ones (a retried pod takes them anew from its secret or role)")
    if names & _REFRESH_FAILED:
        return StorageError(Reason.NO_CREDENTIALS,
                            f"{uri}: the credentials could not be refreshed; " + credential_hint)
    # google-auth's DefaultCredentialsError, azure-identity's CredentialUnavailableError
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                "DefaultCredentialsError", "CredentialUnavailableError"}:
        return StorageError(Reason.NO_CREDENTIALS, f"{uri}: no usable credentials found; "
                            + credential_hint)
    if code in ("403", "Forbidden", "AuthorizationFailure"):
        # A HEAD response has no body, so S3 cannot say why: a missing permission and a
        # wrong secret look the same. Azure's AuthorizationFailure is a request refused by
        # the account's rules (a firewall, a SAS), and Azurite's answer to a wrong key.
        return StorageError(Reason.ACCESS_DENIED, f"access denied to {uri} (403 Forbidden): grant "
                            "list/read on the input and write on the output, or "
                            + credential_hint)
    # gcsfs raises a 403 as OSError("Forbidden: <path>\n<message>")
    forbidden = isinstance(exc, OSError) and str(exc).startswith("Forbidden:")
    if code in _DENIED or (not code and (isinstance(exc, PermissionError) or forbidden)):
        return StorageError(Reason.ACCESS_DENIED, f"access denied to {uri}"
                            + (f" ({code})" if code else "")
                            + ": grant list/read on the input and write on the output")
    if code in ("NoSuchKey", "404", "NotFound") or isinstance(exc, FileNotFoundError):
        return StorageError(Reason.NOT_FOUND, f"{uri} does not exist")
    if code in ("InvalidBucketName",) or isinstance(exc, ValueError):
        return StorageError(Reason.INVALID_URI, f"{uri} is not a usable storage URI: {exc}")
    if isinstance(exc, ImportError):
        return StorageError(Reason.MISSING_DRIVER,
                            f"no filesystem driver for {uri} ({exc}): install "
                            "whisperfleet[gcs] for gs://, whisperfleet[azure] for az://")
    # ConnectionClosedError: every try's connection dropped before an answer came back.
    # ServiceRequestError: azure-core could not send the request (refused, no route, DNS).
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                "ConnectionError", "ConnectionRefusedError", "ReadTimeoutError",
                "ConnectionClosedError", "ServiceRequestError"}:
        return StorageError(Reason.UNREACHABLE, f"cannot reach the storage endpoint for {uri}: "
                            f"check {endpoint} / network access")
    if code in _SERVER_TROUBLE:  # the client retried these already (storage.fs)
        said = next((str(c) for c in _causes(exc) if getattr(c, "response", None)), str(exc))
        return StorageError(Reason.STORAGE_ERROR,
                            f"{uri}: the store kept failing ({code}) through all the client's "
                            f"retries ({said}); try again later, or allow more attempts "
                            "(AWS_MAX_ATTEMPTS)")
    detail = f"{code}: " if code else ""
    return StorageError(Reason.STORAGE_ERROR, f"{uri}: {detail}{type(exc).__name__}: {exc}")


# botocore's DEBUG log prints request headers and the string it signs: the access key id in
# the Authorization header's Credential=, the signature (`Signature=…`, `Signature:\n…`) and
# a session token (base64, so `/` and `+` inside), as a header, a canonical-request line or
# a presigned URL's query.
_SIGNED = re.compile(
    r"(Credential=|Signature[=:]\s*|X-Amz-Security-Token[\"']?\s*[=:]\s*[\"']?)"
    r"[^\s,\"'&]+", re.IGNORECASE)


class ScrubbingFilter(logging.Filter):
    """A handler filter that masks credentials in every record it lets through: secret
    values of the environment, the access key id, URL user-info and signed request
    headers (so `-v` / WHISPERFLEET_LOG_LEVEL=DEBUG never print them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it itself when formatting
            return True
        clean = _SIGNED.sub(r"\1***", _scrub(message))
        key_id = os.environ.get("AWS_ACCESS_KEY_ID")
        if key_id and len(key_id) >= 8:
            clean = clean.replace(key_id, "***")
        if clean != message:
            record.msg, record.args = clean, None
        return True
