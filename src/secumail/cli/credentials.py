"""`secumail credential …`: SMTP and API credentials (secrets shown once, stored hashed)."""

from __future__ import annotations

import argparse
import asyncio
import secrets

from secumail.api.routes_gdpr import OPERATOR_SCOPES
from secumail.api.tokens import SCOPES
from secumail.app import Services
from secumail.cli.audit import record
from secumail.cli.output import emit, when
from secumail.cli.parsing import Subcommands, actions, command
from secumail.errors import ConfigError
from secumail.pki.passwords import hash_secret, new_secret
from secumail.store.audit_chain import AuditKind
from secumail.store.credential_tls import CredentialTls


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
    tls = await sv.credential_tls.of_account(account_id)
    rows = [
        {
            "id": c.id,
            "account_id": c.account_id,
            "kind": c.kind,
            "username": c.username,
            "created_at": c.created_at,
            "revoked_at": c.revoked_at,
            # What it submitted over (sender watch): the strongest and the last; None before use.
            "tls": tls[c.id].as_dict() if c.id in tls else None,
        }
        for c in creds
    ]
    lines = [
        f"{c.id}  {c.kind}  {c.username}  revoked={when(c.revoked_at)}  " + _tls_line(tls.get(c.id))
        for c in creds
    ]
    emit(args.json, rows, "\n".join(lines) or "no credentials")
    return 0


def _tls_line(record: CredentialTls | None) -> str:
    if record is None:
        return "tls=-"
    line = f"tls={record.last_version} {record.last_cipher} ({record.last_channel}, {when(record.last_seen)})"
    if record.last_rank < record.best_rank:
        line += f"  BELOW its best {record.best_version} {record.best_cipher}"
    return line


def register(sub: Subcommands) -> None:
    cred = actions(sub, "credential", "SMTP and API credentials")
    c = command(cred, "create", "create a credential; prints the secret once")
    c.add_argument("account")
    c.add_argument("--kind", choices=["smtp", "api"], default="smtp")
    c.add_argument(
        "--scope", action="append", default=None, help="API scopes (default: all); repeatable"
    )
    c = command(cred, "revoke", "revoke a credential")
    c.add_argument("id")
    c = command(cred, "list", "list credentials (never their secrets)")
    c.add_argument("--account", default=None)


COMMANDS = {
    ("credential", "create"): credential_create,
    ("credential", "revoke"): credential_revoke,
    ("credential", "list"): credential_list,
}
