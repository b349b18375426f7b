"""Structured logs on stderr: one line per event, key=value pairs (logfmt)."""

from __future__ import annotations

import logging
import os
import sys
import time

from secumail.cli.supervisor import WORKER_ENV

WORKER = os.environ.get(WORKER_ENV, "")


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace('"', "'").replace("\n", "\\n")
        worker = f" worker={WORKER}" if WORKER else ""
        line = (
            f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()}{worker} "
            f'logger={record.name} msg="{msg}"'
        )
        # Fields of their own (`extra={"fields": {...}}`): key=value after the message.
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += "".join(f" {k}={_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += (
                ' exc="'
                + self.formatException(record.exc_info).replace("\n", "\\n").replace('"', "'")
                + '"'
            )
        return line


def _value(v: object) -> str:
    text = str(v).replace('"', "'").replace("\n", "\\n")
    return f'"{text}"' if not text or " " in text or "=" in text else text


def configure_logging(level: str) -> None:
    """Every log line of the process on stderr in logfmt: Secumail's own, the libraries'
    (uvicorn's too: the API server passes no logging config of its own) and Python
    warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    logging.captureWarnings(True)


def configure_command_logging() -> None:
    """Warnings and errors of a one-shot command (not `serve`), in the same logfmt as the
    gateway's; left alone when the host (a program calling `main()`, a test runner)
    has configured logging already."""
    if not logging.getLogger().handlers:
        configure_logging("warning")
