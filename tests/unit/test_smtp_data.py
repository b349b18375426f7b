"""DataReceiver: the DATA phase, sans-I/O.

RFC 5321 §4.1.1.4 (end of data is CRLF "." CRLF), §4.5.2 (dot-stuffing), §2.3.8 (lines
end in CRLF only: a bare CR is refused against SMTP smuggling; a bare LF is refused in
`reject` mode and taken as CRLF in `normalize` mode, Postfix 3.9's
smtpd_forbid_bare_newline), §4.5.3.1.6 (text line length), §4.5.3.1.7 / RFC 1870
(message size). Tests that do not name a mode run in both.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest

from secumail.mail.smtp_data import BareNewline, DataProblem, DataReceiver, unsafe_for_data

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
NORMALIZE, REJECT = BareNewline.NORMALIZE, BareNewline.REJECT
both_modes = pytest.mark.parametrize("mode", list(BareNewline))


@dataclass
class Outcome:
    problem: DataProblem | None
    ended: bool
    message: bytes | None  # only when ended without a problem
    leftover: bytes | None  # bytes after the end: the next pipelined command


def receive(chunks: list[bytes], max_size: int = 100_000, mode: BareNewline = REJECT) -> Outcome:
    """Feed chunks as a server would; stop at the end or at a fatal problem."""
    rx = DataReceiver(max_size, mode)
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


@both_modes
def test_message_is_dot_unstuffed_and_leftover_is_next_command(mode: BareNewline) -> None:
    # RFC 5321 §4.5.2: the receiver removes the first period of a line starting with one.
    out = receive([WIRE + NEXT_COMMAND], mode=mode)
    assert out == Outcome(None, True, UNSTUFFED, NEXT_COMMAND)


@both_modes
def test_every_split_gives_the_same_result(mode: BareNewline) -> None:
    expected = Outcome(None, True, UNSTUFFED, NEXT_COMMAND)
    for chunks in all_splits(WIRE + NEXT_COMMAND):
        assert receive(chunks, mode=mode) == expected, chunks


@both_modes
def test_random_splits_give_the_same_result(mode: BareNewline) -> None:
    rng = random.Random(5321)
    data = WIRE + NEXT_COMMAND
    for _ in range(300):
        chunks = random_splits(data, rng)
        assert receive(chunks, mode=mode) == Outcome(None, True, UNSTUFFED, NEXT_COMMAND), chunks


@both_modes
def test_feed_reports_bytes_used_in_the_chunk_holding_the_end(mode: BareNewline) -> None:
    rx = DataReceiver(1000, mode)
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
@both_modes
def test_data_does_not_end_without_crlf_dot_crlf(data: bytes, mode: BareNewline) -> None:
    # RFC 5321 §4.1.1.4: only CRLF "." CRLF ends the mail data.
    for chunks in all_splits(data):
        out = receive(chunks, mode=mode)
        assert out == Outcome(None, False, None, None), chunks


@both_modes
def test_empty_message(mode: BareNewline) -> None:
    # RFC 5321 §4.1.1.4: the first line may be the end; the message is empty.
    for chunks in all_splits(b".\r\nQUIT\r\n"):
        assert receive(chunks, mode=mode) == Outcome(None, True, b"", b"QUIT\r\n"), chunks


@both_modes
def test_first_line_is_unstuffed_too(mode: BareNewline) -> None:
    assert receive([b"..x\r\n.\r\n"], mode=mode).message == b".x\r\n"


@both_modes
def test_bytes_after_the_end_are_not_judged(mode: BareNewline) -> None:
    # What follows the end is the next command; the command parser judges it.
    out = receive([b"x\r\n.\r\nRSET\n\rjunk"], mode=mode)
    assert out == Outcome(None, True, b"x\r\n", b"RSET\n\rjunk")


# --- bare CR and bare LF (SMTP smuggling) -------------------------------------------

BARE_CR = [
    b"\rSubject: x\r\n\r\nbody\r\n.\r\n",
    b"Subject: x\r\n\r\nbo\rdy\r\n.\r\n",
    b"Subject: x\r\n\r\nbody\r\r\n.\r\n",
]
BARE_LF = [
    b"\nSubject: x\r\n\r\nbody\r\n.\r\n",
    b"Subject: x\n\r\nbody\r\n.\r\n",
    b"Subject: x\r\n\r\nbody\n\r\n.\r\n",
    b"Subject: x\r\n\r\nbody\r\n\nmore\r\n.\r\n",
]


@pytest.mark.parametrize("data", [*BARE_CR, *BARE_LF, b"Subject: x\r\n\r\nbody\r\n\n.\r\n"])
def test_bare_cr_or_lf_anywhere_is_fatal_in_reject_mode(data: bytes) -> None:
    # RFC 5321 §2.3.8: CR and LF only occur together as CRLF.
    for chunks in all_splits(data):
        assert receive(chunks, mode=REJECT).problem is DataProblem.BARE_LINE_ENDING, chunks


@pytest.mark.parametrize("data", [*BARE_CR, b"a\n\rb\r\n.\r\n", b"a\n.\r\r\n.\r\n"])
def test_bare_cr_anywhere_is_fatal_in_normalize_mode(data: bytes) -> None:
    # Postfix's "normalize" repairs a bare LF only; a CR not followed by LF stays refused.
    for chunks in all_splits(data):
        assert receive(chunks, mode=NORMALIZE).problem is DataProblem.BARE_LINE_ENDING, chunks


@pytest.mark.parametrize("data", BARE_LF)
def test_bare_lf_is_taken_as_crlf_in_normalize_mode(data: bytes) -> None:
    expected = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")[: -len(b".\r\n")]
    for chunks in all_splits(data + NEXT_COMMAND):
        out = receive(chunks, mode=NORMALIZE)
        assert out == Outcome(None, True, expected, NEXT_COMMAND), chunks


def test_lf_only_message_is_stored_with_crlf_and_unstuffed() -> None:
    # A PHP or hospital system sending LF line ends: every line taken as if it ended in
    # CRLF, the RFC 5321 §4.5.2 transparency rule applied to each; the end stays CRLF.CRLF.
    wire = b"From: a@good.test\nSubject: lf\n\n..leading dot\n...two\nlast\r\n.\r\n"
    for chunks in all_splits(wire):
        out = receive(chunks, mode=NORMALIZE)
        assert out.message == b"From: a@good.test\r\nSubject: lf\r\n\r\n.leading dot\r\n..two\r\nlast\r\n"


def test_cr_at_chunk_end_then_lf_is_a_crlf_not_a_bare_lf() -> None:
    rx = DataReceiver(1000, NORMALIZE)
    assert rx.feed(b"a\nhello\r") is None
    assert rx.feed(b"\n.\r\n") == 4
    assert rx.message() == b"a\r\nhello\r\n"


def test_lf_at_chunk_start_without_cr_before_is_bare() -> None:
    rx = DataReceiver(1000, REJECT)
    assert rx.feed(b"hello") is None
    assert rx.feed(b"\n.\r\n") == 0
    assert rx.problem is DataProblem.BARE_LINE_ENDING
    rx = DataReceiver(1000, NORMALIZE)
    assert rx.feed(b"hello") is None
    assert rx.feed(b"\n.\r\n") is None, "LF.CRLF is not the end of data"
    assert rx.feed(b"\r\n.\r\n") == 5
    assert rx.message() == b"hello\r\n.\r\n\r\n"


def test_after_a_bare_line_ending_nothing_is_accepted() -> None:
    rx = DataReceiver(1000, REJECT)
    rx.feed(b"a\nb")
    assert rx.feed(b"\r\n.\r\n") == 0
    assert rx.problem is DataProblem.BARE_LINE_ENDING


SMUGGLING_ENDS = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\rx"]
LF_ENDS = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\n\n.\n\n", b"\r\n.\n\r\n", b"\n.\n.\n"]


@pytest.mark.parametrize("end", SMUGGLING_ENDS, ids=repr)
def test_smuggling_end_sequences_are_refused_never_an_end(end: bytes) -> None:
    # CVE-2023-51766 and friends: a lenient receiver ends the data here and reads the
    # smuggled second transaction as commands.
    data = b"Subject: one\r\n\r\nbody" + end + b"MAIL FROM:<ceo@victim.test>\r\nDATA\r\n"
    for chunks in all_splits(data):
        out = receive(chunks, mode=REJECT)
        assert out.problem is DataProblem.BARE_LINE_ENDING, chunks
        assert not out.ended


@pytest.mark.parametrize("end", SMUGGLING_ENDS, ids=repr)
def test_smuggling_end_sequence_before_a_real_end_is_refused(end: bytes) -> None:
    data = b"body" + end + b"RCPT TO:<x@evil.test>\r\n.\r\n"
    for chunks in all_splits(data):
        assert receive(chunks, mode=REJECT).problem is DataProblem.BARE_LINE_ENDING, chunks


@pytest.mark.parametrize("end", SMUGGLING_ENDS + LF_ENDS, ids=repr)
def test_smuggling_end_sequences_never_end_the_data_in_normalize_mode(end: bytes) -> None:
    # Postfix 3.9 "normalize": only CRLF "." CRLF ends the data. What follows a look-alike
    # is text of the same message, never a command; with a bare CR it is refused.
    data = b"Subject: one\r\n\r\nbody" + end + b"MAIL FROM:<ceo@victim.test>\r\nDATA\r\n"
    bare_cr = b"\r" in end.replace(b"\r\n", b"")
    for chunks in all_splits(data):
        out = receive(chunks, mode=NORMALIZE)
        assert not out.ended, chunks
        assert out.problem is (DataProblem.BARE_LINE_ENDING if bare_cr else None), chunks


@pytest.mark.parametrize("end", LF_ENDS, ids=repr)
def test_a_lone_dot_next_to_a_bare_lf_is_kept_as_text(end: bytes) -> None:
    # The "." line is content: stored as ".", so the delivery client stuffs it ("..")
    # and the next hop cannot take it for the end either.
    smuggled = b"RCPT TO:<x@evil.test>\r\n"
    data = b"body" + end + smuggled + b".\r\n" + NEXT_COMMAND
    text = (b"body" + end).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    for chunks in all_splits(data):
        out = receive(chunks, mode=NORMALIZE)
        assert out == Outcome(None, True, text + smuggled, NEXT_COMMAND), chunks
        assert b"\r\n.\r\n" in b"\r\n" + out.message


def test_a_lone_dot_line_first_in_the_data_with_a_bare_lf_is_text() -> None:
    for chunks in all_splits(b".\nx\r\n.\r\n"):
        assert receive(chunks, mode=NORMALIZE).message == b".\r\nx\r\n"


def test_a_stuffed_dot_line_with_a_bare_lf_is_unstuffed() -> None:
    # RFC 5321 §4.5.2 applies to a line ending in a bare LF as to any other: ".." is ".".
    assert receive([b"a\n..\nb\n.b\r\n.\r\n"], mode=NORMALIZE).message == b"a\r\n.\r\nb\r\nb\r\n"


def test_a_bare_lf_line_of_998_characters_is_accepted_and_999_is_too_long() -> None:
    # Judged as stored: 998 characters + CRLF (RFC 5321 §4.5.3.1.6), not + LF.
    for length, problem in ((998, None), (999, DataProblem.LINE_TOO_LONG)):
        data = b"Subject: long\n\n" + b"x" * length + b"\nshort\r\n.\r\n"
        for chunks in ([data], bytewise(data), split_at(data, len(data) - 12)):
            assert receive(chunks, mode=NORMALIZE).problem is problem, (length, len(chunks))


def test_size_counts_the_crlf_a_bare_lf_becomes() -> None:
    body = b"a\n" + b"x" * 95 + b"\r\n"  # 99 octets received, 100 stored
    out = receive([body + b".\r\n"], max_size=100, mode=NORMALIZE)
    assert out == Outcome(None, True, b"a\r\n" + b"x" * 95 + b"\r\n", b"")
    body = b"a\n" + b"x" * 96 + b"\r\n"  # 100 received, 101 stored
    for chunks in ([body + b".\r\n"], bytewise(body + b".\r\n")):
        assert receive(chunks, max_size=100, mode=NORMALIZE).problem is DataProblem.TOO_BIG


# --- line length ---------------------------------------------------------------------


def line_message(length: int) -> bytes:
    return b"Subject: long\r\n\r\n" + b"x" * length + b"\r\nshort\r\n.\r\n"


@both_modes
def test_line_of_998_characters_is_accepted_at_every_split(mode: BareNewline) -> None:
    # RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF.
    data = line_message(998)
    expected = data[: -len(b".\r\n")]
    for chunks in all_splits(data):
        out = receive(chunks, mode=mode)
        assert out == Outcome(None, True, expected, b""), [len(c) for c in chunks]


@both_modes
def test_line_of_999_characters_is_too_long_at_every_split(mode: BareNewline) -> None:
    data = line_message(999) + NEXT_COMMAND
    for chunks in all_splits(data):
        out = receive(chunks, mode=mode)
        assert out.problem is DataProblem.LINE_TOO_LONG, [len(c) for c in chunks]
        # The end is still found, so the server can answer and read the next command.
        assert out.ended and out.leftover == NEXT_COMMAND


@pytest.mark.parametrize("length", [999, 1000, 5000])
@both_modes
def test_overlong_first_and_last_lines(length: int, mode: BareNewline) -> None:
    for data in (b"y" * length + b"\r\n.\r\n", b"a\r\n" + b"y" * length + b"\r\n.\r\n"):
        assert receive([data], mode=mode).problem is DataProblem.LINE_TOO_LONG
        assert receive(bytewise(data), mode=mode).problem is DataProblem.LINE_TOO_LONG


@both_modes
def test_line_of_998_characters_starting_with_a_dot_is_accepted(mode: BareNewline) -> None:
    # RFC 5321 §4.5.3.1.6: the limit is 1000 octets "not counting the leading dot
    # duplicated for transparency": a 998-character line starting with "." is sent as
    # 999 characters + CRLF and must be accepted.
    line = b"." + b"x" * 997
    data = b"Subject: dot\r\n\r\n" + b"." + line + b"\r\n.\r\n"
    out = receive([data], mode=mode)
    assert out.problem is None
    assert out.message == b"Subject: dot\r\n\r\n" + line + b"\r\n"


# --- size ---------------------------------------------------------------------------


@both_modes
def test_message_of_exactly_the_size_limit_is_accepted(mode: BareNewline) -> None:
    body = b"x" * 98 + b"\r\n"  # 100 octets
    for chunks in ([body + b".\r\n"], bytewise(body + b".\r\n")):
        out = receive(chunks, max_size=100, mode=mode)
        assert out == Outcome(None, True, body, b"")


@both_modes
def test_too_big_still_finds_the_end(mode: BareNewline) -> None:
    # RFC 1870 §6.3 / RFC 5321 §4.5.3.1.10: reply 552 after the end, keep the session.
    body = b"x" * 99 + b"\r\n"  # 101 octets
    data = body + b".\r\n" + NEXT_COMMAND
    for chunks in all_splits(data):
        out = receive(chunks, max_size=100, mode=mode)
        assert out.problem is DataProblem.TOO_BIG, [len(c) for c in chunks]
        assert out.ended and out.leftover == NEXT_COMMAND


@both_modes
def test_too_big_with_many_lines(mode: BareNewline) -> None:
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
@both_modes
def test_nul_is_a_problem_but_the_data_is_read_to_its_end(wire: bytes, mode: BareNewline) -> None:
    for size in (1, 3, len(wire)):
        r = DataReceiver(1000, mode)
        used = None
        for i in range(0, len(wire), size):
            used = r.feed(wire[i : i + size])
        assert used is not None  # the end was found: the session stays in step
        assert r.problem is DataProblem.NUL


@pytest.mark.parametrize("mode", list(BareNewline))
def test_what_is_stored_never_holds_a_bare_cr_or_lf(mode: BareNewline) -> None:
    # What the delivery client will send passes its last guard, whatever the client sent.
    for wire in (WIRE, b"a\n.\n..\nb\n\n.\r\nc\r\n.\n\r\n.\r\n", b".\n\n.\r\n.\r\n"):
        out = receive([wire], mode=mode)
        if out.problem is None:
            assert unsafe_for_data(out.message) is None, out.message


def test_unsafe_for_data_is_the_last_guard_before_sending() -> None:
    assert unsafe_for_data(b"a\r\nb\r\n") is None
    assert unsafe_for_data(b"a\x00\r\n") == "a NUL"
    assert unsafe_for_data(b"a\n.\nb\r\n") == "a bare CR or LF"
    assert unsafe_for_data(b"a\r.\r\n") == "a bare CR or LF"
