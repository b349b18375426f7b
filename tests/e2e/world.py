"""The e2e world: a real `secumail serve` process, a customer, recipient domains.

`GatewayProcess` runs the gateway exactly as an operator would: a TOML config file,
the `secumail` command, SIGTERM to stop. The harness DNS, CA and MX servers are reached
through ordinary settings (`dns.nameservers`, `tls.trust_file`, `delivery.port`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secumail.cli.main import main as secumail_main
from tests.harness import free_port
from tests.harness.dns import AuthoritativeDns
from tests.harness.mx import HarnessMx
from tests.harness.pki import TestCA

SECUMAIL = str(Path(sys.executable).parent / "secumail")
GATEWAY_HOST = "gw.secumail.test"


@dataclass
class Customer:
    account_id: str
    name: str
    domain: str
    username: str
    password: str


class GatewayProcess:
    def __init__(
        self, workdir: Path, dns: AuthoritativeDns, ca: TestCA, mx_port: int, **settings: Any
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "var"
        self.config = workdir / "secumail.toml"
        self.log_file = workdir / "secumail.log"
        self.submission_port = free_port()
        self.tls_port = free_port()
        self.api_port = free_port()
        sections: dict[str, dict[str, Any]] = {
            # One process unless a test asks for more (the default, "auto", is one per core).
            "server": {"hostname": GATEWAY_HOST, "data_dir": str(self.data_dir), "log_level": "DEBUG",
                       "workers": 1},
            "submission": {
                "listen": [f"127.0.0.1:{self.submission_port}"],
                "listen_tls": [f"127.0.0.1:{self.tls_port}"],
            },
            "tls": {"trust_file": str(ca.ca_file)},
            "dns": {"nameservers": [dns.address], "timeout": 3.0},
            "delivery": {
                "port": mx_port,
                "retry_schedule": [1.0, 1.0, 2.0],
                "connect_timeout": 3.0,
                "command_timeout": 10.0,
                "connection_idle": 5.0,
            },
            "bus": {"lease": 3.0},
            "api": {"listen": [f"127.0.0.1:{self.api_port}"], "webhooks_allow_private": True},
            "notify": {},
        }
        for key, value in settings.items():
            section, _, name = key.partition("__")
            sections.setdefault(section, {})[name] = value
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(_toml(sections), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None
        self.http_clients: list[Any] = []  # API clients, closed before the gateway stops

    # -- process -----------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> Any:
        """`secumail --config … ARGS --json`, parsed. Runs the command's own `main()` in
        this process (the same code path as the installed command, without paying for a
        fresh interpreter each time); `cli_process()` runs the real executable."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = secumail_main(["--config", str(self.config), *args, "--json"])
        if check and code != 0:
            raise AssertionError(f"secumail {' '.join(args)} failed ({code}): {err.getvalue()}")
        return json.loads(out.getvalue()) if out.getvalue().strip() else None

    def cli_process(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed `secumail` executable, as an operator runs it."""
        return subprocess.run(
            [SECUMAIL, "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=60,
        )

    def start(self, *roles: str) -> GatewayProcess:
        role_args = [a for r in roles for a in ("--role", r)]
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [SECUMAIL, "--config", str(self.config), "serve", *role_args],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if not roles or "submission" in roles or "all" in roles:
            self._wait_listening(self.submission_port)
        return self

    def _wait_listening(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"secumail serve exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"secumail serve did not listen on {port}:\n{self.log()}")

    def stop(self) -> int | None:
        for client in self.http_clients:
            client.close()  # an idle TLS keep-alive would make the API wait at shutdown
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        if self._log is not None:
            self._log.close()
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # -- operator steps --------------------------------------------------------------
    def onboard(self, dns: AuthoritativeDns, name: str, domain: str, **account: str) -> Customer:
        """Account, domain (ownership TXT published and verified), SMTP credential."""
        extra = [x for k, v in account.items() for x in (f"--{k}", v)]
        acc = self.cli("account", "create", name, *extra)
        added = self.cli("domain", "add", name, domain)
        for record in added["records"]:
            if record["required"]:  # ownership and DKIM keys
                dns.add(record["name"], "TXT", _txt(record["value"]))
        verified = self.cli("domain", "verify", domain)
        assert verified["verified"] and verified["dkim_published"], verified
        cred = self.cli("credential", "create", name, "--kind", "smtp")
        return Customer(acc["id"], name, domain, cred["username"], cred["password"])

    def message(self, message_id: str) -> dict:
        return self.cli("message", "show", message_id)

    def wait_status(
        self, message_id: str, wanted: set[str], timeout: float = 20.0
    ) -> dict:
        """Poll `message show` until every recipient's status is in `wanted`."""
        deadline = time.monotonic() + timeout
        shown: dict = {}
        while time.monotonic() < deadline:
            shown = self.message(message_id)
            if all(r["status"] in wanted for r in shown["recipients"]):
                return shown
            time.sleep(0.2)
        raise AssertionError(f"message {message_id} did not reach {wanted}: {json.dumps(shown, indent=1)}")

    # -- a sender's mail server ------------------------------------------------------
    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "gateway.crt"))
        ctx.check_hostname = False  # we dial 127.0.0.1; the chain is still verified
        return ctx

    def smtp(self, *, starttls: bool = True, login: Customer | None = None) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.submission_port, local_hostname="sender.test", timeout=20)
        client.ehlo()
        if starttls:
            client.starttls(context=self.client_context())
            client.ehlo()
        if login is not None:
            client.login(login.username, login.password)
        return client

    def send(self, customer: Customer, to: list[str], *, sender: str | None = None,
             body: bytes | None = None, subject: str = "Test") -> str:
        """Submit one message; returns the queue id from `250 2.0.0 Ok: queued as ID`."""
        sender = sender or f"alice@{customer.domain}"
        data = body or make_message(sender, to, subject)
        with self.smtp(login=customer) as client:
            client.mail(sender)
            for rcpt in to:
                code, text = client.rcpt(rcpt)
                assert code == 250, (code, text)
            code, text = client.data(data)
            assert code == 250, (code, text)
        return queue_id(text)


def _txt(value: str) -> str:
    """Presentation form of a TXT value: quoted strings of at most 255 octets."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


def queue_id(reply_text: bytes) -> str:
    text = reply_text.decode()
    assert "queued as " in text, text
    return text.rsplit("queued as ", 1)[1].strip()


def make_message(sender: str, to: list[str], subject: str, text: str = "Hello,\r\nthis is private.\r\n") -> bytes:
    headers = (
        f"From: Alice <{sender}>\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.time_ns()}@{sender.split('@')[1]}>\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n"
    )
    return (headers + "\r\n" + text).encode()


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    out = []
    for section, values in sections.items():
        out.append(f"[{section}]")
        for key, value in values.items():
            out.append(f"{key} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


class World:
    """Recipient domains with MX servers, by kind, on 127.0.0.x; MTA-STS policies."""

    STS_IP = "127.0.0.250"

    def __init__(
        self, dns: AuthoritativeDns, ca: TestCA, mx_factory: Any, sts_server: Any = None
    ) -> None:
        self.dns = dns
        self.ca = ca
        self.mx_factory = mx_factory
        self._sts_server = sts_server  # a callable giving the started HttpsServer
        self._next_ip = 10

    def mta_sts(
        self, domain: str, mode: str = "enforce", mx: list[str] | None = None, *,
        max_age: int = 86400, policy_id: str | None = None, cert: Any = None,
    ) -> Any:
        """Publish an MTA-STS policy for `domain` (RFC 8461): the TXT record, the
        mta-sts host's address and certificate, and the policy file. Returns the server."""
        server = self._sts_server()
        host = f"mta-sts.{domain}"
        policy_id = policy_id or f"{int(time.time() * 1000)}"
        self.dns.remove(f"_mta-sts.{domain}", "TXT")
        self.dns.add(f"_mta-sts.{domain}", "TXT", f'"v=STSv1; id={policy_id}"')
        self.dns.add(host, "A", self.STS_IP)
        server.add_certificate(host, cert or self.ca.issue(host))
        patterns = mx if mx is not None else [f"*.{domain}"]
        policy = f"version: STSv1\r\nmode: {mode}\r\n" + "".join(f"mx: {p}\r\n" for p in patterns)
        server.set_policy(policy + f"max_age: {max_age}\r\n", host=host)
        return server

    def ip(self) -> str:
        self._next_ip += 1
        return f"127.0.0.{self._next_ip}"

    def mx(self, mx_host: str, kind: str = "good", **kwargs: Any) -> HarnessMx:
        """An MX host with A record; kind: good, no_starttls, expired, wrong_name,
        self_signed, tls10."""
        ip = self.ip()
        self.dns.add(mx_host, "A", ip)
        if kind == "good":
            kwargs.setdefault("cert", self.ca.issue(mx_host))
        elif kind == "no_starttls":
            kwargs["starttls"] = False
        elif kind == "expired":
            kwargs["cert"] = self.ca.issue(mx_host, expired=True)
        elif kind == "wrong_name":
            kwargs["cert"] = self.ca.issue("other.example.test")
        elif kind == "self_signed":
            kwargs["cert"] = self.ca.self_signed(mx_host)
        elif kind == "tls10":
            kwargs["cert"] = self.ca.issue(mx_host)
            kwargs["tls_max"] = ssl.TLSVersion.TLSv1
        else:
            raise ValueError(kind)
        return self.mx_factory(ip, hostname=mx_host, **kwargs)

    def domain(self, domain: str, kind: str = "good", *, preference: int = 10, **kwargs: Any) -> HarnessMx:
        mx_host = f"mx{preference}.{domain}"
        self.dns.add(domain, "MX", f"{preference} {mx_host}.")
        return self.mx(mx_host, kind, **kwargs)
