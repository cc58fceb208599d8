"""Report-only rollout on both adapters over real HTTP (uvicorn for ASGI, waitress for WSGI):
every request is decided as usual, refusals are recorded and let through unchanged, and the
mode can never be switched on quietly."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.servers import bearer, send
from tests.test_transports import serve_guarded
from tests.tokens import CONNECTIONS, FULL
from token_guard.adapters.asgi import TokenGuard
from token_guard.adapters.wsgi import TokenGuardWSGI
from token_guard.core.errors import ConfigurationError
from token_guard.guard import DecisionEvent
from token_guard.report_only import ReportOnlyWarning
from token_guard.stores import MemoryStore

ADAPTERS = ["uvicorn", "waitress"]
TABLE = "/v3/maps/carto_dw/table?name=proj.ds.stores"
UNGRANTED = "/v3/maps/carto_dw/table?name=proj.secret.salaries"
HEADER = "x-token-guard-would-refuse"


@contextmanager
def guarded(adapter: str, **options: Any) -> Iterator[tuple[int, MemoryStore, list[DecisionEvent],
                                                             str]]:
    """The transports' echo app behind a report-only guard, with one token of FULL."""
    store = MemoryStore()
    events: list[DecisionEvent] = []
    with (
        pytest.warns(ReportOnlyWarning, match="REPORT-ONLY"),
        serve_guarded(adapter, store, on_decision=events.append, max_body_bytes=4096,
                      **options) as (port, call),
    ):
        issued = call(lambda: store.create_token(FULL))
        yield port, store, events, issued.token


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_refusals_are_let_through_recorded_and_named_in_a_header(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="token_guard"), guarded(
        adapter, report_only=True, report_only_header=True
    ) as (port, _, events, secret):
        missing = send(port, "GET", TABLE)
        assert missing.status == 200 and missing.json() == {"token": None, "body": ""}
        assert missing.headers[HEADER] == "missing_token"
        ungranted = send(port, "GET", UNGRANTED, bearer(secret))
        assert ungranted.status == 200 and ungranted.headers[HEADER] == "source_not_granted"
        allowed = send(port, "GET", TABLE, bearer(secret))
        assert allowed.status == 200 and allowed.json()["token"] == "full"
        assert HEADER not in allowed.headers
    would = [e for e in events if not e.allowed]
    assert [(e.report_only, e.denial.code if e.denial else None) for e in would] == [
        (True, "missing_token"), (True, "source_not_granted"),
    ]
    assert [e.allowed for e in events if e.allowed] == [True]
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("report-only: would refuse")]
    assert len(lines) == 2 and all(r.levelno == logging.WARNING for r in caplog.records
                                   if r.getMessage().startswith("report-only"))
    assert "source_not_granted" in lines[1] and secret not in caplog.text


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_body_the_guard_read_reaches_the_app_unchanged(adapter: str) -> None:
    with guarded(adapter, report_only=True) as (port, _, events, secret):
        body = json.dumps({"q": "SELECT salary FROM proj.secret.salaries"}).encode()
        headers = [*bearer(secret), ("Content-Type", "application/json")]
        refused_query = send(port, "POST", "/v3/sql/carto_dw/query", headers, body)
        assert refused_query.status == 200, refused_query.body
        assert refused_query.json() == {"token": None, "body": body.decode()}
        # Over max_body_bytes: the guard stopped reading at its limit; the app gets it all.
        big = json.dumps({"q": "SELECT * FROM proj.ds.stores", "pad": "x" * 10_000}).encode()
        too_large = send(port, "POST", "/v3/sql/carto_dw/query", headers, big)
        assert too_large.status == 200 and too_large.json()["body"] == big.decode()
        chunked = send(port, "POST", "/v3/sql/carto_dw/query", headers, big, chunked=True)
        assert chunked.status == 200 and chunked.json()["body"] == big.decode()
    codes = [e.denial.code for e in events if e.denial]
    assert codes[:2] == ["source_not_granted", "body_too_large"]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_only_the_named_apis_are_in_report_only(adapter: str) -> None:
    with guarded(adapter, report_only={"maps"}) as (port, _, events, secret):
        assert send(port, "GET", TABLE).status == 200  # maps: let through
        sql = send(port, "GET", "/v3/sql/carto_dw/query?q=SELECT%201")
        assert sql.status == 401 and sql.json()["code"] == "missing_token"  # sql: enforced
        unknown = send(port, "GET", "/v3/maps/carto_dw/nonsense", bearer(secret))
        assert unknown.status == 403 and unknown.json()["code"] == "unknown_route"
        dots = send(port, "GET", "/v3/maps/carto_dw/../table?name=proj.ds.stores")
        assert dots.status == 400  # no API can be known: enforced
    flags = [(e.report_only, e.denial.code) for e in events if e.denial]
    assert flags[:3] == [(True, "missing_token"), (False, "missing_token"),
                         (False, "unknown_route")]


def test_start_up_is_loud_and_enforcing_is_the_default(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportOnlyWarning)
        enforcing = TokenGuard(lambda *a: None, store=store, connections=CONNECTIONS)  # type: ignore[arg-type]
    assert enforcing.guard.report_only is None
    with caplog.at_level(logging.WARNING, logger="token_guard"), pytest.warns(
        ReportOnlyWarning, match="Nothing is enforced"
    ):
        wsgi = TokenGuardWSGI(lambda e, s: [], store=store, connections=CONNECTIONS,
                              report_only={"sql", "maps"})
    assert "REPORT-ONLY mode for the maps, sql APIs" in caplog.text
    assert wsgi.guard.report_only is not None
    assert wsgi.guard.report_only.stats() == {"report_only": ["maps", "sql"], "would_refuse": {}}
    wsgi.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"report_only": {"ftp"}}, "ftp", id="unknown-api"),
        pytest.param({"report_only": "maps"}, "set of API names", id="a-string"),
        pytest.param({"report_only": set()}, "empty set", id="empty"),
        pytest.param({"report_only": 1}, "set of API names", id="a-number"),
        pytest.param({"report_only_header": True}, "needs report_only", id="header-alone"),
        pytest.param({"report_only": True, "report_only_header": "yes"}, "report_only_header",
                     id="header-not-bool"),
    ],
)
def test_bad_report_only_settings_fail_at_start_up(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TokenGuard(lambda *a: None, store=MemoryStore(), connections=CONNECTIONS,  # type: ignore[arg-type]
                   **options)


def test_the_flask_extension_lets_refusals_through_in_report_only_mode() -> None:
    from flask import Flask, jsonify

    from token_guard.adapters.flask import FlaskTokenGuard

    app = Flask(__name__)
    app.add_url_rule("/v3/maps/<conn>/table", "table",
                     lambda conn: jsonify(conn=conn), methods=["GET"])
    with pytest.warns(ReportOnlyWarning):
        ext = FlaskTokenGuard(app, store=MemoryStore(), connections=CONNECTIONS,
                              report_only=True, report_only_header=True)
    try:
        answer = app.test_client().get(TABLE)
        assert answer.status_code == 200 and answer.json == {"conn": "carto_dw"}
        assert answer.headers["X-Token-Guard-Would-Refuse"] == "missing_token"
    finally:
        ext.close()
