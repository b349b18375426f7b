"""Reading what the scanners said (mail/scan_result.py): clamd's INSTREAM lines and
rspamd's /checkv2 JSON, including replies no honest scanner sends — those are errors (the
message waits), never "clean"."""

from __future__ import annotations

import json

import pytest

from secumail.mail.scan_result import (
    ScanReplyError,
    ScanVerdict,
    parse_clamd_reply,
    parse_rspamd_reply,
)


@pytest.mark.parametrize(
    ("raw", "verdict", "detail"),
    [
        (b"stream: OK\0", ScanVerdict.CLEAN, ""),
        (b"stream: Win.Test.EICAR_HDB-1 FOUND\0", ScanVerdict.INFECTED, "Win.Test.EICAR_HDB-1"),
        (b"stream: Heuristics.Limits.Exceeded.MaxRecursion FOUND\0", ScanVerdict.OVER_LIMIT,
         "Heuristics.Limits.Exceeded.MaxRecursion"),
        (b"INSTREAM size limit exceeded. ERROR\0", ScanVerdict.OVER_LIMIT, "clamd StreamMaxLength"),
        (b'stream: Evil"<b>\x07Name FOUND\0', ScanVerdict.INFECTED, "EvilbName"),
    ],
)
def test_clamd_replies(raw: bytes, verdict: ScanVerdict, detail: str) -> None:
    result = parse_clamd_reply(raw)
    assert (result.engine, result.verdict, result.detail) == ("clamd", verdict, detail)


@pytest.mark.parametrize(
    "raw",
    [b"", b"PONG\0", b"stream: \0", b"stream:  FOUND\0", b"stream: maybe\0", b"Can't allocate memory ERROR\0",
     b"stream: OK" + b"x" * 5000],
)
def test_unreadable_clamd_replies_are_errors_not_clean(raw: bytes) -> None:
    with pytest.raises(ScanReplyError):
        parse_clamd_reply(raw)


def rspamd(**body: object) -> bytes:
    return json.dumps(body).encode()


def test_rspamd_reject_action_is_spam_with_its_symbols() -> None:
    raw = rspamd(action="reject", score=15.0, required_score=15.0,
                 symbols={"GTUBE": {"score": 0.0}, "R_SPF_FAIL": {"score": 1.5}, "X": {"score": -1}})
    result = parse_rspamd_reply(raw, reject_score=None)
    assert result.verdict is ScanVerdict.SPAM and result.score == 15.0
    assert result.detail == "score 15.0/15.0 (R_SPF_FAIL, GTUBE)"


def test_rspamd_own_threshold_wins_over_its_action() -> None:
    raw = rspamd(action="add header", score=7.5, required_score=15.0, symbols={})
    assert parse_rspamd_reply(raw, reject_score=None).verdict is ScanVerdict.CLEAN
    assert parse_rspamd_reply(raw, reject_score=7.0).verdict is ScanVerdict.SPAM
    raw = rspamd(action="reject", score=20.0, required_score=15.0)
    assert parse_rspamd_reply(raw, reject_score=25.0).verdict is ScanVerdict.CLEAN


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        rspamd(score=1.0),
        rspamd(action="deliver it", score=1.0),
        rspamd(action="no action", score="1"),
        rspamd(action="no action", score=True),
        b'{"action": "no action", "score": NaN}',
        b'{"action": "no action", "score": Infinity}',
        rspamd(action="no action", score=1.0, required_score="x"),
    ],
)
def test_unreadable_rspamd_replies_are_errors_not_clean(raw: bytes) -> None:
    with pytest.raises(ScanReplyError):
        parse_rspamd_reply(raw, reject_score=None)
