"""Settings the chart hands the operator for OpenShift-like platforms and for several
replicas: ids left to the platform, and which peered replica is the active one."""

from __future__ import annotations

import pytest

from whisperfleet_operator.builders.pods import pod_security_context
from whisperfleet_operator.handlers import peering_priority
from whisperfleet_operator.settings import OperatorSettings


def test_platform_leaves_uid_gid_and_fs_group_out_of_the_pods() -> None:
    settings = OperatorSettings.from_env({"WHISPERFLEET_RUN_AS_USER": "platform",
                                          "WHISPERFLEET_RUN_AS_GROUP": "platform"})
    assert (settings.run_as_user, settings.run_as_group) == (None, None)
    assert pod_security_context(settings) == {"runAsNonRoot": True,
                                              "seccompProfile": {"type": "RuntimeDefault"}}


def test_a_fixed_user_with_a_platform_group_keeps_only_the_user() -> None:
    settings = OperatorSettings.from_env({"WHISPERFLEET_RUN_AS_USER": "2000",
                                          "WHISPERFLEET_RUN_AS_GROUP": "platform"})
    context = pod_security_context(settings)
    assert context["runAsUser"] == 2000
    assert not {"runAsGroup", "fsGroup", "fsGroupChangePolicy"} & set(context)


@pytest.mark.parametrize(("env", "message"), [
    ({"WHISPERFLEET_RUN_AS_USER": "nobody"}, "WHISPERFLEET_RUN_AS_USER must be an integer"),
    ({"WHISPERFLEET_RUN_AS_GROUP": "0"}, "must be positive"),
    ({"WHISPERFLEET_PEERING_LIFETIME_SECONDS": "5"}, "at least 10"),
    ({"WHISPERFLEET_OPERATOR_METRICS_PORT": "70000"}, "WHISPERFLEET_OPERATOR_METRICS_PORT"),
])
def test_bad_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorSettings.from_env(env)


def test_the_replica_started_first_outranks_later_ones_and_a_dev_operator_outranks_all() -> None:
    first, later = peering_priority(1_800_000_000.0), peering_priority(1_800_000_000.5)
    assert first > later
    assert first < 666  # `kopf run --dev` pauses every replica in the cluster
