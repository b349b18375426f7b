"""Secumail's DKIM signatures checked by two independent verifiers (RFC 6376, RFC 8463).

dkimpy (PyPI ``dkimpy``; Ed25519 needs ``pynacl``) is handed the key record through its
``dnsfunc=`` hook from a dict: no DNS at all. All signatures of a message must verify.

OpenDKIM: ``opendkim-testmsg`` from Debian ``opendkim-tools`` (2.11.0~beta2 in Debian 12)
verifies when given none of -d/-k/-s. It has no option for test keys (its only options are
-C -d -K -k -s -t, and -t names the temporary directory) and reads no configuration file:
it always asks the system resolver (libresolv ``res_nquery``, /etc/resolv.conf). So it is
given the keys by the harness's authoritative DNS server on a 127.0.53.x address, port 53,
and run in a private mount namespace (``unshare --mount``, needs root) where
/etc/resolv.conf is bind-mounted to a file naming only that server: it never reaches the
real resolver. Findings about this version:

- it verifies ed25519-sha256 (RFC 8463), and only as PureEdDSA over the SHA-256 digest;
- exit 0 and no output means verified; 70 with the reason on stderr ("Bad signature",
  "Key retrieval failed", "No signature") otherwise;
- it passes a message if any one signature verifies, so tamper tests sign with one key;
- it refuses messages that break RFC 5322 header counts (no Date, two From, two Subject,
  two To) as "Syntax error" before looking at the signature;
- it checks x= (expiry), as dkimpy does (dkimpy allows 10 hours of clock skew).

dkimpy 1.1.8 does not count fields, but appends one "from" to every h= it verifies
(its bug #644046), so it refuses a second From even without over-signing. Over-signing
(RFC 6376 §8.15) itself is therefore shown by adding an absent oversigned field (Cc, both
verifiers) and a second Subject (dkimpy), each next to a control signed without
over-signing that still verifies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest

from secumail.mail.dkim import DkimKey, dns_record, generate_ed25519, generate_rsa, sign
from tests.harness.dns import AuthoritativeDns

REPO = Path(__file__).resolve().parents[2]
DOMAIN = "example.test"
Verifier = Callable[[bytes], str | None]  # None: every signature verifies; else why not

BODY = (
    b"Dear Bob,\r\n"
    b"\r\n"
    b"Please find the figures below.   Trailing space here: \r\n"
    b"\tindented\tline\r\n"
    b"Regards,\r\nAlice\r\n"
)


def message(subject: bytes = b"Quarterly report", body: bytes = BODY, top: bytes = b"") -> bytes:
    return (
        top + b"From: Alice <alice@example.test>\r\n"
        b"To: Bob <bob@example.org>\r\n"
        b"Subject: " + subject + b"\r\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0100\r\n"
        b"Message-ID: <20240101.1@example.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain;\r\n\tcharset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + body
    )


def flip_one_byte(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) == 1 and data.count(old) >= 1
    i = data.rindex(old)
    return data[:i] + new + data[i + 1 :]


@pytest.fixture(scope="module")
def keys() -> dict[str, DkimKey]:
    return {"rsa": generate_rsa(DOMAIN, "rsa2024"), "ed25519": generate_ed25519(DOMAIN, "ed2024")}


# --- the verifiers ----------------------------------------------------------------------


def dkimpy_verifier(keys: dict[str, DkimKey]) -> Verifier:
    records = {
        f"{name}.".encode(): value.encode() for name, value in map(dns_record, keys.values())
    }

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name if name.endswith(b".") else name + b".", b"")

    def verify(msg: bytes) -> str | None:
        count = msg.split(b"\r\n\r\n", 1)[0].lower().count(b"\r\ndkim-signature:") + (
            msg.lower().startswith(b"dkim-signature:")
        )
        if count == 0:
            return "no signature"
        verifier = dkim.DKIM(msg)
        for idx in range(count):
            try:
                if not verifier.verify(idx=idx, dnsfunc=dnsfunc):
                    return f"signature {idx} did not verify"
            except dkim.DKIMException as exc:
                return f"signature {idx}: {exc}"
        return None

    return verify


def opendkim_testmsg() -> str:
    """The tool's path; installs Debian ``opendkim-tools`` via scripts/ensure-system-deps."""
    search = os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin"
    if shutil.which("opendkim-testmsg", path=search) is None:
        subprocess.run([str(REPO / "scripts" / "ensure-system-deps")], check=True)
    tool = shutil.which("opendkim-testmsg", path=search)
    assert tool, "opendkim-testmsg missing after scripts/ensure-system-deps"
    return tool


def loopback_dns_on_port_53() -> AuthoritativeDns:
    for last in range(1, 50):
        with contextlib.suppress(OSError):
            return AuthoritativeDns(f"127.0.53.{last}", 53).start()
    raise RuntimeError("no 127.0.53.x address has port 53 free")


@pytest.fixture(scope="module")
def opendkim(
    keys: dict[str, DkimKey], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Verifier]:
    if os.geteuid() != 0:
        pytest.skip("OpenDKIM interop needs root: port 53 and a private mount namespace")
    tool = opendkim_testmsg()
    resolv = tmp_path_factory.mktemp("opendkim") / "resolv.conf"
    dns = loopback_dns_on_port_53()
    try:
        for name, value in map(dns_record, keys.values()):
            # A TXT character-string holds at most 255 bytes; the RSA record needs two.
            strings = (f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
            dns.add(name, "TXT", " ".join(strings))
        resolv.write_text(f"nameserver {dns.host}\noptions timeout:2 attempts:1\n")
        # `&&`: if the bind mount fails, opendkim-testmsg never runs with the real resolver.
        script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "{tool}"'

        def verify(msg: bytes) -> str | None:
            argv = ["unshare", "--mount", "sh", "-c", script]
            done = subprocess.run(argv, input=msg, capture_output=True, timeout=30)
            if done.returncode == 0 and not done.stderr:
                return None
            return f"exit {done.returncode}: {done.stderr.decode(errors='replace').strip()}"

        yield verify
    finally:
        dns.stop()
    assert dns.queries, "OpenDKIM never asked the harness DNS for a key"
    assert all(name.endswith("._domainkey.example.test") for name, _ in dns.queries)


@pytest.fixture(params=["dkimpy", "opendkim"])
def verify(request: pytest.FixtureRequest, keys: dict[str, DkimKey]) -> Verifier:
    if request.param == "dkimpy":
        return dkimpy_verifier(keys)
    return request.getfixturevalue("opendkim")


@pytest.fixture(params=["rsa", "ed25519"])
def key(request: pytest.FixtureRequest, keys: dict[str, DkimKey]) -> DkimKey:
    return keys[request.param]


def assert_bad_signature(reason: str | None) -> None:
    """Refused because the signature does not match, not for syntax or a missing key."""
    assert reason is not None, "verified, but should not have"
    assert not any(
        w in reason for w in ("Syntax error", "Key retrieval", "No signature", "no signature")
    )


def signed(msg: bytes, key: DkimKey, **options: object) -> bytes:
    return sign(msg, [key], **options) + msg  # type: ignore[arg-type]


# --- both verifiers, both algorithms --------------------------------------------------


def test_signed_message_verifies(verify: Verifier, key: DkimKey) -> None:
    assert verify(signed(message(), key)) is None


def test_one_body_byte_changed_fails(verify: Verifier, key: DkimKey) -> None:
    out = flip_one_byte(signed(message(), key), b"B", b"C")  # "Bob" in the body's first line
    assert_bad_signature(verify(out))


def test_changed_subject_fails(verify: Verifier, key: DkimKey) -> None:
    out = signed(message(), key).replace(b"Subject: Quarterly report", b"Subject: Quarterly rep0rt")
    assert_bad_signature(verify(out))


def test_second_from_fails(verify: Verifier, key: DkimKey) -> None:
    # RFC 6376 §8.15: a From put above the signed one is what a reader's client shows.
    # Both verifiers also catch this on their own (see the module docstring), so the
    # over-signing itself is shown by the next two tests.
    out = signed(message(), key).replace(
        b"From: Alice", b"From: Mallory <m@evil.test>\r\nFrom: Alice", 1
    )
    assert verify(out) is not None


def test_added_oversigned_field_fails(verify: Verifier, key: DkimKey) -> None:
    out = signed(message(), key)
    with_cc = out.replace(b"To: Bob", b"Cc: eve@evil.test\r\nTo: Bob", 1)
    assert_bad_signature(verify(with_cc))
    # Control: without over-signing, the same addition goes unnoticed.
    plain = signed(message(), key, oversign=())
    assert verify(plain.replace(b"To: Bob", b"Cc: eve@evil.test\r\nTo: Bob", 1)) is None


def test_utf8_header_and_body(verify: Verifier, key: DkimKey) -> None:
    # SMTPUTF8 / 8BITMIME: raw UTF-8 in a header field and in the body.
    msg = message(
        subject="Überweisung für Jörg — €5".encode(), body="Grüße aus Zürich\r\n".encode()
    )
    out = signed(msg, key)
    assert verify(out) is None
    assert_bad_signature(verify(out.replace("Zürich".encode(), "Zürick".encode())))


def test_relaxed_canonicalization_survives_whitespace_changes(
    verify: Verifier, key: DkimKey
) -> None:
    # RFC 6376 §3.4.2/§3.4.4: what relays may do to whitespace does not break relaxed.
    out = signed(message(), key)
    out = out.replace(b"Subject: Quarterly report", b"Subject:   Quarterly\r\n\t report  ")
    out = out.replace(b"below.   Trailing space here: \r\n", b"below. Trailing space here:\r\n")
    assert verify(out + b"\r\n\r\n") is None


def test_no_body_and_large_body(verify: Verifier, key: DkimKey) -> None:
    assert verify(signed(message(body=b""), key)) is None
    big = b"".join(
        b"line %05d of the report, with some text to fill it up.\r\n" % i for i in range(1800)
    )
    assert len(big) > 100_000
    assert verify(signed(message(body=big), key)) is None


def test_repeated_field_instances_bottom_up(verify: Verifier, key: DkimKey) -> None:
    # RFC 6376 §5.4.2: Comments may repeat (RFC 5322 §3.6); each h= entry takes the
    # next instance from the bottom, so swapping the two breaks the signature.
    msg = message(top=b"Comments: first\r\nComments: second\r\n")
    out = signed(msg, key, signed_headers=("From", "Subject", "Comments"), oversign=("From",))
    assert verify(out) is None
    swapped = out.replace(
        b"Comments: first\r\nComments: second", b"Comments: second\r\nComments: first"
    )
    assert_bad_signature(verify(swapped))


def test_both_keys_in_one_message(verify: Verifier, keys: dict[str, DkimKey]) -> None:
    msg = message()
    assert verify(sign(msg, [keys["rsa"], keys["ed25519"]]) + msg) is None
    assert verify(sign(msg, [keys["ed25519"], keys["rsa"]]) + msg) is None


def test_expired_signature_fails(verify: Verifier, key: DkimKey) -> None:
    # RFC 6376 §3.5 x=; both verifiers allow some clock skew, so expire well in the past.
    now = int(time.time())
    assert verify(signed(message(), key, timestamp=now - 60, expire_after=3600)) is None
    out = signed(message(), key, timestamp=now - 2 * 86400, expire_after=3600)
    assert verify(out) is not None


# --- dkimpy only ------------------------------------------------------------------------


def test_second_subject_fails_only_when_oversigned(keys: dict[str, DkimKey], key: DkimKey) -> None:
    # dkimpy does not count fields (OpenDKIM refuses two Subject fields as a syntax error),
    # so here the extra h= entry alone decides (RFC 6376 §8.15).
    verify = dkimpy_verifier(keys)
    add = (b"Subject: Quarterly report", b"Subject: Pay now\r\nSubject: Quarterly report")
    assert_bad_signature(verify(signed(message(), key).replace(*add, 1)))
    assert verify(signed(message(), key, oversign=()).replace(*add, 1)) is None
