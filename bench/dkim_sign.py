"""DKIM signing throughput: signatures per second, RSA-2048 and Ed25519, 5 KB and 100 KB.

Run by hand: ``.venv/bin/python bench/dkim_sign.py [--iterations N] [--runs R] [--threads T]``.
Each figure is the median of R runs of N calls to `secumail.mail.dkim.sign` with one key
(body canonicalization and hash, header selection, one signature), spread over T threads
(`cryptography` releases the GIL during the RSA operation). "both" signs with both keys at
once (the body hash is shared) and counts messages. "raw" is the bare `cryptography` sign
call on 32 bytes, the ceiling for one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from secumail.mail.dkim import DkimKey, generate_ed25519, generate_rsa, sign


def make_message(size: int) -> bytes:
    head = (
        b"From: Alice <alice@example.test>\r\n"
        b"To: Bob <bob@example.org>, Carol <carol@example.org>\r\n"
        b"Subject: Quarterly report\r\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0100\r\n"
        b"Message-ID: <20240101.1@example.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"Received: from client.example.test by gateway; Mon, 01 Jan 2024 10:00:00 +0100\r\n"
        b"\r\n"
    )
    line = b"The quick brown fox  jumps over the lazy dog, line %06d, with text \r\n"
    lines, n = [], 0
    while len(head) + sum(map(len, lines)) < size:
        lines.append(line % n)
        n += 1
    return head + b"".join(lines)


def rate(message: bytes, keys: list[DkimKey], iterations: int, runs: int, threads: int) -> float:
    def work(count: int) -> None:
        for _ in range(count):
            sign(message, keys)

    results = []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(runs):
            start = time.perf_counter()
            list(pool.map(work, [iterations // threads] * threads))
            results.append(iterations // threads * threads / (time.perf_counter() - start))
    return statistics.median(results)


def raw_rate(key: DkimKey, iterations: int, runs: int) -> float:
    results = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(iterations):
            if isinstance(key.private_key, rsa.RSAPrivateKey):
                key.private_key.sign(b"x" * 32, padding.PKCS1v15(), hashes.SHA256())
            else:
                key.private_key.sign(b"x" * 32)
        results.append(iterations / (time.perf_counter() - start))
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    n, runs, threads = args.iterations, args.runs, args.threads
    rsa_key = generate_rsa("example.test", "rsa")
    ed_key = generate_ed25519("example.test", "ed")
    print(f"{threads} thread(s), median of {runs} runs of {n} signatures")
    print(f"{'key':<16}{'message':>10}{'signatures/s':>16}")
    print(f"{'RSA-2048':<16}{'raw':>10}{raw_rate(rsa_key, n, runs):>16,.0f}")
    print(f"{'Ed25519':<16}{'raw':>10}{raw_rate(ed_key, n, runs):>16,.0f}")
    for size in (5_000, 100_000):
        message = make_message(size)
        label = f"{len(message) // 1000} KB"
        for name, keys in (("RSA-2048", [rsa_key]), ("Ed25519", [ed_key])):
            print(f"{name:<16}{label:>10}{rate(message, keys, n, runs, threads):>16,.0f}")
        both = rate(message, [rsa_key, ed_key], n, runs, threads)
        print(f"{'both (messages)':<16}{label:>10}{both:>16,.0f}")


if __name__ == "__main__":
    main()
