"""Workload identity: SPIFFE ID rules, ES256 key stores, JWT-SVIDs accepted by py-spiffe."""

from __future__ import annotations

import json

import jwt
import pytest
from spiffe.bundle.jwt_bundle.jwt_bundle import JwtBundle
from spiffe.errors import PySpiffeError
from spiffe.spiffe_id.spiffe_id import TrustDomain
from spiffe.svid.jwt_svid import JwtSvid

from langgraph_warden.errors import ConfigurationError, KeyStoreError
from langgraph_warden.identity import (
    EphemeralWorkloadKeyStore,
    IdentityProvider,
    JwtSigner,
    KeyringWorkloadKeyStore,
    LocalIdentityProvider,
    SpiffeId,
    SvidValidationError,
    verify_svid,
)
from langgraph_warden.keys import b64u, b64u_decode

AGENT = "spiffe://example.org/agents/billing"







class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bundle_for(provider: LocalIdentityProvider) -> JwtBundle:
    return JwtBundle.parse(TrustDomain(provider.spiffe_id.trust_domain), json.dumps(provider.jwks()).encode())


# --------------------------------------------------------------------------- SPIFFE IDs

VALID = [
    ("spiffe://example.org", "example.org", ""),
    ("spiffe://example.org/agents/billing", "example.org", "/agents/billing"),
    ("spiffe://a-b_c.9/Path.With-Mixed_Case/x", "a-b_c.9", "/Path.With-Mixed_Case/x"),
    ("spiffe://td/.../a..b", "td", "/.../a..b"),
]

INVALID = [
    ("", "empty"),
    ("http://example.org/a", "scheme must be 'spiffe://'"),
    ("SPIFFE://example.org/a", "scheme must be lowercase"),
    ("spiffe:/example.org", "scheme must be 'spiffe://'"),
    ("spiffe://", "trust domain is empty"),
    ("spiffe:///path", "trust domain is empty"),
    ("spiffe://Example.org/a", "trust domain must be lowercase"),
    ("spiffe://exa mple.org", "only lowercase letters"),
    ("spiffe://example.org:8080/a", "port"),
    ("spiffe://user@example.org/a", "userinfo"),
    ("spiffe://example.org/a?x=1", "query"),
    ("spiffe://example.org/a#frag", "fragment"),
    ("spiffe://example.org/", "trailing '/'"),
    ("spiffe://example.org/a/", "trailing '/'"),
    ("spiffe://example.org//a", "empty segment"),
    ("spiffe://example.org/a/./b", "'.' segment"),
    ("spiffe://example.org/a/../b", "'..' segment"),
    ("spiffe://example.org/a%20b", "no percent-encoding"),
    ("spiffe://example.org/caf\u00e9", "path segment"),
    ("spiffe://example.org/" + "a" * 2040, "longer than 2048 bytes"),
    ("spiffe://" + "a" * 256, "longer than 255"),
]


@pytest.mark.parametrize(("text", "td", "path"), VALID)
def test_valid_spiffe_ids(text, td, path):
    sid = SpiffeId.parse(text)
    assert (sid.trust_domain, sid.path, str(sid)) == (td, path, text)


@pytest.mark.parametrize(("text", "rule"), INVALID)
def test_invalid_spiffe_ids_name_the_rule(text, rule):
    with pytest.raises(ConfigurationError, match="spiffe_id") as info:
        SpiffeId.parse(text)
    assert rule in str(info.value)


def test_max_length_is_inclusive():
    text = "spiffe://example.org/" + "a" * (2048 - len("spiffe://example.org/"))
    assert len(text) == 2048
    assert str(SpiffeId.parse(text)) == text


# --------------------------------------------------------------------------- JWT-SVIDs


def test_minted_svid_shape_and_protocols():
    clock = Clock()
    idp = LocalIdentityProvider(AGENT, EphemeralWorkloadKeyStore(), clock=clock)
    assert isinstance(idp, IdentityProvider) and isinstance(idp, JwtSigner)
    token = idp.mint_svid("https://billing.internal", ttl_seconds=120)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": idp.kid}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == AGENT and claims["aud"] == ["https://billing.internal"]
    assert claims["exp"] - claims["iat"] == 120 and claims["iat"] == int(clock.now)
    assert len(claims["jti"]) == 32
    assert claims["jti"] != jwt.decode(idp.mint_svid("x"), options={"verify_signature": False})["jti"]
    jwk = idp.jwks()["keys"][0]
    assert jwk["kid"] == idp.kid and jwk["alg"] == "ES256" and "d" not in jwk


def test_py_spiffe_accepts_minted_svid_against_the_jwk_set():
    idp = LocalIdentityProvider(AGENT, EphemeralWorkloadKeyStore())
    token = idp.mint_svid("billing-api", extra_claims={"thread_id": "t1"})
    svid = JwtSvid.parse_and_validate(token, bundle_for(idp), {"billing-api"})
    assert str(svid.spiffe_id) == AGENT
    assert svid.audience == {"billing-api"}
    assert verify_svid(token, "billing-api", idp.jwks(), trust_domain="example.org")["thread_id"] == "t1"


def test_py_spiffe_and_verify_svid_reject_wrong_audience():
    idp = LocalIdentityProvider(AGENT, EphemeralWorkloadKeyStore())
    token = idp.mint_svid("billing-api")
    with pytest.raises(PySpiffeError):
        JwtSvid.parse_and_validate(token, bundle_for(idp), {"other-api"})
    with pytest.raises(SvidValidationError) as info:
        verify_svid(token, "other-api", idp.jwks())
    assert info.value.reason == "wrong_audience"


def test_py_spiffe_and_verify_svid_reject_expired():
    clock = Clock(now=1_000_000_000.0)  # 2001: long expired by real time
    idp = LocalIdentityProvider(AGENT, EphemeralWorkloadKeyStore(), clock=clock)
    token = idp.mint_svid("billing-api", ttl_seconds=60)
    with pytest.raises(PySpiffeError):
        JwtSvid.parse_and_validate(token, bundle_for(idp), {"billing-api"})
    assert verify_svid(token, "billing-api", idp.jwks(), clock=clock)["sub"] == AGENT
    clock.now += 60
    with pytest.raises(SvidValidationError) as info:
        verify_svid(token, "billing-api", idp.jwks(), clock=clock)
    assert info.value.reason == "expired"


def test_py_spiffe_and_verify_svid_reject_tampered():
    idp = LocalIdentityProvider(AGENT, EphemeralWorkloadKeyStore())
    token = idp.mint_svid("billing-api")
    header, payload, sig = token.split(".")
    claims = json.loads(b64u_decode(payload))
    claims["sub"] = "spiffe://example.org/agents/admin"
    forged = ".".join([header, b64u(json.dumps(claims).encode()), sig])
    with pytest.raises(PySpiffeError):
        JwtSvid.parse_and_validate(forged, bundle_for(idp), {"billing-api"})
    with pytest.raises(SvidValidationError) as info:
        verify_svid(forged, "billing-api", idp.jwks())
    assert info.value.reason == "bad_signature"
    # A token signed by a different workload key (not in the set) is unknown.
    other = LocalIdentityProvider(AGENT, EphemeralWorkloadKeyStore()).mint_svid("billing-api")
    with pytest.raises(SvidValidationError) as info:
        verify_svid(other, "billing-api", idp.jwks())
    assert info.value.reason == "unknown_key"
    with pytest.raises(SvidValidationError) as info:
        verify_svid("not-a-token", "billing-api", idp.jwks())
    assert info.value.reason == "malformed"


def test_rotation_keeps_old_tokens_verifiable():
    store = EphemeralWorkloadKeyStore()
    idp = LocalIdentityProvider(AGENT, store)
    old = idp.mint_svid("api")
    old_kid = idp.kid
    store.rotate()
    assert idp.kid != old_kid
    kids = [k["kid"] for k in idp.jwks()["keys"]]
    assert kids == [idp.kid, old_kid]
    assert JwtSvid.parse_and_validate(old, bundle_for(idp), {"api"}).spiffe_id
    assert verify_svid(idp.mint_svid("api"), "api", idp.jwks())


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"audience": ""}, "audience is empty"),
        ({"audience": "a", "ttl_seconds": 0}, "ttl_seconds=0"),
        ({"audience": "a", "ttl_seconds": 7200}, "above the JWT-SVID maximum"),
        ({"audience": "a", "extra_claims": {"sub": "x"}}, "may not set ['sub']"),
    ],
)
def test_mint_svid_bad_input(kwargs, needle):
    idp = LocalIdentityProvider(AGENT, EphemeralWorkloadKeyStore())
    with pytest.raises(ConfigurationError) as info:
        idp.mint_svid(**kwargs)
    assert needle in str(info.value)


def test_identity_provider_validates_its_spiffe_id():
    with pytest.raises(ConfigurationError, match="trust domain must be lowercase"):
        LocalIdentityProvider("spiffe://Example.org/a", EphemeralWorkloadKeyStore())


# --------------------------------------------------------------------------- key stores


def test_keyring_store_persists_key_and_rotation(memory_keyring):
    store = KeyringWorkloadKeyStore(service="warden-test", username="wl")
    key = store.workload_key()
    assert key.store_kind == "keyring"
    stored = memory_keyring.store[("warden-test", "wl")]
    # A new process (new store object) loads the same key.
    again = KeyringWorkloadKeyStore(service="warden-test", username="wl")
    assert again.workload_key().kid == key.kid
    idp = LocalIdentityProvider(AGENT, again)
    token = idp.mint_svid("api")
    new = again.rotate()
    assert new.kid != key.kid and memory_keyring.store[("warden-test", "wl")] != stored
    # After restart the JWK set still carries the retired key, so the old token verifies.
    reloaded = LocalIdentityProvider(AGENT, KeyringWorkloadKeyStore(service="warden-test", username="wl"))
    assert [k["kid"] for k in reloaded.jwks()["keys"]] == [new.kid, key.kid]
    assert verify_svid(token, "api", reloaded.jwks())["sub"] == AGENT


def test_keyring_store_corrupt_entry(memory_keyring):
    memory_keyring.set_password("warden-test", "wl", "garbage")
    with pytest.raises(KeyStoreError, match="not a langgraph-warden workload key"):
        KeyringWorkloadKeyStore(service="warden-test", username="wl").workload_key()


def test_no_keyring_backend_raises_with_how_to(no_keyring):
    with pytest.raises(KeyStoreError) as info:
        KeyringWorkloadKeyStore().workload_key()
    msg = str(info.value)
    assert "no usable backend" in msg
    assert "workload key" in msg and "WARDEN_KEY_DIR=DIR" in msg
    assert "ephemeral_keys=True" in msg and "--ephemeral-keys" in msg


def test_workload_key_repr_hides_private_material():
    key = EphemeralWorkloadKeyStore().workload_key()
    assert repr(key) == f"WorkloadKey(kid={key.kid!r}, store_kind='ephemeral')"
