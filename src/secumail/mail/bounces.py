"""Reading bounces: what a delivery report says happened to a message Secumail sent.

The bounce address (`mail/verp.py`) tells which message and recipient a bounce is
about; this module tells what the report claims: per recipient the action, the RFC 3463
status code, the remote server's reply and host. It reads

- delivery status notifications (RFC 3464 in an RFC 6522 multipart/report, and RFC 6533
  `message/global-delivery-status`), leniently about the structure (report-type
  missing, the status part as text/plain, LF line ends, a missing blank line) and
  strictly about every value it keeps;
- qmail's plain-text bounce ("Hi. This is the qmail-send program at ...");
- other plain-text bounces (Exim's "This message was created automatically by mail
  delivery software.", old Sendmail and Postfix text) from a mailer daemon or the null
  sender: an address followed by an SMTP reply with an enhanced status code.

It is not a bounce (None): an auto-reply (RFC 3834, vacation and out-of-office
notices), a feedback report (RFC 5965 ARF), a read receipt (RFC 8098), ordinary mail.

Everything in a bounce is hostile. The stdlib `email` package (compat32) only splits the
MIME structure; every field is read and checked here: addresses by `mail/address.py`,
status codes against RFC 3463's grammar in ASCII digits, host names by
`normalise_domain`, diagnostics decoded (RFC 2047, RFC 6533 `\\x{HEX}`) and stripped of
control characters. Work is bounded (input, parts, lines, recipients, field lengths).
Pure: no I/O; the content is read in memory and only the metadata below is returned.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.errors
import ipaddress
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.policy import compat32
from email.utils import collapse_rfc2231_value

from secumail.mail.address import AddressError, normalise_domain, parse_address
from secumail.mail.encoded_words import display_text

# Octets read of a bounce. The report parts come first (RFC 3462 §2: the human text, then
# the delivery status, then the returned message or its headers); what follows is the
# original message, not needed. 1 MiB bounds the parser's CPU per bounce (a crafted
# 10 MiB message costs the stdlib parser seconds) without cutting into any report.
MAX_INPUT = 1024 * 1024
MAX_RECIPIENTS = 1000  # per report
MAX_DIAGNOSTIC = 500  # characters kept of the remote reply
_MAX_FIELD = 4000  # characters of one field value read (unfolded)
_MAX_PARTS = 64  # MIME parts looked at
_MAX_DEPTH = 8  # multipart nesting followed
_MAX_TEXT_LINES = 2000  # lines of a human-readable part searched by the text readers

ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})  # RFC 3464 §2.3.3
# RFC 3463 §2 / RFC 3464 §2.3.4: class "." subject "." detail, ASCII digits only.
_STATUS = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", re.ASCII)


@dataclass(frozen=True, slots=True)
class BouncedRecipient:
    """One recipient of a report: what the reporting server says happened to it."""

    address: str | None  # Final-Recipient (or Original-Recipient), domain normalised; None if none valid
    action: str  # RFC 3464 §2.3.3
    status: str  # RFC 3463 "X.Y.Z"
    diagnostic: str | None  # the remote reply, one line, no control characters, ≤ 500 characters
    remote_mta: str | None  # host name or address literal

    @property
    def permanent(self) -> bool:
        return self.action == "failed" and self.status.startswith("5")


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery report: always at least one recipient."""

    format: str  # "dsn" (RFC 3464 / RFC 6533), "qmail", "exim" or "text"
    recipients: tuple[BouncedRecipient, ...]
    reporting_mta: str | None


def parse_bounce(raw: bytes) -> Bounce | None:
    """The bounce in `raw` (a whole message as received); None when it is not a delivery
    report (an auto-reply, a vacation notice, a feedback report, a normal message).

    Only the first MAX_INPUT octets are read. CPU-bound: a typical bounce takes
    milliseconds, a pathological one (deep nesting, many header lines) up to a few
    tenths of a second in the stdlib parser, so an asyncio caller runs it in a thread.
    The addresses are what the report says (after forwarding, not necessarily the
    recipient Secumail sent to): the bounce address (`mail/verp.py`) is what names it."""
    mime = _read_mime(raw[:MAX_INPUT])
    if mime is None or mime.other_report:
        return None
    if mime.status_parts:
        bounce = _read_dsn(mime)
        if bounce is not None:
            return bounce
    text = mime.first_text()
    if text is None:
        return None
    qmail = _read_qmail(text)
    if qmail is not None:
        return qmail
    if not _from_mail_system(mime) or _is_auto_reply(mime):
        return None
    return _read_text_bounce(text)


# -- the MIME structure (the email package, its failures contained) -------------------
@dataclass(frozen=True, slots=True)
class _Mime:
    headers: tuple[tuple[str, str], ...]  # (lower-case name, decoded value)
    texts: tuple[str, ...]  # the text/plain parts, in order
    other_report: bool  # a feedback report or read receipt: never a bounce
    status_parts: tuple[str, ...]  # the text of each delivery-status part

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def first_text(self) -> str | None:
        return self.texts[0] if self.texts else None


# What the stdlib parser may raise on hostile input (with compat32 none was seen in
# fuzzing; deep nesting is the likely one). Nothing broader: our own code raises
# nothing, which tests/security/test_fuzz_parsers.py checks, and a ValueError of ours
# must show up there, not turn into None.
_EMAIL_ERRORS = (email.errors.MessageError, LookupError, RecursionError)
_STATUS_TYPES = {"message/delivery-status", "message/global-delivery-status", "text/delivery-status"}
_OTHER_REPORTS = {"feedback-report", "disposition-notification"}  # RFC 5965, RFC 8098


def _read_mime(raw: bytes) -> _Mime | None:
    try:
        return _split(email.message_from_bytes(raw, policy=compat32))
    except _EMAIL_ERRORS:
        return None


def _split(msg: Message) -> _Mime:
    headers = tuple((name.lower(), _header_value(value)) for name, value in msg.raw_items())
    texts: list[str] = []
    status_parts: list[str] = []
    other = False
    for part, in_report in _parts(msg):
        ctype = part.get_content_type()
        if ctype == "multipart/report":
            other = other or _param(part, "report-type") in _OTHER_REPORTS
        elif ctype in ("message/feedback-report", "message/disposition-notification"):
            other = True
        elif ctype in _STATUS_TYPES:
            status_parts.append(_message_part_text(part))
        elif ctype == "text/plain" and not part.is_multipart():
            text = _payload_text(part)
            # A report whose status part came as text/plain (seen from old gateways).
            if in_report and texts and not status_parts and _looks_like_status(text):
                status_parts.append(text)
            else:
                texts.append(text)
    return _Mime(headers, tuple(texts), other, tuple(status_parts))


def _parts(msg: Message) -> Iterator[tuple[Message, bool]]:
    """The parts of `msg` in order, not those inside an attached message, each with
    whether it sits in a multipart/report or multipart/mixed (a report mislabelled)."""
    stack: list[tuple[Message, int, bool]] = [(msg, 0, False)]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part, depth, in_report = stack.pop()
        seen += 1
        yield part, in_report
        ctype = part.get_content_type()
        if ctype.startswith("multipart/") and depth < _MAX_DEPTH:
            children = part.get_payload()
            if isinstance(children, list):
                inner = in_report or ctype in ("multipart/report", "multipart/mixed")
                kids = [(c, depth + 1, inner) for c in children if isinstance(c, Message)]
                stack.extend(reversed(kids))


def _param(part: Message, name: str) -> str:
    value = part.get_param(name)
    if value is None:
        return ""
    return str(collapse_rfc2231_value(value)).strip().lower()


def _header_value(value: object) -> str:
    # compat32 keeps header octets that are not ASCII as surrogate escapes.
    return _octets(str(value)).decode("utf-8", "replace")


def _octets(text: str) -> bytes:
    """The octets behind a string from the email package: surrogate escapes are the
    octets it could not decode; anything else is UTF-8."""
    return text.encode("utf-8", "surrogateescape")


def _payload_text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    return _decode_text(data, part.get_content_charset() or "utf-8")


def _decode_text(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError, TypeError):  # unknown, not a text codec ("rot13"), or strict ("idna")
        return data.decode("utf-8", "replace")


def _message_part_text(part: Message) -> str:
    """The text of a delivery-status part. The email package parses message/* parts as
    nested messages (delivery-status: one per block), so the text is put back together
    from the raw fields it found and what it left as body."""
    payload = part.get_payload()
    if not isinstance(payload, list):  # text/delivery-status
        return _payload_text(part)
    blocks = []
    for block in payload:
        if not isinstance(block, Message):
            continue
        lines = [_octets(f"{name}: {value}") for name, value in block.raw_items()]
        rest = block.get_payload(decode=True)  # octets as received (no encoding declared)
        if isinstance(rest, bytes) and rest:
            lines.append(rest)
        blocks.append(b"\n".join(lines))
    data = b"\n\n".join(blocks)
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte == "base64":  # RFC 6533 §6.1 allows an encoded global status part
        try:
            data = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/]", b"", data) + b"==")
        except (binascii.Error, ValueError):
            return ""
    elif cte == "quoted-printable":
        data = quopri.decodestring(data)
    return data.decode("utf-8", "replace")


def _looks_like_status(text: str) -> bool:
    names = {name.lower() for block in _field_blocks(text) for name, _ in block}
    return "final-recipient" in names and "status" in names


# -- RFC 3464 fields --------------------------------------------------------------------
_FIELD_NAME = re.compile(r"([A-Za-z][A-Za-z0-9-]{0,63})[ \t]*:(.*)", re.ASCII | re.DOTALL)
_PER_RECIPIENT = {"final-recipient", "original-recipient", "action", "status", "remote-mta", "diagnostic-code"}


def _field_blocks(text: str) -> list[list[tuple[str, str]]]:
    """RFC 3464 §2.1: blocks of header-style fields, separated by blank lines; a line
    starting with white space continues the field before it (RFC 5322 §2.2.3)."""
    blocks: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines()[: (MAX_RECIPIENTS + 1) * 40]:
        if not line.strip():
            if blocks[-1]:
                blocks.append([])
            continue
        block = blocks[-1]
        if line[0] in " \t":
            if block and len(block[-1][1]) < _MAX_FIELD:
                name, value = block[-1]
                block[-1] = (name, value + " " + line.strip())
            continue
        m = _FIELD_NAME.fullmatch(line)
        if m:  # anything else is not a field: skipped
            block.append((m.group(1), m.group(2).strip()[:_MAX_FIELD]))
    return [b for b in blocks if b]


def _read_dsn(mime: _Mime) -> Bounce | None:
    reporting: str | None = None
    recipients: list[BouncedRecipient] = []
    for text in mime.status_parts:
        groups: list[dict[str, str]] = []
        for block in _field_blocks(text):
            current: dict[str, str] | None = None  # a blank line ends a recipient's fields
            for name, value in block:
                key = name.lower()
                if key == "reporting-mta":
                    reporting = reporting or _host(value)
                    continue
                if key not in _PER_RECIPIENT:
                    continue
                # A missing blank line between recipients: a field the current one has
                # already, or an Original-Recipient after its Final-Recipient (RFC 3464
                # §2.3 puts it before), begins the next recipient. Any order otherwise
                # (Exim writes Action first).
                if current is None or key in current or (key == "original-recipient" and "final-recipient" in current):
                    if len(groups) >= MAX_RECIPIENTS:
                        break
                    current = {}
                    groups.append(current)
                current.setdefault(key, value)
        for group in groups:
            recipient = _recipient(group)
            if recipient is not None and len(recipients) < MAX_RECIPIENTS:
                recipients.append(recipient)
    if not recipients:
        return None
    return Bounce("dsn", tuple(recipients), reporting)


def _recipient(fields: dict[str, str]) -> BouncedRecipient | None:
    action = fields.get("action", "").split("(")[0].strip().lower()  # a comment may follow
    status_words = fields.get("status", "").split()
    status = status_words[0] if status_words else ""
    if action not in ACTIONS or not _STATUS.fullmatch(status):
        return None
    address = _typed_address(fields.get("final-recipient"), xtext=False) or _typed_address(
        fields.get("original-recipient"), xtext=True
    )
    diagnostic = fields.get("diagnostic-code")
    if diagnostic is not None:
        _type, semi, rest = diagnostic.partition(";")
        diagnostic = _clean_diagnostic(rest if semi else diagnostic)
    return BouncedRecipient(address, action, status, diagnostic, _host(fields.get("remote-mta")))


def _typed_address(value: str | None, *, xtext: bool) -> str | None:
    """RFC 3464 §2.3.2 `address-type ; generic-address`: rfc822, or utf-8 (RFC 6533 §3)."""
    if value is None:
        return None
    kind, semi, text = value.partition(";")
    if not semi:
        kind, text = "rfc822", value  # the type left out: an address alone still counts
    kind = kind.strip().lower()
    if kind not in ("rfc822", "utf-8"):
        return None
    text = _unescape_utf8(text.strip())
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    # An ORCPT is xtext (RFC 3461 §4.2); some servers write it decoded, so both forms.
    candidates = [_xtext_decode(text), text] if xtext else [text]
    for candidate in candidates:
        address = _address(candidate, utf8=kind == "utf-8" or not candidate.isascii())
        if address is not None:
            return address
    return None


def _address(text: str, *, utf8: bool = False) -> str | None:
    try:
        return str(parse_address(text, utf8=utf8))
    except AddressError:
        return None


_UNI_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_XTEXT = re.compile(r"\+([0-9A-F]{2})")


def _unescape_utf8(text: str) -> str:
    """RFC 6533 §3 utf-8-addr-xtext: `\\x{HEX}` stands for one character."""

    def char(m: re.Match[str]) -> str:
        code = int(m.group(1), 16)
        return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"

    return _UNI_ESCAPE.sub(char, text)


def _xtext_decode(text: str) -> str:
    """RFC 3461 §4: xtext, `+HH` for one octet (the ORCPT in Original-Recipient)."""
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), text)


def _host(value: str | None) -> str | None:
    """A Reporting-MTA / Remote-MTA value (`dns; host`): a host name, A-labels in lower
    case, or an address literal; None when it is neither."""
    if value is None:
        return None
    kind, semi, text = value.partition(";")
    if not semi:
        kind, text = "dns", value
    words = text.split()
    if kind.strip().lower() != "dns" or not words:
        return None
    name = words[0].rstrip(".")
    literal = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if literal.lower().startswith("ipv6:"):
        literal = literal[5:]
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:  # RFC 5321 §4.1.3 address literal
        return f"[IPv6:{ip.compressed}]" if ip.version == 6 else f"[{ip}]"
    try:
        return normalise_domain(name)
    except AddressError:
        return None


def _clean_diagnostic(text: str) -> str | None:
    """One line of the remote reply: RFC 6533 escapes and RFC 2047 words decoded, then
    every control character made a space (`display_text`), at most 500 characters."""
    cleaned = display_text(_unescape_utf8(text[:_MAX_FIELD]))
    cleaned = "".join(c for c in cleaned if not 0xD800 <= ord(c) <= 0xDFFF)
    return cleaned[:MAX_DIAGNOSTIC].strip() or None


# -- plain-text bounces -------------------------------------------------------------------
_QMAIL_INTRO = re.compile(r"Hi\. This is the qmail-send program at ([^\s]+?)\.?\s*$", re.MULTILINE)
_QMAIL_RECIPIENT = re.compile(r"<([^<>\s]{1,254})>:\s*$")
_QMAIL_GIVING_UP = re.compile(r"Giving up on ([^\s]+?)\.?\s*$")
_ORIGINAL_FOLLOWS = re.compile(
    r"^(--- Below this line is a copy of the message|-+ This is a copy of the message"
    r"|-+ Original message|-+ The header of the original message|Content-Type: message/rfc822)",
    re.IGNORECASE,
)
# RFC 5321 §4.2 reply code with an RFC 3463 code of the same class after it
# ("550 5.1.1", "550-5.1.1"), or qmail's "(#5.1.1)".
_SMTP_REPLY = re.compile(
    r"(?<![0-9.])([45])[0-9]{2}[ -]\(?(([45])\.[0-9]{1,3}\.[0-9]{1,3})\)?(?![0-9]|\.[0-9])", re.ASCII
)
_QMAIL_CODE = re.compile(r"\(#(([45])\.[0-9]{1,3}\.[0-9]{1,3})\)", re.ASCII)


def _human_lines(text: str) -> list[str]:
    """The lines of a bounce's own text, up to where the returned original begins."""
    lines = []
    for line in text.splitlines()[:_MAX_TEXT_LINES]:
        if _ORIGINAL_FOLLOWS.match(line.strip()):
            break
        lines.append(line[:_MAX_FIELD])
    return lines


def _read_qmail(text: str) -> Bounce | None:
    intro = _QMAIL_INTRO.search(text[:2000])
    if intro is None:
        return None
    recipients: list[BouncedRecipient] = []
    lines = _human_lines(text)
    for i, line in enumerate(lines):
        m = _QMAIL_RECIPIENT.match(line)
        if m is None or len(recipients) >= MAX_RECIPIENTS:
            continue
        reason: list[str] = []
        for follow in lines[i + 1 : i + 20]:
            if not follow.strip() or _QMAIL_RECIPIENT.match(follow):
                break
            reason.append(follow.strip())
        said = next((r.partition("Remote host said:")[2] for r in reason if "Remote host said:" in r), "")
        joined = " ".join(reason)
        status = _status_in(joined) or "5.0.0"  # qmail bounces only what it gave up on
        if not status.startswith("5"):
            status = "5.0.0"
        giving_up = next((g for r in reason if (g := _QMAIL_GIVING_UP.match(r))), None)
        recipients.append(
            BouncedRecipient(
                _address(m.group(1)),
                "failed",
                status,
                _clean_diagnostic(said or joined),
                _host(giving_up.group(1)) if giving_up else None,
            )
        )
    if not recipients:
        return None
    return Bounce("qmail", tuple(recipients), _host(intro.group(1)))


def _status_in(text: str) -> str | None:
    m = _SMTP_REPLY.search(text)
    if m and m.group(1) == m.group(3):
        return m.group(2)
    q = _QMAIL_CODE.search(text)
    return q.group(1) if q else None


_ADDRESS_LINE = re.compile(r"<?([^\s<>@]{1,64}@[^\s<>@]{1,253}?)>?:?")
_ADDRESS_IN_LINE = re.compile(r"<([^\s<>@]{1,64}@[^\s<>@]{1,253})>")
_HOST_IN_LINE = re.compile(r"\bhost ([A-Za-z0-9][A-Za-z0-9.-]{0,252})\s*\[", re.ASCII)
_EXIM_INTRO = "This message was created automatically by mail delivery software."
_NEAR = 8  # lines between an address and the reply that belongs to it


def _read_text_bounce(text: str) -> Bounce | None:
    """An address on its own line (or in angle brackets at the start of a line) and,
    within a few lines, an SMTP reply with an enhanced status code of its class."""
    recipients: list[BouncedRecipient] = []
    done: set[str] = set()
    current: str | None = None
    current_at = -_NEAR - 1
    host: str | None = None
    for i, line in enumerate(_human_lines(text)):
        stripped = line.strip()
        alone = _ADDRESS_LINE.fullmatch(stripped)
        if alone:
            current, current_at, host = _address(alone.group(1)), i, None
            continue
        leading = _ADDRESS_IN_LINE.match(stripped)
        if leading:  # Postfix and Sendmail text: "<addr>: host ... said: 550 5.1.1 ..."
            current, current_at, host = _address(leading.group(1)), i, None
        h = _HOST_IN_LINE.search(line)
        if h:
            host = _host(h.group(1)) or host
        reply = _SMTP_REPLY.search(line)
        if reply is None or reply.group(1) != reply.group(3) or i - current_at > _NEAR:
            continue
        if current is None or current in done or len(recipients) >= MAX_RECIPIENTS:
            continue
        done.add(current)
        status = reply.group(2)
        action = "failed" if status.startswith("5") else "delayed"
        recipients.append(BouncedRecipient(current, action, status, _clean_diagnostic(line[reply.start() :]), host))
    if not recipients:
        return None
    return Bounce("exim" if _EXIM_INTRO in text else "text", tuple(recipients), None)


# -- who sent it: a mail system, not a person's auto-reply (RFC 3834) -----------------
_DAEMON_LOCALS = {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mail.daemon"}
_DAEMON_NAMES = re.compile(r"mail delivery (system|subsystem|software)|mailer.daemon", re.IGNORECASE)
_AUTO_REPLY_SUBJECT = re.compile(
    r"out of (the )?office|auto(matic|matisch)?[ -]?(reply|antwoord|response|respon)|autoreply|afwezig"
    r"|abwesen|vacation|absence|on leave|niet aanwezig|automatische antwort|r[ée]ponse automatique",
    re.IGNORECASE,
)


def _from_mail_system(mime: _Mime) -> bool:
    """From a mailer daemon or postmaster, or (Return-Path) from the null sender."""
    if any(v.strip() == "<>" for v in mime.header("return-path")):
        return True
    return any(_DAEMON_NAMES.search(v) or _daemon_address(v) for v in mime.header("from"))


def _is_auto_reply(mime: _Mime) -> bool:
    """RFC 3834 §5 `Auto-Submitted: auto-replied` from a person, and the vendor marks
    (X-Autoreply, X-Autorespond, Precedence: auto_reply, out-of-office subjects)."""
    if mime.header("x-autoreply") or mime.header("x-autorespond"):
        return True
    if any("auto_reply" in v.lower() for v in mime.header("precedence")):
        return True
    if any(_AUTO_REPLY_SUBJECT.search(display_text(v)) for v in mime.header("subject")):
        return True
    # A mail system marks its bounces auto-replied too (RFC 3834 §5: any automatic
    # response); from anyone else's address the mark means an auto-reply.
    auto = any(v.strip().lower().startswith("auto-replied") for v in mime.header("auto-submitted"))
    daemon_from = any(_DAEMON_NAMES.search(v) or _daemon_address(v) for v in mime.header("from"))
    return auto and not daemon_from


def _daemon_address(value: str) -> bool:
    return any(m.group(1).lower() in _DAEMON_LOCALS for m in re.finditer(r"([^\s<>\"@]+)@", value))
