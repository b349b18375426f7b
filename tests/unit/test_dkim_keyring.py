"""The DKIM keyring parses each private key once: which keys sign is re-read from the
store every half minute, but an RSA key takes tens of milliseconds to load and
validate, and that used to happen on the event loop at every refresh."""

from __future__ import annotations

import asyncio
import os

import pytest

from secumail.mail import dkim
from secumail.pki import dkim_keyring
from secumail.pki.dkim_keyring import DkimKeyring
from secumail.store.database import Database
from secumail.store.signing import SigningStore


def test_each_key_is_parsed_once_across_refreshes(
    gateway_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dkim_keyring, "CACHE_SECONDS", 0.0)  # re-read the rows every time
    keyring = DkimKeyring(SigningStore(gateway_db), os.urandom(32))
    parsed: list[str] = []
    load = keyring._load

    def counting_load(row):
        parsed.append(row.selector)
        return load(row)

    monkeypatch.setattr(keyring, "_load", counting_load)

    async def published(name: str) -> list[str]:
        return [r.value for r in records if r.name == name]

    async def main() -> None:
        nonlocal records
        records = await keyring.create_keys("hospital.test")
        await keyring.check_published("hospital.test", published)
        parsed.clear()  # checking publication parses them; signing is what is counted
        first = await keyring.signing_keys("hospital.test")
        again = await keyring.signing_keys("hospital.test")
        assert [k.algorithm for k in first] == ["rsa-sha256", "ed25519-sha256"]
        assert [k.selector for k in again] == [k.selector for k in first]
        assert len(parsed) == 2, "parsed once each, not at every refresh"
        # a rotation: the new keys are parsed (once), the retired ones no longer sign
        new = await keyring.create_keys("hospital.test", now=4_102_444_800)  # 2100
        records = new
        await keyring.check_published("hospital.test", published)
        for old in first:
            await keyring.retire("hospital.test", old.selector)
        parsed.clear()
        rotated = await keyring.signing_keys("hospital.test")
        assert {k.selector for k in rotated} == {r.selector for r in new}
        await keyring.signing_keys("hospital.test")
        assert len(parsed) == 2
        message = b"From: a@hospital.test\r\nSubject: x\r\n\r\nhi\r\n"
        assert dkim.sign(message, rotated).count(b"DKIM-Signature:") == 2

    records: list = []
    asyncio.run(main())
