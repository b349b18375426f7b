"""DNSSEC-signed test zones on the harness authoritative DNS server.

`SignedZoneDns` is an `AuthoritativeDns` that also serves signed zones. The top zone
(``dnssec.test.`` unless told otherwise) is signed with one ECDSAP256SHA256 key
(a CSK, flags 257); its DS is the trust anchor a validating resolver is given
(`trust_anchors`). Child zones are delegated from their parent with `add_zone`:
signed (own key, DS in the parent) or unsigned (no DS, which the parent's signed NSEC
proves: an insecure delegation, RFC 4035 §5.2). Names outside every zone (``example.test``)
are answered unsigned exactly as by `AuthoritativeDns`, so one server holds both worlds.

Records stay mutable at run time through the inherited `add`/`remove`/`clear`. After a
change the next query re-signs every zone (RRSIGs valid from an hour ago to a day ahead)
and rebuilds its NSEC chain (RFC 4034 §4, canonical order §6.1), so a resolver validates
answers, NODATA (NSEC at the name, or covering an empty non-terminal) and NXDOMAIN
(NSEC covering the name and the wildcard at its closest encloser, RFC 4035 §3.1.3).
RRSIG and NSEC records are sent only to queries with the DO bit (RFC 4035 §3.1).

Faults: `bogus(name, how)` breaks the signatures at exactly ``name`` ("signature": a
flipped byte; "expired": validity over a day ago; "unknown-key": signed by a key not in
the DNSKEY set; "missing": no RRSIG at all), so a validating resolver answers SERVFAIL.
At a zone apex this breaks the DNSKEY RRset too and with it the whole zone. `heal`
undoes it, along with the inherited `fail`/`delay`.

TTLs: SOA, DNSKEY, DS and NSEC have TTL 0 and the SOA minimum is 0, so a resolver keeps
neither keys nor denials across a change; records added by tests keep their own TTL.
A resolver in front still holds keys a little (see tests.harness.unbound): it subscribes
to `zone_listeners`, told of every new zone and every `bogus`/`heal`/`clear`.

Not served: wildcards (a ``*`` owner is just a name), NSEC3, zone transfers.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.RRSIG
import dns.rrset
from cryptography.hazmat.primitives.asymmetric import ec

from tests.harness.dns import MAX_CHASE, AuthoritativeDns

DEFAULT_APEX = "dnssec.test."
NS_TARGET = "ns.harness.test."
SOA_TEXT = f"{NS_TARGET} hostmaster.harness.test. 1 3600 600 86400 0"
ALGORITHM = "ECDSAP256SHA256"
VALID_BEFORE = 3600  # RRSIG inception: an hour ago (clock skew)
VALID_AFTER = 86400  # RRSIG expiration: a day ahead
BOGUS_KINDS = ("signature", "expired", "unknown-key", "missing")

_DS = dns.rdatatype.DS
_NS = dns.rdatatype.NS
_NSEC = dns.rdatatype.NSEC
_SOA = dns.rdatatype.SOA
_CNAME = dns.rdatatype.CNAME
_ANY = dns.rdatatype.ANY


def _name(text: str | dns.name.Name) -> dns.name.Name:
    if isinstance(text, dns.name.Name):
        return text
    return dns.name.from_text(text, origin=dns.name.root)


def _rrset(owner: dns.name.Name, ttl: int, rdtype: str, *values: str) -> dns.rrset.RRset:
    return dns.rrset.from_text_list(owner, ttl, "IN", rdtype, list(values))


@dataclass
class _Zone:
    """One zone: its apex, its parent zone (None for a trust-anchored top) and its key."""

    apex: dns.name.Name
    parent: dns.name.Name | None
    key: ec.EllipticCurvePrivateKey | None  # None: an unsigned zone
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY | None


@dataclass
class _ZoneView:
    """A zone as served: its RRsets, their RRSIGs, the NSEC chain in canonical order."""

    zone: _Zone
    rrsets: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = field(default_factory=dict)
    sigs: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = field(default_factory=dict)
    cuts: set[dns.name.Name] = field(default_factory=set)  # delegations to child zones
    owners: list[dns.name.Name] = field(default_factory=list)

    def has_descendant(self, name: dns.name.Name) -> bool:
        """True when some owner lies below ``name`` (it is then an empty non-terminal)."""
        index = bisect.bisect_right(self.owners, name)
        return index < len(self.owners) and self.owners[index].is_subdomain(name)

    def exists(self, name: dns.name.Name) -> bool:
        return name in self.rrsets or self.has_descendant(name)

    def covering(self, name: dns.name.Name) -> dns.name.Name:
        """The owner of the NSEC at or before ``name`` (the apex sorts first)."""
        return self.owners[bisect.bisect_right(self.owners, name) - 1]


class SignedZoneDns(AuthoritativeDns):
    """`AuthoritativeDns` plus DNSSEC-signed (and insecurely delegated) zones."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, apex: str = DEFAULT_APEX) -> None:
        super().__init__(host, port)
        self._zones: dict[dns.name.Name, _Zone] = {}
        self._bogus: dict[dns.name.Name, str] = {}
        self._views: dict[dns.name.Name, _ZoneView] = {}
        self._dirty = True
        self._sign_lock = threading.Lock()  # guards _zones, _bogus, _views, _dirty
        self._stray_key = ec.generate_private_key(ec.SECP256R1())
        self._stray_dnskey = dns.dnssec.make_dnskey(
            self._stray_key.public_key(), ALGORITHM, flags=257
        )
        self.apex = _name(apex)
        # Called with a zone apex after a zone is added, its signatures are broken or
        # healed, or the data is cleared: a resolver in front must forget cached keys.
        self.zone_listeners: list[Callable[[str], None]] = []
        self._new_zone(self.apex, parent=None, signed=True)

    # -- zones -------------------------------------------------------------

    @property
    def zones(self) -> list[str]:
        """Every zone apex served (``"dnssec.test."`` first), for a resolver's stub zones."""
        with self._sign_lock:
            return [apex.to_text() for apex in self._zones]

    @property
    def trust_anchors(self) -> list[str]:
        """``"<apex> DS <tag> 13 2 <hex>"`` for each top zone: a resolver's trust anchors."""
        with self._sign_lock:
            tops = [(z.apex, z.dnskey) for z in self._zones.values() if z.parent is None]
        return [f"{apex} DS {dns.dnssec.make_ds(apex, key, 'SHA256')}" for apex, key in tops if key]

    def add_zone(self, name: str, signed: bool = True) -> None:
        """Delegate ``name`` from the enclosing zone, with a DS when ``signed``.

        ``signed=False`` makes a provably insecure zone: the parent's NSEC at the cut
        shows NS but no DS, so a validator answers from it without the AD bit.
        """
        apex = _name(name)
        with self._sign_lock:
            parent = self._deepest_zone(apex)
            if parent is None or parent.apex == apex:
                raise ValueError(f"{apex} is not below a zone of this server")
            if parent.key is None:
                raise ValueError(f"{apex}: its parent {parent.apex} is unsigned")
        self._new_zone(apex, parent=parent.apex, signed=signed)
        self._notify(apex)

    def _new_zone(self, apex: dns.name.Name, parent: dns.name.Name | None, signed: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1()) if signed else None
        dnskey = dns.dnssec.make_dnskey(key.public_key(), ALGORITHM, flags=257) if key else None
        self._install(_Zone(apex, parent, key, dnskey))

    def _install(self, zone: _Zone) -> None:
        """Put the zone's SOA, NS, DNSKEY (and its DS, at a signed cut) into the data."""
        apex = zone.apex
        skeleton = [_rrset(apex, 0, "SOA", SOA_TEXT), _rrset(apex, 0, "NS", NS_TARGET)]
        if zone.dnskey is not None:
            skeleton.append(dns.rrset.from_rdata_list(apex, 0, [zone.dnskey]))
            if zone.parent is not None:
                ds = dns.dnssec.make_ds(apex, zone.dnskey, "SHA256")
                skeleton.append(dns.rrset.from_rdata_list(apex, 0, [ds]))
        with self._lock:
            node = self._records.setdefault(apex, {})
            for rrset in skeleton:
                node[rrset.rdtype] = rrset
        with self._sign_lock:
            self._zones[apex] = zone
            self._dirty = True

    # -- data and faults (the inherited API, re-signing on change) ----------

    def add(self, name: str, rdtype: str, value: str, ttl: int = 60) -> None:
        super().add(name, rdtype, value, ttl)
        self._changed()

    def remove(self, name: str, rdtype: str | None = None) -> None:
        super().remove(name, rdtype)
        self._changed()

    def clear(self) -> None:
        """Forget records, faults, child zones and the query log; keep the top zones' keys."""
        super().clear()
        with self._sign_lock:
            tops = [z for z in self._zones.values() if z.parent is None]
            self._zones.clear()
            self._bogus.clear()
        for zone in tops:
            self._install(zone)
        self._notify(self.apex)

    def bogus(self, name: str, how: str = "signature") -> None:
        """Break the RRSIGs at exactly ``name`` (see the module doc for ``how``)."""
        if how not in BOGUS_KINDS:
            raise ValueError(f"bogus kind {how!r} not in {BOGUS_KINDS}")
        owner = _name(name)
        with self._sign_lock:
            zone = self._deepest_zone(owner)
            if zone is None or (zone.key is None and owner != zone.apex):
                raise ValueError(f"{owner} is not in a signed zone")
            self._bogus[owner] = how
            self._dirty = True
        self._notify(zone.apex)

    def heal(self, name: str) -> None:
        """Undo `bogus`, `fail` and `delay` for ``name``."""
        super().heal(name)
        owner = _name(name)
        with self._sign_lock:
            self._bogus.pop(owner, None)
            self._dirty = True
            zone = self._deepest_zone(owner)
        self._notify(self.apex if zone is None else zone.apex)

    def _notify(self, apex: dns.name.Name) -> None:
        for listener in list(self.zone_listeners):
            listener(apex.to_text())

    def _changed(self) -> None:
        with self._sign_lock:
            self._dirty = True

    # -- signing -------------------------------------------------------------

    def _deepest_zone(
        self, name: dns.name.Name, zones: dict[dns.name.Name, _Zone] | None = None
    ) -> _Zone | None:
        best: _Zone | None = None
        for zone in (self._zones if zones is None else zones).values():
            if name.is_subdomain(zone.apex) and (best is None or len(zone.apex) > len(best.apex)):
                best = zone
        return best

    def _zone_for(
        self, name: dns.name.Name, rdtype: int, zones: dict[dns.name.Name, _Zone] | None = None
    ) -> _Zone | None:
        """The zone that answers (name, type): the parent's side for DS at a cut."""
        zones = self._zones if zones is None else zones
        zone = self._deepest_zone(name, zones)
        if zone is not None and rdtype == _DS and name == zone.apex and zone.parent is not None:
            return zones[zone.parent]
        return zone

    def _views_now(self) -> dict[dns.name.Name, _ZoneView]:
        """The signed zones, rebuilt when anything changed since the last query."""
        with self._sign_lock:
            if not self._dirty:
                return self._views
            self._dirty = False
            zones = dict(self._zones)
            bogus = dict(self._bogus)
        with self._lock:
            records = {
                owner: {
                    t: dns.rrset.from_rdata_list(r.name, r.ttl, list(r)) for t, r in node.items()
                }
                for owner, node in self._records.items()
            }
        views = {apex: _ZoneView(zone) for apex, zone in zones.items()}
        for owner, node in records.items():
            for rdtype, rrset in node.items():
                zone = self._zone_for(owner, rdtype, zones)
                if zone is not None:
                    views[zone.apex].rrsets.setdefault(owner, {})[rdtype] = rrset
        for zone in zones.values():
            ns = records.get(zone.apex, {}).get(_NS)
            if zone.parent is not None and ns is not None:
                views[zone.parent].rrsets.setdefault(zone.apex, {})[_NS] = ns
                views[zone.parent].cuts.add(zone.apex)
        now = int(time.time())
        for view in views.values():
            view.owners = sorted(view.rrsets)
            if view.zone.key is not None:
                self._chain(view)
                self._sign(view, bogus, now)
        with self._sign_lock:
            self._views = views
        return views

    @staticmethod
    def _chain(view: _ZoneView) -> None:
        """One NSEC per owner naming the next owner and the types present (RFC 4034 §4.1)."""
        soa = view.rrsets[view.zone.apex][_SOA]
        ttl = min(soa.ttl, soa[0].minimum)  # RFC 9077
        for index, owner in enumerate(view.owners):
            following = view.owners[(index + 1) % len(view.owners)]
            node = view.rrsets[owner]
            types = {dns.rdatatype.to_text(t) for t in node} | {"RRSIG", "NSEC"}
            text = f"{following} {' '.join(sorted(types))}"
            node[_NSEC] = _rrset(owner, ttl, "NSEC", text)

    def _sign(self, view: _ZoneView, bogus: dict[dns.name.Name, str], now: int) -> None:
        zone = view.zone
        assert zone.key is not None and zone.dnskey is not None
        for owner, node in view.rrsets.items():
            how = bogus.get(owner)
            for rdtype, rrset in node.items():
                if owner in view.cuts and rdtype not in (_DS, _NSEC):
                    continue  # RFC 4035 §2.2: a delegation's NS is not signed by the parent
                if how == "missing":
                    continue
                key, dnskey = zone.key, zone.dnskey
                inception, expiration = now - VALID_BEFORE, now + VALID_AFTER
                if how == "expired":
                    inception, expiration = now - 2 * VALID_AFTER, now - VALID_AFTER
                elif how == "unknown-key":
                    key, dnskey = self._stray_key, self._stray_dnskey
                rrsig = dns.dnssec.sign(
                    rrset,
                    key,
                    zone.apex,
                    dnskey,
                    inception=inception,
                    expiration=expiration,
                )
                if how == "signature":
                    flipped = rrsig.signature[:-1] + bytes([rrsig.signature[-1] ^ 0xFF])
                    rrsig = rrsig.replace(signature=flipped)
                sig = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype)
                sig.update_ttl(rrset.ttl)
                sig.add(rrsig)
                view.sigs[(owner, rdtype)] = sig

    # -- answering -----------------------------------------------------------

    def _fill(self, response: dns.message.Message, qname: dns.name.Name, qtype: int) -> None:
        with self._lock:
            failure = self._failures.get(qname)
        if failure is not None:
            response.set_rcode(failure)
            return
        views = self._views_now()
        zones = {apex: view.zone for apex, view in views.items()}
        zone = self._zone_for(qname, qtype, zones)
        if zone is None:
            super()._fill(response, qname, qtype)
            return
        dnssec = bool(response.ednsflags & dns.flags.DO)
        self._answer_from(zones, views[zone.apex], response, qname, qtype, dnssec)

    def _answer_from(
        self,
        zones: dict[dns.name.Name, _Zone],
        view: _ZoneView,
        response: dns.message.Message,
        qname: dns.name.Name,
        qtype: int,
        dnssec: bool,
    ) -> None:
        def put(section: list[dns.rrset.RRset], owner: dns.name.Name, rdtype: int) -> None:
            section.append(view.rrsets[owner][rdtype])
            sig = view.sigs.get((owner, rdtype))
            if dnssec and sig is not None:
                section.append(sig)

        name, seen = qname, set()
        for _ in range(MAX_CHASE):
            seen.add(name)
            node = {t: r for t, r in view.rrsets.get(name, {}).items() if t != _NSEC or dnssec}
            if name in view.cuts and qtype != _DS:
                node = {}  # only DS (and its denial) is the parent's to give at a cut
            if qtype == _ANY and node:
                for rdtype in node:
                    put(response.answer, name, rdtype)
                return
            if qtype in node:
                put(response.answer, name, qtype)
                return
            if _CNAME not in node:
                break
            put(response.answer, name, _CNAME)
            name = node[_CNAME][0].target
            target_zone = self._zone_for(name, qtype, zones)
            if name in seen or target_zone is None or target_zone.apex != view.zone.apex:
                return  # a loop, or the chain leaves this zone: the resolver follows it
        put(response.authority, view.zone.apex, _SOA)
        if name in view.rrsets:
            proofs = [name]  # NODATA: the NSEC at the name lacks the type
        elif view.has_descendant(name):
            proofs = [view.covering(name)]  # NODATA at an empty non-terminal
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
            encloser = name.parent()
            while not view.exists(encloser):
                encloser = encloser.parent()
            wildcard = dns.name.Name((b"*", *encloser.labels))
            proofs = [view.covering(name), view.covering(wildcard)]
        if dnssec and view.zone.key is not None:
            for owner in dict.fromkeys(proofs):
                put(response.authority, owner, _NSEC)
