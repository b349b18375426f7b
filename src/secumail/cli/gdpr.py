"""`secumail gdpr …`: a person's records (export), their erasure, the retention purge."""

from __future__ import annotations

import argparse
import json
import time

from secumail.app import Services
from secumail.cli.audit import actor, record
from secumail.cli.output import emit
from secumail.cli.parsing import Subcommands, actions, command
from secumail.errors import ConfigError
from secumail.mail.address import AddressError, parse_address
from secumail.store.audit_chain import AuditKind


def person(text: str) -> str:
    """The address a GDPR request is about, normalised as the store keeps it."""
    try:
        return str(parse_address(text.strip(), utf8=not text.isascii())).lower()
    except AddressError as exc:
        raise ConfigError(f"--address: {exc}") from exc


async def gdpr_export(sv: Services, args: argparse.Namespace) -> int:
    address = person(args.address)
    tables = await sv.personal_data.export(address)
    counts = {t: len(rows) for t, rows in tables.items() if rows}
    await record(sv, AuditKind.GDPR_EXPORTED, address, {"records": counts})
    doc = {"address": address, "exported_at": time.time(), "records": tables}
    emit(True, doc, json.dumps(doc))  # JSON either way: it is handed to the person
    return 0


async def gdpr_erase(sv: Services, args: argparse.Namespace) -> int:
    address = person(args.address)
    report = await sv.personal_data.erase(address, actor())
    data = {
        "pseudonym": report.pseudonym,
        "removed": report.removed,
        "pseudonymised": report.pseudonymised,
        "audit_seq": report.audit.seq if report.audit else None,
        "wal_cleared": report.wal_cleared,
    }
    lines = [f"erased {address}: now {report.pseudonym}"]
    lines += [f"  {t}: {n} removed" for t, n in report.removed.items()]
    lines += [f"  {t}: {n} pseudonymised" for t, n in report.pseudonymised.items()]
    if not (report.removed or report.pseudonymised):
        lines.append("  no records named this address")
    if not report.wal_cleared:
        lines.append(
            "  warning: the WAL file could not be truncated (busy); old pages may stay in it"
            " until the next checkpoint: run the erasure again to retry"
        )
    emit(args.json, data, "\n".join(lines))
    return 0


async def gdpr_purge(sv: Services, args: argparse.Namespace) -> int:
    done = await sv.purge_expired(actor())
    emit(
        args.json,
        done,
        f"retention purge: {done['messages']} finished messages ({done['recipients']} recipients),"
        f" {done['webhook_deliveries']} webhook deliveries, {done['account_events']} account events,"
        f" {done['idempotency_keys']} idempotency records removed",
    )
    return 0


def register(sub: Subcommands) -> None:
    gdpr = actions(sub, "gdpr", "GDPR: a person's records, erasure, retention")
    c = command(gdpr, "export", "print (JSON) every record naming an address (right of access)")
    c.add_argument("--address", required=True)
    c = command(gdpr, "erase", "remove or pseudonymise every record naming an address (erasure)")
    c.add_argument("--address", required=True)
    command(gdpr, "purge", "remove finished messages' metadata past their retention now")


COMMANDS = {
    ("gdpr", "export"): gdpr_export,
    ("gdpr", "erase"): gdpr_erase,
    ("gdpr", "purge"): gdpr_purge,
}
