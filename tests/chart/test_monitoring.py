"""The chart's monitoring: PodMonitor, ServiceMonitor (+ its Services) and Grafana dashboard.

Rendered by the real helm binary. Standard objects (Service, ConfigMap) are validated offline
against the Kubernetes OpenAPI schemas; kubernetes-validate does not know prometheus-operator's
CRDs, so PodMonitor and ServiceMonitor are checked field by field here (field names and
patterns as in monitoring.coreos.com/v1). What the monitors select is read from the operator
(`naming.labels_for`, `naming.pod_annotations`), and what the dashboard queries from the ONE
list of metrics the runner serves (`tests/chart/runner_metrics.py`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.rendering import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    of_kind,
    refused_by_schema,
    render,
    values_file,
)
from tests.support import operator_metrics, runner_metrics
from tests.support.paths import REPO
from tests.support.transcription_jobs import parsed
from whisperfleet_operator import naming
from whisperfleet_operator.builders import jobs
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_runner import contract

pytestmark = pytest.mark.slow  # runs the helm binary

MONITORING_API = "monitoring.coreos.com/v1"
DASHBOARD = CHART / "dashboards" / "whisperfleet.json"
WATCHED = ["team-a", "team-b"]

ALL_NAMESPACES = {
    "metrics": {
        "podMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "10s",
                       "labels": {"release": "kube-prometheus-stack"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Batch"}},
    },
}
WATCHED_NAMESPACES = {
    "watchNamespaces": WATCHED,
    "metrics": {
        "podMonitor": {"enabled": True},
        "serviceMonitor": {"enabled": True, "interval": "1m", "labels": {"team": "ml"}},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
    },
}
# The operator's own metrics scraped too, with two replicas (each serves its own).
OPERATOR = {
    "replicaCount": 2, "peering": {"enabled": True},
    "metrics": {"operator": {"port": 9090, "podMonitor": {
        "enabled": True, "interval": "30s", "scrapeTimeout": "5s",
        "labels": {"release": "kube-prometheus-stack"}}},
                "grafanaDashboard": {"enabled": True}},
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "defaults-one-namespace": {"watchNamespaces": ["team-a"]},
    "monitoring-all-namespaces": ALL_NAMESPACES,
    "monitoring-watched-namespaces": WATCHED_NAMESPACES,
    "monitoring-operator": OPERATOR,
}

# monitoring.coreos.com/v1: the fields the chart may set, and the CRD's own patterns.
PROMETHEUS_DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$")
ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "relabelings"}
RELABEL_FIELDS = {"action", "sourceLabels", "targetLabel", "regex", "replacement", "separator"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                   "lowercase", "uppercase", "keepequal", "dropequal"}
SELECTOR_FIELDS = {"matchLabels", "matchExpressions"}
# Labels Prometheus itself gives every target.
PROMETHEUS_TARGET_LABELS = {"job", "instance"}


@pytest.fixture(scope="module")
def rendered(helm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    return {name: render(helm, tmp_path_factory.mktemp(name), values)
            for name, values in SCENARIOS.items()}


def worker_pod_metadata() -> dict[str, Any]:
    """Labels and annotations of a worker pod, as the operator writes them."""
    job = parsed()
    return {"labels": naming.labels_for(job, naming.COMPONENT_WORKER),
            "annotations": naming.pod_annotations(job)}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels + matchExpressions) applied to `labels`."""
    assert set(selector) <= SELECTOR_FIELDS, selector
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": labels.get(key) not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def meta_label(kind: str, name: str) -> str:
    """Prometheus' Kubernetes discovery label for a pod label or annotation `name`."""
    return f"__meta_kubernetes_pod_{kind}_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def check_endpoint(endpoint: dict[str, Any]) -> None:
    """One podMetricsEndpoints / endpoints item: known fields, valid durations and actions."""
    assert set(endpoint) <= ENDPOINT_FIELDS, set(endpoint) - ENDPOINT_FIELDS
    assert endpoint["port"] == runner_metrics.PORT_NAME
    assert endpoint["path"] == runner_metrics.PATH
    for field in ("interval", "scrapeTimeout"):
        if field in endpoint:
            assert isinstance(endpoint[field], str), (field, endpoint[field])
            assert PROMETHEUS_DURATION.match(endpoint[field]), (field, endpoint[field])
    for rule in endpoint["relabelings"]:
        assert set(rule) <= RELABEL_FIELDS, rule
        assert rule["action"].lower() in RELABEL_ACTIONS, rule
        assert all(isinstance(s, str) for s in rule["sourceLabels"]), rule


def check_monitor_object(doc: dict[str, Any], kind: str, spec_fields: set[str]) -> None:
    assert doc["apiVersion"] == MONITORING_API
    assert doc["kind"] == kind
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    meta = doc["metadata"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]) and len(meta["name"]) <= 63
    assert meta["namespace"] == NAMESPACE
    assert all(isinstance(v, str) for v in meta["labels"].values()), meta["labels"]
    assert set(doc["spec"]) == spec_fields, set(doc["spec"])


def target_labels(endpoint: dict[str, Any]) -> dict[str, str]:
    """target label -> the one discovery label it is copied from."""
    found = {}
    for rule in endpoint["relabelings"]:
        assert rule["action"] == "replace" and "regex" not in rule, rule
        (source,) = rule["sourceLabels"]
        found[rule["targetLabel"]] = source
    return found


def expected_target_labels() -> dict[str, str]:
    pod = worker_pod_metadata()
    job = parsed()
    (uid_label,) = [k for k, v in pod["labels"].items() if v == job.uid]
    (name_annotation,) = [k for k, v in pod["annotations"].items() if v == job.name]
    return {
        "job_uid": meta_label("label", uid_label),
        "transcriptionjob": meta_label("annotation", name_annotation),
        "namespace": "__meta_kubernetes_namespace",
        "pod": "__meta_kubernetes_pod_name",
        "node": "__meta_kubernetes_pod_node_name",
    }


# --- nothing by default -------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["defaults", "defaults-one-namespace"])
def test_nothing_for_monitoring_is_rendered_by_default(
    rendered: dict[str, list[dict]], scenario: str
) -> None:
    docs = rendered[scenario]
    assert docs
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not of_kind(docs, "ConfigMap") and not of_kind(docs, "Service")


# --- validity -----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["monitoring-all-namespaces",
                                      "monitoring-watched-namespaces", "monitoring-operator"])
def test_helm_lint_is_clean_with_monitoring(helm: Any, tmp_path: Path, scenario: str) -> None:
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                  "-f", values_file(tmp_path, SCENARIOS[scenario]))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", ["monitoring-all-namespaces",
                                      "monitoring-watched-namespaces", "monitoring-operator"])
def test_standard_objects_are_valid_kubernetes_and_monitors_have_the_crd_shape(
    rendered: dict[str, list[dict]], scenario: str
) -> None:
    docs = rendered[scenario]
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        if doc["apiVersion"] == MONITORING_API:
            spec_fields = {"PodMonitor": {"selector", "namespaceSelector", "podMetricsEndpoints"},
                           "ServiceMonitor": {"selector", "namespaceSelector", "endpoints"}}
            check_monitor_object(doc, doc["kind"], spec_fields[doc["kind"]])
            (endpoint,) = doc["spec"].get("podMetricsEndpoints") or doc["spec"]["endpoints"]
            check_endpoint(endpoint)
            assert set(doc["spec"]["namespaceSelector"]) <= {"any", "matchNames"}
        elif not doc["apiVersion"].startswith("kopf.dev/"):  # kopf's CRD: no upstream schema
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    assert {"PodMonitor", "ConfigMap"} <= kinds


# --- PodMonitor ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["monitoring-all-namespaces",
                                      "monitoring-watched-namespaces"])
def test_pod_monitor_selects_exactly_the_operators_worker_pods(
    rendered: dict[str, list[dict]], scenario: str
) -> None:
    docs = rendered[scenario]
    (monitor,) = of_kind(docs, "PodMonitor")
    selector = monitor["spec"]["selector"]
    job = parsed()
    assert selects(selector, naming.labels_for(job, naming.COMPONENT_WORKER))
    assert not selects(selector, naming.labels_for(job, naming.COMPONENT_PLANNER))
    (deployment,) = of_kind(docs, "Deployment")
    assert not selects(selector, deployment["spec"]["template"]["metadata"]["labels"])
    # A pod that merely borrows the name and component, without a TranscriptionJob's uid.
    borrowed = {k: v for k, v in naming.labels_for(job, naming.COMPONENT_WORKER).items()
                if k != naming.LABEL_JOB_UID}
    assert not selects(selector, borrowed)


def test_pod_monitor_watches_every_namespace_or_exactly_the_watched_ones(
    rendered: dict[str, list[dict]],
) -> None:
    (everywhere,) = of_kind(rendered["monitoring-all-namespaces"], "PodMonitor")
    assert everywhere["spec"]["namespaceSelector"] == {"any": True}
    (watched,) = of_kind(rendered["monitoring-watched-namespaces"], "PodMonitor")
    assert watched["spec"]["namespaceSelector"] == {"matchNames": WATCHED}


def test_pod_monitor_scrapes_the_metrics_port_with_the_configured_timing(
    rendered: dict[str, list[dict]],
) -> None:
    (monitor,) = of_kind(rendered["monitoring-all-namespaces"], "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "10s")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (default,) = of_kind(rendered["monitoring-watched-namespaces"], "PodMonitor")
    (endpoint,) = default["spec"]["podMetricsEndpoints"]
    assert endpoint["interval"] == "30s" and "scrapeTimeout" not in endpoint  # "" = global


@pytest.mark.parametrize("kind", ["PodMonitor", "ServiceMonitor"])
def test_monitors_label_targets_with_the_transcription_job_and_where_it_ran(
    rendered: dict[str, list[dict]], kind: str
) -> None:
    (monitor,) = of_kind(rendered["monitoring-watched-namespaces"], kind)
    (endpoint,) = monitor["spec"].get("podMetricsEndpoints") or monitor["spec"]["endpoints"]
    assert target_labels(endpoint) == expected_target_labels()


def test_worker_pods_expose_the_port_the_monitors_scrape() -> None:
    """The pod template the operator builds: labels the PodMonitor selects, the annotation
    it relabels, and a container port of the name both monitors scrape."""
    plan = contract.PlanReport(files=4, bytes=10**6, shards=2, manifest_uri="s3://x/m.jsonl")
    pod = jobs.build_worker_job(parsed(), plan, OperatorSettings())["spec"]["template"]
    assert pod["metadata"] == worker_pod_metadata()
    (container,) = pod["spec"]["containers"]
    names = {p.get("name") for p in container.get("ports", [])}
    assert runner_metrics.PORT_NAME in names


def test_the_readmes_network_policy_lets_the_operator_read_worker_metrics(
    rendered: dict[str, list[dict]],
) -> None:
    """The NetworkPolicy the README gives locked-down clusters: valid, selecting the worker
    pods the operator builds, admitting the chart's operator pods, on the metrics port."""
    text = (REPO / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S)
                if "kind: NetworkPolicy" in b]
    policy = yaml.safe_load(block)
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    assert selects(policy["spec"]["podSelector"], worker_pod_metadata()["labels"])
    (rule,) = policy["spec"]["ingress"]
    (peer,) = [p for p in rule["from"] if "podSelector" in p]
    (deployment,) = of_kind(rendered["monitoring-all-namespaces"], "Deployment")
    operator_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(peer["podSelector"], operator_labels)
    # The README installs the chart into namespace whisperfleet.
    assert "-n whisperfleet --create-namespace" in text
    assert selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": "whisperfleet"})
    assert rule["ports"] == [{"port": runner_metrics.PORT_NAME, "protocol": "TCP"}]


# --- ServiceMonitor -----------------------------------------------------------------------


def test_service_monitor_scrapes_a_headless_service_per_watched_namespace(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["monitoring-watched-namespaces"]
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": WATCHED}
    assert monitor["metadata"]["labels"]["team"] == "ml"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["interval"] == "1m"
    services = of_kind(docs, "Service")
    assert sorted(s["metadata"]["namespace"] for s in services) == WATCHED
    worker = worker_pod_metadata()["labels"]
    for service in services:
        assert service["spec"]["clusterIP"] == "None"
        assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
        # A Service selector is matchLabels only: it must match every worker pod.
        assert selects({"matchLabels": service["spec"]["selector"]}, worker)
        (port,) = service["spec"]["ports"]
        assert port["name"] == endpoint["port"]
        assert port["targetPort"] == runner_metrics.PORT_NAME
    # The monitor selects this release's Services and no other object's labels.
    (deployment,) = of_kind(docs, "Deployment")
    assert not selects(monitor["spec"]["selector"], deployment["metadata"]["labels"])


def test_service_monitor_is_refused_when_every_namespace_is_watched(
    helm: Any, tmp_path: Path,
) -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True}}}
    result = helm("template", "wf", str(CHART), "-f", values_file(tmp_path, values),
                  check=False)
    assert result.returncode != 0, result.stdout[:500]
    assert "metrics.serviceMonitor.enabled needs watchNamespaces" in result.stderr
    assert "metrics.podMonitor.enabled" in result.stderr


# --- Grafana dashboard --------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return found


def queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and the template variables' queries."""
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict)
                         else var["query"])
    return exprs


METRIC_NAME = re.compile(r"\b(whisperfleet_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(whisperfleet_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase)\s*\(\s*(whisperfleet_[a-z0-9_]+)")


def scraped_target_labels(rendered: dict[str, list[dict]]) -> set[str]:
    (monitor,) = of_kind(rendered["monitoring-all-namespaces"], "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    return set(target_labels(endpoint)) | PROMETHEUS_TARGET_LABELS


def test_the_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "whisperfleet" and board["title"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), ids
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    for expr in queries(board):
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), expr
        # Template variables used in a query exist (or are Grafana's own).
        for name in re.findall(r"\$(\w+)", expr):
            assert name in variables or name.startswith("__"), (name, expr)


# What the dashboard may query: the runner's metrics and the operator's own.
SERVED = {**runner_metrics.METRICS, **operator_metrics.METRICS}


def test_the_dashboard_queries_exactly_the_metrics_the_runner_and_operator_serve() -> None:
    used = {m for expr in queries(dashboard()) for m in METRIC_NAME.findall(expr)}
    assert used - set(SERVED) == set(), "served by neither the runner nor the operator"
    assert set(SERVED) - used == set(), "served but shown in no panel"


def test_dashboard_queries_use_only_labels_the_series_carry(
    rendered: dict[str, list[dict]],
) -> None:
    targets = scraped_target_labels(rendered)
    every_label = targets | {label for m in SERVED.values() for label in m.labels}
    board = dashboard()
    for expr in queries(board):
        for metric, matchers in SELECTOR.findall(expr):
            for label, _op, value in MATCHER.findall(matchers):
                assert label in targets | SERVED[metric].labels, (label, expr)
                if label == "status":
                    assert value in runner_metrics.FILE_STATUSES, expr
        for group in GROUPING.findall(expr):
            for label in (g.strip() for g in group.split(",") if g.strip()):
                assert label in every_label, (label, expr)
        # rate() and increase() only make sense on counters.
        for function, metric in RANGE_FUNCTION.findall(expr):
            assert SERVED[metric].kind == "counter", (function, expr)
    for panel in panels(board):
        for target in panel.get("targets", []):
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert label in every_label, (label, panel["title"])


def test_the_dashboard_shows_throughput_progress_failures_gpus_and_batching() -> None:
    exprs = " ".join(queries(dashboard()))
    assert "rate(whisperfleet_audio_seconds_total" in exprs
    assert "whisperfleet_real_time_factor" in exprs
    assert re.search(r"whisperfleet_files_total\{[^}]*\}\)\s*/\s*sum by \(namespace, "
                     r"transcriptionjob\) \(whisperfleet_files_planned", exprs)
    assert re.search(r"rate\(whisperfleet_files_total\{status=\"failed\"", exprs)
    for gpu_metric in ("whisperfleet_gpu_memory_used_bytes", "whisperfleet_gpu_utilization_ratio"):
        assert re.search(rf"by \(node, gpu_name, gpu_uuid\) \({gpu_metric}", exprs), gpu_metric
    assert "whisperfleet_batch_size" in exprs and "whisperfleet_oom_halvings_total" in exprs


@pytest.mark.parametrize("scenario", ["monitoring-all-namespaces",
                                      "monitoring-watched-namespaces"])
def test_the_dashboard_ships_in_a_configmap_for_grafanas_sidecar(
    rendered: dict[str, list[dict]], scenario: str
) -> None:
    (configmap,) = of_kind(rendered[scenario], "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == (
        "monitoring" if scenario == "monitoring-watched-namespaces" else NAMESPACE)
    assert set(configmap["data"]) == {"whisperfleet.json"}
    shipped = configmap["data"]["whisperfleet.json"]
    assert shipped == DASHBOARD.read_text(encoding="utf-8").rstrip("\n")
    if scenario == "monitoring-all-namespaces":
        assert configmap["metadata"]["annotations"] == {"grafana_folder": "Batch"}


@pytest.mark.parametrize("monitor", ["podMonitor", "serviceMonitor"])
def test_a_monitor_without_a_metrics_port_is_refused(
    helm: Any, tmp_path: Path, monitor: str
) -> None:
    values = {"watchNamespaces": ["team-a"],
              "metrics": {"port": 0, monitor: {"enabled": True}}}
    result = helm("template", "wf", str(CHART), "-f", values_file(tmp_path, values),
                  check=False)
    assert result.returncode != 0, result.stdout[:500]
    assert f"metrics.{monitor}.enabled needs metrics.port" in result.stderr, result.stderr


# --- values -------------------------------------------------------------------------------

BAD_VALUES = {
    "interval not a duration": ({"metrics": {"podMonitor": {"enabled": True,
                                                            "interval": "30 seconds"}}},
                                "/metrics/podMonitor/interval"),
    "timeout not a duration": ({"metrics": {"serviceMonitor": {"enabled": False,
                                                               "scrapeTimeout": "10"}}},
                               "/metrics/serviceMonitor/scrapeTimeout"),
    "enabled as a string": ({"metrics": {"podMonitor": {"enabled": "yes"}}},
                            "/metrics/podMonitor/enabled"),
    "unknown metrics key": ({"metrics": {"prometheusRule": {"enabled": True}}},
                            "prometheusRule"),
    "unknown monitor key": ({"metrics": {"podMonitor": {"enabled": True, "port": 9471}}},
                            "port"),
    "dashboard label not a string": ({"metrics": {"grafanaDashboard": {
        "enabled": True, "labels": {"grafana_dashboard": 1}}}},
        "/metrics/grafanaDashboard/labels/grafana_dashboard"),
    "dashboard namespace not a DNS label": ({"metrics": {"grafanaDashboard": {
        "enabled": True, "namespace": "Monitoring"}}}, "/metrics/grafanaDashboard/namespace"),
    "monitor label key invalid": ({"metrics": {"podMonitor": {
        "enabled": True, "labels": {"bad key": "x"}}}}, "/metrics/podMonitor/labels"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_monitoring_values_are_refused_with_the_field_named(
    helm: Any, tmp_path: Path, case: str
) -> None:
    values, field = BAD_VALUES[case]
    refused_by_schema(helm, tmp_path, values, field)


# --- the operator's own metrics ------------------------------------------------------------


def test_the_operator_pod_monitor_scrapes_the_operators_metrics_port(
        helm: Any, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"metrics": {"operator": {"podMonitor": {
        "enabled": True, "interval": "15s", "labels": {"release": "prom"}}}}})
    (monitor,) = [m for m in of_kind(docs, "PodMonitor")
                  if m["metadata"]["name"].endswith("-operator")]
    (deployment,) = of_kind(docs, "Deployment")
    template = deployment["spec"]["template"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/component"] == "operator"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
        operator_metrics.PORT_NAME, operator_metrics.PATH, "15s")
    (container,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = OperatorSettings.from_env(env)
    assert ports[operator_metrics.PORT_NAME] == settings.operator_metrics_port == 8081


def test_operator_metrics_off_serve_nothing_and_refuse_a_monitor(
        helm: Any, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"metrics": {"operator": {"port": 0}}})
    (deployment,) = of_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert [p["name"] for p in container["ports"]] == ["health"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert OperatorSettings.from_env(env).operator_metrics_port == 0
    result = helm("template", "wf", str(CHART), "-f", values_file(tmp_path / "monitor", {
        "metrics": {"operator": {"port": 0, "podMonitor": {"enabled": True}}}}), check=False)
    assert result.returncode != 0
    assert "metrics.operator.podMonitor.enabled needs metrics.operator.port" in result.stderr
