"""The Prometheus metrics the operator serves about itself (whisperfleet_operator.metrics):
the ONE list the chart's dashboard may query beside the runner's (runner_metrics.py), and
what the cluster test finds when it scrapes a running operator.

Names are as Prometheus stores them: counters end in `_total`, a histogram is queried
through its `_bucket` (with `le`), `_count` and `_sum` series.
"""

from __future__ import annotations

from tests.support.runner_metrics import Metric

PORT_NAME = "metrics"
PATH = "/metrics"
# reconciles_total's outcome label and errors_total's reason label.
OUTCOMES = ("updated", "unchanged", "finished", "gone", "error")
REASONS = ("conflict", "throttled", "api_server_error", "api_unreachable", "api_refused",
           "internal")
_API = frozenset({"verb", "resource", "code"})

METRICS: dict[str, Metric] = {
    "whisperfleet_operator_reconciles_total": Metric("counter", frozenset({"outcome"})),
    "whisperfleet_operator_errors_total": Metric("counter", frozenset({"reason"})),
    "whisperfleet_operator_api_request_duration_seconds_bucket":
        Metric("counter", _API | {"le"}),
    "whisperfleet_operator_api_request_duration_seconds_count": Metric("counter", _API),
    "whisperfleet_operator_api_request_duration_seconds_sum": Metric("counter", _API),
    "whisperfleet_operator_transcriptionjobs": Metric("gauge", frozenset({"phase"})),
    "whisperfleet_operator_retries_pending": Metric("gauge"),
}
