"""Static tokens and OIDC JWT verification (a locally generated RSA key served as a JWK)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from medsearch_api.auth import AuthConfigError, Authenticator, AuthError, load_tokens, parse_tokens

ISS = "https://idp.example/realms/medsearch"
AUD = "medsearch-api"


def test_parse_tokens_file(tmp_path: Path) -> None:
    toks = parse_tokens("# comment\n\nabcdefghijklmnop0 reader alice smith\nqrstuvwxyz0123456 admin\n")
    assert [(t.role, t.name) for t in toks] == [("reader", "alice smith"), ("admin", "token-4")]
    with pytest.raises(AuthConfigError, match=":1: role 'root'"):
        parse_tokens("abcdefghijklmnop0 root")
    with pytest.raises(AuthConfigError, match="shorter than 16"):
        parse_tokens("short reader")
    with pytest.raises(AuthConfigError, match="expected 'TOKEN ROLE"):
        parse_tokens("lonelytoken000000000")
    with pytest.raises(AuthConfigError, match="cannot read"):
        load_tokens(tmp_path / "missing")


def test_static_tokens_and_roles() -> None:
    auth = Authenticator(tokens=parse_tokens("abcdefghijklmnop0 reader\nqrstuvwxyz0123456 ingester"))
    p = auth.authenticate("Bearer abcdefghijklmnop0")
    assert p.has("reader") and not p.has("ingester")
    q = auth.authenticate("bearer qrstuvwxyz0123456")
    assert q.has("reader") and q.has("ingester") and not q.has("admin")
    for bad in (None, "", "Bearer", "Bearer nope", "Token abcdefghijklmnop0"):
        with pytest.raises(AuthError):
            auth.authenticate(bad)


class _Key:
    def __init__(self, key: Any) -> None:
        self.key = key


class FakeJwks:
    """Stands in for PyJWKClient: returns the public key for our kid, raises like PyJWKClient otherwise."""

    def __init__(self, public: Any, kid: str) -> None:
        self.public = public
        self.kid = kid

    def get_signing_key_from_jwt(self, token: str) -> _Key:
        if jwt.get_unverified_header(token).get("kid") != self.kid:
            raise jwt.PyJWKClientError("Unable to find a signing key that matches")
        return _Key(self.public)


@pytest.fixture(scope="module")
def keys() -> tuple[Any, Any]:
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return k, k.public_key()


def _token(key: Any, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": AUD, "sub": "user-1", "exp": now + 300, "iat": now, "roles": ["reader"], **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


def test_oidc_jwt(keys: tuple[Any, Any]) -> None:
    private, public = keys
    auth = Authenticator(oidc_issuer=ISS, oidc_audience=AUD, jwks_client=FakeJwks(public, "k1"))
    p = auth.authenticate("Bearer " + _token(private))
    assert p.name == "user-1" and p.has("reader") and p.method == "oidc"
    assert auth.authenticate("Bearer " + _token(private, roles="ingester admin")).has("admin")
    assert not auth.authenticate("Bearer " + _token(private, roles=["superuser"])).has("reader")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "expired": _token(private, exp=int(time.time()) - 3600),
        "wrong audience": _token(private, aud="other"),
        "wrong issuer": _token(private, iss="https://evil.example"),
        "bad signature": _token(other),
        "unknown kid": _token(private, kid="k2"),
        "hs256 with public key": jwt.encode({"iss": ISS, "aud": AUD, "sub": "x", "exp": int(time.time()) + 60},
                                            "secret", algorithm="HS256", headers={"kid": "k1"}),
    }
    for what, tok in cases.items():
        with pytest.raises(AuthError):
            auth.authenticate("Bearer " + tok)
            pytest.fail(what)


def test_oidc_needs_an_audience() -> None:
    with pytest.raises(AuthConfigError, match="AUDIENCE"):
        Authenticator(oidc_issuer=ISS)
