"""The README's Quickstart block, run verbatim; ``examples/quickstart.py`` end to end: crash, resume, verify."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "quickstart.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "120"},
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """The script run twice on one database file, once for the tests that only read the output:
    (db, first run on a fresh path, second run on the file the first one left)."""
    db = tmp_path_factory.mktemp("quickstart") / "qs.db"
    first = _run("--db", str(db))
    return db, first, _run("--db", str(db))


@pytest.mark.skipif(sys.platform == "win32", reason="the crash uses SIGKILL")
def test_quickstart_crashes_resumes_and_verifies(two_runs):
    db, proc, _second = two_runs
    out = proc.stdout
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr}"

    assert re.search(r"process 1 \(pid \d+\) died: exit status -9 \(killed by SIGKILL\)", out), out
    assert "resumed at ['charge_payment']" in out, out
    # Nodes 1-2 ran only in process 1; node 3 was cut off there and ran in process 2 with 4-5.
    rows = {m.group(1): (m.group(2).strip(), m.group(3).strip())
            for m in re.finditer(r"│ \d │ (\w+)\s*│ ([^│]+)│ ([^│]+)│", out)}
    assert rows == {
        "validate_order": ("ran", "-"),
        "price_order": ("ran", "-"),
        "charge_payment": ("started, killed", "ran"),
        "ship_order": ("-", "ran"),
        "notify_customer": ("-", "ran"),
    }, out
    assert "payment    : pay_O-1042_16560" in out
    assert "resume completed: yes" in out
    assert "public keys registered: 2" in out
    assert "heads signed by       : 2 key(s)" in out
    m = re.search(r"verification: OK — (\d+) events", out)
    assert m and int(m.group(1)) >= 10, out
    assert re.search(r"key_id    : ed25519:[0-9a-f]{32} \(ephemeral key of process 2: True\)", out), out
    assert re.search(r"hash      : sha256:[0-9a-f]{64}", out), out
    assert "crashed, resumed, verified" in out
    assert db.exists()


def test_quickstart_recreates_the_database_each_run(two_runs):
    _db, first, second = two_runs
    assert first.returncode == 0 and second.returncode == 0, second.stdout + second.stderr
    # A fresh file each run: still exactly one thread and two registered keys.
    assert "public keys registered: 2" in second.stdout


def readme_quickstart() -> str:
    """The first ``python`` block of the README's Quickstart section, exactly as a reader copies it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Quickstart has no python block"
    return match.group(1)


def test_readme_quickstart_runs_verbatim(tmp_path):
    code = readme_quickstart()
    # The public API comes from the top-level package; only test doubles come from a submodule.
    assert not re.findall(r"from langgraph_warden\.(?!testing\b)", code), code
    script = tmp_path / "quickstart.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, encoding="utf-8", timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "lookup_customer authorised+completed" in proc.stdout, proc.stdout
    assert "issue_refund authorised+completed bob@example.com" in proc.stdout, proc.stdout
    assert (tmp_path / "agent.db").exists()
