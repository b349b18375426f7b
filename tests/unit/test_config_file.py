"""The settings file `init` writes, `config show` and `config check` (issue 12: a
newcomer sees every setting and its default, and learns what is wrong before `serve`)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, SecretStr

from secumail.cli.config import MASK, check_settings, flat, render, shown
from secumail.config import Settings, load_settings

SETTING_LINE = re.compile(r"^(# )?([a-z_0-9]+) = ")


def written(tmp_path: Path, environ: dict[str, str] | None = None) -> tuple[Settings, Path]:
    env = {"SECUMAIL_SERVER__HOSTNAME": "gw.example.nl", **(environ or {})}
    env["SECUMAIL_SERVER__DATA_DIR"] = str(tmp_path / "var")
    settings = load_settings(None, environ=env)
    # What `init` does: the chosen values, and only those, are not commented out.
    settings.server.model_fields_set.discard("hostname")
    settings.server.model_fields_set.discard("data_dir")
    path = tmp_path / "secumail.toml"
    path.write_text(render(settings), encoding="utf-8")
    return settings, path


def settings_in(text: str) -> dict[str, bool]:
    """{"api.listen": commented_out} for every `key = value` line, per [table]."""
    table, found = "", {}
    for line in text.splitlines():
        if line.startswith("["):
            table = line.strip("[]")
        elif m := SETTING_LINE.match(line):
            found[f"{table}.{m.group(2)}"] = bool(m.group(1))
    return found


def test_every_setting_of_the_model_is_in_the_written_file(tmp_path: Path) -> None:
    settings, path = written(tmp_path)
    found = settings_in(path.read_text())
    assert set(found) == {e.key for e in flat(settings)}
    assert "api.oidc.issuer" in found and "gdpr.purge_interval" in found
    # The values init chose are set; everything else shows its default, commented out.
    assert {k for k, commented in found.items() if not commented} == {
        "server.hostname",
        "server.data_dir",
    }
    text = path.read_text()
    assert 'hostname = "gw.example.nl"\n' in text
    assert '\n# listen = ["0.0.0.0:587"]  # STARTTLS' in text
    assert '# workers = "auto"' in text
    # The model's own comments come along: where to look, and why.
    assert "# Seconds between attempts for a deferred recipient" in text


def test_the_written_file_loads_back_to_the_same_settings(tmp_path: Path) -> None:
    settings, path = written(tmp_path)
    again = load_settings(path, environ={})
    assert again.model_dump() == settings.model_dump()


def test_the_commented_defaults_are_the_defaults(tmp_path: Path) -> None:
    # Uncommenting every default changes nothing: the file shows the true defaults.
    settings, path = written(tmp_path)
    text = re.sub(r"(?m)^# ([a-z_0-9]+ = )(?!  \(not set\))", r"\1", path.read_text())
    still = [line for line in text.splitlines() if line.startswith("# ") and SETTING_LINE.match(line)]
    assert still and all("=   (not set)" in line for line in still)  # no value to show
    path.write_text(text)
    assert load_settings(path, environ={}).model_dump() == settings.model_dump()


def test_values_from_the_environment_at_init_are_written(tmp_path: Path) -> None:
    _, path = written(tmp_path, {"SECUMAIL_DELIVERY__PORT": "2525"})
    assert settings_in(path.read_text())["delivery.port"] is False
    assert load_settings(path, environ={}).delivery.port == 2525


# -- show ----------------------------------------------------------------------------
class _WithSecrets(BaseModel):
    password: str = "hunter2"
    client_secret: SecretStr = SecretStr("s3cr3t")
    token: SecretStr = SecretStr("tok")
    pkcs11_pin: str = "1234"
    pkcs11_pin_file: Path | None = Path("/etc/secumail/pin")  # names the secret's file
    key_pem: str = "-----BEGIN PRIVATE KEY-----\nMC4CAQ...\n-----END PRIVATE KEY-----\n"
    greeting: str = "hello"


def test_secrets_are_masked() -> None:
    values = {e.key: shown(e) for e in flat(_WithSecrets())}
    assert values == {
        "password": MASK,
        "client_secret": MASK,
        "token": MASK,
        "pkcs11_pin": MASK,
        "pkcs11_pin_file": "/etc/secumail/pin",
        "key_pem": MASK,
        "greeting": "hello",
    }


def test_passwords_in_urls_are_masked() -> None:
    s = load_settings(
        None, environ={"SECUMAIL_STORAGE__URL": "postgresql://sm:hunter2@db:5432/secumail"}
    )
    (url,) = [shown(e) for e in flat(s) if e.key == "storage.url"]
    assert url == f"postgresql://sm:{MASK}@db:5432/secumail"


# -- check ---------------------------------------------------------------------------
def _settings(tmp_path: Path, toml: str) -> Settings:
    path = tmp_path / "secumail.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path / "var"}"\nhostname = "gw.example.nl"\n{toml}')
    return load_settings(path, environ={})


def test_check_passes_a_plain_config(tmp_path: Path) -> None:
    f = check_settings(_settings(tmp_path, '[submission]\nlisten = ["127.0.0.1:2587"]\n'))
    assert f.errors == []
    assert not any("server.hostname" in w for w in f.warnings)


def test_check_names_missing_and_unreadable_files(tmp_path: Path) -> None:
    cert = tmp_path / "gw.crt"
    cert.write_text("not a certificate\n")
    f = check_settings(
        _settings(
            tmp_path,
            f'[tls]\ncert_file = "{cert}"\nkey_file = "{tmp_path / "nokey.pem"}"\n'
            f'trust_file = "{tmp_path / "ca.pem"}"\n',
        )
    )
    assert f"tls.cert_file: {cert} holds no PEM certificate" in f.errors
    assert f"tls.key_file: {tmp_path / 'nokey.pem'} does not exist" in f.errors
    assert f"tls.trust_file: {tmp_path / 'ca.pem'} does not exist" in f.errors


def test_check_parses_listen_addresses(tmp_path: Path) -> None:
    f = check_settings(
        _settings(
            tmp_path,
            '[submission]\nlisten = ["127.0.0.1", "127.0.0.1:2465"]\n'
            'listen_tls = ["127.0.0.1:2465"]\n[api]\nlisten = ["[::1]:99999"]\n',
        )
    )
    assert any(e.startswith("submission.listen: '127.0.0.1': ") for e in f.errors), f.errors
    assert "submission.listen_tls: 127.0.0.1:2465 is also in submission.listen" in f.errors
    assert any(e.startswith("api.listen: '[::1]:99999'") for e in f.errors), f.errors


def test_check_refuses_plain_http_beyond_loopback(tmp_path: Path) -> None:
    f = check_settings(_settings(tmp_path, '[api]\nplain_http = true\nlisten = ["0.0.0.0:8080"]\n'))
    assert f.errors == ["api.plain_http: allowed on loopback only, not 0.0.0.0:8080"]
    f = check_settings(_settings(tmp_path, '[api]\nplain_http = true\nlisten = ["127.0.0.1:8080"]\n'))
    assert f.errors == []


def test_check_warns_about_a_hostname_the_internet_cannot_resolve(tmp_path: Path) -> None:
    s = _settings(tmp_path, "").model_copy(deep=True)
    s.server.hostname = "gw.corp.internal"
    f = check_settings(s)
    assert f.errors == []
    assert any(
        w.startswith("server.hostname: 'gw.corp.internal' is not a public DNS name (names under")
        for w in f.warnings
    ), f.warnings


def test_inbound_is_off_by_default_and_its_listen_addresses_are_checked(tmp_path: Path) -> None:
    assert Settings().inbound.listen == []
    f = check_settings(
        _settings(
            tmp_path,
            '[submission]\nlisten = ["127.0.0.1:2587"]\n[inbound]\nlisten = ["127.0.0.1:2587", "x"]\n',
        )
    )
    assert "inbound.listen: 127.0.0.1:2587 is also in submission.listen" in f.errors
    assert any(e.startswith("inbound.listen: 'x': ") for e in f.errors), f.errors


def test_inbound_needs_a_hostname_that_can_carry_bounce_addresses(tmp_path: Path) -> None:
    """Bounce addresses are `bounce+…@server.hostname`: with the default "localhost" the
    inbound MX could accept none, and remote servers would refuse such a return path."""

    def inbound_errors(hostname: str, listen: bool) -> list[str]:
        s = _settings(tmp_path, '[inbound]\nlisten = ["127.0.0.1:2525"]\n' if listen else "")
        s = s.model_copy(deep=True)
        s.server.hostname = hostname
        return [e for e in check_settings(s).errors if e.startswith("inbound.listen")]

    assert inbound_errors("localhost", listen=True) == [
        "inbound.listen: bounce addresses are @server.hostname, and 'localhost' has a single"
        " label; bounce addresses need a domain name"
    ]
    assert inbound_errors("gw.zho.nl", listen=True) == []
    assert inbound_errors("localhost", listen=False) == []
