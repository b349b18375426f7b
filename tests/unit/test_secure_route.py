"""The secure-route decision: what happened at each MX → the recipient domain's fate.

The promise: encrypted, authenticated delivery or none; RFC 5321 §5.1 (try each MX in
preference order), §4.5.4.1 (retry later after temporary failures). The route per MX
(`plan()`) is tested in test_route_decision.py.
"""

from __future__ import annotations

import pytest

from secumail.mail.secure_route import (
    DomainFate,
    MxOutcome,
    conclude,
)

T, INS, TMP, P = MxOutcome.TRANSACTION, MxOutcome.INSECURE, MxOutcome.TEMPORARY, MxOutcome.PERMANENT


@pytest.mark.parametrize(
    ("outcomes", "fate"),
    [
        # A secure transaction took place: the remote replies decide.
        ([T], DomainFate.TRANSACTION),
        ([INS, T], DomainFate.TRANSACTION),
        ([TMP, INS, T], DomainFate.TRANSACTION),
        ([P, T], DomainFate.TRANSACTION),
        # Every MX reached, none secure: refused at once, never retried in plaintext.
        ([INS], DomainFate.REFUSED_INSECURE),
        ([INS, INS, INS], DomainFate.REFUSED_INSECURE),
        # Some MX could not be judged: it may be secure next time, so retry.
        ([TMP], DomainFate.DEFERRED),
        ([INS, TMP], DomainFate.DEFERRED),
        ([TMP, INS], DomainFate.DEFERRED),
        ([TMP, P], DomainFate.DEFERRED),
        ([], DomainFate.DEFERRED),  # nothing tried yet
        # Every MX refused outright with 5xx: the message bounces.
        ([P], DomainFate.BOUNCED),
        ([P, P], DomainFate.BOUNCED),
    ],
)
def test_conclude(outcomes: list[MxOutcome], fate: DomainFate) -> None:
    assert conclude(outcomes) is fate


@pytest.mark.parametrize("outcomes", [[INS, P], [P, INS], [P, INS, INS]])
def test_insecure_and_permanent_is_a_final_failure(outcomes: list[MxOutcome]) -> None:
    # No MX offers a secure route and none will accept: final, not retried, not sent.
    assert conclude(outcomes) in (DomainFate.REFUSED_INSECURE, DomainFate.BOUNCED)


def test_order_does_not_matter() -> None:
    for outcomes in ([INS, TMP, P], [T, INS, P], [INS, INS, P]):
        assert conclude(outcomes) is conclude(list(reversed(outcomes)))
