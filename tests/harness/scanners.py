"""Real virus and spam scanners on loopback: Debian's ``clamd`` and ``rspamd``.

`Clamd` runs ``clamd`` in the foreground with a signature database built here (no
freshclam, no network): one body signature for the EICAR test file, so EICAR — bare, in a
zip, in a nested zip — is found as ``Secumail.Test.EICAR.UNOFFICIAL``. It listens on a
Unix socket and on 127.0.0.1:<free port>, with limits small enough for tests to reach
(``MaxRecursion``, ``MaxScanSize``, ``MaxFileSize``, ``StreamMaxLength``) and
``AlertExceedsMax`` so a message over a limit is reported, not passed as clean.

`Rspamd` runs ``rspamd`` with Debian's configuration and a local override directory:
workers bound to 127.0.0.1 only, DNS to a loopback server only (a dead port unless one
is given), the fuzzy module (which would look up rspamd.com) off. GTUBE scores 15 (action ``reject``). Its compiled
Hyperscan cache lives in ``~/.cache/secumail-tests/rspamd`` so only the first start of a
machine is slow (~30 s); later ones take a few seconds.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from tests.harness import free_port
from tests.harness.server import HarnessServer, ensure_installed, stop_process, wait_until

CLAMD = "/usr/sbin/clamd"
RSPAMD = "/usr/bin/rspamd"
RSPAMD_CACHE = Path.home() / ".cache" / "secumail-tests" / "rspamd"

# The EICAR anti-virus test file, assembled so this source file is not itself "infected".
EICAR = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*").encode()
EICAR_SIGNATURE = "Secumail.Test.EICAR.UNOFFICIAL"
# The GTUBE spam test string (rspamd's GTUBE symbol).
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


class Clamd(HarnessServer):
    START_TIMEOUT = 60.0

    def __init__(self, *, max_recursion: int = 5, max_scan_size: str = "20M") -> None:
        self.max_recursion = max_recursion
        self.max_scan_size = max_scan_size
        self.port = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> str:
        assert self._dir is not None
        return str(self._dir / "clamd.sock")

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Clamd:
        ensure_installed(CLAMD)
        self._dir = Path(tempfile.mkdtemp(prefix="harness-clamd-"))
        (self._dir / "db").mkdir()
        (self._dir / "db" / "secumail-test.ndb").write_text(
            f"{EICAR_SIGNATURE.removesuffix('.UNOFFICIAL')}:0:*:{EICAR.hex()}\n"
        )
        self.port = free_port()
        (self._dir / "clamd.conf").write_text(
            "\n".join(
                [
                    "Foreground yes",
                    f"DatabaseDirectory {self._dir / 'db'}",
                    f"LocalSocket {self.socket_path}",
                    f"TCPSocket {self.port}",
                    "TCPAddr 127.0.0.1",
                    f"LogFile {self._dir / 'clamd.log'}",
                    "User root",
                    "StreamMaxLength 30M",
                    f"MaxRecursion {self.max_recursion}",
                    f"MaxScanSize {self.max_scan_size}",
                    f"MaxFileSize {self.max_scan_size}",
                    "AlertExceedsMax yes",
                    "SelfCheck 0",
                ]
            )
            + "\n"
        )
        self._launch()
        return self

    def _launch(self) -> None:
        assert self._dir is not None
        self._process = subprocess.Popen(
            [CLAMD, "-c", str(self._dir / "clamd.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until(self._ready, self.START_TIMEOUT, lambda: f"clamd did not start: {self._log()}")

    def pids(self) -> list[int]:
        return [self._process.pid] if self._process is not None else []

    def halt(self) -> None:
        """Stop the daemon (a scanner going down mid-run); `resume` starts it again on the
        same socket and port."""
        stop_process(self._process, timeout=10)
        self._process = None
        if self._dir is not None:
            (self._dir / "clamd.sock").unlink(missing_ok=True)

    def resume(self) -> None:
        self._launch()

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"clamd exited {self._process.returncode}: {self._log()}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(self.socket_path)
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def _log(self) -> str:
        log = self._dir / "clamd.log" if self._dir else None
        return log.read_text(errors="replace")[-2000:] if log and log.exists() else ""

    def stop(self) -> None:
        stop_process(self._process, timeout=10)
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class Rspamd(HarnessServer):
    START_TIMEOUT = 120.0  # the first start on a machine compiles Hyperscan databases

    def __init__(self, *, workers: int = 1, nameserver: str = "127.0.0.1:1") -> None:
        self.workers = workers  # normal worker processes (rspamd's default: one per core)
        # Where rspamd's own lookups (SPF, DKIM, RBLs) go: a loopback server. The default,
        # a dead port, makes each lookup wait for its timeout (seconds per message): fine
        # for verdicts, not for measuring; the bench passes its harness DNS, which answers.
        self.nameserver = nameserver
        self.port = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Rspamd:
        ensure_installed(RSPAMD)
        self._dir = Path(tempfile.mkdtemp(prefix="harness-rspamd-"))
        local = self._dir / "local.d"
        local.mkdir()
        for sub in ("run", "log"):
            (self._dir / sub).mkdir()
        RSPAMD_CACHE.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (local / "worker-normal.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.port}";\ncount = {self.workers};\n'
        )
        (local / "worker-controller.inc").write_text(f'bind_socket = "127.0.0.1:{free_port()}";\n')
        (local / "worker-proxy.inc").write_text(f'bind_socket = "127.0.0.1:{free_port()}";\n')
        (local / "options.inc").write_text(
            f'dns {{ nameserver = ["{self.nameserver}"]; timeout = 0.5s; retransmits = 1; }}\n'
        )
        (local / "logging.inc").write_text(
            f'type = "file"; filename = "{self._dir / "log" / "rspamd.log"}"; level = "error";\n'
        )
        (local / "fuzzy_check.conf").write_text("enabled = false;\n")  # would look up rspamd.com
        self._launch()
        return self

    def pids(self) -> list[int]:
        return [self._process.pid] if self._process is not None else []

    def halt(self) -> None:
        """Stop the daemon; `resume` starts it again on the same port."""
        stop_process(self._process, timeout=10)
        self._process = None

    def resume(self) -> None:
        self._launch()

    def _launch(self) -> None:
        assert self._dir is not None
        self._process = subprocess.Popen(
            [
                RSPAMD,
                "-f",
                "-u",
                "root",
                "-g",
                "root",
                "-c",
                "/etc/rspamd/rspamd.conf",
                f"--var=LOCAL_CONFDIR={self._dir}",
                f"--var=DBDIR={RSPAMD_CACHE}",
                f"--var=RUNDIR={self._dir / 'run'}",
                f"--var=LOGDIR={self._dir / 'log'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ready, self.START_TIMEOUT, lambda: "rspamd did not answer", interval=0.2)

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"rspamd exited {self._process.returncode}")
        # Ready when GTUBE is judged as rspamd judges it once all rules are loaded: right
        # after the first start it answers /ping (and scans) before Hyperscan is compiled.
        probe = f"From: a@b.test\r\nSubject: probe\r\n\r\n{GTUBE}\r\n".encode()
        request = urllib.request.Request(f"{self.url}/checkv2", data=probe, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310 - loopback
                return json.loads(r.read()).get("action") == "reject"
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        stop_process(self._process, timeout=10)
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
