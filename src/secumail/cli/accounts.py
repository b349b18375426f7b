"""`secumail account …`: customer accounts and their settings."""

from __future__ import annotations

import argparse

from secumail.app import Services
from secumail.cli.audit import record
from secumail.cli.output import emit, when
from secumail.cli.parsing import Subcommands, actions, command
from secumail.errors import ConfigError
from secumail.mail.address import AddressError, parse_address
from secumail.store.audit_chain import AuditKind


def _notify_address(text: str | None) -> str | None:
    """The --notify address, checked; None when not given."""
    if not text:
        return None
    try:
        return str(parse_address(text))
    except AddressError as exc:
        raise ConfigError(f"--notify: {exc}") from exc


async def account_create(sv: Services, args: argparse.Namespace) -> int:
    notify = _notify_address(args.notify)
    account = await sv.store.create_account(
        args.name, locale=args.locale, notify_address=notify, store_subject=args.store_subject
    )
    await record(
        sv,
        AuditKind.ACCOUNT_CREATED,
        account.id,
        {"name": account.name, "locale": account.locale, "store_subject": account.store_subject},
    )
    emit(
        args.json,
        account,
        f"account {account.name} created: id {account.id}, locale {account.locale}",
    )
    return 0


def _on_off(value: str | None) -> bool | None:
    return None if value is None else value == "on"


async def account_update(sv: Services, args: argparse.Namespace) -> int:
    notify = _notify_address(args.notify)
    if args.retention_days is not None and args.retention_days < 1:
        raise ConfigError("--retention-days: at least 1")
    account = await sv.store.update_account(
        args.name,
        locale=args.locale,
        notify_address=notify,
        store_subject=_on_off(args.store_subject),
        smime=_on_off(args.smime),
        gateway_dkim=_on_off(args.gateway_dkim),
        allow_relaxed_tls=_on_off(args.relaxed_tls),
        retention_days=args.retention_days,
        scan_fail_open=_on_off(args.scan_fail_open),
    )
    changes = {
        "locale": args.locale,
        "notify_address": "changed" if notify else None,  # the address itself: never in details
        "store_subject": args.store_subject,
        "smime": args.smime,
        "gateway_dkim": args.gateway_dkim,
        "relaxed_tls": args.relaxed_tls,
        "retention_days": args.retention_days,
        "scan_fail_open": args.scan_fail_open,
    }
    await record(
        sv,
        AuditKind.ACCOUNT_UPDATED,
        account.id,
        {k: v for k, v in changes.items() if v is not None},
    )
    retention = (
        f"{account.retention_days} days"
        if account.retention_days
        else f"{sv.settings.gdpr.retention_days} days (default)"
    )
    emit(
        args.json,
        account,
        f"account {account.name}: locale {account.locale}, notify {account.notify_address or '-'}, "
        f"S/MIME {'on' if account.smime else 'off'}, gateway DKIM {'on' if account.gateway_dkim else 'off'}, "
        f"subjects {'stored' if account.store_subject else 'not stored'}, "
        f"relaxed TLS {'ALLOWED' if account.allow_relaxed_tls else 'never'}, "
        f"scanner down: {'PASS UNSCANNED' if account.scan_fail_open else 'messages wait'}, "
        f"metadata kept {retention}",
    )
    return 0


async def account_list(sv: Services, args: argparse.Namespace) -> int:
    accounts = await sv.store.list_accounts()
    lines = [
        f"{a.id}  {a.name}  locale={a.locale}  notify={a.notify_address or '-'}" for a in accounts
    ]
    emit(args.json, accounts, "\n".join(lines) or "no accounts")
    return 0


async def account_alerts(sv: Services, args: argparse.Namespace) -> int:
    """The alerts an account was told about and that are not over yet (sender TLS fell,
    failed logins, domain DNS); every account's without a name."""
    account_id = (await sv.store.get_account(args.name)).id if args.name else None
    alerts = await sv.account_alerts.open(account_id)
    rows = [
        {
            "account_id": a.account_id,
            "kind": a.kind,
            "about": a.about,
            "raised_at": a.raised_at,
            "detail": a.detail,
        }
        for a in alerts
    ]
    lines = [
        f"{when(a.raised_at)}  {a.account_id}  {a.kind}  about {a.about}"
        + _alert_summary(a.detail)
        for a in alerts
    ]
    emit(args.json, rows, "\n".join(lines) or "no open alerts")
    return 0


def _alert_summary(detail: dict[str, object]) -> str:
    before, now = detail.get("before"), detail.get("now")
    if isinstance(before, dict) and isinstance(now, dict):
        return (
            f"  {detail.get('channel', '')}: {before.get('version')} {before.get('cipher')}"
            f" -> {now.get('version')} {now.get('cipher')}"
        )
    cert = detail.get("client_certificate")
    if detail.get("reason") == "client_certificate_expires" and isinstance(cert, dict):
        return f"  client certificate expires {cert.get('not_after')}"
    if "failures" in detail:
        return f"  {detail['failures']} failed logins within {detail.get('window')} s"
    return ""


def register(sub: Subcommands) -> None:
    account = actions(sub, "account", "customer accounts")
    c = command(account, "create", "create an account")
    c.add_argument("name")
    c.add_argument("--locale", choices=["en", "nl"], default="en")
    c.add_argument("--notify", metavar="ADDRESS", default=None, help="also send notices here")
    c.add_argument(
        "--store-subject", action="store_true", help="keep subjects in metadata (off by default)"
    )
    command(account, "list", "list accounts")
    c = command(account, "alerts", "open alerts (sender TLS, failed logins, domain DNS)")
    c.add_argument("name", nargs="?", default=None, help="one account (default: all)")
    c = command(account, "update", "change an account's settings")
    c.add_argument("name")
    c.add_argument("--locale", choices=["en", "nl"], default=None)
    c.add_argument("--notify", metavar="ADDRESS", default=None)
    c.add_argument("--smime", choices=["on", "off"], default=None, help="S/MIME-sign messages")
    c.add_argument(
        "--gateway-dkim",
        choices=["on", "off"],
        default=None,
        help="sign with the gateway's domain when the From domain has no published DKIM key",
    )
    c.add_argument("--store-subject", choices=["on", "off"], default=None)
    c.add_argument(
        "--relaxed-tls",
        choices=["on", "off"],
        default=None,
        help="honour 'TLS-Required: No' (RFC 8689): deliver below verified TLS when a message asks (logged)",
    )
    c.add_argument(
        "--scan-fail-open",
        choices=["on", "off"],
        default=None,
        help="when a virus or spam scanner is down, deliver unscanned (marked) instead of waiting",
    )
    c.add_argument(
        "--retention-days",
        type=int,
        default=None,
        metavar="N",
        help="keep finished messages' metadata N days (default: gdpr.retention_days, 30)",
    )


COMMANDS = {
    ("account", "create"): account_create,
    ("account", "list"): account_list,
    ("account", "alerts"): account_alerts,
    ("account", "update"): account_update,
}
