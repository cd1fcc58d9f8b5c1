"""The work-order and report contract: round trips, and refusal of what is not one."""

import pytest

from whisperfleet_runner.contract import (
    FileFailure,
    OutputOptions,
    PlanReport,
    ShardReport,
    WorkOrder,
)


def test_work_order_round_trips_through_json() -> None:
    order = WorkOrder(job_uid="u-1", input_uri="s3://in/", output=OutputOptions("s3://out/"))
    assert WorkOrder.from_json(order.to_json()) == order
    assert order.manifest_uri == "s3://out/.whisperfleet/u-1/manifest.jsonl"


@pytest.mark.parametrize("text", ["null", "42", '"text"', "[1, 2]"])
@pytest.mark.parametrize("cls", [WorkOrder, PlanReport, ShardReport])
def test_non_objects_are_refused_with_a_value_error(cls: type, text: str) -> None:
    with pytest.raises(ValueError, match="JSON object"):
        cls.from_json(text)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown PlanReport fields"):
        PlanReport.from_json('{"files": 1, "surprise": true}')


def test_shard_report_fits_a_termination_message_however_many_failures() -> None:
    report = ShardReport(shard=3, total=500, failed=500, failures=[
        FileFailure(uri=f"s3://bucket/{'deep/' * 40}{n}.wav", reason="bad media: " + "x" * 200)
        for n in range(500)
    ])
    text = report.to_json()
    assert len(text.encode()) <= 4096
    back = ShardReport.from_json(text)
    assert back.failed == 500 and 0 < len(back.failures) < 500
