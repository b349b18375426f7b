"""The audit log's hash chain, sans I/O: what an entry is, how it is hashed, how a chain
is checked.

Each entry's `hash` is SHA-256 over a canonical encoding (sorted-key compact JSON, UTF-8)
of its sequence number, time, actor, kind, *subject digest*, detail and the previous
entry's hash. The subject itself is not hashed: the chain covers `subject_digest`, an
HMAC of the subject under a key kept outside the database. So a GDPR erasure can replace
a subject (an e-mail address) by its pseudonym `erased:<hmac>` without breaking the
chain, while an altered subject that is not such a pseudonym no longer matches its
digest — and without the key nobody can make one that does. Details never hold
addresses (`check_detail`), so they never need to change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

GENESIS = "0" * 64  # the prev_hash of entry 1
ERASED_PREFIX = "erased:"
MAX_DETAIL = 2048  # bytes of canonical JSON: a small record, never content


class AuditKind(StrEnum):
    """Every administrative and security event the audit log records (a closed set)."""

    KEYS_CREATED = "keys_created"
    ACCOUNT_CREATED = "account_created"
    ACCOUNT_UPDATED = "account_updated"
    CREDENTIAL_CREATED = "credential_created"
    CREDENTIAL_REVOKED = "credential_revoked"
    DOMAIN_ADDED = "domain_added"
    DOMAIN_VERIFIED = "domain_verified"
    DOMAIN_REMOVED = "domain_removed"
    DKIM_ROTATED = "dkim_rotated"
    DKIM_RETIRED = "dkim_retired"
    POLICY_SET = "policy_set"
    POLICY_REMOVED = "policy_removed"
    ROUTE_FORGOTTEN = "route_forgotten"
    CA_IMPORTED = "ca_imported"
    SMIME_ISSUED = "smime_issued"
    SUPPRESSION_ADDED = "suppression_added"
    SUPPRESSION_REMOVED = "suppression_removed"
    WEBHOOK_ADDED = "webhook_added"
    WEBHOOK_REMOVED = "webhook_removed"
    LOGIN_REFUSED = "login_refused"
    EVIDENCE_EXPORTED = "evidence_exported"
    GDPR_EXPORTED = "gdpr_exported"
    GDPR_ERASED = "gdpr_erased"
    RETENTION_PURGED = "retention_purged"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    kind: str
    subject: str
    subject_digest: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def erased(self) -> bool:
        return is_pseudonym(self.subject)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What `check_chain` found: intact, or the first broken sequence number and why."""

    entries: int
    head_seq: int
    head_hash: str
    erased: int = 0
    broken_seq: int | None = None
    reason: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_seq is None


def is_pseudonym(subject: str) -> bool:
    return subject.startswith(ERASED_PREFIX)


def subject_digest(key: bytes, subject: str) -> str:
    return hmac.new(key, subject.encode("utf-8"), hashlib.sha256).hexdigest()


def entry_hash(
    seq: int,
    at: float,
    actor: str,
    kind: str,
    digest: str,
    detail: dict[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 over the entry's canonical JSON (sorted keys, no spaces, no NaN), which
    covers the previous entry's hash: changing any entry breaks every hash after it."""
    canonical = json.dumps(
        {
            "v": 1,
            "seq": seq,
            "at": at,
            "actor": actor,
            "kind": kind,
            "subject_digest": digest,
            "detail": detail,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()


def check_detail(detail: dict[str, Any]) -> None:
    """A detail is small plain JSON holding no address (the erasure leaves it alone)."""
    encoded = json.dumps(detail, sort_keys=True, separators=(",", ":"), allow_nan=False)
    if len(encoded.encode()) > MAX_DETAIL:
        raise ValueError(f"audit detail too large ({len(encoded)} bytes)")
    if "@" in encoded:
        raise ValueError("an audit detail must not hold addresses: put the address in the subject")


def new_entry(
    key: bytes,
    seq: int,
    at: float,
    actor: str,
    kind: AuditKind,
    subject: str,
    detail: dict[str, Any],
    prev_hash: str,
) -> AuditEntry:
    """The entry that follows `prev_hash` (the subject digest under `key`)."""
    check_detail(detail)
    if not math.isfinite(at):
        raise ValueError("audit time must be finite")
    digest = subject_digest(key, subject)
    value = entry_hash(seq, at, actor, kind.value, digest, detail, prev_hash)
    return AuditEntry(seq, at, actor, kind.value, subject, digest, detail, prev_hash, value)


def check_chain(
    entries: Iterable[AuditEntry], key: bytes, anchors: Iterable[tuple[int, str]] = ()
) -> ChainReport:
    """Walk the entries in sequence order: each must follow the one before (no gap, its
    prev_hash), hash to its stored hash, be of a known kind, and carry a subject matching
    its digest — or a pseudonym that a later `gdpr_erased` entry announces. Each of
    `anchors` (a head seen earlier: sequence number and hash) must still be in the chain:
    that catches the deletion of the newest entries, which the chain alone cannot."""
    known = {k.value for k in AuditKind}
    expected_seq, prev = 1, GENESIS
    count = erased = 0
    seen: dict[int, str] = {}
    pending: dict[str, int] = {}  # pseudonyms not yet announced by an erasure -> first seq

    def broken(seq: int, why: str) -> ChainReport:
        return ChainReport(count, expected_seq - 1, prev, erased, seq, why)

    for e in entries:
        if e.seq != expected_seq:
            if e.seq < expected_seq:
                return broken(e.seq, f"entry {e.seq} appears twice or out of order")
            return broken(expected_seq, f"entry {expected_seq} is missing (next is {e.seq})")
        if e.prev_hash != prev:
            return broken(e.seq, f"entry {e.seq} does not follow entry {e.seq - 1} (prev_hash)")
        if e.kind not in known:
            return broken(e.seq, f"entry {e.seq} has an unknown kind {e.kind!r}")
        try:
            value = entry_hash(
                e.seq, e.at, e.actor, e.kind, e.subject_digest, e.detail, e.prev_hash
            )
        except (TypeError, ValueError) as exc:
            return broken(e.seq, f"entry {e.seq} cannot be encoded: {exc}")
        if not hmac.compare_digest(value, e.hash):
            return broken(e.seq, f"entry {e.seq} was altered: its content does not match its hash")
        if e.erased and e.kind != AuditKind.GDPR_ERASED.value:
            erased += 1
            pending.setdefault(e.subject, e.seq)
        elif not hmac.compare_digest(subject_digest(key, e.subject), e.subject_digest):
            return broken(e.seq, f"entry {e.seq} was altered: its subject does not match its digest")
        if e.kind == AuditKind.GDPR_ERASED.value:
            pending.pop(e.subject, None)
        count += 1
        seen[e.seq] = e.hash
        prev, expected_seq = e.hash, e.seq + 1
    if pending:
        seq = min(pending.values())
        return broken(seq, f"entry {seq} has a pseudonymised subject no erasure announced")
    for anchor_seq, anchor_hash in anchors:
        if anchor_seq > expected_seq - 1:
            return ChainReport(
                count,
                expected_seq - 1,
                prev,
                erased,
                expected_seq,
                f"entries {expected_seq}..{anchor_seq} were deleted (the anchor saw entry {anchor_seq})",
            )
        if anchor_seq > 0 and seen.get(anchor_seq) != anchor_hash:
            return ChainReport(
                count,
                expected_seq - 1,
                prev,
                erased,
                anchor_seq,
                f"entry {anchor_seq} differs from the anchored head (history rewritten)",
            )
    return ChainReport(count, expected_seq - 1, prev, erased)
