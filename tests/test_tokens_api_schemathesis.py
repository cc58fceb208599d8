"""Property tests of the served OpenAPI schema: no 500s, responses match what it promises."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from token_guard.management import (
    READ_SCOPE,
    WRITE_SCOPE,
    create_client,
    create_management_app,
    openapi_schema,
)
from token_guard.stores import MemoryStore

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


class _Served:
    def __init__(
        self, base: str, schema: Any, headers: dict[str, str], token_ids: list[str]
    ) -> None:
        self.base = base
        self.token_ids = token_ids
        self.schema = schema
        self.headers = headers


@pytest.fixture
def served(free_port: int) -> Iterator[_Served]:
    """The management app under uvicorn, its schema loaded from /openapi.json, a write token."""
    store = MemoryStore()
    client, secret = asyncio.run(
        create_client(store, "schemathesis", [READ_SCOPE, WRITE_SCOPE], actor="test")
    )
    # A few tokens so that listing and paging return real records.
    token_ids = [
        asyncio.run(store.create_token({"name": f"t{i}", "allowed_apis": ["maps"]})).id
        for i in range(3)
    ]
    app = create_management_app(store, issuer="https://tokens.test", audience="tg")
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    base = f"http://127.0.0.1:{free_port}"
    try:
        r = httpx.post(
            f"{base}/oauth/token", auth=(client.client_id, secret),
            data={"grant_type": "client_credentials"},
        )
        token = r.json()["access_token"]
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        yield _Served(base, schema, {"Authorization": f"Bearer {token}"}, token_ids)
    finally:
        server.should_exit = True
        thread.join(20)


# The operations, read from the same schema the app serves (no server needed to list them).
OPERATIONS = [
    pytest.param(path, method, id=f"{method.upper()} {path}")
    for path, item in openapi_schema()["paths"].items()
    for method in item
    if method in ("get", "post", "patch", "delete")
]
_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much]


def _run(served: _Served, path: str, method: str, examples: int, *, token: bool) -> None:
    operation = served.schema[path][method.upper()]
    headers = served.headers if token else None

    @given(case=operation.as_strategy(), known=st.sampled_from([None, *served.token_ids]))
    @settings(max_examples=examples, deadline=None, suppress_health_check=_HEALTH)
    def check(case: Any, known: str | None) -> None:
        # Random ids only ever meet 404; half the time aim at a real token instead.
        if known is not None and case.path_parameters and "token_id" in case.path_parameters:
            case.path_parameters["token_id"] = known
        case.call_and_validate(base_url=served.base, headers=headers, checks=CHECKS)

    check()


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_api_conforms_to_its_schema(served: _Served, path: str, method: str) -> None:
    """Every operation, with generated inputs and a valid write-scoped token."""
    _run(served, path, method, 40, token=True)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_api_conforms_without_a_token(served: _Served, path: str, method: str) -> None:
    """The refusals (401) are documented responses too."""
    _run(served, path, method, 10, token=False)
