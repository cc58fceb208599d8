"""The conductor (token_guard.guard.Guard.check): the steps of a request, in the guard's order."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

import token_guard as tg
from tests.tokens import CONNECTIONS, FULL
from token_guard.core.decision import Denial
from token_guard.core.querystrings import plain_names
from token_guard.core.records import TokenRecord
from token_guard.core.spec import parse_token_spec
from token_guard.guard import PASS, Awaiting, Guard, ReadBody, Step
from token_guard.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio
BODY = {
    "name": "stores",
    "grants": [{"connection_name": "carto_dw", "source": "proj.ds.stores"}],
    "referers": [],
    "allowed_apis": ["maps", "sql"],
}
TABLE = (b"/v3/maps/carto_dw/table", b"name=proj.ds.stores")
QUERY_PATH = b"/v3/sql/carto_dw/query"


async def guard_and_secret(**options: Any) -> tuple[Guard, str]:
    store = MemoryStore()
    issued = await store.create_token(BODY)
    return Guard(store=store, connections=CONNECTIONS, **options), issued.token


def bearer(secret: str) -> bytes:
    return b"Bearer " + secret.encode("ascii")


async def drive(step: Step, body: bytes = b"", content_type: str = "application/json") -> Any:
    """Run the I/O steps the way an adapter does; returns the final step and the kinds seen."""
    seen: list[str] = []
    while isinstance(step, Awaiting | ReadBody):
        seen.append(type(step).__name__)
        if isinstance(step, Awaiting):
            step = step.then(await step.work())
        else:
            step = step.then(body, content_type)
    return step, seen


async def test_outside_the_prefix_passes() -> None:
    guard, _ = await guard_and_secret()
    assert guard.check("GET", b"/health", b"", None, None, None) is PASS


async def test_preflight_passes_without_a_token() -> None:
    guard, _ = await guard_and_secret()
    step = guard.check("OPTIONS", TABLE[0], TABLE[1], None, "https://a.example", None, True)
    assert step is PASS


async def test_missing_token_is_refused_at_once() -> None:
    guard, _ = await guard_and_secret()
    step = guard.check("GET", *TABLE, None, None, None)
    assert isinstance(step, Denial) and step.code == "missing_token"


async def test_cache_miss_awaits_the_store_then_allows() -> None:
    guard, secret = await guard_and_secret()
    final, seen = await drive(guard.check("GET", *TABLE, bearer(secret), None, None))
    assert seen == ["Awaiting"]
    assert isinstance(final, TokenRecord) and final.name == "stores"
    again = guard.check("GET", *TABLE, bearer(secret), None, None)
    assert isinstance(again, TokenRecord), "a cached token decides without I/O"


async def test_body_is_asked_for_only_after_the_token_is_known() -> None:
    guard, secret = await guard_and_secret()
    body = b'{"q": "SELECT * FROM proj.ds.stores"}'
    final, seen = await drive(guard.check("POST", QUERY_PATH, b"", bearer(secret), None, None),
                              body)
    assert seen == ["Awaiting", "ReadBody"]
    assert isinstance(final, TokenRecord)


async def test_unknown_token_is_refused_before_any_body_is_read() -> None:
    guard, _ = await guard_and_secret()
    from token_guard.core.secret import new_secret

    final, seen = await drive(
        guard.check("POST", QUERY_PATH, b"", bearer(new_secret()), None, None), b"x" * 10
    )
    assert "ReadBody" not in seen
    assert isinstance(final, Denial) and final.code == "invalid_token"


async def test_transport_refusal_of_the_body_is_the_answer() -> None:
    guard, secret = await guard_and_secret()
    await drive(guard.check("GET", *TABLE, bearer(secret), None, None))
    post = guard.check("POST", QUERY_PATH, b"", bearer(secret), None, None)
    assert isinstance(post, ReadBody)
    too_large = Denial(413, "body_too_large", "big", "smaller")
    assert post.then(too_large, "application/json") is too_large


async def test_an_exception_inside_a_step_is_a_refusal_never_a_pass() -> None:
    guard, secret = await guard_and_secret()
    await drive(guard.check("GET", *TABLE, bearer(secret), None, None))

    def broken(*_: Any) -> Denial | None:
        raise KeyError("a bug")

    guard._decide_parts = broken  # type: ignore[assignment]
    step = guard.check("GET", *TABLE, bearer(secret), None, None)
    assert isinstance(step, Denial)
    assert (step.status, step.code) == (500, "internal_error")


async def test_on_decision_sees_every_outcome() -> None:
    events: list[Any] = []
    guard, secret = await guard_and_secret(on_decision=events.append)
    await drive(guard.check("GET", *TABLE, bearer(secret), None, None))
    guard.check("GET", *TABLE, None, None, None)
    guard.check("GET", b"/v3/maps/carto_dw/table", b"name=proj.ds.secret", bearer(secret),
                None, None)
    assert [(e.allowed, e.denial.code if e.denial else None) for e in events] == [
        (True, None), (False, "missing_token"), (False, "source_not_granted")
    ]
    assert all(secret not in repr(e) for e in events)


async def test_check_async_decides_as_the_steps_do() -> None:
    guard, secret = await guard_and_secret()
    allowed = await guard.check_async("POST", QUERY_PATH, b"", bearer(secret),
                                      body=b'{"q": "SELECT 1 FROM proj.ds.stores"}')
    assert isinstance(allowed, TokenRecord)
    refused = await guard.check_async("POST", QUERY_PATH, b"", bearer(secret),
                                      body=b'{"q": "SELECT 1 FROM proj.ds.secret"}')
    assert isinstance(refused, Denial) and refused.code == "source_not_granted"


@pytest.mark.parametrize(
    ("store", "needle"),
    [
        pytest.param(MemoryStore, "got the class MemoryStore", id="class-not-instance"),
        pytest.param({"tokens": []}, "dict is not a token store", id="not-a-store"),
    ],
)
def test_a_store_that_is_not_one_fails_at_start_up_naming_the_field(
    store: Any, needle: str
) -> None:
    from token_guard.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        Guard(store=store, connections=CONNECTIONS)
    assert str(raised.value).startswith("store: ")
    assert needle in str(raised.value)


def test_extra_sql_functions_are_opt_in() -> None:
    record = TokenRecord("tok_x", parse_token_spec(FULL), datetime.now(UTC))
    facts = tg.RequestFacts("sql", "carto_dw", (tg.Source(
        "query", "SELECT `carto-un`.carto.H3_FROMGEOGPOINT(geom, 5) FROM proj.ds.stores"),))
    strict = Guard(store=MemoryStore(), connections=CONNECTIONS)
    denial = strict.policy.decide(strict.policy.compile(record), facts, time.time())
    assert denial is not None and denial.code == "query_not_allowed"
    assert "H3_FROMGEOGPOINT" in denial.message and "allowed_functions" in denial.hint
    opened = Guard(store=MemoryStore(), connections=CONNECTIONS,
                   allowed_functions=["carto-un.carto.*"])
    assert opened.policy.decide(opened.policy.compile(record), facts, time.time()) is None
    with pytest.raises(tg.ConfigurationError, match="allowed_functions"):
        Guard(store=MemoryStore(), connections=CONNECTIONS, allowed_functions="udf")


async def test_memos_stay_bounded_and_answer_alike_under_a_flood() -> None:
    from token_guard.core.policy import (
        ANSWERS_MEMO_SIZE,
        PREPARED_MEMO_SIZE,
        VERDICTS_MEMO_SIZE,
    )
    from token_guard.core.routes import READ_MEMO_SIZE, ROUTE_MEMO_SIZE
    from token_guard.core.secret import new_secret
    from token_guard.guard import BEARER_MEMO_SIZE, FACTS_MEMO_SIZE, REPEAT_MEMO_SIZE

    guard, secret = await guard_and_secret()
    referers = {**BODY, "referers": ["https://*.example.com"]}
    browser = (await guard.store.create_token(referers)).token  # type: ignore[attr-defined]
    for token in (secret, browser):
        await drive(guard.check("GET", *TABLE, bearer(token), "https://a.example.com", None))
    flood = max(FACTS_MEMO_SIZE, BEARER_MEMO_SIZE, PREPARED_MEMO_SIZE, ANSWERS_MEMO_SIZE,
                VERDICTS_MEMO_SIZE, READ_MEMO_SIZE, ROUTE_MEMO_SIZE) + 300
    for i in range(flood):
        page = f"https://s{i % 5000}.example.com/p/{i}"
        step = guard.check("GET", f"/v3/maps/carto_dw/table/9/{i}/{i}".encode(),
                           f"name=proj.ds.stores&v={i}".encode(), bearer(browser), None, page)
        assert isinstance(step, TokenRecord)
        # A distinct source name each time: new facts, new preparations.
        other = guard.check("GET", f"/v3/maps/carto_dw/table/1/{i}/2".encode(),
                            f"name=proj.ds.t{i}".encode(), bearer(browser), None, page)
        assert isinstance(other, Denial) and other.code == "source_not_granted"
        if i % 7 == 0:
            unknown = guard.check("GET", *TABLE, bearer(new_secret()), None, None)
            assert isinstance(unknown, Awaiting)
    assert len(guard._facts) <= FACTS_MEMO_SIZE
    assert len(guard._bearers) <= BEARER_MEMO_SIZE
    assert len(guard._repeats) <= REPEAT_MEMO_SIZE
    assert len(guard.policy._prepared) <= PREPARED_MEMO_SIZE
    assert len(guard.policy._answers) <= ANSWERS_MEMO_SIZE
    assert len(guard.policy._verdicts) <= VERDICTS_MEMO_SIZE
    assert len(guard.routes._read) <= READ_MEMO_SIZE
    assert len(guard.routes._matched) <= ROUTE_MEMO_SIZE
    # After the flood, the same requests get the same answers as before it.
    evil = guard.check("GET", *TABLE, bearer(browser), "https://evil.com", None)
    assert isinstance(evil, Denial) and evil.code == "origin_not_allowed"
    secret_table = guard.check("GET", b"/v3/maps/carto_dw/table", b"name=proj.ds.secret",
                               bearer(secret), None, None)
    assert isinstance(secret_table, Denial) and secret_table.code == "source_not_granted"


def _equivalent_requests() -> list[tuple[bytes, bytes, str | None, str | None]]:
    """Requests that differ only where a decision does not look, and where it does."""
    query = "SELECT name FROM proj.ds.stores WHERE city = @city"
    out: list[tuple[bytes, bytes, str | None, str | None]] = []
    pages = ["/", "/a/b", "/a/%2e%2e/b", "/x?y=1#z", "/a b", "/tab\\x", "/map/1"]
    sites = ["https://maps.example.com", "https://evil.example.org", "http://localhost:3000",
             "https://maps.example.com:444", "null"]
    names = ["proj.ds.stores", "proj.ds.secret", "proj.shared.x", "bad;name", "a.b.c.d.e"]
    for i in range(240):
        z, x, y = i % 7, i, i * 3
        site = sites[i % len(sites)]
        origin = None if i % 3 == 0 else site
        referer = None if i % 11 == 0 else site + pages[i % len(pages)]
        name = names[i % len(names)]
        extra = [f"v={i}", "client=x", f"queryParameters=%7B%22city%22%3A{i}%7D"][i % 3]
        if i % 4 == 0:
            path = f"/v3/sql/carto_dw/query/{i}".encode() if i % 8 == 0 else QUERY_PATH
            text = query if i % 5 else query.replace("name", "secret_col FROM proj.ds.secret, x")
            qs = f"q={text.replace(' ', '%20')}&{extra}"
        else:
            endpoint = "table" if i % 4 != 3 else f"table/{z}/{x}/{y}"
            qs = f"name={name}&{extra}"
            if i % 13 == 0:
                qs += f"&name={name}"  # a read parameter twice: ambiguous
            if i % 17 == 0:
                qs += "&x=%zz"  # a bad escape anywhere
            if i % 19 == 0:
                qs = qs.replace("name=", "n%61me=", 1)  # an escaped key that is a read one
            if i % 23 == 0:  # names with "_", "+" or an escape: not plain_names
                qs += ["&spatial_index=h3", "&a+b=1", "&access%5Ftoken=tgk_x",
                       "&n+ame=proj.ds.secret"][i // 23 % 4]
            path = f"/v3/maps/carto_dw/{endpoint}".encode()
        out.append((path, qs.encode(), origin, referer))
    return out


@pytest.mark.parametrize("referers", [
    pytest.param([], id="no-referers"),
    pytest.param(["https://*.example.com", "http://localhost:*"], id="sites"),
    pytest.param(["https://maps.example.com/a", "http://localhost:*"], id="with-a-path"),
])
async def test_remembered_answers_equal_a_fresh_guards_on_equivalent_requests(
    referers: list[str],
) -> None:
    """Every memo's answer (allow or the exact refusal) is what a guard with no memory
    answers: tiles, pages, bound values and refusals that differ only where the decision
    does not look share answers, and only those."""
    store = MemoryStore()
    body = {**BODY, "referers": referers, "grants": [
        *BODY["grants"], {"connection_name": "carto_dw", "source": "proj.shared.*"},
        {"connection_name": "carto_dw",
         "source": "SELECT name FROM proj.ds.stores WHERE city = @city"}]}
    secret = (await store.create_token(body)).token
    warm = Guard(store=store, connections=CONNECTIONS)
    requests = _equivalent_requests()
    wanted = []
    for path, qs, origin, referer in requests:
        fresh = Guard(store=store, connections=CONNECTIONS)
        wanted.append((await drive(fresh.check("GET", path, qs, bearer(secret), origin,
                                               referer)))[0])
    outcomes: set[str] = set()
    # The second pass answers from memos filled by the first; a third guard is told what
    # plain_names says, as the ASGI adapter tells it.
    told = Guard(store=store, connections=CONNECTIONS)
    passes = [(warm, False)] * 2 + [(told, True)]
    for (guard, tell), ((path, qs, origin, referer), want) in [
            (p, r) for p in passes for r in zip(requests, wanted, strict=True)]:
        plain = plain_names(qs) if tell else None
        got, _ = await drive(guard.check("GET", path, qs, bearer(secret), origin, referer,
                                         names_plain=plain))
        # A record's last_used_at moves with usage flushes: the same token is what counts.
        if isinstance(want, TokenRecord):
            assert isinstance(got, TokenRecord) and got.id == want.id, (path, qs, referer)
        else:
            assert got == want, (path, qs, origin, referer)
        outcomes.add("allowed" if isinstance(got, TokenRecord) else got.code)
    assert {"allowed", "malformed_request", "ambiguous_request"} <= outcomes
    if referers:
        assert "origin_not_allowed" in outcomes


async def _allowed_twice(guard: Guard, secret: str) -> None:
    """The same allowed request twice: the second answered by the exact-repeat memo."""
    for _ in range(2):
        step, _ = await drive(guard.check("GET", *TABLE, bearer(secret), None, None))
        assert isinstance(step, TokenRecord)
    assert guard._repeats


@pytest.mark.parametrize("change", ["revoke", "disable", "rotate", "narrow", "no_maps"])
async def test_a_remembered_repeat_follows_every_change_of_its_token(change: str) -> None:
    guard, secret = await guard_and_secret()
    store: MemoryStore = guard.store  # type: ignore[assignment]
    await _allowed_twice(guard, secret)
    token_id = (await drive(guard.check("GET", *TABLE, bearer(secret), None, None)))[0].id
    if change == "revoke":
        await store.revoke_token(token_id)
    elif change == "disable":
        await store.disable_token(token_id)
    elif change == "rotate":
        await store.rotate_token(token_id, grace_seconds=0)
    elif change == "narrow":
        await store.update_token(token_id, {"grants": [
            {"connection_name": "carto_dw", "source": "proj.ds.other"}]})
    else:
        await store.update_token(token_id, {"allowed_apis": ["sql"]})
    step, _ = await drive(guard.check("GET", *TABLE, bearer(secret), None, None))
    assert isinstance(step, Denial), change


async def test_a_remembered_repeat_expires_on_time() -> None:
    store = MemoryStore()
    soon = datetime.fromtimestamp(time.time() + 1.5, UTC).isoformat()
    issued = await store.create_token(dict(BODY, expiration_date=soon))
    guard = Guard(store=store, connections=CONNECTIONS)
    await _allowed_twice(guard, issued.token)
    await anyio.sleep(max(0.0, datetime.fromisoformat(soon).timestamp() - time.time()) + 0.1)
    step, _ = await drive(guard.check("GET", *TABLE, bearer(issued.token), None, None))
    assert isinstance(step, Denial) and step.code == "expired_token"


async def test_a_remembered_repeat_is_only_that_exact_request() -> None:
    guard, _ = await guard_and_secret()
    browser = await guard.store.create_token(  # type: ignore[attr-defined]
        {**BODY, "referers": ["https://*.example.com"]})
    for _ in range(2):
        ok = guard.check("GET", *TABLE, bearer(browser.token), "https://a.example.com", None)
        assert isinstance((await drive(ok))[0], TokenRecord)
    evil = guard.check("GET", *TABLE, bearer(browser.token), "https://evil.com", None)
    assert isinstance(evil, Denial) and evil.code == "origin_not_allowed"
    other = guard.check("GET", TABLE[0], b"name=proj.ds.secret", bearer(browser.token),
                        "https://a.example.com", None)
    assert isinstance(other, Denial) and other.code == "source_not_granted"
    two = guard.check("GET", *TABLE, bearer(browser.token), "https://a.example.com", None,
                      conflicting_authorization=True)
    assert isinstance(two, Denial)


async def test_tiles_are_allowed_but_not_remembered_as_repeats() -> None:
    guard, secret = await guard_and_secret()
    for _ in range(2):
        step, _ = await drive(guard.check("GET", b"/v3/maps/carto_dw/table/9/1/2", TABLE[1],
                                          bearer(secret), None, None))
        assert isinstance(step, TokenRecord)
    assert not guard._repeats


def test_a_refusals_response_is_remembered_per_object_and_stays_bounded() -> None:
    from token_guard import guard as module
    from token_guard.resolver import UNKNOWN

    first = module.default_deny_response(UNKNOWN)
    assert first == module._deny_response(UNKNOWN)
    first[1].append((b"x-added", b"by a caller"))  # each call gets its own headers
    again = module.default_deny_response(UNKNOWN)
    assert again == module._deny_response(UNKNOWN) and again[1] is not first[1]
    # An equal refusal made anew, or a different one, is answered for what it says.
    other = Denial(401, UNKNOWN.code, "another message", UNKNOWN.hint)
    assert module.default_deny_response(other) == module._deny_response(other)
    for i in range(module.RESPONSE_MEMO_SIZE + 10):
        made = Denial(400, "malformed_request", f"message {i}", "hint")
        assert b"message %d" % i in module.default_deny_response(made)[2]
    assert len(module._responses) <= module.RESPONSE_MEMO_SIZE
    limited = Denial(429, "rate_limited", "slow down", "", ((b"retry-after", b"7"),))
    assert (b"retry-after", b"7") in module.default_deny_response(limited)[1]
    assert all(entry[0] is not limited for entry in module._responses.values())


async def test_a_refusal_is_logged_and_counted_with_or_without_on_decision(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from token_guard.core.secret import new_secret
    from token_guard.report_only import ReportOnlyWarning

    with pytest.warns(ReportOnlyWarning):
        guard, _ = await guard_and_secret(report_only=True)
    assert guard.report_only is not None
    unknown = bearer(new_secret())
    with caplog.at_level(logging.WARNING, logger="token_guard"):
        final, _ = await drive(guard.check("GET", *TABLE, unknown, None, None))
    assert isinstance(final, Denial) and final.code == "invalid_token"
    assert "report-only: would refuse GET /v3/maps/carto_dw/table" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="token_guard"):  # nobody reads the line
        await drive(guard.check("GET", *TABLE, unknown, None, None))
    assert caplog.text == ""
    assert guard.report_only.would_refuse == {"invalid_token": 2}  # counted either way
