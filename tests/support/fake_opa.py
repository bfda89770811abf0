"""An OPA-v1-REST-compatible server on 127.0.0.1 for tests (a real OPA binary cannot be installed here).

It answers ``POST /v1/data/<path>`` by evaluating ``data.<path>`` with the real
:class:`RegoEngine`, so answers are real policy decisions, and ``GET /health``.
Switches inject the failures OPA clients meet in practice::

    server.mode = "ok" | "status_500" | "malformed_json" | "missing_result" | "wrong_shape"
    server.delay = 0.5        # seconds to sleep before answering
    server.stop()             # later connections are refused

Every request is recorded in ``server.requests`` (path, query string, body).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from langgraph_warden.guards.rego import PolicyUndefined, RegoEngine

MODES = ("ok", "status_500", "malformed_json", "missing_result", "wrong_shape")


class FakeOpaServer:
    def __init__(self, engine_factory: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        """``engine_factory(query)`` returns a RegoEngine for ``data.<path>`` (cached per path)."""
        self._factory = engine_factory
        self._engines: dict[str, RegoEngine] = {}
        self.mode = "ok"
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def engine_for(self, path: str) -> RegoEngine:
        query = "data." + path.strip("/").replace("/", ".")
        with self._lock:
            if query not in self._engines:
                self._engines[query] = self._factory(query)
            return self._engines[query]

    def start(self) -> FakeOpaServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-opa", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket: new connections are refused."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # like OPA (Go sets TCP_NODELAY): without it, headers and body go out in two
            # segments and Nagle + delayed ACK add ~40 ms to every keep-alive request
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/health"):
                    self._send(200, b"{}")
                else:
                    self._send(404, b'{"code":"resource_not_found"}')

            def do_POST(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                server.requests.append({"path": parts.path, "query": parse_qs(parts.query), "body": raw})
                if server.delay:
                    time.sleep(server.delay)
                if not parts.path.startswith("/v1/data/"):
                    self._send(404, b'{"code":"resource_not_found"}')
                    return
                mode = server.mode
                if mode == "status_500":
                    self._send(500, b'{"code":"internal_error","message":"injected"}')
                    return
                if mode == "malformed_json":
                    self._send(200, b'{"result": {"allow": tr')
                    return
                try:
                    body = json.loads(raw or b"{}")
                    policy_input = body.get("input")
                except ValueError:
                    self._send(400, b'{"code":"invalid_parameter","message":"body is not JSON"}')
                    return
                answer: dict[str, Any] = {"decision_id": str(uuid.uuid4())}
                try:
                    engine = server.engine_for(parts.path[len("/v1/data/"):])
                    answer["result"] = engine.evaluate(policy_input)
                except PolicyUndefined:
                    pass  # OPA omits "result" for an undefined document
                except Exception as exc:  # noqa: BLE001 - report like OPA does
                    self._send(500, json.dumps({"code": "internal_error", "message": str(exc)}).encode())
                    return
                if mode == "missing_result":
                    answer.pop("result", None)
                elif mode == "wrong_shape":
                    answer["result"] = {"allow": "yes"}
                self._send(200, json.dumps(answer).encode())

        return Handler


def main() -> None:
    """``python -m tests.support.fake_opa``: serve the default Rego policy in its own process.

    Prints the URL on the first line of stdout and serves until stdin closes, so a
    benchmark's OPA runs beside it like a real OPA would, not inside its interpreter
    (whose request threads would compete with the client for the GIL).
    """
    import sys

    from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY

    rego = RegoEngine(DEFAULT_REGO_POLICY)
    server = FakeOpaServer(lambda query: rego if query == rego.query else RegoEngine(DEFAULT_REGO_POLICY, query=query))
    server.start()
    print(server.url, flush=True)
    sys.stdin.read()  # until the parent closes it (or exits)
    server.stop()


if __name__ == "__main__":
    main()
