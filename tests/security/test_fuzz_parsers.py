"""Property-based fuzzing (hypothesis) of the parsers that read what strangers send:
the SMTP command line and path (RFC 5321 §4.1), the DATA receiver (§4.5.2, smuggling),
envelope addresses (RFC 5321 §4.1.2, RFC 6531), MTA-STS records and policies (RFC 8461
§3), TLSA records (RFC 6698 §2.2), delivery notices (RFC 3464: no header injection),
bounces that come back (RFC 3464, RFC 6533, qmail and plain text) and the evidence
verifier (RFC 7515 compact JWS).

Each property says what must hold for *every* input: the parser raises only its own
error type, its output is well formed, and re-parsing its output gives the same thing.

`make test` runs the short profile (a few dozen examples per property, seconds in all).
The long run, by hand:

    HYPOTHESIS_PROFILE=long pytest -q tests/security/test_fuzz_parsers.py

(20,000 examples per property; `HYPOTHESIS_PROFILE=long HYPOTHESIS_MAX_EXAMPLES=N` for
another count). A failure prints the smallest input that breaks the property and
hypothesis replays it first on the next run (its database in `.hypothesis/`).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from secumail.errors import EvidenceError
from secumail.mail.address import AddressError, normalise_domain, parse_address
from secumail.mail.bounces import ACTIONS, MAX_DIAGNOSTIC, MAX_RECIPIENTS, parse_bounce
from secumail.mail.dsn import DsnRecipient, DsnRequest, build_dsn
from secumail.mail.mta_sts import (
    StsError,
    StsMode,
    mx_matches,
    parse_policy,
    parse_txt_record,
)
from secumail.mail.smtp_command import CommandError, parse_command, parse_params, parse_path
from secumail.mail.smtp_data import BareNewline, DataProblem, DataReceiver, unsafe_for_data
from secumail.mail.status import RecipientStatus
from secumail.mail.tlsa import TlsaError, parse_tlsa
from secumail.pki.evidence import EvidenceKey, sign_evidence, verify_evidence

# -- profiles ---------------------------------------------------------------------------
# Registered under names of this module's own and applied per test (not loaded globally),
# so other hypothesis tests in the same session keep their settings.
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("secumail-fuzz-short", max_examples=40, **_COMMON)
settings.register_profile(
    "secumail-fuzz-long",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "20000")),
    **_COMMON,
)
FUZZ = settings.get_profile(
    "secumail-fuzz-long"
    if os.environ.get("HYPOTHESIS_PROFILE") in ("long", "secumail-fuzz-long")
    else "secumail-fuzz-short"
)

# -- strategies -------------------------------------------------------------------------
ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
domain = st.lists(label, min_size=2, max_size=4).map(".".join)
# Text an attacker might type: SMTP punctuation, line breaks, NUL, non-ASCII, Unicode
# line separators, digits from other scripts.
NASTY = "<>@:\"\\ .,;=()[]\r\n\x00\t\x0b\x0c\x7f\x85\u2028é日²١ﬀ"
nasty_text = st.text(alphabet=st.sampled_from(ATEXT + NASTY), max_size=80) | st.text(max_size=80)
local_part = st.text(alphabet=ATEXT, min_size=1, max_size=10) | st.builds(
    lambda s: f'"{s}"', st.text(alphabet=st.sampled_from(ATEXT + ' .@<>"\\\x01é'), max_size=10)
)
address_like = st.builds(lambda lp, d: f"{lp}@{d}", local_part, domain | nasty_text) | nasty_text
UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f]")  # "<" and ">" are fine when quoted


def _check_address(addr, utf8: bool) -> None:
    text = str(addr)
    assert not UNSAFE_IN_ADDRESS.search(text), text
    assert normalise_domain(addr.domain) == addr.domain  # normalised already: A-labels, lower
    assert addr.domain.isascii() and addr.domain == addr.domain.lower()
    if not utf8:
        assert text.isascii()
    assert parse_address(text, utf8=utf8) == addr  # re-parsing the output changes nothing


# -- SMTP command line and paths (RFC 5321 §4.1.1, §4.1.2) ----------------------------
VERBS = ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "AUTH", "STARTTLS", "RSET", "QUIT"]
command_line = st.binary(max_size=600) | st.builds(
    lambda v, a: f"{v} {a}".encode(errors="surrogatepass"), st.sampled_from(VERBS), nasty_text
)


@FUZZ
@given(command_line)
@example(b"MAIL FROM:<a@b.test>\x00")
@example(b"\xff\xfe")
def test_command_line_parses_or_raises_command_error(line: bytes) -> None:
    try:
        cmd = parse_command(line)
    except CommandError:
        return
    assert cmd.verb == cmd.verb.upper()
    assert not any(c in cmd.verb + cmd.argument for c in "\r\n\x00")
    assert cmd.argument == cmd.argument.strip(" ")


esmtp_param = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,8}(=[\x21-\x3c\x3e-\x7e]{1,8})?", fullmatch=True)
path_argument = st.builds(
    lambda kw, sp, addr, params: f"{kw}:{sp}<{addr}>" + "".join(f" {p}" for p in params),
    st.sampled_from(["FROM", "TO", "from", "To"]),
    st.sampled_from(["", " "]),
    address_like | st.just("") | st.builds(lambda a: f"@relay.test:{a}", address_like),
    st.lists(esmtp_param | nasty_text, max_size=3),
) | nasty_text


@FUZZ
@given(path_argument, st.sampled_from(["FROM", "TO"]), st.booleans(), st.booleans())
@example('FROM:<"\x0c"@hospital.test>', "FROM", True, False)
@example("TO:<a@b.test> SIZE=1 size=2", "TO", False, False)
def test_mail_and_rcpt_paths_parse_or_raise_command_error(
    argument: str, keyword: str, allow_null: bool, smtputf8: bool
) -> None:
    try:
        parsed = parse_path(argument, keyword, allow_null=allow_null, smtputf8=smtputf8)
    except CommandError:
        return
    for key, value in parsed.params.items():
        assert re.fullmatch(r"[A-Z0-9][A-Z0-9-]*", key), key
        assert value is None or re.fullmatch(r"[\x21-\x3c\x3e-\x7e]+", value), value
    if parsed.address is None:
        assert allow_null
        return
    _check_address(parsed.address, utf8=smtputf8 or "SMTPUTF8" in parsed.params)
    assert not any(c in str(parsed.address) for c in "<>")


@FUZZ
@given(st.lists(esmtp_param, max_size=5))
def test_esmtp_parameters_are_read_back_as_written(params: list[str]) -> None:
    keys = [p.partition("=")[0].upper() for p in params]
    try:
        parsed = parse_params(" ".join(params))
    except CommandError:
        assert len(set(keys)) < len(keys), "only a repeated key is refused here"
        return
    assert list(parsed) == keys
    assert [v for v in parsed.values()] == [p.partition("=")[2] or None for p in params]


# -- envelope addresses (RFC 5321 §4.1.2, RFC 6531 §3.3) ------------------------------
@FUZZ
@given(address_like, st.booleans())
@example('"\x01"@hospital.test', False)
@example('"a\\"@hospital.test', False)
@example("a@xn--ls8h.test", False)
def test_address_parses_to_a_canonical_mailbox_or_raises_address_error(text: str, utf8: bool) -> None:
    try:
        addr = parse_address(text, utf8=utf8)
    except AddressError:
        return
    _check_address(addr, utf8)


@FUZZ
@given(domain | nasty_text)
def test_domain_normalises_idempotently_or_raises_address_error(text: str) -> None:
    try:
        name = normalise_domain(text)
    except AddressError:
        return
    assert name.isascii() and name == name.lower() and normalise_domain(name) == name
    assert all(re.fullmatch(r"(?!-)[a-z0-9-]{1,63}(?<!-)", lab) for lab in name.split("."))


# -- DATA (RFC 5321 §4.5.2; smuggling: only CRLF.CRLF ends, a bare CR is refused; a bare
# LF is refused in "reject" mode, taken as CRLF in "normalize" mode). Every DATA property
# runs in both modes (`submission.bare_newline`).
both_modes = pytest.mark.parametrize("mode", list(BareNewline))
data_piece = st.sampled_from(
    [b"\r\n", b"\r", b"\n", b".", b"..", b"\r\n.\r\n", b"\r\n..\r\n", b"a", b"Subject: x", b"\x00", b"\xff"]
) | st.builds(lambda n, c: c * n, st.integers(995, 1003), st.sampled_from([b"a", b"."]))
data_stream = st.lists(data_piece, max_size=20).map(b"".join)


def _feed(data: bytes, cuts: list[int], max_size: int, mode: BareNewline) -> tuple:
    """Feed `data` in the chunks cut at `cuts`; (problem, end offset, message)."""
    receiver = DataReceiver(max_size, mode)
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    offset = 0
    for start, stop in itertools.pairwise(bounds):
        used = receiver.feed(data[start:stop])
        if used is not None:
            if receiver.problem is DataProblem.BARE_LINE_ENDING:
                return (receiver.problem, None, None)
            offset = start + used
            break
    else:
        return (receiver.problem, None, None)
    message = receiver.message() if receiver.problem is None else None
    return (receiver.problem, offset, message)


@both_modes
@FUZZ
@given(data_stream, st.lists(st.integers(0, 30000), max_size=8), st.sampled_from([50, 2000, 10**6]))
@example(b"a" * 60 + b"\r\n" + b"b" * 1000 + b"\r\n.\r\n", [61], 50)
@example(b"x\r\n.\n.\r\n", [], 10**6)
@example(b"a\n" + b"b" * 998 + b"\n.\n\r\n.\r\n", [2, 1001], 2000)
def test_data_result_does_not_depend_on_chunking(
    mode: BareNewline, data: bytes, cuts: list[int], max_size: int
) -> None:
    whole = _feed(data, [], max_size, mode)
    assert _feed(data, cuts, max_size, mode) == whole
    assert _feed(data, list(range(len(data) + 1)), max_size, mode) == whole  # one octet at a time


@both_modes
@FUZZ
@given(data_stream, st.lists(st.integers(0, 30000), max_size=8))
def test_data_output_never_holds_a_bare_cr_or_lf(mode: BareNewline, data: bytes, cuts: list[int]) -> None:
    _problem, _offset, message = _feed(data + b"\r\n.\r\n", cuts, 10**6, mode)
    if message is not None:
        assert not re.search(rb"\r(?!\n)|(?<!\r)\n", message)
        assert message == b"" or message.endswith(b"\r\n")
        assert unsafe_for_data(message) is None  # the delivery client's last guard agrees


@both_modes
@FUZZ
@given(data_stream, st.lists(st.integers(0, 30000), max_size=8))
@example(b"x\n.\nMAIL FROM:<a@b.test>\r\n", [])
def test_data_ends_only_at_the_first_crlf_dot_crlf_as_received(
    mode: BareNewline, data: bytes, cuts: list[int]
) -> None:
    """Smuggling: no look-alike (`\\n.\\n`, `\\n.CRLF`, NUL, ...) ends the data in either
    mode; the end is the first CRLF "." CRLF of the octets as sent, or the stream is refused."""
    problem, offset, _message = _feed(data, cuts, 10**6, mode)
    first = (b"\r\n" + data).find(b"\r\n.\r\n")
    if problem is DataProblem.BARE_LINE_ENDING:
        judged = data if first < 0 else data[: first + 3]  # what follows the end is not data
        bare_lf_refused = mode is BareNewline.REJECT and re.search(rb"(?<!\r)\n", judged)
        assert re.search(rb"\r(?!\n)", judged) or bare_lf_refused
    else:
        assert offset == (None if first < 0 else first + 3)


text_line = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")) | st.builds(
    lambda n: b"." * (n % 3) + b"y" * n, st.integers(0, 998)
)


@both_modes
@FUZZ
@given(st.lists(text_line, max_size=12), st.lists(st.integers(0, 20000), max_size=6), st.binary(max_size=20))
def test_data_dot_stuffing_round_trips(
    mode: BareNewline, lines: list[bytes], cuts: list[int], next_command: bytes
) -> None:
    """What a client sends (RFC 5321 §4.5.2: a leading dot doubled, CRLF.CRLF at the end)
    comes out exactly as written; the bytes after the end are not part of it."""
    lines = [ln[:998] for ln in lines]
    stuffed = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
    sent = stuffed + b".\r\n"
    problem, offset, message = _feed(sent + next_command, cuts, 10**6, mode)
    if b"\x00" in sent:  # RFC 5322 §2.3: refused (issue 11: NUL smuggling), read to the end
        assert problem is DataProblem.NUL and offset == len(sent)
        return
    assert problem is None
    assert offset == len(sent)
    assert message == b"".join(ln + b"\r\n" for ln in lines)


@FUZZ
@given(
    st.lists(st.tuples(text_line, st.sampled_from([b"\n", b"\r\n"])), max_size=12),
    st.lists(st.integers(0, 20000), max_size=6),
)
@example([(b"", b"\n"), (b".", b"\n")], [])
def test_data_with_bare_lf_line_ends_round_trips_in_normalize_mode(
    lines: list[tuple[bytes, bytes]], cuts: list[int]
) -> None:
    """A legacy client mixing LF and CRLF line ends (dot-stuffing its lines, ending with
    CRLF.CRLF): each line comes out as written, with CRLF (Postfix 3.9 "normalize")."""
    lines = [(ln[:998], end) for ln, end in lines]
    stuffed = b"".join((b"." + ln if ln.startswith(b".") else ln) + end for ln, end in lines)
    if lines and lines[-1][1] == b"\n":
        stuffed += b"\r\n"  # the line before the end must end in CRLF: an empty line
        lines.append((b"", b"\r\n"))
    sent = stuffed + b".\r\n"
    problem, offset, message = _feed(sent, cuts, 10**6, BareNewline.NORMALIZE)
    if b"\x00" in sent:
        assert problem is DataProblem.NUL and offset == len(sent)
        return
    assert (problem, offset) == (None, len(sent))
    assert message == b"".join(ln + b"\r\n" for ln, _end in lines)


# -- MTA-STS (RFC 8461 §3.1 record, §3.2 policy, §4.1 MX matching) -------------------
policy_line = st.builds(
    lambda k, v: f"{k}:{v}",
    st.sampled_from(["version", "mode", "max_age", "mx", "ext_1", "Mode", "v"]),
    st.sampled_from([" STSv1", " enforce", " testing", " none", " 86400", " *.example.test", " mx.example.test"])
    | nasty_text,
)
policy_text = st.builds(
    lambda lines, sep: sep.join(lines), st.lists(policy_line | nasty_text, max_size=8), st.sampled_from(["\r\n", "\n"])
) | nasty_text


@FUZZ
@given(policy_text)
@example("version: STSv1\nmode: enforce\nmx: *.\u00e9.test\nmax_age: 1\n")
@example("version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 99999999999\n")
def test_mta_sts_policy_parses_or_raises_sts_error(text: str) -> None:
    try:
        policy = parse_policy(text)
    except StsError:
        return
    assert 0 <= policy.max_age <= 31_557_600
    assert policy.mx_patterns or policy.mode is StsMode.NONE
    for pattern in policy.mx_patterns:
        assert pattern.isascii() and pattern == pattern.lower() and not pattern.endswith(".")
    # the policy as it is reported (RFC 8460 policy-string) reads back as the same policy
    assert parse_policy("\r\n".join(policy.policy_string()) + "\r\n") == policy


sts_record = st.builds(
    lambda parts: "; ".join(parts),
    st.lists(st.sampled_from(["v=STSv1", "id=20260101", "id=", "ext=v", "id=ab;c"]) | nasty_text, max_size=5),
)


@FUZZ
@given(st.lists(sts_record | nasty_text, max_size=3))
def test_mta_sts_record_parses_or_raises_sts_error(values: list[str]) -> None:
    try:
        record = parse_txt_record(values)
    except StsError:
        return
    if record is not None:
        assert re.fullmatch(r"[A-Za-z0-9]{1,32}", record.id)


@FUZZ
@given(st.sampled_from(["*.example.test", "mx.example.test"]) | nasty_text, domain | nasty_text)
def test_mx_matching_never_raises(pattern: str, host: str) -> None:
    assert mx_matches(pattern, host) in (True, False)


# -- TLSA (RFC 6698 §2.2 presentation format, RFC 7218 mnemonics) ---------------------
tlsa_text = st.builds(
    lambda u, s, m, h: f"{u} {s} {m} {h}",
    st.sampled_from(["3", "2", "DANE-EE", "dane-ta", "256", "-1", "²", "١", "9" * 5000]) | nasty_text,
    st.sampled_from(["0", "1", "SPKI", "Cert"]) | nasty_text,
    st.sampled_from(["0", "1", "2", "SHA2-256"]) | nasty_text,
    st.binary(max_size=40).map(bytes.hex) | nasty_text,
) | nasty_text


@FUZZ
@given(tlsa_text)
@example("² 1 1 00")
@example("9999999999999999999999 1 1 00")
def test_tlsa_parses_or_raises_tlsa_error(text: str) -> None:
    try:
        record = parse_tlsa(text)
    except TlsaError:
        return
    assert all(0 <= v <= 255 for v in (record.usage, record.selector, record.mtype)) and record.data
    assert parse_tlsa(str(record)) == record


# -- delivery notices (RFC 3464; CVE-2024-6923 class: no header injection) -------------
NOTICE_HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version", "Content-Type"]


def _field_names(block: str) -> list[str]:
    """The field names of a header block; a folded line (RFC 5322 §2.2.3) continues one."""
    names = []
    for line in block.split("\r\n"):
        if line[:1] in (" ", "\t"):
            assert names, f"a continuation line opens the block: {line!r}"
            continue
        name, colon, _ = line.partition(":")
        assert colon and re.fullmatch(r"[!-9;-~]+", name), f"not a header line: {line!r}"
        names.append(name)
    return names


@FUZZ
@given(
    subject=nasty_text,
    diagnostic=nasty_text,
    detail=nasty_text,
    original_from=nasty_text,
    # ASCII only here: a non-ASCII Message-ID is a known failure, see the test below
    message_id=nasty_text.filter(str.isascii),
    locale=st.sampled_from(["en", "nl", "xx"]),
    kind=st.sampled_from(["failed", "delayed"]),
)
@example(subject="x\r\nBcc: evil@x.test", diagnostic="550 no\r\n\r\nInjected: 1", detail="", original_from="",
         message_id="<a@b>\nX-Evil: 1", locale="en", kind="failed")
def test_notice_text_never_adds_a_header_line(
    subject: str, diagnostic: str, detail: str, original_from: str, message_id: str, locale: str, kind: str
) -> None:
    raw = build_dsn(_notice(subject, diagnostic, detail, original_from, message_id, locale, kind), 1_790_000_100.0)
    assert raw.isascii(), "an ASCII sender gets a 7-bit notice"
    text = raw.decode("ascii")
    assert not re.search(r"\r(?!\n)|(?<!\r)\n", text), "bare CR or LF"
    head, _, body = text.partition("\r\n\r\n")
    assert _field_names(head) == NOTICE_HEADERS
    boundary = re.search(r'boundary="([^"]+)"', head).group(1)
    parts = body.split(f"--{boundary}")
    assert parts[0] == "" and parts[-1] == "--\r\n"
    status_head, _, status_rest = parts[2].strip("\r\n").partition("\r\n\r\n")
    assert _field_names(status_head) == ["Content-Type"]
    blocks = status_rest.split("\r\n\r\n")
    assert len(blocks) == 2, "one per-message block and one per recipient"
    assert _field_names(blocks[0]) == ["Reporting-MTA", "Arrival-Date"]
    expected = ["Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code"]
    expected += ["Will-Retry-Until"] if kind == "delayed" else []
    assert _field_names(blocks[1].rstrip("\r\n")) == expected
    if len(parts) > 4:  # the original's identifying fields
        _inner_head, _, fields = parts[3].strip("\r\n").partition("\r\n\r\n")
        names = _field_names(fields.rstrip("\r\n"))
        assert set(names) <= {"From", "Message-ID", "Subject"} and len(names) == len(set(names))


def test_notice_for_an_original_with_a_non_ascii_message_id_is_built() -> None:
    raw = build_dsn(_notice("", "550 no", "", "", "<\u00e9t\u00e9@hospital.test>", "en", "failed"), 1_790_000_100.0)
    assert raw.isascii()


def _notice(
    subject: str, diagnostic: str, detail: str, original_from: str, message_id: str, locale: str, kind: str
) -> DsnRequest:
    return DsnRequest(
        reporting_mta="gw.secumail.test",
        sender="alice@hospital.test",
        original_id="06H1TEST",
        arrival=1_790_000_000.0,
        recipients=(
            DsnRecipient("dr@clinic.test", RecipientStatus.REFUSED_INSECURE, "5.7.10", diagnostic,
                         "mx.clinic.test", (detail,)),
        ),
        locale=locale,
        kind=kind,
        original_from=original_from or None,
        original_message_id=message_id or None,
        original_subject=subject or None,
        retry_until=1_790_086_400.0 if kind == "delayed" else None,
    )


# -- bounces (RFC 3464, RFC 6533, qmail, plain text): any octets give a Bounce or None --
BOUNCE_SAMPLES = [p.read_bytes() for p in sorted((Path(__file__).parents[1] / "unit" / "bounces").glob("*.eml"))]
BOUNCE_PIECES = [
    b"\r\n", b"\n", b"\r", b"\x00", b"\xff", b"\r\n\r\n", b" ", b":", b";", b"<", b">", b"@", b"=?utf-8?q?=0D=0A?=",
    b"\\x{D}", b"\\x{110000}", b"--", b"Status: 5.1.1", b"Action: failed", b"Final-Recipient: utf-8; ",
    b"Content-Type: message/delivery-status", b"Content-Type: multipart/report; boundary=", b"550 5.1.1 ",
    b"Content-Transfer-Encoding: base64", "\u00e9".encode(), "\u2028".encode(),
]
mutation = st.tuples(
    st.sampled_from(["insert", "delete", "replace", "cut"]),
    st.integers(0, 20_000),
    st.integers(0, 400),
    st.sampled_from(BOUNCE_PIECES) | st.binary(max_size=8),
)


def _mutate(raw: bytes, mutations: list[tuple[str, int, int, bytes]]) -> bytes:
    for op, at, length, piece in mutations:
        at %= len(raw) + 1
        if op == "insert":
            raw = raw[:at] + piece + raw[at:]
        elif op == "delete":
            raw = raw[:at] + raw[at + length :]
        elif op == "replace":
            raw = raw[:at] + piece + raw[at + len(piece) :]
        else:
            raw = raw[:at]
    return raw


def _status_part(fields: list[tuple[str, str]]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields)
    return (
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: message/global-delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.test\r\n\r\n{lines}--b--\r\n"
    ).encode("utf-8", "surrogatepass")


status_fields = st.lists(
    st.tuples(
        st.sampled_from(["Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code", "Remote-MTA"]),
        st.sampled_from(
            ["rfc822; a@b.test", "utf-8; \u00e9@b.test", "failed", "5.1.1", "dns; mx.b.test", "smtp; 550 x"]
        )
        | nasty_text,
    ),
    max_size=12,
)


def _check_bounce(raw: bytes) -> None:
    bounce = parse_bounce(raw)
    if bounce is None:
        return
    assert 1 <= len(bounce.recipients) <= MAX_RECIPIENTS
    for host in [bounce.reporting_mta] + [r.remote_mta for r in bounce.recipients]:
        if host is not None and not host.startswith("["):
            assert normalise_domain(host) == host
    for r in bounce.recipients:
        assert r.action in ACTIONS
        assert re.fullmatch(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", r.status)
        assert r.permanent == (r.action == "failed" and r.status[0] == "5")
        if r.address is not None:
            assert str(parse_address(r.address, utf8=True)) == r.address
        if r.diagnostic is not None:
            assert len(r.diagnostic) <= MAX_DIAGNOSTIC and r.diagnostic.isprintable() and "=?" not in r.diagnostic


@FUZZ
@given(st.binary(max_size=3000))
@example(b"Content-Type: message/delivery-status\r\n\r\nAction: failed\r\nStatus: 5.1.1\r\n")
def test_any_octets_give_a_bounce_or_none(raw: bytes) -> None:
    _check_bounce(raw)


@FUZZ
@given(st.sampled_from(BOUNCE_SAMPLES), st.lists(mutation, min_size=1, max_size=6))
def test_a_mutated_real_bounce_gives_a_bounce_or_none(raw: bytes, mutations: list[tuple[str, int, int, bytes]]) -> None:
    _check_bounce(_mutate(raw, mutations))


@FUZZ
@given(status_fields)
@example([("Final-Recipient", "utf-8; \\x{D800}@b.test"), ("Action", "failed"), ("Status", "5.1.1")])
def test_hostile_status_fields_give_a_well_formed_bounce_or_none(fields: list[tuple[str, str]]) -> None:
    _check_bounce(_status_part(fields))


# -- evidence (RFC 7515 JWS compact, EdDSA only) ---------------------------------------
_KEY = EvidenceKey.generate()
_JWK = _KEY.public_jwk()
_TOKEN = sign_evidence({"message_id": "06H1TEST", "recipient": "dr@clinic.test", "mx": "mx.clinic.test"}, _KEY)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


jws_part = st.binary(max_size=60).map(_b64) | nasty_text | st.sampled_from(_TOKEN.split("."))
json_header = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "jku"]),
    st.sampled_from(["EdDSA", "none", "HS256", _JWK["kid"], "secumail-evidence+json", None, 1, [], {}]),
).map(lambda h: _b64(json.dumps(h).encode()))
token_text = st.builds(lambda parts: ".".join(parts), st.lists(jws_part | json_header, max_size=4)) | nasty_text


@FUZZ
@given(token_text)
@example(_b64(b"[" * 40_000) + ".e30.AA")
@example(_b64(b'{"a":' * 9_000) + ".e30.AA")
@example(".".join([_TOKEN.split(".")[0], _b64(b"[" * 40_000), _TOKEN.split(".")[2]]))
@example(_TOKEN.split(".")[0] + "." + _TOKEN.split(".")[1] + "." + "A" * 86)
def test_evidence_verifier_raises_only_evidence_error(token: str) -> None:
    try:
        verify_evidence(token, _JWK)
    except EvidenceError:
        return
    assert token.strip() == _TOKEN  # nothing but the one token signed here verifies


@FUZZ
@given(st.integers(0, len(_TOKEN) - 1), st.characters(codec="ascii"))
def test_a_changed_evidence_token_never_verifies(position: int, char: str) -> None:
    changed = _TOKEN[:position] + char + _TOKEN[position + 1 :]
    if changed == _TOKEN:
        return
    with pytest.raises(EvidenceError):
        verify_evidence(changed, _JWK)
