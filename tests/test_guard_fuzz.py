"""No request makes the guard raise, over every route that carries SQL, in every dialect.

The conductor (``Guard.check_async``, the same steps TokenGuard and TokenGuardWSGI run) gets
corpus queries, mutated, in every place a request can carry SQL: ``q`` on the SQL and Maps
query routes and Maps stats, a job's body, a widget model's ``source`` with ``type=query``,
``aggregationExp``, ``params.operationExp`` and ``params.aggregations``. Every answer must be
a refusal with a status the guard documents, or an allow; never an exception and never a
500. Bounded in CI; ``TOKEN_GUARD_LONG_FUZZ=1`` runs 20,000 examples.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sql_corpus import CORPUS
from token_guard.core.connections import DIALECT_DEPTH
from token_guard.core.decision import Denial
from token_guard.core.records import TokenRecord
from token_guard.guard import Guard
from token_guard.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio
LONG = os.environ.get("TOKEN_GUARD_LONG_FUZZ") == "1"
EXAMPLES = int(os.environ.get("TOKEN_GUARD_FUZZ_EXAMPLES", 20_000 if LONG else 150))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
DIALECTS = sorted(DIALECT_DEPTH)
CONNECTIONS = {f"c_{d}": d for d in DIALECTS}
QUERIES = sorted({query for _, _, query, _ in CORPUS})
PIECES = ["SELECT", "FROM", "(", ")", ",", "'", '"', "`", "/*", "--", ";", "\\", "..", "@p",
          "UNNEST", "WITH", "x", "proj.ds.t", "REGEXP_REPLACE(x, y)", "DIV0(x)", "\x00", "é"]
ALLOWED_STATUSES = {400, 401, 403, 413, 415}


@st.composite
def mutated(draw: st.DrawFn) -> str:
    words = draw(st.sampled_from(QUERIES)).split(" ")
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(words)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate"]))
        if op == "insert":
            words.insert(at, draw(st.sampled_from(PIECES)))
        elif op == "delete" and words:
            del words[min(at, len(words) - 1)]
        elif words:
            words.insert(at, words[min(at, len(words) - 1)])
    return " ".join(words)


def requests(conn: str, sql: str) -> list[tuple[str, str, str, bytes]]:
    """(method, path, query string, JSON body) for every place SQL travels."""
    q = quote(sql, safe="")
    params = quote(json.dumps({"column": "x", "operation": "custom", "operationExp": sql}))
    aggregations = quote(json.dumps({"aggregations": sql}))
    return [
        ("GET", f"/v3/sql/{conn}/query", f"q={q}", b""),
        ("GET", f"/v3/maps/{conn}/query", f"q={q}&v=3.4", b""),
        ("GET", f"/v3/maps/{conn}/query/1/2/3", f"q={q}", b""),
        ("GET", f"/v3/stats/{conn}/x", f"q={q}", b""),
        ("POST", f"/v3/sql/{conn}/job", "", json.dumps({"query": sql}).encode()),
        ("GET", f"/v3/sql/{conn}/model/formula", f"type=query&source={q}&params={params}", b""),
        ("GET", f"/v3/sql/{conn}/model/table", f"type=query&source={q}&params={aggregations}",
         b""),
        ("GET", f"/v3/maps/{conn}/table", f"name=proj.ds.t&aggregationExp={q}", b""),
    ]


@pytest.fixture(scope="module")
def guard_and_secret() -> tuple[Guard, str]:
    import asyncio

    store = MemoryStore()
    body: dict[str, Any] = {
        "name": "everything", "referers": [], "allowed_apis": ["sql", "maps"],
        "grants": [{"connection_name": c, "source": "*"} for c in CONNECTIONS],
    }
    issued = asyncio.run(store.create_token(body))
    return Guard(store=store, connections=CONNECTIONS), issued.token


@FUZZ
@given(sql=mutated(), dialect=st.sampled_from(DIALECTS))
async def test_no_sql_anywhere_in_a_request_makes_the_guard_raise(
    guard_and_secret: tuple[Guard, str], sql: str, dialect: str
) -> None:
    guard, secret = guard_and_secret
    for method, path, query, body in requests(f"c_{dialect}", sql):
        answer = await guard.check_async(method, path.encode(), query.encode(),
                                         b"Bearer " + secret.encode(), body=body)
        if isinstance(answer, Denial):
            assert answer.status in ALLOWED_STATUSES, (path, answer)
            assert secret not in answer.message + answer.hint
        else:
            assert isinstance(answer, TokenRecord), (path, answer)
