"""The DATA phase as a sans-I/O receiver (RFC 5321 §4.1.1.4, §4.5.2, §2.3.8).

Secumail refuses, rather than repairs, anything but CRLF line endings: a bare CR or LF
in DATA is the raw material of SMTP smuggling (CVE-2023-51766 and friends), where a
receiver that normalises line endings sees a second message the sender's server never
saw. Only the exact sequence CRLF "." CRLF ends the data.
"""

from __future__ import annotations

import enum
import re

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_END = b"\r\n.\r\n"
# RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF, "not counting
# the leading dot duplicated for transparency". So before its LF a line holds at most 999
# octets (998 characters and the CR), or 1000 when it starts with a stuffed dot.
MAX_TEXT_LINE = 1000
_LONG_LINE = re.compile(
    rb"(?m)^(?:\.[^\n]{%d}|[^.\n][^\n]{%d})" % (MAX_TEXT_LINE, MAX_TEXT_LINE - 1)
)


class DataProblem(enum.Enum):
    """Why the received data cannot be accepted."""

    BARE_LINE_ENDING = "bare CR or LF"  # fatal: the stream cannot be trusted any more
    NUL = "NUL"  # RFC 5322 §2.3, RFC 2045 §2.8: no NUL in a message
    LINE_TOO_LONG = "line too long"
    TOO_BIG = "too big"


class DataReceiver:
    """Collects DATA bytes until CRLF.CRLF; dot-unstuffs; flags problems.

    `feed(chunk)` returns None while more data is needed, or the number of bytes of the
    chunk that belonged to the data (the rest is the next pipelined command). After a
    fatal problem (`BARE_LINE_ENDING`) `feed` returns 0 and the caller must close.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.problem: DataProblem | None = None
        self.size = 0
        self._parts: list[bytes] = []
        # The virtual CRLF before the first line lets ".\r\n" end an empty message.
        self._tail = b"\r\n"
        self._run = 0  # octets since the last LF
        self._dotted = False  # the current line starts with a (stuffed) dot

    def feed(self, chunk: bytes) -> int | None:
        if self.problem is DataProblem.BARE_LINE_ENDING:
            return 0
        window = self._tail + chunk
        offset = len(self._tail)
        end = window.find(_END, max(0, offset - 4))
        used = len(chunk) if end < 0 else end + len(_END) - offset
        part = chunk[:used]
        if self._has_bare_line_ending(window[offset - 1 :][: used + 1]):
            self.problem = DataProblem.BARE_LINE_ENDING
            self._parts.clear()
            return 0
        self._check_line_lengths(part)
        if self.problem in (None, DataProblem.LINE_TOO_LONG) and b"\x00" in part:
            # A receiver that drops NULs would read "\x00.\r\n" as the end of data and
            # run what follows as a second transaction: smuggling. Refused, not repaired.
            # NUL wins over a long line whichever came first (chunking must not matter).
            self.problem = DataProblem.NUL
        self.size += len(part)
        if self.size > self.max_size + 3:
            # Too big wins over a long line seen before it, so the answer does not depend
            # on how the stream was cut into chunks (the size is only known at the end).
            self.problem = DataProblem.TOO_BIG
            self._parts.clear()
        elif self.problem is None:
            self._parts.append(part)
        self._tail = window[-4:]
        return None if end < 0 else used

    def _has_bare_line_ending(self, window: bytes) -> bool:
        # window[0] is the last octet already judged; a CR at the very end waits for
        # the next chunk to tell whether an LF follows.
        body = window[1:]
        pairs = body.count(b"\r\n")
        if window[:1] != b"\r" and body.count(b"\r") == pairs == body.count(b"\n"):
            return False  # every CR and LF of the chunk pair up (three C-speed counts)
        for m in _BARE.finditer(window):
            if m.start() == 0 and window[:1] == b"\n":
                continue
            return not (m.group() == b"\r" and m.start() == len(window) - 1)
        return False

    def _check_line_lengths(self, part: bytes) -> None:
        if self.problem is not None or not part:
            return
        first_lf = part.find(b"\n")
        head = len(part) if first_lf < 0 else first_lf
        if self._run == 0 and head:
            self._dotted = part[:1] == b"."
        limit = MAX_TEXT_LINE + (1 if self._dotted else 0)
        if self._run + head >= limit:
            self.problem = DataProblem.LINE_TOO_LONG
            return
        if first_lf < 0:
            self._run += len(part)
            return
        # Splitting is ~7× faster than the anchored regex on ordinary text; the regex only
        # decides the rare case of a run long enough to matter (the stuffed-dot allowance).
        longest = max(map(len, part[first_lf + 1 :].split(b"\n")))
        if longest >= MAX_TEXT_LINE - 1 and _LONG_LINE.search(part, first_lf + 1):
            self.problem = DataProblem.LINE_TOO_LONG
            return
        last_lf = part.rfind(b"\n")
        self._run = len(part) - last_lf - 1
        self._dotted = part[last_lf + 1 : last_lf + 2] == b"."

    def message(self) -> bytes:
        """The message, dot-unstuffed, with CRLF line ends (call after the end was seen)."""
        raw = b"".join(self._parts)
        body = raw[: len(raw) - 3]  # drop ".\r\n"; the CRLF before it ends the last line
        if body.startswith(b"."):
            body = body[1:]
        # RFC 5321 §4.5.2: a leading period on any line is removed.
        return body.replace(b"\r\n.", b"\r\n")


def unsafe_for_data(message: bytes) -> str | None:
    """Why `message` must not be sent after DATA (a NUL, or a CR or LF outside CRLF), or
    None. The last guard before our bytes reach another server: we never smuggle."""
    if b"\x00" in message:
        return "a NUL"
    pairs = message.count(b"\r\n")
    if message.count(b"\r") != pairs or message.count(b"\n") != pairs:
        return "a bare CR or LF"
    return None
