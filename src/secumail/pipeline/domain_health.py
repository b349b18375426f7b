"""The daily health check of every customer domain: gather the facts, judge, keep, tell.

The facts come from the gateway's resolver (`net.dns.Resolver`: TXT, MX with the DNSSEC
status) and, for the customer's own inbound mail, from `pipeline.preflight.Preflight`,
the same live probe `secumail check` runs (STARTTLS, TLS version, certificate, DANE,
MTA-STS). `mail.domain_health` judges them. The report is kept as metadata
(`store.domain_health`) and the account is told through `AccountAlerts`:

- one alert per domain (`about` = the domain): raised when a sending check fails (the
  mail lists every failing check), resolved when none fails any more. While it is open,
  a change in *which* checks fail tells nobody again; the stored report and `domain show`
  always have the current list.
- a DNS lookup that fails temporarily (SERVFAIL, timeout) is no answer: the check shows
  it, and the alert is neither raised nor resolved on that round.
- the check watches and changes nothing else: a DKIM record that disappears does not stop
  signing (a DNS glitch at night must not stop a hospital's mail); the alert asks the
  customer to publish it again, and `domain verify` is what marks keys published.

`run()` is the loop `secumail serve` runs in its first process: every verified domain once
per `domains.health_interval`, spread over the interval so they do not all run at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from secumail.errors import DnsPermanentError, DnsTemporaryError, NotFound
from secumail.mail import domain_health as dh
from secumail.mail.dns_records import spf_mechanism
from secumail.net.dns import Resolver
from secumail.pipeline.account_alerts import AccountAlerts, AlertKind
from secumail.pipeline.domain_setup import VERIFY_LABEL, VERIFY_PREFIX
from secumail.pipeline.preflight import Preflight
from secumail.pki.dkim_keyring import DkimKeyring
from secumail.store.domain_health import DomainHealthStore
from secumail.store.metadata import MetadataStore
from secumail.store.records import Domain

log = logging.getLogger("secumail.domain_health")

DNS_FAILURE = "dns_failure"


class DomainHealth:
    def __init__(
        self,
        store: MetadataStore,
        reports: DomainHealthStore,
        keyring: DkimKeyring,
        resolver: Resolver,
        preflight: Preflight,
        alerts: AccountAlerts,
        *,
        hostname: str,
        gateway_domain: str,
        bounce_addresses: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.reports = reports
        self.keyring = keyring
        self.resolver = resolver
        self.preflight = preflight
        self.alerts = alerts
        self.hostname = hostname
        self.gateway_domain = gateway_domain
        # With the inbound MX the return path is bounce+…@hostname (mail/verp.py), else
        # the sender's own address: SPF's identity for DMARC alignment.
        self.bounce_addresses = bounce_addresses
        self.clock = clock
        self._tried: dict[str, float] = {}

    async def last(self, name: str) -> dh.HealthReport | None:
        return await self.reports.get(name)

    async def check(self, name: str, *, inbound: bool = True, tell: bool = True) -> dh.HealthReport:
        """Check `name` now, keep the report, and (`tell`) raise or resolve its alert.
        Without `inbound` the MX probe is skipped and the last report's inbound part kept
        (`domain verify` does this: DNS only, quick). NotFound when it is no customer
        domain."""
        domain = await self.store.get_domain(name)
        previous = await self.reports.get(name)
        checks = await self._sending(domain)
        if inbound:
            checks += await self._inbound(name)
        else:
            checks += previous.part(dh.Part.INBOUND) if previous else []
        watched = previous.watched if previous else frozenset()
        report = dh.HealthReport(name, self.clock(), checks, watched)
        await self.reports.save(domain.account_id, report)
        if tell:
            await self.tell(domain.account_id, report)
        return report

    async def tell(self, account_id: str, report: dh.HealthReport) -> bool:
        """Raise the domain's alert when a sending check fails, resolve it when none does;
        True when the account was told (only a change of state tells)."""
        sending = report.part(dh.Part.SENDING)
        if any(c.problem == DNS_FAILURE for c in sending):
            return False  # no answer is not a broken record, nor a fixed one
        detail: dict[str, Any] = {
            "domain": report.domain,
            "checked_at": report.checked_at,
            "problems": [
                {"check": c.id, "record": c.record, "problem": c.problem, "found": c.found}
                for c in report.problems
            ],
        }
        if report.problems:
            return await self.alerts.raise_alert(
                account_id,
                AlertKind.DOMAIN_DNS,
                report.domain,
                detail,
                dh.alert_texts(report, raised=True),
            )
        return await self.alerts.resolve(
            account_id,
            AlertKind.DOMAIN_DNS,
            report.domain,
            detail,
            dh.alert_texts(report, raised=False),
        )

    # -- the sending records ----------------------------------------------------------
    async def _sending(self, domain: Domain) -> list[dh.HealthCheck]:
        name = domain.name
        out: list[dh.HealthCheck] = []
        record = f"{VERIFY_LABEL}.{name}"
        expected = f"{VERIFY_PREFIX}{domain.token}"
        try:
            found = await self.resolver.txt(record)
        except DnsTemporaryError as exc:
            out.append(_dns_failure("secumail_ownership", record, exc))
        else:
            present = any(secrets.compare_digest(t.strip(), expected) for t in found)
            out.append(dh.ownership_check(record, found, expected, present))

        dkim_ok = False
        try:
            keys = await self.keyring.look_up(name, self.resolver.txt)
        except DnsTemporaryError as exc:
            out.append(_dns_failure("auth_dkim_exist", f"_domainkey.{name}", exc))
            dkim_ok = True  # unknown: alignment is not judged on a missing answer
        else:
            facts = [
                dh.DkimFact(r.name, r.algorithm, r.published, ok, found, r.value)
                for r, ok, found in keys
            ]
            out += dh.dkim_checks(facts)
            dkim_ok = any(f.signing and f.matches for f in facts)

        mechanism = spf_mechanism(self.hostname)
        try:
            txts = await self.resolver.txt(name)
            others = await self._spf_targets(dh.spf_records(txts))
        except DnsTemporaryError as exc:
            out.append(_dns_failure("auth_spf_exist", name, exc))
        else:
            out += dh.spf_checks(name, txts, mechanism, others)

        try:
            dmarc = await self._dmarc(name)
        except DnsTemporaryError as exc:
            out.append(_dns_failure("auth_dmarc_exist", f"_dmarc.{name}", exc))
        else:
            account = await self.store.get_account(domain.account_id)
            dkim_domain = (
                name if dkim_ok else (self.gateway_domain if account.gateway_dkim else None)
            )
            out += dh.dmarc_checks(
                name,
                dmarc,
                dkim_domain=dkim_domain,
                return_path_domain=self.hostname if self.bounce_addresses else name,
            )
        return out

    async def _spf_targets(self, records: list[str]) -> dict[str, list[str]]:
        """The TXT answers of the include/redirect targets, breadth first, at most the
        10 lookups RFC 7208 §4.6.4 allows."""
        others: dict[str, list[str]] = {}
        queue = [t for r in records for t in dh.spf_targets(r)] if len(records) == 1 else []
        while queue and len(others) < dh.SPF_LOOKUP_LIMIT:
            target = queue.pop(0)
            if target in others:
                continue
            others[target] = await self.resolver.txt(target)
            for r in dh.spf_records(others[target])[:1]:
                queue += dh.spf_targets(r)
        return others

    async def _dmarc(self, name: str) -> list[tuple[str, list[str]]]:
        """`_dmarc.<name>`, then its parents, until one has a DMARC record (§6.6.3)."""
        out: list[tuple[str, list[str]]] = []
        for where in dh.dmarc_lookup_names(name):
            txts = await self.resolver.txt(where)
            out.append((where, txts))
            if any(t.strip().lower().replace(" ", "").startswith("v=dmarc1") for t in txts):
                break
        return out

    # -- the customer's own inbound mail ------------------------------------------------
    async def _inbound(self, name: str) -> list[dh.HealthCheck]:
        try:
            answer = await self.resolver.mx(name)
        except (DnsPermanentError, DnsTemporaryError) as exc:
            return dh.inbound_checks(name, dh.InboundFacts(mx_error=str(exc)))
        if answer.null_mx:
            return dh.inbound_checks(name, dh.InboundFacts(null_mx=True))
        result = await self.preflight.check(name)
        probes = [
            dh.MxFact(
                host=p.host,
                ip=p.ip,
                route=p.route,
                ok=p.ok,
                reason=p.reason,
                tls_version=p.tls_version,
                certificate_names=list(p.certificate.names) if p.certificate else [],
                tlsa_records=_int(p.dnssec.get("tlsa_records")),
                tlsa_secure=bool(p.dnssec.get("tlsa")),
                address_secure=bool(p.dnssec.get("address")),
            )
            for p in result.mx
        ]
        sts = result.mta_sts
        facts = dh.InboundFacts(
            implicit=answer.implicit,
            mx_secure=answer.secure,
            hosts=[h.host for h in answer.hosts],
            probes=probes,
            sts_mode=str(sts["mode"]) if sts.get("mode") else None,
            sts_failure=str(sts.get("failure") or ""),
            sts_txt=await self._txt(f"_mta-sts.{name}"),
            tlsrpt_txt=await self._txt(f"_smtp._tls.{name}"),
        )
        return dh.inbound_checks(name, facts)

    async def _txt(self, name: str) -> list[str]:
        try:
            return await self.resolver.txt(name)
        except DnsTemporaryError:
            return []

    # -- the loop -----------------------------------------------------------------------
    async def run(self, interval: float) -> None:
        """Check every verified domain once per `interval` seconds, spread over it."""
        while True:
            try:
                await self._round(interval)
            except Exception:
                log.exception("the domain health round failed; trying again")
            await asyncio.sleep(await self._until_next(interval))

    async def _round(self, interval: float) -> None:
        domains = [d for d in await self.store.list_domains(None) if d.verified]
        last = await self._last_checked(domains)
        now = self.clock()
        due = sorted(
            (d for d in domains if now - last[d.name] >= interval), key=lambda d: last[d.name]
        )
        gap = interval / max(len(domains), 1)
        for i, d in enumerate(due):
            if i:
                await asyncio.sleep(gap)
            self._tried[d.name] = self.clock()
            try:
                report = await self.check(d.name)
            except NotFound:
                continue  # removed meanwhile
            except Exception:
                log.exception("health check of %s failed", d.name)
                continue
            log.info(
                "domain health checked",
                extra={
                    "fields": {
                        "domain": d.name,
                        "status": str(report.status),
                        "problems": len(report.problems),
                    }
                },
            )

    async def _last_checked(self, domains: list[Domain]) -> dict[str, float]:
        """When each domain was last checked (or tried); a domain never checked counts
        from its verification, which checked it (`domain verify`)."""
        stored = await self.reports.checked_at()
        return {
            d.name: max(stored.get(d.name, d.verified_at or 0.0), self._tried.get(d.name, 0.0))
            for d in domains
        }

    async def _until_next(self, interval: float) -> float:
        domains = [d for d in await self.store.list_domains(None) if d.verified]
        if not domains:
            return min(interval, 60.0)  # a domain verified later is picked up soon
        last = await self._last_checked(domains)
        next_due = min(at + interval for at in last.values())
        return min(max(0.2, next_due - self.clock()), interval, 60.0)


def _dns_failure(check_id: str, record: str, exc: Exception) -> dh.HealthCheck:
    return dh.HealthCheck(check_id, dh.Part.SENDING, dh.Status.WARN, record, str(exc), DNS_FAILURE)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
