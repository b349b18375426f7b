"""Closed network (README, "Onboarding"): a sender outside the account's verified domains is
refused with 550 5.7.1 — and told which of two things is wrong: the domain is the
account's but not verified yet (fixable: publish the TXT record, verify), or it is not
the account's at all (another account's domain reads the same as an unknown one)."""

from __future__ import annotations

import asyncio

import pytest

from secumail.mail.address import parse_address
from secumail.pipeline.acceptance import MessageAcceptor, Refusal
from secumail.store.database import Database
from secumail.store.metadata import MetadataStore
from secumail.store.suppressions import SuppressionStore


def refusal(acceptor: MessageAcceptor, account_id: str, sender: str) -> Refusal | None:
    try:
        asyncio.run(acceptor.check_sender(account_id, parse_address(sender)))
    except Refusal as r:
        return r
    return None


@pytest.fixture
def setup(gateway_db: Database) -> tuple[MessageAcceptor, str]:
    store = MetadataStore(gateway_db)

    async def populate() -> str:
        mine = (await store.create_account("Clinic", locale="en", notify_address=None)).id
        other = (await store.create_account("School", locale="en", notify_address=None)).id
        for account, domain in [(mine, "clinic.test"), (mine, "new.test"), (other, "school.test"),
                                (other, "school-new.test")]:
            await store.add_domain(account, domain)
        await store.mark_domain_verified("clinic.test")
        await store.mark_domain_verified("school.test")
        return mine

    mine = asyncio.run(populate())
    acceptor = MessageAcceptor(
        store, None, SuppressionStore(gateway_db),  # type: ignore[arg-type]
        hostname="gw.test", max_message_size=1 << 20, max_recipients=10,
    )
    return acceptor, mine


def test_verified_domain_sends(setup: tuple[MessageAcceptor, str]) -> None:
    acceptor, mine = setup
    assert refusal(acceptor, mine, "alice@clinic.test") is None


def test_added_but_unverified_domain_says_how_to_verify(setup: tuple[MessageAcceptor, str]) -> None:
    acceptor, mine = setup
    r = refusal(acceptor, mine, "alice@new.test")
    assert r is not None and (r.code, r.enhanced, r.http, r.field) == (550, "5.7.1", 403, "from")
    assert r.text == (
        "Sender domain new.test is added to your account but not verified yet: publish its "
        "_secumail TXT record and run `secumail domain verify new.test`"
    )


@pytest.mark.parametrize("sender", ["bob@school.test", "bob@school-new.test", "x@nowhere.test"])
def test_a_domain_not_of_the_account_says_so_and_no_more(
    setup: tuple[MessageAcceptor, str], sender: str
) -> None:
    acceptor, mine = setup
    r = refusal(acceptor, mine, sender)
    domain = sender.split("@")[1]
    assert r is not None and (r.code, r.enhanced, r.http) == (550, "5.7.1", 403)
    assert r.text == f"Sender domain {domain} is not a domain of your account"
    assert "verif" not in r.text, "another account's (unverified) domain is not told apart"
