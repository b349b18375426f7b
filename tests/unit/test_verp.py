"""Bounce addresses (mail/verp.py): per message and recipient, short enough for a local
part (RFC 5321 §4.5.3.1.1), unforgeable without the installation's key."""

from __future__ import annotations

import pytest

from secumail.mail.ids import new_message_id
from secumail.mail.verp import (
    bounce_address,
    domain_problem,
    parse_bounce_local,
    recipient_for,
    recipient_tag,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def test_a_bounce_address_names_its_message_and_recipient() -> None:
    mid = new_message_id()
    recipients = ["dr.jansen@kliniek.nl", "balie@kliniek.nl", "Jan@Example.ORG"]
    for r in recipients:
        address = bounce_address(KEY, mid, r, "gw.zho.nl")
        local, _, domain = address.rpartition("@")
        assert domain == "gw.zho.nl"
        assert len(local) <= 64
        parsed = parse_bounce_local(local)
        assert parsed is not None and parsed[0] == mid
        assert recipient_for(KEY, mid, parsed[1], recipients) == r


def test_the_case_of_the_local_part_may_change_on_the_way() -> None:
    mid = new_message_id()
    local = bounce_address(KEY, mid, "a@b.nl", "gw").split("@")[0]
    for variant in (local.upper(), local.lower()):
        parsed = parse_bounce_local(variant)
        assert parsed is not None and parsed[0] == mid
        assert recipient_for(KEY, mid, parsed[1], ["a@b.nl"]) == "a@b.nl"


def test_the_recipients_domain_case_does_not_matter_its_local_part_does() -> None:
    mid = new_message_id()
    assert recipient_tag(KEY, mid, "a@B.NL") == recipient_tag(KEY, mid, "a@b.nl")
    assert recipient_tag(KEY, mid, "A@b.nl") != recipient_tag(KEY, mid, "a@b.nl")


@pytest.mark.parametrize(
    "why",
    ["another key", "another message", "a flipped character", "another recipient"],
)
def test_a_forged_or_altered_address_matches_no_recipient(why: str) -> None:
    mid = new_message_id()
    tag = recipient_tag(KEY, mid, "a@b.nl")
    recipients = ["a@b.nl", "c@b.nl"]
    if why == "another key":
        tag = recipient_tag(OTHER_KEY, mid, "a@b.nl")
    elif why == "another message":
        tag = recipient_tag(KEY, new_message_id(now=1.0), "a@b.nl")
    elif why == "a flipped character":
        tag = ("b" if tag[0] != "b" else "c") + tag[1:]
    else:
        recipients = ["c@b.nl"]
    assert recipient_for(KEY, mid, tag, recipients) is None


@pytest.mark.parametrize(
    "local",
    [
        "postmaster",
        "bounce",
        "bounce+",
        "bounce+short",
        "bounce+" + "0" * 16 + "a" * 19,  # a character short
        "bounce+" + "0" * 16 + "a" * 21,  # a character long
        "bounce+" + "0" * 15 + "U" + "a" * 20,  # U is not Crockford base32
        "bounce+" + "0" * 16 + "a" * 19 + "1",  # 1 is not in the tag's alphabet
        "bounce+" + "0" * 16 + "a" * 19 + "\u0430",  # a Cyrillic a
        "xbounce+" + "0" * 16 + "a" * 20,
    ],
)
def test_what_is_not_a_bounce_address_is_told_apart(local: str) -> None:
    assert parse_bounce_local(local) is None


@pytest.mark.parametrize(
    ("hostname", "ok"),
    [
        ("gw.zho.nl", True),
        ("gw.secumail.test", True),
        ("GW.Zho.NL.", True),
        ("localhost", False),  # a single label: no mail domain
        ("gw_1.zho.nl", False),
        ("192.0.2.1", False),  # an address, not a domain
        ("", False),
    ],
)
def test_only_a_mail_domain_can_carry_bounce_addresses(hostname: str, ok: bool) -> None:
    assert (domain_problem(hostname) is None) is ok
