"""Printing for humans or, with --json, for scripts."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from enum import Enum
from typing import Any


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_plain(v) for v in value]
    return value


def emit(as_json: bool, data: Any, human: str) -> None:
    if as_json:
        json.dump(_plain(data), sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(human.rstrip("\n") + "\n")


def warn(messages: list[str]) -> None:
    """Warnings go to stderr, in both modes (with --json they are in the data as well)."""
    for text in messages:
        sys.stderr.write(f"WARNING: {text}\n")


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
