"""Shared test fixtures: real services, or a skip (by hand) / a failure (under CI=true)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tests.services import service_missing

POSTGRES_DSN = os.environ.get("TOKEN_GUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TOKEN_GUARD_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Run ``pytest.mark.anyio`` tests on asyncio only: the stores, the resolver and the
    adapters use asyncio tasks, futures and executors (module scope, as anyio's own default)."""
    return "asyncio"


@pytest.fixture
def postgres_dsn() -> str:
    """The DSN of the real PostgreSQL on 127.0.0.1:5432 (database ``test``)."""
    if not _port_open("127.0.0.1", 5432):
        service_missing("PostgreSQL is not answering on 127.0.0.1:5432")
    return POSTGRES_DSN


@pytest.fixture
def redis_url() -> str:
    """The URL of the real Redis on 127.0.0.1:6379."""
    if not _port_open("127.0.0.1", 6379):
        service_missing("Redis is not answering on 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture
def free_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    yield port
