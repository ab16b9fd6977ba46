"""Basic auth of clients to pullgate (off by default: mirror use is anonymous).

Passwords are checked against an htpasswd file of bcrypt hashes
(``htpasswd -B``). bcrypt is slow on purpose, so a verified pair is
remembered for a while by a keyed hash of it, never in the clear; a failed
one is never remembered. Client credentials stay here: they are never
forwarded upstream and never logged.
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from cachetools import TTLCache

from proxy.errors import RegistryError

log = logging.getLogger("pullgate.auth")
REMEMBER_SECONDS = 300
BCRYPT_MAX_PASSWORD = 72  # bcrypt reads no further; htpasswd cuts there too


@dataclass
class ClientAuth:
    users: dict[str, bytes]
    realm: str

    def __post_init__(self) -> None:
        self._key = os.urandom(32)
        self._verified: TTLCache[bytes, float] = TTLCache(maxsize=4096, ttl=REMEMBER_SECONDS)
        # an unknown user costs one bcrypt too, so timing does not tell which users exist
        self._decoy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=_cost(self.users)))

    @classmethod
    def load(cls, htpasswd: Path, realm: str) -> "ClientAuth":
        return cls(users=read_htpasswd(htpasswd), realm=realm)

    async def check(self, authorization: str | None) -> None:
        """Return when the header carries a known user's password; else raise 401 with a challenge."""
        user, password = _basic(authorization)
        if user is None or password is None:
            raise self._challenge("authentication required")
        fingerprint = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        if fingerprint in self._verified:
            return
        stored = self.users.get(user)
        secret = password.encode()[:BCRYPT_MAX_PASSWORD]
        matched = await asyncio.to_thread(bcrypt.checkpw, secret, stored or self._decoy)
        if stored is None or not matched:
            log.warning("client login refused for user %r", user[:64])  # never the password
            raise self._challenge("unknown user or wrong password")
        self._verified[fingerprint] = time.monotonic()

    def _challenge(self, reason: str) -> RegistryError:
        return RegistryError(401, "UNAUTHORIZED", f"{reason}: pullgate wants a user name and password", {},
                             headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'})


def _basic(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header[:6].lower() == "basic ":
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


def read_htpasswd(path: Path) -> dict[str, bytes]:
    """``user:$2y$…`` lines; other hash kinds are refused, since only bcrypt is safe to keep."""
    users: dict[str, bytes] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.strip().partition(":")
        if not sep or not user or not _usable(hashed.encode()):
            raise ValueError(f"{path}:{number}: not a bcrypt entry (make it with htpasswd -B)")
        users[user] = hashed.encode()
    if not users:
        raise ValueError(f"{path} has no users: nobody could log in")
    return users


def _usable(hashed: bytes) -> bool:
    if not hashed.startswith((b"$2y$", b"$2b$", b"$2a$")):
        return False
    try:
        bcrypt.checkpw(b"probe", hashed)
    except ValueError:
        return False
    return True


def _cost(users: dict[str, bytes]) -> int:
    """The work factor of the entries (``$2y$10$…`` → 10), for the decoy hash."""
    for hashed in users.values():
        try:
            return max(4, min(int(hashed.split(b"$")[2]), 16))
        except (IndexError, ValueError):
            continue
    return 10
