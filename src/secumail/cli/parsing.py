"""How a command module adds its commands to `secumail`'s parser.

Each module in `cli` that has commands offers `register(sub)`, adding them under the
top-level subparsers, and `COMMANDS`, the handler of each (command, action) pair;
`cli.main` calls them in the order `secumail --help` lists the commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from secumail.app import Services

# What add_subparsers() returns (a string: the class is generic only to type checkers).
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# A command's handler, and a module's handlers by (command, action).
Handler: TypeAlias = Callable[[Services, argparse.Namespace], Awaitable[int]]
Commands: TypeAlias = dict[tuple[str, str | None], Handler]


def command(parent: Subcommands, name: str, help_: str) -> argparse.ArgumentParser:
    """A command (or an action of one) that can print JSON for scripts."""
    c = parent.add_parser(name, help=help_)
    c.add_argument("--json", action="store_true", help="machine-readable output")
    return c


def actions(sub: Subcommands, name: str, help_: str) -> Subcommands:
    """A command made of actions (`secumail <name> <action> …`); one must be named."""
    return sub.add_parser(name, help=help_).add_subparsers(dest="action", required=True)
