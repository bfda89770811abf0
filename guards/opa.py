"""OPA server engine: ``POST /v1/data/<path>`` through ``opa-python-client``, failing closed.

How this wraps the client, and why:

* **One long-lived client** per engine (a ``requests`` session with keep-alive)
  for ``decide``; for ``adecide`` one ``AsyncOpaClient`` per event loop, entered
  with ``__aenter__`` on first use (its aiohttp session only exists inside
  ``async with``, and an aiohttp session cannot be shared across loops).
* **Retries off** (``retries=0``): the sync client's urllib3 adapter would still
  retry *connection* errors with back-off and the async client retries POSTs on
  500/502/504 — both stretch a dead server into seconds. The circuit breaker is
  the retry policy here.
* **A per-decision deadline.** The clients only take a per-socket-operation
  timeout (``requests``) or a per-request total (aiohttp), so the sync path runs
  the request on a small worker pool and waits at most ``deadline_seconds`` for
  it (the socket timeout is set to the same value so an abandoned request also
  ends soon); the async path uses ``asyncio.timeout``.
* ``strict-builtin-errors=true`` is sent as a query parameter (``query_rule``'s
  ``query_params``), so a failing builtin is an error, not an undefined result.
* **Every failure is a deny** with reasons ``("policy_unavailable", <detail>)``:
  ``opa_connection_error``, ``opa_timeout``, ``opa_http_<status>``,
  ``opa_malformed_response``, ``opa_undefined`` (no ``result``), ``opa_wrong_shape``,
  ``circuit_open``.
* **The input version is checked here**, before the network: an input of another
  version than ``input_version`` (the one the server's policy reads) is denied with
  ``policy_input_version_mismatch`` and does not count against the breaker.
* **Circuit breaker**: ``failure_threshold`` consecutive *transport* failures
  (connection, timeout, non-200, unparsable body) open it for ``reset_seconds``;
  while open, decisions are denied without touching the network. Then one probe
  is let through (half-open): success closes it, failure re-opens it. An
  undefined or wrong-shaped result comes from a healthy server answering with a
  bad policy, so it denies but does not trip the breaker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from langgraph_warden.errors import ConfigurationError

from .policy import (
    POLICY_INPUT_VERSION,
    REASON_POLICY_UNAVAILABLE,
    MalformedDecisionError,
    PolicyDecision,
    check_input_version,
    decision_from_document,
    fail_closed,
    input_version_arg,
    is_fatal,
    safe_input_digest,
)

__all__ = ["OpaServerEngine", "CircuitBreaker", "OpaUnavailable"]

_SEGMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUERY_PARAMS = {"strict-builtin-errors": "true"}


class OpaUnavailable(Exception):
    """The OPA server did not give a usable answer; ``detail`` is the deny reason detail."""

    def __init__(self, detail: str, message: str, *, transport: bool) -> None:
        super().__init__(message)
        self.detail = detail
        self.transport = transport  # counts against the circuit breaker


class CircuitBreaker:
    """Consecutive-failure breaker: closed -> open (after N failures) -> half-open (one probe)."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failure_threshold: int = 5, reset_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if type(failure_threshold) is not int or failure_threshold < 1:
            raise ConfigurationError(f"CircuitBreaker failure_threshold: expected an int >= 1, got {failure_threshold!r}")
        if not isinstance(reset_seconds, (int, float)) or reset_seconds <= 0:
            raise ConfigurationError(f"CircuitBreaker reset_seconds: expected a number > 0, got {reset_seconds!r}")
        self.failure_threshold = failure_threshold
        self.reset_seconds = float(reset_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return self.CLOSED
            if self._probing or self._clock() - self._opened_at >= self.reset_seconds:
                return self.HALF_OPEN
            return self.OPEN

    def allow_request(self) -> bool:
        """May a request go to the server now? In half-open, only one probe at a time."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._probing or self._clock() - self._opened_at < self.reset_seconds:
                return False
            self._probing = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probing = False


def _normalise_path(path: str) -> str:
    raw = path.strip()
    if raw.startswith("data."):
        raw = raw[len("data."):]
    raw = raw.replace(".", "/").strip("/")
    segments = raw.split("/")
    if not raw or not all(_SEGMENT_RE.match(s) for s in segments):
        raise ConfigurationError(
            f"OpaServerEngine path {path!r}: expected a rule path such as 'warden/decision' "
            "or 'data.warden.decision'"
        )
    return raw


class OpaServerEngine:
    """Policy decisions from an OPA server (``url`` like ``http://127.0.0.1:8181``).

    ``input_version``: the policy input version the server's policy reads (1 or 2).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8181",
        *,
        path: str = "warden/decision",
        deadline_seconds: float = 0.5,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        token: str | None = None,
        revision: str | None = None,
        name: str = "opa",
        max_workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
        input_version: int = POLICY_INPUT_VERSION,
    ) -> None:
        from opa_client import OpaClient

        self._input_version = input_version_arg(input_version, "OpaServerEngine")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"OpaServerEngine url {url!r}: expected http(s)://host[:port]")
        if not isinstance(deadline_seconds, (int, float)) or deadline_seconds <= 0:
            raise ConfigurationError(
                f"OpaServerEngine deadline_seconds: expected a number > 0, got {deadline_seconds!r}"
            )
        self._host = parts.hostname
        self._port = parts.port or 8181
        self._ssl = parts.scheme == "https"
        self._token = token
        self._path = _normalise_path(path)
        self._deadline = float(deadline_seconds)
        self._name = name
        self._revision = revision or f"opa:{parts.scheme}://{self._host}:{self._port}/v1/data/{self._path}"
        self.breaker = CircuitBreaker(failure_threshold, reset_seconds, clock)
        self._client = OpaClient(host=self._host, port=self._port, ssl=self._ssl, token=token,
                                 retries=0, timeout=self._deadline)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers,
                                                           thread_name_prefix="warden-opa")
        self._async_clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._async_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def revision(self) -> str:
        return self._revision

    @property
    def deadline_seconds(self) -> float:
        return self._deadline

    @property
    def input_version(self) -> int:
        """The policy input version the server's policy reads (the guard builds that document)."""
        return self._input_version

    # -- shared ----------------------------------------------------------------

    def _to_decision(self, body: Any, digest: str) -> PolicyDecision:
        if not isinstance(body, Mapping):
            raise OpaUnavailable("opa_malformed_response", "response body is not a JSON object", transport=True)
        if "result" not in body:
            raise OpaUnavailable("opa_undefined", f"data/{self._path} is undefined (no 'result')", transport=False)
        decision_id = body.get("decision_id")
        try:
            return decision_from_document(
                body["result"], engine=self._name, policy_revision=self._revision, input_digest=digest,
                decision_id=decision_id if isinstance(decision_id, str) else None,
            )
        except MalformedDecisionError as exc:
            raise OpaUnavailable("opa_wrong_shape", str(exc), transport=False) from exc

    def _finish(self, policy_input: Mapping[str, Any], digest: str, body: Any) -> PolicyDecision:
        try:
            decision = self._to_decision(body, digest)
        except OpaUnavailable as exc:
            return self._unavailable(policy_input, digest, exc)
        self.breaker.record_success()
        return decision

    def _unavailable(self, policy_input: Mapping[str, Any], digest: str, exc: OpaUnavailable) -> PolicyDecision:
        if exc.transport:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()  # the server answered
        return fail_closed(self, policy_input, exc, reason=REASON_POLICY_UNAVAILABLE, detail=exc.detail,
                           input_digest=digest)

    def _circuit_open(self, policy_input: Mapping[str, Any]) -> PolicyDecision:
        return fail_closed(self, policy_input, None, reason=REASON_POLICY_UNAVAILABLE, detail="circuit_open")

    # -- sync --------------------------------------------------------------------

    def _post(self, policy_input: Mapping[str, Any]) -> Any:
        import requests

        try:
            return self._client.query_rule(dict(policy_input), self._path, query_params=_QUERY_PARAMS)
        except requests.Timeout as exc:
            raise OpaUnavailable("opa_timeout", str(exc), transport=True) from exc
        except requests.ConnectionError as exc:
            raise OpaUnavailable("opa_connection_error", str(exc), transport=True) from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "error"
            raise OpaUnavailable(f"opa_http_{status}", str(exc), transport=True) from exc
        except ValueError as exc:  # body is not JSON (requests' JSONDecodeError is a ValueError)
            raise OpaUnavailable("opa_malformed_response", str(exc), transport=True) from exc

    def decide(self, policy_input: Mapping[str, Any]) -> PolicyDecision:
        """Ask OPA; any failure or a missed deadline is a deny (``policy_unavailable``)."""
        refused = check_input_version(self, policy_input)
        if refused is not None:
            return refused
        if not self.breaker.allow_request():
            return self._circuit_open(policy_input)
        digest = safe_input_digest(policy_input)
        try:
            future = self._pool.submit(self._post, policy_input)
            try:
                body = future.result(timeout=self._deadline)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise OpaUnavailable("opa_timeout", f"no answer within {self._deadline}s", transport=True) from None
            return self._finish(policy_input, digest, body)
        except OpaUnavailable as exc:
            return self._unavailable(policy_input, digest, exc)
        except BaseException as exc:
            if is_fatal(exc):
                raise
            return self._unavailable(policy_input, digest,
                                     OpaUnavailable(f"opa_error:{type(exc).__name__}", str(exc), transport=True))

    # -- async -------------------------------------------------------------------

    async def _async_client(self) -> Any:
        from opa_client import AsyncOpaClient

        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = AsyncOpaClient(host=self._host, port=self._port, ssl=self._ssl, token=self._token,
                                    retries=0, timeout=self._deadline)
            await client.__aenter__()
            with self._async_lock:
                # drop clients of loops that are gone (their sessions died with them)
                for old in [lp for lp in self._async_clients if lp.is_closed()]:
                    del self._async_clients[old]
                self._async_clients[loop] = client
        return client

    async def adecide(self, policy_input: Mapping[str, Any]) -> PolicyDecision:
        """Async :meth:`decide` on the aiohttp-based client, same failure mapping."""
        import aiohttp

        refused = check_input_version(self, policy_input)
        if refused is not None:
            return refused
        if not self.breaker.allow_request():
            return self._circuit_open(policy_input)
        digest = safe_input_digest(policy_input)
        try:
            try:
                async with asyncio.timeout(self._deadline):
                    client = await self._async_client()
                    body = await client.query_rule(dict(policy_input), self._path, query_params=_QUERY_PARAMS)
            except TimeoutError as exc:
                raise OpaUnavailable("opa_timeout", f"no answer within {self._deadline}s", transport=True) from exc
            except aiohttp.ContentTypeError as exc:
                raise OpaUnavailable("opa_malformed_response", str(exc), transport=True) from exc
            except aiohttp.ClientResponseError as exc:
                raise OpaUnavailable(f"opa_http_{exc.status}", str(exc), transport=True) from exc
            except aiohttp.ClientError as exc:
                raise OpaUnavailable("opa_connection_error", str(exc), transport=True) from exc
            except ValueError as exc:
                raise OpaUnavailable("opa_malformed_response", str(exc), transport=True) from exc
            return self._finish(policy_input, digest, body)
        except OpaUnavailable as exc:
            return self._unavailable(policy_input, digest, exc)
        except BaseException as exc:
            if is_fatal(exc):
                raise
            return self._unavailable(policy_input, digest,
                                     OpaUnavailable(f"opa_error:{type(exc).__name__}", str(exc), transport=True))

    # -- lifecycle -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the async client of the running loop."""
        loop = asyncio.get_running_loop()
        with self._async_lock:
            client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.close_connection()

    def close(self) -> None:
        """Close the sync client and the worker pool (async clients: :meth:`aclose`)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close_connection()

    def __enter__(self) -> OpaServerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OpaServerEngine({self._revision!r}, breaker={self.breaker.state})"
