"""Static tokens and OIDC JWT verification (a locally generated RSA key served as a JWK)."""

from __future__ import annotations

import base64
import json
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


class FakeJwks:
    """Stands in for PyJWKClient: returns the public key for our kid, raises like PyJWKClient otherwise."""

    def __init__(self, public: Any, kid: str) -> None:
        self.public = public
        self.kid = kid

    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK:
        if jwt.get_unverified_header(token).get("kid") != self.kid:
            raise jwt.PyJWKClientError("Unable to find a signing key that matches")
        return jwt.PyJWK.from_dict(_jwk(self.public, self.kid))


def _jwk(public: Any, kid: str) -> dict[str, Any]:
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public)), "kid": kid, "alg": "RS256", "use": "sig"}


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_token_whose_alg_does_not_fit_the_key_is_401_not_a_crash(keys: tuple[Any, Any]) -> None:
    _private, public = keys
    auth = Authenticator(oidc_issuer=ISS, oidc_audience=AUD, jwks_client=FakeJwks(public, "k1"))
    now = int(time.time())
    for alg in ("ES256", "ES384", "PS256", "HS256", "none"):
        header = _b64(json.dumps({"alg": alg, "kid": "k1", "typ": "JWT"}).encode())
        body = _b64(json.dumps({"iss": ISS, "aud": AUD, "sub": "x", "exp": now + 60}).encode())
        with pytest.raises(AuthError):
            auth.authenticate(f"Bearer {header}.{body}.{_b64(bytes(64))}")


class _JwksServer:
    """A real JWKS endpoint on loopback whose key set the test changes (key rotation)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_key_removed_from_the_jwks_stops_working_within_the_refresh_interval(keys: tuple[Any, Any]) -> None:
    private, public = keys
    new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = _JwksServer()
    try:
        jwks.keys = [_jwk(public, "old"), _jwk(new.public_key(), "new")]
        auth = Authenticator(oidc_issuer=ISS, oidc_audience=AUD, oidc_jwks_url=jwks.url, jwks_refresh_seconds=1)
        old_token, new_token = _token(private, kid="old"), _token(new, kid="new")
        assert auth.authenticate("Bearer " + old_token).name == "user-1"
        assert auth.authenticate("Bearer " + new_token).name == "user-1"
        jwks.keys = [_jwk(new.public_key(), "new")]  # "old" rotated out
        time.sleep(1.5)
        with pytest.raises(AuthError, match="unknown signing key"):
            auth.authenticate("Bearer " + old_token)
        assert auth.authenticate("Bearer " + new_token).name == "user-1"
    finally:
        jwks.close()
