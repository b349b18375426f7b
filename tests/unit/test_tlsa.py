"""DANE TLSA matching for SMTP: RFC 6698 §2, RFC 7671 §5, RFC 7672 §3.

Certificates come from the harness CA (`tests.harness.pki.TestCA`) where it has what a
test needs, and from the small factory below for chains it cannot make (intermediates,
an end-entity certificate posing as an issuer, path length limits, Ed25519 roots).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from secumail.mail.tlsa import (
    TlsaError,
    TlsaRecord,
    match_ee,
    match_ta,
    parse_tlsa,
    spki_der,
    usable_for_smtp,
    verify_dane,
)
from tests.harness.pki import CertPair, TestCA

NOW = datetime.now(UTC)
DER = serialization.Encoding.DER
MX = "mx.example.test"

# --- a certificate factory for chains TestCA does not make -----------------------------


@dataclass
class Issued:
    cert: x509.Certificate
    key: object

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(DER)


def new_key(kind: str = "ec") -> object:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def make(
    cn: str,
    issuer: Issued | None = None,
    *,
    names: tuple[str, ...] = (),
    ca: bool | None = False,
    path_length: int | None = None,
    days: tuple[int, int] = (-1, 30),
    key: str = "ec",
    cert_sign: bool = True,
) -> Issued:
    """A certificate for ``cn``; self-signed when ``issuer`` is None; ``ca=None``: no
    basicConstraints at all."""
    own_key = new_key(key)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(own_key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days[0]))
        .not_valid_after(NOW + timedelta(days=days[1]))
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, cert_sign, True, False, False),
            critical=True,
        )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    signer = issuer.key if issuer else own_key
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Issued(builder.sign(signer, algorithm), own_key)  # type: ignore[arg-type]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def der_of(path: Path) -> list[bytes]:
    """The DER certificates of a PEM file (leaf first for a chain file)."""
    return [c.public_bytes(DER) for c in x509.load_pem_x509_certificates(path.read_bytes())]


def ee(der: bytes, selector: int = 1, mtype: int = 1) -> TlsaRecord:
    """A DANE-EE record for ``der``."""
    return TlsaRecord(3, selector, mtype, association(der, selector, mtype))


def ta(der: bytes, selector: int = 0, mtype: int = 1) -> TlsaRecord:
    """A DANE-TA record for ``der``."""
    return TlsaRecord(2, selector, mtype, association(der, selector, mtype))


def association(der: bytes, selector: int, mtype: int) -> bytes:
    data = der if selector == 0 else spki(x509.load_der_x509_certificate(der))
    return {0: data, 1: hashlib.sha256(data).digest(), 2: hashlib.sha512(data).digest()}[mtype]


@pytest.fixture(scope="module")
def root() -> Issued:
    return make("Test Root", ca=True)


# --- RFC 6698 §2.2: presentation form --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "record"),
    [
        ("3 1 1 0A0b", TlsaRecord(3, 1, 1, b"\x0a\x0b")),
        ("2 0 1 0a 0b\t0c", TlsaRecord(2, 0, 1, b"\x0a\x0b\x0c")),  # hex may be split
        ("DANE-EE SPKI SHA2-256 ff", TlsaRecord(3, 1, 1, b"\xff")),  # RFC 7218 names
        ("dane-ta cert full ff", TlsaRecord(2, 0, 0, b"\xff")),
        ("PKIX-EE Cert SHA2-512 ff", TlsaRecord(1, 0, 2, b"\xff")),
        (
            "_25._tcp.mx.example. 3600 IN TLSA 3 1 1 ( aabb\n ccdd )",
            TlsaRecord(3, 1, 1, bytes.fromhex("aabbccdd")),
        ),
        ("255 255 255 00", TlsaRecord(255, 255, 255, b"\x00")),
    ],
)
def test_parse_tlsa(text: str, record: TlsaRecord) -> None:
    assert parse_tlsa(text) == record


@pytest.mark.parametrize(
    "text", ["", "3 1 1", "3 1 1 xyz", "3 1 1 abc", "256 1 1 ab", "3 -1 1 ab", "DANE-XX 1 1 ab"]
)
def test_parse_tlsa_rejects(text: str) -> None:
    with pytest.raises(TlsaError):
        parse_tlsa(text)


def test_presentation_round_trip() -> None:
    record = TlsaRecord(3, 1, 1, bytes(range(32)))
    assert parse_tlsa(str(record)) == record


# --- RFC 7672 §3.1.3: which records count ----------------------------------------------


def test_only_dane_ta_and_dane_ee_are_usable() -> None:
    d32, d64 = b"\x01" * 32, b"\x02" * 64
    keep = [
        TlsaRecord(3, 1, 1, d32),
        TlsaRecord(3, 0, 2, d64),
        TlsaRecord(3, 0, 0, b"full cert"),  # mtype 0 (full) allowed
        TlsaRecord(2, 0, 1, d32),
        TlsaRecord(2, 1, 0, b"full key"),
    ]
    drop = [
        TlsaRecord(0, 0, 1, d32),  # PKIX-TA(0): unusable for SMTP
        TlsaRecord(1, 1, 1, d32),  # PKIX-EE(1): unusable for SMTP
        TlsaRecord(4, 1, 1, d32),  # unknown usage
        TlsaRecord(3, 2, 1, d32),  # unknown selector
        TlsaRecord(3, 1, 3, d32),  # unknown matching type
        TlsaRecord(3, 1, 1, d64),  # SHA-256 with the wrong length never matches
        TlsaRecord(3, 1, 2, d32),
    ]
    assert usable_for_smtp(drop + keep + drop) == keep


def test_pkix_ee_only_means_no_usable_tlsa(test_ca: TestCA) -> None:
    """§3.1.3: an RRset of PKIX-EE(1) records only is "no usable TLSA records"; even a
    matching one authenticates nothing, and the caller decides what that means."""
    pair = test_ca.issue(MX)
    chain = der_of(pair.chain_file)
    records = [TlsaRecord(1, 1, 1, bytes.fromhex(pair.spki_sha256))]
    assert usable_for_smtp(records) == []
    result = verify_dane(records, chain, MX, NOW)
    assert (result.ok, result.matched, result.rfc8460) == (False, None, "tlsa-invalid")
    assert "no usable TLSA" in result.reason


# --- RFC 6698 §2.1.2/§2.1.3: selectors and matching types ------------------------------


@pytest.mark.parametrize("key", ["rsa", "ec"])
def test_spki_is_the_encoded_subject_public_key_info(test_ca: TestCA, key: str) -> None:
    pair = test_ca.issue(MX, key=key)
    leaf = der_of(pair.cert_file)[0]
    assert spki_der(leaf) == spki(x509.load_der_x509_certificate(leaf))
    assert hashlib.sha256(spki_der(leaf)).hexdigest() == pair.spki_sha256


@pytest.mark.parametrize(("selector", "mtype"), [(1, 1), (0, 1), (1, 2), (0, 2), (0, 0), (1, 0)])
def test_match_ee_selectors_and_matching_types(test_ca: TestCA, selector: int, mtype: int) -> None:
    leaf = der_of(test_ca.issue(MX).cert_file)[0]
    other = der_of(test_ca.issue(MX).cert_file)[0]
    record = ee(leaf, selector, mtype)
    assert match_ee(record, leaf)
    assert not match_ee(record, other)


def test_match_ee_against_harness_hashes(test_ca: TestCA) -> None:
    """The harness's CertPair hashes are the 3 0 1 and 3 1 1 data of the leaf."""
    pair = test_ca.issue(MX)
    leaf = der_of(pair.cert_file)[0]
    assert match_ee(parse_tlsa(f"3 0 1 {pair.fingerprint_sha256}"), leaf)
    assert match_ee(parse_tlsa(f"3 1 1 {pair.spki_sha256}"), leaf)
    assert not match_ee(parse_tlsa(f"3 1 1 {pair.fingerprint_sha256}"), leaf)


def test_match_ee_on_garbage_is_false() -> None:
    assert not match_ee(TlsaRecord(3, 1, 1, b"\x00" * 32), b"\x30\x82\xff")
    assert not match_ee(TlsaRecord(3, 1, 0, b""), b"")


# --- RFC 7672 §3.1.1: DANE-EE(3) ------------------------------------------------------


@pytest.mark.parametrize(("selector", "mtype"), [(1, 1), (0, 1), (1, 2), (0, 0)])
@pytest.mark.parametrize("kind", ["expired", "self-signed", "wrong-name", "good"])
def test_dane_ee_ignores_names_dates_and_issuer(
    test_ca: TestCA, kind: str, selector: int, mtype: int
) -> None:
    """§3.1.1: with DANE-EE(3) the name, expiry and issuer of the certificate do not matter."""
    pair = {
        "expired": lambda: test_ca.issue(MX, expired=True),
        "self-signed": lambda: test_ca.self_signed("unrelated.example"),
        "wrong-name": lambda: test_ca.issue("other.example"),
        "good": lambda: test_ca.issue(MX),
    }[kind]()
    chain = der_of(pair.chain_file)
    record = ee(chain[0], selector, mtype)
    result = verify_dane([TlsaRecord(3, 1, 1, b"\x00" * 32), record], chain, MX, NOW)
    assert result.ok, result.reason
    assert (result.matched, result.rfc8460) == (record, "")


def test_dane_ee_must_match_the_leaf_not_the_issuer(test_ca: TestCA) -> None:
    chain = der_of(test_ca.issue(MX).chain_file)
    result = verify_dane([ee(chain[1])], chain, MX, NOW)
    assert not result.ok
    assert result.rfc8460 == "tlsa-invalid"  # RFC 8460 §4.3.2.1


def test_nothing_matches(test_ca: TestCA) -> None:
    chain = der_of(test_ca.issue(MX).chain_file)
    other = der_of(test_ca.issue(MX).chain_file)
    result = verify_dane([ee(other[0]), ta(make("Other Root", ca=True).der)], chain, MX, NOW)
    assert (result.ok, result.rfc8460) == (False, "tlsa-invalid")


def test_no_certificate(test_ca: TestCA) -> None:
    result = verify_dane([ee(der_of(test_ca.issue(MX).cert_file)[0])], [], MX, NOW)
    assert (result.ok, result.rfc8460) == (False, "validation-failure")


# --- RFC 7672 §3.1.2, RFC 7671 §5.2: DANE-TA(2) ---------------------------------------


def test_dane_ta_with_the_harness_ca(test_ca: TestCA) -> None:
    """2 0 1 of the CA that issued the leaf, the CA sent in the chain: authenticated."""
    chain = der_of(test_ca.issue(MX).chain_file)
    record = parse_tlsa(f"2 0 1 {test_ca.ca_fingerprint_sha256}")
    assert match_ta(record, chain) == 1
    result = verify_dane([record], chain, MX, NOW)
    assert (result.ok, result.matched, result.rfc8460) == (True, record, "")


@pytest.mark.parametrize(("selector", "mtype"), [(0, 1), (1, 1), (0, 2), (1, 2), (0, 0), (1, 0)])
def test_dane_ta_selectors_and_matching_types(test_ca: TestCA, selector: int, mtype: int) -> None:
    chain = der_of(test_ca.issue(MX).chain_file)
    assert verify_dane([ta(chain[1], selector, mtype)], chain, MX, NOW).ok


def test_dane_ta_checks_the_name(test_ca: TestCA) -> None:
    """§3.2.3: with DANE-TA the leaf must name the MX host."""
    chain = der_of(test_ca.issue("other.example").chain_file)
    result = verify_dane([ta(chain[1])], chain, MX, NOW)
    assert (result.ok, result.rfc8460) == (False, "certificate-host-mismatch")
    assert MX in result.reason


def test_dane_ta_checks_the_leaf_is_not_expired(test_ca: TestCA) -> None:
    chain = der_of(test_ca.issue(MX, expired=True).chain_file)
    result = verify_dane([ta(chain[1])], chain, MX, NOW)
    assert (result.ok, result.rfc8460) == (False, "certificate-expired")


def test_dane_ta_checks_the_leaf_is_already_valid(test_ca: TestCA) -> None:
    chain = der_of(test_ca.issue(MX, not_yet_valid=True).chain_file)
    result = verify_dane([ta(chain[1])], chain, MX, NOW)
    assert not result.ok
    assert "not yet valid" in result.reason


def test_dane_ta_names_checked_at_the_given_time(test_ca: TestCA) -> None:
    chain = der_of(test_ca.issue(MX).chain_file)
    assert not verify_dane([ta(chain[1])], chain, MX, NOW + timedelta(days=365)).ok
    assert verify_dane([ta(chain[1])], chain, MX, (NOW + timedelta(days=1)).replace(tzinfo=None)).ok


def test_dane_ta_leaf_not_signed_by_the_anchor(tmp_path: Path, test_ca: TestCA) -> None:
    """The anchor is in the chain, but the leaf was issued by another CA: refused."""
    other_ca = TestCA(tmp_path / "other")
    leaf = der_of(other_ca.issue(MX).cert_file)[0]
    anchor = der_of(test_ca.ca_file)[0]
    result = verify_dane([ta(anchor)], [leaf, anchor], MX, NOW)
    assert (result.ok, result.rfc8460) == (False, "validation-failure")
    assert "does not chain" in result.reason


def test_dane_ta_anchor_must_be_presented_unless_the_record_holds_the_key(test_ca: TestCA) -> None:
    """RFC 7671 §5.2.2: a digest names an anchor the server must send; ``2 1 0`` carries
    the key itself, so the leaf's signature can be checked without it."""
    pair = test_ca.issue(MX)
    leaf_only = der_of(pair.cert_file)
    anchor = der_of(test_ca.ca_file)[0]
    missing = verify_dane([ta(anchor, 0, 1)], leaf_only, MX, NOW)
    assert (missing.ok, missing.rfc8460) == (False, "tlsa-invalid")
    assert verify_dane([ta(anchor, 1, 0)], leaf_only, MX, NOW).ok
    assert match_ta(ta(anchor, 1, 0), leaf_only) is None


@pytest.mark.parametrize("key", ["rsa", "ec", "ed25519"])
def test_dane_ta_bare_key_signature_algorithms(key: str) -> None:
    anchor = make("Root", ca=True, key=key)
    leaf = make(MX, anchor, names=(MX,))
    other = make("Other", ca=True, key=key)
    assert verify_dane([ta(anchor.der, 1, 0)], [leaf.der], MX, NOW).ok
    assert not verify_dane([ta(other.der, 1, 0)], [leaf.der], MX, NOW).ok


def test_leaf_matching_a_ta_record_is_no_anchor_unless_self_issued(test_ca: TestCA) -> None:
    """RFC 7671 §5.2: DANE-TA names an issuer; a CA-issued leaf is not its own anchor."""
    chain = der_of(test_ca.issue(MX).chain_file)
    assert match_ta(ta(chain[0]), chain) is None
    assert not verify_dane([ta(chain[0])], chain[:1], MX, NOW).ok
    self_signed = der_of(test_ca.self_signed(MX).cert_file)
    assert match_ta(ta(self_signed[0]), self_signed) == 0
    assert verify_dane([ta(self_signed[0])], self_signed, MX, NOW).ok
    # ...and, being DANE-TA, its name is still checked
    assert not verify_dane([ta(self_signed[0])], self_signed, "mx.other.test", NOW).ok


def test_wildcard_and_reference_names(test_ca: TestCA) -> None:
    """RFC 7672 §3.2.3: "*." matches one label; the TLSA base domain (after CNAME
    expansion) is a reference identifier too."""
    chain = der_of(test_ca.issue("*.example.test").chain_file)
    record = ta(chain[1])
    assert verify_dane([record], chain, "mx.example.test", NOW).ok
    assert verify_dane([record], chain, "MX.Example.Test.", NOW).ok
    assert not verify_dane([record], chain, "a.mx.example.test", NOW).ok
    assert not verify_dane([record], chain, "example.test", NOW).ok
    hosted = der_of(test_ca.issue("mx.provider.test").chain_file)
    assert not verify_dane([ta(hosted[1])], hosted, "mx.customer.test", NOW).ok
    assert verify_dane(
        [ta(hosted[1])], hosted, "mx.customer.test", NOW, reference_names=["mx.provider.test."]
    ).ok


def test_common_name_only_when_no_dns_san(root: Issued) -> None:
    cn_only = make(MX, root)
    assert verify_dane([ta(root.der)], [cn_only.der, root.der], MX, NOW).ok
    san_elsewhere = make(MX, root, names=("other.example",))
    assert not verify_dane([ta(root.der)], [san_elsewhere.der, root.der], MX, NOW).ok


def test_bare_wildcard_on_a_tld_does_not_match(root: Issued) -> None:
    leaf = make("x", root, names=("*.test",))
    assert not verify_dane([ta(root.der)], [leaf.der, root.der], "example.test", NOW).ok


# --- DANE-TA with intermediates (RFC 7671 §5.2.1, RFC 5280 §6.1 in brief) --------------


def test_chain_through_an_intermediate(root: Issued) -> None:
    inter = make("Intermediate", root, ca=True)
    leaf = make(MX, inter, names=(MX,))
    # anchored at the root, or at the intermediate; the order the server sends is free
    assert verify_dane([ta(root.der)], [leaf.der, inter.der, root.der], MX, NOW).ok
    assert verify_dane([ta(root.der)], [leaf.der, root.der, inter.der], MX, NOW).ok
    assert verify_dane([ta(inter.der, 1, 1)], [leaf.der, inter.der], MX, NOW).ok
    # a gap in the chain: the intermediate was not sent
    result = verify_dane([ta(root.der)], [leaf.der, root.der], MX, NOW)
    assert (result.ok, result.rfc8460) == (False, "validation-failure")


def test_end_entity_certificate_cannot_issue(root: Issued) -> None:
    """A certificate without the CA flag signing the leaf: refused (RFC 5280 §6.1.4 (k))."""
    for ca_flag in (False, None):
        posing = make("Not a CA", root, ca=ca_flag)
        leaf = make(MX, posing, names=(MX,))
        result = verify_dane([ta(root.der)], [leaf.der, posing.der, root.der], MX, NOW)
        assert (result.ok, result.rfc8460) == (False, "validation-failure"), ca_flag
        assert "Not a CA" in result.reason


def test_issuer_without_cert_sign_key_usage(root: Issued) -> None:
    inter = make("No Sign", root, ca=True, cert_sign=False)
    leaf = make(MX, inter, names=(MX,))
    result = verify_dane([ta(root.der)], [leaf.der, inter.der, root.der], MX, NOW)
    assert not result.ok
    assert "may not sign" in result.reason


def test_path_length_constraint() -> None:
    strict_root = make("Strict Root", ca=True, path_length=0)
    inter = make("Intermediate", strict_root, ca=True)
    leaf = make(MX, inter, names=(MX,))
    result = verify_dane([ta(strict_root.der)], [leaf.der, inter.der, strict_root.der], MX, NOW)
    assert not result.ok
    assert "path length" in result.reason
    direct = make(MX, strict_root, names=(MX,))
    assert verify_dane([ta(strict_root.der)], [direct.der, strict_root.der], MX, NOW).ok


def test_expired_intermediate_but_anchor_dates_not_checked(root: Issued) -> None:
    old_inter = make("Old Intermediate", root, ca=True, days=(-30, -1))
    leaf = make(MX, old_inter, names=(MX,))
    result = verify_dane([ta(root.der)], [leaf.der, old_inter.der, root.der], MX, NOW)
    assert (result.ok, result.rfc8460) == (False, "certificate-expired")
    # The anchor itself is trusted because DNS names it: its own dates do not matter.
    old_root = make("Old Root", ca=True, days=(-30, -1))
    leaf2 = make(MX, old_root, names=(MX,))
    assert verify_dane([ta(old_root.der)], [leaf2.der, old_root.der], MX, NOW).ok


def test_best_failure_is_reported(test_ca: TestCA, root: Issued) -> None:
    """Of several failing records, the one that got furthest explains the failure."""
    chain = der_of(test_ca.issue("other.example").chain_file)
    records = [ta(root.der), ee(root.der), ta(chain[1])]
    result = verify_dane(records, chain, MX, NOW)
    assert (result.rfc8460, result.matched) == ("certificate-host-mismatch", records[2])


def test_unparseable_certificates(test_ca: TestCA) -> None:
    chain = der_of(test_ca.issue(MX).chain_file)
    assert not verify_dane([ta(chain[1])], [b"\x30\x03\x02\x01\x00", chain[1]], MX, NOW).ok
    # junk among the intermediates is skipped, not fatal
    assert verify_dane([ta(chain[1])], [chain[0], b"junk", chain[1]], MX, NOW).ok


def test_harness_certpair_is_what_the_helpers_expect(test_ca: TestCA) -> None:
    pair: CertPair = test_ca.issue(MX)
    assert pair.chain_file is not None
    assert len(der_of(pair.chain_file)) == 2
    assert sha256(der_of(pair.cert_file)[0]).hex() == pair.fingerprint_sha256


def test_many_mutually_issuing_certificates_cost_little() -> None:
    """A server sending certificates that all issue each other (same name, same key) must
    not make the search try every order of them: each is expanded once."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loop")])

    def looped(serial: int) -> bytes:
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cert.public_bytes(DER)

    chain = [looped(n) for n in range(1, 17)]
    started = time.monotonic()
    result = verify_dane([ta(make("Elsewhere", ca=True).der)], chain, MX, NOW)
    assert not result.ok
    assert time.monotonic() - started < 5.0
