"""`secumail domain …`: sender domains, the DNS records they publish, DKIM keys."""

from __future__ import annotations

import argparse
import contextlib
import os

from secumail.app import Services
from secumail.cli.audit import record
from secumail.cli.output import emit, warn, when
from secumail.cli.parsing import Subcommands, actions, command
from secumail.errors import ConfigError, NotFound
from secumail.mail.address import AddressError, normalise_domain
from secumail.mail.dns_records import txt_rdata, zone_line
from secumail.mail.domain_health import HealthReport, Status, advice, title
from secumail.pipeline.account_alerts import AlertKind
from secumail.store.audit_chain import AuditKind


def _domain_arg(text: str) -> str:
    try:
        return normalise_domain(text)
    except AddressError as exc:
        raise ConfigError(str(exc)) from exc


def _human(records: list[dict[str, object]]) -> str:
    """Each record twice: the fields a DNS provider's web form asks for (the value in one
    piece) and a zone-file line (the value split into quoted strings of ≤255 octets)."""
    blocks = []
    for r in records:
        flag = "required" if r["required"] else "recommended"
        blocks.append(
            f"  {flag}: {r['purpose']}\n"
            f"    name:  {r['name']}\n"
            f"    type:  {r['type']}\n"
            f"    value: {r['value']}\n"
            f"    zone file line:\n"
            f"      {r['zone']}"
        )
    return "\n\n".join(blocks)


def _hostname_warnings(sv: Services, args: argparse.Namespace, domain: str) -> list[str]:
    """A loud word when the records name a gateway host nobody can look up."""
    problem = sv.domains.hostname_problem()
    if problem is None:
        return []
    config = args.config or os.environ.get("SECUMAIL_CONFIG") or "secumail.toml"
    return [
        f"server.hostname is {sv.settings.server.hostname!r}, which is not a public DNS name "
        f"({problem}): receivers cannot look it up, so the SPF record names no sending host "
        "and mail servers cannot verify the gateway's certificate. Set this gateway's public "
        f'name, e.g. hostname = "relay.example.nl" under [server] in {config} (or '
        "SECUMAIL_SERVER__HOSTNAME=relay.example.nl), then run "
        f"`secumail domain records {domain}` again."
    ]


async def domain_add(sv: Services, args: argparse.Namespace) -> int:
    account = await sv.store.get_account(args.account)
    name = _domain_arg(args.domain)
    domain, records = await sv.domains.add(account.id, name)
    await record(sv, AuditKind.DOMAIN_ADDED, name, {"account": account.id})
    warnings = _hostname_warnings(sv, args, name)
    emit(
        args.json,
        {
            "domain": name,
            "account": account.id,
            "verified": domain.verified,
            "records": records,
            "warnings": warnings,
        },
        f"domain {name} added to account {account.name}; publish these DNS records:\n\n"
        f"{_human(records)}\n\nthen run: secumail domain verify {name}",
    )
    warn(warnings)
    return 0


async def domain_records(sv: Services, args: argparse.Namespace) -> int:
    name = _domain_arg(args.domain)
    token = None
    try:
        token = (await sv.store.get_domain(name)).token
    except NotFound:
        if name != sv.settings.gateway_domain:
            raise
    records = await sv.domains.records(name, token)
    warnings = _hostname_warnings(sv, args, name)
    emit(
        args.json,
        {"domain": name, "records": records, "warnings": warnings},
        f"DNS records for {name}:\n\n{_human(records)}",
    )
    warn(warnings)
    return 0


async def domain_verify(sv: Services, args: argparse.Namespace) -> int:
    """Ownership TXT (required to send) and each DKIM key (required to be signed with)."""
    result = await sv.domains.verify(_domain_arg(args.domain))
    await record(
        sv,
        AuditKind.DOMAIN_VERIFIED,
        result.domain,
        {"owned": result.owned, "dkim_published": result.dkim_published},
    )
    # The same records as the daily health check, DNS only: raises or resolves the
    # domain's `domain_dns_error` alert, once (not for the gateway's own domain: NotFound).
    with contextlib.suppress(NotFound):
        await sv.domain_health.check(result.domain, inbound=False)
    lines = [
        f"{'✓' if c['ok'] else '✗'} {c['what']}: {c['record']}"
        + ("" if c["ok"] else f' should be "{c["expected"]}", found {c["found"] or "nothing"}')
        for c in result.checks
    ]
    if not result.dkim_published:
        lines.append(
            "  messages from this domain are not signed (and not sent) until a DKIM key is published"
        )
    emit(
        args.json,
        {
            "domain": result.domain,
            "verified": result.verified,
            "dkim_published": result.dkim_published,
            "checks": result.checks,
        },
        "\n".join(lines),
    )
    return 0 if result.owned and result.dkim_published else 2


_MARK = {Status.OK: "✓", Status.WARN: "!", Status.FAIL: "✗", Status.INFO: "i"}


def health_lines(report: HealthReport, locale: str) -> list[str]:
    """The report for a terminal: one line per check, the fix under each that needs one."""
    lines = [f"health of {report.domain}: {report.status}, checked {when(report.checked_at)}"]
    for part, heading in (
        ("sending", "sending (Secumail relies on these)"),
        ("inbound", "your own inbound mail (internet.nl's mail test)"),
    ):
        lines += ["", heading]
        for c in report.checks:
            if str(c.part) != part:
                continue
            flag = " [alert]" if report.alerting(c) else ""
            found = f": {c.found}" if c.found else ""
            lines.append(f"  {_MARK[c.status]} {title(c, locale)} ({c.record}){found}{flag}")
            fix = advice(c, report.domain, locale)
            if fix:
                lines.append(f"      → {fix}")
    return lines


async def domain_show(sv: Services, args: argparse.Namespace) -> int:
    """The domain's health report: the last one the gateway made, or a new one (`--now`,
    or when none was made yet). Exit 2 when a sending record is broken."""
    name = _domain_arg(args.domain)
    domain = await sv.store.get_domain(name)
    account = await sv.store.get_account(domain.account_id)
    report = None if args.now else await sv.domain_health.last(name)
    if report is None:
        try:
            report = await sv.domain_health.check(name)
        finally:
            await sv.connector.close()  # the probe's connections to the domain's MX servers
    open_alerts = await sv.account_alerts.open(account.id, str(AlertKind.DOMAIN_DNS))
    alert_open = any(a.about == name for a in open_alerts)
    data = {
        "domain": name,
        "account": account.id,
        "verified": domain.verified,
        "verified_at": domain.verified_at,
        "alert_open": alert_open,
        "health": report.to_dict(),
    }
    lines = health_lines(report, args.lang or account.locale)
    if alert_open:
        lines.append(f"\nthe domain_dns_error alert about {name} is open (told once; told again when fixed)")
    emit(args.json, data, "\n".join(lines))
    return 2 if report.problems else 0


async def domain_list(sv: Services, args: argparse.Namespace) -> int:
    account_id = (await sv.store.get_account(args.account)).id if args.account else None
    domains = await sv.store.list_domains(account_id)
    lines = [f"{d.name}  account={d.account_id}  verified={when(d.verified_at)}" for d in domains]
    data = [
        {
            "name": d.name,
            "account_id": d.account_id,
            "verified": d.verified,
            "verified_at": d.verified_at,
        }
        for d in domains
    ]
    emit(args.json, data, "\n".join(lines) or "no domains")
    return 0


async def domain_rotate_dkim(sv: Services, args: argparse.Namespace) -> int:
    name = _domain_arg(args.domain)
    made = await sv.keyring.create_keys(name)
    await record(sv, AuditKind.DKIM_ROTATED, name, {"selectors": [r.selector for r in made]})
    records = [
        {
            "name": r.name,
            "type": "TXT",
            "value": r.value,
            "rdata": txt_rdata(r.value),
            "zone": zone_line(r.name, "TXT", r.value),
            "selector": r.selector,
            "algorithm": r.algorithm,
        }
        for r in made
    ]
    emit(
        args.json,
        {"domain": name, "new_keys": records},
        f"new DKIM keys for {name}; publish, then run `secumail domain verify {name}`:\n\n"
        + _human(
            [
                {**r, "required": True, "purpose": f"DKIM {r['algorithm']} key {r['selector']}"}
                for r in records
            ]
        )
        + "\n\nthe current keys keep signing until the new ones are published; retire them after.",
    )
    return 0


async def domain_retire_dkim(sv: Services, args: argparse.Namespace) -> int:
    name = _domain_arg(args.domain)
    if not await sv.keyring.retire(name, args.selector):
        raise NotFound(f"no DKIM key {args.selector} for {name}")
    await record(sv, AuditKind.DKIM_RETIRED, name, {"selector": args.selector})
    emit(
        args.json,
        {"domain": name, "retired": args.selector},
        f"DKIM key {args.selector} of {name} retired: it signs no more; remove its DNS record later",
    )
    return 0


def register(sub: Subcommands) -> None:
    domain = actions(sub, "domain", "sender domains")
    c = command(domain, "add", "add a domain to an account; prints the DNS records to publish")
    c.add_argument("account")
    c.add_argument("domain")
    c = command(domain, "verify", "check the DNS records and mark the domain verified")
    c.add_argument("domain")
    c = command(domain, "show", "the domain's health report: DNS records and its own MX servers")
    c.add_argument("domain")
    c.add_argument(
        "--now", action="store_true", help="check now instead of showing the last report"
    )
    c.add_argument(
        "--lang",
        choices=["en", "nl"],
        default=None,
        help="language of the fixes (default: the account's)",
    )
    c = command(domain, "list", "list domains")
    c.add_argument("--account", default=None)
    c = command(domain, "records", "the DNS records to publish for a domain")
    c.add_argument("domain")
    c = command(
        domain, "rotate-dkim", "new DKIM keys (dated selectors); old ones stay valid until retired"
    )
    c.add_argument("domain")
    c = command(domain, "retire-dkim", "stop signing with a DKIM key")
    c.add_argument("domain")
    c.add_argument("selector")


COMMANDS = {
    ("domain", "add"): domain_add,
    ("domain", "records"): domain_records,
    ("domain", "verify"): domain_verify,
    ("domain", "show"): domain_show,
    ("domain", "list"): domain_list,
    ("domain", "rotate-dkim"): domain_rotate_dkim,
    ("domain", "retire-dkim"): domain_retire_dkim,
}
