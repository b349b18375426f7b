"""`secumail domain …`: sender domains, the DNS records they publish, DKIM keys."""

from __future__ import annotations

import argparse
import secrets

from secumail.app import Services
from secumail.cli.output import emit, when
from secumail.errors import ConfigError, NotFound
from secumail.mail.address import AddressError, normalise_domain

VERIFY_LABEL = "_secumail"
VERIFY_PREFIX = "secumail-verification="


def _domain_arg(text: str) -> str:
    try:
        return normalise_domain(text)
    except AddressError as exc:
        raise ConfigError(str(exc)) from exc


async def _records(sv: Services, domain: str, token: str | None) -> list[dict]:
    """Every DNS record the customer publishes for `domain`, required ones first."""
    host = sv.settings.server.hostname
    out = []
    if token is not None:
        out.append(
            {
                "name": f"{VERIFY_LABEL}.{domain}",
                "type": "TXT",
                "value": f"{VERIFY_PREFIX}{token}",
                "purpose": "proves you control the domain",
                "required": True,
            }
        )
    for r in await sv.keyring.records(domain):
        if r.retired:
            continue
        kind = "RSA-2048" if r.algorithm.startswith("rsa") else "Ed25519 (RFC 8463)"
        out.append(
            {
                "name": r.name,
                "type": "TXT",
                "value": r.value,
                "required": True,
                "purpose": f"DKIM {kind} public key, selector {r.selector}"
                + (" (published)" if r.published else ""),
            }
        )
    out += [
        {
            "name": domain,
            "type": "TXT",
            "value": f"v=spf1 a:{host} ~all",
            "required": False,
            "purpose": f"SPF: allow {host} to send for the domain (merge with your existing record)",
        },
        {
            "name": f"_dmarc.{domain}",
            "type": "TXT",
            "value": f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{domain}",
            "required": False,
            "purpose": "DMARC: receivers act on failed DKIM/SPF (start with p=none to observe)",
        },
        {
            "name": f"_mta-sts.{domain}",
            "type": "TXT",
            "value": "v=STSv1; id=<date of your policy>",
            "required": False,
            "purpose": "MTA-STS for your own inbound mail (RFC 8461), with a policy at "
            f"https://mta-sts.{domain}/.well-known/mta-sts.txt",
        },
        {
            "name": f"_smtp._tls.{domain}",
            "type": "TXT",
            "value": f"v=TLSRPTv1; rua=mailto:tls-reports@{domain}",
            "required": False,
            "purpose": "TLS reporting for your own inbound mail (RFC 8460)",
        },
    ]
    return out


def _human(records: list[dict]) -> str:
    lines = []
    for r in records:
        flag = "required" if r["required"] else "recommended"
        lines.append(
            f'  {r["name"]}. IN {r["type"]} "{r["value"]}"\n      ({flag}: {r["purpose"]})'
        )
    return "\n".join(lines)


async def domain_add(sv: Services, args: argparse.Namespace) -> int:
    account = await sv.store.get_account(args.account)
    name = _domain_arg(args.domain)
    domain = await sv.store.add_domain(account.id, name)
    await sv.keyring.ensure_keys(name)
    records = await _records(sv, name, domain.token)
    emit(
        args.json,
        {"domain": name, "account": account.id, "verified": domain.verified, "records": records},
        f"domain {name} added to account {account.name}; publish these DNS records:\n"
        f"{_human(records)}\nthen run: secumail domain verify {name}",
    )
    return 0


async def domain_records(sv: Services, args: argparse.Namespace) -> int:
    name = _domain_arg(args.domain)
    token = None
    try:
        token = (await sv.store.get_domain(name)).token
    except NotFound:
        if name != sv.settings.gateway_domain:
            raise
    records = await _records(sv, name, token)
    emit(
        args.json,
        {"domain": name, "records": records},
        f"DNS records for {name}:\n{_human(records)}",
    )
    return 0


async def domain_verify(sv: Services, args: argparse.Namespace) -> int:
    """Ownership TXT (required to send) and each DKIM key (required to be signed with)."""
    name = _domain_arg(args.domain)
    checks = []
    owned = True
    try:
        domain = await sv.store.get_domain(name)
    except NotFound:
        if name != sv.settings.gateway_domain:
            raise
        domain = None
    if domain is not None:
        expected = f"{VERIFY_PREFIX}{domain.token}"
        found = await sv.resolver.txt(f"{VERIFY_LABEL}.{name}")
        owned = any(secrets.compare_digest(t.strip(), expected) for t in found)
        if owned:
            await sv.store.mark_domain_verified(name)
        checks.append(
            {
                "record": f"{VERIFY_LABEL}.{name}",
                "what": "ownership",
                "ok": owned,
                "expected": expected,
                "found": found,
            }
        )
    for record, ok, found in await sv.keyring.check_published(name, sv.resolver.txt):
        checks.append(
            {
                "record": record.name,
                "what": f"DKIM {record.algorithm}",
                "ok": ok,
                "expected": record.value,
                "found": found,
            }
        )
    dkim_ok = any(c["ok"] for c in checks if c["what"].startswith("DKIM"))
    verified = owned or (domain is not None and domain.verified)
    lines = [
        f"{'✓' if c['ok'] else '✗'} {c['what']}: {c['record']}"
        + ("" if c["ok"] else f' should be "{c["expected"]}", found {c["found"] or "nothing"}')
        for c in checks
    ]
    if not dkim_ok:
        lines.append(
            "  messages from this domain are not signed (and not sent) until a DKIM key is published"
        )
    emit(
        args.json,
        {"domain": name, "verified": verified, "dkim_published": dkim_ok, "checks": checks},
        "\n".join(lines),
    )
    return 0 if owned and dkim_ok else 2


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
    records = [
        {
            "name": r.name,
            "type": "TXT",
            "value": r.value,
            "selector": r.selector,
            "algorithm": r.algorithm,
        }
        for r in made
    ]
    emit(
        args.json,
        {"domain": name, "new_keys": records},
        f"new DKIM keys for {name}; publish, then run `secumail domain verify {name}`:\n"
        + "\n".join(f'  {r["name"]}. IN TXT "{r["value"]}"' for r in records)
        + "\nthe current keys keep signing until the new ones are published; retire them after.",
    )
    return 0


async def domain_retire_dkim(sv: Services, args: argparse.Namespace) -> int:
    name = _domain_arg(args.domain)
    if not await sv.keyring.retire(name, args.selector):
        raise NotFound(f"no DKIM key {args.selector} for {name}")
    emit(
        args.json,
        {"domain": name, "retired": args.selector},
        f"DKIM key {args.selector} of {name} retired: it signs no more; remove its DNS record later",
    )
    return 0


COMMANDS = {
    ("domain", "add"): domain_add,
    ("domain", "records"): domain_records,
    ("domain", "verify"): domain_verify,
    ("domain", "list"): domain_list,
    ("domain", "rotate-dkim"): domain_rotate_dkim,
    ("domain", "retire-dkim"): domain_retire_dkim,
}
