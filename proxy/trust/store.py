"""Trusted state per GUN on disk: the root trusted first, and role versions seen.

One JSON file a GUN, replaced atomically (write a temporary file in the same
directory, fsync, rename), so a reader in another worker never sees half a
file. The trusted root is what later roots must be signed by.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


@dataclass(frozen=True)
class StoredTrust:
    root: bytes
    versions: dict[str, int]


class TrustStore:
    """Reads and writes ``<state dir>/trust/<quoted GUN>.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "trust"

    def path(self, gun: str) -> Path:
        return self.directory / (quote(gun, safe="") + ".json")

    def load(self, gun: str) -> StoredTrust | None:
        """The stored state, or None for a GUN never seen (or a file that is unreadable)."""
        try:
            document = json.loads(self.path(gun).read_text(encoding="utf-8"))
            versions = {str(k): int(v) for k, v in document["versions"].items()}
            return StoredTrust(root=document["root"].encode("utf-8"), versions=versions)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreCorrupt(f"trusted state {self.path(gun)} is unreadable ({exc}); remove it to trust anew") from None

    def save(self, gun: str, state: StoredTrust) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        document = {"gun": gun, "root": state.root.decode("utf-8"), "versions": state.versions}
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


class StoreCorrupt(Exception):
    """The state file of a GUN cannot be read; trust must not silently restart."""
