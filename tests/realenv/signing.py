"""Docker Content Trust data made by the real tools (notary CLI, docker push).

Trust data is produced the way users produce it, so the proxy is tested
against genuine TUF metadata: ``NotaryCLI`` for notary-style repos (with or
without a server-held snapshot key and delegations) and
``docker_push_signed`` for what ``DOCKER_CONTENT_TRUST=1 docker push`` writes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from .procs import NetNS, clean_env, require_tool, run
from .services import Dockerd, NotaryServer

PASSPHRASES = {
    "NOTARY_ROOT_PASSPHRASE": "rootpass",
    "NOTARY_TARGETS_PASSPHRASE": "targetspass",
    "NOTARY_SNAPSHOT_PASSPHRASE": "snapshotpass",
    "NOTARY_DELEGATION_PASSPHRASE": "delegationpass",
}
"""Fixed, non-secret passphrases: notary reads them from env instead of a TTY."""

DOCKER_TRUST_PASSPHRASES = {
    "DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE": "rootpass",
    "DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE": "repopass",
}

DELEGATION_ROLE = "targets/releases"


def _roles_args(roles: Sequence[str] | None) -> list[str]:
    return [arg for role in roles or () for arg in ("--roles", role)]


class NotaryCLI:
    """The real ``notary`` client bound to one notary-server and a private trust dir.

    A client config is always passed with ``-c`` so the CLI never falls back
    to its built-in default server (notary.docker.io).
    """

    def __init__(self, workdir: Path, server: NotaryServer, netns: NetNS | None = None) -> None:
        self.workdir = workdir
        self.server = server
        self.netns = netns if netns is not None else server.netns
        self.trust_dir = workdir / "trust"
        self.keys_dir = workdir / "keys"
        self.trust_dir.mkdir(parents=True, exist_ok=True)
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "client-config.json"
        self.config_path.write_text(json.dumps({
            "trust_dir": str(self.trust_dir),
            "remote_server": {"url": server.url, "root_ca": str(server.ca_cert)},
        }, indent=2))

    def run(self, *args: str, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """``notary -c <our config> ARGS`` with passphrases in the environment."""
        argv = [require_tool("notary"), "-c", str(self.config_path), *args]
        return run(argv, env=clean_env(("NOTARY_",), **PASSPHRASES), netns=self.netns, check=check,
                   input_text=input_text)

    def init(self, gun: str) -> None:
        """Create root/targets/snapshot keys locally (snapshot stays client-side)."""
        self.run("init", gun)

    def rotate_snapshot_to_server(self, gun: str) -> None:
        """Let the server hold the snapshot key, as ``docker push`` sets repos up."""
        self.run("key", "rotate", gun, "snapshot", "-r")

    def publish(self, gun: str) -> None:
        self.run("publish", gun)

    def add_delegation(self, gun: str, role: str = DELEGATION_ROLE) -> None:
        """Create *role* for all paths and publish it.

        The key comes from openssl because ``notary key generate -o`` writes
        an encrypted PEM that ``notary key import`` rejects; notary
        re-encrypts the imported plain PEM with the delegation passphrase.
        """
        key, cert = self._delegation_keypair(gun, role)
        self.run("key", "import", str(key), "--role", role)
        self.run("delegation", "add", gun, role, str(cert), "--all-paths", "-p")

    def _delegation_keypair(self, gun: str, role: str) -> tuple[Path, Path]:
        """EC P-256 key + self-signed x509 cert (what notary delegations expect)."""
        stem = self.keys_dir / re.sub(r"[^A-Za-z0-9]+", "_", f"{gun}_{role}")
        key, cert = stem.with_suffix(".key"), stem.with_suffix(".crt")
        openssl = require_tool("openssl")
        run([openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)])
        run([openssl, "req", "-new", "-x509", "-key", str(key), "-out", str(cert),
             "-days", "3650", "-subj", f"/CN={role.rsplit('/', 1)[-1]}"])  # "/" would start a new RDN
        return key, cert

    def addhash(self, gun: str, tag: str, length: int, sha256_hex: str,
                roles: Sequence[str] | None = None) -> None:
        """Stage a target; publish() uploads it.  No roles = top-level targets."""
        self.run("addhash", gun, tag, str(length), "--sha256", sha256_hex.removeprefix("sha256:"),
                 *_roles_args(roles))

    def remove(self, gun: str, tag: str, roles: Sequence[str] | None = None) -> None:
        """Stage removal of a target; publish() uploads it."""
        self.run("remove", gun, tag, *_roles_args(roles))

    def lookup(self, gun: str, tag: str) -> subprocess.CompletedProcess[str]:
        """``notary lookup`` (not checked: a failure is a meaningful answer)."""
        return self.run("lookup", gun, tag, check=False)

    def list(self, gun: str) -> subprocess.CompletedProcess[str]:
        return self.run("list", gun, check=False)


def trust_env(notary_server: NotaryServer) -> dict[str, str]:
    """Variables that make the docker CLI enforce/produce content trust with our server."""
    return {"DOCKER_CONTENT_TRUST": "1", "DOCKER_CONTENT_TRUST_SERVER": notary_server.url,
            **DOCKER_TRUST_PASSPHRASES}


def install_notary_ca(dockerd: Dockerd, notary_server: NotaryServer) -> None:
    """The docker CLI trusts a notary server via <DOCKER_CONFIG>/tls/<host:port>/ca.crt."""
    target = dockerd.config_dir / "tls" / notary_server.host
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notary_server.ca_cert, target / "ca.crt")


def docker_push_signed(dockerd: Dockerd, notary_server: NotaryServer,
                       image_ref: str) -> subprocess.CompletedProcess[str]:
    """``DOCKER_CONTENT_TRUST=1 docker push`` of a local image: signs into ``targets``.

    The docker CLI creates the repo with a server-held snapshot key and puts
    the tag in the top-level targets role (no delegation).
    """
    install_notary_ca(dockerd, notary_server)
    return dockerd.docker("push", image_ref, env=trust_env(notary_server))
