"""`secumail queue`: how much work waits before each stage."""

from __future__ import annotations

import argparse

from secumail.app import Services
from secumail.cli.output import emit
from secumail.cli.parsing import Subcommands, command
from secumail.pipeline.bounce_intake import DROPPED
from secumail.pipeline.scanning import UNAVAILABLE
from secumail.pipeline.test_address import DROPPED as TEST_DROPPED
from secumail.pipeline.tlsrpt_intake import DROPPED as TLSRPT_DROPPED


async def queue_show(sv: Services, args: argparse.Namespace) -> int:
    depths = await sv.bus.depths()
    stages = sv.settings.pipeline.stages
    data = {s: depths.get(s, 0) for s in stages} | {
        k: v for k, v in depths.items() if k not in stages
    }
    # Bounces the inbound MX dropped on purpose (forged address, unknown message, …).
    dropped = {k.removeprefix(DROPPED): v for k, v in (await sv.counters.all(DROPPED)).items()}
    # TLS reports (RFC 8460) it dropped: unreadable, over the size cap, not a report, …
    reports_dropped = {
        k.removeprefix(TLSRPT_DROPPED): v
        for k, v in (await sv.counters.all(TLSRPT_DROPPED)).items()
    }
    # Times a virus or spam scanner could not be asked (the messages waited).
    unavailable = {
        k.removeprefix(UNAVAILABLE): v for k, v in (await sv.counters.all(UNAVAILABLE)).items()
    }
    # Test messages it answered with no report: plaintext, unverified sender, rate limit, …
    tests_dropped = {
        k.removeprefix(TEST_DROPPED): v for k, v in (await sv.counters.all(TEST_DROPPED)).items()
    }
    text = "\n".join(f"{k:10} {v}" for k, v in data.items())
    if unavailable:
        text += "\nscanner unavailable: " + ", ".join(f"{k} {v}" for k, v in unavailable.items())
    if dropped:
        text += "\nbounces dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items())
    if reports_dropped:
        text += "\nTLS reports dropped: " + ", ".join(
            f"{k} {v}" for k, v in reports_dropped.items()
        )
    if tests_dropped:
        text += "\ntest messages not answered: " + ", ".join(
            f"{k} {v}" for k, v in tests_dropped.items()
        )
    emit(
        args.json,
        {
            "queues": data,
            "bound": sv.settings.bus.queue_bound,
            "bounces_dropped": dropped,
            "tls_reports_dropped": reports_dropped,
            "scanner_unavailable": unavailable,
            "test_address_dropped": tests_dropped,
        },
        text,
    )
    return 0


def register(sub: Subcommands) -> None:
    command(sub, "queue", "queue depth per stage")


COMMANDS = {("queue", None): queue_show}
