"""`secumail audit …`: read and verify the audit log; `record` for the other commands."""

from __future__ import annotations

import argparse
import getpass
import re
import time
from datetime import datetime
from typing import Any

from secumail.app import Services
from secumail.cli.output import emit, when
from secumail.cli.parsing import Subcommands, actions, command
from secumail.errors import ConfigError
from secumail.store.audit_chain import AuditEntry, AuditKind


def actor() -> str:
    """Who runs this command: `cli:<login name>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


async def record(
    sv: Services, kind: AuditKind, subject: str, detail: dict[str, Any] | None = None
) -> AuditEntry:
    """The command's change in the audit log (right after the change itself)."""
    return await sv.audit.record(actor(), kind, subject, detail)


_RELATIVE = re.compile(r"^(\d+)([smhd])$")


def parse_since(text: str, now: float | None = None) -> float:
    """`7d`, `12h`, `30m`, `45s` ago, or an ISO 8601 date or date-time (local time unless
    it carries an offset)."""
    now = time.time() if now is None else now
    m = _RELATIVE.match(text.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now - int(m.group(1)) * unit
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError as exc:
        raise ConfigError(
            f"--since {text!r}: give a date (2026-12-01), a date-time or a span like 7d, 12h"
        ) from exc


def _line(e: AuditEntry) -> str:
    detail = " ".join(f"{k}={v}" for k, v in e.detail.items())
    return f"{e.seq:>6} {when(e.at)} {e.actor:24} {e.kind:20} {e.subject} {detail}".rstrip()


def _plain(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at,
        "actor": e.actor,
        "kind": e.kind,
        "subject": e.subject,
        "detail": e.detail,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


async def audit_list(sv: Services, args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    entries = await sv.audit.entries(since=since, kinds=tuple(args.kind or ()), limit=args.limit)
    emit(args.json, [_plain(e) for e in entries], "\n".join(map(_line, entries)) or "no entries")
    return 0


def _head(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    seq, _, value = text.partition(":")
    if not seq.isdigit() or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ConfigError(f"--head {text!r}: give SEQ:HASH as `audit verify` printed it")
    return int(seq), value


async def audit_verify(sv: Services, args: argparse.Namespace) -> int:
    """Exit 0 when the chain is intact; 1 with the first broken sequence number."""
    report = await sv.audit.verify(_head(args.head))
    data = {
        "intact": report.intact,
        "entries": report.entries,
        "head": {"seq": report.head_seq, "hash": report.head_hash},
        "erased_subjects": report.erased,
        "broken_seq": report.broken_seq,
        "reason": report.reason,
    }
    if report.intact:
        human = (
            f"✓ audit log intact: {report.entries} entries"
            + (f" ({report.erased} with erased subjects)" if report.erased else "")
            + f"\n  head {report.head_seq}:{report.head_hash}"
            + "\n  note the head elsewhere; `audit verify --head SEQ:HASH` checks against it later"
        )
    else:
        human = f"✗ audit log broken at entry {report.broken_seq}: {report.reason}"
    emit(args.json, data, human)
    return 0 if report.intact else 1


def register(sub: Subcommands) -> None:
    audit = actions(sub, "audit", "the audit log (hash-chained)")
    c = command(audit, "list", "administrative and security events, oldest first")
    c.add_argument("--since", default=None, help="7d, 12h, or an ISO date/date-time")
    c.add_argument(
        "--kind", action="append", choices=[k.value for k in AuditKind], help="repeatable"
    )
    c.add_argument("--limit", type=int, default=None, metavar="N", help="only the newest N")
    c = command(audit, "verify", "check the hash chain (exit 0 only when intact)")
    c.add_argument(
        "--head", default=None, metavar="SEQ:HASH", help="a head noted earlier: it must still be there"
    )


COMMANDS = {
    ("audit", "list"): audit_list,
    ("audit", "verify"): audit_verify,
}
