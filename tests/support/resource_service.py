"""A loopback HTTP resource server that checks Bearer tokens with ``provider.verify``.

Stands in for the real API a tool calls: 200 with the verified subject when the
token is valid for the audience and scope, 401 with the rejection reason
otherwise. It never logs requests (the Authorization header must not reach logs).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from langgraph_warden.guards.credentials import CredentialRejected


class ResourceService:
    """``with ResourceService(provider, audience, scope) as svc: svc.url``."""

    def __init__(self, provider: Any, audience: str, scope: str = "") -> None:
        self.provider = provider
        self.audience = audience
        self.scope = scope
        self.seen: list[tuple[int, str]] = []  # (status, reason) per request
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer "):
                    self._reply(401, {"error": "invalid_request", "reason": "missing_bearer"})
                    return
                try:
                    claims = service.provider.verify(auth[len("Bearer "):], service.audience, service.scope)
                except CredentialRejected as exc:
                    self._reply(401, {"error": "invalid_token", "reason": exc.reason})
                    return
                self._reply(200, {"ok": True, "sub": claims["sub"], "tool_call_id": claims.get("tool_call_id")})

            def _reply(self, status: int, body: dict) -> None:
                service.seen.append((status, body.get("reason", "ok")))
                data = json.dumps(body).encode()
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", f'Bearer error="{body["error"]}"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # silence: no request logs
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/resource"

    def __enter__(self) -> ResourceService:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def call(url: str, token: str | None) -> tuple[int, dict]:
    """GET ``url`` with the Bearer token; returns (status, json body)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
