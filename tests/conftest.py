"""Session fixtures: one seeded sandbox (real registry + notary-server) and pullgate in front."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realenv.pullgate import Proxy, start_proxy
from tests.realenv.sandbox import SEED_TOOLS, Sandbox, seed_sandbox
from tests.realenv.services import Containerd, start_containerd
from tests.realenv.testing import components, needs


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    needs(*SEED_TOOLS)
    with components():
        world = seed_sandbox(tmp_path_factory.mktemp("sandbox"))
    with world:
        yield world


@pytest.fixture(scope="session")
def proxy(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    running = start_proxy(tmp_path_factory.mktemp("pullgate"), sandbox.registry.url, sandbox.notary.url,
                          sandbox.ca.ca_cert)
    yield running
    running.stop()


@pytest.fixture
def fresh_proxy(sandbox: Sandbox, tmp_path: Path) -> Iterator[Proxy]:
    """A proxy with an empty state dir and cache, for tests that change trust data."""
    running = start_proxy(tmp_path, sandbox.registry.url, sandbox.notary.url, sandbox.ca.ca_cert,
                          extra=("--refresh-interval", "0"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def containerd_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """One standalone containerd for every ctr test; tests remove the images they pull."""
    needs("containerd", "ctr")
    with components():
        daemon = start_containerd(tmp_path_factory.mktemp("containerd"))
    yield daemon
    daemon.stop()
