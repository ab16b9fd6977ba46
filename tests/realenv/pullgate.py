"""pullgate itself as a real process in front of a sandbox (for tests and ``make run``)."""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .procs import NetNS, Service, free_port, start_service, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proxy:
    """A running ``pullgate serve``; ``host`` goes into image references."""

    host: str
    url: str
    state_dir: Path
    service: Service

    def stop(self) -> None:
        self.service.stop()


def start_proxy(
    workdir: Path,
    registry_url: str,
    notary_url: str,
    notary_ca: Path,
    extra: Sequence[str] = (),
    netns: NetNS | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    address: str = "127.0.0.1",
) -> Proxy:
    """Start ``python -m proxy serve`` on a free loopback port and wait for ``/v2/``.

    ``env`` adds to the environment (``LD_PRELOAD`` of libfaketime runs it in the future).
    """
    port = port or free_port(address)
    host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    state_dir = workdir / "state"
    argv = [
        sys.executable, "-m", "proxy", "serve",
        "--listen", host, "--upstream", registry_url, "--notary", notary_url,
        "--notary-ca", str(notary_ca), "--state-dir", str(state_dir), *extra,
    ]
    if netns is not None:
        argv = netns.wrap(argv)
    environment = {**os.environ, **env} if env else None
    service = start_service("pullgate", argv, workdir / "pullgate.log", env=environment, cwd=REPO_ROOT)
    url = f"{scheme}://{host}"

    def ready() -> bool:
        if scheme == "https":  # it may want a client certificate: a listening port is enough
            socket.create_connection((address, port), timeout=2).close()
            return True
        try:
            with urllib.request.urlopen(f"{url}/v2/", timeout=2) as response:
                return response.status == 200
        except urllib.error.HTTPError as refused:  # 401 where client auth is on: it answers
            return refused.code == 401

    try:
        wait_until(ready if netns is None else lambda: netns.call(ready), 20, service, "GET /v2/ answers")
    except BaseException:
        service.stop()  # a proxy that never came up is not left running
        raise
    return Proxy(host=host, url=url, state_dir=state_dir, service=service)
