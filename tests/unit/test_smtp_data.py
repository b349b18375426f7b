"""DataReceiver: the DATA phase, sans-I/O.

RFC 5321 §4.1.1.4 (end of data is CRLF "." CRLF), §4.5.2 (dot-stuffing), §2.3.8 (lines
end in CRLF only; bare CR/LF refused against SMTP smuggling), §4.5.3.1.6 (text line
length), §4.5.3.1.7 / RFC 1870 (message size).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest

from secumail.mail.smtp_data import DataProblem, DataReceiver, unsafe_for_data

MESSAGE = (
    b"From: a@good.test\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b"..leading dot\r\n"
    b"...two dots\r\n"
    b"..\r\n"
    b"middle . dot\r\n"
    b"\r\n"
    b"last line\r\n"
)
WIRE = MESSAGE + b".\r\n"
UNSTUFFED = (
    b"From: a@good.test\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"middle . dot\r\n"
    b"\r\n"
    b"last line\r\n"
)
NEXT_COMMAND = b"MAIL FROM:<b@good.test>\r\n"


@dataclass
class Outcome:
    problem: DataProblem | None
    ended: bool
    message: bytes | None  # only when ended without a problem
    leftover: bytes | None  # bytes after the end: the next pipelined command


def receive(chunks: list[bytes], max_size: int = 100_000) -> Outcome:
    """Feed chunks as a server would; stop at the end or at a fatal problem."""
    rx = DataReceiver(max_size)
    for i, chunk in enumerate(chunks):
        used = rx.feed(chunk)
        if rx.problem is DataProblem.BARE_LINE_ENDING:
            assert used == 0
            return Outcome(rx.problem, False, None, None)
        if used is not None:
            assert 0 <= used <= len(chunk)
            leftover = chunk[used:] + b"".join(chunks[i + 1 :])
            message = rx.message() if rx.problem is None else None
            return Outcome(rx.problem, True, message, leftover)
    return Outcome(rx.problem, False, None, None)


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, *positions: int) -> list[bytes]:
    cuts = [0, *sorted(positions), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(cuts)]


def random_splits(data: bytes, rng: random.Random) -> list[bytes]:
    n = rng.randint(1, min(12, len(data)))
    return split_at(data, *rng.sample(range(len(data) + 1), n))


def all_splits(data: bytes) -> list[list[bytes]]:
    """Whole, byte at a time, and split in two at every position."""
    return [[data], bytewise(data)] + [split_at(data, i) for i in range(len(data) + 1)]


# --- end of data and dot-unstuffing -------------------------------------------------


def test_message_is_dot_unstuffed_and_leftover_is_next_command() -> None:
    # RFC 5321 §4.5.2: the receiver removes the first period of a line starting with one.
    out = receive([WIRE + NEXT_COMMAND])
    assert out == Outcome(None, True, UNSTUFFED, NEXT_COMMAND)


def test_every_split_gives_the_same_result() -> None:
    expected = Outcome(None, True, UNSTUFFED, NEXT_COMMAND)
    for chunks in all_splits(WIRE + NEXT_COMMAND):
        assert receive(chunks) == expected, chunks


def test_random_splits_give_the_same_result() -> None:
    rng = random.Random(5321)
    data = WIRE + NEXT_COMMAND
    for _ in range(300):
        chunks = random_splits(data, rng)
        assert receive(chunks) == Outcome(None, True, UNSTUFFED, NEXT_COMMAND), chunks


def test_feed_reports_bytes_used_in_the_chunk_holding_the_end() -> None:
    rx = DataReceiver(1000)
    assert rx.feed(b"hello\r\n.\r") is None
    # Only the final LF belongs to the data; the rest is the next command.
    assert rx.feed(b"\nQUIT\r\n") == 1
    assert rx.message() == b"hello\r\n"


@pytest.mark.parametrize(
    "data",
    [
        b"hello\r\n",  # no end at all
        b"hello\r\n.",  # end not complete
        b"hello.\r\n",  # "." not at the start of a line
        b"hello\r\n..\r\n",  # stuffed dot: a line holding ".", not the end
        b"hello\r\n. \r\n",  # dot followed by a space
    ],
)
def test_data_does_not_end_without_crlf_dot_crlf(data: bytes) -> None:
    # RFC 5321 §4.1.1.4: only CRLF "." CRLF ends the mail data.
    for chunks in all_splits(data):
        out = receive(chunks)
        assert out == Outcome(None, False, None, None), chunks


def test_empty_message() -> None:
    # RFC 5321 §4.1.1.4: the first line may be the end; the message is empty.
    for chunks in all_splits(b".\r\nQUIT\r\n"):
        assert receive(chunks) == Outcome(None, True, b"", b"QUIT\r\n"), chunks


def test_first_line_is_unstuffed_too() -> None:
    assert receive([b"..x\r\n.\r\n"]).message == b".x\r\n"


def test_bytes_after_the_end_are_not_judged() -> None:
    # What follows the end is the next command; the command parser judges it.
    out = receive([b"x\r\n.\r\nRSET\n\rjunk"])
    assert out == Outcome(None, True, b"x\r\n", b"RSET\n\rjunk")


# --- bare CR and bare LF (SMTP smuggling) -------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\nSubject: x\r\n\r\nbody\r\n.\r\n",
        b"\rSubject: x\r\n\r\nbody\r\n.\r\n",
        b"Subject: x\n\r\nbody\r\n.\r\n",
        b"Subject: x\r\n\r\nbo\rdy\r\n.\r\n",
        b"Subject: x\r\n\r\nbody\r\r\n.\r\n",
        b"Subject: x\r\n\r\nbody\n\r\n.\r\n",
        b"Subject: x\r\n\r\nbody\r\n\n.\r\n",
    ],
)
def test_bare_cr_or_lf_anywhere_is_fatal(data: bytes) -> None:
    # RFC 5321 §2.3.8: CR and LF only occur together as CRLF.
    for chunks in all_splits(data):
        assert receive(chunks).problem is DataProblem.BARE_LINE_ENDING, chunks


def test_cr_at_chunk_end_followed_by_other_octet_is_bare() -> None:
    rx = DataReceiver(1000)
    assert rx.feed(b"hello\r") is None
    assert rx.problem is None  # undecided until the next octet arrives
    assert rx.feed(b"x\r\n.\r\n") == 0
    assert rx.problem is DataProblem.BARE_LINE_ENDING


def test_cr_at_chunk_end_followed_by_lf_is_fine() -> None:
    rx = DataReceiver(1000)
    assert rx.feed(b"hello\r") is None
    assert rx.feed(b"\nworld\r\n.\r\nQUIT\r\n") == len(b"\nworld\r\n.\r\n")
    assert rx.problem is None
    assert rx.message() == b"hello\r\nworld\r\n"


def test_lf_at_chunk_start_without_cr_before_is_bare() -> None:
    rx = DataReceiver(1000)
    assert rx.feed(b"hello") is None
    assert rx.feed(b"\n.\r\n") == 0
    assert rx.problem is DataProblem.BARE_LINE_ENDING


def test_after_a_bare_line_ending_nothing_is_accepted() -> None:
    rx = DataReceiver(1000)
    rx.feed(b"a\nb")
    assert rx.feed(b"\r\n.\r\n") == 0
    assert rx.problem is DataProblem.BARE_LINE_ENDING


SMUGGLING_ENDS = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\rx"]


@pytest.mark.parametrize("end", SMUGGLING_ENDS, ids=repr)
def test_smuggling_end_sequences_are_refused_never_an_end(end: bytes) -> None:
    # CVE-2023-51766 and friends: a lenient receiver ends the data here and reads the
    # smuggled second transaction as commands.
    data = b"Subject: one\r\n\r\nbody" + end + b"MAIL FROM:<ceo@victim.test>\r\nDATA\r\n"
    for chunks in all_splits(data):
        out = receive(chunks)
        assert out.problem is DataProblem.BARE_LINE_ENDING, chunks
        assert not out.ended


@pytest.mark.parametrize("end", SMUGGLING_ENDS, ids=repr)
def test_smuggling_end_sequence_before_a_real_end_is_refused(end: bytes) -> None:
    data = b"body" + end + b"RCPT TO:<x@evil.test>\r\n.\r\n"
    for chunks in all_splits(data):
        assert receive(chunks).problem is DataProblem.BARE_LINE_ENDING, chunks


# --- line length ---------------------------------------------------------------------


def line_message(length: int) -> bytes:
    return b"Subject: long\r\n\r\n" + b"x" * length + b"\r\nshort\r\n.\r\n"


def test_line_of_998_characters_is_accepted_at_every_split() -> None:
    # RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF.
    data = line_message(998)
    expected = data[: -len(b".\r\n")]
    for chunks in all_splits(data):
        out = receive(chunks)
        assert out == Outcome(None, True, expected, b""), [len(c) for c in chunks]


def test_line_of_999_characters_is_too_long_at_every_split() -> None:
    data = line_message(999) + NEXT_COMMAND
    for chunks in all_splits(data):
        out = receive(chunks)
        assert out.problem is DataProblem.LINE_TOO_LONG, [len(c) for c in chunks]
        # The end is still found, so the server can answer and read the next command.
        assert out.ended and out.leftover == NEXT_COMMAND


@pytest.mark.parametrize("length", [999, 1000, 5000])
def test_overlong_first_and_last_lines(length: int) -> None:
    for data in (b"y" * length + b"\r\n.\r\n", b"a\r\n" + b"y" * length + b"\r\n.\r\n"):
        assert receive([data]).problem is DataProblem.LINE_TOO_LONG
        assert receive(bytewise(data)).problem is DataProblem.LINE_TOO_LONG


def test_line_of_998_characters_starting_with_a_dot_is_accepted() -> None:
    # RFC 5321 §4.5.3.1.6: the limit is 1000 octets "not counting the leading dot
    # duplicated for transparency": a 998-character line starting with "." is sent as
    # 999 characters + CRLF and must be accepted.
    line = b"." + b"x" * 997
    data = b"Subject: dot\r\n\r\n" + b"." + line + b"\r\n.\r\n"
    out = receive([data])
    assert out.problem is None
    assert out.message == b"Subject: dot\r\n\r\n" + line + b"\r\n"


# --- size ---------------------------------------------------------------------------


def test_message_of_exactly_the_size_limit_is_accepted() -> None:
    body = b"x" * 98 + b"\r\n"  # 100 octets
    for chunks in ([body + b".\r\n"], bytewise(body + b".\r\n")):
        out = receive(chunks, max_size=100)
        assert out == Outcome(None, True, body, b"")


def test_too_big_still_finds_the_end() -> None:
    # RFC 1870 §6.3 / RFC 5321 §4.5.3.1.10: reply 552 after the end, keep the session.
    body = b"x" * 99 + b"\r\n"  # 101 octets
    data = body + b".\r\n" + NEXT_COMMAND
    for chunks in all_splits(data):
        out = receive(chunks, max_size=100)
        assert out.problem is DataProblem.TOO_BIG, [len(c) for c in chunks]
        assert out.ended and out.leftover == NEXT_COMMAND


def test_too_big_with_many_lines() -> None:
    data = b"line\r\n" * 10_000 + b".\r\n"
    out = receive([data[i : i + 4096] for i in range(0, len(data), 4096)], max_size=1000)
    assert out.problem is DataProblem.TOO_BIG
    assert out.ended and out.leftover == b""


# --- NUL (issue 11: "\x00." smuggling) ---------------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        b"a\r\n\x00.\r\nMAIL FROM:<x@y.test>\r\n.\r\n",
        b"\x00\r\n.\r\n",
        b"line with \x00 inside\r\n.\r\n",
    ],
)
def test_nul_is_a_problem_but_the_data_is_read_to_its_end(wire: bytes) -> None:
    for size in (1, 3, len(wire)):
        r = DataReceiver(1000)
        used = None
        for i in range(0, len(wire), size):
            used = r.feed(wire[i : i + size])
        assert used is not None  # the end was found: the session stays in step
        assert r.problem is DataProblem.NUL


def test_unsafe_for_data_is_the_last_guard_before_sending() -> None:
    assert unsafe_for_data(b"a\r\nb\r\n") is None
    assert unsafe_for_data(b"a\x00\r\n") == "a NUL"
    assert unsafe_for_data(b"a\n.\nb\r\n") == "a bare CR or LF"
    assert unsafe_for_data(b"a\r.\r\n") == "a bare CR or LF"
