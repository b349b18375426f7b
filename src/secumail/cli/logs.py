"""Structured logs on stderr: one line per event, key=value pairs (logfmt)."""

from __future__ import annotations

import logging
import os
import sys
import time

WORKER = os.environ.get("SECUMAIL_WORKER_INDEX", "")


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace('"', "'").replace("\n", "\\n")
        worker = f" worker={WORKER}" if WORKER else ""
        line = (
            f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()}{worker} "
            f'logger={record.name} msg="{msg}"'
        )
        if record.exc_info:
            line += (
                ' exc="'
                + self.formatException(record.exc_info).replace("\n", "\\n").replace('"', "'")
                + '"'
            )
        return line


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("asyncio").setLevel(logging.WARNING)
