"""`secumail message show`: what the gateway knows of one message."""

from __future__ import annotations

import argparse

from secumail.app import Services
from secumail.cli.output import emit, when
from secumail.cli.parsing import Subcommands, actions, command


async def message_show(sv: Services, args: argparse.Namespace) -> int:
    m = await sv.store.message(args.id)
    lines = [
        f"message {m.id}",
        f"  from:     {m.mail_from or '<>'}" + (f" (notice about {m.dsn_of})" if m.dsn_of else ""),
        f"  size:     {m.size} octets",
        f"  received: {when(m.created_at)}",
        f"  finished: {when(m.finished_at)}",
    ]
    if m.subject is not None:
        lines.append(f"  subject:  {m.subject}")
    lines.append("  recipients:")
    lines += [f"    {r.address:40} {r.status.value:17} {r.reply or ''}" for r in m.recipients]
    lines.append("  events:")
    for e in m.events:
        detail = "; ".join(f"{k}={v}" for k, v in e.detail.items())
        lines.append(f"    {when(e.at)} {e.kind:17} {e.recipient or ''} {detail}")
    if m.attempts:
        lines.append("  attempts:")
        for a in m.attempts:
            lines.append(
                f"    {when(a.at)} {a.domain} via {a.mx} [{a.ip}] {a.route_method or ''} "
                f"{a.tls_version or ''} {a.cipher or ''} {a.outcome}: {a.reply or ''}"
            )
    emit(args.json, m, "\n".join(lines))
    return 0


def register(sub: Subcommands) -> None:
    message = actions(sub, "message", "messages")
    c = command(message, "show", "metadata, per-recipient status and events of a message")
    c.add_argument("id")


COMMANDS = {("message", "show"): message_show}
