"""OPA server engine against a real OPA-v1-REST-compatible server on 127.0.0.1.

The fake server evaluates with the real RegoEngine, so allowed answers are real
policy decisions; switches inject the failures a client meets in practice.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from langgraph_warden.errors import ConfigurationError
from langgraph_warden.guards.opa import CircuitBreaker, OpaServerEngine
from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY, build_policy_input
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec
from tests.support.fake_opa import FakeOpaServer

DEADLINE = 0.3  # for the tests that are about the deadline
PATIENT = 5.0  # for every other test: a loaded CI machine must not turn an answer into a timeout


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_input(spec: ToolSpec | None = None, **run: Any) -> dict[str, Any]:
    spec = spec or ToolSpec("lookup", sensitivity="public", scopes=("kb:read",))
    kwargs: dict[str, Any] = {"owner": "alice", "risk_tier": "low"}
    kwargs.update(run)
    return build_policy_input(workload_id="spiffe://example.org/agent", thread_id="t-1", tool_name=spec.name,
                              tool_spec=spec, args={}, now="2025-01-01T00:00:00Z", **kwargs)


@pytest.fixture(scope="module")
def rego() -> RegoEngine:
    return RegoEngine(DEFAULT_REGO_POLICY)


@pytest.fixture
def server(rego: RegoEngine) -> Iterator[FakeOpaServer]:
    def factory(query: str) -> RegoEngine:
        return rego if query == rego.query else RegoEngine(DEFAULT_REGO_POLICY, query=query)

    srv = FakeOpaServer(factory).start()
    yield srv
    try:
        srv.stop()
    except OSError:
        pass


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(server: FakeOpaServer, clock: FakeClock) -> Iterator[OpaServerEngine]:
    eng = OpaServerEngine(server.url, deadline_seconds=PATIENT, failure_threshold=3, reset_seconds=10,
                          clock=clock)
    yield eng
    eng.close()


@pytest.fixture
def impatient(server: FakeOpaServer) -> Iterator[OpaServerEngine]:
    eng = OpaServerEngine(server.url, deadline_seconds=DEADLINE)
    yield eng
    eng.close()


def test_answers_are_the_real_policy_decisions(engine, server, rego) -> None:
    for spec in (ToolSpec("lookup", scopes=("kb:read",)), ToolSpec("pay", irreversible=True)):
        inp = make_input(spec)
        got, want = engine.decide(inp), rego.decide(inp)
        assert (got.allow, got.require_approval, got.reasons, got.scopes, got.ttl_seconds, got.obligations) == (
            want.allow, want.require_approval, want.reasons, want.scopes, want.ttl_seconds, want.obligations)
        assert got.engine == "opa" and got.input_digest == want.input_digest
        assert got.decision_id and len(got.decision_id) == 36  # the server's decision id is kept
    req = server.requests[-1]
    assert req["path"] == "/v1/data/warden/decision"
    assert req["query"] == {"strict-builtin-errors": ["true"]}


@pytest.mark.parametrize(
    ("mode", "detail"),
    [
        ("status_500", "opa_http_500"),
        ("malformed_json", "opa_malformed_response"),
        ("missing_result", "opa_undefined"),
        ("wrong_shape", "opa_wrong_shape"),
    ],
)
def test_server_failures_deny(engine, server, mode: str, detail: str) -> None:
    server.mode = mode
    d = engine.decide(make_input())
    assert not d.allow and d.reasons == ("policy_unavailable", detail)
    assert len(server.requests) == 1  # no retry of the POST


def test_unknown_rule_path_is_undefined(server) -> None:
    # the fake server compiles a policy for this new query on the first request: give it time
    with OpaServerEngine(server.url, path="data.warden.nope", deadline_seconds=PATIENT) as eng:
        d = eng.decide(make_input())
    assert d.reasons == ("policy_unavailable", "opa_undefined")


def test_delay_beyond_deadline_denies_on_time(impatient, server) -> None:
    server.delay = DEADLINE * 6
    t0 = time.perf_counter()
    d = impatient.decide(make_input())
    elapsed = time.perf_counter() - t0
    assert d.reasons == ("policy_unavailable", "opa_timeout")
    assert elapsed < DEADLINE + 0.6  # well before the server's answer at 6x the deadline


def test_connection_refused_denies(engine, server) -> None:
    server.stop()
    d = engine.decide(make_input())
    assert d.reasons == ("policy_unavailable", "opa_connection_error")


def test_circuit_breaker_opens_answers_fast_and_recovers(engine, server, clock) -> None:
    server.mode = "status_500"
    for _ in range(3):
        assert engine.decide(make_input()).reasons[1] == "opa_http_500"
    assert engine.breaker.state == "open"
    sent = len(server.requests)

    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        d = engine.decide(make_input())
        samples.append(time.perf_counter() - t0)
        assert d.reasons == ("policy_unavailable", "circuit_open") and not d.allow
    median = sorted(samples)[len(samples) // 2]
    assert median < 0.002, f"open breaker took {median * 1e3:.2f} ms (median of 20)"
    assert len(server.requests) == sent  # nothing reached the server

    # half-open: one failed probe re-opens at once
    clock.now += 10
    assert engine.breaker.state == "half_open"
    assert engine.decide(make_input()).reasons[1] == "opa_http_500"
    assert engine.breaker.state == "open"
    assert engine.decide(make_input()).reasons[1] == "circuit_open"

    # a successful probe closes it
    server.mode = "ok"
    clock.now += 10
    assert engine.decide(make_input()).allow
    assert engine.breaker.state == "closed"


def test_undefined_and_wrong_shape_do_not_trip_the_breaker(engine, server) -> None:
    server.mode = "wrong_shape"
    for _ in range(5):
        engine.decide(make_input())
    assert engine.breaker.state == "closed"


def test_breaker_allows_one_probe_at_a_time(clock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_seconds=5, clock=clock)
    breaker.record_failure()
    assert not breaker.allow_request()
    clock.now += 5
    assert breaker.allow_request() and not breaker.allow_request()
    breaker.record_success()
    assert breaker.allow_request() and breaker.state == "closed"


async def test_async_decisions(engine, server, rego) -> None:
    inp = make_input(ToolSpec("share", external=True))
    d = await engine.adecide(inp)
    assert d.allow and d.require_approval and d.reasons == ("external_sharing",)
    assert d.decision_id
    server.mode = "missing_result"
    assert (await engine.adecide(inp)).reasons == ("policy_unavailable", "opa_undefined")
    server.mode = "status_500"
    assert (await engine.adecide(inp)).reasons == ("policy_unavailable", "opa_http_500")
    server.mode = "malformed_json"
    assert (await engine.adecide(inp)).reasons == ("policy_unavailable", "opa_malformed_response")
    await engine.aclose()


async def test_async_delay_beyond_deadline_denies_on_time(impatient, server) -> None:
    server.delay = DEADLINE * 6
    t0 = time.perf_counter()
    assert (await impatient.adecide(make_input())).reasons == ("policy_unavailable", "opa_timeout")
    assert time.perf_counter() - t0 < DEADLINE + 0.6  # well before the server's answer at 6x the deadline
    await impatient.aclose()


async def test_async_connection_refused_and_breaker(engine, server) -> None:
    server.stop()
    for _ in range(3):
        assert (await engine.adecide(make_input())).reasons == ("policy_unavailable", "opa_connection_error")
    t0 = time.perf_counter()
    assert (await engine.adecide(make_input())).reasons == ("policy_unavailable", "circuit_open")
    assert time.perf_counter() - t0 < 0.05  # no connection attempt, no deadline wait
    await engine.aclose()


def test_nothing_listening_at_all_denies() -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with OpaServerEngine(f"http://127.0.0.1:{port}", deadline_seconds=PATIENT) as eng:
        assert eng.decide(make_input()).reasons == ("policy_unavailable", "opa_connection_error")


def test_configuration_errors_name_the_field() -> None:
    with pytest.raises(ConfigurationError, match="url"):
        OpaServerEngine("ftp://x")
    with pytest.raises(ConfigurationError, match="path"):
        OpaServerEngine(path="warden/../x")
    with pytest.raises(ConfigurationError, match="deadline_seconds"):
        OpaServerEngine(deadline_seconds=0)
    with pytest.raises(ConfigurationError, match="failure_threshold"):
        OpaServerEngine(failure_threshold=0)


def test_evaluation_time_is_reported(engine) -> None:
    inp = make_input()
    engine.decide(inp)
    t0 = time.perf_counter()
    for _ in range(50):
        engine.decide(inp)
    per = (time.perf_counter() - t0) / 50 * 1e6
    print(f"opa (loopback fake server + real rego) decide: {per:.0f} us")
    assert per < PATIENT * 1e6
