"""`secumail tlsrpt send`: send TLS reports (RFC 8460) now rather than at the daily run."""

from __future__ import annotations

import argparse
import time
from datetime import date, timedelta

from secumail.app import Services
from secumail.cli.output import emit
from secumail.cli.parsing import Subcommands, actions, command


async def tlsrpt_send(sv: Services, args: argparse.Namespace) -> int:
    reporter = sv.tls_reporter
    if args.day:
        day = time.strftime("%Y-%m-%d", time.gmtime()) if args.day == "today" else args.day
        tomorrow = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        pairs = [(d, dom) for d, dom in await sv.routing.report_days(tomorrow) if d == day]
        sent = [await reporter.send(d, dom) for d, dom in pairs]
    else:
        sent = await reporter.send_due()
    emit(
        args.json,
        [{"day": d, "domain": dom, "outcome": o} for d, dom, o in sent],
        "\n".join(f"{d} {dom}: {o}" for d, dom, o in sent) or "nothing to report",
    )
    return 0


def register(sub: Subcommands) -> None:
    t = actions(sub, "tlsrpt", "TLS reports (RFC 8460)")
    c = command(t, "send", "send due reports now (default: every finished day not yet reported)")
    c.add_argument("--day", default=None, help="YYYY-MM-DD or 'today' (a partial day)")


COMMANDS = {("tlsrpt", "send"): tlsrpt_send}
