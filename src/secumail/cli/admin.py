"""The subcommands: each opens the services it needs, does one thing, prints the result."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import time
from pathlib import Path

from secumail.api.routes_gdpr import OPERATOR_SCOPES
from secumail.api.tokens import SCOPES
from secumail.app import Gateway, Services, initialise
from secumail.cli import audit, check, config, domains, evidence, gdpr, routes, tlsrpt
from secumail.cli.audit import record
from secumail.cli.output import emit, warn, when
from secumail.cli.supervisor import Supervisor
from secumail.config import Settings
from secumail.errors import ConfigError, ConflictError, SecumailError
from secumail.mail.address import AddressError, parse_address
from secumail.mail.dns_records import hostname_problem, txt_rdata, zone_line
from secumail.pki.ca import CertificateAuthority
from secumail.pki.passwords import hash_secret, new_secret
from secumail.store.audit_chain import AuditKind

log = logging.getLogger("secumail")


def init(settings: Settings, config_path: Path, as_json: bool) -> int:
    wrote_config = False
    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(config.render(settings), encoding="utf-8")
        wrote_config = True
    hostname = settings.server.hostname
    hostname_from = (
        "from the settings" if "hostname" in settings.server.model_fields_set else "this host's FQDN"
    )
    made = initialise(settings)
    services = Services(settings)  # creates the database and its tables
    try:
        records = asyncio.run(_ensure_keys(services, settings.gateway_domain, made))
    finally:
        services.close()
    problem = hostname_problem(settings.server.hostname)
    warnings = []
    if problem:
        warnings.append(
            f"server.hostname is {settings.server.hostname!r}, not a public DNS name "
            f'({problem}): set this gateway\'s public name (hostname = "relay.example.nl" under '
            f"[server] in {config_path}, or SECUMAIL_SERVER__HOSTNAME) and run `secumail init` "
            "again before publishing DNS records (a self-signed certificate is made for the "
            f"new name once you delete {settings.cert_file} and {settings.key_file})"
        )
    emit(
        as_json,
        {
            "config": str(config_path),
            "config_written": wrote_config,
            "created": made,
            "data_dir": str(settings.data_dir),
            "gateway_dkim": [
                {
                    "name": r.name,
                    "type": "TXT",
                    "value": r.value,
                    "rdata": txt_rdata(r.value),
                    "zone": zone_line(r.name, "TXT", r.value),
                }
                for r in records
            ],
            "warnings": warnings,
            "hostname": hostname,
            "workers": settings.server.workers,
        },
        f"config: {config_path}{' (written)' if wrote_config else ' (exists)'}\n"
        f"data:   {settings.data_dir}\n"
        f"server.hostname: {hostname} ({hostname_from})\n"
        f"server.workers: {settings.server.workers} ({settings.worker_count} processes)\n"
        + "".join(f"created {m}\n" for m in made)
        + (
            f"DKIM records for the gateway's own domain {settings.gateway_domain} (signs notices),"
            " as zone-file lines (`secumail domain records "
            f"{settings.gateway_domain}` shows the plain values too):\n"
            + "".join(f"  {zone_line(r.name, 'TXT', r.value)}\n" for r in records)
            if records
            else f"no DKIM keys for the gateway's own domain {settings.gateway_domain!r}: it is not "
            "a domain name. Set server.hostname (or signing.gateway_domain) to this gateway's "
            "FQDN and run `secumail init` again; until then notices leave unsigned.\n"
        ),
    )
    warn(warnings)
    return 0


async def _ensure_keys(sv: Services, domain: str, made: list[str]) -> list:
    """The gateway's own DKIM keys; what `init` created (files, keys) in the audit log."""
    had = {r.selector for r in await sv.keyring.records(domain)}
    records = await sv.keyring.ensure_keys(domain)
    new_dkim = [r.selector for r in records if r.selector not in had]
    if made or new_dkim:
        await record(
            sv,
            AuditKind.KEYS_CREATED,
            "gateway",
            {"files": [Path(m).name for m in made], "gateway_dkim": new_dkim},
        )
    return records


def serve(settings: Settings, roles: set[str], workers: int = 1) -> int:
    """Run the gateway. With `workers` > 1 the first process starts the others: identical
    processes sharing the store, one per core; the first accepts the SMTP connections and
    hands them out in turn, the API port is shared (SO_REUSEPORT). See cli/supervisor.py."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    supervisor = Supervisor(workers)
    if supervisor.is_first:
        initialise(settings)
    supervisor.start_workers()

    async def main() -> None:
        gateway = Gateway(
            settings,
            roles,
            worker=supervisor.index,
            workers=workers,
            handoff_to=supervisor.handoff_sender(),
            handoff_from=supervisor.handoff_receiver(),
        )
        await gateway.serve()

    try:
        asyncio.run(main())
    finally:
        supervisor.stop_workers()
    return 0


async def dispatch(settings: Settings, args: argparse.Namespace) -> int:
    services = await asyncio.to_thread(Services, settings)
    try:
        handler = COMMANDS[(args.command, getattr(args, "action", None))]
        return await handler(services, args)
    finally:
        await asyncio.to_thread(services.close)


# -- accounts ------------------------------------------------------------------------
async def account_create(sv: Services, args: argparse.Namespace) -> int:
    notify = None
    if args.notify:
        try:
            notify = str(parse_address(args.notify))
        except AddressError as exc:
            raise ConfigError(f"--notify: {exc}") from exc
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
    notify = None
    if args.notify:
        try:
            notify = str(parse_address(args.notify))
        except AddressError as exc:
            raise ConfigError(f"--notify: {exc}") from exc
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
    )
    changes = {
        "locale": args.locale,
        "notify_address": "changed" if notify else None,  # the address itself: never in details
        "store_subject": args.store_subject,
        "smime": args.smime,
        "gateway_dkim": args.gateway_dkim,
        "relaxed_tls": args.relaxed_tls,
        "retention_days": args.retention_days,
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
        f"metadata kept {retention}",
    )
    return 0


async def ca_export_root(sv: Services, args: argparse.Namespace) -> int:
    pem = sv.ca.root_pem().decode()
    emit(args.json, {"root_pem": pem}, pem)
    return 0


async def ca_import_root(sv: Services, args: argparse.Namespace) -> int:
    """Use the operator's own root CA; the issuing CA is made under it anew."""
    ca_dir = sv.settings.ca_dir
    cert_pem, key_pem = Path(args.cert).read_bytes(), Path(args.key).read_bytes()
    if (ca_dir / "root.pem").exists():
        if not args.replace:
            raise ConflictError(f"{ca_dir} holds a CA already; --replace moves it aside")
        aside = ca_dir.with_name(f"ca-replaced-{int(time.time())}")
        ca_dir.rename(aside)
        await sv.signing.forget_smime_certs()  # issued under the old CA: issue anew
    ca = CertificateAuthority.import_root(ca_dir, cert_pem, key_pem)
    subject = ca.root.subject.rfc4514_string()
    await record(
        sv,
        AuditKind.CA_IMPORTED,
        "ca",
        {"root_subject": subject.replace("@", "(at)"), "replaced": bool(args.replace)},
    )
    emit(
        args.json,
        {"root_subject": subject, "directory": str(ca_dir)},
        f"root CA {subject} imported; a new issuing CA was made under it",
    )
    return 0


async def account_list(sv: Services, args: argparse.Namespace) -> int:
    accounts = await sv.store.list_accounts()
    lines = [
        f"{a.id}  {a.name}  locale={a.locale}  notify={a.notify_address or '-'}" for a in accounts
    ]
    emit(args.json, accounts, "\n".join(lines) or "no accounts")
    return 0


# -- credentials ---------------------------------------------------------------------
async def credential_create(sv: Services, args: argparse.Namespace) -> int:
    account = await sv.store.get_account(args.account)
    stem = account.name.lower().replace(" ", "-")[:24]
    password = new_secret()
    secret_hash = await asyncio.to_thread(hash_secret, password)
    if args.kind == "api":
        scopes = tuple(args.scope or SCOPES)  # operator scopes only when asked for by name
        known = (*SCOPES, *OPERATOR_SCOPES)
        unknown = set(scopes) - set(known)
        if unknown:
            raise ConfigError(f"unknown scopes {sorted(unknown)}; known: {', '.join(known)}")
        client_id = f"api-{stem}-{secrets.token_hex(4)}"
        cred = await sv.store.create_credential(account.id, "api", client_id, secret_hash, scopes)
        await record(
            sv,
            AuditKind.CREDENTIAL_CREATED,
            cred.id,
            {"account": account.id, "kind": "api", "client_id": client_id, "scopes": list(scopes)},
        )
        emit(
            args.json,
            {
                "id": cred.id,
                "account": account.id,
                "kind": "api",
                "client_id": client_id,
                "client_secret": password,
                "scopes": list(scopes),
            },
            f"API credential {cred.id} for account {account.name}\n"
            f"  client_id:     {client_id}\n  client_secret: {password}\n  scopes:        {' '.join(scopes)}\n"
            "The secret is shown only now. Get a token: POST /oauth/token (client credentials).",
        )
        return 0
    username = f"{stem}-{secrets.token_hex(4)}"
    cred = await sv.store.create_credential(account.id, args.kind, username, secret_hash)
    await record(
        sv,
        AuditKind.CREDENTIAL_CREATED,
        cred.id,
        {"account": account.id, "kind": cred.kind, "username": username},
    )
    emit(
        args.json,
        {
            "id": cred.id,
            "account": account.id,
            "kind": cred.kind,
            "username": username,
            "password": password,
        },
        f"credential {cred.id} for account {account.name}\n"
        f"  username: {username}\n  password: {password}\n"
        "The password is shown only now; store it in your mail server's relay settings.",
    )
    return 0


async def credential_revoke(sv: Services, args: argparse.Namespace) -> int:
    cred = await sv.store.revoke_credential(args.id)
    await record(
        sv, AuditKind.CREDENTIAL_REVOKED, cred.id, {"account": cred.account_id, "kind": cred.kind}
    )
    emit(args.json, {"id": cred.id, "revoked_at": cred.revoked_at}, f"credential {cred.id} revoked")
    return 0


async def credential_list(sv: Services, args: argparse.Namespace) -> int:
    account_id = (await sv.store.get_account(args.account)).id if args.account else None
    creds = await sv.store.list_credentials(account_id)
    rows = [
        {
            "id": c.id,
            "account_id": c.account_id,
            "kind": c.kind,
            "username": c.username,
            "created_at": c.created_at,
            "revoked_at": c.revoked_at,
        }
        for c in creds
    ]
    lines = [f"{c.id}  {c.kind}  {c.username}  revoked={when(c.revoked_at)}" for c in creds]
    emit(args.json, rows, "\n".join(lines) or "no credentials")
    return 0


# -- messages and queues -------------------------------------------------------------
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


async def queue_show(sv: Services, args: argparse.Namespace) -> int:
    depths = await sv.bus.depths()
    stages = sv.settings.pipeline.stages
    data = {s: depths.get(s, 0) for s in stages} | {
        k: v for k, v in depths.items() if k not in stages
    }
    emit(
        args.json,
        {"queues": data, "bound": sv.settings.bus.queue_bound},
        "\n".join(f"{k:10} {v}" for k, v in data.items()),
    )
    return 0


COMMANDS = {
    ("account", "create"): account_create,
    ("account", "list"): account_list,
    ("account", "update"): account_update,
    ("ca", "export-root"): ca_export_root,
    ("ca", "import-root"): ca_import_root,
    **domains.COMMANDS,
    **routes.COMMANDS,
    **check.COMMANDS,
    **tlsrpt.COMMANDS,
    **evidence.COMMANDS,
    **audit.COMMANDS,
    **gdpr.COMMANDS,
    ("credential", "create"): credential_create,
    ("credential", "revoke"): credential_revoke,
    ("credential", "list"): credential_list,
    ("message", "show"): message_show,
    ("queue", None): queue_show,
}

__all__ = ["SecumailError", "dispatch", "init", "serve"]
