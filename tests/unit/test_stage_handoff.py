"""What one stage hands the next in the same process (`Job.memo`, a `Handoff`): taken once,
never part of the job on the bus."""

from __future__ import annotations

import sqlite3

from secumail.pipeline.bus import Job
from secumail.pipeline.handoff import Handoff
from secumail.store.records import MessageRecord


def _record() -> MessageRecord:
    return MessageRecord(
        "M1", None, "a@hospital.test", None, 10, None, None, False, None, 0.0, None, None
    )


def _write(c: sqlite3.Connection) -> None:
    c.execute("SELECT 1")


def test_what_is_taken_is_gone_so_no_later_stage_finds_it_stale() -> None:
    memo = Handoff(record=_record(), body=b"body", signed=b"signed body")
    record = memo.record
    assert memo.take_record() is record
    assert memo.take_record() is None, "the next stage reads the store instead"
    assert memo.take_body() == b"body"
    assert memo.take_body() is None
    assert memo.take_signed() == b"signed body"
    assert memo.take_signed() is None


def test_writes_are_taken_once_by_whoever_commits_them() -> None:
    memo = Handoff()
    memo.writes = [_write]
    assert memo.take_writes() == [_write]
    assert memo.take_writes() == [], "committed once, not twice"


def test_the_memo_never_travels_with_the_job() -> None:
    job = Job("M1", {"kind": "failed"})
    assert job.memo == Handoff(), "a new job has nothing in hand"
    job.memo.record = _record()
    job.memo.body = b"private content"
    job.memo.writes = [_write]
    assert job.encode() == '{"kind":"failed"}'
    assert "private" not in repr(job)
    assert job == Job("M1", {"kind": "failed"}), "what is in hand is no part of the job"


def test_jobs_do_not_share_a_memo() -> None:
    first, second = Job("M1"), Job("M2")
    first.memo.writes.append(_write)
    assert second.memo.writes == []
