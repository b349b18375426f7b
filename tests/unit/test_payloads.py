"""The stage jobs' payloads (pipeline/payloads.py): built by producers, checked by the
consuming stage, so a stage's input can be read from the types."""

from __future__ import annotations

import pytest

from secumail.pipeline.payloads import (
    PayloadError,
    delivery_round,
    notice,
    read_delivery,
    read_notice,
)


def test_what_producers_build_the_consumers_read_back() -> None:
    assert read_notice(notice("failed")) == {"kind": "failed"}
    assert read_notice(notice("delayed")) == {"kind": "delayed"}
    assert read_notice(notice("bounced", "dr@clinic.test")) == {
        "kind": "bounced",
        "recipient": "dr@clinic.test",
    }
    assert read_delivery(delivery_round(3)) == {"attempt": 3}
    assert read_delivery({}) == {"attempt": 1}, "the first round carries no number"


def test_a_notify_job_queued_before_kinds_existed_is_a_failure_notice() -> None:
    assert read_notice({}) == {"kind": "failed"}


@pytest.mark.parametrize(
    "payload",
    [
        {"kind": "bounced"},
        {"kind": "bounced", "recipient": ""},
        {"kind": "bounced", "recipient": 7},
        {"kind": "deleted"},
        {"kind": None},
    ],
)
def test_a_notify_payload_of_another_shape_is_refused(payload: dict[str, object]) -> None:
    with pytest.raises(PayloadError):
        read_notice(payload)


@pytest.mark.parametrize("attempt", [0, -1, "2", 2.5, True, None])
def test_a_delivery_round_that_is_not_a_round_number_is_refused(attempt: object) -> None:
    with pytest.raises(PayloadError):
        read_delivery({"attempt": attempt})


def test_a_recipient_goes_with_a_bounced_notice_and_only_with_it() -> None:
    with pytest.raises(PayloadError):
        notice("bounced")
    with pytest.raises(PayloadError):
        notice("failed", "dr@clinic.test")
