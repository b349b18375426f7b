"""Failed-login throttling per client address and per username (sliding window).

RFC 4954 §4 lets a server refuse AUTH after failures (454 4.7.0, RFC 4954 §6); NIST SP
800-63B §5.2.2 asks for rate limiting of failed authentication attempts.
"""

from __future__ import annotations

import types

import pytest

from secumail.pipeline import auth_throttle
from secumail.pipeline.auth_throttle import AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(auth_throttle, "time", types.SimpleNamespace(monotonic=c.monotonic))
    return c


def test_not_blocked_below_the_limit(clock: Clock) -> None:
    t = AuthThrottle(limit=3, window=60)
    for _ in range(2):
        t.failed("192.0.2.1", "alice")
    assert not t.blocked("192.0.2.1", "alice")


def test_blocked_at_the_limit_per_address(clock: Clock) -> None:
    t = AuthThrottle(limit=3, window=60)
    for user in ("alice", "bob", "carol"):  # password spraying from one address
        t.failed("192.0.2.1", user)
    assert t.blocked("192.0.2.1", "dave")
    assert not t.blocked("192.0.2.2", "dave")


def test_blocked_at_the_limit_per_username(clock: Clock) -> None:
    t = AuthThrottle(limit=3, window=60)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):  # guessing from many addresses
        t.failed(ip, "alice")
    assert t.blocked("198.51.100.9", "alice")
    assert not t.blocked("198.51.100.9", "bob")


def test_window_slides(clock: Clock) -> None:
    t = AuthThrottle(limit=3, window=60)
    t.failed("192.0.2.1", "alice")
    clock.now += 30
    t.failed("192.0.2.1", "alice")
    t.failed("192.0.2.1", "alice")
    assert t.blocked("192.0.2.1", "alice")
    clock.now += 31  # the first failure is now older than the window
    assert not t.blocked("192.0.2.1", "alice")
    t.failed("192.0.2.1", "alice")
    assert t.blocked("192.0.2.1", "alice")
    clock.now += 61
    assert not t.blocked("192.0.2.1", "alice")


def test_asking_does_not_count_as_a_failure(clock: Clock) -> None:
    t = AuthThrottle(limit=2, window=60)
    t.failed("192.0.2.1", "alice")
    for _ in range(5):
        assert not t.blocked("192.0.2.1", "alice")
    t.failed("192.0.2.1", "alice")
    assert t.blocked("192.0.2.1", "alice")


def test_memory_is_bounded_and_recent_attackers_stay_blocked(clock: Clock) -> None:
    t = AuthThrottle(limit=2, window=600)
    for i in range(60_000):  # a spray of unique addresses and usernames
        t.failed(f"ip{i}", f"user{i}")
    t.failed("192.0.2.66", "victim")
    t.failed("192.0.2.66", "victim")
    assert len(t._failures) <= 100_000
    assert t.blocked("192.0.2.66", "anyone")


def test_a_spray_does_not_unblock_a_blocked_username(clock: Clock) -> None:
    # The memory bound must not let an attacker reset a username's failure record by
    # filling the table with throw-away keys (cheap with IPv6 addresses).
    t = AuthThrottle(limit=5, window=300)
    for i in range(5):
        t.failed(f"2001:db8::{i}", "victim")
    assert t.blocked("2001:db8::ff", "victim")
    for i in range(60_000):
        t.failed(f"2001:db8:1::{i:x}", f"junk{i}")
    assert t.blocked("2001:db8::ff", "victim")
