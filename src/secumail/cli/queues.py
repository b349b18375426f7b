"""`secumail queue`: how much work waits before each stage."""

from __future__ import annotations

import argparse

from secumail.app import Services
from secumail.cli.output import emit
from secumail.cli.parsing import Subcommands, command


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


def register(sub: Subcommands) -> None:
    command(sub, "queue", "queue depth per stage")


COMMANDS = {("queue", None): queue_show}
