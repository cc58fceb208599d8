"""The TokenStore contract as a reusable test class: every store must pass it unchanged.

Use it from a store's test module::

    from tests.store_contract import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store(self, tmp_path) -> AsyncIterator[TokenStore]:
            s = MyStore(...)
            yield s
            await s.close()

        async def stored_bytes(self, store: TokenStore) -> bytes | None:
            return ...  # everything the store persisted, to prove the secret is not there

        # A store that keeps each token's body as a JSON object also overrides
        # ``stored_body`` and ``write_stored_body`` (read and write it behind its back).

Events may arrive asynchronously (PostgreSQL LISTEN/NOTIFY), so the event tests wait for
them with a generous bound instead of asserting on timing.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.tokens import BODY, body
from token_guard.core.errors import (
    InvalidTokenSpec,
    NotFound,
    StoreError,
    StoreUnavailable,
    TokenStateError,
)
from token_guard.core.records import ChangeEvent, PublishedKey, TokenRecord, UsageRow
from token_guard.core.secret import hash_secret, is_well_formed, secret_prefix
from token_guard.core.spec import TOKEN_FIELDS, parse_token_spec
from token_guard.management.keys import SigningKey
from token_guard.management.store_keys import StoreKeyRing
from token_guard.stores.base import TokenStore

EVENT_WAIT = 10.0  # seconds; a bound for slow machines, not a performance claim


def full_body() -> dict[str, Any]:
    """A body with every field of ``TOKEN_FIELDS``: BODY's value, else the field's example.

    A field added to spec.py is in it at once, so every store's round trip covers it.
    """
    return {f.name: BODY.get(f.name, f.example) for f in TOKEN_FIELDS if f.creatable}


def private_key_forms(key: SigningKey) -> list[bytes]:
    """The private half of ``key`` as any store could hold it: raw, hex, base64(url), PEM."""
    raw = key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    b64 = base64.b64encode(raw).rstrip(b"=")
    b64url = base64.urlsafe_b64encode(raw).rstrip(b"=")
    return [raw, raw.hex().encode(), b64, b64url, pem, b"PRIVATE KEY"]


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds, failing after EVENT_WAIT seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EVENT_WAIT
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


INVALID_BODIES = [
    pytest.param(body(allowed_apis=...), "allowed_apis", id="apis-missing"),
    pytest.param(body(allowed_apis=["maps", "ftp"]), "allowed_apis", id="api-unknown"),
    pytest.param(body(allowed_apis=["imports", "sql"]), "allowed_apis", id="imports-combined"),
    pytest.param(
        body(grants=[{"connection_name": "c", "source": "proj.*"}]),
        "grants[0].source",
        id="wildcard-one-segment",
    ),
    pytest.param(
        body(grants=[{"connection_name": "", "source": "a.b.c"}]),
        "grants[0].connection_name",
        id="connection-empty",
    ),
    pytest.param(body(referers="https://example.com"), "referers", id="referers-not-list"),
    pytest.param(body(expiration_date="2001-01-01T00:00:00Z"), "expiration_date", id="expired"),
    pytest.param(body(colour="blue"), "colour", id="unknown-field"),
    pytest.param(body(name=42), "name", id="name-not-string"),
]


@pytest.mark.anyio
class StoreContract:
    """Behaviour every ``TokenStore`` shares. Subclasses provide the ``store`` fixture."""


    async def stored_bytes(self, store: TokenStore) -> bytes | None:
        """Everything the store persisted, or None when it cannot be read raw."""
        return None

    # -- create / get -------------------------------------------------------------------
    async def test_store_opens_lazily_and_open_is_idempotent(self, store: TokenStore) -> None:
        issued = await store.create_token(body())
        await store.open()
        await store.open()
        assert await store.get_token(issued.id) == issued.record

    async def test_create_returns_secret_once_and_record_without_it(
        self, store: TokenStore
    ) -> None:
        issued = await store.create_token(body())
        assert issued.record.secret is not None
        assert issued.record.secret.prefix == secret_prefix(issued.token)
        assert issued.record.as_json()["secret_prefix"] == secret_prefix(issued.token)
        assert is_well_formed(issued.token)
        assert issued.id == issued.record.id and issued.id.startswith("tok_")
        assert issued.token not in repr(issued)
        assert issued.token not in repr(issued.record.as_json())
        assert issued.record.name == "storefront map"
        assert issued.record.allowed_apis == ("maps", "sql")
        assert issued.record.expiration_date == datetime(2099, 1, 1, tzinfo=UTC)
        assert issued.record.revoked_at is None

    async def test_lookup_by_secret_hash_finds_the_token(self, store: TokenStore) -> None:
        issued = await store.create_token(body())
        found = await store.get_by_secret_hash(hash_secret(issued.token))
        assert found == issued.record
        assert await store.get_by_secret_hash(hash_secret(issued.token + "x")) is None
        # The hash is the key: the secret itself finds nothing.
        assert await store.get_by_secret_hash(issued.token) is None

    async def test_get_unknown_token_is_none(self, store: TokenStore) -> None:
        assert await store.get_token("tok_doesnotexist") is None

    async def test_records_round_trip_exactly(self, store: TokenStore) -> None:
        issued = await store.create_token(body(expiration_date=...))
        got = await store.get_token(issued.id)
        assert got == issued.record
        assert got is not None and got.expiration_date is None
        assert [g.kind for g in got.grants] == ["table", "wildcard", "query"]

    async def test_every_token_field_round_trips(self, store: TokenStore) -> None:
        sent = full_body()
        expected = parse_token_spec(sent)
        empty = [k for k, v in expected.as_json().items() if v in (None, "", [], {})]
        assert not empty, f"give {empty} a value in BODY or as the field's example"
        issued = await store.create_token(sent)
        listed = list(await store.list_tokens())
        rewritten = await store.update_token(
            issued.id, {f.name: sent[f.name] for f in TOKEN_FIELDS if f.patchable}
        )
        reads = [
            issued.record,
            await store.get_token(issued.id),
            await store.get_by_secret_hash(hash_secret(issued.token)),
            *listed,
            rewritten,
            await store.get_token(issued.id),
        ]
        for record in reads:
            assert record is not None and record.spec == expected
            assert record.spec.as_json() == expected.as_json()

    @pytest.mark.parametrize(("bad", "field"), INVALID_BODIES)
    async def test_invalid_body_raises_naming_the_field(
        self, store: TokenStore, bad: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(InvalidTokenSpec) as info:
            await store.create_token(bad)
        assert info.value.field == field
        assert field in str(info.value)
        assert list(await store.list_tokens()) == []

    async def test_the_secret_is_never_stored(self, store: TokenStore) -> None:
        issued = await store.create_token(body())
        await store.update_token(issued.id, {"name": "renamed"})
        await store.revoke_token(issued.id)
        raw = await self.stored_bytes(store)
        if raw is None:
            pytest.skip("this store cannot show its raw bytes")
        assert issued.token.encode() not in raw
        assert issued.token[4:].encode() not in raw  # not even without the prefix
        assert hash_secret(issued.token).encode() in raw  # the hash is what is kept

    # -- list -------------------------------------------------------------------------------
    async def test_list_pages_through_every_token_in_id_order(self, store: TokenStore) -> None:
        ids = sorted([(await store.create_token(body(name=f"t{i}"))).id for i in range(7)])
        pages: list[list[str]] = []
        after: str | None = None
        while True:
            page = [r.id for r in await store.list_tokens(limit=3, after=after)]
            if not page:
                break
            pages.append(page)
            after = page[-1]
        assert [len(p) for p in pages] == [3, 3, 1]
        assert [i for p in pages for i in p] == ids

    @pytest.mark.parametrize("limit", [0, -1, 1001])
    async def test_list_refuses_a_silly_limit(self, store: TokenStore, limit: int) -> None:
        with pytest.raises(ValueError, match="limit"):
            await store.list_tokens(limit=limit)

    # -- update / revoke ------------------------------------------------------------------
    async def test_update_changes_only_the_given_fields(self, store: TokenStore) -> None:
        issued = await store.create_token(body())
        updated = await store.update_token(
            issued.id, {"name": "new", "referers": [], "allowed_apis": ["lds"]}, actor="cli:ana"
        )
        assert (updated.name, updated.referers, updated.allowed_apis) == ("new", (), ("lds",))
        assert updated.grants == issued.record.grants
        assert updated.expiration_date == issued.record.expiration_date
        assert await store.get_token(issued.id) == updated
        assert await store.get_by_secret_hash(hash_secret(issued.token)) == updated

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            pytest.param({"expiration_date": "2100-01-01T00:00:00Z"}, "expiration_date",
                         id="expiry-fixed"),
            pytest.param({"allowed_apis": []}, "allowed_apis", id="apis-empty"),
            pytest.param({"grants": [{"source": "a.b"}]}, "grants[0].connection_name",
                         id="grant-no-connection"),
            pytest.param({"secret": "x"}, "secret", id="unknown-field"),
        ],
    )
    async def test_invalid_update_names_the_field_and_changes_nothing(
        self, store: TokenStore, changes: dict[str, Any], field: str
    ) -> None:
        issued = await store.create_token(body())
        with pytest.raises(InvalidTokenSpec) as info:
            await store.update_token(issued.id, changes)
        assert info.value.field == field
        assert await store.get_token(issued.id) == issued.record

    async def test_update_or_revoke_unknown_id_raises_not_found(self, store: TokenStore) -> None:
        with pytest.raises(NotFound):
            await store.update_token("tok_nope", {"name": "x"})
        with pytest.raises(NotFound):
            await store.revoke_token("tok_nope")

    async def test_revoke_is_idempotent_and_keeps_the_first_time(
        self, store: TokenStore
    ) -> None:
        issued = await store.create_token(body())
        first = await store.revoke_token(issued.id)
        again = await store.revoke_token(issued.id)
        assert first.revoked_at is not None
        assert again.revoked_at == first.revoked_at
        found = await store.get_by_secret_hash(hash_secret(issued.token))
        assert found is not None and found.revoked_at == first.revoked_at
        assert found.state(datetime.now(UTC)) == "revoked"

    # -- rotation ---------------------------------------------------------------------------
    async def _by_secret(self, store: TokenStore, secret: str) -> TokenRecord:
        found = await store.get_by_secret_hash(hash_secret(secret))
        assert found is not None
        return found

    async def test_rotate_issues_a_new_secret_and_the_old_one_works_through_the_grace(
        self, store: TokenStore
    ) -> None:
        issued = await store.create_token(body())
        before = datetime.now(UTC)
        rotated = await store.rotate_token(issued.id, grace_seconds=3600)
        after = datetime.now(UTC)
        assert rotated.id == issued.id and rotated.token != issued.token
        assert is_well_formed(rotated.token)
        assert rotated.record.spec == issued.record.spec
        assert rotated.record.secret is not None
        assert rotated.record.secret.prefix == secret_prefix(rotated.token)
        assert rotated.token not in repr(rotated)
        new = await self._by_secret(store, rotated.token)
        assert new.state(after) == "active" and new.id == issued.id
        old = await self._by_secret(store, issued.token)
        assert old.id == issued.id and old.state(after) == "active"
        assert old.secret is not None and old.secret.expires_at is not None
        assert old.secret.prefix == secret_prefix(issued.token)
        # The database clock may differ from ours by a little; an hour it is.
        assert before + timedelta(seconds=3590) < old.secret.expires_at
        assert old.secret.expires_at < after + timedelta(seconds=3610)
        assert old.state(after + timedelta(seconds=3610)) == "rotated"
        # Lists show the current secret's prefix.
        shown = await store.get_token(issued.id)
        assert shown is not None and shown.secret == rotated.record.secret
        listed = [r for r in await store.list_tokens() if r.id == issued.id]
        assert listed[0].secret is not None
        assert listed[0].secret.prefix == secret_prefix(rotated.token)

    async def test_rotate_with_no_grace_ends_the_old_secret_at_once(
        self, store: TokenStore
    ) -> None:
        issued = await store.create_token(body())
        rotated = await store.rotate_token(issued.id, grace_seconds=0)
        await asyncio.sleep(0.01)
        now = datetime.now(UTC) + timedelta(seconds=1)  # a database clock a little ahead
        old = await self._by_secret(store, issued.token)
        assert old.state(now) == "rotated"
        assert old.secret is not None and old.secret.rotated_at is not None
        assert (await self._by_secret(store, rotated.token)).state(now) == "active"

    async def test_the_default_grace_is_a_day(self, store: TokenStore) -> None:
        issued = await store.create_token(body())
        await store.rotate_token(issued.id)
        old = await self._by_secret(store, issued.token)
        now = datetime.now(UTC)
        assert old.state(now + timedelta(hours=23)) == "active"
        assert old.state(now + timedelta(hours=24, minutes=1)) == "rotated"

    async def test_rotating_twice_keeps_each_old_secret_until_its_own_end(
        self, store: TokenStore
    ) -> None:
        issued = await store.create_token(body())
        second = await store.rotate_token(issued.id, grace_seconds=7200)
        third = await store.rotate_token(issued.id, grace_seconds=60)
        now = datetime.now(UTC)
        first_old = await self._by_secret(store, issued.token)
        second_old = await self._by_secret(store, second.token)
        assert first_old.state(now + timedelta(seconds=3600)) == "active"
        assert second_old.state(now + timedelta(seconds=3600)) == "rotated"
        assert (await self._by_secret(store, third.token)).secret_expired(
            now + timedelta(days=365)) is False

    async def test_ending_the_grace_early_refuses_every_replaced_secret_now(
        self, store: TokenStore
    ) -> None:
        issued = await store.create_token(body())
        second = await store.rotate_token(issued.id, grace_seconds=3600)
        third = await store.rotate_token(issued.id, grace_seconds=3600)
        record = await store.end_rotation_grace(issued.id)
        assert record.id == issued.id
        await asyncio.sleep(0.01)
        now = datetime.now(UTC) + timedelta(seconds=1)
        assert (await self._by_secret(store, issued.token)).state(now) == "rotated"
        assert (await self._by_secret(store, second.token)).state(now) == "rotated"
        assert (await self._by_secret(store, third.token)).state(now) == "active"
        await store.end_rotation_grace(issued.id)  # idempotent
        entries = [e for e in await store.list_audit() if e.action == "token.rotate.expire"]
        assert [e.detail["secrets_ended"] for e in entries] == [0, 2]

    @pytest.mark.parametrize("grace", [-1, 30 * 86_400 + 1, 1.5, True, "60"])
    async def test_rotate_refuses_a_grace_that_is_not_0_to_30_days(
        self, store: TokenStore, grace: Any
    ) -> None:
        issued = await store.create_token(body())
        with pytest.raises(ValueError, match="grace_seconds"):
            await store.rotate_token(issued.id, grace_seconds=grace)
        assert (await self._by_secret(store, issued.token)).secret == issued.record.secret

    async def test_a_revoked_token_is_never_rotated_disabled_or_enabled(
        self, store: TokenStore
    ) -> None:
        issued = await store.create_token(body())
        await store.revoke_token(issued.id)
        with pytest.raises(TokenStateError, match="revocation is final"):
            await store.rotate_token(issued.id)
        with pytest.raises(TokenStateError, match="revocation is final"):
            await store.enable_token(issued.id)
        with pytest.raises(TokenStateError, match="revocation is final"):
            await store.disable_token(issued.id)
        found = await self._by_secret(store, issued.token)
        assert found.state(datetime.now(UTC)) == "revoked" and found.disabled_at is None

    async def test_lifecycle_changes_of_an_unknown_id_raise_not_found(
        self, store: TokenStore
    ) -> None:
        for change in (store.rotate_token, store.end_rotation_grace, store.disable_token,
                       store.enable_token):
            with pytest.raises(NotFound):
                await change("tok_nope")

    # -- disable / enable ---------------------------------------------------------------------
    async def test_disable_and_enable_are_reversible_and_idempotent(
        self, store: TokenStore
    ) -> None:
        issued = await store.create_token(body())
        disabled = await store.disable_token(issued.id, actor="cli:ana")
        assert disabled.disabled_at is not None
        now = datetime.now(UTC)
        assert disabled.state(now) == "disabled"
        again = await store.disable_token(issued.id)
        assert again.disabled_at == disabled.disabled_at  # the first time is kept
        found = await self._by_secret(store, issued.token)
        assert found.disabled_at == disabled.disabled_at and found.state(now) == "disabled"
        enabled = await store.enable_token(issued.id, actor="client-1")
        assert enabled.disabled_at is None and enabled.state(now) == "active"
        assert (await store.enable_token(issued.id)).disabled_at is None
        assert (await self._by_secret(store, issued.token)).state(now) == "active"
        shown = await store.get_token(issued.id)
        assert shown is not None and shown.spec == issued.record.spec
        actions = [(e.action, e.actor, e.detail) for e in await store.list_audit()][:4]
        assert actions == [
            ("token.enable", "api", {"already_enabled": True}),
            ("token.enable", "client-1", {"already_enabled": False}),
            ("token.disable", "api", {"already_disabled": True}),
            ("token.disable", "cli:ana", {"already_disabled": False}),
        ]

    async def test_lifecycle_changes_are_audited_and_announced(self, store: TokenStore) -> None:
        events: list[ChangeEvent] = []
        store.subscribe(events.append)
        await store.open()
        issued = await store.create_token(body())
        rotated = await store.rotate_token(issued.id, grace_seconds=60, actor="client-9")
        await store.end_rotation_grace(issued.id)
        await store.disable_token(issued.id)
        await store.enable_token(issued.id)
        expected = [ChangeEvent("created", issued.id), *[ChangeEvent("updated", issued.id)] * 4]
        await wait_for(lambda: events[:5] == expected, f"events {expected}")
        entries = list(await store.list_audit())
        assert [e.action for e in entries[:4]] == [
            "token.enable", "token.disable", "token.rotate.expire", "token.rotate",
        ]
        rotation = entries[3]
        assert rotation.actor == "client-9" and rotation.detail["grace_seconds"] == 60
        assert rotation.detail["prefix"] == secret_prefix(rotated.token)
        for secret in (issued.token, rotated.token):
            assert secret not in repr(entries)
            assert hash_secret(secret) not in repr(entries)

    # -- change events and audit ------------------------------------------------------------
    async def test_every_change_notifies_subscribers(self, store: TokenStore) -> None:
        events: list[ChangeEvent] = []
        unsubscribe = store.subscribe(events.append)
        await store.open()
        issued = await store.create_token(body())
        await store.update_token(issued.id, {"name": "b"})
        await store.revoke_token(issued.id)
        expected = [
            ChangeEvent("created", issued.id),
            ChangeEvent("updated", issued.id),
            ChangeEvent("revoked", issued.id),
        ]
        await wait_for(lambda: events[:3] == expected, f"events {expected}")
        unsubscribe()
        unsubscribe()  # twice is harmless
        await store.revoke_token(issued.id)
        await asyncio.sleep(0.05)
        assert events == expected

    async def test_a_failing_listener_does_not_stop_the_others(self, store: TokenStore) -> None:
        def broken(event: ChangeEvent) -> None:
            raise RuntimeError("listener bug")

        seen: list[ChangeEvent] = []
        store.subscribe(broken)
        store.subscribe(seen.append)
        await store.open()
        issued = await store.create_token(body())
        await wait_for(lambda: ChangeEvent("created", issued.id) in seen, "the created event")

    async def test_audit_records_who_did_what_without_secrets(self, store: TokenStore) -> None:
        issued = await store.create_token(body(), actor="cli:ana")
        await store.update_token(issued.id, {"name": "b"}, actor="client-1")
        await store.revoke_token(issued.id, actor="client-2")
        entries = list(await store.list_audit())
        assert [(e.actor, e.token_id) for e in entries] == [
            ("client-2", issued.id),
            ("client-1", issued.id),
            ("cli:ana", issued.id),
        ]
        for entry, verb in zip(entries, ["revoke", "update", "create"], strict=True):
            assert verb in entry.action
        ids = [e.id for e in entries]
        assert ids == sorted(ids, reverse=True)
        assert issued.token not in repr(entries)
        assert hash_secret(issued.token) not in repr(entries)

    async def test_audit_of_one_token_pages_newest_first(self, store: TokenStore) -> None:
        a = await store.create_token(body(name="a"))
        b = await store.create_token(body(name="b"))
        await store.update_token(a.id, {"name": "a2"})
        await store.disable_token(b.id)
        await store.revoke_token(a.id)
        mine = list(await store.list_audit(token_id=a.id))
        assert [e.action for e in mine] == ["token.revoke", "token.update", "token.create"]
        page = list(await store.list_audit(token_id=a.id, limit=1, before=mine[0].id))
        assert [e.action for e in page] == ["token.update"]
        assert [e.action for e in await store.list_audit(token_id=b.id)] == [
            "token.disable", "token.create"]
        assert list(await store.list_audit(token_id="tok_nope")) == []

    async def test_audit_pages_newest_first(self, store: TokenStore) -> None:
        for i in range(5):
            await store.add_audit("cli:bo", "note", None, {"n": i})
        first = list(await store.list_audit(limit=2))
        rest = list(await store.list_audit(limit=10, before=first[-1].id))
        assert [e.detail["n"] for e in first + rest] == [4, 3, 2, 1, 0]
        assert all(e.at.tzinfo is not None for e in first + rest)

    # -- usage ------------------------------------------------------------------------------
    async def test_usage_is_recorded_in_batches_and_never_goes_back(
        self, store: TokenStore
    ) -> None:
        a = await store.create_token(body(name="a"))
        b = await store.create_token(body(name="b"))
        t1 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
        t2 = t1 + timedelta(minutes=5)
        await store.record_usage({a.id: t2, b.id: t1, "tok_unknown": t1})
        await store.record_usage({a.id: t1})  # older: ignored
        await store.record_usage({})
        got_a, got_b = await store.get_token(a.id), await store.get_token(b.id)
        assert got_a is not None and got_a.last_used_at == t2
        assert got_b is not None and got_b.last_used_at == t1

    # -- public signing keys ----------------------------------------------------------------
    async def test_signing_keys_publish_list_retire(self, store: TokenStore) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        first = PublishedKey("kid-a", "PEM A", now - timedelta(seconds=2),
                             now + timedelta(days=2), 3600)
        second = PublishedKey("kid-b", "PEM B", now - timedelta(seconds=1),
                              now + timedelta(minutes=10), 3600)
        await store.publish_signing_key(first)
        await store.publish_signing_key(second)
        await store.publish_signing_key(replace(first, public_pem="other"))  # kid kept as is
        assert list(await store.list_signing_keys()) == [first, second]
        retired = await store.retire_signing_keys(now)
        # verify_until comes forward to retired_at + token_lifetime, never goes back.
        assert list(retired) == [
            replace(first, retired_at=now, verify_until=now + timedelta(seconds=3600)),
            replace(second, retired_at=now),
        ]
        assert list(await store.list_signing_keys()) == list(retired)
        assert list(await store.retire_signing_keys(now)) == []

    async def test_publishing_prunes_keys_that_verify_nothing_any_more(
        self, store: TokenStore
    ) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        dead = PublishedKey("kid-dead", "PEM", now - timedelta(days=3), now - timedelta(days=1), 60)
        live = PublishedKey("kid-live", "PEM", now, now + timedelta(days=1), 60)
        await store.publish_signing_key(dead)
        await store.publish_signing_key(live)
        assert [k.kid for k in await store.list_signing_keys()] == ["kid-live"]

    async def test_no_private_key_material_is_stored(self, store: TokenStore) -> None:
        ring = StoreKeyRing(store)
        key = await ring.signing_key()
        await store.retire_signing_keys(datetime.now(UTC))
        assert (await ring.signing_key()).kid != key.kid  # a fresh key after the rotation
        raw = await self.stored_bytes(store)
        if raw is None:
            pytest.skip("this store cannot show its raw bytes")
        assert key.kid.encode() in raw  # the public key is there...
        for private in private_key_forms(key):
            assert private not in raw  # ...its private half in no encoding

    async def test_request_counts_add_up_per_hour_api_and_code_and_are_pruned(
        self, store: TokenStore
    ) -> None:
        a = await store.create_token(body(name="a"))
        h1 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
        h2 = h1 + timedelta(hours=1)
        rows = [UsageRow(a.id, h1, "maps", "", 5), UsageRow(a.id, h1, "maps", "rate_limited", 2),
                UsageRow(a.id, h2, "sql", "", 1), UsageRow("tok_other", h1, "maps", "", 9)]
        await store.add_usage(rows)
        await store.add_usage([UsageRow(a.id, h1, "maps", "", 3)])
        await store.add_usage([])
        got = await store.get_usage(a.id, h1, h2 + timedelta(hours=1))
        assert [(r.hour, r.api, r.code, r.count) for r in got] == [
            (h1, "maps", "", 8), (h1, "maps", "rate_limited", 2), (h2, "sql", "", 1)]
        assert all(r.hour.tzinfo is not None and r.token_id == a.id for r in got)
        assert [r.hour for r in await store.get_usage(a.id, h2, h2 + timedelta(hours=1))] == [h2]
        assert await store.prune_usage(h2) == 3
        assert [r.hour for r in await store.get_usage(a.id, h1, h2 + timedelta(days=1))] == [h2]

    # -- OAuth clients ----------------------------------------------------------------------
    async def test_clients_create_get_list_revoke(self, store: TokenStore) -> None:
        client = await store.create_client("m2m-1", "h" * 64, "deploy bot", ["read:tokens"])
        await store.create_client("m2m-0", "g" * 64, "reader", ["read:tokens", "write:tokens"])
        got = await store.get_client("m2m-1")
        assert got == (client, "h" * 64)
        assert await store.get_client("nobody") is None
        assert [c.client_id for c in await store.list_clients()] == ["m2m-0", "m2m-1"]
        revoked = await store.revoke_client("m2m-1")
        assert revoked.revoked_at is not None
        assert (await store.revoke_client("m2m-1")).revoked_at == revoked.revoked_at
        with pytest.raises(NotFound):
            await store.revoke_client("nobody")

    async def test_duplicate_client_id_is_refused(self, store: TokenStore) -> None:
        await store.create_client("m2m-1", "h" * 64, "bot", [])
        with pytest.raises(StoreError) as info:
            await store.create_client("m2m-1", "i" * 64, "bot 2", [])
        assert not isinstance(info.value, StoreUnavailable)
        assert re.search("m2m-1", str(info.value))

    # -- lifecycle --------------------------------------------------------------------------
    async def test_a_closed_store_is_unavailable_until_reopened(self, store: TokenStore) -> None:
        issued = await store.create_token(body())
        await store.close()
        with pytest.raises(StoreUnavailable):
            await store.get_by_secret_hash(hash_secret(issued.token))
        await store.open()
        assert await store.get_token(issued.id) == issued.record


class StoredBodyContract(StoreContract):
    """The contract of a store that keeps each token's validated body as JSON (the SQL
    stores): subclasses say how to read and overwrite that body behind the store's back."""

    async def stored_body(self, store: TokenStore, token_id: str) -> dict[str, Any]:
        """The token's body as stored (a JSON object)."""
        raise NotImplementedError

    async def write_stored_body(
        self, store: TokenStore, token_id: str, stored: dict[str, Any]
    ) -> None:
        """Overwrite the token's stored body behind the store's back (as a newer version)."""
        raise NotImplementedError

    async def test_a_body_key_from_a_newer_version_is_ignored_on_read_and_kept_on_update(
        self, store: TokenStore
    ) -> None:
        # Ours: an older instance running beside a newer one during an upgrade reads the
        # fields it knows (it neither refuses the token nor crashes) and, rewriting the body,
        # keeps the field it does not know. See stores/rows.py for what that means for the
        # design of new fields.
        issued = await store.create_token(body())
        stored = await self.stored_body(store, issued.id)
        future = {"rate": [{"requests": 5, "per": "second"}]}
        await self.write_stored_body(store, issued.id, {**stored, "from_the_future": future})
        assert await store.get_token(issued.id) == issued.record
        assert await store.get_by_secret_hash(hash_secret(issued.token)) == issued.record
        assert [r.id for r in await store.list_tokens()] == [issued.id]
        updated = await store.update_token(issued.id, {"name": "renamed"})
        assert updated.name == "renamed" and updated.grants == issued.record.grants
        after = await self.stored_body(store, issued.id)
        assert after["from_the_future"] == future and after["name"] == "renamed"
