"""Bearer-token authentication: static API tokens (local use) and OIDC JWTs (PyJWT + PyJWKClient).

Roles: ``reader`` (queries), ``ingester`` (queries + upload mutations), ``admin`` (everything).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsearch.contracts.settings import ApiSettings

log = logging.getLogger("medsearch_api.auth")

ROLES = ("reader", "ingester", "admin")
# What each role may do (a role includes the abilities of the roles before it).
_RANK = {"reader": 1, "ingester": 2, "admin": 3}


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    method: str  # "token" | "oidc" | "anonymous"

    def has(self, role: str) -> bool:
        need = _RANK[role]
        return any(_RANK.get(r, 0) >= need for r in self.roles)


class AuthError(Exception):
    """Authentication failed (HTTP 401, code UNAUTHENTICATED). The message never echoes the token."""


class AuthConfigError(ValueError):
    """The tokens file or the OIDC settings are invalid; names the file/line or the setting."""


@dataclass(frozen=True)
class StaticToken:
    token: str
    role: str
    name: str


def parse_tokens(text: str, source: str = "tokens file") -> list[StaticToken]:
    """Lines ``TOKEN ROLE [NAME]``; blank lines and ``#`` comments ignored."""
    out: list[StaticToken] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise AuthConfigError(f"{source}:{n}: expected 'TOKEN ROLE [NAME]'")
        token, role = parts[0], parts[1]
        if role not in ROLES:
            raise AuthConfigError(f"{source}:{n}: role {role!r} is not one of {', '.join(ROLES)}")
        if len(token) < 16:
            raise AuthConfigError(f"{source}:{n}: token is shorter than 16 characters")
        out.append(StaticToken(token, role, parts[2].strip() if len(parts) > 2 else f"token-{n}"))
    return out


def load_tokens(path: Path) -> list[StaticToken]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise AuthConfigError(f"MEDSEARCH_API_TOKENS_FILE {path}: cannot read: {err.strerror}") from err
    return parse_tokens(text, str(path))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Verifies ``Authorization: Bearer ...``. With neither tokens nor OIDC configured, requests are
    anonymous admins, which :func:`medsearch_api.app.create_app` allows only on a loopback address."""

    def __init__(self, *, tokens: Iterable[StaticToken] = (), oidc_issuer: str | None = None,
                 oidc_audience: str | None = None, oidc_jwks_url: str | None = None,
                 roles_claim: str = "roles", jwks_client: Any = None, jwks_refresh_seconds: float = 300) -> None:
        self._tokens = list(tokens)
        self.jwks_refresh_seconds = jwks_refresh_seconds
        self.issuer = oidc_issuer
        self.audience = oidc_audience
        self.roles_claim = roles_claim
        self._jwks = jwks_client
        self._jwks_url = oidc_jwks_url
        if oidc_issuer and not oidc_audience:
            raise AuthConfigError("MEDSEARCH_OIDC_AUDIENCE must be set when MEDSEARCH_OIDC_ISSUER is")

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Authenticator:
        tokens = load_tokens(settings.api_tokens_file) if settings.api_tokens_file else []
        return cls(tokens=tokens, oidc_issuer=settings.oidc_issuer, oidc_audience=settings.oidc_audience,
                   oidc_jwks_url=settings.oidc_jwks_url, roles_claim=settings.oidc_roles_claim,
                   jwks_refresh_seconds=settings.oidc_jwks_refresh_seconds)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens) or bool(self.issuer)

    def _jwks_client(self) -> Any:
        if self._jwks is None:
            import jwt

            url = self._jwks_url
            if not url:
                url = self._discover_jwks_url()
            # The key set is re-read at least every refresh interval, so a key removed from the JWKS (rotated out,
            # revoked) stops being trusted within it. No per-kid cache: PyJWKClient's never expires.
            self._jwks = jwt.PyJWKClient(url, cache_keys=False, cache_jwk_set=True,
                                         lifespan=max(1.0, self.jwks_refresh_seconds), timeout=10)
        return self._jwks

    def _discover_jwks_url(self) -> str:
        import httpx

        assert self.issuer is not None
        try:
            r = httpx.get(self.issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10)
            r.raise_for_status()
            return str(r.json()["jwks_uri"])
        except (httpx.HTTPError, KeyError, ValueError) as err:
            raise AuthError("the OIDC issuer's discovery document is unavailable") from err

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return Principal("anonymous", frozenset({"admin"}), "anonymous")
        if not authorization:
            raise AuthError("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, cred = authorization.partition(" ")
        cred = cred.strip()
        if scheme.lower() != "bearer" or not cred:
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        for t in self._tokens:
            if hmac.compare_digest(t.token.encode(), cred.encode()):
                return Principal(t.name, frozenset({t.role}), "token")
        if self.issuer and cred.count(".") == 2:
            return self._verify_jwt(cred)
        raise AuthError("invalid bearer token")

    def _verify_jwt(self, token: str) -> Principal:
        import jwt

        try:
            key = self._jwks_client().get_signing_key_from_jwt(token)
            # The PyJWK itself, not its raw key: PyJWT then refuses a token whose alg does not fit the key.
            claims = jwt.decode(
                token, key, algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"],
                audience=self.audience, issuer=self.issuer, options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=30,
            )
        except jwt.PyJWKClientError as err:
            log.warning("JWT signing key lookup failed: %s", err)
            raise AuthError("invalid bearer token (unknown signing key)") from err
        except jwt.ExpiredSignatureError as err:
            raise AuthError("bearer token expired") from err
        except jwt.InvalidTokenError as err:
            raise AuthError(f"invalid bearer token ({type(err).__name__})") from err
        except (TypeError, ValueError) as err:  # a key/algorithm combination PyJWT did not foresee: still a 401
            log.warning("JWT verification failed: %s", type(err).__name__)
            raise AuthError("invalid bearer token") from err
        raw = claims.get(self.roles_claim, [])
        if isinstance(raw, str):
            raw = raw.split()
        roles = frozenset(str(r) for r in raw if str(r) in ROLES) if isinstance(raw, list) else frozenset()
        return Principal(str(claims.get("sub")), roles, "oidc")
