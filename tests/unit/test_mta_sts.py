"""MTA-STS (RFC 8461): the TXT record (§3.1), the policy file (§3.2), MX matching (§4.1)."""

from __future__ import annotations

import pytest

from secumail.mail.mta_sts import (
    MAX_AGE_LIMIT,
    POLICY_MAX_BYTES,
    StsError,
    StsMode,
    StsPolicy,
    StsRecord,
    mx_matches,
    parse_policy,
    parse_txt_record,
    policy_host,
    policy_url,
)
from secumail.mail.tlsrpt import ResultType

# The example policy of RFC 8461 §3.2, with the CRLF line ends it is served with.
RFC_POLICY = (
    "version: STSv1\r\n"
    "mode: enforce\r\n"
    "mx: mail.example.com\r\n"
    "mx: *.example.net\r\n"
    "mx: backupmx.example.com\r\n"
    "max_age: 604800\r\n"
)


def policy(*lines: str, end: str = "\n") -> str:
    return end.join(lines) + end


BASE = ("version: STSv1", "mode: enforce", "mx: mx.example.test", "max_age: 86400")

# --- §3.1: the TXT record --------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # §3.1 example
        (["v=STSv1; id=20160831085700Z;"], StsRecord("20160831085700Z")),
        (["v=STSv1;id=abc"], StsRecord("abc")),
        (["v=STSv1 ;\tid=abc ; "], StsRecord("abc")),  # *WSP ";" *WSP, trailing delimiter
        (["v=STSv1; id=" + "a" * 32], StsRecord("a" * 32)),  # 1*32(ALPHA / DIGIT)
        # §3.1: unknown fields ignored, kept as extensions; order of fields free
        (["v=STSv1; ext.x-1=v!al; id=1"], StsRecord("1", (("ext.x-1", "v!al"),))),
        # §3.1: records not starting with v=STSv1 are discarded
        (["v=spf1 -all", "v=STSv1; id=7", "google-site-verification=x"], StsRecord("7")),
    ],
)
def test_txt_record_is_parsed(values: list[str], expected: StsRecord) -> None:
    assert parse_txt_record(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["v=spf1 -all"],
        ["v=STSv10; id=1"],  # another version, not STSv1
        ["V=STSv1; id=1"],  # %s"v=STSv1": case-sensitive
        [" v=STSv1; id=1"],  # must begin with the version
        ["id=1; v=STSv1"],
    ],
)
def test_no_sts_record_means_no_policy(values: list[str]) -> None:
    """§3.1: without a record the domain does not implement MTA-STS: None, no error."""
    assert parse_txt_record(values) is None


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (["v=STSv1; id=1", "v=STSv1; id=2"], "2 MTA-STS TXT records"),  # §3.1: not one
        (["v=STSv1; id=1", "v=STSv1; id=1"], "exactly one"),
        (["v=STSv1"], "without id"),
        (["v=STSv1;"], "without id"),
        (["v=STSv1; ext=1"], "without id"),
        (["v=STSv1; id=" + "a" * 33], "1-32 letters"),  # too long
        (["v=STSv1; id=2016-08-31"], "1-32 letters"),  # not alphanumeric
        (["v=STSv1; id="], "1-32 letters"),
        (["v=STSv1; id=1; id=2"], "more than once"),
        (["v=STSv1; id = 1"], "invalid field"),  # no WSP around "="
        (["v=STSv1;; id=1"], "invalid field"),  # empty field
        (["v=STSv1; id=1; x=a b"], "invalid field"),  # space in ext value
        (["v=STSv1; id=1; _x=1"], "invalid field"),  # ext name starts with ALPHA/DIGIT
    ],
)
def test_bad_txt_record_is_an_error(values: list[str], why: str) -> None:
    with pytest.raises(StsError, match=why) as info:
        parse_txt_record(values)
    assert info.value.result_type == ResultType.STS_POLICY_INVALID
    assert info.value.result_type == "sts-policy-invalid"


# --- §3.2: the policy file -------------------------------------------------------------


def test_rfc_example_policy() -> None:
    parsed = parse_policy(RFC_POLICY, policy_id="20160831085700Z")
    assert parsed == StsPolicy(
        StsMode.ENFORCE,
        ("mail.example.com", "*.example.net", "backupmx.example.com"),
        604800,
        "20160831085700Z",
    )


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_lf_and_crlf_line_ends(end: str) -> None:
    """§3.2: sts-policy-term = LF / CRLF."""
    assert parse_policy(policy(*BASE, end=end)).mx_patterns == ("mx.example.test",)


def test_last_line_end_optional_and_whitespace_around_values() -> None:
    text = "version:STSv1\nmode:\t testing \nmx:  mx.example.test\t\nmax_age: 0"
    parsed = parse_policy(text)
    assert (parsed.mode, parsed.max_age) == (StsMode.TESTING, 0)


def test_unknown_keys_are_ignored() -> None:
    """§3.2: unknown fields are ignored (extensions), in any position."""
    text = policy("future_key: some value, with spaces", *BASE, "x.y-z: ünïcödé ok")
    assert parse_policy(text).mode is StsMode.ENFORCE


def test_order_of_fields_is_free() -> None:
    assert parse_policy(policy(*reversed(BASE))).max_age == 86400


def test_mode_none_needs_no_mx() -> None:
    """§3.2: mx is required unless mode is none (a domain withdrawing its policy, §8.3)."""
    parsed = parse_policy(policy("version: STSv1", "mode: none", "max_age: 86400"))
    assert parsed.mode is StsMode.NONE
    assert parsed.mx_patterns == ()
    assert not parsed.permits("mx.example.test")


def test_mx_patterns_normalised() -> None:
    text = policy(
        "version: STSv1",
        "mode: testing",
        "mx: MX1.Example.TEST.",
        "mx: *.Example.net",
        "max_age: 1",
    )
    assert parse_policy(text).mx_patterns == ("mx1.example.test", "*.example.net")


def test_max_age_limits() -> None:
    """§3.2: max_age is a non-negative integer, at most 31557600."""
    assert MAX_AGE_LIMIT == 31557600
    top = policy("version: STSv1", "mode: enforce", "mx: a.example", f"max_age: {MAX_AGE_LIMIT}")
    assert parse_policy(top).max_age == MAX_AGE_LIMIT


def test_trailing_blank_lines_tolerated() -> None:
    assert parse_policy(policy(*BASE) + "\n\r\n").max_age == 86400


def replace(key: str, line: str | None) -> str:
    """BASE with the line of ``key`` replaced (or removed when ``line`` is None)."""
    lines = [line if entry.startswith(key + ":") else entry for entry in BASE]
    return policy(*(entry for entry in lines if entry is not None))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (replace("version", None), "'version' is missing"),
        (replace("mode", None), "'mode' is missing"),
        (replace("max_age", None), "'max_age' is missing"),
        (replace("mx", None), "no mx"),  # §3.2: required for enforce/testing
        (replace("version", "version: STSv2"), "unknown version"),
        (replace("version", "version: stsv1"), "unknown version"),  # case-sensitive
        (replace("mode", "mode: Enforce"), "unknown mode"),
        (replace("mode", "mode: report"), "unknown mode"),  # a draft's mode, not the RFC's
        (replace("mode", "mode:"), "unknown mode"),
        (replace("max_age", f"max_age: {MAX_AGE_LIMIT + 1}"), "max_age must be"),
        (replace("max_age", "max_age: -1"), "max_age must be"),
        (replace("max_age", "max_age: 1e5"), "max_age must be"),
        (replace("max_age", "max_age: 12345678901"), "max_age must be"),  # 1*10DIGIT
        (replace("max_age", "max_age:"), "max_age must be"),
        (replace("mx", "mx: *.*.example.test"), "invalid mx pattern"),
        (replace("mx", "mx: mx*.example.test"), "invalid mx pattern"),
        (replace("mx", "mx: mx.example.test:25"), "invalid mx pattern"),
        (replace("mx", "mx: -mx.example.test"), "invalid mx pattern"),
        (replace("mx", "mx: mx..example.test"), "invalid mx pattern"),
        (replace("mx", "mx: mëx.example.test"), "invalid mx pattern"),  # A-labels only
        (replace("mx", "mx:"), "invalid mx pattern"),
        (replace("mx", "mx: *."), "invalid mx pattern"),
        (replace("mode", "Mode: enforce"), "'mode' is missing"),  # keys are case-sensitive
        (policy(*BASE, "mode: testing"), "'mode' appears more than once"),  # undefined → refused
        (policy(*BASE, "version: STSv1"), "'version' appears more than once"),
        (policy(*BASE, "max_age: 1"), "'max_age' appears more than once"),
        (policy(BASE[0], "", *BASE[1:]), "not 'key: value'"),  # empty line inside
        (policy(BASE[0], " mode: enforce", *BASE[2:]), "not 'key: value'"),  # leading WSP
        (policy(*BASE, "no colon here"), "not 'key: value'"),
        (policy(*BASE, "_x: 1"), "not 'key: value'"),
        (policy(*BASE, "x" * 33 + ": 1"), "not 'key: value'"),  # ext name ≤ 32
        (policy(*BASE, "ext: a\x01b"), "bad value"),
        (policy(*BASE, "ext:"), "bad value"),  # ext value is 1+ vchar
        ("version: STSv1\rmode: enforce\rmx: a.example\rmax_age: 1\r", "CR not followed by LF"),
        ("", "'version' is missing"),
    ],
)
def test_invalid_policy(text: str, why: str) -> None:
    with pytest.raises(StsError, match=why) as info:
        parse_policy(text)
    assert info.value.result_type == "sts-policy-invalid"  # RFC 8460 §4.3.2.2


def test_policy_string_for_tls_reports() -> None:
    """RFC 8460 §4.4: policy-string is the policy's lines."""
    assert parse_policy(RFC_POLICY).policy_string() == RFC_POLICY.strip().split("\r\n")


# --- §4.1: MX host matching ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("mail.example.com", "mail.example.com", True),
        ("mail.example.com", "MAIL.Example.COM", True),  # case-insensitive
        ("mail.example.com", "mail.example.com.", True),  # trailing dot ignored
        ("mail.example.com.", "mail.example.com", True),
        ("mail.example.com", "mail2.example.com", False),
        ("mail.example.com", "x.mail.example.com", False),
        ("mail.example.com", "example.com", False),
        # §4.1: "*.example.com" matches exactly one leftmost label
        ("*.example.com", "mx1.example.com", True),
        ("*.example.com", "MX1.EXAMPLE.COM.", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", ".example.com", False),
        ("*.example.com", "mx1.example.org", False),
        ("*.example.com", "mx1.notexample.com", False),
        ("*.example.com", "*.example.com", False),  # a host is never a pattern
        ("*.xn--bcher-kva.example", "mx.bücher.example", True),  # U-label host, A-label pattern
        ("mail.example.com", "", False),
    ],
)
def test_mx_matches(pattern: str, host: str, matches: bool) -> None:
    assert mx_matches(pattern, host) is matches


def test_policy_permits_listed_mx_only() -> None:
    """§4.1, §5.1: a host not matching any mx pattern is not a valid MX for the policy."""
    parsed = parse_policy(RFC_POLICY)
    assert parsed.permits("mail.example.com")
    assert parsed.permits("mx7.example.net")
    assert parsed.permits("BACKUPMX.example.com.")
    assert not parsed.permits("evil.example.org")
    assert not parsed.permits("a.b.example.net")


# --- §3.2, §3.3: where the policy lives ------------------------------------------------


def test_policy_location() -> None:
    assert policy_host("Example.COM.") == "mta-sts.example.com"
    assert policy_url("example.com") == "https://mta-sts.example.com/.well-known/mta-sts.txt"
    assert (
        policy_url("bücher.example")
        == "https://mta-sts.xn--bcher-kva.example/.well-known/mta-sts.txt"
    )
    assert POLICY_MAX_BYTES == 65536
