"""Webhooks: events to the customer's HTTPS endpoint, signed, retried for a day.

Events come from the records Secumail keeps anyway — recipient status events of messages
(`delivered`, `deferred`, `bounced`, `refused_insecure`, `rejected`, `expired`) and
account events (`suppressed`, and the alerts of `pipeline.account_alerts`:
`domain_dns_error`, `sender_tls_warning`, `auth_failures`) — read after a durable cursor, so
no event is lost or sent twice to a subscription (deliveries are unique per event). Events
of the gateway's own mail (null sender: notices, alert mails) are not sent.

Each POST carries `Secumail-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret,
"<t>.<body>")>`; receivers check it and reject a `t` older than five minutes (replay).
Targets must be https and resolve to public addresses (no SSRF into the operator's
network) unless `api.webhooks_allow_private`; the connection goes to the address that was
checked (no DNS rebinding). Failures retry with growing delays for 24 hours.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from secumail.errors import DnsError
from secumail.mail.ip_scope import is_public
from secumail.net.dns import Resolver
from secumail.net.https_client import HttpsError, request
from secumail.net.tls import verifying_client_context
from secumail.store.webhooks import Webhook, WebhookDelivery, WebhookStore

log = logging.getLogger("secumail.webhooks")

MESSAGE_EVENTS = {"delivered", "deferred", "bounced", "refused_insecure", "rejected", "expired"}
ACCOUNT_EVENTS = {"suppressed", "domain_dns_error", "sender_tls_warning", "auth_failures"}
BACKOFF = (30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800)
GIVE_UP_AFTER = 24 * 3600


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class UnsafeTarget(Exception):
    pass


def check_target(url: str, addresses: list[str], *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise UnsafeTarget("webhook URLs must be https")
    if not addresses:
        raise UnsafeTarget(f"{parts.hostname} does not resolve")
    if allow_private:
        return
    for a in addresses:
        if not is_public(a):
            raise UnsafeTarget(f"{parts.hostname} resolves to a non-public address {a}")


class WebhookDispatcher:
    def __init__(
        self,
        store: WebhookStore,
        resolver: Resolver,
        *,
        trust_file: Path | None,
        allow_private: bool,
        port_override: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.resolver = resolver
        self.allow_private = allow_private
        self.ssl_context = verifying_client_context(trust_file)
        self.port_override = port_override
        self.timeout = timeout

    async def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                await self.collect()
                await self.deliver_due()
            except Exception:
                log.exception("webhook dispatch failed; retrying")
            await asyncio.sleep(interval)

    async def collect(self) -> int:
        """Turn new events into deliveries for the subscriptions that want them."""
        hooks: dict[str, list[Webhook]] = {}
        for h in await self.store.subscriptions():
            hooks.setdefault(h.account_id, []).append(h)
        if not hooks:
            # Nobody subscribed: events of this time are not for later subscriptions either.
            await self.store.skip_to_newest()
            return 0
        msg_cursor = await self.store.cursor("webhooks:events")
        acc_cursor = await self.store.cursor("webhooks:account_events")
        msg_events, acc_events = await self.store.new_events(msg_cursor, acc_cursor)
        if not msg_events and not acc_events:
            return 0
        out: list[tuple[str, str, str, str]] = []
        for e in msg_events:
            if (
                e["kind"] not in MESSAGE_EVENTS
                or e["dsn_of"]
                or not e["mail_from"]  # the gateway's own mail: notices, alert mails
                or e["account_id"] not in hooks
            ):
                continue
            detail = json.loads(e["detail"])
            data: dict[str, Any] = {
                "message_id": e["message_id"],
                "recipient": e["recipient"],
                "reply": detail.get("reply"),
                "reasons": detail.get("reasons", []),
                "metadata": json.loads(e["api_metadata"]) if e["api_metadata"] else {},
            }
            if detail.get("late"):
                data["late"] = True  # a bounce after the delivery (the inbound MX)
            payload = {
                "id": f"evt_m{e['id']}",
                "type": e["kind"],
                "created_at": e["at"],
                "data": data,
            }
            out += self._for(hooks.get(e["account_id"], []), payload)
        for e in acc_events:
            if e["kind"] not in ACCOUNT_EVENTS or e["account_id"] not in hooks:
                continue
            payload = {
                "id": f"evt_a{e['id']}",
                "type": e["kind"],
                "created_at": e["at"],
                "data": json.loads(e["detail"]),
            }
            out += self._for(hooks.get(e["account_id"], []), payload)
        cursors = {}
        if msg_events:
            cursors["webhooks:events"] = msg_events[-1]["id"]
        if acc_events:
            cursors["webhooks:account_events"] = acc_events[-1]["id"]
        await self.store.enqueue(out, cursors)
        return len(out)

    @staticmethod
    def _for(hooks: list[Webhook], payload: dict[str, Any]) -> list[tuple[str, str, str, str]]:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        return [
            (h.id, payload["id"], payload["type"], body)
            for h in hooks
            if payload["type"] in h.events
        ]

    async def deliver_due(self) -> None:
        due = await self.store.due()
        await asyncio.gather(*(self._deliver(d) for d in due))

    async def _deliver(self, d: WebhookDelivery) -> None:
        hook = await self.store.get(d.webhook_id)
        if hook is None:
            return
        body = d.payload.encode()
        now = int(time.time())
        try:
            host = urlsplit(hook.url).hostname or ""
            addresses = await self.resolver.addresses(host)
            check_target(hook.url, addresses, allow_private=self.allow_private)
            port = self.port_override or urlsplit(hook.url).port or 443
            status, _h, _b = await request(
                "POST",
                hook.url,
                body=body,
                content_type="application/json",
                ssl_context=self.ssl_context,
                timeout=self.timeout,
                connect_to=(addresses[0], port),
                headers={
                    "Secumail-Signature": signature(hook.secret, now, body),
                    "Secumail-Event": d.event,
                    "Secumail-Delivery": str(d.id),
                },
            )
            ok, error = 200 <= status < 300, None if 200 <= status < 300 else f"HTTP {status}"
        except (UnsafeTarget, DnsError) as exc:
            status, ok, error = None, False, str(exc)
        except HttpsError as exc:
            status, ok, error = None, False, str(exc)
        next_at = None
        if not ok and time.time() - d.created_at < GIVE_UP_AFTER:
            next_at = time.time() + BACKOFF[min(d.attempts, len(BACKOFF) - 1)]
        await self.store.record_attempt(d.id, ok=ok, status=status, error=error, next_at=next_at)
        if not ok:
            log.warning("webhook %s delivery %s failed: %s", hook.id, d.id, error)
