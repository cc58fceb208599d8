"""Connection settings: the sqlglot dialect of each connection and how names qualify."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from token_guard.core.dialects import DIALECTS
from token_guard.core.errors import ConfigurationError, did_you_mean

# Dialects whose names token_guard knows how to qualify, with the number of name parts
# a fully qualified table has there (the table of their rules is token_guard.core.dialects).
DIALECT_DEPTH: Mapping[str, int] = MappingProxyType(
    {name: rules.depth for name, rules in DIALECTS.items()}
)


@dataclass(frozen=True, slots=True)
class Connection:
    """One data-warehouse connection as the guard sees it.

    ``default_path`` qualifies short names (e.g. ``("my-project", "my_dataset")`` on
    BigQuery turns ``t`` into ``my-project.my_dataset.t``); without it, a name with fewer
    parts than ``depth`` is refused.
    """

    dialect: str
    default_path: tuple[str, ...] = ()
    depth: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.dialect, str) or self.dialect not in DIALECT_DEPTH:
            raise ConfigurationError(
                f"connections: unknown dialect {self.dialect!r}"
                f"{did_you_mean(str(self.dialect), DIALECT_DEPTH)} (dialects: "
                f"{', '.join(sorted(DIALECT_DEPTH))})"
            )
        path = self.default_path
        if isinstance(path, str) or not isinstance(path, tuple | list) or not all(
            isinstance(part, str) and part for part in path
        ):
            example = tuple(path.split(".")) if isinstance(path, str) else ("my-project", "ds")
            raise ConfigurationError(
                f"connections: default_path must be a tuple of name parts, got {path!r}; "
                f"e.g. default_path={example!r}"
            )
        object.__setattr__(self, "default_path", tuple(path))
        if self.depth == 0:
            object.__setattr__(self, "depth", DIALECT_DEPTH[self.dialect])
        if len(self.default_path) >= self.depth:
            raise ConfigurationError(
                f"connections: default_path {self.default_path!r} must have fewer than "
                f"{self.depth} parts for dialect {self.dialect!r}"
            )


def normalize_connections(
    connections: Mapping[str, str | Connection],
) -> dict[str, Connection]:
    """Turn ``{"carto_dw": "bigquery"}`` shorthand into ``Connection`` objects."""
    if not isinstance(connections, Mapping):
        raise ConfigurationError(
            "connections: must map connection names to dialects, e.g. {'carto_dw': 'bigquery'}"
        )
    if not connections:
        raise ConfigurationError(
            "connections: is empty; name every connection the API serves with its dialect, "
            "e.g. {'carto_dw': 'bigquery'} (a request on a connection not named is refused)"
        )
    out: dict[str, Connection] = {}
    for name, value in connections.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"connections: {name!r} is not a connection name")
        if isinstance(value, str):
            try:
                out[name] = Connection(value)
            except ConfigurationError as exc:
                reason = str(exc).removeprefix("connections: ")
                raise ConfigurationError(f"connections[{name!r}]: {reason}") from None
        elif isinstance(value, Connection):
            out[name] = value
        else:
            raise ConfigurationError(
                f"connections[{name!r}]: must be a dialect name or tg.Connection(...)"
            )
    return out
