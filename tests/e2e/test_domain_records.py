"""`secumail domain add` / `domain records` as a newcomer uses them: every record in a form
a web form takes and as a zone-file line, values that work when pasted, and a loud warning
when the gateway's host name is one nobody can look up (`a:localhost` in SPF)."""

from __future__ import annotations

import json
import shlex

from secumail.mail.mta_sts import parse_txt_record
from tests.harness.dns import AuthoritativeDns


def zone_rdata(line: str) -> tuple[str, str]:
    """Owner name and TXT rdata of a `name. IN TXT "…" "…"` line, as an operator's
    DNS server reads it."""
    owner, klass, rtype, rdata = line.split(" ", 3)
    assert (klass, rtype) == ("IN", "TXT") and owner.endswith("."), line
    assert all(len(s.encode()) <= 255 for s in shlex.split(rdata)), line
    return owner, rdata


def test_zone_file_lines_published_as_printed_verify_the_domain(
    make_gateway, dns: AuthoritativeDns
) -> None:
    gw = make_gateway(server__hostname="relay.zho.nl")
    gw.cli("account", "create", "Ziekenhuis")
    added = gw.cli("domain", "add", "Ziekenhuis", "hospital.test")
    assert added["warnings"] == []
    records = {r["name"]: r for r in added["records"]}
    dkim = [r for r in added["records"] if "._domainkey." in r["name"]]
    assert len(dkim) == 2
    rsa = next(r for r in dkim if "k=rsa" in r["value"])
    assert len(rsa["value"]) > 255, "an RSA-2048 key needs more than one string"
    assert rsa["zone"].count('" "') >= 1
    for record in added["records"]:
        owner, rdata = zone_rdata(record["zone"])
        assert owner == record["name"] + "."
        assert rdata == record["rdata"]
        assert "".join(shlex.split(rdata)) == record["value"]
        if record["required"]:
            dns.add(owner, "TXT", rdata)  # the zone-file form, not the plain value
    verified = gw.cli("domain", "verify", "hospital.test")
    assert verified["verified"] and verified["dkim_published"], verified

    assert records["hospital.test"]["value"] == "v=spf1 a:relay.zho.nl ~all"
    # RFC 8461 §3.1: the id printed is one a sender's MTA accepts as published.
    sts = parse_txt_record([records["_mta-sts.hospital.test"]["value"]])
    assert sts is not None and sts.id.isalnum()


def test_a_private_gateway_host_name_is_warned_about_loudly(make_gateway) -> None:
    gw = make_gateway(server__hostname="localhost")
    (init_warning,) = gw.cli("init")["warnings"]  # the first thing `make run` does
    assert "server.hostname is 'localhost'" in init_warning and "secumail init" in init_warning
    gw.cli("account", "create", "Ziekenhuis")

    as_json = gw.cli_process("domain", "add", "Ziekenhuis", "hospital.test", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    (warning,) = data["warnings"]
    assert "server.hostname" in warning and "'localhost'" in warning
    assert "SECUMAIL_SERVER__HOSTNAME" in warning and str(gw.config) in warning
    assert "WARNING: server.hostname is 'localhost'" in as_json.stderr

    human = gw.cli_process("domain", "records", "hospital.test")
    assert human.returncode == 0, human.stderr
    assert "WARNING: server.hostname is 'localhost'" in human.stderr
    assert "WARNING" not in human.stdout  # stdout stays the records, for pasting
    assert "zone file line:" in human.stdout and "value: v=spf1 a:localhost ~all" in human.stdout


def test_rotated_dkim_keys_print_both_forms(make_gateway) -> None:
    gw = make_gateway(server__hostname="relay.zho.nl")
    gw.cli("account", "create", "Ziekenhuis")
    gw.cli("domain", "add", "Ziekenhuis", "hospital.test")
    rotated = gw.cli("domain", "rotate-dkim", "hospital.test")
    for key in rotated["new_keys"]:
        owner, rdata = zone_rdata(key["zone"])
        assert owner == key["name"] + "." and "".join(shlex.split(rdata)) == key["value"]
