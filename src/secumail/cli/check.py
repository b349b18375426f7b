"""`secumail check ADDRESS|DOMAIN…`: would Secumail reach these recipients securely?"""

from __future__ import annotations

import argparse
import sys

from secumail.app import Services
from secumail.cli.output import emit
from secumail.cli.parsing import Subcommands, command
from secumail.pipeline.preflight import CheckResult, MxProbe


def _bar(done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _mark(ok: object) -> str:
    return "✓" if ok else "✗"


def _probe_lines(p: MxProbe) -> list[str]:
    where = f"{p.host} [{p.ip}]" if p.ip else p.host
    if p.route is None:
        return [f"  ✗ MX {where}: {p.reason}"]
    head = f"  {_mark(p.ok)} MX {where} via {p.route}"
    head += f": {p.tls_version} {p.cipher}" if p.tls_version else ""
    lines = [head if p.ok else f"{head} — {p.reason}"]
    if p.matched:
        lines.append(f"      authenticated by {p.matched}")
    if p.certificate is not None:
        c = p.certificate
        lines.append(
            f"      certificate {c.subject}, expires {c.not_after}{' (EXPIRED)' if c.expired else ''}, "
            f"names {', '.join(c.names) or '-'} {_mark(c.name_match)} name match"
            + ("" if p.chain_valid is None else f", {_mark(p.chain_valid)} verified")
        )
    dnssec = p.dnssec
    if dnssec:
        lines.append(
            f"      DNSSEC: address {_mark(dnssec.get('address'))}  TLSA {_mark(dnssec.get('tlsa'))}"
            f" ({dnssec.get('tlsa_records', 0)} record(s))   REQUIRETLS {'yes' if p.requiretls else 'no'}"
        )
    return lines


def human(r: CheckResult) -> str:
    verdict = f"✓ secure ({r.method})" if r.secure else "✗ NOT secure: mail would not be delivered"
    lines = [f"{r.target}: {verdict}"]
    if r.domain:
        sts = r.mta_sts or {}
        lines.append(
            f"  DNSSEC MX {_mark((r.dnssec or {}).get('mx'))}   MTA-STS "
            + (f"{sts.get('mode')} (id {sts.get('policy_id')})" if sts.get("mode") else "none")
        )
    for probe in r.mx:
        lines += _probe_lines(probe)
    if not r.secure:
        lines += [f"  reason: {why}" for why in dict.fromkeys(r.reasons)]
    return "\n".join(lines)


async def check(sv: Services, args: argparse.Namespace) -> int:
    account = await sv.store.get_account(args.account) if args.account else None
    progress = _bar if (len(args.targets) > 1 and not args.json and sys.stderr.isatty()) else None
    try:
        results = await sv.preflight.check_many(args.targets, account, progress=progress)
    finally:
        await sv.connector.close()
    emit(args.json, [r.to_dict() for r in results], "\n\n".join(human(r) for r in results))
    return 0 if all(r.secure for r in results) else 3


def register(sub: Subcommands) -> None:
    c = command(
        sub, "check", "can these recipients be reached securely? (live probe; exit 3 when not all)"
    )
    c.add_argument("targets", nargs="+", metavar="ADDRESS|DOMAIN")
    c.add_argument("--account", default=None, help="apply this account's TLS strategy")


COMMANDS = {("check", None): check}
