"""A byte-exact SMTP client for protocol tests: sends exactly what it is given."""

from __future__ import annotations

import base64
import socket
import ssl

from tests.e2e.world import Customer


class RawSmtp:
    def __init__(self, port: int, *, implicit_tls: bool = False, ctx: ssl.SSLContext | None = None) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.ctx = ctx
        if implicit_tls:
            assert ctx is not None
            self.sock = ctx.wrap_socket(self.sock)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; buffered {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: code and text lines joined by newlines."""
        lines = []
        while True:
            raw = self.line().decode()
            lines.append(raw[4:].rstrip("\r\n"))
            if raw[3:4] != "-":
                return int(raw[:3]), "\n".join(lines)

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def starttls(self) -> None:
        code, text = self.cmd("STARTTLS")
        assert code == 220, text
        assert self.ctx is not None
        assert self.buf == b"", "no reply may be pending when TLS starts"
        self.sock = self.ctx.wrap_socket(self.sock)

    def login(self, who: Customer) -> tuple[int, str]:
        token = base64.b64encode(f"\0{who.username}\0{who.password}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {token}")

    def closed(self) -> bool:
        """True when the server has closed the connection (EOF after any buffered data)."""
        try:
            self.sock.settimeout(5)
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionError, ssl.SSLError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()


def open_session(gateway, who: Customer | None = None, *, ehlo: str = "client.test") -> RawSmtp:
    """Connected, greeted, STARTTLS done, EHLO again, and logged in when `who` is given."""
    s = RawSmtp(gateway.submission_port, ctx=gateway.client_context())
    assert s.reply()[0] == 220
    assert s.cmd(f"EHLO {ehlo}")[0] == 250
    s.starttls()
    assert s.cmd(f"EHLO {ehlo}")[0] == 250
    if who is not None:
        code, text = s.login(who)
        assert code == 235, text
    return s
