"""A newcomer's first hour (issue 12): the settings file is findable, mistakes are named.

`secumail init` writes a file that shows every setting; `config show` and `config check`
say what is in effect and what is wrong; a mistyped --config is an error, not a fresh
database somewhere else; a port clash names the setting to change.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from secumail.cli.main import main as secumail_main
from tests.harness import free_port


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = secumail_main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SECUMAIL_CONFIG", raising=False)
    for key in list(os.environ):
        if key.startswith("SECUMAIL_") and "__" in key:
            monkeypatch.delenv(key)
    return tmp_path


# -- a named settings file must exist --------------------------------------------------
@pytest.mark.parametrize("command", [["account", "list"], ["queue"], ["serve"], ["config", "show"]])
def test_a_mistyped_config_path_is_an_error(workdir: Path, command: list[str]) -> None:
    code, _, err = run("--config", "var/secumial.toml", *command)
    assert code == 1
    assert "var/secumial.toml: no such settings file (named by --config)" in err
    assert not (workdir / "var").exists()  # no database made from defaults
    assert list(workdir.iterdir()) == []


def test_a_missing_secumail_config_is_an_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECUMAIL_CONFIG", str(workdir / "etc" / "secumail.toml"))
    code, _, err = run("account", "list")
    assert code == 1
    assert "no such settings file (named by SECUMAIL_CONFIG)" in err
    assert list(workdir.iterdir()) == []


def test_init_creates_the_named_file_and_others_then_read_it(workdir: Path) -> None:
    config = workdir / "etc" / "secumail.toml"
    code, out, err = run("--config", str(config), "init")
    assert code == 0, err
    assert f"config: {config} (written)" in out and config.exists()
    # init says which host name it chose (this machine's FQDN when not set) and warns
    # when the world cannot look it up.
    assert f"server.hostname: {socket.getfqdn()} (this host's FQDN)" in out
    code, out, err = run("--config", str(config), "init", "--json")
    made = json.loads(out)
    assert (made["config_written"], made["hostname"]) == (False, socket.getfqdn())
    assert made["workers"] == "auto"
    code, out, err = run("--config", str(config), "account", "list", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_init_says_which_hostname_it_chose_and_warns_when_not_public(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECUMAIL_SERVER__HOSTNAME", "vm7.corp.internal")
    code, out, err = run("--config", "a.toml", "init")
    assert code == 0, err
    assert "server.hostname: vm7.corp.internal (from the settings)" in out
    assert "WARNING: server.hostname is 'vm7.corp.internal', not a public DNS name" in err
    assert 'hostname = "vm7.corp.internal"' in (workdir / "a.toml").read_text()

    monkeypatch.setenv("SECUMAIL_SERVER__HOSTNAME", "relay.zho.nl")
    code, out, err = run("--config", "b.toml", "init", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert (made["hostname"], made["warnings"]) == ("relay.zho.nl", [])
    assert "WARNING" not in err


def test_init_prints_the_tls_reporting_record_when_the_inbound_mx_is_on(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 8460 §3: other MTAs send TLS reports about mail to the gateway to the address in
    `_smtp._tls.<server.hostname>`; the inbound MX takes them (`inbound.tlsrpt_address`)."""
    monkeypatch.setenv("SECUMAIL_SERVER__HOSTNAME", "relay.zho.nl")
    code, out, err = run("--config", "a.toml", "init", "--json")
    assert code == 0, err
    assert json.loads(out)["gateway_tlsrpt"] is None  # no inbound MX: nobody to send them to
    monkeypatch.setenv("SECUMAIL_INBOUND__LISTEN", '["0.0.0.0:25"]')
    code, out, err = run("--config", "b.toml", "init")
    assert code == 0, err
    assert '_smtp._tls.relay.zho.nl. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@relay.zho.nl"' in out
    monkeypatch.setenv("SECUMAIL_INBOUND__TLSRPT_ADDRESS", "")
    code, out, err = run("--config", "c.toml", "init", "--json")
    assert json.loads(out)["gateway_tlsrpt"] is None


def test_without_config_the_file_init_wrote_is_read(workdir: Path) -> None:
    code, _, err = run("init")
    assert code == 0, err
    assert (workdir / "secumail.toml").exists()
    code, out, _ = run("config", "show", "--json")
    assert code == 0
    assert json.loads(out)["server"]["data_dir"] == str(workdir / "var")


# -- config show -----------------------------------------------------------------------
def test_config_show_is_what_is_set_and_all_is_everything(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = workdir / "secumail.toml"
    config.write_text('[server]\nhostname = "gw.zho.nl"\n[delivery]\nport = 2525\n')
    monkeypatch.setenv("SECUMAIL_STORAGE__URL", "postgresql://secumail:hunter2@db/secumail")
    code, out, _ = run("--config", str(config), "config", "show")
    assert code == 0
    assert out.splitlines()[:3] == [
        'server.hostname = "gw.zho.nl"',
        "delivery.port = 2525",
        'storage.url = "postgresql://secumail:********@db/secumail"',
    ]
    assert "hunter2" not in out
    code, out, _ = run("--config", str(config), "config", "show", "--all", "--json")
    shown = json.loads(out)
    assert shown["delivery"]["port"] == 2525
    assert shown["submission"]["listen"] == ["0.0.0.0:587"]  # a default
    assert shown["api"]["oidc"]["algorithms"] == ["RS256", "ES256"]
    assert shown["server"]["workers"] == "auto"
    assert "hunter2" not in out


# -- config check ----------------------------------------------------------------------
def test_config_check_exit_status_and_messages(workdir: Path) -> None:
    config = workdir / "secumail.toml"
    assert run("--config", str(config), "init")[0] == 0
    code, out, _ = run("--config", str(config), "config", "check")
    assert code == 0, out
    assert "0 error(s)" in out

    text = config.read_text().replace(
        "# trust_file =   (not set)", f'trust_file = "{workdir / "extra-ca.pem"}"'
    )
    text = text.replace('# listen = ["0.0.0.0:587"]', 'listen = ["0.0.0.0"]')
    config.write_text(text)
    code, out, _ = run("--config", str(config), "config", "check", "--json")
    assert code == 1
    errors = json.loads(out)["errors"]
    assert f"tls.trust_file: {workdir / 'extra-ca.pem'} does not exist" in errors
    assert any(e.startswith("submission.listen: '0.0.0.0'") for e in errors), errors

    config.write_text("[delivery]\nprot = 25\n")
    code, out, _ = run("--config", str(config), "config", "check")
    assert code == 1
    assert out.startswith("error: invalid settings: delivery.prot")


# -- a port clash names the setting ------------------------------------------------------
@pytest.mark.parametrize("setting", ["submission.listen", "submission.listen_tls", "api.listen"])
def test_a_port_clash_names_the_setting(workdir: Path, setting: str) -> None:
    ports = {s: free_port() for s in ("submission.listen", "submission.listen_tls", "api.listen")}
    config = workdir / "secumail.toml"
    config.write_text(
        f'[server]\nhostname = "localhost"\ndata_dir = "{workdir / "var"}"\nworkers = 1\n'
        f'[submission]\nlisten = ["127.0.0.1:{ports["submission.listen"]}"]\n'
        f'listen_tls = ["127.0.0.1:{ports["submission.listen_tls"]}"]\n'
        f'[api]\nlisten = ["127.0.0.1:{ports["api.listen"]}"]\n'
    )
    with socket.create_server(("127.0.0.1", ports[setting])):  # someone else has the port
        done = subprocess.run(
            [sys.executable, "-m", "secumail.cli.main", "--config", str(config), "serve"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    assert (
        f"secumail: {setting}: cannot listen on 127.0.0.1:{ports[setting]}: address already in "
        f"use (change {setting} in {config})"
    ) in done.stderr
