"""`secumail evidence …`: export signed delivery evidence and verify it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from secumail.app import Services
from secumail.cli.audit import record
from secumail.cli.output import emit
from secumail.cli.parsing import Subcommands, actions, command
from secumail.errors import ConfigError, EvidenceError, NotFound
from secumail.pki.evidence import message_sha256, verify_entry, verify_evidence
from secumail.store.audit_chain import AuditKind

FORMAT = "secumail-evidence/1"


async def evidence_export(sv: Services, args: argparse.Namespace) -> int:
    await sv.store.message(args.id)  # NotFound for an unknown message
    rows = await sv.signing.evidence(args.id, args.recipient)
    if not rows:
        who = f" for {args.recipient}" if args.recipient else ""
        raise NotFound(f"no delivery evidence for message {args.id}{who} (nothing delivered yet?)")
    jwk = sv.evidence_key.public_jwk()
    await record(
        sv,
        AuditKind.EVIDENCE_EXPORTED,
        args.recipient or args.id,
        {"message": args.id, "recipients": len(rows)},
    )
    doc = {
        "format": FORMAT,
        "public_key": jwk,
        "evidence": [
            {"recipient": r.recipient, "token": r.token, "record": verify_evidence(r.token, jwk)}
            for r in rows
        ],
    }
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    emit(args.json, doc, text)
    return 0


async def evidence_key(sv: Services, args: argparse.Namespace) -> int:
    jwk = sv.evidence_key.public_jwk()
    emit(args.json, jwk, json.dumps(jwk, indent=2))
    return 0


def _message_matches(path: Path, expected: str) -> bool:
    raw = path.read_bytes()
    if message_sha256(raw) == expected:
        return True
    # A file saved with LF line ends: SMTP carried CRLF.
    return b"\r" not in raw and message_sha256(raw.replace(b"\n", b"\r\n")) == expected


async def evidence_verify(sv: Services, args: argparse.Namespace) -> int:
    """Exit 0 only when every token verifies against the trusted key, every readable
    field of the file agrees with what is signed, and the message matches its hash
    (when given). What is printed comes from the signed payloads only."""
    try:
        doc = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {args.file}: {exc}") from exc
    trusted = (
        json.loads(Path(args.key).read_text(encoding="utf-8"))
        if args.key
        else sv.evidence_key.public_jwk()
    )
    entries = doc.get("evidence") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{args.file} holds no evidence entries (format {FORMAT})")
    problems = _file_problems(doc, trusted)
    results = []
    for number, entry in enumerate(entries, 1):
        result: dict[str, Any] = {"entry": number, "signature_valid": False}
        try:
            record = verify_entry(entry, trusted)
            result.update(signature_valid=True, recipient=record.get("recipient"), record=record)
            if args.message:
                result["message_matches"] = _message_matches(
                    Path(args.message), record["message_sha256"]
                )
        except EvidenceError as exc:
            result["error"] = str(exc)
        results.append(result)
    ok_all = not problems and all(
        r["signature_valid"] and r.get("message_matches", True) for r in results
    )
    lines = [f"✗ {p}" for p in problems]
    lines += [_line(r) for r in results]
    emit(args.json, {"valid": ok_all, "problems": problems, "results": results}, "\n".join(lines))
    return 0 if ok_all else 1


def _file_problems(doc: dict[str, Any], trusted: dict[str, Any]) -> list[str]:
    problems = []
    unknown = set(doc) - {"format", "public_key", "evidence"}
    if unknown:
        problems.append(f"unsigned members in the file: {', '.join(sorted(unknown))}")
    if doc.get("format", FORMAT) != FORMAT:
        problems.append(f"format {str(doc.get('format'))[:60]!r} is not {FORMAT}")
    shown = doc.get("public_key")
    if shown is not None and (not isinstance(shown, dict) or shown.get("x") != trusted.get("x")):
        problems.append("the public_key in the file is not the key verified against")
    return problems


def _line(r: dict[str, Any]) -> str:
    if not r["signature_valid"]:
        return f"✗ entry {r['entry']}: {r['error']}"
    rec = r["record"]
    mark = "✓" if r.get("message_matches", True) else "✗"
    line = f"{mark} {rec.get('recipient')}: signature valid"
    if "message_matches" in r:
        line += ", message " + ("matches" if r["message_matches"] else "does NOT match")
        line += " the hash"
    return line + (
        f"\n    delivered {rec.get('timestamp')} to {rec.get('mx_host')} [{rec.get('mx_ip')}]"
        f" via {rec.get('route')}, {rec.get('tls_version')}"
    )


def register(sub: Subcommands) -> None:
    ev = actions(sub, "evidence", "signed delivery evidence")
    c = command(ev, "export", "print the evidence of a message's delivered recipients")
    c.add_argument("id")
    c.add_argument("--recipient", default=None)
    c = command(ev, "verify", "verify an exported evidence file (exit 0 only when valid)")
    c.add_argument("file")
    c.add_argument(
        "--message", metavar="EML", default=None, help="the delivered message, to check its hash"
    )
    c.add_argument(
        "--key", metavar="JWK", default=None, help="trusted public key (default: this gateway's)"
    )
    command(ev, "key", "print the public evidence key (JWK) for third parties")


COMMANDS = {
    ("evidence", "export"): evidence_export,
    ("evidence", "verify"): evidence_verify,
    ("evidence", "key"): evidence_key,
}
