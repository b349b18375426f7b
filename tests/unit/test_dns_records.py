"""DNS records written so a customer can paste them: TXT values split into character-strings
of at most 255 octets (RFC 1035 §3.3.14), zone-file lines (RFC 1035 §5.1), a gateway host
name others can look up, an MTA-STS id that RFC 8461 §3.1 accepts."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from secumail.mail.dns_records import (
    hostname_problem,
    spf_mechanism,
    sts_policy_id,
    txt_rdata,
    txt_strings,
    zone_line,
)
from secumail.mail.mta_sts import parse_txt_record

# The size of a 2048-bit RSA DKIM record: one string of it is too long for a zone file.
DKIM_RSA = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A" * 12 + "IDAQAB"


def parsed_txt(rdata: str) -> list[bytes]:
    """The character-strings a DNS server makes of `rdata` (dnspython's master-file reader)."""
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rdata)
    return list(rd.strings)


def test_a_long_dkim_value_becomes_strings_a_zone_file_accepts() -> None:
    assert len(DKIM_RSA) > 300
    strings = parsed_txt(txt_rdata(DKIM_RSA))
    assert len(strings) == 2
    assert all(len(s) <= 255 for s in strings)
    assert b"".join(strings).decode() == DKIM_RSA  # RFC 6376 §3.6.2.2: joined without spaces


def test_a_short_value_stays_one_string() -> None:
    assert txt_strings("v=spf1 a:relay.example.nl ~all") == ["v=spf1 a:relay.example.nl ~all"]
    assert txt_strings("") == [""]
    assert txt_rdata("x" * 255) == '"' + "x" * 255 + '"'
    assert len(txt_strings("x" * 256)) == 2


def test_strings_count_octets_and_never_split_a_character() -> None:
    value = "é" * 200  # 400 octets in UTF-8
    strings = txt_strings(value)
    assert "".join(strings) == value
    assert all(len(s.encode()) <= 255 for s in strings)
    assert b"".join(parsed_txt(txt_rdata(value))).decode() == value


def test_quotes_and_backslashes_are_escaped() -> None:
    value = 'say "hi" \\ bye'
    assert b"".join(parsed_txt(txt_rdata(value))).decode() == value


def test_zone_line_is_read_back_by_a_zone_file_parser() -> None:
    text = "$TTL 3600\n" + zone_line("sm1._domainkey.zho.nl", "TXT", DKIM_RSA) + "\n"
    zone = dns.zone.from_text(text, origin="zho.nl.", check_origin=False, relativize=False)
    rdataset = zone.find_rdataset("sm1._domainkey.zho.nl.", "TXT")
    (rd,) = list(rdataset)
    assert b"".join(rd.strings).decode() == DKIM_RSA
    assert zone_line("zho.nl.", "txt", "v=spf1 -all") == 'zho.nl. IN TXT "v=spf1 -all"'


@pytest.mark.parametrize(
    ("hostname", "why"),
    [
        ("localhost", "single label"),
        ("gateway", "single label"),
        ("relay.local", ".local"),
        ("relay.localdomain", ".localdomain"),
        ("gw.secumail.test", ".test"),
        ("x.invalid", ".invalid"),
        ("mail.example", ".example"),
        ("relay.example.com", "RFC 2606"),
        ("nas.home.arpa", ".home.arpa"),
        ("192.0.2.10", "IP address"),
        ("2001:db8::1", "IP address"),
        ("[2001:db8::1]", "IP address"),
        ("bad_name.nl", "not a valid host name"),
    ],
)
def test_names_nobody_can_look_up_are_named_as_such(hostname: str, why: str) -> None:
    problem = hostname_problem(hostname)
    assert problem is not None and why in problem


@pytest.mark.parametrize("hostname", ["relay.zho.nl", "Relay.ZHO.nl.", "mail.examples.com"])
def test_public_names_pass(hostname: str) -> None:
    assert hostname_problem(hostname) is None


def test_spf_names_the_host_or_its_address() -> None:
    assert spf_mechanism("relay.zho.nl") == "a:relay.zho.nl"
    # RFC 7208 §7.1: a domain-spec's top label is not all digits; an address is ip4/ip6.
    assert spf_mechanism("192.0.2.10") == "ip4:192.0.2.10"
    assert spf_mechanism("2001:db8::1") == "ip6:2001:db8::1"


def test_sts_policy_id_is_one_rfc_8461_accepts() -> None:
    policy_id = sts_policy_id(1_796_658_330.0)  # 2026-12-07 15:45:30 UTC
    assert policy_id == "20261207T154530"
    record = parse_txt_record([f"v=STSv1; id={policy_id}"])
    assert record is not None and record.id == policy_id
