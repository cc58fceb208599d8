"""Who may call the Tokens API: verifying OAuth access tokens, ours and external issuers'.

Security choices:

* **Verification** accepts only asymmetric algorithms and chooses the key from our own key
  ring (by ``kid``) or from a configured external issuer's JWKS (by ``iss``, then ``kid``).
  ``alg: none``, HMAC (the HS/RS confusion attack), an unknown ``kid``, a wrong ``iss`` or
  ``aud``, a missing or past ``exp`` are all refused. An API access token (``tgk_...``) is
  never accepted. A token from one of our own clients also stops working once the client is
  revoked (the store is asked on every management call; management is not a hot path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import jwt

from token_guard.core.decision import INSUFFICIENT_SCOPE, INVALID_TOKEN, MISSING_TOKEN, error_body
from token_guard.core.errors import ConfigurationError, TokenGuardError
from token_guard.management.grant import ACCESS_TOKEN_TYPE
from token_guard.management.keys import SIGNING_ALGORITHM, SigningKeys
from token_guard.stores.base import TokenStore

# Asymmetric only: accepting an HMAC algorithm would let anyone holding the *public* key
# (published in the JWKS) forge tokens.
EXTERNAL_ALGORITHMS: tuple[str, ...] = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
)
API_TOKEN_PREFIX = "tgk_"


class AccessDenied(TokenGuardError):
    """A management call without a usable OAuth access token (401) or scope (403).

    ``code`` is ``missing_token``, ``invalid_token`` or ``insufficient_scope``;
    ``scope`` names the scope that was needed (for 403).
    """

    def __init__(
        self, message: str, hint: str, *, status: int = 401, code: str = INVALID_TOKEN,
        scope: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status
        self.code = code
        self.scope = scope

    def as_json(self) -> dict[str, str]:
        """The body ``{"error", "hint", "code"}``."""
        return error_body(self.code, self.message, self.hint)

    def www_authenticate(self, realm: str = "token-guard") -> str:
        """The RFC 6750 ``WWW-Authenticate: Bearer`` challenge for this refusal."""
        if self.code == MISSING_TOKEN:
            return f'Bearer realm="{realm}"'
        # The message may quote attacker-chosen claims (iss, kid): keep the header to
        # printable ASCII without quotes, so it can be neither broken nor unencodable.
        desc = "".join(
            ch if " " <= ch <= "~" and ch not in '"\\' else "?" for ch in self.message
        )
        out = f'Bearer realm="{realm}", error="{self.code}", error_description="{desc}"'
        if self.scope:
            out += f', scope="{self.scope}"'
        return out


@dataclass(frozen=True, slots=True)
class ExternalIssuer:
    """Another authorization server whose JWTs the Tokens API accepts.

    ``scope`` comes from the ``scope`` claim (space-separated) or ``scp`` (a list); the
    actor recorded in the audit is ``client_id``, else ``azp``, else ``sub``.
    """

    jwks_url: str
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = EXTERNAL_ALGORITHMS
    jwks_cache_seconds: float = 300.0

    def __post_init__(self) -> None:
        bad = [a for a in self.algorithms if a not in EXTERNAL_ALGORITHMS]
        if bad or not self.algorithms:
            raise ConfigurationError(
                f"external issuer {self.issuer!r}: algorithms {bad or '[]'} are not allowed; "
                f"choose among {', '.join(EXTERNAL_ALGORITHMS)}"
            )


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """A verified management caller: who, which scopes, from which issuer."""

    client_id: str
    scopes: frozenset[str]
    issuer: str
    expires_at: datetime
    external: bool = False

    def require(self, scope: str) -> None:
        """Raise a 403 ``AccessDenied`` unless the token carries ``scope``."""
        if scope not in self.scopes:
            raise AccessDenied(
                f"this access token lacks the {scope} scope",
                f"request a token with scope={scope} from a client allowed that scope",
                status=403, code=INSUFFICIENT_SCOPE, scope=scope,
            )


_REISSUE_HINT = "get a new access token from POST /oauth/token"


def _invalid(message: str, hint: str = _REISSUE_HINT) -> AccessDenied:
    return AccessDenied(message, hint)


class AccessTokenVerifier:
    """Verify Tokens API bearer tokens: our own JWTs and configured external issuers'."""

    def __init__(
        self, store: TokenStore, keys: SigningKeys, *, issuer: str, audience: str,
        external_issuers: Sequence[ExternalIssuer] = (), leeway: float = 30.0,
    ) -> None:
        self._store = store
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._external: dict[str, tuple[ExternalIssuer, jwt.PyJWKClient]] = {}
        for ext in external_issuers:
            if ext.issuer == issuer or ext.issuer in self._external:
                raise ConfigurationError(
                    f"issuer {ext.issuer!r} is configured twice; give each issuer once"
                )
            client = jwt.PyJWKClient(ext.jwks_url, lifespan=ext.jwks_cache_seconds, timeout=5)
            self._external[ext.issuer] = (ext, client)

    async def authorize(self, authorization: Sequence[str], scope: str) -> AccessClaims:
        """The caller of ``Authorization`` (the header's values) holding ``scope``, or raise."""
        if not authorization:
            raise AccessDenied(
                "no access token: the Tokens API needs an OAuth access token",
                "send Authorization: Bearer <access token from POST /oauth/token>",
                code=MISSING_TOKEN,
            )
        if len(authorization) > 1:
            raise AccessDenied(
                "several Authorization headers were sent", "send exactly one Bearer token"
            )
        kind, _, token = authorization[0].strip().partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise AccessDenied(
                "the Authorization header is not a Bearer token",
                "send Authorization: Bearer <access token from POST /oauth/token>",
            )
        claims = await self.verify(token)
        claims.require(scope)
        return claims

    async def verify(self, token: str) -> AccessClaims:
        """The verified caller, or raise ``AccessDenied`` (401) saying what was wrong."""
        if token.startswith(API_TOKEN_PREFIX):
            raise AccessDenied(
                "an API access token cannot call the Tokens API",
                "use an OAuth access token: POST /oauth/token with "
                "grant_type=client_credentials and your client id and secret",
            )
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _invalid("the bearer token is not a JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in EXTERNAL_ALGORITHMS:
            raise _invalid(
                f"JWT algorithm {alg!r} is not accepted; tokens must be signed with an "
                "asymmetric key"
            )
        iss = unverified.get("iss")
        if iss == self._issuer:
            return await self._verify_own(token, header)
        if isinstance(iss, str) and iss in self._external:
            return await self._verify_external(token, *self._external[iss])
        raise _invalid(f"JWT issuer {iss!r} is not trusted here")

    async def _verify_own(self, token: str, header: Mapping[str, Any]) -> AccessClaims:
        self._keys.refresh()
        now = datetime.now(UTC)
        kid = header.get("kid")
        key = self._keys.verifying(now).get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _invalid(f"JWT key id {kid!r} is unknown (the key may have been retired)")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise _invalid(f"JWT type must be {ACCESS_TOKEN_TYPE!r}")
        claims = self._decode(
            token, key.public_key, [SIGNING_ALGORITHM], self._issuer, self._audience
        )
        client_id = claims.get("client_id")
        if not isinstance(client_id, str):
            raise _invalid("JWT has no client_id")
        found = await self._store.get_client(client_id)
        if found is None or found[0].revoked_at is not None:
            raise _invalid(
                "the OAuth client of this access token was revoked",
                "ask an administrator for an active client ('token-guard clients create')",
            )
        return AccessClaims(
            client_id, _scopes_of(claims), self._issuer,
            datetime.fromtimestamp(claims["exp"], UTC),
        )

    async def _verify_external(
        self, token: str, ext: ExternalIssuer, client: jwt.PyJWKClient
    ) -> AccessClaims:
        try:
            # PyJWKClient fetches over blocking urllib; keep it off the event loop.
            signing_key = await anyio.to_thread.run_sync(client.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError:
            raise _invalid(
                f"the JWKS of issuer {ext.issuer!r} cannot be fetched now",
                "retry later; the issuer's key set is unreachable",
            ) from None
        except jwt.PyJWTError:
            raise _invalid(f"JWT key id is unknown to issuer {ext.issuer!r}") from None
        claims = self._decode(
            token, signing_key.key, list(ext.algorithms), ext.issuer, ext.audience
        )
        actor = claims.get("client_id") or claims.get("azp") or claims.get("sub")
        if not isinstance(actor, str) or not actor:
            raise _invalid("JWT names no client (client_id, azp or sub)")
        return AccessClaims(
            actor, _scopes_of(claims), ext.issuer,
            datetime.fromtimestamp(claims["exp"], UTC), external=True,
        )

    def _decode(
        self, token: str, key: Any, algorithms: list[str], issuer: str, audience: str
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=algorithms, audience=audience, issuer=issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("the access token has expired") from None
        except jwt.InvalidAudienceError:
            raise _invalid(
                f"the access token is not meant for this API (audience {audience!r})"
            ) from None
        except jwt.InvalidIssuerError:
            raise _invalid(f"the access token's issuer is not {issuer!r}") from None
        except jwt.InvalidAlgorithmError:
            raise _invalid(
                f"JWT algorithm is not accepted; expected {', '.join(algorithms)}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"the access token lacks the {exc.claim!r} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            # TypeError/ValueError: a key of the wrong type for the header's algorithm.
            raise _invalid("the access token's signature does not verify") from None
        return claims


def _scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    return frozenset()

