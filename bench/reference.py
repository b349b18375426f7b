"""The reference system: a private Postfix 3.7 + OpenDKIM doing the work Secumail does.

Postfix (the harness's `PostfixMx` technique: run as root from its own config directory,
queue and data directories under ``workdir``, no `postfix check`, backdated main.cf)
is reconfigured here as a submission relay:

- in: ``<ip>:<port>`` smtpd with STARTTLS required (``smtpd_tls_security_level =
  encrypt``, TLS ≥ 1.2) and SASL AUTH only inside TLS (``smtpd_tls_auth_only``), Cyrus
  SASL with a sasldb (PLAIN/LOGIN). Debian's Postfix reads the Cyrus configuration from
  ``<config dir>/sasl/smtpd.conf``; ``cyrus_sasl_config_path`` is ignored. Relaying is
  permitted to authenticated clients only.
- DKIM: ``smtpd_milters = unix:…/opendkim.sock`` to an OpenDKIM (run in the foreground,
  as user opendkim) signing ``d=<sender domain>`` with an RSA-2048 key
  (relaxed/relaxed, rsa-sha256). The socket lives in a directory owned
  opendkim:postfix mode 0750 (UMask 000 on the socket), so only the postfix group can
  reach it and nothing on the system (group memberships) changes. A unix socket, not
  ``inet:``: over TCP the milter adds ~90 ms per message here (STACK.md).
- out: everything goes to ``default_transport = smtp:[<sink ip>]:<sink port>`` (Postfix
  resolves names with the system resolver only, not the harness DNS, so the next hop
  is the sink's address). Certificate verification stays on: the global level is
  ``secure``, and ``smtp_tls_policy_maps`` gives that next hop ``secure
  match=<sink MX name>``: the chain must verify against ``smtp_tls_CAfile`` (the harness
  CA) and the certificate must carry the MX name, exactly what Secumail checks for the
  MX it found in DNS. ``smtp_tls_loglevel = 1`` logs "Verified TLS connection
  established", which `verified_tls_lines` reads.
- connection reuse: ``smtp_tls_connection_reuse = yes`` with the ``tlsproxy`` and
  ``scache`` services in master.cf (without tlsproxy Postfix defers everything).

Everything else is Postfix's default (in_flow_delay 1 s, destination concurrency 20,
process limit 100, queue files written and fsynced per message).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.harness.pki import CertPair
from tests.harness.postfix import INTERNAL_SERVICES, PostfixMx

DEBIAN_PACKAGES = ("postfix", "opendkim", "opendkim-tools", "sasl2-bin", "libsasl2-modules")
DEBCONF = "postfix postfix/main_mailer_type select No configuration\n"

RELAY_SERVICES = """\
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
tlsproxy  unix  - - n - 0 tlsproxy
scache    unix  - - n - 1 scache
showq     unix  n - n - - showq
"""


def ensure_packages() -> None:
    """apt-get install what is missing (postfix preseeded to "No configuration")."""
    missing = [
        p for p in DEBIAN_PACKAGES
        if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                          text=True).stdout.find("ok installed") < 0
    ]
    if not missing:
        return
    subprocess.run(["debconf-set-selections"], input=DEBCONF, text=True, check=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                      env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                       env=env, check=True)


def dkim_keypair() -> tuple[bytes, str]:
    """An RSA-2048 key: (PKCS#1 PEM for OpenDKIM, the p= value of its DNS record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64
    return pem, base64.b64encode(spki).decode()


class ReferenceMta(PostfixMx):
    """Postfix + OpenDKIM: STARTTLS+AUTH submission on ip:port, DKIM, verified relay."""

    def __init__(
        self, ip: str, port: int, cert: CertPair, workdir: Path, *, ca_file: Path,
        sink_ip: str, sink_port: int, sink_name: str, domain: str, selector: str,
        username: str, password: str,
    ) -> None:
        super().__init__(ip, port, "relay.bench.test", cert, workdir)
        self.ca_file = Path(ca_file)
        self.sink_ip, self.sink_port, self.sink_name = sink_ip, sink_port, sink_name
        self.domain, self.selector = domain, selector
        self.username, self.password = username, password
        self.dkim_dir = self.workdir / "dkim"
        self.dkim_socket = self.dkim_dir / "opendkim.sock"
        self.dkim_proc: subprocess.Popen[bytes] | None = None
        self.dkim_pem, self.dkim_public = dkim_keypair()

    @property
    def dkim_record(self) -> tuple[str, str]:
        """(name, TXT value) of the public key to publish."""
        return f"{self.selector}._domainkey.{self.domain}", f"v=DKIM1; k=rsa; p={self.dkim_public}"

    @property
    def login(self) -> str:
        return f"{self.username}@{self.domain}"

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> ReferenceMta:
        ensure_packages()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_opendkim()
        try:
            super().start()
        except BaseException:
            self._stop_opendkim()
            raise
        return self

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self._stop_opendkim()

    def master_pid(self) -> int:
        return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])

    def verified_tls_lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if "Verified TLS connection established" in line]

    def queue_size(self) -> int:
        """Files in incoming/active/deferred (0 when everything was delivered)."""
        total = 0
        for sub in ("incoming", "active", "deferred", "maildrop"):
            for _root, _dirs, files in os.walk(self.queue_dir / sub):
                total += len(files)
        return total

    # -- OpenDKIM --------------------------------------------------------------------
    def _start_opendkim(self) -> None:
        dk = pwd.getpwnam("opendkim")
        self.dkim_dir.mkdir(exist_ok=True)
        shutil.chown(self.dkim_dir, "opendkim", "postfix")
        self.dkim_dir.chmod(0o750)
        key = self.dkim_dir / f"{self.selector}.private"
        key.write_bytes(self.dkim_pem)
        os.chown(key, dk.pw_uid, dk.pw_gid)
        key.chmod(0o600)
        conf = self.dkim_dir / "opendkim.conf"
        conf.write_text("\n".join([
            "Syslog no",
            "UMask 000",
            f"Socket local:{self.dkim_socket}",
            f"PidFile {self.dkim_dir / 'opendkim.pid'}",
            "UserID opendkim:opendkim",
            "Mode s",
            f"Domain {self.domain}",
            f"Selector {self.selector}",
            f"KeyFile {key}",
            "Canonicalization relaxed/relaxed",
            "SignatureAlgorithm rsa-sha256",
            "OversignHeaders From",
            "",
        ]))
        if self.dkim_socket.exists():
            self.dkim_socket.unlink()
        self._dkim_log = open(self.workdir / "opendkim.log", "ab")  # noqa: SIM115
        self.dkim_proc = subprocess.Popen(
            ["/usr/sbin/opendkim", "-f", "-x", str(conf)],
            stdout=self._dkim_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not self.dkim_socket.exists():
            if self.dkim_proc.poll() is not None or time.monotonic() > deadline:
                log = (self.workdir / "opendkim.log").read_text(errors="replace")
                raise RuntimeError(f"opendkim did not start:\n{log}")
            time.sleep(0.02)

    def _stop_opendkim(self) -> None:
        if self.dkim_proc is not None and self.dkim_proc.poll() is None:
            self.dkim_proc.terminate()
            try:
                self.dkim_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.dkim_proc.kill()
                self.dkim_proc.wait()
        self.dkim_proc = None

    # -- Postfix configuration ----------------------------------------------------------
    def _prepare(self) -> None:
        super()._prepare()  # directories, certificate, then main.cf/master.cf we replace
        main_cf, master_cf = self.config_dir / "main.cf", self.config_dir / "master.cf"
        main_cf.write_text(self._main_cf())
        master_cf.write_text(
            f"{self.ip}:{self.port} inet n - n - - smtpd\n{INTERNAL_SERVICES}{RELAY_SERVICES}"
        )
        shutil.copyfile(self.ca_file, self.config_dir / "ca.pem")
        # Cyrus SASL: <config dir>/sasl/smtpd.conf and a sasldb readable by smtpd (postfix).
        sasl = self.config_dir / "sasl"
        sasl.mkdir(exist_ok=True)
        db = sasl / "sasldb2"
        (sasl / "smtpd.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: {db}\n"
        )
        if db.exists():
            db.unlink()
        subprocess.run(
            ["saslpasswd2", "-p", "-c", "-f", str(db), "-u", self.domain, self.username],
            input=self.password.encode(), check=True,
        )
        shutil.chown(db, "root", "postfix")
        db.chmod(0o640)
        settled = time.time() - 60
        for path in (main_cf, master_cf):
            os.utime(path, (settled, settled))

    def _main_cf(self) -> str:
        base = super()._main_cf()
        nexthop = f"[{self.sink_ip}]:{self.sink_port}"
        settings = {
            "myhostname": self.hostname,
            "mydestination": "",
            "relay_domains": "",
            "virtual_mailbox_domains": "",
            "virtual_mailbox_maps": "",
            # in: submission with TLS and SASL AUTH
            "smtpd_tls_security_level": "encrypt",
            "smtpd_tls_auth_only": "yes",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_tls_loglevel": "0",
            "smtpd_tls_received_header": "yes",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
            "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
            # DKIM signing by OpenDKIM on a unix socket
            "smtpd_milters": f"unix:{self.dkim_socket}",
            "non_smtpd_milters": "",
            "milter_default_action": "tempfail",
            "milter_protocol": "6",
            # out: verified TLS to the sink, connections reused
            "default_transport": f"smtp:{nexthop}",
            "smtp_tls_security_level": "secure",
            "smtp_tls_policy_maps": f"inline:{{ {{ {nexthop} = secure match={self.sink_name} }} }}",
            "smtp_tls_CAfile": self.config_dir / "ca.pem",
            "smtp_tls_mandatory_protocols": ">=TLSv1.2",
            "smtp_tls_connection_reuse": "yes",
            "smtp_tls_loglevel": "1",
        }
        lines = [line for line in base.splitlines()
                 if line.split(" = ", 1)[0] not in settings and not line.startswith("virtual_")]
        return "\n".join(lines) + "\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
