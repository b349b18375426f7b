"""The settings file: what `init` writes, `config show` (the settings in effect) and
`config check` (is this file usable before the gateway starts?).

The file `init` writes lists every setting of the model (secumail.config) with its
default commented out, as `postconf -d` shows Postfix's, and the comments written beside
each field in the model's source: generated, so it cannot drift from the model.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import json
import os
import re
import textwrap
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

from secumail.cli.output import emit
from secumail.cli.parsing import Commands, Subcommands, actions, command
from secumail.config import Settings, load_settings
from secumail.errors import ConfigError
from secumail.mail.dns_records import hostname_problem
from secumail.mail.endpoints import parse_host_port
from secumail.mail.verp import domain_problem

MASK = "********"

HEADER = """\
# Secumail settings, written by `secumail init`.
#
# Every setting is listed with its default, commented out: remove the "# " in front of
# a line to change it. Lines without "# " are the values `init` chose for this machine.
# Each setting can also be set in the environment as SECUMAIL_<SECTION>__<KEY>, e.g.
# SECUMAIL_SUBMISSION__LISTEN='["0.0.0.0:2587"]' (the environment wins over this file).
# `secumail config show` prints the settings in effect; `secumail config check` checks
# this file (addresses, the files it names) before the gateway starts.
"""


# -- the model, walked ---------------------------------------------------------------
def _field_comments(cls: type) -> dict[str, tuple[list[str], list[str]]]:
    """The comment lines written above and beside each field in `cls`'s source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source shipped: the file has no comments then
        return {}
    lines = source.splitlines()
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, beside code)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            trailing = bool(lines[row - 1][:col].strip())
            comments[row] = (tok.string.lstrip("#").strip(), trailing)
    found: dict[str, tuple[list[str], list[str]]] = {}
    klass = ast.parse(source).body[0]
    if not isinstance(klass, ast.ClassDef):
        return {}
    for node in klass.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        row = node.lineno - 1
        while row in comments and not comments[row][1]:
            above.insert(0, comments[row][0])
            row -= 1
        beside = [
            comments[r][0]
            for r in range(node.lineno, (node.end_lineno or node.lineno) + 1)
            if r in comments and comments[r][1]
        ]
        found[node.target.id] = (above, beside)
    return found


@dataclass
class Entry:
    """One setting: `api.listen`, its value in effect, its default, and what we know."""

    key: str
    value: Any
    default: Any
    set: bool  # given in the file or the environment
    secret: bool
    above: list[str] = field(default_factory=list)  # comments in the model's source
    beside: list[str] = field(default_factory=list)


def _default(model: type[BaseModel], name: str) -> Any:
    info = model.model_fields[name]
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


_SECRET_NAME = re.compile(r"(^|_)(password|passwd|passphrase|secret|pin|private_key)(_|$)")


def _is_secret(name: str, annotation: Any, value: Any) -> bool:
    """SecretStr fields, fields named for a secret (`*password*`, `*secret*`, `*pin*`) and
    key material in any field; not the names of files or variables that hold a secret."""
    if isinstance(value, SecretStr) or "SecretStr" in str(annotation):
        return True
    if _SECRET_NAME.search(name) and not name.endswith(("_file", "_env", "_path", "_label")):
        return True
    return isinstance(value, str) and "PRIVATE KEY" in value


def entries(settings: BaseModel, prefix: str = "") -> Iterator[Entry | tuple[str, BaseModel]]:
    """Every setting in model order; a nested table (api.oidc) as (name, model) after them."""
    model = type(settings)
    comments = _field_comments(model)
    nested: list[tuple[str, BaseModel]] = []
    for name, info in model.model_fields.items():
        value = getattr(settings, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            nested.append((key, value))
            continue
        yield Entry(
            key,
            value,
            _default(model, name),
            name in settings.model_fields_set,
            _is_secret(name, info.annotation, value),
            *comments.get(name, ([], [])),
        )
    for name, value in (settings.model_extra or {}).items():  # [plugins.<name>] tables
        yield Entry(f"{prefix}{name}", value, None, True, False, [], [])
    yield from nested


def flat(settings: BaseModel, prefix: str = "") -> Iterator[Entry]:
    for item in entries(settings, prefix):
        if isinstance(item, Entry):
            yield item
        else:
            yield from flat(item[1], item[0] + ".")


# -- TOML ----------------------------------------------------------------------------
def toml_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def _table(out: list[str], name: str, model: BaseModel, chosen: set[str]) -> None:
    out.append(f"\n[{name}]")
    doc = type(model).__doc__
    if doc and doc is not BaseModel.__doc__:
        out += [f"# {line}".rstrip() for line in inspect.cleandoc(doc).splitlines()]
    nested = []
    for item in entries(model, name + "."):
        if not isinstance(item, Entry):
            nested.append(item)
            continue
        short = item.key.rpartition(".")[2]
        out += [f"# {c}" for c in item.above]
        if item.key in chosen or item.set:
            line = f"{short} = {toml_value(item.value)}"
        elif item.default is None:
            line = f"# {short} =   (not set)"
        else:
            line = f"# {short} = {toml_value(item.default)}"
        out.append("  # ".join([line, *item.beside]))
    for key, sub in nested:
        _table(out, key, sub, chosen)


CHOSEN_BY_INIT = frozenset({"server.hostname", "server.data_dir"})


def render(settings: Settings, chosen: frozenset[str] = CHOSEN_BY_INIT) -> str:
    """The settings file `init` writes: every section and setting, defaults commented;
    `chosen` and whatever the environment set are written as values."""
    out = [HEADER.rstrip("\n")]
    for name in Settings.model_fields:
        _table(out, name, getattr(settings, name), set(chosen))
    return "\n".join(out) + "\n"


# -- config show ---------------------------------------------------------------------
def _masked_url(url: str) -> str:
    """`postgresql://user:pw@db/x` -> `postgresql://user:********@db/x`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def shown(entry: Entry) -> Any:
    if entry.secret:
        return MASK if entry.value not in (None, "") else entry.value
    if isinstance(entry.value, str) and "://" in entry.value:
        return _masked_url(entry.value)
    if isinstance(entry.value, Path):
        return str(entry.value)
    return entry.value


def show(settings: Settings, *, everything: bool, as_json: bool) -> int:
    rows = [e for e in flat(settings) if everything or e.set]
    data: dict[str, Any] = {}
    for e in rows:
        *sections, name = e.key.split(".")
        target = data
        for s in sections:
            target = target.setdefault(s, {})
        target[name] = shown(e)
    lines = [f"{e.key} =" + ("" if shown(e) is None else f" {toml_value(shown(e))}") for e in rows]
    if not everything:
        where = f"from {settings.source}" if settings.source else "no settings file"
        lines.append(f"# {where}; the rest are defaults: `secumail config show --all`")
    emit(as_json, data, "\n".join(lines))
    return 0


# -- config check --------------------------------------------------------------------
@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _readable_file(path: Path, setting: str, f: Findings) -> bool:
    if not path.exists():
        f.errors.append(f"{setting}: {path} does not exist")
    elif not path.is_file():
        f.errors.append(f"{setting}: {path} is not a file")
    elif not os.access(path, os.R_OK):
        f.errors.append(f"{setting}: {path} is not readable by this user")
    else:
        return True
    return False


def _check_pem(path: Path, setting: str, kind: str, f: Findings) -> None:
    if not _readable_file(path, setting, f):
        return
    text = path.read_bytes()
    if kind == "certificate" and b"-----BEGIN CERTIFICATE-----" not in text:
        f.errors.append(f"{setting}: {path} holds no PEM certificate")
    if kind == "key" and not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
        f.errors.append(f"{setting}: {path} holds no PEM private key")


def _check_files(s: Settings, f: Findings) -> None:
    for setting, given, derived, kind in (
        ("tls.cert_file", s.tls.cert_file, s.cert_file, "certificate"),
        ("tls.key_file", s.tls.key_file, s.key_file, "key"),
    ):
        if given is not None:
            _check_pem(given, setting, kind, f)
        elif derived.exists():
            _check_pem(derived, setting, kind, f)
        else:
            f.notes.append(f"{setting}: not set; a self-signed one is made at {derived}")
    if (s.tls.cert_file is None) != (s.tls.key_file is None):
        f.errors.append("tls.cert_file and tls.key_file: set both or neither")
    if s.tls.trust_file is not None:
        _check_pem(s.tls.trust_file, "tls.trust_file", "certificate", f)
    if s.pki.pkcs11_pin_file is not None:
        _readable_file(s.pki.pkcs11_pin_file, "pki.pkcs11_pin_file", f)
    if s.pki.pkcs11_module:
        _readable_file(Path(s.pki.pkcs11_module), "pki.pkcs11_module", f)
        if not s.pki.pkcs11_token:
            f.errors.append("pki.pkcs11_token: required with pki.pkcs11_module")


def _check_listeners(s: Settings, f: Findings) -> None:
    seen: dict[tuple[str, int], str] = {}
    lists = [
        ("submission.listen", s.submission.listen),
        ("submission.listen_tls", s.submission.listen_tls),
        ("inbound.listen", s.inbound.listen),
    ]
    if s.api.enabled:
        lists.append(("api.listen", s.api.listen))
    for setting, addresses in lists:
        for entry in addresses:
            try:
                host, port = parse_host_port(entry)
            except ValueError as exc:
                f.errors.append(f"{setting}: {entry!r}: {exc}")
                continue
            if not 0 < port < 65536:
                f.errors.append(f"{setting}: {entry!r}: port {port} is out of range")
                continue
            if (host, port) in seen:
                f.errors.append(f"{setting}: {entry} is also in {seen[host, port]}")
            seen[host, port] = setting
            loopback = host.startswith("127.") or host in ("::1", "localhost")
            if setting == "api.listen" and s.api.plain_http and not loopback:
                f.errors.append(f"api.plain_http: allowed on loopback only, not {entry}")
            if port < 1024 and os.geteuid() != 0:
                f.warnings.append(f"{setting}: port {port} needs root or CAP_NET_BIND_SERVICE")
    problem = domain_problem(s.server.hostname) if s.inbound.listen else None
    if problem:
        f.errors.append(f"inbound.listen: bounce addresses are @server.hostname, and {problem}")
    for entry in s.dns.nameservers:
        try:
            parse_host_port(entry, 53)
        except ValueError as exc:
            f.errors.append(f"dns.nameservers: {entry!r}: {exc}")


def check_settings(s: Settings) -> Findings:
    f = Findings()
    f.notes.append(f"settings: {s.source or 'no file: defaults and environment'}")
    problem = hostname_problem(s.server.hostname)
    if problem:
        f.warnings.append(
            f"server.hostname: {s.server.hostname!r} is not a public DNS name ({problem}); "
            f"receivers and DKIM need this gateway's public name ({s.where('server.hostname')})"
        )
    _check_files(s, f)
    _check_listeners(s, f)
    if s.data_dir.exists() and not os.access(s.data_dir, os.W_OK | os.X_OK):
        f.errors.append(f"server.data_dir: {s.data_dir} is not writable by this user")
    f.notes.append(f"server.workers: {s.server.workers} ({s.worker_count} processes)")
    return f


def check(load: Callable[[], Settings], as_json: bool) -> int:
    try:
        settings = load()
    except ConfigError as exc:
        emit(as_json, {"ok": False, "errors": [str(exc)], "warnings": []}, f"error: {exc}")
        return 1
    f = check_settings(settings)
    emit(
        as_json,
        {
            "ok": not f.errors,
            "source": str(settings.source) if settings.source else None,
            "errors": f.errors,
            "warnings": f.warnings,
            "notes": f.notes,
        },
        "\n".join(
            [f"error: {e}" for e in f.errors]
            + [f"warning: {w}" for w in f.warnings]
            + [f"  {n}" for n in f.notes]
            + [f"{len(f.errors)} error(s), {len(f.warnings)} warning(s)"]
        ),
    )
    return 1 if f.errors else 0


# -- the subcommands -----------------------------------------------------------------
def register(sub: Subcommands) -> None:
    config = actions(sub, "config", "the settings file")
    c = command(
        config, "show", "the settings in effect (set ones; --all: with defaults); secrets masked"
    )
    c.add_argument("--all", action="store_true", help="every setting, defaults included")
    command(
        config, "check", "check the settings file: values, listen addresses, the files it names"
    )


# `config` runs without the services (it must work on a file that does not load):
# cli.main calls `run` itself.
COMMANDS: Commands = {}


def run(args: argparse.Namespace, path: Path | None) -> int:
    if args.action == "show":
        return show(load_settings(path), everything=args.all, as_json=args.json)
    return check(lambda: load_settings(path), args.json)
