"""`secumail policy …` (TLS strategies per recipient domain or account) and
`secumail route …` (the downgrade memory and the MTA-STS policy cache)."""

from __future__ import annotations

import argparse
import logging
import time

from secumail.app import Services
from secumail.cli.audit import record
from secumail.cli.output import emit, when
from secumail.cli.parsing import Subcommands, actions, command
from secumail.errors import ConfigError, NotFound
from secumail.mail.address import AddressError, normalise_domain
from secumail.mail.secure_route import TLS_VERSIONS, Level, TlsStrategy
from secumail.pipeline.route_planner import strategy_of
from secumail.store.audit_chain import AuditKind
from secumail.store.routing import RoutingStore, TlsPolicyRow

log = logging.getLogger("secumail.policy")


def _scope(sv: Services, args: argparse.Namespace) -> tuple[str, str]:
    if bool(args.domain) == bool(args.account):
        raise ConfigError("give exactly one of --domain or --account")
    if args.domain:
        try:
            return "domain", normalise_domain(args.domain)
        except AddressError as exc:
            raise ConfigError(str(exc)) from exc
    return "account", args.account


async def policy_set(sv: Services, args: argparse.Namespace) -> int:
    scope, name = _scope(sv, args)
    if scope == "account":
        name = (await sv.store.get_account(name)).id
    routing = RoutingStore(sv.db)
    current = await routing.tls_policy(scope, name)
    base = strategy_of(current) or TlsStrategy()
    strategy = TlsStrategy(
        Level(args.dane) if args.dane else base.dane,
        Level(args.mta_sts) if args.mta_sts else base.mta_sts,
        Level(args.starttls) if args.starttls else base.starttls,
        args.min_tls or base.min_tls,
    )
    row = TlsPolicyRow(
        scope,
        name,
        strategy.dane,
        strategy.mta_sts,
        strategy.starttls,
        strategy.min_tls,
        time.time(),
    )
    await routing.put_tls_policy(row)
    await record(
        sv,
        AuditKind.POLICY_SET,
        f"{scope}:{name}",
        {"dane": row.dane, "mta_sts": row.mta_sts, "starttls": row.starttls, "min_tls": row.min_tls},
    )
    if strategy.relaxes:
        log.warning("TLS policy for %s %s relaxes STARTTLS to %s", scope, name, strategy.starttls)
    note = (
        "\nnote: STARTTLS below 'require' applies only to accounts with `--relaxed-tls on`"
        if strategy.relaxes
        else ""
    )
    emit(
        args.json,
        row,
        f"TLS policy for {scope} {name}: dane={row.dane} mta_sts={row.mta_sts} "
        f"starttls={row.starttls} min_tls={row.min_tls}{note}",
    )
    return 0


async def policy_list(sv: Services, args: argparse.Namespace) -> int:
    rows = await RoutingStore(sv.db).tls_policies()
    lines = [
        f"{r.scope:8} {r.name:30} dane={r.dane} mta_sts={r.mta_sts} starttls={r.starttls} "
        f"min_tls={r.min_tls}"
        for r in rows
    ]
    emit(
        args.json,
        rows,
        "\n".join(lines) or "no TLS policies: the strict default applies everywhere",
    )
    return 0


async def policy_delete(sv: Services, args: argparse.Namespace) -> int:
    scope, name = _scope(sv, args)
    if scope == "account":
        name = (await sv.store.get_account(name)).id
    if not await RoutingStore(sv.db).delete_tls_policy(scope, name):
        raise NotFound(f"no TLS policy for {scope} {name}")
    await record(sv, AuditKind.POLICY_REMOVED, f"{scope}:{name}")
    emit(args.json, {"deleted": [scope, name]}, f"TLS policy for {scope} {name} deleted")
    return 0


async def route_memory(sv: Services, args: argparse.Namespace) -> int:
    rows = await RoutingStore(sv.db).memories()
    lines = [
        f"{m.domain:30} {m.method:8} seen {when(m.seen_at)} until {when(m.expires_at)}"
        for m in rows
    ]
    emit(args.json, rows, "\n".join(lines) or "no remembered routes")
    return 0


async def route_forget(sv: Services, args: argparse.Namespace) -> int:
    domain = normalise_domain(args.domain)
    routing = RoutingStore(sv.db)
    forgot = await routing.forget_memory(domain)
    if args.mta_sts:
        await routing.forget_sts_policy(domain)
    log.warning("operator cleared the route memory of %s", domain)
    await record(
        sv, AuditKind.ROUTE_FORGOTTEN, domain, {"memory": forgot, "mta_sts": args.mta_sts}
    )
    emit(
        args.json,
        {"domain": domain, "forgotten": forgot, "mta_sts_forgotten": args.mta_sts},
        f"{domain}: route memory {'cleared' if forgot else 'was empty'}"
        + ("; cached MTA-STS policy dropped" if args.mta_sts else "")
        + " (a running gateway sees this within a minute)",
    )
    return 0


def register(sub: Subcommands) -> None:
    levels = [lv.value for lv in Level]
    pol = actions(sub, "policy", "TLS strategies per recipient domain or account")
    for name, helptext in (
        ("set", "set or change a TLS strategy"),
        ("delete", "remove a TLS strategy"),
    ):
        c = command(pol, name, helptext)
        c.add_argument("--domain", default=None, help="recipient domain")
        c.add_argument("--account", default=None, help="sending account")
        if name == "set":
            c.add_argument("--dane", choices=levels, default=None)
            c.add_argument("--mta-sts", dest="mta_sts", choices=levels, default=None)
            c.add_argument("--starttls", choices=levels, default=None)
            c.add_argument("--min-tls", dest="min_tls", choices=list(TLS_VERSIONS), default=None)
    command(pol, "list", "list TLS strategies")
    route = actions(sub, "route", "remembered routes (downgrade protection)")
    command(route, "memory", "domains whose strongest route is remembered")
    c = command(
        route,
        "forget",
        "clear a domain's route memory (after checking it lost DANE/MTA-STS on purpose)",
    )
    c.add_argument("domain")
    c.add_argument(
        "--mta-sts", dest="mta_sts", action="store_true", help="also drop its cached MTA-STS policy"
    )


COMMANDS = {
    ("policy", "set"): policy_set,
    ("policy", "list"): policy_list,
    ("policy", "delete"): policy_delete,
    ("route", "memory"): route_memory,
    ("route", "forget"): route_forget,
}
