"""SMTP command grammar (RFC 5321 §4.1.1, §4.1.2), sans-I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from secumail.mail.address import Address, AddressError, parse_address

# RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
MAX_COMMAND_LINE = 512
# RFC 4954 §4: AUTH lines (and SASL responses) may be up to 12288 octets.
MAX_AUTH_LINE = 12288

_PATH = re.compile(r"^<(?P<path>[^<>]*)>(?P<params>(?: .*)?)$")
_PARAM = re.compile(r"^(?P<key>[A-Za-z0-9][A-Za-z0-9-]*)(?:=(?P<value>[\x21-\x3c\x3e-\x7e]+))?$")


class CommandError(ValueError):
    """A syntactically invalid command argument; the message is the reply text."""


class NeedsSmtputf8(CommandError):
    """A UTF-8 address without SMTPUTF8 on the MAIL command (RFC 6531 §3.5: 553 5.6.7)."""


@dataclass(frozen=True, slots=True)
class Command:
    verb: str
    argument: str


@dataclass(frozen=True, slots=True)
class PathArgument:
    """The argument of MAIL FROM / RCPT TO: a path (None for the null path) and parameters."""

    address: Address | None
    params: dict[str, str | None] = field(default_factory=dict)


def parse_command(line: bytes) -> Command:
    """Split a command line (without CRLF) into an upper-case verb and its argument."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError("Command line is not valid UTF-8") from exc
    if any(c in text for c in "\r\n\x00"):
        raise CommandError("Invalid character in command line")
    verb, _, argument = text.partition(" ")
    return Command(verb.upper(), argument.strip(" "))


def parse_path(
    argument: str, keyword: str, *, allow_null: bool, smtputf8: bool = False
) -> PathArgument:
    """Parse `FROM:<a@b> KEY=VAL ...` or `TO:<a@b> ...` (keyword is FROM or TO).

    UTF-8 addresses need SMTPUTF8 (RFC 6531 §3.4): on MAIL, its own parameter; on RCPT,
    pass `smtputf8` from the transaction's MAIL command."""
    prefix = keyword + ":"
    if argument[: len(prefix)].upper() != prefix:
        raise CommandError(f"Syntax: {'MAIL FROM' if keyword == 'FROM' else 'RCPT TO'}:<address>")
    rest = argument[len(prefix) :].lstrip(" ")
    m = _PATH.match(rest)
    if not m:
        raise CommandError("Address must be enclosed in <>")
    params = parse_params(m.group("params"))
    path = m.group("path")
    if path == "":
        if not allow_null:
            raise CommandError("Null address not allowed here")
        return PathArgument(None, params)
    if path.startswith("@"):
        # RFC 5321 §4.1.1.3: source routes are accepted and ignored.
        path = path.split(":", 1)[-1]
    utf8 = smtputf8 or "SMTPUTF8" in params
    if not utf8 and not path.isascii():
        raise NeedsSmtputf8("Non-ASCII address requires SMTPUTF8")
    try:
        address = parse_address(path, utf8=utf8)
    except AddressError as exc:
        raise CommandError(str(exc)) from exc
    return PathArgument(address, params)


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters (RFC 5321 §4.1.2 esmtp-param); keys upper-cased, values kept."""
    params: dict[str, str | None] = {}
    for token in text.split():
        m = _PARAM.match(token)
        if not m:
            raise CommandError(f"Invalid parameter {token[:40]!r}")
        key = m.group("key").upper()
        if key in params:
            raise CommandError(f"Duplicate parameter {key}")
        params[key] = m.group("value")
    return params
