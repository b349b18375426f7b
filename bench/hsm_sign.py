"""Signatures per second through a PKCS#11 token (SoftHSM2), RSA-2048 and Ed25519.

Run by hand: ``.venv/bin/python bench/hsm_sign.py [--seconds S] [--runs R] [--threads T]``.
Makes a throw-away SoftHSM2 token (tests/harness/softhsm.py), generates the keys on it and
signs 200 bytes with `Pkcs11Signer.sign` (what a certificate or evidence signature costs),
from one thread and from T threads through `asyncio.to_thread`. Calls into one module are
serialised (see `secumail.pki.pkcs11_token`), so T threads show the overhead, not a
speed-up. "file key" is the same signature with a `cryptography` key in memory, for scale.
Each figure is the median of R runs of S seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from tests.harness.softhsm import softhsm_token

from secumail.pki.ca import FileKeySigner, Signer
from secumail.pki.pkcs11_signer import Pkcs11Config, generate_keypair, open_signer

DATA = bytes(range(200))
KEYS = {
    "RSA-2048": ("rsa-2048", hashes.SHA256()),
    "EC P-256": ("ec-p256", hashes.SHA256()),
    "EC P-384": ("ec-p384", hashes.SHA384()),
    "Ed25519": ("ed25519", None),
}


def file_key(key_type: str) -> Signer:
    if key_type == "rsa-2048":
        return FileKeySigner(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    if key_type == "ec-p256":
        return FileKeySigner(ec.generate_private_key(ec.SECP256R1()))
    if key_type == "ec-p384":
        return FileKeySigner(ec.generate_private_key(ec.SECP384R1()))
    return FileKeySigner(ed25519.Ed25519PrivateKey.generate())


def rate_one_thread(sign: Callable[[], bytes], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            sign()
        count += 20
    return count / (time.perf_counter() - start)


def rate_threads(sign: Callable[[], bytes], seconds: float, threads: int) -> float:
    async def main() -> float:
        counts = [0] * threads
        deadline = time.perf_counter() + seconds

        def worker(i: int) -> None:
            while time.perf_counter() < deadline:
                sign()
                counts[i] += 1

        start = time.perf_counter()
        await asyncio.gather(*(asyncio.to_thread(worker, i) for i in range(threads)))
        return sum(counts) / (time.perf_counter() - start)

    return asyncio.run(main())


def median(measure: Callable[[], float], runs: int) -> float:
    return statistics.median(measure() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    token = softhsm_token("bench")
    config = Pkcs11Config(token.module, token.label, token.pin)
    print(f"SoftHSM2 token {token.label!r}, {args.runs} runs x {args.seconds:g} s, median signs/s")
    print(f"{'key':<10} {'HSM 1 thread':>13} {f'HSM {args.threads} threads':>14} {'file key':>10}")
    for name, (key_type, algorithm) in KEYS.items():
        generate_keypair(config, name, key_type)
        with open_signer(config, name) as signer:
            local = file_key(key_type)

            def hsm_sign(
                signer: Signer = signer, algorithm: hashes.HashAlgorithm | None = algorithm
            ) -> bytes:
                return signer.sign(DATA, algorithm)

            def file_sign(
                local: Signer = local, algorithm: hashes.HashAlgorithm | None = algorithm
            ) -> bytes:
                return local.sign(DATA, algorithm)

            one = median(lambda: rate_one_thread(hsm_sign, args.seconds), args.runs)
            many = median(lambda: rate_threads(hsm_sign, args.seconds, args.threads), args.runs)
            plain = median(lambda: rate_one_thread(file_sign, args.seconds), args.runs)
        print(f"{name:<10} {one:>13,.0f} {many:>14,.0f} {plain:>10,.0f}")


if __name__ == "__main__":
    main()
