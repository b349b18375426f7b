"""MTA-STS (RFC 8461): the TXT record, the policy file and MX matching, sans-I/O.

A domain announces MTA-STS with a TXT record at ``_mta-sts.<domain>`` (§3.1) and serves
its policy over HTTPS at ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (§3.2,
§3.3). The policy names the MX hosts a sender may deliver to (§4.1) and how strictly
(``enforce``, ``testing``, ``none``) and for how long it may be cached (``max_age``).

Parsing is strict: what the RFC's grammar does not allow makes the record or policy
invalid, and a repeated non-``mx`` key (whose meaning §3.2 leaves undefined) does too.
Errors are `StsError` with the RFC 8460 §4.3.2.2 result type a TLS report would carry.
Fetching the policy is `secumail.net.mta_sts_fetch`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import idna

from secumail.errors import SecumailError
from secumail.mail.address import normalise_domain
from secumail.mail.tlsrpt import ResultType

POLICY_MAX_BYTES = 64 * 1024  # §3.3: senders may cap the policy body; 64 KiB
MAX_AGE_LIMIT = 31_557_600  # §3.2: max_age is at most 31557600 seconds (about a year)
WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"  # §3.2


class StsError(SecumailError):
    """MTA-STS discovery failed; ``result_type`` is the RFC 8460 result type to report."""

    def __init__(
        self, reason: str, result_type: ResultType = ResultType.STS_POLICY_INVALID
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result_type = result_type


class StsMode(enum.StrEnum):
    """§5: what a sender does when no MX matches or TLS fails."""

    ENFORCE = "enforce"  # do not deliver
    TESTING = "testing"  # deliver anyway, report the failure (TLSRPT)
    NONE = "none"  # the domain withdrew its policy


@dataclass(frozen=True, slots=True)
class StsRecord:
    """The ``_mta-sts`` TXT record (§3.1): the policy's ``id`` and unknown extensions."""

    id: str
    extensions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy file (§3.2); ``policy_id`` is the TXT record's ``id`` it came with."""

    mode: StsMode
    mx_patterns: tuple[str, ...]
    max_age: int
    policy_id: str | None = None

    def permits(self, host: str) -> bool:
        """§4.1: is ``host`` one of the MX hosts this policy allows (mode aside)?"""
        return any(mx_matches(pattern, host) for pattern in self.mx_patterns)

    def policy_string(self) -> list[str]:
        """The policy as lines, for a TLS report's ``policy-string`` (RFC 8460 §4.4)."""
        lines = ["version: STSv1", f"mode: {self.mode}"]
        lines += [f"mx: {p}" for p in self.mx_patterns]
        lines.append(f"max_age: {self.max_age}")
        return lines


# --- the TXT record (§3.1) -------------------------------------------------------------

_STS_CANDIDATE = re.compile(r"v=STSv1[ \t]*(;|$)")
_ID = re.compile(r"[A-Za-z0-9]{1,32}")  # §3.1: sts-id = 1*32(ALPHA / DIGIT)
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")  # §3.1: no "=", ";", space, controls


def parse_txt_record(values: list[str]) -> StsRecord | None:
    """The MTA-STS record among the TXT ``values`` found at ``_mta-sts.<domain>``.

    Each value is one TXT record with its strings already joined. ``None``: no record
    starts with ``v=STSv1``, the domain does not use MTA-STS. Raises `StsError`
    (``sts-policy-invalid``) when several do or the one is invalid; §3.1 says to treat the
    domain as not using MTA-STS then (a cached policy still applies).
    """
    # §3.1: records not starting with "v=STSv1;" are discarded; exactly one must remain.
    candidates = [v for v in values if _STS_CANDIDATE.match(v)]
    if not candidates:
        return None
    if len(candidates) > 1:
        raise StsError(f"{len(candidates)} MTA-STS TXT records; exactly one is allowed")
    record = candidates[0]
    parts = [p.strip(" \t") for p in record.split(";")]  # §3.1: *WSP ";" *WSP
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()  # the optional trailing delimiter
    policy_id: str | None = None
    extensions: list[tuple[str, str]] = []
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if name == "id" and eq:
            if not _ID.fullmatch(value):
                raise StsError(f"MTA-STS record: id must be 1-32 letters or digits: {value!r}")
            if policy_id is not None:
                raise StsError("MTA-STS record: id= appears more than once")
            policy_id = value
        elif eq and _EXT_NAME.fullmatch(name) and _EXT_VALUE.fullmatch(value):
            extensions.append((name, value))  # §3.1: unknown fields are ignored
        else:
            raise StsError(f"MTA-STS record: invalid field {part!r} in {record!r}")
    if policy_id is None:
        raise StsError(f"MTA-STS record without id: {record!r}")
    return StsRecord(policy_id, tuple(extensions))


# --- the policy file (§3.2) ------------------------------------------------------------

_POLICY_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31}):[ \t]*(.*?)[ \t]*")
_MAX_AGE = re.compile(r"[0-9]{1,10}")  # §3.2: 1*10(DIGIT)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SINGLE = ("version", "mode", "max_age")


def parse_policy(text: str, *, policy_id: str | None = None) -> StsPolicy:
    """Parse a policy body (§3.2); raises `StsError` (``sts-policy-invalid``)."""
    if "\r" in text.replace("\r\n", ""):
        raise StsError("MTA-STS policy: a CR not followed by LF")
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip(" \t"):
        lines.pop()  # the final line end (§3.2), and blank lines after it, tolerated
    seen: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(lines, 1):
        match = _POLICY_LINE.fullmatch(line)
        if match is None:
            raise StsError(f"MTA-STS policy line {number} is not 'key: value': {line[:80]!r}")
        key, value = match.groups()
        if key == "mx":
            mx.append(_mx_pattern(value))
        elif key in _SINGLE:
            if key in seen:
                raise StsError(f"MTA-STS policy: {key!r} appears more than once")
            seen[key] = value
        elif not value or _CONTROL.search(value):
            # §3.2: unknown keys are ignored but must still be well formed.
            raise StsError(f"MTA-STS policy line {number}: bad value for {key!r}")
    for key in _SINGLE:
        if key not in seen:
            raise StsError(f"MTA-STS policy: {key!r} is missing")
    if seen["version"] != "STSv1":
        raise StsError(f"MTA-STS policy: unknown version {seen['version']!r}")
    try:
        mode = StsMode(seen["mode"])  # §3.2: case-sensitive
    except ValueError:
        raise StsError(f"MTA-STS policy: unknown mode {seen['mode']!r}") from None
    if not _MAX_AGE.fullmatch(seen["max_age"]) or int(seen["max_age"]) > MAX_AGE_LIMIT:
        raise StsError(f"MTA-STS policy: max_age must be 0..{MAX_AGE_LIMIT}: {seen['max_age']!r}")
    if not mx and mode is not StsMode.NONE:
        raise StsError("MTA-STS policy: no mx, required unless mode is none")
    return StsPolicy(mode, tuple(mx), int(seen["max_age"]), policy_id)


def _mx_pattern(value: str) -> str:
    """§3.2: ``["*."] Domain`` in A-labels; returned lower case without a trailing dot."""
    name = value[2:] if value.startswith("*.") else value
    name = name.removesuffix(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise StsError(f"MTA-STS policy: invalid mx pattern {value!r}")
    return ("*." if value.startswith("*.") else "") + name.lower()


# --- MX matching (§4.1) ----------------------------------------------------------------


def _host_key(name: str) -> str:
    name = name.strip().removesuffix(".").lower()
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError:
            return ""  # matches nothing
    return name


def mx_matches(pattern: str, host: str) -> bool:
    """§4.1: exact match, or ``*.example.com`` for exactly one more leftmost label.

    Case-insensitive; a trailing dot on either side is ignored.
    """
    pattern_key, host_key = _host_key(pattern), _host_key(host)
    if not pattern_key or not host_key or "*" in host_key:
        return False
    if pattern_key.startswith("*."):
        first, dot, rest = host_key.partition(".")
        return bool(first) and bool(dot) and rest == pattern_key[2:]
    return pattern_key == host_key


def policy_host(domain: str) -> str:
    """§3.3: the policy host ``mta-sts.<domain>`` (A-labels, lower case)."""
    return "mta-sts." + normalise_domain(domain)


def policy_url(domain: str) -> str:
    """§3.2: ``https://mta-sts.<domain>/.well-known/mta-sts.txt``."""
    return f"https://{policy_host(domain)}{WELL_KNOWN_PATH}"
