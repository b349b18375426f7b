"""Every message signed: DKIM (RFC 6376/8463), S/MIME (RFC 8551), delivery evidence.

Checked by implementations that did not sign: dkimpy's verifier, `openssl smime`, and the
`secumail evidence verify` command working only from the exported file.
"""

from __future__ import annotations

import email
import json
import re
import subprocess
from pathlib import Path

import dkim
import dns.message
import dns.query
import dns.rdatatype

from tests.e2e.world import Customer, GatewayProcess, World, _txt, make_message
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx


def dns_txt(server: AuthoritativeDns):
    """A dkimpy `dnsfunc` that asks the harness DNS (no system resolver involved)."""

    def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
        qname = name.decode() if isinstance(name, bytes) else name
        response = dns.query.udp(
            dns.message.make_query(qname, "TXT"), "127.0.0.1", port=server.port, timeout=timeout
        )
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        return None

    return lookup


def signatures(data: bytes) -> list[dict[str, str]]:
    msg = email.message_from_bytes(data)
    out = []
    for value in msg.get_all("DKIM-Signature") or []:
        tags = dict(
            (k.strip(), v.strip())
            for k, _, v in (t.partition("=") for t in re.sub(r"\s+", "", value).split(";"))
            if k
        )
        out.append(tags)
    return out


def verify_all(data: bytes, server: AuthoritativeDns) -> bool:
    """True when every DKIM-Signature on the message verifies (dkimpy, one at a time)."""
    count = len(signatures(data))
    d = dkim.DKIM(data)
    try:
        return count > 0 and all(d.verify(idx=i, dnsfunc=dns_txt(server)) for i in range(count))
    except dkim.DKIMException:  # dkimpy raises on some failures (body hash) instead of False
        return False


def test_delivered_message_carries_rsa_and_ed25519_signatures_that_verify(
    gateway: GatewayProcess, customer: Customer, world: World, dns: AuthoritativeDns
) -> None:
    mx = world.domain("clinic.test")
    gateway.send(customer, ["dr@clinic.test"], subject="Lab results")
    got = mx.wait_for(1)[0].data
    sigs = signatures(got)
    assert [s["a"] for s in sigs] == ["rsa-sha256", "ed25519-sha256"]
    assert {s["d"] for s in sigs} == {"hospital.test"}
    assert all(s["c"] == "relaxed/relaxed" for s in sigs)
    h = sigs[0]["h"].lower().split(":")
    assert h.count("from") == 2, "From is over-signed (RFC 6376 §8.15)"
    assert verify_all(got, dns)
    tampered_body = got.replace(b"this is private.", b"this is privatE.")
    assert not verify_all(tampered_body, dns)
    tampered_subject = got.replace(b"Subject: Lab results", b"Subject: Lab resultz")
    assert not verify_all(tampered_subject, dns)
    added_from = b"From: mallory@evil.test\r\n" + got
    assert not verify_all(added_from, dns)


def test_missing_date_and_message_id_are_added_before_signing(
    gateway: GatewayProcess, customer: Customer, world: World, dns: AuthoritativeDns
) -> None:
    mx = world.domain("clinic.test")
    bare = b"From: alice@hospital.test\r\nTo: x@clinic.test\r\nSubject: bare\r\n\r\nhi\r\n"
    gateway.send(customer, ["x@clinic.test"], body=bare)
    got = email.message_from_bytes(mx.wait_for(1)[0].data)
    assert got["Date"] and got["Message-ID"]
    assert "date" in signatures(mx.received[0].data)[0]["h"].lower()
    assert verify_all(mx.received[0].data, dns)


def test_domain_without_published_dkim_key_is_rejected_with_a_notice(
    gateway: GatewayProcess,
    customer: Customer,
    world: World,
    dns: AuthoritativeDns,
    sender_mx: HarnessMx,
) -> None:
    mx = world.domain("clinic.test")
    for record in gateway.cli("domain", "records", "hospital.test")["records"]:
        if "DKIM" in record["purpose"]:
            dns.remove(record["name"], "TXT")
    checked = gateway.cli("domain", "verify", "hospital.test", check=False)
    assert checked["dkim_published"] is False
    qid = gateway.send(customer, ["x@clinic.test"])
    shown = gateway.wait_status(qid, {"rejected"})
    assert "no published DKIM key for hospital.test" in shown["recipients"][0]["reply"]
    assert shown["recipients"][0]["attempts"] == 0 and shown["attempts"] == [], "never tried"
    notice = sender_mx.wait_for(1)[0]
    assert b"Status: 5.7.0" in notice.data
    assert mx.received == [], "never signed with a wrong key, never sent unsigned"


def test_gateway_domain_signs_when_the_account_allows_it(
    gateway: GatewayProcess, customer: Customer, world: World, dns: AuthoritativeDns
) -> None:
    mx = world.domain("clinic.test")
    for record in gateway.cli("domain", "records", "hospital.test")["records"]:
        if "DKIM" in record["purpose"]:
            dns.remove(record["name"], "TXT")
    gateway.cli("domain", "verify", "hospital.test", check=False)
    for record in gateway.cli("domain", "records", "gw.secumail.test")["records"]:
        if record["required"]:
            dns.add(record["name"], "TXT", _txt(record["value"]))
    assert gateway.cli("domain", "verify", "gw.secumail.test")["dkim_published"]
    gateway.cli("account", "update", "Ziekenhuis", "--gateway-dkim", "on")
    qid = gateway.send(customer, ["x@clinic.test"])
    gateway.wait_status(qid, {"delivered"})
    got = mx.received[0].data
    assert {s["d"] for s in signatures(got)} == {"gw.secumail.test"}
    assert verify_all(got, dns)


def test_rotation_keeps_signing_with_published_keys_until_the_new_ones_are_published(
    gateway: GatewayProcess, customer: Customer, world: World, dns: AuthoritativeDns
) -> None:
    mx = world.domain("clinic.test")
    old = {s["s"] for s in signatures(_deliver(gateway, customer, mx, 1))}
    rotated = gateway.cli("domain", "rotate-dkim", "hospital.test")
    new = {k["selector"] for k in rotated["new_keys"]}
    assert new.isdisjoint(old)
    assert {s["s"] for s in signatures(_deliver(gateway, customer, mx, 2))} == old, (
        "new keys not yet published"
    )
    for k in rotated["new_keys"]:
        dns.add(k["name"], "TXT", _txt(k["value"]))
    gateway.cli("domain", "verify", "hospital.test")
    # The gateway caches signing keys briefly; a fresh process sees the change at once.
    gateway.stop()
    gateway.start()
    got = _deliver(gateway, customer, mx, 3)
    assert {s["s"] for s in signatures(got)} == new
    assert verify_all(got, dns)
    for selector in old:
        gateway.cli("domain", "retire-dkim", "hospital.test", selector)
    listed = gateway.cli("domain", "records", "hospital.test")["records"]
    listed_selectors = {r["name"].split(".")[0] for r in listed if "._domainkey." in r["name"]}
    assert listed_selectors == new, "retired keys are no longer listed"


def _deliver(gateway: GatewayProcess, customer: Customer, mx: HarnessMx, n: int) -> bytes:
    gateway.send(customer, [f"p{n}@clinic.test"])
    return mx.wait_for(n)[n - 1].data


def test_smime_signed_message_verifies_with_openssl_against_the_exported_root(
    gateway: GatewayProcess, customer: Customer, world: World, tmp_path: Path, dns: AuthoritativeDns
) -> None:
    mx = world.domain("clinic.test")
    gateway.cli("account", "update", "Ziekenhuis", "--smime", "on")
    root = gateway.cli("ca", "export-root")["root_pem"]
    (tmp_path / "root.pem").write_text(root)
    gateway.send(customer, ["x@clinic.test"], subject="Signed")
    got = mx.wait_for(1)[0].data
    msg = email.message_from_bytes(got)
    assert msg.get_content_type() == "multipart/signed"
    assert msg["Subject"] == "Signed" and "alice@hospital.test" in msg["From"]
    assert verify_all(got, dns), "DKIM is applied after S/MIME and covers it"
    (tmp_path / "signed.eml").write_bytes(got)
    ok = subprocess.run(
        [
            "openssl",
            "smime",
            "-verify",
            "-in",
            str(tmp_path / "signed.eml"),
            "-CAfile",
            str(tmp_path / "root.pem"),
        ],
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert b"this is private." in ok.stdout
    signer = subprocess.run(
        ["openssl", "smime", "-pk7out", "-in", str(tmp_path / "signed.eml")],
        capture_output=True,
        timeout=30,
    )
    certs = subprocess.run(
        ["openssl", "pkcs7", "-print_certs", "-noout"], input=signer.stdout, capture_output=True
    )
    assert b"alice@hospital.test" in certs.stdout
    # Our CA issued a certificate: a key event in the audit log, with its fingerprint.
    issued = gateway.cli("audit", "list", "--kind", "smime_issued")
    assert [e["subject"] for e in issued] == ["alice@hospital.test"], issued
    assert len(issued[0]["detail"]["sha256"]) == 64
    (tmp_path / "tampered.eml").write_bytes(got.replace(b"this is private.", b"this is privatE."))
    bad = subprocess.run(
        [
            "openssl",
            "smime",
            "-verify",
            "-in",
            str(tmp_path / "tampered.eml"),
            "-CAfile",
            str(tmp_path / "root.pem"),
        ],
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode != 0


def test_delivery_evidence_exports_and_verifies_and_detects_tampering(
    gateway: GatewayProcess, customer: Customer, world: World, tmp_path: Path
) -> None:
    mx = world.domain("clinic.test")
    qid = gateway.send(customer, ["a@clinic.test", "b@clinic.test"])
    gateway.wait_status(qid, {"delivered"})
    delivered = mx.wait_for(1)[0]
    exported = gateway.cli("evidence", "export", qid)
    assert sorted(e["recipient"] for e in exported["evidence"]) == [
        "a@clinic.test",
        "b@clinic.test",
    ]
    record = exported["evidence"][0]["record"]
    attempt = gateway.message(qid)["attempts"][-1]
    assert record["mx_host"] == "mx10.clinic.test" and record["mx_ip"] == attempt["ip"]
    assert record["route"] == "verified" and record["tls_version"] == delivered.tls_version
    assert record["peer_cert_sha256"] == attempt["cert_fingerprint"]
    assert record["remote_reply"].startswith("250")
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(exported))
    (tmp_path / "delivered.eml").write_bytes(delivered.data)
    ok = gateway.cli_process(
        "evidence", "verify", str(path), "--message", str(tmp_path / "delivered.eml")
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "signature valid" in ok.stdout and "matches" in ok.stdout
    (tmp_path / "changed.eml").write_bytes(delivered.data.replace(b"private", b"PRIVATE"))
    changed = gateway.cli_process(
        "evidence", "verify", str(path), "--message", str(tmp_path / "changed.eml")
    )
    assert changed.returncode == 1 and "does NOT match" in changed.stdout
    forged = json.loads(json.dumps(exported))
    token = forged["evidence"][0]["token"]
    head, payload, sig = token.split(".")
    forged["evidence"][0]["token"] = (
        f"{head}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{sig}"
    )
    path.write_text(json.dumps(forged))
    bad = gateway.cli_process("evidence", "verify", str(path))
    assert bad.returncode == 1, bad.stdout


def test_no_evidence_for_undelivered_recipients(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    world.domain("plain.test", "no_starttls")
    qid = gateway.send(customer, ["x@plain.test"])
    gateway.wait_status(qid, {"refused_insecure"})
    out = gateway.cli_process("evidence", "export", qid)
    assert out.returncode == 1 and "no delivery evidence" in out.stderr


def test_make_message_helper_is_unsigned() -> None:
    assert b"DKIM-Signature" not in make_message("a@b.test", ["c@d.test"], "s")


def test_operator_root_ca_can_be_imported_and_signs_smime(
    gateway: GatewayProcess, customer: Customer, world: World, tmp_path: Path
) -> None:
    mx = world.domain("clinic.test")
    key, cert = tmp_path / "op-root.key", tmp_path / "op-root.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "30",
            "-subj",
            "/O=Zorggroep/CN=Zorggroep Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        check=True,
        capture_output=True,
    )
    refused = gateway.cli_process("ca", "import-root", str(cert), str(key))
    assert refused.returncode == 1 and "--replace" in refused.stderr
    gateway.cli("ca", "import-root", str(cert), str(key), "--replace")
    assert gateway.cli("ca", "export-root")["root_pem"] == cert.read_text()
    gateway.cli("account", "update", "Ziekenhuis", "--smime", "on")
    gateway.stop()
    gateway.start()
    gateway.send(customer, ["x@clinic.test"])
    (tmp_path / "signed.eml").write_bytes(mx.wait_for(1)[0].data)
    ok = subprocess.run(
        ["openssl", "smime", "-verify", "-in", str(tmp_path / "signed.eml"), "-CAfile", str(cert)],
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
