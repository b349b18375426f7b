"""SMTP replies with enhanced status codes (RFC 5321 §4.2, RFC 3463, RFC 2034)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: basic code, enhanced status code and human text (possibly multi-line)."""

    code: int
    enhanced: str
    text: str

    def render(self) -> bytes:
        """Wire form; every line carries the enhanced code (RFC 2034 §4)."""
        lines = self.text.split("\n") or [""]
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            prefix = f"{self.code}{sep}{self.enhanced} " if self.enhanced else f"{self.code}{sep}"
            out.append(f"{prefix}{line}\r\n")
        return "".join(out).encode("utf-8")

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        text = self.text.replace("\n", " / ")
        return f"{self.code} {self.enhanced} {text}".replace("  ", " ").strip()


def split_enhanced(code: int, text: str) -> tuple[str, str]:
    """Separate a leading enhanced status code from reply text when its class matches."""
    head, _, rest = text.partition(" ")
    m = _ENHANCED.match(head)
    if m and m.group(1) == str(code)[0]:
        return head, rest
    return "", text


def default_enhanced(code: int) -> str:
    """A generic enhanced code for a server that sent none (RFC 3463 §3.1, class.0.0)."""
    return f"{str(code)[0]}.0.0" if code >= 200 else ""


# Replies the submission server uses, named after what they mean.
GREETING_TEXT = "ESMTP Secumail"
OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_THROTTLED = Reply(454, "4.7.0", "Too many failed authentication attempts; try again later")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
SYNTAX_ERROR = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognised")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (RFC 5321 §4.5.3.1.4: 512 octets)")
NEEDS_CRLF = Reply(500, "5.5.2", "Command lines must end with CRLF")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
INTAKE_FULL = Reply(451, "4.3.2", "System busy: queue full, try again later")
TIMEOUT = Reply(421, "4.4.2", "Idle timeout, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
SHUTTING_DOWN = Reply(421, "4.3.0", "Service shutting down, try again later")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
