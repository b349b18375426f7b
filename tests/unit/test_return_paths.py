"""Return paths on delivery (pipeline/domain_delivery.py `DomainDelivery._send`): one
transaction per recipient, each with its own bounce address (mail/verp.py), over one
connection; a notice keeps the null reverse-path (RFC 3461 §6.2) in one transaction; a
connection lost after some transactions leaves those delivered, the rest to retry."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from secumail.errors import ConnectError
from secumail.mail.reply import Reply
from secumail.mail.verp import bounce_address
from secumail.net.smtp_client import TransactionResult
from secumail.pipeline.domain_delivery import DomainDelivery, DomainReport, _DomainRun

KEY = b"v" * 32
HOST = "gw.example.test"
OK = Reply(250, "2.0.0", "queued")


class FakeConnection:
    def __init__(self, fail_at: int | None = None) -> None:
        self.transactions: list[tuple[str, list[str]]] = []
        self.fail_at = fail_at
        self.usable = True

    async def send(self, mail_from: str, recipients: list[str], data: bytes, **_: object) -> TransactionResult:
        if self.fail_at is not None and len(self.transactions) == self.fail_at:
            self.usable = False
            raise ConnectError("connection reset")
        self.transactions.append((mail_from, recipients))
        return TransactionResult(dict.fromkeys(recipients, OK), OK)


def run_send(
    conn: FakeConnection, mail_from: str, addresses: list[str], key: bytes | None = KEY
) -> tuple[TransactionResult, bool]:
    delivery = DomainDelivery(
        None, None, None, None, None,  # type: ignore[arg-type]  # _send uses none of them
        helo=HOST, memory_seconds=0, verp_key=key,
    )
    record = SimpleNamespace(id="06H54SZ2H2SB19PF", mail_from=mail_from, smtputf8=False, requiretls=False)
    run = _DomainRun(record, "clinic.test", None, addresses, b"body\r\n", DomainReport())  # type: ignore[arg-type]
    return asyncio.run(delivery._send(run, conn))  # type: ignore[arg-type]


def test_a_transaction_and_a_bounce_address_per_recipient() -> None:
    conn = FakeConnection()
    result, lost = run_send(conn, "alice@hospital.test", ["a@clinic.test", "b@clinic.test"])
    assert not lost and result.recipients == {"a@clinic.test": OK, "b@clinic.test": OK}
    assert conn.transactions == [
        (bounce_address(KEY, "06H54SZ2H2SB19PF", "a@clinic.test", HOST), ["a@clinic.test"]),
        (bounce_address(KEY, "06H54SZ2H2SB19PF", "b@clinic.test", HOST), ["b@clinic.test"]),
    ]


def test_a_notice_keeps_the_null_sender_in_one_transaction() -> None:
    conn = FakeConnection()
    run_send(conn, "", ["alice@hospital.test", "ict@hospital.test"])
    assert conn.transactions == [("", ["alice@hospital.test", "ict@hospital.test"])]


def test_connection_lost_after_the_first_transaction_defers_only_the_rest() -> None:
    conn = FakeConnection(fail_at=1)
    result, lost = run_send(conn, "alice@hospital.test", ["a@clinic.test", "b@clinic.test", "c@clinic.test"])
    assert lost
    assert result.recipients["a@clinic.test"] == OK
    assert {str(result.recipients[r])[:9] for r in ("b@clinic.test", "c@clinic.test")} == {"451 4.4.2"}


def test_connection_lost_before_any_transaction_raises() -> None:
    with pytest.raises(ConnectError):
        run_send(FakeConnection(fail_at=0), "alice@hospital.test", ["a@clinic.test", "b@clinic.test"])


def test_without_an_inbound_mx_the_senders_return_path_stays_one_transaction() -> None:
    """No `inbound.listen`: nothing would receive bounces at the gateway, so the return
    path stays the sender's own address (bounces reach the sender directly), and the
    recipients of a domain share one transaction, as before issue 14."""
    conn = FakeConnection()
    result, lost = run_send(conn, "alice@hospital.test", ["a@clinic.test", "b@clinic.test"], key=None)
    assert conn.transactions == [("alice@hospital.test", ["a@clinic.test", "b@clinic.test"])]
    assert not lost and set(result.recipients) == {"a@clinic.test", "b@clinic.test"}
