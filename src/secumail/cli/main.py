"""`secumail [--config FILE] <command> …` — set up, run and inspect the gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from secumail import __version__
from secumail.app import Services
from secumail.cli import (
    accounts,
    admin,
    audit,
    ca,
    check,
    config,
    credentials,
    domains,
    evidence,
    gdpr,
    messages,
    queues,
    routes,
    tlsrpt,
)
from secumail.cli.logs import configure_command_logging, configure_logging
from secumail.cli.parsing import Commands
from secumail.config import Settings, load_settings
from secumail.errors import ConfigError, SecumailError

# Every module with commands, in the order `secumail --help` lists them.
MODULES = (
    admin,
    accounts,
    domains,
    ca,
    evidence,
    credentials,
    messages,
    routes,
    check,
    tlsrpt,
    audit,
    gdpr,
    config,
    queues,
)
COMMANDS: Commands = {
    key: handler for module in MODULES for key, handler in module.COMMANDS.items()
}


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
    for module in MODULES:
        module.register(sub)
    return p


async def _dispatch(settings: Settings, args: argparse.Namespace) -> int:
    """Run a command that works on the services: open them, run it, close them."""
    services = await asyncio.to_thread(Services, settings)
    try:
        handler = COMMANDS[(args.command, getattr(args, "action", None))]
        return await handler(services, args)
    finally:
        await asyncio.to_thread(services.close)


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
        return asyncio.run(_dispatch(settings, args))
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
