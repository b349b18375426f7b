"""The subcommands: each opens the services it needs, does one thing, prints the result."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from secumail.app import Gateway, Services, initialise
from secumail.cli import config
from secumail.cli.audit import record
from secumail.cli.output import emit, warn
from secumail.cli.parsing import Commands, Subcommands, command
from secumail.cli.supervisor import Supervisor
from secumail.config import Settings
from secumail.errors import SecumailError
from secumail.mail.dns_records import hostname_problem, tlsrpt_record, txt_rdata, zone_line
from secumail.pki.dkim_keyring import DkimRecord
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
        "from the settings"
        if "hostname" in settings.server.model_fields_set
        else "this host's FQDN"
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
    # RFC 8460 §3: with the inbound MX on, other MTAs may report on their TLS sessions to it.
    tlsrpt = (
        tlsrpt_record(hostname, settings.inbound.tlsrpt_address)
        if settings.inbound.listen and settings.inbound.tlsrpt_address and not problem
        else None
    )
    emit(
        as_json,
        {
            "gateway_tlsrpt": None
            if tlsrpt is None
            else {
                "name": tlsrpt[0],
                "type": "TXT",
                "value": tlsrpt[1],
                "zone": zone_line(tlsrpt[0], "TXT", tlsrpt[1]),
            },
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
        )
        + (
            "TLS reporting for the inbound MX (RFC 8460; reports: `secumail tlsrpt received`):\n"
            f"  {zone_line(tlsrpt[0], 'TXT', tlsrpt[1])}\n"
            if tlsrpt
            else ""
        ),
    )
    warn(warnings)
    return 0


async def _ensure_keys(sv: Services, domain: str, made: list[str]) -> list[DkimRecord]:
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


# -- the commands --------------------------------------------------------------------
def register(sub: Subcommands) -> None:
    command(sub, "init", "write a default config and generate keys (idempotent)")
    serve = sub.add_parser("serve", help="run the gateway in the foreground")
    serve.add_argument(
        "--role",
        action="append",
        default=None,
        help="what to run: all (default), submission, inbound, api, stages, or a stage name; repeatable",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes sharing the ports and the store (default: server.workers, auto: one per core)",
    )


# `init` and `serve` run before (and without) the services: cli.main calls them itself.
COMMANDS: Commands = {}

__all__ = ["SecumailError", "init", "register", "serve"]
