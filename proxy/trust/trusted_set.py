"""The verified trust data of one GUN, built one role at a time in TUF order.

Each ``update_*`` takes the bytes of one downloaded file, checks it against
what is already trusted (signatures by the keys the delegating role names, up
to its threshold; expiry; the hash and length its parent lists; no version
older than one seen before) and only then trusts it. Loads out of order are
refused. Nothing here does I/O: the caller fetches, and passes the time in.
"""

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.trust.errors import VerificationFailed
from proxy.trust.keys import PublicKey, UnusableKey
from proxy.trust.metadata import (
    Delegation,
    Envelope,
    FileMeta,
    RoleKeys,
    Snapshot,
    Targets,
    Timestamp,
    parse_envelope,
    parse_root,
    parse_snapshot,
    parse_targets,
    parse_timestamp,
    paused_gc,
)

TOP_TARGETS = "targets"


@dataclass(frozen=True)
class Target:
    """A tag as a trusted role signs it."""

    name: str
    sha256: str
    length: int
    role: str

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


def check_signatures(envelope: Envelope, keys: Mapping[str, PublicKey], role_keys: RoleKeys) -> None:
    """Refuse unless ``role_keys.threshold`` distinct keys of the role signed the file.

    Signatures by other keys are not counted but do not spoil the file (a root
    in rotation carries the old keys' signatures too); when the threshold is
    not met, the message says what was wrong with each signature.
    """
    valid: set[str] = set()
    problems: list[str] = []
    for signature in envelope.signatures:
        short = signature.keyid[:12]
        if signature.keyid not in role_keys.keyids:
            problems.append(f"key {short} is not a key of this role")
            continue
        key = keys.get(signature.keyid)
        if key is None:
            problems.append(f"key {short} is named by the role but not listed")
            continue
        try:
            good = key.verify(signature.method, signature.sig, envelope.canonical)
        except UnusableKey as exc:
            problems.append(f"key {short}: {exc}")
            continue
        if good:
            valid.add(signature.keyid)
        else:
            problems.append(f"signature by key {short} does not verify")
    if len(valid) < role_keys.threshold:
        detail = f"{len(valid)} valid signature(s) of the {role_keys.threshold} required"
        if problems:
            detail += " (" + "; ".join(problems) + ")"
        raise VerificationFailed(envelope.role, "signature", detail)


class TrustedSet:
    """Owns the trusted metadata of one GUN; see the module docstring."""

    def __init__(
        self,
        root_data: bytes,
        now: int,
        previous_versions: Mapping[str, int] | None = None,
    ) -> None:
        """Start from a root that is already trusted (pinned, or first seen).

        ``now`` is nanoseconds since the epoch; ``previous_versions`` holds the
        highest version of each role trusted before, to refuse rollbacks.
        """
        self.now = now
        self.previous = dict(previous_versions or {})
        envelope = parse_envelope("root", root_data)
        root = parse_root(envelope)
        check_signatures(envelope, root.keys, root.roles["root"])
        self.root_data = root_data
        self.root = root
        self._check_version("root", root.version)
        self.timestamp: Timestamp | None = None
        self.snapshot: Snapshot | None = None
        self.targets: dict[str, Targets] = {}
        self._chains: dict[str, tuple[Delegation, ...]] = {}

    # -- root ---------------------------------------------------------------

    def update_root(self, data: bytes) -> None:
        """Move to the next root: signed by a threshold of the old root's keys and of its own."""
        if self.timestamp is not None:
            raise VerificationFailed("root", "order", "root must be updated before timestamp")
        envelope = parse_envelope("root", data)
        new = parse_root(envelope)
        if new.version != self.root.version + 1:
            raise VerificationFailed(
                "root", "version", f"version {new.version} does not follow trusted version {self.root.version}"
            )
        try:
            check_signatures(envelope, self.root.keys, self.root.roles["root"])
        except VerificationFailed as exc:
            raise VerificationFailed("root", "rotation", f"not signed by the trusted root keys: {exc.detail}") from None
        check_signatures(envelope, new.keys, new.roles["root"])
        self.root, self.root_data = new, data

    def check_root_fresh(self) -> None:
        """The final root must be unexpired; intermediate ones on a rotation walk need not be."""
        self._check_expiry("root", self.root.expires)

    # -- timestamp, snapshot, targets ------------------------------------------

    def update_timestamp(self, data: bytes) -> Timestamp:
        self.check_root_fresh()
        envelope = parse_envelope("timestamp", data)
        timestamp = parse_timestamp(envelope)
        self._check_top_role(envelope, timestamp.version, timestamp.expires)
        self.timestamp = timestamp
        return timestamp

    def update_snapshot(self, data: bytes) -> Snapshot:
        if self.timestamp is None:
            raise VerificationFailed("snapshot", "order", "timestamp must be loaded first")
        self._check_meta("snapshot", self.timestamp.snapshot, data)
        envelope = parse_envelope("snapshot", data)
        snapshot = parse_snapshot(envelope)
        self._check_top_role(envelope, snapshot.version, snapshot.expires)
        root_meta = snapshot.meta.get("root")
        if root_meta is not None:
            self._check_meta("root", root_meta, self.root_data)
        self.snapshot = snapshot
        return snapshot

    def update_targets(self, data: bytes) -> Targets:
        snapshot = self._snapshot_for(TOP_TARGETS)
        self._check_meta(TOP_TARGETS, snapshot.meta[TOP_TARGETS], data)
        with paused_gc():
            envelope = parse_envelope(TOP_TARGETS, data)
            targets = parse_targets(envelope)
        self._check_top_role(envelope, targets.version, targets.expires)
        self.targets[TOP_TARGETS] = targets
        self._chains[TOP_TARGETS] = ()
        return targets

    def update_delegation(self, role: str, data: bytes) -> Targets:
        """Trust a delegated targets role, checked with the keys its parent names."""
        parent_name, _, _ = role.rpartition("/")
        parent = self.targets.get(parent_name)
        if parent is None:
            raise VerificationFailed(role, "order", f"its parent {parent_name or '(none)'} is not loaded")
        delegation = parent.delegations.get(role)
        if delegation is None:
            raise VerificationFailed(role, "delegation", f"{parent_name} does not delegate to it")
        snapshot = self._snapshot_for(role)
        self._check_meta(role, snapshot.meta[role], data)
        with paused_gc():
            envelope = parse_envelope(role, data)
            targets = parse_targets(envelope)
        check_signatures(envelope, parent.delegation_keys, delegation.keys)
        self._check_version(role, targets.version)
        self._check_expiry(role, targets.expires)
        self.targets[role] = targets
        self._chains[role] = self._chains[parent_name] + (delegation,)
        return targets

    def recheck_expiry(self, now: int) -> None:
        """Re-apply the freeze check to everything trusted, at a later time."""
        self.now = now
        self.check_root_fresh()
        for role, loaded in (("timestamp", self.timestamp), ("snapshot", self.snapshot)):
            if loaded is not None:
                self._check_expiry(role, loaded.expires)
        for role, targets in self.targets.items():
            self._check_expiry(role, targets.expires)

    # -- answers ------------------------------------------------------------

    def delegated_in_snapshot(self, role: str) -> bool:
        """Whether the snapshot lists metadata for ``role`` (unpublished roles have none)."""
        return self.snapshot is not None and role in self.snapshot.meta

    def signed_by(self, role: str) -> dict[str, Target]:
        """The targets ``role`` signs that every delegation on its way lets it sign."""
        targets = self.targets.get(role)
        if targets is None:
            return {}
        chain = self._chains[role]
        signed: dict[str, Target] = {}
        for name, meta in targets.targets.items():
            sha256 = meta.hashes.get("sha256")
            if sha256 is None or not all(d.covers(name) for d in chain):
                continue
            signed[name] = Target(name=name, sha256=sha256.hex(), length=meta.length, role=role)
        return signed

    def listed_by(self, role: str) -> tuple[str, ...]:
        """Every target name ``role`` lists, trusted on its way or not."""
        targets = self.targets.get(role)
        return tuple(targets.targets) if targets is not None else ()

    def outside_paths(self, role: str, name: str) -> bool:
        """Whether ``role`` lists ``name`` although a delegation on its way does not allow it."""
        targets = self.targets.get(role)
        return (
            targets is not None
            and name in targets.targets
            and not all(d.covers(name) for d in self._chains[role])
        )

    def versions(self) -> dict[str, int]:
        """Highest trusted version of each role, merged with those seen before."""
        current = {"root": self.root.version}
        for name, role in (("timestamp", self.timestamp), ("snapshot", self.snapshot)):
            if role is not None:
                current[name] = role.version
        current.update({name: t.version for name, t in self.targets.items()})
        merged = dict(self.previous)
        for name, version in current.items():
            merged[name] = max(version, merged.get(name, 0))
        return merged

    # -- checks -------------------------------------------------------------

    def _snapshot_for(self, role: str) -> Snapshot:
        if self.snapshot is None:
            raise VerificationFailed(role, "order", "snapshot must be loaded first")
        if role not in self.snapshot.meta:
            raise VerificationFailed(role, "snapshot", "the snapshot does not list this role")
        return self.snapshot

    def _check_top_role(self, envelope: Envelope, version: int, expires: int) -> None:
        check_signatures(envelope, self.root.keys, self.root.roles[envelope.role])
        self._check_version(envelope.role, version)
        self._check_expiry(envelope.role, expires)

    def _check_meta(self, role: str, meta: FileMeta, data: bytes) -> None:
        problem = meta.mismatch(data)
        if problem:
            raise VerificationFailed(role, "hash", f"file differs from what its parent signed: {problem}")

    def _check_version(self, role: str, version: int) -> None:
        trusted = self.previous.get(role, 0)
        if version < trusted:
            raise VerificationFailed(role, "rollback", f"version {version} is older than trusted version {trusted}")

    def _check_expiry(self, role: str, expires: int) -> None:
        if expires <= self.now:
            raise VerificationFailed(role, "expired", f"expired at {_format_ns(expires)}")


def _format_ns(ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
