"""DKIM signing: canonicalization, h= selection, records, keys (RFC 6376, RFC 8463).

Independent verifiers (dkimpy, OpenDKIM) check the signatures in
tests/integration/test_dkim_interop.py; these tests pin the pieces one by one.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from secumail.mail.dkim import (
    DkimError,
    DkimKey,
    body_hash,
    dns_record,
    generate_ed25519,
    generate_rsa,
    key_from_pem,
    key_to_pem,
    parse_tag_list,
    record_matches,
    relaxed_body,
    relaxed_header,
    sign,
    split_message,
)

EMPTY_SHA256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="  # SHA-256 of zero bytes
MSG = (
    b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@example.org\r\n"
    b"To: carol@example.org\r\n"
    b"Subject: Quarterly\r\n report\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"X-Custom: not signed\r\n"
    b"\r\n"
    b"Hello,\r\n\r\nThe report.\r\n"
)


@pytest.fixture(scope="module")
def rsa_key() -> DkimKey:
    return generate_rsa("example.test", "rsa2024")


@pytest.fixture(scope="module")
def ed_key() -> DkimKey:
    return generate_ed25519("example.test", "ed2024")


def tags_of(field: bytes) -> dict[str, str]:
    """The tags of one DKIM-Signature field, unfolded, whitespace inside values removed."""
    value = field.split(b":", 1)[1].decode("ascii")
    return {k: re.sub(r"\s+", "", v) for k, v in parse_tag_list(value).items()}


def fields_of(signature: bytes) -> list[bytes]:
    return [b"DKIM-Signature:" + f for f in signature.split(b"DKIM-Signature:")[1:]]


# --- canonicalization (RFC 6376 §3.4) -------------------------------------------------


def test_rfc6376_3_4_5_example_relaxed() -> None:
    # RFC 6376 §3.4.5, the relaxed/relaxed example, byte for byte.
    message = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\n D \t E\r\n\r\n\r\n"
    fields, body = split_message(message)
    assert [relaxed_header(f) for f in fields] == [b"a:X", b"b:Y Z"]
    assert relaxed_body(body) == b" C\r\n D E\r\n"


def test_relaxed_header_lowercases_name_only_and_keeps_8bit_value() -> None:
    assert (
        relaxed_header(b"SUBJECT :\t Caf\xc3\xa9  Cr\xc3\xa8me ")
        == b"subject:Caf\xc3\xa9 Cr\xc3\xa8me"
    )


@pytest.mark.parametrize(
    ("body", "canonical"),
    [
        (b"line  with\t\truns \t\r\n", b"line with runs\r\n"),  # §3.4.4 a: WSP runs, line ends
        (b"text\r\n\r\n \r\n\t\r\n\r\n", b"text\r\n"),  # §3.4.4 b: trailing empty lines
        (b"no final crlf", b"no final crlf\r\n"),  # a non-empty body gets a CRLF
        (b"a\r\n\r\nb\r\n", b"a\r\n\r\nb\r\n"),  # empty lines inside stay
        (b"", b""),  # empty body stays empty in relaxed (unlike simple: CRLF)
        (b"\r\n\r\n\r\n", b""),  # only empty lines: empty
        (b" \t \r\n", b""),  # a whitespace-only line is an empty line
    ],
)
def test_relaxed_body(body: bytes, canonical: bytes) -> None:
    assert relaxed_body(body) == canonical


def test_body_hash_of_empty_body_is_sha256_of_nothing() -> None:
    # RFC 6376 §3.4.4 with errata: relaxed leaves an empty body empty, so bh=SHA-256("").
    assert body_hash(b"") == EMPTY_SHA256
    assert body_hash(b"\r\n") == EMPTY_SHA256
    assert body_hash(b"x\r\n") != EMPTY_SHA256


def test_header_section_ends_at_first_blank_line() -> None:
    fields, body = split_message(b"From: a@example.test\r\n\r\nSubject: not a header\r\n")
    assert fields == [b"From: a@example.test"]
    assert body == b"Subject: not a header\r\n"
    assert split_message(b"From: a@example.test\r\n") == ([b"From: a@example.test"], b"")


def test_malformed_header_is_an_error_not_a_crash() -> None:
    with pytest.raises(DkimError):
        split_message(b"not a header line\r\n\r\nbody\r\n")
    with pytest.raises(DkimError):
        split_message(b" continuation first\r\nFrom: a@example.test\r\n\r\n")


# --- the signature field ----------------------------------------------------------------


def test_h_lists_present_headers_and_one_extra_per_oversigned_name(rsa_key: DkimKey) -> None:
    tags = tags_of(sign(MSG, [rsa_key], timestamp=1_700_000_000))
    h = tags["h"].split(":")
    assert h.count("from") == 2  # present once, oversigned once (§8.15)
    assert h.count("to") == 3  # two instances (§5.4.2) + one
    assert h.count("subject") == 2
    assert h.count("cc") == 1 and h.count("reply-to") == 1  # absent: adding one breaks it
    assert "sender" not in h  # absent and not oversigned: nothing to say
    assert "received" not in h and "x-custom" not in h


def test_h_without_oversigning(rsa_key: DkimKey) -> None:
    tags = tags_of(sign(MSG, [rsa_key], signed_headers=["From", "to"], oversign=()))
    assert tags["h"] == "from:to:to"


def test_tags(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    out = sign(MSG, [rsa_key, ed_key], timestamp=1_700_000_000, expire_after=3600)
    first, second = fields_of(out)
    t1, t2 = tags_of(first), tags_of(second)
    assert next(iter(t1)) == "v" and t1["v"] == "1"
    assert (t1["a"], t2["a"]) == ("rsa-sha256", "ed25519-sha256")  # keys in the order given
    assert t1["c"] == "relaxed/relaxed"
    assert (t1["d"], t1["s"], t2["s"]) == ("example.test", "rsa2024", "ed2024")
    assert (t1["t"], t1["x"]) == ("1700000000", "1700003600")
    assert t1["bh"] == t2["bh"] == body_hash(b"Hello,\r\n\r\nThe report.\r\n")
    assert "l" not in t1  # the whole body is covered
    assert len(base64.b64decode(t1["b"])) == 256 and len(base64.b64decode(t2["b"])) == 64
    assert "x" not in tags_of(sign(MSG, [rsa_key]))


def test_output_is_folded_crlf_ascii_ready_to_prepend(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    out = sign(MSG, [rsa_key, ed_key])
    assert out.endswith(b"\r\n") and out.isascii()
    lines = out[:-2].split(b"\r\n")
    assert all(len(line) <= 78 for line in lines)
    assert [line for line in lines if not line.startswith(b"\t")] == [
        line for line in lines if line.startswith(b"DKIM-Signature: ")
    ]
    assert len(fields_of(out)) == 2
    fields, _ = split_message(out + MSG)
    assert len(fields) == 2 + len(split_message(MSG)[0])  # parses as two more header fields


def _signed_data(field: bytes, canonical_headers: bytes) -> bytes:
    """RFC 6376 §3.7 by hand: canonical h= fields, then this field with b= emptied."""
    unfolded = re.sub(rb"\r\n[ \t]", b" ", field.rstrip(b"\r\n"))
    emptied = re.sub(rb"([; ]b=)[^;]*$", rb"\1", unfolded)
    value = re.sub(rb"[ \t]+", b" ", emptied.split(b":", 1)[1]).strip()
    return canonical_headers + b"dkim-signature:" + value


def test_signature_input_rsa_is_pkcs1v15_sha256(rsa_key: DkimKey) -> None:
    msg = b"From:  a@example.test \r\nSubject: Hi\r\n\tthere\r\n\r\nbody\r\n"
    field = sign(msg, [rsa_key], signed_headers=["From", "Subject"], oversign=())
    data = _signed_data(field, b"from:a@example.test\r\nsubject:Hi there\r\n")
    sig = base64.b64decode(tags_of(field)["b"])
    public = rsa_key.private_key.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())


def test_signature_input_ed25519_signs_the_sha256_digest(ed_key: DkimKey) -> None:
    # RFC 8463 §3: PureEdDSA over SHA-256(data), not over the data itself.
    msg = b"From: a@example.test\r\nSubject: Hi\r\n\r\nbody\r\n"
    field = sign(msg, [ed_key], signed_headers=["From", "Subject"], oversign=("From",))
    data = _signed_data(field, b"from:a@example.test\r\nsubject:Hi\r\n")
    sig = base64.b64decode(tags_of(field)["b"])
    public = ed_key.private_key.public_key()
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(sig, hashlib.sha256(data).digest())
    with pytest.raises(InvalidSignature):
        public.verify(sig, data)


def test_bottom_up_instance_selection(ed_key: DkimKey) -> None:
    # §5.4.2: the first "to" in h= takes the last To field.
    msg = b"From: a@example.test\r\nTo: first@x.test\r\nTo: second@x.test\r\n\r\n"
    field = sign(msg, [ed_key], signed_headers=["From", "To"], oversign=())
    data = _signed_data(field, b"from:a@example.test\r\nto:second@x.test\r\nto:first@x.test\r\n")
    sig = base64.b64decode(tags_of(field)["b"])
    public = ed_key.private_key.public_key()
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(sig, hashlib.sha256(data).digest())


def test_signing_is_deterministic_for_fixed_time(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    a = sign(MSG, [rsa_key, ed_key], timestamp=1_700_000_000)
    assert a == sign(MSG, [rsa_key, ed_key], timestamp=1_700_000_000)
    assert a != sign(
        MSG.replace(b"The report", b"The rep0rt"), [rsa_key, ed_key], timestamp=1_700_000_000
    )


def test_8bit_headers_and_no_body(ed_key: DkimKey) -> None:
    msg = b"From: J\xc3\xb6rg <j\xc3\xb6rg@example.test>\r\nSubject: \xe2\x82\xac 5\r\n"
    assert tags_of(sign(msg, [ed_key]))["bh"] == EMPTY_SHA256


def test_refuses_what_cannot_verify(ed_key: DkimKey) -> None:
    with pytest.raises(DkimError, match="no From"):
        sign(b"Subject: x\r\n\r\nbody\r\n", [ed_key])
    with pytest.raises(DkimError, match="include From"):
        sign(MSG, [ed_key], signed_headers=["Subject"], oversign=())
    with pytest.raises(DkimError, match="expire_after"):
        sign(MSG, [ed_key], expire_after=0)


# --- DNS records ------------------------------------------------------------------------


def test_dns_record_rsa(rsa_key: DkimKey) -> None:
    name, value = dns_record(rsa_key)
    assert name == "rsa2024._domainkey.example.test"
    assert value.startswith("v=DKIM1; k=rsa; p=")
    public = serialization.load_der_public_key(base64.b64decode(value.split("p=")[1]))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048


def test_dns_record_ed25519_is_raw_32_bytes(ed_key: DkimKey) -> None:
    # RFC 8463 §4.2: the bare public key, not a SubjectPublicKeyInfo.
    name, value = dns_record(ed_key)
    assert name == "ed2024._domainkey.example.test"
    assert value.startswith("v=DKIM1; k=ed25519; p=")
    raw = base64.b64decode(value.split("p=")[1])
    assert raw == ed_key.private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def test_record_matches_own_record_in_any_layout(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    for key in (rsa_key, ed_key):
        value = dns_record(key)[1]
        assert record_matches(key, value)
        p = value.split("p=")[1]
        assert record_matches(key, f"v=DKIM1;\tk={value.split('k=')[1].split(';')[0]} ;p={p};")
        split = " ".join(f'"{value[i : i + 100]}"' for i in range(0, len(value), 100))
        assert record_matches(key, split)  # zone-file form, several strings
        assert record_matches(key, value.replace("p=", "p= ").replace(p[:20], p[:20] + " \t"))
    rsa_p = dns_record(rsa_key)[1].split("p=")[1]
    assert record_matches(rsa_key, f"p={rsa_p}")  # v= and k=rsa are optional


def test_record_matches_rejects(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    other = generate_ed25519("example.test", "ed2024")
    value = dns_record(ed_key)[1]
    assert not record_matches(other, value)  # another key
    assert not record_matches(rsa_key, value)  # k=ed25519 against an RSA key
    assert not record_matches(ed_key, "v=DKIM1; k=ed25519; p=")  # revoked
    assert not record_matches(ed_key, value.replace("DKIM1", "DKIM2"))
    assert not record_matches(ed_key, value.replace("v=DKIM1; ", "") + "; v=DKIM1")  # v= not first
    assert not record_matches(ed_key, value + "; h=sha1")
    assert not record_matches(ed_key, value + "; k=ed25519")  # duplicate tag
    assert not record_matches(ed_key, "v=DKIM1; k=ed25519; p=!!notbase64")
    assert not record_matches(ed_key, "garbage")


# --- keys ---------------------------------------------------------------------------------


def test_pem_round_trip(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    for key in (rsa_key, ed_key):
        pem = key_to_pem(key)
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
        again = key_from_pem(key.domain, key.selector, key.algorithm, pem)
        assert dns_record(again) == dns_record(key)
        assert sign(MSG, [again], timestamp=1) == sign(MSG, [key], timestamp=1)


def test_key_checks(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    with pytest.raises(DkimError, match="Ed25519"):
        key_from_pem("example.test", "s", "ed25519-sha256", key_to_pem(rsa_key))
    with pytest.raises(DkimError, match="unknown"):
        DkimKey("example.test", "s", "rsa-sha1", rsa_key.private_key)
    with pytest.raises(DkimError, match="unreadable"):
        key_from_pem("example.test", "s", "rsa-sha256", b"not a pem")
    with pytest.raises(DkimError, match="selector"):
        DkimKey("example.test", "bad selector", "ed25519-sha256", ed_key.private_key)
    with pytest.raises(DkimError, match="domain"):
        DkimKey("not a domain", "s", "ed25519-sha256", ed_key.private_key)
    idn = DkimKey("Bücher.example", "s", "ed25519-sha256", ed_key.private_key)
    assert idn.domain == "xn--bcher-kva.example"  # d= in A-labels


def test_invalid_header_name_to_sign_is_refused(ed_key: DkimKey) -> None:
    with pytest.raises(DkimError, match="field name"):
        sign(MSG, [ed_key], signed_headers=["From", "X Bad"])
