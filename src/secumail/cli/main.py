"""`secumail [--config FILE] <command> …` — set up, run and inspect the gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from secumail import __version__
from secumail.cli import admin, audit, check, config, gdpr, routes, tlsrpt
from secumail.cli.logs import configure_command_logging, configure_logging
from secumail.config import load_settings
from secumail.errors import ConfigError, SecumailError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="secumail", description="Secumail secure email gateway")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (or SECUMAIL_CONFIG; default ./secumail.toml if present)",
    )
    p.add_argument("--version", action="version", version=f"secumail {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def cmd(
        name: str, help_: str, parent: argparse._SubParsersAction = sub
    ) -> argparse.ArgumentParser:
        c = parent.add_parser(name, help=help_)
        c.add_argument("--json", action="store_true", help="machine-readable output")
        return c

    cmd("init", "write a default config and generate keys (idempotent)")
    serve = sub.add_parser("serve", help="run the gateway in the foreground")
    serve.add_argument(
        "--role",
        action="append",
        default=None,
        help="what to run: all (default), submission, api, stages, or a stage name; repeatable",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes sharing the ports and the store (default: server.workers, auto: one per core)",
    )

    account = sub.add_parser("account", help="customer accounts").add_subparsers(
        dest="action", required=True
    )
    c = cmd("create", "create an account", account)
    c.add_argument("name")
    c.add_argument("--locale", choices=["en", "nl"], default="en")
    c.add_argument("--notify", metavar="ADDRESS", default=None, help="also send notices here")
    c.add_argument(
        "--store-subject", action="store_true", help="keep subjects in metadata (off by default)"
    )
    cmd("list", "list accounts", account)
    c = cmd("update", "change an account's settings", account)
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
        "--retention-days",
        type=int,
        default=None,
        metavar="N",
        help="keep finished messages' metadata N days (default: gdpr.retention_days, 30)",
    )

    domain = sub.add_parser("domain", help="sender domains").add_subparsers(
        dest="action", required=True
    )
    c = cmd("add", "add a domain to an account; prints the DNS records to publish", domain)
    c.add_argument("account")
    c.add_argument("domain")
    c = cmd("verify", "check the DNS records and mark the domain verified", domain)
    c.add_argument("domain")
    c = cmd("list", "list domains", domain)
    c.add_argument("--account", default=None)
    c = cmd("records", "the DNS records to publish for a domain", domain)
    c.add_argument("domain")
    c = cmd(
        "rotate-dkim", "new DKIM keys (dated selectors); old ones stay valid until retired", domain
    )
    c.add_argument("domain")
    c = cmd("retire-dkim", "stop signing with a DKIM key", domain)
    c.add_argument("domain")
    c.add_argument("selector")

    ca = sub.add_parser("ca", help="Secumail's S/MIME CA").add_subparsers(
        dest="action", required=True
    )
    cmd("export-root", "print the root certificate (PEM) for customers to trust", ca)
    c = cmd("import-root", "use your own root CA (PEM certificate and key)", ca)
    c.add_argument("cert")
    c.add_argument("key")
    c.add_argument("--replace", action="store_true", help="move the current CA aside")

    ev = sub.add_parser("evidence", help="signed delivery evidence").add_subparsers(
        dest="action", required=True
    )
    c = cmd("export", "print the evidence of a message's delivered recipients", ev)
    c.add_argument("id")
    c.add_argument("--recipient", default=None)
    c = cmd("verify", "verify an exported evidence file (exit 0 only when valid)", ev)
    c.add_argument("file")
    c.add_argument(
        "--message", metavar="EML", default=None, help="the delivered message, to check its hash"
    )
    c.add_argument(
        "--key", metavar="JWK", default=None, help="trusted public key (default: this gateway's)"
    )
    cmd("key", "print the public evidence key (JWK) for third parties", ev)

    cred = sub.add_parser("credential", help="SMTP and API credentials").add_subparsers(
        dest="action", required=True
    )
    c = cmd("create", "create a credential; prints the secret once", cred)
    c.add_argument("account")
    c.add_argument("--kind", choices=["smtp", "api"], default="smtp")
    c.add_argument(
        "--scope", action="append", default=None, help="API scopes (default: all); repeatable"
    )
    c = cmd("revoke", "revoke a credential", cred)
    c.add_argument("id")
    c = cmd("list", "list credentials (never their secrets)", cred)
    c.add_argument("--account", default=None)

    message = sub.add_parser("message", help="messages").add_subparsers(
        dest="action", required=True
    )
    c = cmd("show", "metadata, per-recipient status and events of a message", message)
    c.add_argument("id")

    routes.add_parsers(sub, cmd)
    check.add_parser(sub, cmd)
    tlsrpt.add_parser(sub, cmd)
    audit.add_parser(sub, cmd)
    gdpr.add_parser(sub, cmd)
    config.add_parser(sub, cmd)

    cmd("queue", "queue depth per stage")
    return p


DEFAULT_CONFIG_FILE = Path("secumail.toml")  # where `init` writes when no file is named


def _config_path(args: argparse.Namespace) -> tuple[Path | None, Path]:
    """(the file to read, if any; the file `init` writes). A file named by --config or
    SECUMAIL_CONFIG must exist, except for `init`, which creates it: a mistyped name
    must not quietly mean "defaults" (and a new database in the working directory)."""
    named = args.config or (
        Path(os.environ["SECUMAIL_CONFIG"]) if os.environ.get("SECUMAIL_CONFIG") else None
    )
    if named is None:
        return (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None), DEFAULT_CONFIG_FILE
    if args.command != "init" and not named.exists():
        how = "--config" if args.config else "SECUMAIL_CONFIG"
        raise ConfigError(
            f"{named}: no such settings file (named by {how}); check the path, or create it "
            f"with `secumail --config {named} init`"
        )
    return named, named


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        path, config_path = _config_path(args)
        if args.command == "config":
            return config.run(args, path)
        settings = load_settings(path)
        if args.command == "serve":
            configure_logging(settings.server.log_level)
            return admin.serve(
                settings, set(args.role or ["all"]), args.workers or settings.worker_count
            )
        configure_command_logging()  # no-op when the host configured logging
        if args.command == "init":
            return admin.init(settings, config_path, args.json)
        return asyncio.run(admin.dispatch(settings, args))
    except BrokenPipeError:
        # The reader went away (`… | head`): the command's work is done; no traceback,
        # and nothing more is written to the closed pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except SecumailError as exc:
        logging.getLogger("secumail").debug("command failed", exc_info=True)
        print(f"secumail: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
