"""Secumail against Postfix + OpenDKIM doing the same work, side by side in one run.

Run by hand (never a timed test):

    make bench                                  # the full run (~9 min on 2 cores)
    .venv/bin/python bench/compare.py --quick   # 5 KB, 8 connections, ~2 min
    .venv/bin/python bench/compare.py sinkcheck # the sink is not the bottleneck
    .venv/bin/python bench/compare.py profile   # py-spy of `secumail serve` under load
    .venv/bin/python bench/compare.py queue100k # 100,000 queued while the MX is down
    .venv/bin/python bench/compare.py overload  # 2x capacity for a minute

What runs (all on loopback, each in its own process so CPU is measured per group):
- the harness DNS (records: MX of clinic.test and hospital.test → the sink's name, its
  address, the DKIM keys of hospital.test; negative answers with a 300 s TTL, as a real
  zone's SOA minimum gives them) and a harness CA, in this process;
- the TLS sink (bench/sink.py) on 127.0.0.20, certificate for mx10.clinic.test from the
  harness CA; it counts messages per cell and the submit→delivered latency of each;
- Postfix + OpenDKIM (bench/reference.py): STARTTLS + SASL AUTH on 127.0.0.30, OpenDKIM
  RSA-2048 milter on a unix socket, verified TLS (CA + name) to the sink, reuse on;
- Secumail: the real `secumail serve` (tests.e2e.world.GatewayProcess) with its embedded
  defaults (SQLite, embedded bus, INFO logging, default retry/timeouts), DNS = the
  harness DNS, tls.trust_file = the harness CA, delivery.port = the sink's port; the
  customer hospital.test onboarded (DKIM RSA-2048 + Ed25519 published and verified);
  `--workers 1,2` runs one such gateway per worker count (`serve --workers N`; systems
  "secumail", "secumail-w2", …), all for the whole run, each with its own DKIM selectors,
  each measured against the same Postfix, cell by cell in turn;
- the load generator (bench/loadgen.py), one process per cell.

Per cell (system × size × connections): a closed-loop throughput run (`tput_seconds` of
back-to-back messages on N persistent connections, then draining until the sink has
every accepted message) → accepted/s, delivered/s (sink count / (last delivery − start)),
CPU ms per delivered message per process group, peak RSS; and a separate open-loop run
at 50 msg/s → p50/p99 submit→delivered latency. Each is repeated; medians reported
(latency: percentiles over the messages of all repetitions together).
Results: bench/results/<timestamp>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from procstat import Group, Sampler  # noqa: E402
from reference import ReferenceMta, ensure_packages  # noqa: E402
from tests.e2e.world import GATEWAY_HOST, SECUMAIL, Customer, GatewayProcess  # noqa: E402
from tests.harness import free_port  # noqa: E402
from tests.harness.dns import AuthoritativeDns  # noqa: E402
from tests.harness.pki import TestCA  # noqa: E402
from tests.harness.scanners import Clamd, Rspamd  # noqa: E402

PY = sys.executable
RESULTS = BENCH / "results"
SINK_IP, PF_IP = "127.0.0.20", "127.0.0.30"
SENDER_DOMAIN, RCPT_DOMAIN = "hospital.test", "clinic.test"
SINK_NAME = f"mx10.{RCPT_DOMAIN}"
SUBMIT_NAME = "submit.bench.test"
MAIL_FROM = f"load@{SENDER_DOMAIN}"
PF_USER, PF_PASSWORD = "bench", "bench-password-0a1b2c"
LAT_RATE = 50.0
NEGATIVE_TTL = 300  # (--negative-ttl) seconds the harness DNS's negative answers may be cached (RFC 2308)
QUIET_SECONDS = 1.0  # after os.sync(), before each latency cell
# Secumail's defaults for what tests.e2e.world.GatewayProcess shortens for tests.
SECUMAIL_DEFAULTS: dict[str, Any] = {
    "server__log_level": "INFO",
    "dns__timeout": 5.0,
    "delivery__retry_schedule": [300, 600, 1200, 2400, 3600, 7200, 14400, 28800],
    "delivery__connect_timeout": 30.0,
    "delivery__command_timeout": 300.0,
    "delivery__connection_idle": 30.0,
    "bus__lease": 60.0,
    "api__webhooks_allow_private": False,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the sink process ---------------------------------------------------------------------
class SinkProc:
    def __init__(self, ip: str, port: int, cert: Any) -> None:
        cfg = {"host": ip, "port": port, "hostname": SINK_NAME, "cert": str(cert.cert_file),
               "key": str(cert.key_file), "quickack": False}
        self.ip, self.port = ip, port
        self.proc = subprocess.Popen(
            [PY, str(BENCH / "sink.py"), json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self._lock = threading.Lock()
        ready = json.loads(self.proc.stdout.readline() or "{}")  # type: ignore[union-attr]
        if not ready.get("ready"):
            raise RuntimeError("sink did not start")
        self.pid = self.proc.pid

    def cmd(self, **req: Any) -> dict:
        with self._lock:
            self.proc.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def cpu(self) -> float:
        return self.cmd(cmd="cpu")["cpu"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.cmd(cmd="quit")
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class BenchGateway(GatewayProcess):
    """`secumail serve`, with `--workers N` when asked (N identical processes)."""

    workers = 1

    def start(self, *roles: str) -> GatewayProcess:
        if self.workers <= 1:
            return super().start(*roles)
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [SECUMAIL, "--config", str(self.config), "serve", "--workers", str(self.workers)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._wait_listening(self.submission_port)
        return self


def secumail_variants(workers: list[int]) -> list[tuple[str, str, int]]:
    """(system name, label, worker count) of each Secumail gateway to run, in the given
    order: "secumail" for 1 worker (for the first entry when 1 is not among them),
    "secumail-wN" for the others."""
    counts = list(dict.fromkeys(workers)) or [1]
    base = 1 if 1 in counts else counts[0]
    return [("secumail" if n == base else f"secumail-w{n}",
             "Secumail" if n == 1 else f"Secumail ({n} workers)", n) for n in counts]


# -- the systems under test -------------------------------------------------------------------
@dataclass
class System:
    name: str  # "postfix" | "secumail" | "secumail-wN"
    label: str
    submit: dict[str, Any]  # loadgen connection settings
    groups: list[Group]
    pids: Any = None  # () -> list of pids, for py-spy
    info: dict[str, Any] = field(default_factory=dict)


class Bench:
    """The whole setup: DNS, CA, sink, Postfix+OpenDKIM, Secumail. A context manager.

    `workers`: one Secumail gateway (`secumail serve --workers N`) per entry, all running
    side by side for the whole run (each with its own work directory, ports, database and
    DKIM selectors), so that the measurement loops interleave them with Postfix."""

    def __init__(self, *, postfix: bool = True, secumail: bool = True, keep: bool = False,
                 secumail_settings: dict[str, Any] | None = None, quickack: str = "best",
                 workers: int | list[int] = 1, scan: bool = False) -> None:
        self.workers = [workers] if isinstance(workers, int) else list(workers)
        self.scan = scan  # one more gateway, "secumail-scan", scanning with clamd and rspamd
        self.gateways: dict[str, BenchGateway] = {}
        self.want_postfix, self.want_secumail, self.keep = postfix, secumail, keep
        self.quickack = quickack
        self.secumail_settings = {**SECUMAIL_DEFAULTS, **(secumail_settings or {})}
        self.systems: dict[str, System] = {}
        self._stack = contextlib.ExitStack()
        self._tags = 0
        self._dkim_names: set[str] = set()  # DKIM TXT names published by the gateways
        self.delivered_at_drain: dict[str, int] = {}

    # setup --------------------------------------------------------------------------------
    def __enter__(self) -> Bench:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        ensure_packages()
        # OpenDKIM refuses a config file below a world-writable directory (/tmp), and
        # Postfix's socket paths must stay short: work under <repo>/var (gitignored).
        (ROOT / "var").mkdir(exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="bench-", dir=ROOT / "var"))
        self.work.chmod(0o755)
        if not self.keep:
            self._stack.callback(shutil.rmtree, self.work, True)
        log(f"work directory {self.work}")
        self.ca = TestCA(self.work / "pki")
        self.dns = AuthoritativeDns().start()
        # Absences (no AAAA, no _mta-sts TXT, …) remembered as a real zone has them
        # remembered (SOA minimum; 300 s is common), not looked up again per message.
        self.dns.negative_ttl = NEGATIVE_TTL
        self._stack.callback(self.dns.stop)
        self.sink_port = free_port(SINK_IP)
        sink_cert = self.ca.issue(SINK_NAME, f"mx10.{SENDER_DOMAIN}")
        for zone in (SENDER_DOMAIN, RCPT_DOMAIN):
            # Realistic zones: negative answers (no AAAA, no TLSA/MTA-STS) cached 5 minutes.
            self.dns.add(zone, "SOA", "ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 300", ttl=300)
            self.dns.add(zone, "MX", f"10 mx10.{zone}.", ttl=300)
            self.dns.add(f"mx10.{zone}", "A", SINK_IP, ttl=300)
        self.sink = SinkProc(SINK_IP, self.sink_port, sink_cert)
        self._stack.callback(self.sink.stop)
        if self.want_postfix:
            self._start_postfix()
        if self.want_secumail:
            self._start_secumail()

    def _start_postfix(self) -> None:
        pf = ReferenceMta(
            PF_IP, free_port(PF_IP), self.ca.issue(SUBMIT_NAME), self.work / "pf",
            ca_file=self.ca.ca_file, sink_ip=SINK_IP, sink_port=self.sink_port,
            sink_name=SINK_NAME, domain=SENDER_DOMAIN, selector="bench",
            username=PF_USER, password=PF_PASSWORD,
        )
        name, value = pf.dkim_record
        self.dns.add(name, "TXT", _txt(value))
        pf.start()
        self._stack.callback(pf.stop)
        self.postfix = pf

        def master() -> list[int]:
            try:
                return [pf.master_pid()]
            except (OSError, ValueError):
                return []

        def dkim() -> list[int]:
            return [pf.dkim_proc.pid] if pf.dkim_proc is not None else []

        groups = [Group("postfix", master), Group("opendkim", dkim)]
        self.systems["postfix"] = System(
            "postfix", "Postfix+OpenDKIM",
            {"host": pf.ip, "port": pf.port, "server_hostname": SUBMIT_NAME,
             "cafile": str(self.ca.ca_file), "user": pf.login, "password": PF_PASSWORD},
            groups, pids=lambda: master() + dkim(),
            info={"version": _postfix_version(), "opendkim": _opendkim_version()},
        )
        log(f"postfix+opendkim on {pf.address} (master {master()}, opendkim {dkim()})")

    def _start_secumail(self) -> None:
        for index, (name, label, workers) in enumerate(secumail_variants(self.workers)):
            work = self.work / ("gw" if name == "secumail" else f"gw-w{workers}")
            gw = BenchGateway(work, self.dns, self.ca, self.sink_port, **self.secumail_settings)
            gw.workers = workers
            gw.cli("init")
            gw.start()
            self._stack.callback(gw.stop)
            who = self._onboard(gw, index)
            self.gateways[name] = gw
            self._add_secumail(name, label, workers, gw, who)
        if self.scan:
            self._start_scanning_secumail(len(self.gateways))
        self.gateway = self.gateways["secumail"]  # the one `profile`, `queue100k`, `overload` use

    def _start_scanning_secumail(self, index: int) -> None:
        """`--scan`: the same gateway with the scan stage on — Debian's clamd (the harness's
        small signature database: the cost measured is the protocol and clamd's parsing of
        each message, not a full database's matching) and rspamd (Debian's rules) — so the
        report shows the cost of scanning next to the gateway without it. The scanners'
        CPU counts as Secumail's."""
        clamd = self._stack.enter_context(Clamd())
        # As deployed: a worker per core, and a resolver that answers (the harness DNS:
        # rspamd's SPF, DKIM and RBL lookups get their answer or NXDOMAIN at once).
        rspamd = self._stack.enter_context(
            Rspamd(workers=os.cpu_count() or 1, nameserver=f"127.0.0.1:{self.dns.port}")
        )
        settings = {**self.secumail_settings, "scan__clamd": clamd.socket_path, "scan__rspamd": rspamd.url}
        gw = BenchGateway(self.work / "gw-scan", self.dns, self.ca, self.sink_port, **settings)
        gw.cli("init")
        gw.start()
        self._stack.callback(gw.stop)
        who = self._onboard(gw, index)
        self.gateways["secumail-scan"] = gw
        self._add_secumail("secumail-scan", "Secumail (scanning)", 1, gw, who)
        system = self.systems["secumail-scan"]
        system.groups += [Group("clamd", lambda: clamd.pids()), Group("rspamd", lambda: rspamd.pids())]
        log(f"secumail-scan: clamd {clamd.socket_path}, rspamd {rspamd.url}")

    def _onboard(self, gw: BenchGateway, index: int) -> Customer:
        """The bench customer on the `index`-th gateway. Every gateway names its first DKIM
        keys alike (selectors sm<YYYYMM>r/e): a second gateway publishing its own keys under
        the same names would put two TXT records at each name, and DKIM verification of
        either gateway's mail would fail. So the first gateway is onboarded as usual; the
        others rotate to selectors of their own (sm<YYYYMM>x<index>r/e), retire the shared
        ones and publish only theirs."""
        if index == 0:
            who = gw.onboard(self.dns, "Bench", SENDER_DOMAIN)
            published = [r["name"] for r in gw.cli("domain", "records", SENDER_DOMAIN)["records"]
                         if "._domainkey." in r["name"]]
        else:
            account = gw.cli("account", "create", "Bench")
            added = gw.cli("domain", "add", "Bench", SENDER_DOMAIN)
            for record in added["records"]:
                if record["required"] and "._domainkey." not in record["name"]:  # ownership token
                    self.dns.add(record["name"], "TXT", _txt(record["value"]))
            retire = [r["name"].split("._domainkey.")[0] for r in added["records"] if "._domainkey." in r["name"]]
            new_keys: list[dict] = []
            for _ in range(index):  # the n-th rotation gives selectors sm<YYYYMM>x<n>r/e
                retire += [k["selector"] for k in new_keys]
                new_keys = gw.cli("domain", "rotate-dkim", SENDER_DOMAIN)["new_keys"]
            for selector in retire:
                gw.cli("domain", "retire-dkim", SENDER_DOMAIN, selector)
            for key in new_keys:
                if key["name"] in self._dkim_names:
                    raise RuntimeError(f"DKIM selector clash between gateways: {key['name']}")
                self.dns.add(key["name"], "TXT", _txt(key["value"]))
            verified = gw.cli("domain", "verify", SENDER_DOMAIN)
            if not (verified["verified"] and verified["dkim_published"]):
                raise RuntimeError(f"onboarding gateway {index} failed: {verified}")
            cred = gw.cli("credential", "create", "Bench", "--kind", "smtp")
            who = Customer(account["id"], "Bench", SENDER_DOMAIN, cred["username"], cred["password"])
            published = [k["name"] for k in new_keys]
        self._dkim_names |= set(published)
        log(f"{gw.workdir.name}: DKIM keys published at {', '.join(published)}")
        return who

    def _add_secumail(self, name: str, label: str, workers: int, gw: BenchGateway, who: Customer) -> None:
        def root() -> list[int]:
            return [gw.proc.pid] if gw.proc is not None else []

        self.systems[name] = System(
            name, label,
            {"host": "127.0.0.1", "port": gw.submission_port, "server_hostname": GATEWAY_HOST,
             "cafile": str(gw.data_dir / "tls" / "gateway.crt"), "user": who.username,
             "password": who.password},
            [Group("secumail", root)], pids=root,
            info={"version": _git_rev(), "workers": workers},
        )
        log(f"{name}: secumail serve --workers {workers} on 127.0.0.1:{gw.submission_port} (pid {root()})")

    # one measurement ---------------------------------------------------------------------------
    def tag(self, prefix: str) -> str:
        self._tags += 1
        return f"{prefix}{self._tags}"

    def loadgen(self, system: System, **cfg: Any) -> dict:
        full = {**system.submit, "mail_from": MAIL_FROM, "rcpt_domain": RCPT_DOMAIN, **cfg}
        proc = subprocess.run([PY, str(BENCH / "loadgen.py"), json.dumps(full)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed for {system.name}: {proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def drain(self, tag: str, expected: int, stall: float = 30.0, limit: float = 900.0,
              every_latency: bool = False) -> dict:
        """Wait until the sink holds `expected` messages of `tag` (or no progress for
        `stall` seconds); the sink's stats for the tag (with `every_latency`, each one)."""
        t0 = last_change = time.monotonic()
        seen = -1
        while True:
            st = self.sink.cmd(cmd="stats", tag=tag)
            if st["count"] >= expected:
                return self.sink.cmd(cmd="stats", tag=tag, all=True) if every_latency else st
            now = time.monotonic()
            if st["count"] != seen:
                seen, last_change = st["count"], now
            elif now - last_change > stall or now - t0 > limit:
                return st
            time.sleep(0.1)

    def cell(self, system: System, *, size: str, connections: int, mode: str, duration: float,
             rate: float | None = None, prefix: str = "c", quickack: bool | None = None,
             **extra: Any) -> dict:
        tag = self.tag(prefix)
        if quickack is None:
            quickack = self.quickack == "quick" or (self.quickack == "best" and mode == "rate")
        self.sink.cmd(cmd="quickack", on=quickack)
        cpu0 = {g.name: g.cpu() for g in system.groups}
        sink0 = self.sink.cpu()
        with Sampler(system.groups, interval=1.0):
            lg = self.loadgen(system, size=size, connections=connections, mode=mode,
                              duration=duration, rate=rate, tag=tag, **extra)
            st = self.drain(tag, lg["accepted"], every_latency=mode == "rate")
            hwm = {g.name: g.hwm_kb() for g in system.groups}
        cpu = {g.name: g.cpu() - cpu0[g.name] for g in system.groups}
        sink_cpu = self.sink.cpu() - sink0
        delivered = st["count"]
        per = max(delivered, 1)
        lat = st["latency"] or {}
        span = (st["last"] - lg["t_start"]) if st["last"] else None
        self.delivered_at_drain[tag] = delivered
        return {
            "system": system.name, "size": size, "connections": connections, "mode": mode,
            "rate": rate, "duration": duration, "tag": tag, "sink_quickack": quickack,
            "attempted": lg["attempted"], "accepted": lg["accepted"], "delivered": delivered,
            "undelivered": lg["accepted"] - delivered, "duplicates": st["duplicates"],
            "temp_fail": lg["temp_fail"], "perm_fail": lg["perm_fail"], "errors": lg["errors"],
            "late": lg["late"], "replies": lg["replies"], "reply_samples": lg.get("reply_samples", {}),
            "accepted_per_s": lg["accepted"] / (lg["t_end"] - lg["t_start"]),
            "submit_seconds": lg["t_end"] - lg["t_start"],
            "attempted_per_s": lg["attempted"] / (lg["t_end"] - lg["t_start"]),
            "delivered_per_s": delivered / span if span else 0.0,
            "drain_s": (st["last"] - lg["t_end"]) if st["last"] else None,
            "latency_ms": {k: v * 1000 for k, v in lat.items() if k != "n"},
            "worst_ms_at_s": st.get("worst", []),
            "latencies_ms": st.get("latencies_ms"),
            "accept_latency_ms": {k: v * 1000 for k, v in (lg["accept_latency"] or {}).items() if k != "n"},
            "cpu_ms_per_msg": {**{k: v * 1000 / per for k, v in cpu.items()},
                               "total": sum(cpu.values()) * 1000 / per},
            "cpu_s": cpu,
            "sink_cpu_ms_per_msg": sink_cpu * 1000 / per,
            "loadgen_cpu_ms_per_msg": lg["cpu"] * 1000 / max(lg["attempted"], 1),
            "peak_rss_mb": sum(hwm.values()) / 1024,
            "peak_rss_mb_by_group": {k: v / 1024 for k, v in hwm.items()},
            "peak_rss_sampled_mb": sum(g.peak_rss_kb for g in system.groups) / 1024,
            "peak_pss_sampled_mb": sum(g.peak_pss_kb for g in system.groups) / 1024,
            "processes": sum(g.count() for g in system.groups),
            "dkim_signatures": st["dkim_signatures"],
        }

    # checks ------------------------------------------------------------------------------------
    def equal_work_check(self) -> dict:
        """Send a few messages through each system and check at the sink what arrived:
        DKIM signatures (verified with dkimpy against the harness DNS), verified TLS."""
        import dkim
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.dns.host]
        resolver.port = self.dns.port

        def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT")
            return b"".join(b"".join(r.strings) for r in answer)

        out: dict[str, Any] = {}
        for system in self.systems.values():
            tag = self.tag("check")
            lg = self.loadgen(system, size="5k", connections=1, mode="closed", duration=60,
                              messages=3, tag=tag)
            st = self.drain(tag, lg["accepted"])
            msg = self.sink.cmd(cmd="sample", tag=tag)["message"].encode("latin-1")
            d = dkim.DKIM(msg)
            sigs = []
            for i in range(msg.count(b"DKIM-Signature:")):
                ok = d.verify(idx=i, dnsfunc=dnsfunc)
                sigs.append({"algorithm": _sig_field(msg, i, b"a"), "domain": _sig_field(msg, i, b"d"),
                             "verified": bool(ok)})
            out[system.name] = {"accepted": lg["accepted"], "delivered": st["count"], "dkim": sigs}
            self.sink.cmd(cmd="forget", tag=tag)
            if st["count"] != 3 or not sigs or not all(s["verified"] for s in sigs):
                raise RuntimeError(f"equal-work check failed for {system.name}: {out[system.name]}")
        if "postfix" in self.systems:
            lines = self.postfix.verified_tls_lines()
            out["postfix"]["verified_tls"] = lines[-1].split(": ", 1)[1] if lines else None
            if not lines:
                raise RuntimeError("Postfix did not log a verified TLS connection to the sink")
        return out

    def late_arrivals(self) -> dict[str, int]:
        """Messages that reached the sink after their cell had stopped waiting for them."""
        late = {}
        for tag, counted in self.delivered_at_drain.items():
            now = self.sink.cmd(cmd="stats", tag=tag)["count"]
            if now > counted:
                late[tag] = now - counted
        return late

    def idle_cpu(self, seconds: float = 3.0) -> dict[str, float]:
        """CPU % of each system while nothing is sent (background work)."""
        before = {s.name: sum(g.cpu() for g in s.groups) for s in self.systems.values()}
        time.sleep(seconds)
        return {n: 100 * (sum(g.cpu() for g in self.systems[n].groups) - v) / seconds
                for n, v in before.items()}


def _sig_field(msg: bytes, idx: int, name: bytes) -> str:
    import dkim
    sig_headers = [v for k, v in dkim.rfc822_parse(msg)[0] if k.lower() == b"dkim-signature"]
    params = dkim.util.parse_tag_value(b"".join(sig_headers[idx].split()))
    return params.get(name, b"").decode()


def _txt(value: str) -> str:
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))


def _git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty(src)" if dirty else "")
    except OSError:
        return "?"


def _postfix_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "postfix"], capture_output=True, text=True)
    return out.stdout.strip()


def _opendkim_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "opendkim"], capture_output=True, text=True)
    return out.stdout.strip()


def rsa_signs_per_s() -> float | None:
    """`openssl speed` RSA-2048 signs/s for 1 s: how fast this (shared, noisy) machine is now."""
    out = subprocess.run(["openssl", "speed", "-seconds", "1", "rsa2048"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("rsa 2048"):
            return float(line.split()[-2])
    return None


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# -- the comparison ------------------------------------------------------------------------------
PLANS = {
    "quick": {"sizes": ["5k"], "connections": [8], "reps": 3, "tput_seconds": 5.0,
              "lat_reps": 3, "lat_seconds": 5.0, "warmup_seconds": 2.0},
    "full": {"sizes": ["5k", "100k"], "connections": [1, 8, 32], "reps": 3, "tput_seconds": 8.0,
             "lat_reps": 3, "lat_seconds": 6.0, "warmup_seconds": 3.0},
}
RETRY_REFUSED = 1.0  # seconds a throughput client waits before offering a refused message again

METRICS = {  # summary metric → how to read it from one run
    "accepted_per_s": lambda r: r["accepted_per_s"],
    "delivered_per_s": lambda r: r["delivered_per_s"],
    "cpu_ms_per_msg": lambda r: r["cpu_ms_per_msg"]["total"],
    "peak_rss_mb": lambda r: r["peak_rss_mb"],
    "peak_pss_mb": lambda r: r["peak_pss_sampled_mb"],
    "sink_cpu_ms_per_msg": lambda r: r["sink_cpu_ms_per_msg"],
    "loadgen_cpu_ms_per_msg": lambda r: r["loadgen_cpu_ms_per_msg"],
    "drain_s": lambda r: r["drain_s"],
}
LAT_METRICS = {
    "p50_ms": lambda r: r["latency_ms"].get("p50"),
    "p99_ms": lambda r: r["latency_ms"].get("p99"),
    "lat_rate_achieved": lambda r: r["accepted_per_s"],
}


def quiet_disk() -> None:
    """Before a latency cell: write back what earlier cells left dirty (both systems'
    queue files and databases) and let the disk settle, so that no system's tail latency
    pays for the other's writeback (seen: alone, Secumail's p99 at 100 KB was 15-22 ms;
    right after a Postfix cell, 35-58 ms)."""
    os.sync()
    time.sleep(QUIET_SECONDS)


def compare(args: argparse.Namespace) -> Path:
    plan = dict(PLANS["quick" if args.quick else "full"])
    for key in ("reps", "lat_reps"):
        if getattr(args, key, None):
            plan[key] = getattr(args, key)
    if args.seconds:
        plan["tput_seconds"] = plan["lat_seconds"] = args.seconds
    if args.cells_connections:
        plan["connections"] = [int(c) for c in args.cells_connections.split(",")]
    if args.cells_sizes:
        plan["sizes"] = args.cells_sizes.split(",")
    started = dt.datetime.now()
    t_run = time.monotonic()
    runs: list[dict] = []
    speed = [rsa_signs_per_s()]
    wanted = args.systems.split(",")
    with Bench(keep=args.keep, quickack=args.sink_ack, postfix="postfix" in wanted,
               secumail="secumail" in wanted, workers=args.workers, scan=args.scan) as bench:
        systems = list(bench.systems.values())  # Postfix, then each Secumail gateway
        w = max(len(s.name) for s in systems)
        check = bench.equal_work_check()
        log(f"equal work: {json.dumps(check)}")
        idle = bench.idle_cpu()
        log(f"idle CPU %: {idle}")
        for s in systems:
            r = bench.cell(s, size="5k", connections=8, mode="closed", duration=plan["warmup_seconds"], prefix="warm")
            log(f"warm-up {s.name}: {r['delivered_per_s']:.0f} msg/s")
        for rep in range(plan["reps"]):
            for size in plan["sizes"]:
                for conns in plan["connections"]:
                    order = systems if rep % 2 == 0 else systems[::-1]
                    for s in order:
                        # A refused (4xx) message is offered again after a pause on that
                        # connection, as a sending MTA would (they wait minutes).
                        r = bench.cell(s, size=size, connections=conns, mode="closed",
                                       duration=plan["tput_seconds"], retry_refused=RETRY_REFUSED)
                        r["kind"], r["rep"] = "throughput", rep
                        runs.append(r)
                        log(f"tput {s.name:{w}} {size:>4} c={conns:<2} rep {rep}: acc {r['accepted_per_s']:6.0f}/s "
                            f"del {r['delivered_per_s']:6.0f}/s cpu {r['cpu_ms_per_msg']['total']:5.2f} ms/msg "
                            f"rss {r['peak_rss_mb']:5.0f} MB drain {r['drain_s'] or 0:4.1f}s"
                            + (f" UNDELIVERED {r['undelivered']}" if r["undelivered"] else ""))
        for rep in range(plan["lat_reps"]):
            for size in plan["sizes"]:
                for conns in plan["connections"]:
                    order = systems if rep % 2 == 0 else systems[::-1]
                    for s in order:
                        quiet_disk()
                        r = bench.cell(s, size=size, connections=conns, mode="rate", rate=LAT_RATE,
                                       duration=plan["lat_seconds"], prefix="l")
                        r["kind"], r["rep"] = "latency", rep
                        runs.append(r)
                        lat = r["latency_ms"]
                        log(f"lat  {s.name:{w}} {size:>4} c={conns:<2} rep {rep}: p50 {lat.get('p50', 0):6.1f} ms "
                            f"p99 {lat.get('p99', 0):6.1f} ms (offered {LAT_RATE:.0f}/s, accepted "
                            f"{r['accepted_per_s']:.1f}/s, late {r['late']})")
        speed.append(rsa_signs_per_s())
        late = bench.late_arrivals()
        for r in runs:
            r["late_arrivals"] = late.get(r["tag"], 0)
        meta = {
            "started": started.isoformat(timespec="seconds"),
            "openssl_rsa2048_signs_per_s_start_end": speed,
            "wall_seconds": round(time.monotonic() - t_run, 1),
            "mode": "quick" if args.quick else "full", "plan": plan,
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "python": platform.python_version()},
            "systems": {s.name: {"label": s.label, **s.info} for s in systems},
            "equal_work": check, "idle_cpu_percent": idle,
            "secumail_settings": bench.secumail_settings,
            "latency_offered_rate": LAT_RATE, "sink_ack": args.sink_ack,
            "dns_negative_ttl": NEGATIVE_TTL,
        }
    summary = summarise(runs, plan, [s.name for s in systems])
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / started.strftime("%Y%m%d-%H%M%S")
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    md = markdown(meta, summary)
    stem.with_suffix(".md").write_text(md)
    plot(summary, plan, stem.with_suffix(".png"), {n: v["label"] for n, v in meta["systems"].items()})
    print()
    print(md)
    log(f"wrote {stem}.json, .md, .png ({meta['wall_seconds']:.0f} s)")
    return stem


RATIO_KEYS = ("accepted_per_s", "delivered_per_s", "p50_ms", "p99_ms", "cpu_ms_per_msg", "peak_rss_mb", "peak_pss_mb")


def pooled_percentiles(latency_runs: list[dict]) -> tuple[float, float] | None:
    """p50 and p99 over every message of the latency runs of a cell taken together: one
    stall of the machine (seen: ~70 ms, once every half minute or so, for whichever system
    runs then) moves one run's p99 of 300 messages, much less that of 900."""
    values = sorted(v for r in latency_runs for v in (r.get("latencies_ms") or []))
    if not values or any(not r.get("latencies_ms") for r in latency_runs):
        return None
    return values[int(0.50 * len(values))], values[min(len(values) - 1, int(0.99 * len(values)))]


def summarise(runs: list[dict], plan: dict, systems: list[str] | None = None) -> list[dict]:
    """One row per cell: the medians of each system, and `ratios[name]` = each Secumail
    system / Postfix (`ratio` = that of "secumail", as in results from before variants)."""
    if systems is None:
        systems = sorted(dict.fromkeys(r["system"] for r in runs), key=lambda n: n != "postfix")
    out = []
    for size in plan["sizes"]:
        for conns in plan["connections"]:
            row: dict[str, Any] = {"size": size, "connections": conns}
            for system in systems:
                t = [r for r in runs if r["system"] == system and r["size"] == size
                     and r["connections"] == conns and r["kind"] == "throughput"]
                lt = [r for r in runs if r["system"] == system and r["size"] == size
                      and r["connections"] == conns and r["kind"] == "latency"]
                if not t and not lt:
                    continue
                m = {k: median([f(r) for r in t]) for k, f in METRICS.items()}
                m.update({k: median([f(r) for r in lt]) for k, f in LAT_METRICS.items()})
                pooled = pooled_percentiles(lt)
                if pooled is not None:
                    m["p50_ms"], m["p99_ms"] = pooled
                groups = sorted({g for r in t for g in r["cpu_ms_per_msg"] if g != "total"})
                m["cpu_ms_per_msg_by_group"] = {g: median([r["cpu_ms_per_msg"][g] for r in t]) for g in groups}
                m["undelivered"] = sum(r["undelivered"] for r in t + lt)
                m["late_arrivals"] = sum(r.get("late_arrivals", 0) for r in t + lt)
                m["duplicates"] = sum(r["duplicates"] for r in t + lt)
                m["failed_submissions"] = sum(r["perm_fail"] + r["errors"] for r in t + lt)
                m["temp_refusals"] = sum(r["temp_fail"] for r in t + lt)
                m["runs"] = {"throughput": [round(r["delivered_per_s"], 1) for r in t],
                             "p99_ms": [round(r["latency_ms"].get("p99", 0), 1) for r in lt]}
                row[system] = m
            if "postfix" in row:
                pf = row["postfix"]
                row["ratios"] = {
                    name: {k: (row[name][k] / pf[k] if row[name].get(k) is not None and pf.get(k) else None)
                           for k in RATIO_KEYS}
                    for name in systems if name != "postfix" and name in row
                }
                if "secumail" in row["ratios"]:
                    row["ratio"] = row["ratios"]["secumail"]
            out.append(row)
    return out


def _f(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _r(v: float | None) -> str:
    return "–" if v is None else f"**{v:.2f}×**"


def markdown(meta: dict, summary: list[dict]) -> str:
    """The report. With several Secumail systems (`--workers 1,2`) each table repeats the
    Secumail columns and their ratios per system, left to right in the order run."""
    pl = meta["plan"]
    systems = meta["systems"]
    variants = [n for n in systems if n != "postfix"] or ["secumail"]
    several = len(variants) > 1
    # column titles: "Secumail" alone (as before variants), else each system's label; the
    # ratio columns of a variant carry its worker count ("ratio accepted (2 workers)")
    title = {n: systems.get(n, {}).get("label", "Secumail") if several else "Secumail" for n in variants}
    tail = {n: title[n].removeprefix("Secumail") for n in variants}
    pf_info = systems.get("postfix", {})
    if several:
        who = (f"Secumail {systems[variants[0]].get('version', '–')}: "
               + " / ".join(systems[n]["label"] for n in variants)
               + " (one gateway per `serve --workers` count, all up for the whole run, measured in turn "
               "with Postfix, cell by cell)")
        ratio_note = "Ratio = each Secumail system / the same Postfix runs."
    else:
        who = f"{systems.get(variants[0], {}).get('label', 'Secumail')} {systems.get(variants[0], {}).get('version', '–')}"
        ratio_note = "Ratio = Secumail / Postfix."

    def cols(row: dict) -> tuple[dict, dict[str, dict], dict[str, dict]]:
        ratios = row.get("ratios", {"secumail": row["ratio"]} if "ratio" in row else {})
        return (row.get("postfix", {}), {n: row.get(n, {}) for n in variants},
                {n: ratios.get(n, {}) for n in variants})

    def pair_table(heading: str, *metrics: tuple[str, str, str], digits: int = 0) -> list[str]:
        """A table of two metrics (column label, ratio label, summary key) per system."""
        out = ["", heading, "",
               *header("size", "conns", *[f"Postfix {label}" for label, _r_label, _k in metrics],
                       *[c for n in variants
                         for c in (*[f"{title[n]} {label}" for label, _r_label, _k in metrics],
                                   *[f"ratio {r_label}{tail[n]}" for _label, r_label, _k in metrics])])]
        for row in summary:
            p, s, q = cols(row)
            out.append(f"| {row['size']} | {row['connections']} | "
                       + " | ".join(_f(p.get(k), digits) for _l, _rl, k in metrics) + " | "
                       + " | ".join(" | ".join([*(_f(s[n].get(k), digits) for _l, _rl, k in metrics),
                                                *(_r(q[n].get(k)) for _l, _rl, k in metrics)])
                                    for n in variants)
                       + " |")
        return out

    def header(*cells: str) -> list[str]:
        return ["| " + " | ".join(cells) + " |", "|---|---:|" + "---:|" * (len(cells) - 2)]

    lines = [
        f"# Secumail vs Postfix+OpenDKIM — {meta['started']} ({meta['mode']})",
        "",
        f"{meta['machine']['cpus']} CPUs, kernel {meta['machine']['kernel']}, Python {meta['machine']['python']}; "
        f"Postfix {pf_info.get('version', '–')}, OpenDKIM {pf_info.get('opendkim', '–')}, {who}. "
        f"Medians of {pl['reps']} throughput runs × {pl['tput_seconds']:.0f} s (+ drain); latency percentiles over "
        f"every message of {pl['lat_reps']} runs × {pl['lat_seconds']:.0f} s at {meta['latency_offered_rate']:.0f} msg/s "
        f"each. {ratio_note}",
    ]
    lines += pair_table("## Throughput (closed loop, persistent TLS+AUTH connections, pipelined)",
                        ("accepted/s", "accepted", "accepted_per_s"), ("delivered/s", "delivered", "delivered_per_s"))
    lines += pair_table(f"## Latency submit → delivered at the sink, offered {meta['latency_offered_rate']:.0f} msg/s",
                        ("p50 ms", "p50", "p50_ms"), ("p99 ms", "p99", "p99_ms"), digits=1)
    lines += [
        "",
        "## Cost per delivered message (throughput runs)",
        "",
        *header("size", "conns", "Postfix CPU ms/msg (postfix + opendkim)",
                *[c for n in variants for c in (f"{title[n]} CPU ms/msg", f"ratio CPU{tail[n]}")],
                "Postfix peak RSS MB (PSS)",
                *[c for n in variants for c in (f"{title[n]} peak RSS MB (PSS)", f"ratio RSS (PSS){tail[n]}")],
                "sink / loadgen CPU ms/msg"),
    ]
    for row in summary:
        p, s, q = cols(row)
        pg = p.get("cpu_ms_per_msg_by_group", {})
        present = [x for x in (p, *s.values()) if x]
        sink = [x.get("sink_cpu_ms_per_msg") for x in present]
        lg = [x.get("loadgen_cpu_ms_per_msg") for x in present]
        lines.append(
            f"| {row['size']} | {row['connections']} | {_f(p.get('cpu_ms_per_msg'), 2)} ({_f(pg.get('postfix'), 2)} + {_f(pg.get('opendkim'), 2)}) | "
            + " | ".join(f"{_f(s[n].get('cpu_ms_per_msg'), 2)} | {_r(q[n].get('cpu_ms_per_msg'))}" for n in variants)
            + f" | {_f(p.get('peak_rss_mb'))} ({_f(p.get('peak_pss_mb'))}) | "
            + " | ".join(f"{_f(s[n].get('peak_rss_mb'))} ({_f(s[n].get('peak_pss_mb'))}) | "
                         f"{_r(q[n].get('peak_rss_mb'))} ({_r(q[n].get('peak_pss_mb'))})" for n in variants)
            + f" | {_f(median(sink), 2)} / {_f(median(lg), 2)} |")
    problems = [f"{row['size']} c={row['connections']} {name}: {row[name]['undelivered']} undelivered when the cell "
                f"ended (stalled 30 s; {row[name]['late_arrivals']} of them arrived later in the run), "
                f"{row[name]['duplicates']} duplicates, {row[name]['failed_submissions']} failed submissions"
                for row in summary for name in ("postfix", *variants)
                if name in row and (row[name]["undelivered"] or row[name]["duplicates"] or row[name]["failed_submissions"])]
    refusals = [f"{row['size']} c={row['connections']} {name}: {row[name].get('temp_refusals', 0)}"
                for row in summary for name in ("postfix", *variants)
                if name in row and row[name].get("temp_refusals")]
    lines += ["", "Peak RSS = sum of VmHWM over the group's processes (Postfix: ~40 processes sharing "
              "libraries, counted in each); PSS = peak of the summed proportional set size, sampled each second.",
              "CPU = utime+stime of every process of the group (Postfix master + all its children, reaped "
              "children included; OpenDKIM; `secumail serve` and its worker processes), from the start of the "
              "load to the last delivery."]
    lines += ["", "Every accepted message was delivered exactly once." if not problems else "**Problems:** " + "; ".join(problems)]
    if refusals:
        lines += ["", f"Submissions answered 4xx by admission control (offered again after {RETRY_REFUSED:g} s on "
                  "that connection, counted once per refusal): " + "; ".join(refusals) + "."]
    ew = meta["equal_work"]
    sig = {n: ", ".join(f"{d['algorithm']} d={d['domain']} {'ok' if d['verified'] else 'BAD'}" for d in v["dkim"])
           for n, v in ew.items()}
    lines += [
        "",
        "Equal work, checked at the sink before measuring: "
        + "; ".join(f"{n}: DKIM {s}" for n, s in sig.items())
        + (f"; Postfix → sink: {ew['postfix'].get('verified_tls')}" if "postfix" in ew else "")
        + f". Idle CPU %: {', '.join(f'{k} {v:.1f}' for k, v in meta['idle_cpu_percent'].items())}.",
        f"Sink ACKs: {meta['sink_ack']} (see bench/sink.py: with Linux's delayed ACKs Postfix's tlsproxy "
        "stalls ~40 ms at the end of each message at low load; 'best' = delayed ACKs for throughput, "
        "immediate ACKs for latency, Postfix's better case for each).",
        *([f"Harness DNS: negative answers (no AAAA, no MTA-STS record) carry a {meta['dns_negative_ttl']} s TTL "
           "(Postfix, with a fixed next hop, looks nothing up)."] if "dns_negative_ttl" in meta else []),
        f"Machine speed probe (openssl speed rsa2048, signs/s) at start/end: "
        f"{' / '.join(_f(v) for v in meta['openssl_rsa2048_signs_per_s_start_end'])}. Run took {meta['wall_seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], plan: dict, path: Path, labels: dict[str, str] | None = None) -> None:
    """Throughput and latency against connections: one colour per system (`labels`: system
    name → legend label, in order; default: the systems found in `summary`)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no plot (pip install matplotlib)")
        return
    if labels is None:
        names = sorted(dict.fromkeys(k for r in summary for k in r if k not in ("size", "connections", "ratio", "ratios")),
                       key=lambda n: n != "postfix")
        labels = {n: "Postfix+OpenDKIM" if n == "postfix" else n for n in names}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    palette = iter(["tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"])
    colors = {n: "tab:blue" if n == "postfix" else next(palette, "tab:gray") for n in labels}
    styles = {"5k": "-", "100k": "--"}
    for system, system_label in labels.items():
        for size in plan["sizes"]:
            rows = [r for r in summary if r["size"] == size and system in r]
            if not rows:
                continue
            xs = [r["connections"] for r in rows]
            label = f"{system_label} {size}"
            ax1.plot(xs, [r[system]["delivered_per_s"] or 0 for r in rows], styles[size], marker="o",
                     color=colors[system], label=f"{label} delivered")
            ax1.plot(xs, [r[system]["accepted_per_s"] or 0 for r in rows], styles[size], marker="x",
                     color=colors[system], alpha=0.35, label=f"{label} accepted")
            ax2.plot(xs, [r[system]["p99_ms"] or 0 for r in rows], styles[size], marker="o",
                     color=colors[system], label=f"{label} p99")
            ax2.plot(xs, [r[system]["p50_ms"] or 0 for r in rows], styles[size], marker=".",
                     color=colors[system], alpha=0.35, label=f"{label} p50")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(plan["connections"], [str(c) for c in plan["connections"]])
        ax.set_xlabel("client connections")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("messages/s")
    ax1.set_title("Throughput (closed loop, incl. drain)")
    ax1.set_ylim(bottom=0)
    ax2.set_ylabel("ms (log)")
    ax2.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter
    ax2.yaxis.set_major_formatter(ScalarFormatter())
    ax2.yaxis.set_minor_formatter(ScalarFormatter())
    ax2.tick_params(axis="y", which="minor", labelsize=7)
    ax2.set_title(f"Submit→delivered latency at {LAT_RATE:.0f} msg/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- extra scenarios ---------------------------------------------------------------------------
def sinkcheck(args: argparse.Namespace) -> None:
    """Load generator straight into the sink: the sink's CPU per message → its capacity."""
    with Bench(postfix=False, secumail=False, keep=args.keep) as bench:
        direct = System("sink", "sink", {"host": SINK_IP, "port": bench.sink_port, "server_hostname": SINK_NAME,
                                         "cafile": str(bench.ca.ca_file), "user": "x", "password": "y"}, [])
        for size in ("5k", "100k"):
            results = []
            for _ in range(3):
                procs = max(1, args.procs)
                tag = bench.tag("sink")
                sink0 = bench.sink.cpu()
                t0 = time.time()
                lgs = concurrent_loadgens(bench, direct, procs, size=size, connections=8, mode="closed",
                                          duration=args.seconds or 5, tag=tag)
                st = bench.drain(tag, sum(lg["accepted"] for lg in lgs))
                sink_cpu = bench.sink.cpu() - sink0
                rate = st["count"] / (st["last"] - t0)
                results.append({"size": size, "delivered_per_s": rate, "sink_cpu_ms_per_msg": sink_cpu * 1000 / st["count"],
                                "sink_capacity_msg_per_cpu_s": st["count"] / sink_cpu if sink_cpu else None})
                bench.sink.cmd(cmd="forget", tag=tag)
            cap = median([r["sink_capacity_msg_per_cpu_s"] for r in results])
            log(f"sink {size}: {median([r['delivered_per_s'] for r in results]):.0f} msg/s reached with {args.procs} "
                f"loadgen process(es); sink CPU {median([r['sink_cpu_ms_per_msg'] for r in results]):.3f} ms/msg "
                f"→ capacity ≈ {cap:.0f} msg per CPU-second")


def concurrent_loadgens(bench: Bench, system: System, procs: int, **cfg: Any) -> list[dict]:
    """`procs` load generator processes at once (ids kept apart); their results."""
    results: list[dict] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        bench.loadgen(system, id_base=i * 10_000_000, **cfg))) for i in range(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def profile(args: argparse.Namespace) -> None:
    """py-spy record of `secumail serve` (raw folded stacks) under 8-connection load."""
    spy = Path(PY).parent / "py-spy"
    if not spy.exists():
        raise SystemExit("py-spy missing: .venv/bin/pip install py-spy")
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"{stamp}-profile-{args.size}.txt"
    with Bench(postfix=False, keep=args.keep, workers=args.workers[:1]) as bench:
        s = bench.systems["secumail"]
        bench.cell(s, size=args.size, connections=8, mode="closed", duration=2, prefix="warm")
        duration = args.seconds or 10
        pid = s.pids()[0]
        spy_proc = subprocess.Popen([str(spy), "record", "-p", str(pid), "-d", str(int(duration)), "-r", "200",
                                     "-f", "raw", "-o", str(out), "--nonblocking" if not args.native else "--native",
                                     *(["--subprocesses"] if args.workers[0] > 1 else []),
                                     *(["--gil"] if args.gil else [])],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        r = bench.cell(s, size=args.size, connections=args.connections, mode="closed", duration=duration + 1)
        spy_proc.wait()
        log(f"under profile: {r['delivered_per_s']:.0f} msg/s delivered, {r['cpu_ms_per_msg']['total']:.2f} ms CPU/msg")
    print(summarise_profile(out, args.top))
    log(f"raw profile: {out}")


def summarise_profile(path: Path, top: int = 25) -> str:
    """Self time and inclusive time per function from py-spy's raw (folded) output."""
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if frames:
            self_t[_frame(frames[-1])] = self_t.get(_frame(frames[-1]), 0) + n
        for f in {_frame(f) for f in frames}:
            incl[f] = incl.get(f, 0) + n
    lines = [f"{total} samples", "", "self time:"]
    lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in sorted(self_t.items(), key=lambda x: -x[1])[:top]]
    lines += ["", "inclusive (src/secumail and notable libraries):"]
    notable = [(k, v) for k, v in incl.items()
               if any(t in k for t in ("secumail/", "dkim", "sqlite", "aiosmtp", "ssl", "email/", "crypto"))]
    lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in sorted(notable, key=lambda x: -x[1])[:top]]
    return "\n".join(lines)


def _frame(f: str) -> str:
    # "func (path/to/file.py:123)" → "func (file.py relative to site-packages/src)"
    name, _, where = f.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{name} ({file})"


def flush_secumail(bench: Bench) -> int:
    """What `postqueue -f` is to Postfix: every deferred job of the embedded bus due now.
    Secumail has no such command; this writes the bus table directly (WAL allows a second
    connection; the stages poll at least once a second)."""
    import sqlite3
    conn = sqlite3.connect(bench.gateway.data_dir / "secumail.sqlite", timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        return conn.execute("UPDATE jobs SET available_at = 0 WHERE available_at > ?", (time.time(),)).rowcount
    finally:
        conn.close()


def queue100k(args: argparse.Namespace) -> None:
    """The recipient MX is down (connections refused) while N messages are submitted and
    queued; then it is up again and the queue is flushed (Postfix: `postfix flush`;
    Secumail: every deferred job made due, see `flush_secumail`). Reported: RSS while
    filling and when N are queued, peak RSS while draining, time to drain, and that every
    accepted id reached the sink exactly once. The retry interval (default 3600 s) keeps
    retries out of the fill, so the drain measures the system, not its retry schedule.
    The client retries refused messages after 1 s (admission control answers 451)."""
    total = args.messages
    settings: dict[str, Any] = {"delivery__retry_schedule": [args.retry] * 12, "delivery__connect_timeout": 5.0}
    if args.queue_bound:
        settings["bus__queue_bound"] = args.queue_bound
    systems = args.systems.split(",")
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {"messages": total, "retry_seconds": args.retry, "systems": {}}
    with Bench(postfix="postfix" in systems, secumail="secumail" in systems, keep=args.keep,
               secumail_settings=settings, workers=args.workers[:1]) as bench:
        for name in systems:
            s = bench.systems[name]
            tag = bench.tag("q")
            ids_file = bench.work / f"{tag}-accepted.txt"
            bench.sink.cmd(cmd="down")
            log(f"{name}: MX down; submitting {total} messages over 32 connections")
            cpu0 = sum(g.cpu() for g in s.groups)
            with Sampler(s.groups, interval=1.0):
                t0 = time.time()
                lg = bench.loadgen(s, size="5k", connections=32, mode="closed", duration=args.fill_limit,
                                   messages=total, tag=tag, record_ids=str(ids_file), retry_refused=1.0)
                t_sub = time.time() - t0
                time.sleep(args.settle)
                rss_queued = sum(g.rss_kb() for g in s.groups) / 1024
                pss_queued = sum(g.peak_pss_kb for g in s.groups) / 1024
            fill_peak_rss = sum(g.peak_rss_kb for g in s.groups) / 1024
            log(f"{name}: accepted {lg['accepted']} in {t_sub:.0f} s ({lg['accepted'] / t_sub:.0f}/s), "
                f"refused {lg['replies']} {lg.get('reply_samples')}, errors {lg['errors']}; "
                f"RSS now {rss_queued:.0f} MB (peak while filling {fill_peak_rss:.0f} MB)")
            with Sampler(s.groups, interval=1.0):
                bench.sink.cmd(cmd="up")
                t_up = time.time()
                if name == "postfix":
                    bench.postfix.postfix("flush")
                else:
                    log(f"secumail: {flush_secumail(bench)} deferred jobs made due")
                st = bench.drain(tag, lg["accepted"], stall=120, limit=7200)
            drain_peak_rss = sum(g.peak_rss_kb for g in s.groups) / 1024
            drain_peak_pss = sum(g.peak_pss_kb for g in s.groups) / 1024
            cpu = sum(g.cpu() for g in s.groups) - cpu0
            delivered_ids = bench.work / f"{tag}-delivered.txt"
            bench.sink.cmd(cmd="ids", tag=tag, path=str(delivered_ids))
            acc = set(ids_file.read_text().split())
            got = set(delivered_ids.read_text().split())
            result = {
                "accepted": lg["accepted"], "refusals": lg["replies"], "refusal_samples": lg.get("reply_samples"),
                "errors": lg["errors"], "fill_seconds": t_sub, "fill_rate": lg["accepted"] / t_sub,
                "delivered": st["count"], "lost": len(acc - got), "unexpected": len(got - acc),
                "duplicates": st["duplicates"],
                "first_delivery_after_mx_up": (st["first"] - t_up) if st["first"] else None,
                "drain_seconds_after_mx_up": (st["last"] - t_up) if st["last"] else None,
                "drain_rate": st["count"] / (st["last"] - t_up) if st["last"] else None,
                "rss_mb_with_queue": rss_queued, "peak_pss_mb_filling": pss_queued,
                "peak_rss_mb_filling": fill_peak_rss,
                "peak_rss_mb_draining": drain_peak_rss, "peak_pss_mb_draining": drain_peak_pss,
                "cpu_ms_per_msg": cpu * 1000 / max(st["count"], 1),
                "latency_ms_p50_p99": [st["latency"]["p50"] * 1000, st["latency"]["p99"] * 1000] if st["latency"] else None,
            }
            report["systems"][name] = result
            log(f"{name}: {json.dumps(result)}")
            bench.sink.cmd(cmd="forget", tag=tag)
    out = RESULTS / f"{stamp}-queue100k.json"
    out.write_text(json.dumps(report, indent=1))
    log(f"wrote {out}")


def overload(args: argparse.Namespace) -> None:
    """Measure capacity (8 connections, closed loop), then offer twice that for a minute
    (open loop over 48 connections: Postfix allows 50 per client by default): accepted
    vs 4xx, lost, p99 of the accepted."""
    systems = args.systems.split(",")
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {"systems": {}}
    with Bench(postfix="postfix" in systems, secumail="secumail" in systems, keep=args.keep,
               workers=args.workers[:1]) as bench:
        for name in systems:
            s = bench.systems[name]
            cap = bench.cell(s, size="5k", connections=8, mode="closed", duration=8, prefix="cap")
            capacity = cap["delivered_per_s"]
            rate = 2 * capacity
            log(f"{name}: capacity {capacity:.0f} msg/s → offering {rate:.0f} msg/s for {args.seconds} s")
            tag_ids = bench.work / f"over-{name}-accepted.txt"
            r = bench.cell(s, size="5k", connections=48, mode="rate", rate=rate, duration=args.seconds,
                           prefix="over", record_ids=str(tag_ids))
            r["capacity"] = capacity
            r["offered_rate"] = rate
            report["systems"][name] = r
            log(f"{name}: submitted for {r['submit_seconds']:.0f} s at {r['attempted_per_s']:.0f}/s (offered {rate:.0f}/s); "
                f"attempted {r['attempted']} accepted {r['accepted']} 4xx {r['temp_fail']} 5xx {r['perm_fail']} "
                f"errors {r['errors']} late {r['late']}; delivered {r['delivered']} (lost {r['undelivered']}); "
                f"p50 {r['latency_ms'].get('p50', 0):.0f} ms p99 {r['latency_ms'].get('p99', 0):.0f} ms; "
                f"accept p99 {r['accept_latency_ms'].get('p99', 0):.0f} ms; replies {r['replies']}")
    out = RESULTS / f"{stamp}-overload.json"
    out.write_text(json.dumps(report, indent=1))
    log(f"wrote {out}")


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of worker counts: {text!r}") from None
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"worker counts must be positive: {text!r}")
    return list(dict.fromkeys(counts))


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root: the reference Postfix is a private instance started by root")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="compare",
                    choices=["compare", "sinkcheck", "profile", "queue100k", "overload"])
    ap.add_argument("--quick", action="store_true", help="5 KB, 8 connections, ~2 minutes")
    ap.add_argument("--reps", type=int, default=0, help="throughput repetitions per cell")
    ap.add_argument("--lat-reps", dest="lat_reps", type=int, default=0, help="latency repetitions per cell")
    ap.add_argument("--seconds", type=float, default=0, help="seconds per run (overrides the plan)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, queues)")
    ap.add_argument("--sink-ack", dest="sink_ack", choices=["best", "delayed", "quick"], default="best",
                    help="the sink's ACKs of partial message bodies: Linux's delayed ACKs (Postfix's "
                         "tlsproxy then waits ~40 ms per message at low load, but sends fewer packets), "
                         "immediate (TCP_QUICKACK), or best: delayed for throughput, quick for latency "
                         "(Postfix's better case for each; the default)")
    ap.add_argument("--procs", type=int, default=1, help="sinkcheck: load generator processes")
    ap.add_argument("--size", default="5k", choices=["5k", "100k"], help="profile: message size")
    ap.add_argument("--connections", type=int, default=8, help="profile: connections")
    ap.add_argument("--top", type=int, default=30, help="profile: rows to show")
    ap.add_argument("--native", action="store_true", help="profile: include C frames (pauses the process per sample)")
    ap.add_argument("--gil", action="store_true", help="profile: only the thread holding the GIL (Python CPU)")
    ap.add_argument("--messages", type=int, default=100_000, help="queue100k: messages")
    ap.add_argument("--retry", type=float, default=3600.0, help="queue100k: delivery retry interval (s)")
    ap.add_argument("--fill-limit", dest="fill_limit", type=float, default=3600.0,
                    help="queue100k: give up filling after this many seconds")
    ap.add_argument("--settle", type=float, default=5.0, help="queue100k: seconds queued before the MX is up")
    ap.add_argument("--queue-bound", dest="queue_bound", type=int, default=0, help="queue100k: bus.queue_bound")
    ap.add_argument("--conns", dest="cells_connections", default="",
                    help="compare: connection counts, comma-separated (overrides the plan)")
    ap.add_argument("--sizes", dest="cells_sizes", default="",
                    help="compare: message sizes, comma-separated (overrides the plan)")
    ap.add_argument("--systems", default="secumail,postfix",
                    help="which systems to run (secumail = one Secumail gateway per --workers entry)")
    ap.add_argument("--workers", type=_worker_counts, default=[1],
                    help="secumail serve --workers N; compare: comma-separated, one Secumail gateway each, "
                         "all against the same Postfix in one run (e.g. 1,2); profile, queue100k, overload: "
                         "the first entry")
    ap.add_argument("--scan", action="store_true",
                    help="compare: also run a Secumail gateway with the scan stage on (clamd and rspamd "
                         "started here), system 'secumail-scan', to show the cost of scanning")
    ap.add_argument("--negative-ttl", dest="negative_ttl", type=int, default=300,
                    help="TTL of the harness DNS's negative answers (0: every absence is looked up "
                         "again, as the tests want; a real zone's SOA minimum is minutes to hours)")
    args = ap.parse_args()
    global NEGATIVE_TTL
    NEGATIVE_TTL = args.negative_ttl
    if args.command == "compare":
        compare(args)
    elif args.command == "sinkcheck":
        sinkcheck(args)
    elif args.command == "profile":
        profile(args)
    elif args.command == "queue100k":
        queue100k(args)
    elif args.command == "overload":
        if not args.seconds:
            args.seconds = 60
        overload(args)


if __name__ == "__main__":
    main()
