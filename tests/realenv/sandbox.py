"""A seeded registry + notary-server pair: the fixture world for proxy tests.

``seed_sandbox`` starts both services on free loopback ports and fills them
with one image per trust situation the proxy must handle (signed in a
delegation, signed in top-level targets, signed by docker itself, pushed but
unsigned in a trusted repo, and a repo with no trust data at all).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

from .images import DEV_REF, ManifestInfo, build_oci_layout, manifest_info, oci_ref, push, push_docker_v2s2
from .procs import NetNS
from .services import CA, Dockerd, NotaryServer, Registry, make_ca, start_notary_server, start_registry
from .signing import DELEGATION_ROLE, NotaryCLI, docker_push_signed

TARGETS_ROLE = "targets"

SEED_TOOLS = ("docker-registry", "notary-server", "notary", "skopeo", "umoci", "openssl")
"""Executables seed_sandbox needs (dockerd seeding also needs docker/dockerd)."""


@dataclass(frozen=True)
class SeededImage:
    """One pushed tag and what the trust data says about it."""

    name: str  # repository path, e.g. "library/demo"
    tag: str
    ref: str  # full reference, e.g. "127.0.0.1:40123/library/demo:v1"
    digest: str
    length: int
    media_type: str
    signed: bool
    role: str | None  # TUF role holding the target, None when unsigned


@dataclass
class Sandbox:
    """Running services plus the inventory of seeded images ("demo:v1" -> image)."""

    workdir: Path
    registry: Registry
    notary: NotaryServer
    ca: CA
    images: dict[str, SeededImage]
    notary_cli: NotaryCLI
    dockerd: Dockerd | None = None  # borrowed, never stopped by the sandbox
    seconds: float = 0.0  # how long seeding took
    _owned: list[Any] = field(default_factory=list, repr=False)

    @property
    def netns(self) -> NetNS | None:
        return self.registry.netns

    def gun(self, name: str) -> str:
        """Globally unique name notary uses for repository *name*."""
        return f"{self.registry.host}/{name}"

    def stop(self) -> None:
        """Stop what seed_sandbox started, newest first; idempotent."""
        _stop_all(self._owned)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (for `make run` and debugging)."""
        return {
            "workdir": str(self.workdir),
            "registry": self.registry.url,
            "notary": self.notary.url,
            "ca_cert": str(self.ca.ca_cert),
            "notary_client_config": str(self.notary_cli.config_path),
            "docker_host": self.dockerd.host if self.dockerd else None,
            "seconds": round(self.seconds, 1),
            "images": {key: asdict(image) for key, image in self.images.items()},
        }


def _stop_all(things: list[Any]) -> None:
    while things:
        things.pop().stop()


def _key(name: str, tag: str) -> str:
    """Inventory key: "library/demo", "v1" -> "demo:v1"."""
    return f"{name.rsplit('/', 1)[-1]}:{tag}"


class _Seeder:
    """Pushes and signs; keeps the shared context out of every signature."""

    def __init__(self, workdir: Path, registry: Registry, cli: NotaryCLI, layout: Path) -> None:
        self.workdir = workdir
        self.registry = registry
        self.cli = cli
        self.layout = layout
        self.images: dict[str, SeededImage] = {}

    def gun(self, name: str) -> str:
        return f"{self.registry.host}/{name}"

    def push(self, name: str, tag: str, source: str) -> ManifestInfo:
        """Push layout ref *source*; "multi" as a whole index, "v2s2:<ref>" as docker schema2."""
        dest = f"{self.gun(name)}:{tag}"
        netns = self.registry.netns
        if source.startswith("v2s2:"):
            push_docker_v2s2(self.layout, source.removeprefix("v2s2:"), dest, self.workdir, netns)
        else:
            push(oci_ref(self.layout, source), dest, all_images=source == "multi",
                 workdir=self.workdir, netns=netns)
        return self.record(name, tag, None)

    def record(self, name: str, tag: str, role: str | None) -> ManifestInfo:
        """Read back what the registry serves and file it in the inventory."""
        info = manifest_info(self.registry.url, name, tag, self.registry.netns)
        self.images[_key(name, tag)] = SeededImage(
            name, tag, f"{self.gun(name)}:{tag}", info.digest, info.length, info.media_type,
            role is not None, role)
        return info

    def sign(self, name: str, tag: str, info: ManifestInfo, role: str) -> None:
        """Stage *tag* in *role* (publish separately) and mark it signed."""
        self.cli.addhash(self.gun(name), tag, info.length, info.sha256_hex,
                         None if role == TARGETS_ROLE else [role])
        self.record(name, tag, role)


def _seed_demo(s: _Seeder) -> None:
    """Docker-style repo: server snapshot key, tags in targets/releases; dev unsigned."""
    name = "library/demo"
    gun = s.gun(name)
    v1, multi = s.push(name, "v1", "amd64"), s.push(name, "multi", "multi")
    s.push(name, "dev", DEV_REF)
    s.cli.init(gun)
    s.cli.rotate_snapshot_to_server(gun)
    s.cli.publish(gun)
    s.cli.add_delegation(gun, DELEGATION_ROLE)
    s.sign(name, "v1", v1, DELEGATION_ROLE)
    s.sign(name, "multi", multi, DELEGATION_ROLE)
    s.cli.publish(gun)


def _seed_tsigned(s: _Seeder) -> None:
    """Plain `notary init` repo: client-held snapshot, tag in top-level targets."""
    name = "library/tsigned"
    info = s.push(name, "v1", "amd64")
    s.cli.init(s.gun(name))
    s.sign(name, "v1", info, TARGETS_ROLE)
    s.cli.publish(s.gun(name))


def _seed_notrust(s: _Seeder) -> None:
    """Docker v2 schema2 image in a repo that has no trust data at all."""
    s.push("library/notrust", "latest", "v2s2:amd64")


def _seed_dsigned(s: _Seeder, dockerd: Dockerd, notary: NotaryServer) -> None:
    """Let `docker push` with content trust create the trust data itself."""
    source, ref = f"{s.gun('library/demo')}:v1", f"{s.gun('library/dsigned')}:v1"
    dockerd.docker("pull", "-q", source)
    dockerd.docker("tag", source, ref)
    try:
        docker_push_signed(dockerd, notary, ref)
    finally:
        dockerd.docker("rmi", "-f", source, ref, check=False)
    s.record("library/dsigned", "v1", TARGETS_ROLE)


DSIGNED_KEY = "dsigned:v1"
"""Inventory key of the image that ``docker push`` with content trust signs."""


def seed_dsigned(sandbox: Sandbox, dockerd: Dockerd) -> SeededImage:
    """Seed ``library/dsigned:v1`` into a running *sandbox* with *dockerd*; idempotent.

    For a sandbox seeded without dockerd (the session fixture): *dockerd*
    pulls ``library/demo:v1`` straight from the registry (not through any
    proxy), re-tags it and pushes it with ``DOCKER_CONTENT_TRUST=1``, so the
    docker CLI creates the trust data.  The entry is added to
    ``sandbox.images``; *dockerd* stays the caller's (``sandbox.dockerd`` is
    not changed).  A second call returns the existing entry without pushing,
    since only the first dockerd's config holds the repository's keys.
    """
    if DSIGNED_KEY in sandbox.images:
        return sandbox.images[DSIGNED_KEY]
    if dockerd.netns is not sandbox.netns:
        raise ValueError("dockerd must share the sandbox's network namespace (or both run in none)")
    seeder = _Seeder(sandbox.workdir, sandbox.registry, sandbox.notary_cli, sandbox.workdir / "build" / "oci")
    _seed_dsigned(seeder, dockerd, sandbox.notary)
    sandbox.images.update(seeder.images)
    return sandbox.images[DSIGNED_KEY]


def _started(owned: list[Any], start: Callable[[], Any]) -> Any:
    """Start a service and remember it for cleanup."""
    thing = start()
    owned.append(thing)
    return thing


def seed_sandbox(workdir: Path, dockerd: Dockerd | None = None) -> Sandbox:
    """Start registry + notary-server in *workdir* and seed the standard images.

    If *dockerd* runs in a network namespace, both services are started in
    that namespace so dockerd can reach them.  Everything started here is
    stopped again if seeding fails.
    """
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    netns = dockerd.netns if dockerd else None
    owned: list[Any] = []
    try:
        registry = _started(owned, lambda: start_registry(workdir / "registry", netns))
        ca = make_ca(workdir / "certs")
        notary = _started(owned, lambda: start_notary_server(workdir / "notary-server", ca, netns))
        cli = NotaryCLI(workdir / "notary-client", notary)
        seeder = _Seeder(workdir, registry, cli, build_oci_layout(workdir / "build"))
        _seed_demo(seeder)
        _seed_notrust(seeder)
        _seed_tsigned(seeder)
        if dockerd is not None:
            _seed_dsigned(seeder, dockerd, notary)
    except BaseException:
        _stop_all(owned)
        raise
    return Sandbox(workdir, registry, notary, ca, seeder.images, cli, dockerd,
                   time.monotonic() - t0, owned)
