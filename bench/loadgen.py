"""The benchmark's load generator: persistent STARTTLS + AUTH PLAIN submission clients.

Run as its own process (`python bench/loadgen.py CONFIG_JSON`, one JSON result on stdout)
so its CPU is measured apart from the systems under test and the sink. Each of
`connections` clients opens one connection (EHLO, STARTTLS with certificate and name
verification, EHLO, AUTH PLAIN), then, on that connection, sends each message as one
pipelined group `MAIL FROM` + `RCPT TO` + `DATA` (RFC 2920), waits for 354, sends the body.

Modes:
- ``closed``: every connection sends back to back until `duration` seconds have passed
  (or `messages` were sent): the throughput measurement. With `retry_refused` (seconds)
  a refused message is offered again after that pause, as a sending MTA would.
- ``rate``: an open-loop schedule of `rate` messages/s for `duration` seconds, spread over
  the connections (a message waits for a free connection when all are busy; `late`
  counts those that started more than 50 ms after their slot).

Each message carries `X-Bench-Id: <tag>-<n>` and `X-Bench-Submitted: <time.time()>`
stamped just before its MAIL FROM is written. Replies: 250 after the data counts as
accepted, 4xx as temp_fail (the client sends RSET, or reconnects after 421), 5xx as
perm_fail, a dropped connection as error (the client reconnects).

Messages (`size`): ``5k`` is a plain-text mail of ~5 KB; ``100k`` a multipart/mixed mail
with a short text part and a ~70 KB PDF-like attachment in base64 (~100 KB in all).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import ssl
import sys
import time

LOREM = ["Lorem", "ipsum", "dolor", "sit", "amet,", "consectetur", "adipiscing", "elit,", "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua.", "Ut", "enim", "ad", "minim", "veniam,", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi", "ut", "aliquip", "ex", "ea", "commodo", "consequat.", "Duis", "aute", "irure", "dolor", "in", "reprehenderit", "in", "voluptate", "velit", "esse", "cillum", "dolore", "eu", "fugiat", "nulla", "pariatur.", "Excepteur", "sint", "occaecat", "cupidatat", "non", "proident,", "sunt", "in", "culpa", "qui", "officia", "deserunt", "mollit", "anim", "id", "est", "laborum."]


def _paragraphs(n_bytes: int, rng: random.Random) -> bytes:
    """Wrapped prose (72 columns, CRLF), about ``n_bytes`` long, no line starting with '.'."""
    lines, line, total = [], "", 0
    while total < n_bytes:
        word = rng.choice(LOREM)
        if len(line) + 1 + len(word) > 72:
            lines.append(line)
            total += len(line) + 2
            line = ""
            if rng.random() < 0.12:
                lines.append("")
                total += 2
        line = f"{line} {word}" if line else word.capitalize()
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode()


def templates(size: str, mail_from: str) -> tuple[bytes, bytes]:
    """(headers before the per-message ones, the rest of the message): the message is
    head + To/Message-ID/X-Bench-* lines + rest."""
    rng = random.Random(size)
    head = (
        f"From: Bench Sender <{mail_from}>\r\n"
        "Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode()
    if size == "5k":
        body = _paragraphs(4600, rng)
        rest = (
            b"Subject: Discharge summary and follow-up appointment\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 7bit\r\n\r\n" + body
        )
    elif size == "100k":
        attachment = base64.encodebytes(rng.randbytes(72_000)).replace(b"\n", b"\r\n")
        boundary = b"=_bench_boundary_7f3a9c"
        rest = (
            b"Subject: Scan results (attached)\r\n"
            b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"\r\n\r\n"
            b"This is a multi-part message in MIME format.\r\n\r\n"
            b"--" + boundary + b"\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 7bit\r\n\r\n" + _paragraphs(1500, rng) + b"\r\n"
            b"--" + boundary + b"\r\n"
            b"Content-Type: application/pdf; name=\"scan.pdf\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=\"scan.pdf\"\r\n\r\n" + attachment +
            b"\r\n--" + boundary + b"--\r\n"
        )
    else:
        raise ValueError(size)
    return head, rest


class Counters:
    def __init__(self) -> None:
        self.attempted = self.accepted = self.temp_fail = self.perm_fail = self.errors = 0
        self.late = 0
        self.accept_latency: list[float] = []
        self.accepted_ids: list[int] = []
        self.replies: dict[str, int] = {}
        self.samples: dict[str, str] = {}  # the first reply text per refusal code


class Client:
    def __init__(self, cfg: dict, head: bytes, rest: bytes, ctx: ssl.SSLContext, c: Counters) -> None:
        self.cfg, self.head, self.rest, self.ctx, self.c = cfg, head, rest, ctx, c
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        token = base64.b64encode(f"\0{cfg['user']}\0{cfg['password']}".encode()).decode()
        self.auth = f"AUTH PLAIN {token}\r\n".encode()
        self.envelope_from = f"MAIL FROM:<{cfg['mail_from']}>\r\n".encode()

    async def reply(self) -> tuple[int, bytes]:
        assert self.reader is not None
        text = b""
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("connection closed")
            text += line
            if line[3:4] != b"-":
                return int(line[:3]), text

    async def connect(self) -> None:
        cfg = self.cfg
        self.reader, self.writer = await asyncio.open_connection(cfg["host"], cfg["port"], limit=1 << 20)
        code, text = await self.reply()
        if code != 220:
            raise ConnectionError(f"greeting {text!r}")
        self.writer.write(b"EHLO load.bench.test\r\n")
        code, text = await self.reply()
        if b"STARTTLS" not in text:
            raise RuntimeError(f"no STARTTLS offered: {text!r}")
        self.writer.write(b"STARTTLS\r\n")
        code, text = await self.reply()
        if code != 220:
            raise RuntimeError(f"STARTTLS {text!r}")
        await self.writer.start_tls(self.ctx, server_hostname=cfg["server_hostname"])
        self.writer.write(b"EHLO load.bench.test\r\n")
        code, text = await self.reply()
        if b"PIPELINING" not in text:
            raise RuntimeError(f"no PIPELINING offered: {text!r}")
        self.writer.write(self.auth)
        code, text = await self.reply()
        if code != 235:
            raise RuntimeError(f"AUTH {text!r}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
            self.writer = None

    async def quit(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 5)
        except (TimeoutError, OSError, ConnectionError, ValueError):
            pass
        self.close()

    def _note(self, code: int, text: bytes) -> None:
        key = f"{code}"
        self.c.replies[key] = self.c.replies.get(key, 0) + 1
        self.c.samples.setdefault(key, text.decode(errors="replace").strip()[:200])

    async def send(self, n: int) -> bool:
        """One message; updates the counters; True when accepted. Raises ConnectionError
        when the connection is gone (the caller reconnects)."""
        assert self.writer is not None
        cfg, c = self.cfg, self.c
        rcpt = f"r{n % 1000}@{cfg['rcpt_domain']}"
        c.attempted += 1
        t0 = time.time()
        per = (
            f"To: <{rcpt}>\r\nMessage-ID: <{cfg['tag']}.{n}@bench.test>\r\n"
            f"X-Bench-Id: {cfg['tag']}-{n}\r\nX-Bench-Submitted: {t0:.6f}\r\n"
        ).encode()
        self.writer.write(self.envelope_from + f"RCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        replies = [await self.reply() for _ in range(3)]
        if replies[2][0] != 354:
            # the first refusal says why (after a refused MAIL, RCPT and DATA get 503)
            code, text = next(r for r in replies if r[0] not in (250, 251))
            self._fail(code, text)
            if 421 in (r[0] for r in replies):
                raise ConnectionError("421")
            self.writer.write(b"RSET\r\n")
            await self.reply()
            return False
        self.writer.write(self.head + per + self.rest + b".\r\n")
        code, text = await self.reply()
        if code == 250:
            c.accepted += 1
            c.accept_latency.append(time.time() - t0)
            if cfg.get("record_ids"):
                c.accepted_ids.append(n)
            return True
        self._fail(code, text)
        if code == 421:
            raise ConnectionError("421")
        return False

    def _fail(self, code: int, text: bytes) -> None:
        self._note(code, text)
        if 400 <= code < 500:
            self.c.temp_fail += 1
        else:
            self.c.perm_fail += 1


def client_context(cfg: dict) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cfg["cafile"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def percentiles(values: list[float]) -> dict | None:
    if not values:
        return None
    values = sorted(values)

    def pick(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {"n": len(values), "p50": pick(0.5), "p99": pick(0.99), "max": values[-1]}


async def run(cfg: dict) -> dict:
    head, rest = templates(cfg["size"], cfg["mail_from"])
    ctx = client_context(cfg)
    c = Counters()
    clients = [Client(cfg, head, rest, ctx, c) for _ in range(cfg["connections"])]
    async def first_connect(cl: Client) -> None:
        try:
            await cl.connect()
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as exc:
            c.errors += 1  # e.g. 421 too many connections; the client retries when used
            c.replies[f"connect: {exc}"[:80]] = c.replies.get(f"connect: {exc}"[:80], 0) + 1
            cl.close()

    await asyncio.gather(*(first_connect(cl) for cl in clients))
    if all(cl.writer is None for cl in clients):
        raise RuntimeError(f"no connection could be opened: {c.replies}")
    duration = float(cfg["duration"])
    limit = cfg.get("messages") or 1 << 62
    base = int(cfg.get("id_base", 0))
    t_start = time.time()
    deadline = t_start + duration
    counter = iter(range(base, base + limit))

    async def resilient(cl: Client, n: int) -> bool:
        for _attempt in range(2):
            try:
                if cl.writer is None:
                    await cl.connect()
                return await cl.send(n)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as exc:
                c.errors += 1
                c.samples.setdefault(f"error {type(exc).__name__}", str(exc)[:200])
                cl.close()
                await asyncio.sleep(0.05)
        return False

    async def closed_loop(cl: Client) -> None:
        while time.time() < deadline:
            n = next(counter, None)
            if n is None:
                return
            # retry_refused: like a sending MTA, try the same message again a little later
            while not await resilient(cl, n) and cfg.get("retry_refused") and time.time() < deadline:
                await asyncio.sleep(float(cfg["retry_refused"]))

    async def rate_loop() -> None:
        rate = float(cfg["rate"])
        total = min(limit, int(duration * rate))
        queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

        async def worker(cl: Client) -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                n, slot = item
                if time.time() - slot > 0.05:
                    c.late += 1
                await resilient(cl, n)

        workers = [asyncio.ensure_future(worker(cl)) for cl in clients]
        for k in range(total):
            slot = t_start + k / rate
            delay = slot - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((base + k, slot))
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)

    if cfg["mode"] == "closed":
        await asyncio.gather(*(closed_loop(cl) for cl in clients))
    else:
        await rate_loop()
    t_end = time.time()
    await asyncio.gather(*(cl.quit() for cl in clients))
    if cfg.get("record_ids"):
        with open(cfg["record_ids"], "w") as f:
            f.writelines(f"{n}\n" for n in c.accepted_ids)
    t = __import__("os").times()
    return {
        "t_start": t_start, "t_end": t_end, "attempted": c.attempted, "accepted": c.accepted,
        "temp_fail": c.temp_fail, "perm_fail": c.perm_fail, "errors": c.errors, "late": c.late,
        "replies": c.replies, "reply_samples": c.samples,
        "accept_latency": percentiles(c.accept_latency),
        "cpu": t.user + t.system,
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(cfg))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
