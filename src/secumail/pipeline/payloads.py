"""What a stage's jobs carry (`Job.payload`: JSON on the bus), one typed shape per stage.

    queue     payload                                         put by
    route     {}                                              the intake
    sign      {}                                              route (CONTINUE)
    deliver   DeliverPayload: {} or {"attempt": n}, n ≥ 2      sign (CONTINUE); deliver (DEFER)
    notify    NoticeRequest: {"kind": "failed"}               deliver (CONTINUE); the runner
                                                              (a REJECT from any stage)
              {"kind": "delayed"}                             deliver (deferred too long)
              {"kind": "bounced", "recipient": address}       the inbound MX (a late bounce)

Producers build payloads with the functions here; consumers read them with the `read_*`
functions, which check what they read (a job from an older version, or a bug, is refused
with `PayloadError`: a stage bug the runner logs and retries).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Required, TypedDict, get_args

NoticeKind = Literal["failed", "delayed", "bounced"]
NOTICE_KINDS: tuple[str, ...] = get_args(NoticeKind)


class PayloadError(ValueError):
    """A job's payload is not the shape its stage takes."""


class DeliverPayload(TypedDict, total=False):
    attempt: int  # which delivery round this is (1 when absent)


class NoticeRequest(TypedDict, total=False):
    kind: Required[NoticeKind]
    recipient: str  # with "bounced": the one recipient the late bounce is about


def delivery_round(attempt: int) -> dict[str, Any]:
    """The deliver job's payload for its `attempt`-th round."""
    return {"attempt": attempt}


def read_delivery(payload: Mapping[str, Any]) -> DeliverPayload:
    attempt = payload.get("attempt", 1)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise PayloadError(f"deliver: attempt {attempt!r} is not a round number")
    return {"attempt": attempt}


def notice(kind: NoticeKind, recipient: str | None = None) -> dict[str, Any]:
    """The notify job's payload: a notice of `kind` (about `recipient`, for "bounced")."""
    if (kind == "bounced") != (recipient is not None):
        raise PayloadError("notify: a recipient goes with a 'bounced' notice, and only with it")
    return {"kind": kind} if recipient is None else {"kind": kind, "recipient": recipient}


def read_notice(payload: Mapping[str, Any]) -> NoticeRequest:
    kind = payload.get("kind", "failed")  # jobs queued before kinds existed were failures
    recipient = payload.get("recipient")
    if kind == "bounced":
        if not isinstance(recipient, str) or not recipient:
            raise PayloadError("notify: a 'bounced' notice names its recipient")
        return {"kind": "bounced", "recipient": recipient}
    if kind == "failed" or kind == "delayed":
        return {"kind": kind}
    raise PayloadError(f"notify: unknown notice kind {kind!r} (known: {', '.join(NOTICE_KINDS)})")
