"""Custom auth for the example server: bearer tokens mapped to people (``langgraph_sdk.Auth``).

With auth configured, warden takes a run's owner and an approval's approver from the user the
server authenticated — never from a field a client fills in. The tokens come from
``$WARDEN_EXAMPLE_TOKENS`` (JSON ``{"token": "alice@example.com", ...}``): a stand-in for your
identity provider (verify a JWT here in production).
"""

from __future__ import annotations

import json
import os

from langgraph_sdk import Auth

auth = Auth()


@auth.authenticate
async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
    tokens = json.loads(os.environ.get("WARDEN_EXAMPLE_TOKENS") or "{}")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or token not in tokens:
        raise Auth.exceptions.HTTPException(status_code=401, detail="send Authorization: Bearer <token>")
    return {"identity": tokens[token]}
