"""A real Postfix (Debian's ``postfix`` package) as a recipient MX on loopback.

`PostfixMx` runs a private Postfix instance whose every file lives under its ``workdir``:

    workdir/etc/      main.cf, master.cf, the certificate and key smtpd presents
    workdir/queue/    queue_directory (master.pid, the daemons' sockets, queue files)
    workdir/data/     data_directory (master.lock, tlsmgr's PRNG state)
    workdir/mail/     virtual_mailbox_base: every accepted message lands in the maildir
                      ``mail/inbox/`` (any recipient of any domain: a catch-all MX)
    workdir/maillog   maillog_file, written by the ``postlog`` service (no syslog here)

master.cf holds a single public service, ``<ip>:<port> inet n - n - - smtpd``, plus the
internal ones mail needs, none chrooted. smtpd offers STARTTLS with the given certificate
(``smtpd_tls_security_level = may``), logs each TLS session (``smtpd_tls_loglevel = 1``:
"TLS connection established from …: TLSv1.3 with cipher …", read by `tls_log_lines`) and
records it in the Received header; it looks up no names (``smtpd_peername_lookup = no``).

How it is run, and why:
- ``postfix -c workdir/etc start`` as root. Root may name any configuration directory, so
  the system's /etc/postfix (where Debian's "No configuration" install has no main.cf) is
  never touched: ``alternate_config_directories`` is only needed by unprivileged users of
  ``sendmail``/``postdrop``, which the harness does not use.
- The queue subdirectories are created here and ``queue/quick-start`` is touched, which
  makes postfix-script skip ``postfix check`` (post-install takes ~3 s), and main.cf is
  backdated (Postfix waits ~2 s for a just-written main.cf to "settle"): start is ~0.1 s.
- ``postfix stop`` ends the instance (it waits for master and kills its process group if
  it must); unique queue and data directories keep instances apart.
- Postfix prints its own errors to stderr only when that is a terminal, so its commands
  run on a pseudo-terminal and a failure carries Postfix's message.
- ``inet_interfaces`` only accepts addresses Postfix sees on an interface (127.0.0.1, not
  127.0.0.x), so it is ``loopback-only``; the listener is pinned by master.cf instead.
- The virtual delivery agent runs as ``nobody`` (it refuses root), so ``workdir`` must be
  reachable by other users: pytest's ``tmp_path`` (under a 0700 directory) is not, a
  ``tempfile.mkdtemp()`` directory made 0755 is. Daemon sockets (``queue/private/…``) must
  fit in a Unix socket path (107 bytes): keep ``workdir`` short.
"""

from __future__ import annotations

import grp
import os
import pty
import pwd
import re
import select
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.harness import check_loopback
from tests.harness.pki import CertPair
from tests.harness.server import ENSURE_SYSTEM_DEPS, HarnessServer, wait_until

POSTFIX = "/usr/sbin/postfix"
# Debian's debconf default ("Internet Site") would write /etc/postfix/main.cf for a system
# instance on port 25; the harness needs none.
DEBCONF_NO_CONFIGURATION = "postfix postfix/main_mailer_type select No configuration\n"
START_TIMEOUT = 10.0
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with its NUL
TLS_LINE = re.compile(r"TLS connection established from (\S+): (TLSv[\d.]+) with cipher (\S+)")
DELIVERED = "status=sent (delivered to maildir)"

# The internal services a receiving Postfix needs (Debian's master.cf, nothing chrooted).
INTERNAL_SERVICES = """\
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
postlog   unix-dgram n - n - 1 postlogd
"""

# queue_directory layout as `postfix check` makes it: (name, owner, group, mode).
QUEUE_DIRS = (
    *((name, "postfix", "root", 0o700) for name in (
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
        "private", "saved", "trace",
    )),
    ("maildrop", "postfix", "postdrop", 0o730),
    ("public", "postfix", "postdrop", 0o710),
    ("pid", "root", "root", 0o755),
)


def ensure_postfix() -> None:
    """Install Debian's ``postfix`` (unconfigured) through scripts/ensure-system-deps."""
    if Path(POSTFIX).exists():
        return
    subprocess.run(
        ["debconf-set-selections"], input=DEBCONF_NO_CONFIGURATION, text=True, check=True
    )
    subprocess.run([str(ENSURE_SYSTEM_DEPS)], check=True)
    if not Path(POSTFIX).exists():
        raise RuntimeError(f"{POSTFIX} missing after {ENSURE_SYSTEM_DEPS}")


def _run_on_terminal(args: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
    """Run a Postfix command with a pseudo-terminal as stdout/stderr; (exit code, output)."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
            start_new_session=True,
        )
    finally:
        os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break  # exited and drained (a daemon it started may keep the terminal open)
            elif time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(f"{' '.join(args)} did not finish in {timeout} s")
    finally:
        os.close(leader)
    return proc.wait(timeout), output.decode(errors="replace").replace("\r\n", "\n")


def _reachable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


class PostfixMx(HarnessServer):
    """A private Postfix accepting all mail for any domain on ``ip:port`` (see module doc)."""

    def __init__(
        self, ip: str, port: int, hostname: str, cert: CertPair, workdir: Path,
        *, main_cf: dict[str, str] | None = None, services: str = "",
    ) -> None:
        """`main_cf`: settings added to (or replacing) the harness's own; `services`:
        lines added to master.cf (e.g. the ``smtp`` client, to send bounces)."""
        check_loopback(ip)
        self.extra_main_cf = dict(main_cf or {})
        self.extra_services = services
        self.ip = ip
        self.port = port
        self.hostname = hostname
        self.cert = cert
        self.workdir = Path(workdir).resolve()
        self.config_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "queue"
        self.data_dir = self.workdir / "data"
        self.mail_dir = self.workdir / "mail"
        self.maildir = self.mail_dir / "inbox"
        self.log_file = self.workdir / "maillog"

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> PostfixMx:
        ensure_postfix()
        self._prepare()
        (self.queue_dir / "quick-start").touch()  # postfix-script: skip `postfix check`
        code, output = self.postfix("start")
        if code != 0:
            raise RuntimeError(f"postfix start failed ({code}):\n{output}\n{self.log()}")
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """``postfix stop``; safe to call twice, or after a failed start."""
        if not self.config_dir.joinpath("main.cf").exists():
            return
        if self.postfix("status")[0] == 0:
            code, output = self.postfix("stop")
            if code != 0:
                raise RuntimeError(f"postfix stop failed ({code}):\n{output}")

    def postfix(self, *args: str) -> tuple[int, str]:
        """``postfix -c <config dir> ARGS`` → (exit code, what it printed)."""
        return _run_on_terminal([POSTFIX, "-c", str(self.config_dir), *args])

    def _wait_listening(self) -> None:
        """Wait for smtpd's listening socket without connecting to it (a probe would be
        logged as a client that connected and left, which tests read as evidence)."""
        address = int.from_bytes(socket.inet_aton(self.ip), sys.byteorder)  # as the kernel prints it
        wanted = f"{address:08X}:{self.port:04X}"

        def listening() -> bool:
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1] == wanted and fields[3] == "0A":  # TCP_LISTEN
                    return True
            return False

        wait_until(
            listening,
            START_TIMEOUT,
            lambda: f"postfix does not listen on {self.address}:\n{self.log()}",
        )

    # -- configuration -----------------------------------------------------

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(self.workdir.stat().st_mode | 0o755)
        if not _reachable_by_others(self.workdir):
            raise ValueError(
                f"{self.workdir}: Postfix's virtual delivery agent runs as nobody and cannot "
                "reach it (a parent lacks o+x); use a tempfile.mkdtemp() directory"
            )
        longest = self.queue_dir / "private" / "proxywrite"
        if len(str(longest).encode()) > SOCKET_PATH_MAX:
            raise ValueError(f"{self.workdir}: too long for Postfix's Unix sockets ({longest})")
        nobody_group = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
        for path, owner, group, mode in (
            (self.config_dir, "root", "root", 0o755),
            (self.queue_dir, "root", "root", 0o755),
            (self.data_dir, "postfix", "postfix", 0o700),
            (self.mail_dir, "nobody", nobody_group, 0o700),
            *((self.queue_dir / name, *rest) for name, *rest in QUEUE_DIRS),
        ):
            path.mkdir(exist_ok=True)
            shutil.chown(path, owner, group)
            path.chmod(mode)
        shutil.copyfile(self.cert.cert_file, self.config_dir / "cert.pem")
        key = self.config_dir / "key.pem"
        key.touch(mode=0o600)
        key.write_bytes(self.cert.key_file.read_bytes())
        main_cf, master_cf = self.config_dir / "main.cf", self.config_dir / "master.cf"
        main_cf.write_text(self._main_cf())
        master_cf.write_text(
            f"{self.ip}:{self.port} inet n - n - - smtpd\n{INTERNAL_SERVICES}{self.extra_services}"
        )
        # Postfix rereads a main.cf modified within the last second every 0.3 s until it
        # "settles" (dict_load_file): backdating it saves ~2 s at every start.
        settled = time.time() - 60
        for path in (main_cf, master_cf):
            os.utime(path, (settled, settled))

    def _main_cf(self) -> str:
        nobody = pwd.getpwnam("nobody")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "myhostname": self.hostname,
            "mydestination": "",
            "mynetworks": "",  # relaying is not the point: nobody is trusted
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "maillog_file": self.log_file,
            "maillog_file_prefixes": self.workdir,
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "smtpd_peername_lookup": "no",
            "smtpd_tls_cert_file": self.config_dir / "cert.pem",
            "smtpd_tls_key_file": self.config_dir / "key.pem",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_received_header": "yes",
            # A catch-all: every domain is a virtual mailbox domain, every address one box.
            "virtual_mailbox_domains": "static:all",
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_mailbox_base": self.mail_dir,
            "virtual_uid_maps": f"static:{nobody.pw_uid}",
            "virtual_gid_maps": f"static:{nobody.pw_gid}",
        }
        settings.update(self.extra_main_cf)
        return "".join(f"{name} = {value}\n" for name, value in settings.items())

    # -- what happened -----------------------------------------------------

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def received(self) -> list[bytes]:
        """The delivered messages as stored in the maildir (with Postfix's headers)."""
        files = [
            f for sub in ("new", "cur") if (self.maildir / sub).is_dir()
            for f in (self.maildir / sub).iterdir() if f.is_file()
        ]
        files.sort(key=lambda f: (f.stat().st_mtime_ns, f.name))
        return [f.read_bytes() for f in files]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """Wait until ``count`` messages are stored and their delivery is logged (so the
        log holds everything smtpd said about them); returns `received()`."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.received()
            if len(messages) >= count and self.log().count(DELIVERED) >= count:
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"postfix {self.address} stored {len(messages)} of {count} messages:\n"
                    f"{self.log()[-5000:]}"
                )
            time.sleep(0.05)

    def tls_log_lines(self) -> list[str]:
        """smtpd's "TLS connection established from …: TLSv1.x with cipher …" lines."""
        return [line for line in self.log().splitlines() if TLS_LINE.search(line)]

    def tls_sessions(self) -> list[tuple[str, str, str]]:
        """(client, protocol, cipher) of each TLS session smtpd logged."""
        return [m.groups() for line in self.tls_log_lines() if (m := TLS_LINE.search(line))]
