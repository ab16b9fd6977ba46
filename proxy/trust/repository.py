"""What a verified GUN says: which tag is which digest, and by which role.

Built once per refresh from a ``TrustedSet``; answering a request is then a
dictionary lookup. Tags are resolved the way the docker CLI did: the first role
of the lookup order that signs the tag wins (``targets/releases``, then
``targets``).
"""

from dataclasses import dataclass, field

from proxy.trust.errors import TagNotSigned, VerificationFailed
from proxy.trust.metadata import paused_gc
from proxy.trust.trusted_set import Target, TrustedSet

DEFAULT_ROLE_ORDER = ("targets/releases", "targets")


@dataclass(frozen=True)
class TrustedRepository:
    """The signed tags of one GUN, and why a tag may be missing."""

    gun: str
    tags: dict[str, Target]
    digests: dict[str, frozenset[int]]  # every length signed for a digest: one signer may have got it wrong
    skipped: dict[str, VerificationFailed] = field(default_factory=dict)
    outside_paths: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        gun: str,
        trusted: TrustedSet,
        order: tuple[str, ...],
        skipped: dict[str, VerificationFailed],
    ) -> "TrustedRepository":
        """Resolve every tag once. ``skipped`` holds roles that failed their checks."""
        tags: dict[str, Target] = {}
        with paused_gc():
            for role in reversed(order):
                tags.update(trusted.signed_by(role))
        outside = {
            name: role
            for role in order
            for name in trusted.listed_by(role)
            if name not in tags and trusted.outside_paths(role, name)
        }
        digests: dict[str, frozenset[int]] = {}
        for target in tags.values():
            digests[target.digest] = digests.get(target.digest, frozenset()) | {target.length}
        return cls(gun=gun, tags=tags, digests=digests, skipped=dict(skipped), outside_paths=outside)

    def resolve(self, tag: str) -> Target:
        """The signed target of ``tag``; a refusal that says why there is none."""
        target = self.tags.get(tag)
        if target is not None:
            return target
        if tag in self.outside_paths:
            role = self.outside_paths[tag]
            raise VerificationFailed(role, "paths", f"signs {tag!r} outside the paths delegated to it", self.gun)
        if self.skipped:
            role, error = next(iter(self.skipped.items()))
            raise VerificationFailed(role, error.check, error.detail, self.gun)
        raise TagNotSigned(self.gun, tag)

