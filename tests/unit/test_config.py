"""Settings: a TOML file (TOML 1.0) plus SECUMAIL_<SECTION>__<KEY> environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from secumail.config import load_settings
from secumail.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "secumail.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    s = load_settings(tmp_path / "absent.toml", environ={})
    assert s.delivery.port == 25
    assert s.bus.url == "embedded"
    assert s.submission.listen == ["0.0.0.0:587"]
    assert s.pipeline.stages == ["route", "scan", "sign", "deliver", "notify"]
    assert load_settings(None, environ={}).delivery.port == 25


def test_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [server]
        hostname = "gw.example.test"
        data_dir = "{tmp_path / "data"}"
        [submission]
        listen = ["127.0.0.1:2525"]
        max_recipients = 7
        [dns]
        nameservers = ["127.0.0.1:5353"]
        """,
    )
    s = load_settings(path, environ={})
    assert s.server.hostname == "gw.example.test"
    assert s.submission.listen == ["127.0.0.1:2525"]
    assert s.submission.max_recipients == 7
    assert s.dns.nameservers == ["127.0.0.1:5353"]
    assert s.submission.max_errors == 10  # untouched keys keep their default
    assert s.storage_url == f"sqlite:///{tmp_path / 'data' / 'secumail.sqlite'}"
    assert s.cert_file == tmp_path / "data" / "tls" / "gateway.crt"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[delivery]\nport = 2525\nconcurrency = 3\n")
    s = load_settings(path, environ={"SECUMAIL_DELIVERY__PORT": "2626"})
    assert s.delivery.port == 2626
    assert s.delivery.concurrency == 3


def test_environment_types() -> None:
    env = {
        "SECUMAIL_SUBMISSION__MAX_MESSAGE_SIZE": "1000",
        "SECUMAIL_SUBMISSION__IDLE_TIMEOUT": "2.5",
        "SECUMAIL_SERVER__HOSTNAME": "gw.example.test",
        "SECUMAIL_BUS__LEASE": "0.5",
    }
    s = load_settings(None, environ=env)
    assert s.submission.max_message_size == 1000
    assert s.submission.idle_timeout == 2.5
    assert s.server.hostname == "gw.example.test"
    assert s.bus.lease == 0.5


def test_environment_lists_as_json_or_comma_separated() -> None:
    env = {
        "SECUMAIL_SUBMISSION__LISTEN": '["127.0.0.1:2525", "[::1]:2525"]',
        "SECUMAIL_SUBMISSION__LISTEN_TLS": "127.0.0.1:4465, 127.0.0.2:4465",
        "SECUMAIL_DELIVERY__RETRY_SCHEDULE": "1,2.5,60",
        "SECUMAIL_DNS__NAMESERVERS": "127.0.0.1:5353",
        "SECUMAIL_PIPELINE__STAGES": "",
    }
    s = load_settings(None, environ=env)
    assert s.submission.listen == ["127.0.0.1:2525", "[::1]:2525"]
    assert s.submission.listen_tls == ["127.0.0.1:4465", "127.0.0.2:4465"]
    assert s.delivery.retry_schedule == [1, 2.5, 60]
    assert s.dns.nameservers == ["127.0.0.1:5353"]
    assert s.pipeline.stages == []


def test_one_element_numeric_list_from_environment() -> None:
    # The module docstring: lists may be given comma-separated; one element is a list too.
    s = load_settings(None, environ={"SECUMAIL_DELIVERY__RETRY_SCHEDULE": "60"})
    assert s.delivery.retry_schedule == [60]


def test_unrelated_environment_is_ignored() -> None:
    env = {
        "SECUMAIL_CONFIG": "/etc/secumail.toml",
        "SECUMAIL_DEBUG": "1",
        "HOME": "/root",
        "XSECUMAIL_DELIVERY__PORT": "1",
    }
    assert load_settings(None, environ=env).delivery.port == 25


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"SECUMAIL_SUBMISSION__MAX_RCPT": "5"}, "submission.max_rcpt"),
        ({"SECUMAIL_NOSUCH__KEY": "5"}, "nosuch"),
        ({"SECUMAIL_DELIVERY__PORT": "twenty-five"}, "delivery.port"),
    ],
)
def test_bad_environment_gives_a_clear_config_error(env: dict[str, str], mentions: str) -> None:
    with pytest.raises(ConfigError, match=mentions):
        load_settings(None, environ=env)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[delivery]\nprot = 25\n")
    with pytest.raises(ConfigError, match=r"delivery\.prot.*not permitted"):
        load_settings(path, environ={})


def test_wrong_type_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[submission]\nmax_recipients = "lots"\n')
    with pytest.raises(ConfigError, match=r"submission\.max_recipients"):
        load_settings(path, environ={})


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[delivery\nport = 25\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(path, environ={})


def test_relative_data_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, environ={"SECUMAIL_SERVER__DATA_DIR": "var/sm"})
    assert s.data_dir == tmp_path / "var" / "sm"
    assert s.master_key_file == tmp_path / "var" / "sm" / "keys" / "master.key"


def test_workers_default_to_one_per_core_and_accept_a_number() -> None:
    s = load_settings(None, environ={})
    assert s.server.workers == "auto"
    assert s.worker_count >= 1
    assert load_settings(None, environ={"SECUMAIL_SERVER__WORKERS": "3"}).worker_count == 3
    with pytest.raises(ConfigError, match=r"server\.workers"):
        load_settings(None, environ={"SECUMAIL_SERVER__WORKERS": "0"})
    with pytest.raises(ConfigError, match=r"server\.workers"):
        load_settings(None, environ={"SECUMAIL_SERVER__WORKERS": "many"})


def test_where_names_the_file_or_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\nlisten = ["127.0.0.1:8443"]\n')
    s = load_settings(path, environ={"SECUMAIL_SUBMISSION__LISTEN": "127.0.0.1:2525"})
    assert s.source == path
    assert s.where("api.listen") == f"change api.listen in {path}"
    assert s.where("submission.listen") == "change SECUMAIL_SUBMISSION__LISTEN in the environment"
    assert load_settings(None, environ={}).source is None
