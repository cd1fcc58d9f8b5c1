"""How long one S3 request keeps trying to reach a store that does not answer at all.

botocore retries a request whose connection fails (refused, no route, a DNS name that does
not resolve, a connect timeout) like one that was throttled: 8 attempts with backoff, about
35 s of waiting on average and up to 71 s. Throttling is the store answering, and worth
that patience; a store that answers nothing for many seconds is gone (the run then stops
and is run again, see storage.errors.STORE_LOST), and every request of the run would wait
as long before the run could say so. So a request that has failed to connect for
CONNECT_PATIENCE seconds makes no further attempt: with botocore's backoff its last attempt
comes 10 to 30 s after its first failed one, 16 s on average (was 35 s). A request that got
any answer in between starts counting again.

The rule is a handler of botocore's `needs-retry` event, registered first on the session
that makes the clients: returning False there ends the retries (aiobotocore's endpoint
reads a False answer as "do not retry"), None leaves the decision to botocore's own
handler. Only where the attempts are ours: a user who set AWS_MAX_ATTEMPTS (or
max_attempts in the profile) gets exactly those.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

CONNECT_PATIENCE = 10.0  # seconds of failed connections after which a request gives up
_SINCE = "whisperfleet_unreachable_since"  # in the request's context, kept across its tries


def give_up_when_unreachable(patience: float = CONNECT_PATIENCE,
                             clock: Callable[[], float] = time.monotonic
                             ) -> Callable[..., bool | None]:
    """The `needs-retry` handler: False (no further attempt) once this request has failed
    to connect for `patience` seconds, else None (botocore decides)."""
    from botocore.exceptions import ConnectionError as CannotConnect

    def needs_retry(caught_exception: BaseException | None = None,
                    request_dict: dict[str, Any] | None = None, **_: Any) -> bool | None:
        context = (request_dict or {}).get("context")
        if not isinstance(context, dict):
            return None
        if not isinstance(caught_exception, CannotConnect):
            context.pop(_SINCE, None)  # the store answered (or failed otherwise)
            return None
        since = context.setdefault(_SINCE, clock())
        return False if clock() - since >= patience else None

    return needs_retry


def s3_session(patience: float | None) -> Any:
    """An aiobotocore session whose clients follow `give_up_when_unreachable` (with
    `patience` seconds; None: botocore's retries alone)."""
    from aiobotocore.session import AioSession

    session = AioSession()
    if patience is not None:
        session.get_component("event_emitter").register_first(
            "needs-retry.s3", give_up_when_unreachable(patience))
    return session
