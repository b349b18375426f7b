"""The DATA phase as a sans-I/O receiver (RFC 5321 §4.1.1.4, §4.5.2, §2.3.8).

A bare CR or LF in DATA is the raw material of SMTP smuggling (CVE-2023-51764/51766 and
friends): a receiver that takes `\n.\n` for the end of data sees a second message the
sender's server never saw. Whatever the mode, only the exact octets CRLF "." CRLF end
the data, a bare CR is refused (the session closes) and nothing we store holds a bare CR
or LF. `BareNewline` chooses what a bare LF is (Postfix 3.9's `smtpd_forbid_bare_newline`):

- `REJECT`: refused like a bare CR (554 5.5.2, the session closes).
- `NORMALIZE`: a line ending in a bare LF is taken as if it ended in CRLF. The
  transparency rule then applies to it as to any line (RFC 5321 §4.5.2: a leading "."
  of a longer line is removed), except that a line of a single "." next to a bare LF
  (`\n.\n`, `CRLF.\n`, `\n.CRLF`) is not the end of data: it is kept as the text ".",
  so the delivery client sends it stuffed (".."), and no later hop can end the data
  there. (Postfix 3.9 drops such a line; we keep what the sender wrote.)
"""

from __future__ import annotations

import enum
import re

_END = b"\r\n.\r\n"
# RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF, "not counting
# the leading dot duplicated for transparency". So before its LF a line holds at most 999
# octets (998 characters and the CR), or 1000 when it starts with a stuffed dot.
MAX_TEXT_LINE = 1000
_LONG_LINE = re.compile(
    rb"(?m)^(?:\.[^\n]{%d}|[^.\n][^\n]{%d})" % (MAX_TEXT_LINE, MAX_TEXT_LINE - 1)
)


class BareNewline(enum.StrEnum):
    """What a bare LF in DATA is (`submission.bare_newline`)."""

    NORMALIZE = "normalize"  # taken as CRLF; only CRLF "." CRLF ends the data
    REJECT = "reject"  # refused like a bare CR


class DataProblem(enum.Enum):
    """Why the received data cannot be accepted."""

    BARE_LINE_ENDING = "bare CR or LF"  # fatal: the stream cannot be trusted any more
    # (in NORMALIZE mode only a bare CR, or a CR not followed by LF)
    NUL = "NUL"  # RFC 5322 §2.3, RFC 2045 §2.8: no NUL in a message
    LINE_TOO_LONG = "line too long"
    TOO_BIG = "too big"


class DataReceiver:
    """Collects DATA bytes until CRLF.CRLF; dot-unstuffs; flags problems.

    `feed(chunk)` returns None while more data is needed, or the number of bytes of the
    chunk that belonged to the data (the rest is the next pipelined command). After a
    fatal problem (`BARE_LINE_ENDING`) `feed` returns 0 and the caller must close.

    The end of data is searched in the octets as received, never in normalised ones, so
    no bare LF can take part in it. Chunks are kept as received; `message()` normalises
    once, at the end, and only when a bare LF was seen (all-CRLF data takes the same
    C-speed path as in REJECT mode).
    """

    def __init__(self, max_size: int, bare_newline: BareNewline = BareNewline.NORMALIZE) -> None:
        self.max_size = max_size
        self.normalize = bare_newline == BareNewline.NORMALIZE  # a StrEnum: "normalize" too
        self.bare_lf = False  # a bare LF was seen (NORMALIZE mode)
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
        checked = part
        bare = self._bare_line_ending(window[offset - 1 :][: used + 1])
        if bare is not None:
            if bare == b"\r" or not self.normalize:
                self.problem = DataProblem.BARE_LINE_ENDING
                self._parts.clear()
                return 0
            # A bare LF, taken as CRLF: lengths and size are judged on the line as it
            # will be stored and relayed (one octet longer).
            self.bare_lf = True
            checked = _with_crlf(part, window[offset - 1 : offset])
        self._check_line_lengths(checked)
        if self.problem in (None, DataProblem.LINE_TOO_LONG) and b"\x00" in part:
            # A receiver that drops NULs would read "\x00.\r\n" as the end of data and
            # run what follows as a second transaction: smuggling. Refused, not repaired.
            # NUL wins over a long line whichever came first (chunking must not matter).
            self.problem = DataProblem.NUL
        self.size += len(checked)
        if self.size > self.max_size + 3:
            # Too big wins over a long line seen before it, so the answer does not depend
            # on how the stream was cut into chunks (the size is only known at the end).
            self.problem = DataProblem.TOO_BIG
            self._parts.clear()
        elif self.problem is None:
            self._parts.append(part)
        self._tail = window[-4:]
        return None if end < 0 else used

    @staticmethod
    def _bare_line_ending(window: bytes) -> bytes | None:
        """b"\\r" when the window holds a bare CR, else b"\\n" when it holds a bare LF,
        else None; by counting, at C speed. window[0] is the last octet already judged;
        a CR at the very end waits for the next chunk to tell whether an LF follows."""
        body = window[1:]
        if not body:
            return None
        lfs = body.count(b"\n")
        if window[:1] == b"\r":  # the CR that waited
            if body[:1] != b"\n":
                return b"\r"
            lfs -= 1
        crs = body.count(b"\r") - (body[-1:] == b"\r")
        pairs = body.count(b"\r\n")
        if crs != pairs:
            return b"\r"
        return None if lfs == pairs else b"\n"

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
        if self.bare_lf:
            body = normalize_bare_lf(body)
        if body.startswith(b"."):
            body = body[1:]
        # RFC 5321 §4.5.2: a leading period on any line is removed.
        return body.replace(b"\r\n.", b"\r\n")


def _crlf(text: bytes) -> bytes:
    """`text` (no bare CR) with every bare LF made CRLF: two C-speed replaces."""
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _with_crlf(part: bytes, before: bytes) -> bytes:
    """`part` with each bare LF made CRLF; `before` is the octet received before it."""
    if before == b"\r" and part[:1] == b"\n":
        return b"\n" + _crlf(part[1:])
    return _crlf(part)


def normalize_bare_lf(body: bytes) -> bytes:
    """Received data (before unstuffing, without the end of data, no bare CR) as if every
    line had ended in CRLF: a bare LF becomes CRLF, and a lone "." line — not the end of
    data, or it would have ended it — is stuffed to "..", so unstuffing leaves ".".
    Lines of more than "." keep their leading dot for unstuffing (RFC 5321 §4.5.2)."""
    text = b"\r\n" + _crlf(body)
    # replace() skips a lone dot right after one it replaced; a second pass takes those.
    while b"\r\n.\r\n" in text:
        text = text.replace(b"\r\n.\r\n", b"\r\n..\r\n")
    return text[2:]


def unsafe_for_data(message: bytes) -> str | None:
    """Why `message` must not be sent after DATA (a NUL, or a CR or LF outside CRLF), or
    None. The last guard before our bytes reach another server: we never smuggle."""
    if b"\x00" in message:
        return "a NUL"
    pairs = message.count(b"\r\n")
    if message.count(b"\r") != pairs or message.count(b"\n") != pairs:
        return "a bare CR or LF"
    return None
