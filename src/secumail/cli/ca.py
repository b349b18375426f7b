"""`secumail ca …`: Secumail's S/MIME CA: its root for customers, or the operator's own."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from secumail.app import Services
from secumail.cli.audit import record
from secumail.cli.output import emit
from secumail.cli.parsing import Subcommands, actions, command
from secumail.errors import ConflictError
from secumail.pki.ca import CertificateAuthority
from secumail.store.audit_chain import AuditKind


async def ca_export_root(sv: Services, args: argparse.Namespace) -> int:
    pem = sv.ca.root_pem().decode()
    emit(args.json, {"root_pem": pem}, pem)
    return 0


async def ca_import_root(sv: Services, args: argparse.Namespace) -> int:
    """Use the operator's own root CA; the issuing CA is made under it anew."""
    ca_dir = sv.settings.ca_dir
    cert_pem, key_pem = Path(args.cert).read_bytes(), Path(args.key).read_bytes()
    if (ca_dir / "root.pem").exists():
        if not args.replace:
            raise ConflictError(f"{ca_dir} holds a CA already; --replace moves it aside")
        aside = ca_dir.with_name(f"ca-replaced-{int(time.time())}")
        ca_dir.rename(aside)
        await sv.signing.forget_smime_certs()  # issued under the old CA: issue anew
    ca = CertificateAuthority.import_root(ca_dir, cert_pem, key_pem)
    subject = ca.root.subject.rfc4514_string()
    await record(
        sv,
        AuditKind.CA_IMPORTED,
        "ca",
        {"root_subject": subject.replace("@", "(at)"), "replaced": bool(args.replace)},
    )
    emit(
        args.json,
        {"root_subject": subject, "directory": str(ca_dir)},
        f"root CA {subject} imported; a new issuing CA was made under it",
    )
    return 0


def register(sub: Subcommands) -> None:
    ca = actions(sub, "ca", "Secumail's S/MIME CA")
    command(ca, "export-root", "print the root certificate (PEM) for customers to trust")
    c = command(ca, "import-root", "use your own root CA (PEM certificate and key)")
    c.add_argument("cert")
    c.add_argument("key")
    c.add_argument("--replace", action="store_true", help="move the current CA aside")


COMMANDS = {
    ("ca", "export-root"): ca_export_root,
    ("ca", "import-root"): ca_import_root,
}
