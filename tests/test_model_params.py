"""The SQL model (widget) API's SQL-bearing params, through TokenGuard over ASGI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import token_guard as tg
from tests.tokens import CONNECTIONS

SPEC = {
    "name": "widgets",
    "grants": [{"connection_name": "carto_dw", "source": "proj.ds.stores"}],
    "referers": [],
    "allowed_apis": ["sql"],
}
SECRET = "(SELECT MAX(salary) FROM proj.ds.secret)"


async def widget(request: Request) -> Response:
    return JSONResponse({"rows": [{"value": 1}]})


def call(method: str, widget_name: str, params: Any, *, as_text: bool = False) -> httpx.Response:
    """One widget request as @carto/api-client sends it (GET: params as JSON text)."""

    async def run() -> httpx.Response:
        store = tg.MemoryStore()
        issued = await store.create_token(SPEC)
        app = tg.TokenGuard(
            Starlette(routes=[Route("/v3/sql/{c}/model/{m}", widget, methods=["GET", "POST"])]),
            store=store,
            connections=CONNECTIONS,
        )
        query = {"type": "table", "source": "proj.ds.stores", "client": "deck-gl-carto"}
        headers = {"Authorization": f"Bearer {issued.token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            url = f"/v3/sql/carto_dw/model/{widget_name}"
            if method == "GET":
                return await client.get(
                    url, params={**query, "params": json.dumps(params)}, headers=headers
                )
            body = {**query, "params": json.dumps(params) if as_text else params}
            return await client.post(url, json=body, headers=headers)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("method", "widget_name", "params", "status", "code"),
    [
        pytest.param(
            "GET",
            "formula",
            {"column": "*", "operation": "custom", "operationExp": SECRET},
            403,
            "source_not_granted",
            id="formula-subquery-get",
        ),
        pytest.param(
            "POST",
            "formula",
            {"column": "*", "operation": "custom", "operationExp": SECRET},
            403,
            "source_not_granted",
            id="formula-subquery-post",
        ),
        pytest.param(
            "GET",
            "aggregations",
            {"aggregations": f"sum(revenue) AS r, {SECRET} AS s"},
            403,
            "source_not_granted",
            id="aggregations-sql-string",
        ),
        pytest.param(
            "GET",
            "formula",
            {"operation": "custom", "operationExp": "1; DROP TABLE x"},
            403,
            "query_not_allowed",
            id="formula-statement-break",
        ),
        pytest.param(
            "GET",
            "category",
            {"column": "x) FROM proj.ds.secret --", "operation": "count"},
            400,
            "malformed_request",
            id="column-with-sql",
        ),
        pytest.param(
            "GET",
            "formula",
            {"column": "revenue", "operation": "sum"},
            200,
            None,
            id="formula-granted",
        ),
        pytest.param(
            "GET",
            "formula",
            {"operation": "custom", "operationExp": "sum(revenue)/sum(size)"},
            200,
            None,
            id="formula-custom-granted",
        ),
        pytest.param(
            "POST",
            "category",
            {
                "column": "city",
                "operation": "sum",
                "operationColumn": "revenue",
                "orderBy": "frequency_desc",
            },
            200,
            None,
            id="category-granted-post",
        ),
        pytest.param(
            "GET",
            "aggregations",
            {"aggregations": [{"column": "revenue", "operation": "sum", "alias": "total"}]},
            200,
            None,
            id="aggregations-array-granted",
        ),
    ],
)
def test_widget_params_are_checked(
    method: str, widget_name: str, params: Any, status: int, code: str | None
) -> None:
    r = call(method, widget_name, params)
    assert r.status_code == status, r.text
    if code is not None:
        assert r.json()["code"] == code


def test_params_as_json_text_in_a_post_body_is_checked_too() -> None:
    r = call("POST", "formula", {"operation": "custom", "operationExp": SECRET}, as_text=True)
    assert (r.status_code, r.json()["code"]) == (403, "source_not_granted")
