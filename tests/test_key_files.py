"""Keys without a keyring (issue 19, item 2): errors that name the fix, and a headless recipe that works.

The recipe is the README's "Keys on a server or in CI" block, run as written (only its directory
changed) in a process with no keyring backend, no terminal and no stdin.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from langgraph_warden.errors import ConfigurationError, KeyStoreError
from langgraph_warden.keyfiles import FileKeyStore, FileWorkloadKeyStore, init_key_dir
from langgraph_warden.keys import EphemeralKeyStore, verify_signature
from langgraph_warden.warden import Warden

REPO = Path(__file__).resolve().parents[1]
POSIX = os.name == "posix"


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'w.db'}"


# ------------------------------------------------------------------ messages name the fix


def test_only_a_signing_key_store_leads_to_the_fix_for_both_keys(tmp_path, no_keyring, monkeypatch):
    """Old: the advice `key_store=EphemeralKeyStore()` then failed on the workload key, whose message
    suggested a `key_store=EphemeralWorkloadKeyStore()` that Warden.open does not take."""
    monkeypatch.delenv("WARDEN_KEY_DIR", raising=False)
    with pytest.raises(KeyStoreError) as info:
        Warden.open(_sqlite(tmp_path), key_store=EphemeralKeyStore())
    msg = str(info.value)
    assert "workload key" in msg
    assert "Warden.open(url, ephemeral_keys=True), which covers both the signing key and the workload key" in msg
    assert "--ephemeral-keys" in msg and "WARDEN_KEY_DIR=DIR" in msg and "key_dir=DIR" in msg
    assert "key_store=EphemeralWorkloadKeyStore()" not in msg and "EncryptedKeyring" not in msg


def test_no_keyring_message_names_python_cli_and_server_fixes(tmp_path, no_keyring, monkeypatch):
    monkeypatch.delenv("WARDEN_KEY_DIR", raising=False)
    with pytest.raises(KeyStoreError) as info:
        Warden.open(_sqlite(tmp_path))
    msg = str(info.value)
    assert "no usable backend" in msg
    for fix in ("ephemeral_keys=True", "--ephemeral-keys", "WARDEN_KEY_DIR=DIR", "python -m langgraph_warden.keyfiles DIR"):
        assert fix in msg, fix
    assert "EncryptedKeyring" not in msg  # needs an unmentioned package and a password prompt


def test_key_dir_and_ephemeral_keys_are_exclusive(tmp_path):
    with pytest.raises(ConfigurationError, match="ephemeral_keys=True and key_dir"):
        Warden.open(_sqlite(tmp_path), ephemeral_keys=True, key_dir=tmp_path / "k")


# ------------------------------------------------------------------------ the file stores


def test_file_stores_create_once_persist_and_rotate(tmp_path):
    d = tmp_path / "keys"
    key_id, kid = init_key_dir(d)
    assert init_key_dir(d) == (key_id, kid)  # a second run loads, never replaces
    if POSIX:
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        for name in ("signing-key", "workload-key"):
            assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600
    store = FileKeyStore(d)
    key = store.signing_key()
    assert key.key_id == key_id and key.store_kind == "file"
    new = store.rotate()
    assert new.key_id != key_id and FileKeyStore(d).signing_key().key_id == new.key_id
    assert verify_signature(new.public_key, FileKeyStore(d).signing_key().sign(b"x"), b"x")
    wstore = FileWorkloadKeyStore(d)
    wnew = wstore.rotate()
    again = FileWorkloadKeyStore(d)
    assert again.workload_key().kid == wnew.kid
    assert [j["kid"] for j in again.public_jwks()] == [wnew.kid, kid]  # the retired key still verifies old tokens
    assert str(d / "signing-key") in repr(store) and (d / "signing-key").read_text() not in repr(store)


def test_concurrent_first_use_ends_with_one_key(tmp_path):
    d = tmp_path / "keys"
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        ids.append(FileKeyStore(d).signing_key().key_id)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 8
    assert sorted(p.name for p in d.iterdir()) == ["signing-key"]  # no temporary file left behind


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_a_key_file_others_can_read_is_refused(tmp_path):
    d = tmp_path / "keys"
    init_key_dir(d)
    os.chmod(d / "signing-key", 0o644)
    with pytest.raises(KeyStoreError, match=r"mode 0644.*chmod 600 .*signing-key"):
        FileKeyStore(d).signing_key()
    os.chmod(d / "workload-key", 0o640)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        FileWorkloadKeyStore(d).workload_key()


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_a_directory_others_can_write_is_refused_unless_sticky(tmp_path):
    d = tmp_path / "keys"
    init_key_dir(d)
    os.chmod(d, 0o770)
    with pytest.raises(KeyStoreError, match=r"writable by group or others.*chmod 700"):
        FileKeyStore(d).signing_key()
    os.chmod(d, 0o1777)  # a shared sticky tmpfs, as a Kubernetes Secret volume is mounted
    assert FileKeyStore(d).signing_key().store_kind == "file"


def test_a_corrupt_key_file_is_named_without_its_content(tmp_path):
    d = tmp_path / "keys"
    d.mkdir(mode=0o700)
    secret = "c2VjcmV0LW5vdC1hLWtleQ-SECRET"
    for name in ("signing-key", "workload-key"):
        (d / name).write_text(secret)
        os.chmod(d / name, 0o600)
    for load in (lambda: FileKeyStore(d).signing_key(), lambda: FileWorkloadKeyStore(d).workload_key()):
        with pytest.raises(KeyStoreError) as info:
            load()
        assert "is not a" in str(info.value) and secret not in str(info.value)


@pytest.mark.skipif(not POSIX or os.geteuid() == 0, reason="root ignores file modes")
def test_a_read_only_directory_says_how_to_provision_the_keys(tmp_path):
    d = tmp_path / "keys"
    d.mkdir(mode=0o500)
    try:
        with pytest.raises(KeyStoreError, match=r"read-only mount.*python -m langgraph_warden.keyfiles DIR"):
            FileKeyStore(d).signing_key()
    finally:
        os.chmod(d, 0o700)


# ------------------------------------------------------------- the README recipe, headless


def _readme_recipe() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Keys on a server or in CI", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section holds exactly one recipe"
    return blocks[0]


_GOVERNED_RUN = """
import sys
from langgraph_warden.warden import Warden
with Warden.open(sys.argv[1]) as w:
    w.start_run(sys.argv[2], owner="alice@example.com", intent="headless key check")
    head = w.ledger.head(sys.argv[2])
    assert w.verify().ok
    print("HEAD", head.key_id, head.key_store, w.identity.key_store.kind)
"""


def _headless(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """No keyring backend, no terminal (a new session has no controlling tty), no stdin."""
    return subprocess.run(
        args, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        start_new_session=True, cwd=REPO,
    )


def test_the_readme_recipe_works_without_keyring_or_terminal(tmp_path):
    key_dir = tmp_path / "warden-keys"
    recipe = _readme_recipe()
    assert "export WARDEN_KEY_DIR=" in recipe
    script = re.sub(r"export WARDEN_KEY_DIR=\S+", f"export WARDEN_KEY_DIR={key_dir}", recipe)
    db = _sqlite(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "WARDEN_KEY_DIR"}
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    # Without the recipe the same run fails, and says what to do.
    failed = _headless([sys.executable, "-c", _GOVERNED_RUN, db, "t0"], env)
    assert failed.returncode != 0 and "WARDEN_KEY_DIR" in failed.stderr, failed.stderr[-2000:]

    script = script.replace("python -m", f'"{sys.executable}" -m')  # this interpreter, as `python`
    step = f'{script}"{sys.executable}" -c \'{_GOVERNED_RUN}\' "{db}" "$1"\n'
    heads = []
    for thread in ("t1", "t2"):  # two processes: the second reuses the keys the first created
        proc = _headless(["bash", "-ec", step, "recipe", thread], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(r"signing key  : ed25519:[0-9a-f]{32}", proc.stdout), proc.stdout
        heads.append(re.search(r"HEAD (\S+) (\S+) (\S+)", proc.stdout).groups())
    assert heads[0] == heads[1] and heads[0][1:] == ("file", "file"), heads
    assert heads[0][0] in proc.stdout.split("HEAD")[0]  # the printed id is the key that signs

    # The CLI reads the same variable: a command that signs works headless too.
    env["WARDEN_KEY_DIR"] = str(key_dir)
    warden = [sys.executable, "-c", "from langgraph_warden.cli import main; main()"]
    cli = _headless([*warden, "credentials", "revoke-run", "t1", "--db", db], env)
    assert cli.returncode == 0, cli.stdout + cli.stderr
