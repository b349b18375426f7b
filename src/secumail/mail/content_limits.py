"""Limits that protect the scanners and the gateway from a message built to exhaust them.

Pure: `check_content` walks the message as hostile input — without recursion, with every
count bounded — and answers the first limit it breaks, or None:

- header fields in the message's own header section;
- MIME nesting depth and the number of parts (RFC 2046 §5.1: a multipart body holds
  parts that may be multiparts again, without a limit of its own);
- archives inside the parts (zip, RFC 1952 gzip): how deep archives nest in archives, and
  how many bytes they inflate to in all, counted while inflating (never trusting the
  sizes an archive declares), so a zip bomb stops at the cap;
- encrypted archive members, which no scanner can look into (when asked to refuse them).

A message over a limit is refused with the reason this gives; it is never passed on
unscanned. The scanners have limits of their own (clamd's MaxRecursion, MaxScanSize):
these hold whatever an operator configured there.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import zipfile
import zlib
from dataclasses import dataclass
from email.message import Message

ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ContentLimits:
    max_header_fields: int = 1000
    max_mime_depth: int = 20
    max_mime_parts: int = 1000
    max_archive_depth: int = 5
    max_inflated_bytes: int = 100 * 1024 * 1024
    refuse_encrypted_archives: bool = False


@dataclass(frozen=True, slots=True)
class LimitBreach:
    limit: str  # "header_fields", "mime_depth", "mime_parts", "archive_depth", "inflated_size", "encrypted_archive"
    reason: str  # for the sender: what is wrong, never the content


class _Over(Exception):
    def __init__(self, breach: LimitBreach) -> None:
        self.breach = breach


def check_content(message: bytes, limits: ContentLimits) -> LimitBreach | None:
    try:
        _check(message, limits)
    except _Over as over:
        return over.breach
    return None


def _header_fields(message: bytes) -> int:
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[:end]
    return sum(1 for line in head.split(b"\n") if line and line[:1] not in b" \t")


def _check(message: bytes, limits: ContentLimits) -> None:
    fields = _header_fields(message)
    if fields > limits.max_header_fields:
        raise _Over(
            LimitBreach(
                "header_fields",
                f"the message has {fields} header fields; at most {limits.max_header_fields} are accepted",
            )
        )
    try:
        root = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(message)
    except RecursionError:
        raise _Over(_too_deep(limits)) from None
    budget = _Inflation(limits)
    stack: list[tuple[Message, int]] = [(root, 0)]
    parts = 0
    while stack:
        part, depth = stack.pop()
        parts += 1
        if parts > limits.max_mime_parts:
            raise _Over(
                LimitBreach(
                    "mime_parts",
                    f"the message has more than {limits.max_mime_parts} MIME parts",
                )
            )
        if depth > limits.max_mime_depth:
            raise _Over(_too_deep(limits))
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
            continue
        if part.get_content_maintype() == "message":
            continue  # a message/rfc822 part's payload is a list (above) when parsed
        try:
            data = part.get_payload(decode=True)
        except (ValueError, TypeError, AssertionError):
            continue  # undecodable: the scanners see the raw bytes
        if isinstance(data, bytes):
            budget.archive(data, 1)


def _too_deep(limits: ContentLimits) -> LimitBreach:
    return LimitBreach(
        "mime_depth", f"MIME parts are nested more than {limits.max_mime_depth} levels deep"
    )


class _Inflation:
    """Archives of one message: their depth, and every byte they inflate to, counted."""

    def __init__(self, limits: ContentLimits) -> None:
        self.limits = limits
        self.inflated = 0

    def _count(self, n: int) -> None:
        self.inflated += n
        if self.inflated > self.limits.max_inflated_bytes:
            mib = self.limits.max_inflated_bytes // (1024 * 1024)
            raise _Over(
                LimitBreach(
                    "inflated_size",
                    f"the archives in the message inflate to more than {mib} MiB",
                )
            )

    def archive(self, data: bytes, depth: int) -> None:
        if data.startswith(ZIP_MAGIC):
            self._deeper(depth)
            self._zip(data, depth)
        elif data.startswith(GZIP_MAGIC):
            self._deeper(depth)
            self._gzip(data, depth)

    def _deeper(self, depth: int) -> None:
        if depth > self.limits.max_archive_depth:
            raise _Over(
                LimitBreach(
                    "archive_depth",
                    f"archives are nested more than {self.limits.max_archive_depth} levels deep",
                )
            )

    def _zip(self, data: bytes, depth: int) -> None:
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            members = archive.infolist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
            return  # not readable as a zip: the scanners see the bytes as they are
        for info in members[: self.limits.max_mime_parts]:
            if info.flag_bits & 0x1:
                if self.limits.refuse_encrypted_archives:
                    raise _Over(
                        LimitBreach(
                            "encrypted_archive",
                            "the message holds an encrypted archive, which cannot be scanned for viruses",
                        )
                    )
                continue
            inner = self._read(archive, info)
            if inner is not None:
                self.archive(inner, depth + 1)

    def _read(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
        """The member's bytes, counted as they inflate; only the first bytes are kept
        unless the member is itself an archive (then all of it, within the cap)."""
        kept = bytearray()
        try:
            with archive.open(info) as member:
                head = member.read(4)
                self._count(len(head))
                keep = head.startswith((ZIP_MAGIC, GZIP_MAGIC))
                kept += head
                while chunk := member.read(READ_CHUNK):
                    self._count(len(chunk))
                    if keep:
                        kept += chunk
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, RuntimeError):
            return None
        return bytes(kept) if keep else None

    def _gzip(self, data: bytes, depth: int) -> None:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        kept = bytearray()
        rest = data
        keep: bool | None = None
        try:
            while rest:
                chunk = inflater.decompress(rest, READ_CHUNK)
                rest = inflater.unconsumed_tail
                self._count(len(chunk))
                if keep is None and len(chunk) >= 4:
                    keep = chunk.startswith((ZIP_MAGIC, GZIP_MAGIC))
                if keep:
                    kept += chunk
                if not chunk and not rest:
                    break
                if inflater.eof:
                    break
        except zlib.error:
            return
        if keep:
            self.archive(bytes(kept), depth + 1)
