"""A tiny stand-in for ``opa run --server``, for the examples only (no OPA binary needed).

It speaks the part of OPA's v1 REST API that ``OpaServerEngine`` uses —
``POST /v1/data/<path>`` with ``{"input": ...}`` answered by
``{"result": <document>}`` (no ``result`` when the document is undefined) and
``GET /health`` — on 127.0.0.1, and evaluates the policy with the package's
embedded :class:`RegoEngine`, so the answers are real Rego decisions.

With a real OPA you would instead run::

    opa run --server --addr 127.0.0.1:8181 langgraph_warden/guards/policies/default.rego

and point ``OpaServerEngine("http://127.0.0.1:8181")`` at it. Nothing else changes.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from langgraph_warden.guards.rego import PolicyUndefined, RegoEngine


class OpaStub:
    """``OpaStub(policy_files).start()`` serves on ``stub.url`` until ``stub.stop()``."""

    def __init__(self, policies: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._policies = policies
        self._engines: dict[str, RegoEngine] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self._conns: set[socket.socket] = set()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _engine(self, path: str) -> RegoEngine:
        query = "data." + path.strip("/").replace("/", ".")
        with self._lock:
            if query not in self._engines:
                self._engines[query] = RegoEngine(self._policies, query=query)
            return self._engines[query]

    def start(self) -> OpaStub:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a killed ``opa`` process: close the listening socket *and* open keep-alive connections."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpaStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # like OPA; avoids ~40 ms delayed-ACK stalls on keep-alive

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with stub._lock:
                    stub._conns.add(self.connection)

            def finish(self) -> None:
                with stub._lock:
                    stub._conns.discard(self.connection)
                super().finish()

            def _send(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {}) if self.path.startswith("/health") else self._send(404, {"code": "resource_not_found"})

            def do_POST(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests += 1
                if not path.startswith("/v1/data/"):
                    self._send(404, {"code": "resource_not_found"})
                    return
                try:
                    policy_input = json.loads(raw or b"{}").get("input")
                except ValueError:
                    self._send(400, {"code": "invalid_parameter", "message": "body is not JSON"})
                    return
                answer: dict[str, Any] = {"decision_id": str(uuid.uuid4())}
                try:
                    answer["result"] = stub._engine(path[len("/v1/data/"):]).evaluate(policy_input)
                except PolicyUndefined:
                    pass  # OPA omits "result" for an undefined document
                except Exception as exc:  # noqa: BLE001 - reported like OPA does
                    self._send(500, {"code": "internal_error", "message": str(exc)})
                    return
                self._send(200, answer)

        return Handler


if __name__ == "__main__":  # python examples/_opa_stub.py  -> serve the default policy until Ctrl-C
    from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY

    stub = OpaStub(DEFAULT_REGO_POLICY, port=8181).start()
    print(f"OPA stand-in serving {Path(DEFAULT_REGO_POLICY).name} on {stub.url} (Ctrl-C to stop)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stub.stop()
