"""Trusted state per GUN on disk: the trusted root and the highest role versions seen.

One JSON file a GUN. Writers take an exclusive ``flock`` on a lock file beside
it, merge with what is there (highest version of each role wins, and a root
never goes back to an older version), write a temporary file, fsync and
rename it into place: several workers or replicas sharing the directory never
see half a file, and never lower each other's rollback bounds.
"""

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from proxy.trust.errors import TrustError


MAX_STEM = 200


@dataclass(frozen=True)
class StoredTrust:
    root: bytes
    root_version: int
    versions: dict[str, int]


class StateError(TrustError):
    """The state of a GUN cannot be read or written; trust must not silently restart."""


class TrustStore:
    """Reads and writes ``<state dir>/trust/<quoted GUN>.json``.

    A GUN trusted before is never "never seen" again: were its file to vanish (the
    directory cleared while pullgate runs), trusting whatever root the server then
    offers would undo the rollback and rotation checks. Its lock file, left beside it
    by every write, marks it for every process sharing the directory; the GUNs a
    process read or wrote mark it for that process, should the lock go too.
    """

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "trust"
        self._known: set[str] = set()

    def path(self, gun: str) -> Path:
        return self.directory / (self._stem(gun) + ".json")

    def _lock_path(self, gun: str) -> Path:
        return self.directory / (self._stem(gun) + ".lock")

    @staticmethod
    def _stem(gun: str) -> str:
        """The GUN, quoted; a GUN too long for a file name goes by its SHA-256 instead."""
        quoted = quote(gun, safe="")
        return quoted if len(quoted) <= MAX_STEM else "sha256-" + hashlib.sha256(gun.encode()).hexdigest()

    def anew(self, gun: str) -> str:
        """How an operator starts a GUN over: every trace of it goes."""
        restart = " and restart pullgate" if gun in self._known else ""
        return (f"to trust this GUN anew, remove {self.path(gun).name} and {self._lock_path(gun).name} "
                f"from {self.directory}{restart}")

    def load(self, gun: str) -> StoredTrust | None:
        """The stored state, or None for a GUN never seen."""
        stored = self._read(gun)
        if stored is None and self._lock_path(gun).exists():
            stored = self._read_after_writer(gun)
            if stored is None:
                raise StateError(f"trusted state {self.path(gun)} has vanished; restore it, or, {self.anew(gun)}")
        if stored is None and gun in self._known:
            raise StateError(f"trusted state {self.path(gun)} has vanished with its lock file; restore it, "
                             "or restart pullgate to trust this GUN anew")
        if stored is not None:
            self._known.add(gun)
        return stored

    def _read_after_writer(self, gun: str) -> StoredTrust | None:
        """Read again once a process writing the GUN's first state (it holds the lock) is done."""
        try:
            with open(self._lock_path(gun), "r") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH)
                return self._read(gun)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"trusted state lock {self._lock_path(gun)} cannot be read: {exc.strerror}") from None

    def _read(self, gun: str) -> StoredTrust | None:
        path = self.path(gun)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"trusted state {path} cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise StateError(f"trusted state {path} is not UTF-8; {self.anew(gun)}") from None
        try:
            document = json.loads(text)
            versions = {str(k): int(v) for k, v in document["versions"].items()}
            return StoredTrust(root=document["root"].encode("utf-8"), root_version=int(document["root_version"]),
                               versions=versions)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
            raise StateError(f"trusted state {path} is unreadable ({exc}); {self.anew(gun)}") from None

    def save(self, gun: str, state: StoredTrust) -> StoredTrust:
        """Merge ``state`` into what is stored and write the result; returns it."""
        try:
            return self._save(gun, state)
        except OSError as exc:
            raise StateError(f"cannot write trusted state in {self.directory}: {exc.strerror or exc}") from None

    def _save(self, gun: str, state: StoredTrust) -> StoredTrust:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked(gun):
            current = self._read(gun)
            merged = state if current is None else _merge(current, state)
            document = {"gun": gun, "root": merged.root.decode("utf-8"), "root_version": merged.root_version,
                        "versions": merged.versions}
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(document, handle, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self.path(gun))
            except BaseException:
                os.unlink(temporary)
                raise
        self._known.add(gun)
        return merged

    @contextmanager
    def _locked(self, gun: str) -> Iterator[None]:
        with open(self._lock_path(gun), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _merge(current: StoredTrust, new: StoredTrust) -> StoredTrust:
    versions = dict(current.versions)
    for role, version in new.versions.items():
        versions[role] = max(version, versions.get(role, 0))
    newer_root = new if new.root_version >= current.root_version else current
    return StoredTrust(root=newer_root.root, root_version=newer_root.root_version, versions=versions)
