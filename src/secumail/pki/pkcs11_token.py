"""A logged-in PKCS#11 token: one login per token, one session per thread, one call at a time.

PKCS#11 (OASIS PKCS #11 base specification v2.40/v3.0) keeps the login state per
application and token, not per session: the first C_Login logs in every session of the
process on that token, a second one fails with CKR_USER_ALREADY_LOGGED_IN (without
checking its PIN) and C_Logout on any session logs them all out. So one `TokenSessions`
per (module, token) holds one login session for as long as a key on the token is in use;
every key on that token shares it (`TokenSessions.acquire` counts the users).

Each thread gets its own session for its operations (a session carries one operation at
a time), so signing is safe from `asyncio.to_thread` and any thread pool. Calls into one
module are also made one at a time, under that module's lock: python-pkcs11 initialises
the module with C_Initialize(NULL_PTR), which tells it that the application will not call
it from several threads at once (SoftHSM2 then switches its own mutexes off), while
python-pkcs11 releases the GIL during each call. More threads therefore do not make one
module sign faster; they only never corrupt it.

A token that went away (HSM restarted, network HSM reconnected, module re-initialised)
invalidates every session handle. `run` then logs in again once and repeats the
operation; a second failure is reported.

Errors are `ConfigError`, with a message naming the module, token and cause: a missing
module or token, a wrong or locked PIN, a key that is not there, a token that refuses.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from secumail.errors import ConfigError

try:
    import pkcs11
    from pkcs11 import exceptions as p11
except ImportError:  # python-pkcs11 is optional: only installations with an HSM need it
    pkcs11 = None  # type: ignore[assignment]
    p11 = None  # type: ignore[assignment]

log = logging.getLogger("secumail.pkcs11")

__all__ = [
    "Pkcs11Config",
    "ThreadSession",
    "TokenSessions",
    "describe",
    "load_module",
    "module_gate",
    "module_path",
    "p11",
    "pin_from",
    "pkcs11",
]

T = TypeVar("T")


# --- settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pkcs11Config:
    """Where a key lives: the PKCS#11 module (shared library), the token label, the user PIN."""

    module: str
    token_label: str
    pin: str = field(repr=False)

    @classmethod
    def with_pin_from(
        cls,
        module: str,
        token_label: str,
        *,
        env: str | None = None,
        file: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Pkcs11Config:
        """A config whose PIN comes from an environment variable or a file (`pin_from`)."""
        return cls(module, token_label, pin_from(env=env, file=file, environ=environ))


def pin_from(
    *,
    env: str | None = None,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The user PIN from the environment variable `env` or the file `file` (exactly one).

    A PIN file holds the PIN on its first line; one trailing line end is dropped (as left
    by `echo` or an editor), anything else is part of the PIN.
    """
    if (env is None) == (file is None):
        raise ConfigError(
            "give the PKCS#11 PIN in exactly one place: an environment variable or a file"
        )
    if env is not None:
        value = (os.environ if environ is None else environ).get(env)
        if not value:
            raise ConfigError(f"the PKCS#11 PIN variable {env} is not set or empty")
        return value
    path = Path(file)  # type: ignore[arg-type]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the PKCS#11 PIN file {path}: {exc.strerror or exc}"
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the PKCS#11 PIN file {path} is not UTF-8") from exc
    pin = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if not pin or "\n" in pin:
        raise ConfigError(f"the PKCS#11 PIN file {path} must hold the PIN on one line")
    return pin


# --- modules ---------------------------------------------------------------------------

_gates: dict[str, threading.RLock] = {}
_gates_lock = threading.Lock()


def module_path(module: str) -> str:
    """The canonical path of a module, so that one library is loaded (and locked) once."""
    return os.path.realpath(module)


def module_gate(module: str) -> threading.RLock:
    """The lock every call into `module` is made under (see the module docstring)."""
    path = module_path(module)
    with _gates_lock:
        return _gates.setdefault(path, threading.RLock())


def load_module(module: str) -> Any:
    """The loaded and initialised python-pkcs11 library object for `module`."""
    if pkcs11 is None:
        raise ConfigError("PKCS#11 keys need the python-pkcs11 package, which is not installed")
    path = module_path(module)
    if not os.path.isfile(path):
        raise ConfigError(f"PKCS#11 module {module} does not exist")
    with module_gate(path):
        try:
            return pkcs11.lib(path)
        except p11.PKCS11Error as exc:
            raise ConfigError(f"cannot load PKCS#11 module {module}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """A PKCS#11 error in words (python-pkcs11's exceptions mostly carry no text)."""
    if p11 is not None:
        for kind, words in _WORDS:
            if isinstance(exc, getattr(p11, kind, ())):
                return words
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


_WORDS = (
    ("PinIncorrect", "wrong PIN"),
    (
        "PinLocked",
        "the PIN is locked (too many wrong attempts); the security officer must unlock it",
    ),
    ("PinExpired", "the PIN has expired; set a new one on the token"),
    ("PinLenRange", "the PIN has a length the token does not accept"),
    ("UserPinNotInitialized", "the token has no user PIN yet; initialise it"),
    ("TokenNotPresent", "the token is not present"),
    ("TokenNotRecognised", "the token is not recognised"),
    ("TokenWriteProtected", "the token is write-protected"),
    ("DeviceRemoved", "the device was removed"),
    ("DeviceError", "the device reports an error"),
    ("DeviceMemory", "the token is out of memory"),
    ("MechanismInvalid", "the token does not support this mechanism"),
    ("KeyTypeInconsistent", "the key is of another type than the operation needs"),
    ("UserNotLoggedIn", "not logged in"),
    ("SessionCount", "the token has no free sessions"),
)

# Errors after which the sessions are of no use and a new login may help.
_STALE = (
    "SessionHandleInvalid",
    "SessionClosed",
    "UserNotLoggedIn",
    "DeviceRemoved",
    "TokenNotPresent",
    "ObjectHandleInvalid",
    "KeyHandleInvalid",
)


def _is_stale(exc: BaseException) -> bool:
    return p11 is not None and any(isinstance(exc, getattr(p11, name, ())) for name in _STALE)


# --- tokens ----------------------------------------------------------------------------


class ThreadSession:
    """One thread's session on a token, and the key objects it has looked up."""

    def __init__(self, token: Any, session: Any, generation: int) -> None:
        self.token = token
        self.session = session
        self.generation = generation
        self.keys: dict[tuple[str, str], Any] = {}


_registry: dict[tuple[str, str], TokenSessions] = {}
_registry_lock = threading.Lock()


class TokenSessions:
    """The login on one token and each thread's session on it (see the module docstring)."""

    def __init__(self, config: Pkcs11Config) -> None:
        self.config = config
        self.module = module_path(config.module)
        self._gate = module_gate(self.module)
        self._local = threading.local()
        self._thread_sessions: dict[threading.Thread, Any] = {}
        self._generation = 0
        self._users = 0
        self._released = False
        self._token: Any = None
        self._login: Any = None
        self.mechanisms: frozenset[Any] = frozenset()
        self._log_in()

    # -- sharing

    @classmethod
    def acquire(cls, config: Pkcs11Config) -> TokenSessions:
        """The sessions of `config`'s token, logging in if no one in this process has."""
        key = (module_path(config.module), config.token_label)
        with _registry_lock:
            tokens = _registry.get(key)
            if tokens is None:
                tokens = cls(config)
                _registry[key] = tokens
            elif not hmac.compare_digest(tokens.config.pin.encode(), config.pin.encode()):
                # A second C_Login would not check this PIN; refuse rather than accept it.
                raise ConfigError(
                    f"PKCS#11 token {config.token_label!r} is already logged in in this process "
                    "with a different PIN"
                )
            tokens._users += 1
            return tokens

    def release(self) -> None:
        """One user fewer; the last one closes every session and logs out."""
        key = (self.module, self.config.token_label)
        with _registry_lock:
            self._users -= 1
            if self._users > 0:
                return
            if _registry.get(key) is self:
                del _registry[key]
        with self._gate:
            self._released = True
            self._close_all()

    # -- running operations

    def run(self, operation: Callable[[ThreadSession], T], what: str) -> T:
        """`operation(this thread's session)` under the module lock, again once after a
        new login if the sessions went stale; PKCS#11 errors become `ConfigError`."""
        for attempt in (1, 2):
            with self._gate:
                if self._released:
                    raise ConfigError(f"{what}: the sessions on this token were closed")
                try:
                    if self._login is None:
                        self._log_in()  # an earlier new login failed: try once more now
                    return operation(self._thread_session())
                except ConfigError:
                    raise
                except p11.PKCS11Error as exc:
                    if attempt == 1 and _is_stale(exc):
                        log.warning(
                            "PKCS#11 sessions on token %r went stale (%s); logging in again",
                            self.config.token_label,
                            describe(exc),
                        )
                        self._close_all()
                        continue
                    raise ConfigError(f"{what}: {describe(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- internals (called under the module lock)

    def _log_in(self) -> None:
        lib = load_module(self.module)
        label = self.config.token_label
        with self._gate:
            try:
                self._token = lib.get_token(token_label=label)
            except p11.NoSuchToken as exc:
                found = ", ".join(repr(t.label) for t in lib.get_tokens() if t.label) or "none"
                raise ConfigError(
                    f"no PKCS#11 token labelled {label!r} in module {self.config.module} "
                    f"(tokens there: {found})"
                ) from exc
            except p11.MultipleTokensReturned as exc:
                raise ConfigError(
                    f"more than one PKCS#11 token is labelled {label!r} in {self.config.module}"
                ) from exc
            except p11.PKCS11Error as exc:
                raise ConfigError(
                    f"cannot list the tokens of PKCS#11 module {self.config.module}: {describe(exc)}"
                ) from exc
            try:
                self._login = self._token.open(user_pin=self.config.pin)
            except p11.UserAlreadyLoggedIn:
                # Logged in by code outside this registry; that login serves us too.
                log.warning("PKCS#11 token %r was already logged in by other code", label)
                self._login = self._token.open()
            except p11.PKCS11Error as exc:
                raise ConfigError(
                    f"cannot log in to PKCS#11 token {label!r}: {describe(exc)}"
                ) from exc
            try:
                self.mechanisms = frozenset(self._token.slot.get_mechanisms())
            except p11.PKCS11Error as exc:
                raise ConfigError(
                    f"cannot list the mechanisms of PKCS#11 token {label!r}: {describe(exc)}"
                ) from exc
            self._generation += 1

    def _thread_session(self) -> ThreadSession:
        state: ThreadSession | None = getattr(self._local, "state", None)
        if state is not None and state.generation == self._generation:
            return state
        self._close_dead_threads()
        session = self._token.open()  # logged in already: the login is per token
        self._thread_sessions[threading.current_thread()] = session
        state = ThreadSession(self._token, session, self._generation)
        self._local.state = state
        return state

    def _close_dead_threads(self) -> None:
        for thread in [t for t in self._thread_sessions if not t.is_alive()]:
            self._close_quietly(self._thread_sessions.pop(thread))

    def _close_all(self) -> None:
        for session in self._thread_sessions.values():
            self._close_quietly(session)
        self._thread_sessions.clear()
        if self._login is not None:
            self._close_quietly(self._login)  # the login session last: it logs out
            self._login = None
        self._generation += 1

    def _close_quietly(self, session: Any) -> None:
        try:
            session.close()
        except p11.PKCS11Error as exc:
            # A stale handle cannot be closed; the module has dropped it already.
            log.debug("closing a PKCS#11 session failed: %s", describe(exc))
