"""One configuration for the app, the CLI and the Tokens API: a TOML file, environment on top.

``load_config(path)`` reads the file (stdlib ``tomllib``), applies the environment variables
below, validates everything the guard would validate at start-up, and returns a frozen
``Settings``. ``TokenGuard(app, config=path_or_settings)`` and ``TokenGuardWSGI`` take it,
and ``token-guard check|serve|tokens create --config FILE`` read the same file, so the CLI
decides exactly as the app does and the Tokens API can refuse grants the app could never
serve. A file::

    store = "sqlite:///tokens.db"          # relative SQLite paths are relative to this file
    prefix = "/v3/"
    allowed_functions = ["carto-un.carto.*"]

    [connections]
    carto_dw = "bigquery"
    analytics = { dialect = "postgres", default_path = ["analytics", "public"] }

    [cache]
    ttl = 30

    [[routes]]
    api = "sql"
    path = "/v3/custom/{connection}/things"
    source_param = "name"

Environment variables override the file (twelve-factor): ``TOKEN_GUARD_CONFIG`` (the file,
when no path is given), ``TOKEN_GUARD_STORE``, ``TOKEN_GUARD_PREFIX``,
``TOKEN_GUARD_ALLOW_QUERY_TOKEN`` (``true``/``false``), ``TOKEN_GUARD_INCLUDE_DEFAULT_ROUTES``,
``TOKEN_GUARD_MAX_BODY_BYTES``, ``TOKEN_GUARD_MAX_QUERY_BYTES``,
``TOKEN_GUARD_ALLOWED_FUNCTIONS`` (comma-separated), ``TOKEN_GUARD_CONNECTIONS``
(``name=dialect,name=dialect``: replaces the file's table) and ``TOKEN_GUARD_CACHE_<FIELD>``
(``TOKEN_GUARD_CACHE_TTL``, ...). Code-only settings (``on_decision``, ``deny_response``)
are keyword arguments; keyword arguments override the configuration.

Every error is a ``ConfigurationError`` naming the file (or variable) and the field.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_args

from token_guard.core.connections import Connection, normalize_connections
from token_guard.core.errors import ConfigurationError
from token_guard.core.errors import did_you_mean as suggest
from token_guard.core.policy import Policy
from token_guard.core.routes import Route, SqlCheck, SqlParam
from token_guard.guard import Guard, GuardOptions
from token_guard.resolver import CacheSettings
from token_guard.stores.base import TokenStore

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "ConfigSource", "Settings", "build_guard", "load_config"]

CONFIG_ENV = "TOKEN_GUARD_CONFIG"
"""The environment variable naming the configuration file when no path is given."""
ENV_PREFIX = "TOKEN_GUARD_"


@dataclass(frozen=True, slots=True)
class Settings:
    """A validated configuration; ``None`` means the guard's default.

    ``origin`` says where it came from (a file path, or ``"code"``), for messages.
    """

    connections: Mapping[str, Connection]
    store: str | None = None
    routes: tuple[Route, ...] | None = None
    prefix: str | None = None
    include_default_routes: bool | None = None
    allow_query_token: bool | None = None
    max_body_bytes: int | None = None
    max_query_bytes: int | None = None
    allowed_functions: tuple[str, ...] | None = None
    cache: CacheSettings | None = None
    origin: str = field(default="code", compare=False)

    def guard_options(self) -> dict[str, Any]:
        """The ``GuardOptions`` this configuration sets (unset ones are left out)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in _NOT_OPTIONS and getattr(self, f.name) is not None
        }

    def policy(self) -> Policy:
        """The ``Policy`` the app's guard builds from this configuration (grant checks)."""
        from token_guard.stores.memory import MemoryStore

        guard = Guard(store=MemoryStore(), connections=self.connections, **self.guard_options())
        return guard.policy

    def open_store(self) -> TokenStore:
        """A new store for ``store``; ConfigurationError if none is set."""
        from token_guard.stores import open_store

        if self.store is None:
            raise ConfigurationError(
                f"{self.origin}: store: not set; add store = \"sqlite:///tokens.db\" "
                f"(or postgresql://...) to the file, or set {ENV_PREFIX}STORE"
            )
        return open_store(self.store)


_NOT_OPTIONS = frozenset({"connections", "store", "origin"})
ConfigSource = str | os.PathLike[str] | Settings
"""What ``config=`` accepts: a TOML file's path, or ``Settings``."""

_SCALARS: Mapping[str, type] = MappingProxyType({
    "store": str,
    "prefix": str,
    "include_default_routes": bool,
    "allow_query_token": bool,
    "max_body_bytes": int,
    "max_query_bytes": int,
})
_TOP_LEVEL = (*_SCALARS, "connections", "routes", "allowed_functions", "cache")
_CONNECTION_KEYS = ("dialect", "default_path")
_ROUTE_KEYS = tuple(f.name for f in fields(Route))
_SQL_PARAM_KEYS = tuple(f.name for f in fields(SqlParam))
_CACHE_KEYS = tuple(f.name for f in fields(CacheSettings))
_SQL_CHECKS = get_args(SqlCheck)


def _unknown_keys(where: str, table: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in table:
        if key not in known:
            raise ConfigurationError(
                f"{where}{key}: unknown setting{suggest(key, known)} "
                f"(known: {', '.join(known)})"
            )


def _typed(where: str, value: Any, kind: type) -> Any:
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigurationError(f"{where}: must be a whole number, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigurationError(
            f"{where}: must be {'true or false' if kind is bool else 'a ' + kind.__name__}, "
            f"got {value!r}"
        )
    return value


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list) or not all(
        isinstance(v, str) for v in value
    ):
        raise ConfigurationError(f"{where}: must be a list of strings, got {value!r}")
    return tuple(value)


def _connection(where: str, value: Any) -> str | Connection:
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"{where}: must be a dialect name or {{ dialect = \"...\", default_path = [...] }}"
        )
    _unknown_keys(f"{where}.", value, _CONNECTION_KEYS)
    if "dialect" not in value:
        raise ConfigurationError(f"{where}.dialect: missing, e.g. dialect = \"bigquery\"")
    dialect = _typed(f"{where}.dialect", value["dialect"], str)
    path = _strings(f"{where}.default_path", value.get("default_path", []))
    return Connection(dialect, default_path=path)


def _route(where: str, value: Any) -> Route:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where}: must be a table ([[routes]] api = ..., path = ...)")
    _unknown_keys(f"{where}.", value, _ROUTE_KEYS)
    for key in ("api", "path"):
        if key not in value:
            raise ConfigurationError(f"{where}.{key}: missing")
    args: dict[str, Any] = {}
    for key, raw in value.items():
        at = f"{where}.{key}"
        if key in ("methods", "kind_choices", "expression_params"):
            items = _strings(at, raw)
            args[key] = frozenset(m.upper() for m in items) if key == "methods" else frozenset(
                items
            )
        elif key == "source_in_body":
            args[key] = _typed(at, raw, bool)
        elif key == "sql_params":
            if not isinstance(raw, list):
                raise ConfigurationError(f"{at}: must be a list of {{ name, check }} tables")
            args[key] = tuple(_sql_param(f"{at}[{i}]", p) for i, p in enumerate(raw))
        else:
            args[key] = _typed(at, raw, str)
    return Route(**args)


def _sql_param(where: str, value: Any) -> SqlParam:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where}: must be a table {{ name = ..., check = ... }}")
    _unknown_keys(f"{where}.", value, _SQL_PARAM_KEYS)
    name = _typed(f"{where}.name", value.get("name"), str)
    check = _typed(f"{where}.check", value.get("check"), str)
    if check not in _SQL_CHECKS:
        raise ConfigurationError(
            f"{where}.check: {check!r} is not a check{suggest(check, _SQL_CHECKS)} "
            f"(one of {', '.join(_SQL_CHECKS)})"
        )
    choices = frozenset(_strings(f"{where}.choices", value.get("choices", [])))
    return SqlParam(name, check, choices)


def _cache(where: str, value: Any) -> CacheSettings:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where}: must be a table ([cache] ttl = 60, ...)")
    _unknown_keys(f"{where}.", value, _CACHE_KEYS)
    try:
        return CacheSettings(**value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _from_table(data: Mapping[str, Any], origin: str, base: Path | None) -> Settings:
    where = f"{origin}: "
    _unknown_keys(where, data, _TOP_LEVEL)
    args: dict[str, Any] = {}
    for key, kind in _SCALARS.items():
        if key in data:
            args[key] = _typed(f"{where}{key}", data[key], kind)
    if "store" in args and base is not None:
        args["store"] = _relative_store(args["store"], base)
    raw_connections = data.get("connections")
    if raw_connections is None:
        raise ConfigurationError(
            f"{where}connections: missing; add a [connections] table, e.g. carto_dw = \"bigquery\""
        )
    if not isinstance(raw_connections, dict):
        raise ConfigurationError(f"{where}connections: must be a table of name = dialect")
    shorthand = {
        name: _connection(f"{where}connections.{name}", value)
        for name, value in raw_connections.items()
    }
    try:
        args["connections"] = MappingProxyType(normalize_connections(shorthand))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}{exc}") from None
    if "routes" in data:
        if not isinstance(data["routes"], list):
            raise ConfigurationError(f"{where}routes: must be an array of tables ([[routes]])")
        args["routes"] = tuple(
            _route(f"{where}routes[{i}]", r) for i, r in enumerate(data["routes"])
        )
    if "allowed_functions" in data:
        args["allowed_functions"] = _strings(f"{where}allowed_functions", data["allowed_functions"])
    if "cache" in data:
        args["cache"] = _cache(f"{where}cache", data["cache"])
    return Settings(origin=origin, **args)


def _relative_store(url: str, base: Path) -> str:
    # A relative SQLite path in a file means next to that file, wherever the process runs.
    if "://" not in url:
        path = url
    elif url.lower().startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
    else:
        return url
    if not path or path == ":memory:" or Path(path).is_absolute():
        return url
    return "sqlite:///" + str((base / path).resolve())


_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


def _environment(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """``settings`` with the ``TOKEN_GUARD_*`` variables that are set applied on top."""
    changes: dict[str, Any] = {}
    for key, kind in _SCALARS.items():
        name = ENV_PREFIX + key.upper()
        text = environ.get(name)
        if text is None or text == "":
            continue
        if kind is bool:
            if text.lower() not in _BOOLS:
                raise ConfigurationError(f"{name}: must be true or false, got {text!r}")
            changes[key] = _BOOLS[text.lower()]
        elif kind is int:
            if not text.strip().isdigit():
                raise ConfigurationError(f"{name}: must be a whole number, got {text!r}")
            changes[key] = int(text)
        else:
            changes[key] = text
    text = environ.get(ENV_PREFIX + "ALLOWED_FUNCTIONS")
    if text:
        changes["allowed_functions"] = tuple(n.strip() for n in text.split(",") if n.strip())
    text = environ.get(ENV_PREFIX + "CONNECTIONS")
    if text:
        changes["connections"] = MappingProxyType(_env_connections(text))
    cache = {}
    for f in fields(CacheSettings):
        name = f"{ENV_PREFIX}CACHE_{f.name.upper()}"
        raw = environ.get(name)
        if raw:
            try:
                cache[f.name] = int(raw) if f.name.startswith("max_") else float(raw)
            except ValueError:
                raise ConfigurationError(f"{name}: must be a number, got {raw!r}") from None
    if cache:
        base = settings.cache or CacheSettings()
        values = {f.name: getattr(base, f.name) for f in fields(CacheSettings)} | cache
        try:
            changes["cache"] = CacheSettings(**values)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{ENV_PREFIX}CACHE_*: {exc}") from None
    if not changes:
        return settings
    values = {f.name: getattr(settings, f.name) for f in fields(Settings)} | changes
    return Settings(**values)


def _env_connections(text: str) -> dict[str, Connection]:
    name = ENV_PREFIX + "CONNECTIONS"
    out: dict[str, str | Connection] = {}
    for item in text.split(","):
        conn, sep, dialect = item.strip().partition("=")
        if not sep or not conn.strip() or not dialect.strip():
            raise ConfigurationError(
                f"{name}: {item.strip()!r} needs NAME=DIALECT, e.g. carto_dw=bigquery"
            )
        out[conn.strip()] = dialect.strip()
    try:
        return normalize_connections(out)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, override from the environment and validate a TOML configuration file."""
    env = os.environ if environ is None else environ
    if path is None:
        path = env.get(CONFIG_ENV) or None
        if path is None:
            raise ConfigurationError(
                f"config: no file given; pass a path or set {CONFIG_ENV}=token_guard.toml"
            )
    file = Path(path)
    origin = str(file)
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigurationError(
            f"{origin}: cannot read the configuration file ({exc.strerror or exc})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{origin}: not valid TOML: {exc}") from None
    settings = _environment(_from_table(data, origin, file.parent), env)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Raise ``ConfigurationError`` (naming where it came from) for what the guard would
    refuse at start-up: prefix, routes, functions, sizes."""
    try:
        settings.policy()
    except ConfigurationError as exc:
        raise ConfigurationError(f"{settings.origin}: {exc}") from None


def build_guard(
    public: str,
    *,
    store: Any,
    connections: Mapping[str, str | Connection] | None,
    config: ConfigSource | None,
    options: Mapping[str, Any],
) -> tuple[Guard, bool]:
    """The ``Guard`` behind ``TokenGuard``/``TokenGuardWSGI`` (named ``public`` in every
    error), and whether it opened its store itself from the configuration's URL.

    Keyword arguments override the configuration; ``store``/``connections`` come from it
    when not given.
    """
    try:
        known = ("store", "connections", "config", *sorted(GuardOptions.__optional_keys__))
        for key in options:
            if key not in GuardOptions.__optional_keys__:
                raise ConfigurationError(f"{key}: unknown option{suggest(key, known)}")
        settings: Settings | None
        if config is None:
            settings = None
        elif isinstance(config, Settings):
            settings = config
        elif isinstance(config, str | os.PathLike):
            settings = load_config(config)
        else:
            raise ConfigurationError(
                f"config: must be a TOML file's path or tg.load_config(...), got "
                f"{type(config).__name__}"
            )
        merged = {**(settings.guard_options() if settings is not None else {}), **options}
        if connections is None:
            if settings is None:
                raise ConfigurationError(
                    "connections: required; pass connections={'carto_dw': 'bigquery'} or "
                    "config='token_guard.toml'"
                )
            connections = settings.connections
        owned = False
        if store is None:
            if settings is None or settings.store is None:
                raise ConfigurationError(
                    "store: required; pass store=tg.SQLiteStore('tokens.db'), or config= a "
                    "file with store = \"sqlite:///tokens.db\""
                )
            store, owned = settings.open_store(), True
        return Guard(store=store, connections=connections, **merged), owned
    except ConfigurationError as exc:
        raise ConfigurationError(f"{public}: {exc}") from None
