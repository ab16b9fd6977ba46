"""The notary server client: fetches a GUN's role files and feeds the trusted set.

This is the only trust module that does I/O. It downloads in TUF order, each
file bounded by the length its parent signed (or a fixed cap), asks for
snapshot, targets and delegations by checksum as the notary client does, keeps
the verified answer in memory for ``refresh_interval`` seconds, then re-checks
the timestamp alone, and lets concurrent cold lookups of one GUN fetch once.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from cachetools import LRUCache

from proxy.auth import AuthFailed
from proxy.httpclient import describe, host_of
from proxy.singleflight import SingleFlight
from proxy.trust.errors import NoTrustData, TrustServerUnavailable, UnreadableFile, VerificationFailed
from proxy.trust.metadata import FileMeta, parse_envelope, parse_root
from proxy.trust.pinning import Pinning, check_root
from proxy.trust.repository import DEFAULT_ROLE_ORDER, TrustedRepository
from proxy.trust.store import StateError, StoredTrust, TrustStore
from proxy.trust.trusted_set import TOP_TARGETS, TrustedSet

TIMESTAMP_MAX_BYTES = 1 << 20
CACHED_GUNS = 4096
log = logging.getLogger("pullgate.trust")


@dataclass(frozen=True)
class NotarySettings:
    """``grace``: seconds past the refresh interval that trusted answers may still be
    used while the trust server cannot be reached (0: fail closed at once).
    ``role_orders``: per GUN, the roles that may vouch for a tag."""

    url: str
    refresh_interval: float = 30.0
    role_order: tuple[str, ...] = DEFAULT_ROLE_ORDER
    role_orders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    max_metadata_bytes: int = 100 << 20
    grace: float = 0.0
    download_timeout: float = 10.0
    pinning: Pinning = field(default_factory=Pinning)

    def order(self, gun: str) -> tuple[str, ...]:
        return self.role_orders.get(gun, self.role_order)


class DownloadBudget:
    """Bytes of trust files on their way in at once, over every GUN of one trust server.

    Each file has its bound, but repository names are the clients' to choose: many
    cold lookups at once, each filling its bound, would add up without one.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


@dataclass
class _Entry:
    repository: TrustedRepository
    trusted: TrustedSet
    timestamp: bytes
    checked: float


class NotaryClient:
    """Answers "what does the trust data of this GUN sign?", verified, from one notary server."""

    def __init__(
        self,
        settings: NotarySettings,
        store: TrustStore,
        http: httpx.AsyncClient,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings = settings
        self.store = store
        self.http = http
        self.clock = clock
        self.base = settings.url.rstrip("/")
        self.server = host_of(settings.url)
        self._cache: LRUCache[str, _Entry] = LRUCache(maxsize=CACHED_GUNS)
        self._flight: SingleFlight[TrustedRepository] = SingleFlight()
        self._budget = DownloadBudget(settings.max_metadata_bytes)

    async def repository(self, gun: str) -> TrustedRepository:
        """The verified trust data of ``gun``; raises a ``TrustError`` when there is none."""
        entry = self._cache.get(gun)
        if entry is not None and time.monotonic() - entry.checked < self.settings.refresh_interval:
            return entry.repository
        return await self._flight.run(gun, lambda: self._refresh(gun))

    async def _refresh(self, gun: str) -> TrustedRepository:
        """Bring the cached answer up to date; on any failure forget it (fail closed)."""
        previous = self._cache.get(gun)
        try:
            entry = await self._revalidate(gun, previous)
        except UnreadableFile as exc:  # before VerificationFailed, whose kind it is: no check failed
            return self._outage(gun, previous, TrustServerUnavailable(
                gun, self.server, f"{exc.role}: the answer is not trust data ({exc.detail})"))
        except TrustServerUnavailable as exc:
            return self._outage(gun, previous, exc)
        except VerificationFailed as exc:
            self._cache.pop(gun, None)
            raise exc.for_gun(gun) from None
        except Exception:
            self._cache.pop(gun, None)
            raise
        self._cache[gun] = entry
        return entry.repository

    def _outage(self, gun: str, previous: _Entry | None, exc: TrustServerUnavailable) -> TrustedRepository:
        """The trusted answer from before, while the grace period allows; otherwise the refusal."""
        if previous is not None and self._within_grace(previous):
            log.warning("%s; answering from trusted state checked %.0fs ago", exc, time.monotonic() - previous.checked)
            return previous.repository
        self._cache.pop(gun, None)
        raise exc

    def _within_grace(self, entry: _Entry) -> bool:
        """Whether an outage may be bridged: inside the grace period and nothing trusted has expired."""
        if time.monotonic() - entry.checked > self.settings.refresh_interval + self.settings.grace:
            return False
        try:
            entry.trusted.recheck_expiry(self.clock())
        except VerificationFailed:
            return False
        return True

    async def _revalidate(self, gun: str, entry: _Entry | None) -> _Entry:
        """With an earlier answer, an unchanged timestamp is all that must be fetched."""
        timestamp = None
        if entry is not None:
            timestamp = await self._download(gun, "timestamp.json", "timestamp", TIMESTAMP_MAX_BYTES)
            if timestamp == entry.timestamp:
                entry.trusted.recheck_expiry(self.clock())
                entry.checked = time.monotonic()
                return entry
        return await self._update(gun, timestamp)

    async def _update(self, gun: str, timestamp: bytes | None = None) -> _Entry:
        """The full walk: root, timestamp, snapshot, targets, the delegations needed.

        A timestamp just fetched to see whether anything changed is used, not fetched again; it is
        still checked only after the root, in TUF order.
        """
        root = await self._download(gun, "root.json", "root", self.settings.max_metadata_bytes)
        if root is None:
            raise NoTrustData(gun, self.server, trusted_before=self.store.load(gun) is not None)
        trusted = await self._trusted_root(gun, root)
        if timestamp is None:
            timestamp = await self._required(gun, "timestamp.json", "timestamp", TIMESTAMP_MAX_BYTES)
        trusted.update_timestamp(timestamp)
        assert trusted.timestamp is not None
        snapshot = trusted.update_snapshot(await self._by_checksum(gun, "snapshot", trusted.timestamp.snapshot))
        trusted.update_targets(await self._by_checksum(gun, TOP_TARGETS, snapshot.meta[TOP_TARGETS]))
        skipped = await self._load_delegations(gun, trusted)
        self.store.save(gun, StoredTrust(root=trusted.root_data, root_version=trusted.root.version,
                                         versions=trusted.versions()))
        repository = TrustedRepository.build(gun, trusted, self.settings.order(gun), skipped)
        return _Entry(repository=repository, trusted=trusted, timestamp=timestamp, checked=time.monotonic())

    async def _trusted_root(self, gun: str, served: bytes) -> TrustedSet:
        """Trust the first root seen (unless pins say otherwise); later, only signed rotations."""
        now = self.clock()
        stored = self.store.load(gun)
        if stored is None:
            trusted = TrustedSet(served, now)
            check_root(trusted.root, gun, self.settings.pinning, now)
            return trusted
        try:
            trusted = TrustedSet(stored.root, now, stored.versions)
        except VerificationFailed as exc:  # the file was changed on disk: not the trust server's doing
            raise StateError(f"trusted state {self.store.path(gun)} holds a root that fails its own checks "
                             f"({exc.check}: {exc.detail}); {self.store.anew(gun)}") from None
        if served != stored.root:
            await self._rotate(gun, trusted, served)
        check_root(trusted.root, gun, self.settings.pinning, now)
        return trusted

    async def _rotate(self, gun: str, trusted: TrustedSet, served: bytes) -> None:
        """Walk ``<version>.root.json`` from the trusted root to the served one, each step signed
        by a threshold of the previous root's keys and of its own."""
        latest = parse_root(parse_envelope("root", served)).version
        if latest <= trusted.root.version:
            raise VerificationFailed(
                "root", "rollback",
                f"the trust server's root (version {latest}) is not newer than the trusted root "
                f"(version {trusted.root.version}) but differs from it",
            )
        for version in range(trusted.root.version + 1, latest):
            step = await self._download(gun, f"{version}.root.json", "root", self.settings.max_metadata_bytes)
            if step is None:
                raise VerificationFailed("root", "rotation", f"intermediate root version {version} is missing")
            trusted.update_root(step)
        trusted.update_root(served)

    async def _load_delegations(self, gun: str, trusted: TrustedSet) -> dict[str, VerificationFailed]:
        """Load each delegated role of the lookup order (and its ancestors) that has data.

        A delegation that fails its checks is skipped, never trusted; the reason
        is kept so a tag it would have signed is refused with that reason.
        """
        skipped: dict[str, VerificationFailed] = {}
        for role in _with_ancestors(self.settings.order(gun)):
            parent, _, _ = role.rpartition("/")
            parent_targets = trusted.targets.get(parent)
            if parent_targets is None or role not in parent_targets.delegations:
                continue
            if not trusted.delegated_in_snapshot(role):
                continue
            assert trusted.snapshot is not None
            try:
                trusted.update_delegation(role, await self._by_checksum(gun, role, trusted.snapshot.meta[role]))
            except UnreadableFile:
                raise  # no answer from the server, not a delegation that failed its checks
            except VerificationFailed as exc:
                skipped[role] = exc
        return skipped

    async def _by_checksum(self, gun: str, role: str, meta: FileMeta) -> bytes:
        """Fetch ``<role>.<sha256>.json``, falling back to ``<role>.json``."""
        sha256 = meta.hashes.get("sha256")
        bound = min(meta.length, self.settings.max_metadata_bytes)  # a first-use root may sign any length
        if sha256 is not None:
            data = await self._download(gun, f"{role}.{sha256.hex()}.json", role, bound)
            if data is not None:
                return data
        return await self._required(gun, f"{role}.json", role, bound)

    async def _required(self, gun: str, filename: str, role: str, bound: int) -> bytes:
        data = await self._download(gun, filename, role, bound)
        if data is None:
            raise VerificationFailed(role, "missing", f"the trust server has no {filename}")
        return data

    async def _download(self, gun: str, filename: str, role: str, bound: int) -> bytes | None:
        """One file, read no further than ``bound`` bytes; None when the server has none."""
        url = f"{self.base}/v2/{gun}/_trust/tuf/{filename}"
        try:
            async with asyncio.timeout(self.settings.download_timeout), \
                    self.http.stream("GET", url, follow_redirects=True) as response:
                if response.status_code == 404:
                    return None
                if response.status_code == 401:
                    raise TrustServerUnavailable(
                        gun, self.server, f"{filename}: HTTP 401, the trust server wants credentials "
                        "(set upstream.notary_auth) or refused the ones given")
                if response.status_code != 200:
                    raise TrustServerUnavailable(gun, self.server, f"{filename}: HTTP {response.status_code}")
                return await self._read(gun, filename, role, bound, response)
        except TimeoutError:
            raise TrustServerUnavailable(gun, self.server, f"{filename}: no complete answer within "
                                         f"{self.settings.download_timeout:g}s") from None
        except AuthFailed as exc:
            raise TrustServerUnavailable(gun, self.server, f"{filename}: authentication failed: {exc}") from None
        except httpx.HTTPError as exc:
            hint = " (is notary_ca, or --notary-ca, the CA of the trust server?)" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else ""
            raise TrustServerUnavailable(gun, self.server, f"{filename}: {describe(exc)}{hint}") from None

    async def _read(self, gun: str, filename: str, role: str, bound: int, response: httpx.Response) -> bytes:
        """The body, no longer than ``bound`` and within the budget shared with the other downloads.

        Pieces are joined once at the end: a buffer grown piece by piece would hold up to
        twice its bytes while it is copied, which the budget would not see."""
        pieces: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                if size + len(chunk) > bound:
                    raise VerificationFailed(role, "length", f"{filename} is longer than its bound of {bound} bytes")
                if not self._budget.take(len(chunk)):
                    raise TrustServerUnavailable(
                        gun, self.server, f"{filename}: trust files on their way in at once would pass "
                        f"{self._budget.limit} bytes (trust.max_metadata_bytes); try again")
                pieces.append(chunk)
                size += len(chunk)
            return b"".join(pieces)
        finally:
            self._budget.give(size)
            pieces.clear()  # a refusal's traceback keeps this frame alive, perhaps until a collection


def _with_ancestors(order: tuple[str, ...]) -> list[str]:
    """Delegated roles to load, parents before children: ``a/b/c`` needs ``a/b`` first."""
    roles: list[str] = []
    for role in order:
        parts = role.split("/")
        for depth in range(2, len(parts) + 1):
            name = "/".join(parts[:depth])
            if name not in roles:
                roles.append(name)
    return roles
