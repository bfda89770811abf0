"""Cost of a just-in-time credential per tool step: mint + record, verify, revoke.

Run: ``python bench/credentials.py [--n 500] [--db PATH]``

Measures, per step, on a SQLite file with the checkpointer's durability
settings (WAL, synchronous=FULL, BEGIN IMMEDIATE):

* ``issue``  — validate, mint the ES256 RFC 9068 token, insert the lease row
* ``verify`` — resource-side check: signature, claims, revocation-list read
* ``revoke`` — put the lease on the revocation list (one UPDATE, fsynced)
* ``step``   — issue + verify + revoke, i.e. the whole per-step overhead

plus the pure crypto (``mint`` = ES256 sign, ``verify_sig`` = verify without the
database) to separate CPU from fsync cost. The event sink here is a no-op: the
ledger's append cost is measured by the ledger benchmark, not double counted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from langgraph_warden.checkpointers.engine import make_engines
from langgraph_warden.checkpointers.leases import SqlLeaseStore
from langgraph_warden.checkpointers.schema import metadata
from langgraph_warden.guards.credentials import CredentialBroker, CredentialRequest, LocalTokenProvider
from langgraph_warden.identity import EphemeralWorkloadKeyStore, LocalIdentityProvider, decode_verified


class NullSink:
    """No-op EventSink: the benchmark measures the broker, not the ledger."""

    def append(self, thread_id, drafts):
        return []

    async def aappend(self, thread_id, drafts):
        return []


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="iterations (default 500)")
    ap.add_argument("--db", type=Path, default=None, help="SQLite file (default: a temp file)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    db = args.db or Path(tmp.name) / "bench.db"
    engine, _ = make_engines(f"sqlite:///{db}")
    metadata.create_all(engine)
    store = SqlLeaseStore(engine)
    identity = LocalIdentityProvider("spiffe://bench.local/agent", EphemeralWorkloadKeyStore())
    local = LocalTokenProvider(identity, "https://warden.bench", store)
    broker = CredentialBroker([local], NullSink(), max_ttl_seconds=300, lease_store=store)
    jwks = identity.jwks()

    times: dict[str, list[float]] = {k: [] for k in ("mint", "verify_sig", "issue", "verify", "revoke", "step")}

    def timed(name: str, fn: Callable[[], object]) -> object:
        t0 = time.perf_counter_ns()
        out = fn()
        times[name].append((time.perf_counter_ns() - t0) / 1000.0)
        return out

    from datetime import datetime, timedelta, timezone

    for i in range(args.n + 20):  # first 20 are warm-up
        now = datetime.now(timezone.utc)
        req = CredentialRequest(f"x{i}", "t", "c", "tool", "api", ("read",), now, now + timedelta(seconds=60))
        minted = timed("mint", lambda: local.acquire(req)).reveal()  # type: ignore[union-attr]
        timed("verify_sig", lambda: decode_verified(minted, jwks, typs=("at+jwt",), error=ValueError))

        t0 = time.perf_counter_ns()
        lease = timed("issue", lambda: broker.issue("bench-thread", f"call-{i}", "api", ["read"]))
        timed("verify", lambda: local.verify(lease.reveal(), "api", "read"))  # type: ignore[union-attr]
        timed("revoke", lambda: broker.revoke(lease))  # type: ignore[arg-type]
        times["step"].append((time.perf_counter_ns() - t0) / 1000.0)

    print(f"credentials per step, n={args.n}, SQLite WAL synchronous=FULL ({db.name}); microseconds")
    print(f"{'operation':<12}{'p50 µs':>10}{'p95 µs':>10}{'mean µs':>10}")
    for name, samples in times.items():
        s = samples[20:]
        print(f"{name:<12}{pct(s, 0.50):>10.0f}{pct(s, 0.95):>10.0f}{statistics.fmean(s):>10.0f}")
    # Every minted token is registered for scrubbing until it expires (+ margin), so the process holds
    # more live secrets as the run goes on: minting must not get dearer with them.
    from langgraph_warden.redaction import registry

    first, last = times["mint"][20:70], times["mint"][-50:]
    print(f"mint p50 with the first 50 / the last 50 tokens: {statistics.median(first):.0f} / "
          f"{statistics.median(last):.0f} µs ({len(registry)} live secrets registered at the end)")
    engine.dispose()
    tmp.cleanup()


if __name__ == "__main__":
    main()
