"""Temporary failures are retried, permanent ones bounce, and the sender hears of it."""

from __future__ import annotations

import email

from tests.e2e.world import Customer, GatewayProcess, World
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx


def test_4xx_is_deferred_then_delivered_on_retry(
    gateway: GatewayProcess, customer: Customer, world: World, sender_mx: HarnessMx
) -> None:
    mx = world.domain("busy.test")
    mx.script("rcpt", "450 4.2.1 Mailbox busy, try later")
    qid = gateway.send(customer, ["x@busy.test"])
    shown = gateway.wait_status(qid, {"deferred", "delivered"})
    got = mx.wait_for(1)
    shown = gateway.wait_status(qid, {"delivered"})
    assert got[0].rcpt_to == ["x@busy.test"]
    events = [e["kind"] for e in shown["events"] if e["recipient"] == "x@busy.test"]
    assert events == ["deferred", "delivered"]
    assert shown["recipients"][0]["attempts"] == 2
    assert sender_mx.received == [], "a delivered message produces no notice"


def test_unreachable_mx_is_deferred_not_refused(
    gateway: GatewayProcess, customer: Customer, dns: AuthoritativeDns
) -> None:
    dns.add("down.test", "MX", "10 mx.down.test.")
    dns.add("mx.down.test", "A", "127.0.0.99")  # nothing listens there
    qid = gateway.send(customer, ["x@down.test"])
    shown = gateway.wait_status(qid, {"deferred"})
    rcpt = shown["recipients"][0]
    assert rcpt["enhanced"].startswith("4.")
    assert "127.0.0.99" in rcpt["reply"]


def test_5xx_bounces_with_a_notice_carrying_the_remote_reply(
    gateway: GatewayProcess, customer: Customer, world: World, sender_mx: HarnessMx
) -> None:
    mx = world.domain("strict.test")
    mx.script_rcpt("gone@strict.test", "550 5.1.1 No such user here")
    qid = gateway.send(customer, ["gone@strict.test", "here@strict.test"])
    shown = gateway.wait_status(qid, {"bounced", "delivered"})
    status = {r["address"]: r["status"] for r in shown["recipients"]}
    assert status == {"gone@strict.test": "bounced", "here@strict.test": "delivered"}
    assert mx.wait_for(1)[0].rcpt_to == ["here@strict.test"]
    notice = sender_mx.wait_for(1)[0]
    report = email.message_from_bytes(notice.data)
    parts = {p.get_content_type(): p for p in report.get_payload()}
    machine = parts["message/delivery-status"].as_string()
    assert "Final-Recipient: rfc822; gone@strict.test" in machine
    assert "Status: 5.1.1" in machine
    assert "550 5.1.1 No such user here" in machine
    assert "here@strict.test" not in machine, "only failed recipients are reported"


def test_null_mx_and_nonexistent_domain_bounce_at_once(
    gateway: GatewayProcess, customer: Customer, dns: AuthoritativeDns, sender_mx: HarnessMx
) -> None:
    dns.add("nomail.test", "MX", "0 .")  # RFC 7505
    qid = gateway.send(customer, ["x@nomail.test", "y@does-not-exist.test"])
    shown = gateway.wait_status(qid, {"bounced"})
    by = {r["address"]: r for r in shown["recipients"]}
    assert by["x@nomail.test"]["enhanced"] == "5.1.10"
    assert by["y@does-not-exist.test"]["enhanced"] == "5.1.2"
    # decided from DNS: no server was tried, and the counts say so (not 1 beside [])
    assert [r["attempts"] for r in shown["recipients"]] == [0, 0] and shown["attempts"] == []
    assert sender_mx.wait_for(1)[0].rcpt_to == ["alice@hospital.test"]


def test_never_a_notice_about_a_notice(
    gateway: GatewayProcess, customer: Customer, world: World, sender_mx: HarnessMx
) -> None:
    sender_mx.script("rcpt", "550 5.1.1 alice left", "550 5.1.1 alice left")
    mx = world.domain("strict.test")
    mx.script("rcpt", "550 5.1.1 No such user")
    qid = gateway.send(customer, ["x@strict.test"])
    shown = gateway.wait_status(qid, {"bounced"})
    notice_id = next(e for e in _wait_events(gateway, qid, "notice_failed"))["detail"]["notice_id"]
    notice = gateway.wait_status(notice_id, {"bounced"})
    assert notice["mail_from"] == ""
    assert [e["kind"] for e in notice["events"] if e["kind"].startswith("notice")] == []
    assert shown["recipients"][0]["status"] == "bounced"
    assert sender_mx.received == []


def test_expired_after_max_age_with_a_delay_notice_first(
    make_gateway, dns: AuthoritativeDns, world: World
) -> None:
    gw = make_gateway(delivery__max_age=4.0, notify__delay_warning_after=1.0).start()
    sender_mx = world.domain("hospital.test")
    who = gw.onboard(dns, "Ziekenhuis", "hospital.test")
    mx = world.domain("slow.test")
    mx.script("rcpt", *["451 4.3.0 Try again later"] * 50)
    qid = gw.send(who, ["x@slow.test"])
    shown = gw.wait_status(qid, {"expired"}, timeout=30)
    assert shown["recipients"][0]["enhanced"].startswith("4.")
    notices = sender_mx.wait_for(2, timeout=20)
    actions = []
    for n in notices:
        parts = {p.get_content_type(): p for p in email.message_from_bytes(n.data).get_payload()}
        actions.append(parts["message/delivery-status"].as_string())
    assert "Action: delayed" in actions[0]
    assert "Will-Retry-Until:" in actions[0]
    assert "Action: failed" in actions[1]
    assert mx.received == []


def _wait_events(gateway: GatewayProcess, qid: str, kind: str) -> list[dict]:
    import time

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = [e for e in gateway.message(qid)["events"] if e["kind"] == kind]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event on {qid}")


def test_connection_dropped_mid_data_is_retried(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    mx = world.domain("flaky.test")
    mx.drop_mid_data(1)
    qid = gateway.send(customer, ["x@flaky.test"])
    got = mx.wait_for(1, timeout=20)
    shown = gateway.wait_status(qid, {"delivered"})
    assert got[0].rcpt_to == ["x@flaky.test"]
    kinds = [e["kind"] for e in shown["events"] if e["recipient"]]
    assert kinds == ["deferred", "delivered"]


def test_domain_without_mx_is_delivered_to_its_own_address(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    # RFC 5321 §5.1: no MX records → the domain itself is the mail server (implicit MX).
    mx = world.mx("implicit.test")
    qid = gateway.send(customer, ["x@implicit.test"])
    assert mx.wait_for(1)[0].rcpt_to == ["x@implicit.test"]
    shown = gateway.wait_status(qid, {"delivered"})
    assert shown["attempts"][-1]["mx"] == "implicit.test"


def test_notices_are_copied_to_the_accounts_notify_address(
    gateway: GatewayProcess, dns: AuthoritativeDns, world: World
) -> None:
    sender_mx = world.domain("school.test")
    who = gateway.onboard(dns, "School", "school.test", notify="ict@school.test")
    world.domain("plain.test", "no_starttls")
    qid = gateway.send(who, ["parent@plain.test"], sender="teacher@school.test")
    gateway.wait_status(qid, {"refused_insecure"})
    notice = sender_mx.wait_for(1)[0]
    assert sorted(notice.rcpt_to) == ["ict@school.test", "teacher@school.test"]


def test_hard_bounce_suppresses_the_address_for_the_account(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    from tests.e2e.raw_smtp import open_session

    mx = world.domain("strict.test")
    mx.script_rcpt("gone@strict.test", "550 5.1.1 No such user here")
    gateway.wait_status(gateway.send(customer, ["gone@strict.test"]), {"bounced"})
    s = open_session(gateway, customer)
    assert s.cmd("MAIL FROM:<alice@hospital.test>")[0] == 250
    code, text = s.cmd("RCPT TO:<gone@strict.test>")
    assert (code, text[:5]) == (550, "5.7.1")
    assert "suppressed" in text and "No such user here" in text
    assert s.cmd("RCPT TO:<other@strict.test>")[0] == 250, "only that address"


def test_an_overlong_reply_line_is_explained_in_words(
    gateway: GatewayProcess, customer: Customer, world: World
) -> None:
    """RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets. An MX far past that is
    named, with what it did wrong, in `message show` (and so in the sender's notice)."""
    mx = world.domain("chatty.test")
    mx.script("mail", "250 2.1.0 " + "x" * 70_000)
    qid = gateway.send(customer, ["x@chatty.test"])
    shown = gateway.wait_status(qid, {"deferred", "delivered"})
    failed = [a for a in shown["attempts"] if a["outcome"] == "unreachable"]
    assert failed, shown["attempts"]
    words = "sent a reply line longer than 65536 octets to MAIL (RFC 5321 §4.5.3.1.5 allows 512)"
    assert words in failed[0]["reply"] and failed[0]["reply"].startswith("mx10.chatty.test [")
    assert all("Separator" not in (e["detail"].get("reply") or "") for e in shown["events"])
    shown = gateway.wait_status(qid, {"delivered"})  # the retry meets a well-behaved reply
    assert mx.wait_for(1)[0].rcpt_to == ["x@chatty.test"]
