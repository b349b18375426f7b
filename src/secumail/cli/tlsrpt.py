"""`secumail tlsrpt send`: send TLS reports (RFC 8460) now rather than at the daily run;
`secumail tlsrpt received`: the reports other MTAs sent to the gateway's own domain."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import date, timedelta
from typing import Any

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


TOP_RESULT_TYPES = 3


def received_row(report: dict[str, Any]) -> dict[str, Any]:
    """One line of `tlsrpt received` per policy: counts and the commonest failures."""
    rows = []
    for p in report["policies"]:
        kinds: Counter[str] = Counter()
        for f in p["failures"]:
            kinds[f["result_type"]] += f["failed_sessions"]
        rows.append(
            {
                "policy_domain": p["policy_domain"],
                "policy_type": p["policy_type"],
                "successful": p["successful"],
                "failed": p["failed"],
                "top_failures": [
                    {"result_type": k, "sessions": n}
                    for k, n in kinds.most_common(TOP_RESULT_TYPES)
                ],
            }
        )
    return {k: report[k] for k in ("start", "end", "organization", "report_id")} | {
        "received_at": report["received_at"],
        "policies": rows,
    }


async def tlsrpt_received(sv: Services, args: argparse.Namespace) -> int:
    reports = [received_row(r.as_dict()) for r in await sv.tls_reports_received.recent(args.days)]
    lines = []
    for r in reports:
        for p in r["policies"] or [{}]:
            top = ", ".join(
                f"{t['result_type']} {t['sessions']}" for t in p.get("top_failures", [])
            )
            lines.append(
                f"{r['start'][:10]}..{r['end'][:10]} {r['organization']}: "
                + (
                    f"{p['policy_domain']} {p['policy_type']} ok {p['successful']}"
                    f" failed {p['failed']}" + (f" ({top})" if top else "")
                    if p
                    else "no policies"
                )
            )
    emit(
        args.json,
        reports,
        "\n".join(lines) or f"no TLS reports received in the last {args.days:g} days",
    )
    return 0


def register(sub: Subcommands) -> None:
    t = actions(sub, "tlsrpt", "TLS reports (RFC 8460)")
    c = command(t, "send", "send due reports now (default: every finished day not yet reported)")
    c.add_argument("--day", default=None, help="YYYY-MM-DD or 'today' (a partial day)")
    r = command(t, "received", "TLS reports other MTAs sent to this gateway, newest first")
    r.add_argument("--days", type=float, default=30.0, help="reports ending in the last N days")


COMMANDS = {("tlsrpt", "send"): tlsrpt_send, ("tlsrpt", "received"): tlsrpt_received}
