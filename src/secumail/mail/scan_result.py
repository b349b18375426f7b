"""What a virus or spam scanner said about a message, read from its own protocol.

Pure: the replies of clamd (`INSTREAM`, clamd(8) "COMMANDS") and rspamd (`/checkv2`,
its HTTP protocol: `action`, `score`, `required_score`, `symbols`) are parsed here, as
hostile input (bounded, printable, no surprise types), into one `ScanResult`. A reply
that cannot be read is `ScanReplyError`: the caller treats the scanner as unavailable
(the message waits; it is never passed on as if it had been scanned).
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any

MAX_NAME = 128  # a signature or symbol name as kept
MAX_SYMBOLS = 10  # rspamd symbols kept (the highest scores)


class ScanVerdict(enum.StrEnum):
    CLEAN = "clean"
    INFECTED = "infected"  # a virus signature matched
    SPAM = "spam"  # over the reject threshold
    OVER_LIMIT = "over_limit"  # too deep, too big, too nested to scan: never passed on


class ScanReplyError(ValueError):
    """The scanner's answer is not one we can read."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    engine: str  # "clamd", "rspamd", "limits"
    verdict: ScanVerdict
    detail: str = ""  # signature name, limit, or "score 15.2/15" — metadata, never content
    score: float | None = None

    @property
    def refused(self) -> bool:
        return self.verdict is not ScanVerdict.CLEAN

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"engine": self.engine, "verdict": str(self.verdict)}
        if self.detail:
            out["detail"] = self.detail
        if self.score is not None:
            out["score"] = self.score
        return out


def _name(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in "\\\"'<>")[:MAX_NAME].strip()


# clamd ----------------------------------------------------------------------------------
LIMIT_SIGNATURES = ("Heuristics.Limits.Exceeded",)  # AlertExceedsMax: a limit, not a virus


def parse_clamd_reply(raw: bytes) -> ScanResult:
    """One `zINSTREAM` reply: ``stream: OK``, ``stream: <name> FOUND`` or ``… ERROR``."""
    if len(raw) > 4096:
        raise ScanReplyError("clamd reply too long")
    text = raw.rstrip(b"\0\r\n").decode("ascii", "replace")
    if text.endswith(" ERROR"):
        if "size limit exceeded" in text.lower():
            return ScanResult("clamd", ScanVerdict.OVER_LIMIT, "clamd StreamMaxLength")
        raise ScanReplyError(f"clamd error: {_name(text)}")
    prefix, sep, rest = text.partition(": ")
    if not sep or not prefix.startswith("stream"):
        raise ScanReplyError(f"not a clamd INSTREAM reply: {_name(text)!r}")
    if rest == "OK":
        return ScanResult("clamd", ScanVerdict.CLEAN)
    if rest.endswith(" FOUND"):
        name = _name(rest.removesuffix(" FOUND"))
        if not name:
            raise ScanReplyError("clamd FOUND without a name")
        if name.startswith(LIMIT_SIGNATURES):
            return ScanResult("clamd", ScanVerdict.OVER_LIMIT, name)
        return ScanResult("clamd", ScanVerdict.INFECTED, name)
    raise ScanReplyError(f"not a clamd INSTREAM reply: {_name(text)!r}")


# rspamd ---------------------------------------------------------------------------------
RSPAMD_ACTIONS = {"no action", "greylist", "add header", "rewrite subject", "soft reject", "reject"}


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScanReplyError(f"rspamd {what} is not a number")
    return float(value)


def parse_rspamd_reply(raw: bytes, *, reject_score: float | None) -> ScanResult:
    """A `/checkv2` JSON reply. Spam when the score reaches ``reject_score`` or, when that is
    None, when rspamd's own action is ``reject`` (its `reject` threshold)."""
    if len(raw) > 1024 * 1024:
        raise ScanReplyError("rspamd reply too long")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScanReplyError(f"rspamd reply is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ScanReplyError("rspamd reply is not an object")
    action = body.get("action")
    if not isinstance(action, str) or action not in RSPAMD_ACTIONS:
        raise ScanReplyError("rspamd reply has no known action")
    score = _number(body.get("score"), "score")
    required = body.get("required_score")
    threshold = _number(required, "required_score") if required is not None else None
    spam = score >= reject_score if reject_score is not None else action == "reject"
    symbols = body.get("symbols")
    names: list[tuple[float, str]] = []
    if isinstance(symbols, dict):
        for key, value in list(symbols.items())[:1000]:
            s = value.get("score") if isinstance(value, dict) else None
            if isinstance(key, str) and isinstance(s, (int, float)) and math.isfinite(s) and s >= 0:
                names.append((float(s), _name(key)))
    names.sort(reverse=True)
    limit = reject_score if reject_score is not None else threshold
    detail = f"score {score:.1f}" + (f"/{limit:.1f}" if limit is not None else "")
    if spam and names:
        detail += " (" + ", ".join(n for _s, n in names[:MAX_SYMBOLS]) + ")"
    return ScanResult(
        "rspamd", ScanVerdict.SPAM if spam else ScanVerdict.CLEAN, detail, round(score, 2)
    )
