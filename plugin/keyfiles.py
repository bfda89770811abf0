"""Signing and workload keys in private files: the key store for servers and CI.

Why: a server or a CI runner has no desktop keyring to unlock, and a keyring
backend that asks for a password (``keyrings.alt``'s ``EncryptedKeyring``)
cannot run without a terminal. Orchestrators already hand secrets to services
as files — systemd ``LoadCredential=`` / ``LoadCredentialEncrypted=``, a
Kubernetes Secret volume, Docker secrets — so the keys live in one directory:

- ``signing-key``: the Ed25519 seed that signs the history (base64, the same
  form as the keyring entry and ``warden approvals decide --key FILE``);
- ``workload-key``: the ES256 workload key and its retired public keys (JSON).

Trade-off: a file is protected by file permissions only — any process running
as its user (or root) can read it, as it can read an unlocked desktop keyring;
it is not encrypted at rest unless the disk or the orchestrator encrypts it.
So this store refuses a key file that group or others may access, and a
directory they may write without the sticky bit (a swapped key would sign as
this workload). Use it through ``WARDEN_KEY_DIR=DIR`` or
``Warden.open(url, key_dir=DIR)``; ``python -m langgraph_warden.keyfiles DIR``
creates both keys ahead (for a read-only mount) and prints their public ids.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from .errors import KeyStoreError
from .keys import SigningKey, private_from_seed_text, seed_text
from .workload_keys import RetainingWorkloadKeyStore, WorkloadKey, parse_workload_key_doc, workload_key_doc

__all__ = ["FileKeyStore", "FileWorkloadKeyStore", "SIGNING_KEY_FILE", "WORKLOAD_KEY_FILE", "init_key_dir"]

SIGNING_KEY_FILE = "signing-key"
WORKLOAD_KEY_FILE = "workload-key"
_POSIX = os.name == "posix"


def _check_directory(directory: Path) -> None:
    """Refuse a directory others may write to (they could swap the key), unless sticky (a shared tmpfs)."""
    if not _POSIX:
        return
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise KeyStoreError(f"key directory {directory}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise KeyStoreError(
            f"key directory {directory} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}), so "
            f"its keys could be swapped: chmod 700 {directory}"
        )


def read_key_file(path: Path) -> str | None:
    """The file's text, or None if it does not exist; KeyStoreError if others may access it."""
    _check_directory(path.parent)
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if _POSIX and mode & 0o077:
                raise KeyStoreError(
                    f"key file {path} is accessible to group or others (mode {mode:04o}); a key must be private "
                    f"to its user: chmod 600 {path} (a Kubernetes Secret volume: defaultMode: 0400)"
                )
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyStoreError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyStoreError(f"key file {path} is not a langgraph-warden key (not ASCII)") from None


def _fsync_directory(directory: Path) -> None:
    """Make a new or replaced file's name durable (POSIX); a crash must not lose a key already used to sign."""
    if not _POSIX:
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the file itself was synced
        pass
    finally:
        os.close(fd)


def write_key_file(path: Path, text: str, *, replace: bool) -> bool:
    """Write ``text`` atomically with mode 0600. Without ``replace`` an existing file wins: returns False.

    Why a hard link: two processes starting at once must end up with one key, and a reader must
    never see a half-written file.
    """
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_directory(directory)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)  # mode 0600
    except OSError as exc:
        raise KeyStoreError(
            f"cannot create a key in {directory}: {exc.strerror}. If it is a read-only mount, create the keys "
            f"where it is writable with `python -m langgraph_warden.keyfiles DIR` and provision both files"
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        _fsync_directory(directory)
        return True
    except OSError as exc:
        raise KeyStoreError(f"cannot write key file {path}: {exc.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class FileKeyStore:
    """The Ed25519 signing key in ``DIR/signing-key``, created on first use (mode 0600)."""

    kind = "file"

    def __init__(self, directory: str | os.PathLike[str], filename: str = SIGNING_KEY_FILE) -> None:
        self.path = Path(directory) / filename
        self._lock = threading.Lock()
        self._key: SigningKey | None = None

    def signing_key(self) -> SigningKey:
        with self._lock:
            if self._key is None:
                self._key = self._load_or_create()
            return self._key

    def _load_or_create(self) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        text = read_key_file(self.path)
        if text is None:
            write_key_file(self.path, seed_text(Ed25519PrivateKey.generate()), replace=False)
            text = read_key_file(self.path)  # another process may have won the race: use its key
            assert text is not None
        return SigningKey.from_private(private_from_seed_text(text, f"key file {self.path}"), self.kind)

    def rotate(self) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        with self._lock:
            private = Ed25519PrivateKey.generate()
            write_key_file(self.path, seed_text(private), replace=True)
            self._key = SigningKey.from_private(private, self.kind)
            return self._key

    def __repr__(self) -> str:
        return f"FileKeyStore({str(self.path)!r})"


class FileWorkloadKeyStore(RetainingWorkloadKeyStore):
    """The ES256 workload key (and retired public keys) in ``DIR/workload-key``, created on first use."""

    kind = "file"

    def __init__(self, directory: str | os.PathLike[str], filename: str = WORKLOAD_KEY_FILE) -> None:
        super().__init__()
        self.path = Path(directory) / filename

    def _load(self) -> None:
        text = read_key_file(self.path)
        if text is None:
            write_key_file(self.path, workload_key_doc(ec.generate_private_key(ec.SECP256R1()), []), replace=False)
            text = read_key_file(self.path)
            assert text is not None
        private, self._retired = parse_workload_key_doc(text, f"key file {self.path}")
        self._key = WorkloadKey.from_private(private, self.kind)

    def _save(self, private: ec.EllipticCurvePrivateKey, retired: list[dict[str, str]]) -> None:
        write_key_file(self.path, workload_key_doc(private, retired), replace=True)

    def __repr__(self) -> str:
        return f"FileWorkloadKeyStore({str(self.path)!r})"


def init_key_dir(directory: str | os.PathLike[str]) -> tuple[str, str]:
    """Create (or load) both keys in ``directory``; return their public ids (signing key_id, workload kid)."""
    return FileKeyStore(directory).signing_key().key_id, FileWorkloadKeyStore(directory).workload_key().kid


def main(argv: list[str] | None = None) -> int:
    """``python -m langgraph_warden.keyfiles DIR``: create the keys once; print only public ids."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m langgraph_warden.keyfiles DIR   (creates DIR/signing-key and DIR/workload-key)",
              file=sys.stderr)
        return 2
    try:
        key_id, kid = init_key_dir(args[0])
    except KeyStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"signing key  : {key_id}  ({Path(args[0]) / SIGNING_KEY_FILE})")
    print(f"workload key : {kid}  ({Path(args[0]) / WORKLOAD_KEY_FILE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
