"""Real daemons on loopback: docker-registry, notary-server, containerd, dockerd.

Each ``start_*`` picks a free port (or its own unix socket), keeps all state
in the given workdir, waits until the daemon answers, and returns a small
dataclass whose ``stop()`` stops exactly that process.  Services accept an
optional ``netns`` so they can share a private network namespace with
dockerd (see ``start_dockerd``).
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .procs import (
    NetNS,
    Service,
    clean_env,
    free_port,
    in_netns,
    require_tool,
    run,
    short_dir,
    start_netns,
    start_service,
    unmount_under,
    wait_until,
)

LOOPBACK = "127.0.0.1"


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """True when *url* answers 200 (used as a readiness probe)."""
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:
        return bool(resp.status == 200)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------
# docker-registry (distribution 2.8)
# ---------------------------------------------------------------------------


@dataclass
class Registry:
    """A plain-HTTP registry; ``host`` is what goes into image references."""

    host: str
    url: str
    service: Service
    netns: NetNS | None = None

    def stop(self) -> None:
        self.service.stop()


def _registry_config(storage: Path, addr: str, log_level: str, remote: str | None,
                     token_auth: Mapping[str, str] | None, tls: CA | None) -> str:
    """distribution config: filesystem storage, deletes allowed, one listener; a pull-through cache of
    ``remote`` when given (distribution's own proxy mode); token auth (``auth.token``) when given;
    TLS with the CA's server certificate when given."""
    listener = f"  tls:\n    certificate: {tls.server_cert}\n    key: {tls.server_key}\n" if tls else ""
    proxy = f"proxy:\n  remoteurl: {remote}\n" if remote else ""
    if token_auth:
        proxy += "auth:\n  token:\n" + "".join(f"    {k}: {v}\n" for k, v in token_auth.items())
    return f"""version: 0.1
{proxy}log:
  level: {log_level}
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {addr}
  secret: realenv-not-secret
  headers:
    X-Content-Type-Options: [nosniff]
{listener}"""


def start_registry(workdir: Path, netns: NetNS | None = None, log_level: str = "info",
                   remote: str | None = None, token_auth: Mapping[str, str] | None = None,
                   storage: Path | None = None, tls: CA | None = None) -> Registry:
    """Start ``docker-registry serve`` on 127.0.0.1:<free port>.

    ``storage`` shares another registry's data directory (both may read it);
    ``tls`` serves https with that CA's server certificate.
    """
    binary = require_tool("docker-registry")
    workdir = _mkdir(workdir)
    host = f"{LOOPBACK}:{free_port()}"
    config = workdir / "config.yml"
    config.write_text(_registry_config(storage or _mkdir(workdir / "data"), host, log_level, remote, token_auth, tls))
    argv = [binary, "serve", str(config)]
    service = start_service("registry", netns.wrap(argv) if netns else argv, workdir / "registry.log")
    registry = Registry(host, f"{'https' if tls else 'http'}://{host}", service, netns)
    context = tls.ssl_context() if tls else None
    _wait_or_stop(service, lambda: in_netns(netns, lambda: _http_answers(f"{registry.url}/v2/", context)), 20,
                  "GET /v2/")
    return registry


def _http_answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    """200, or the 401 of a registry behind token auth."""
    try:
        return _http_ok(url, context)
    except urllib.error.HTTPError as refused:
        return refused.code == 401


def _wait_or_stop(service: Service, check: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_until, but never leave a half-started service behind."""
    try:
        wait_until(check, timeout, service, what)
    except BaseException:
        service.stop()
        raise


# ---------------------------------------------------------------------------
# TLS material
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CA:
    """A throw-away CA plus one server cert valid for 127.0.0.1, ::1 and localhost."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def ssl_context(self) -> ssl.SSLContext:
        """Client context trusting only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


_SERVER_EXT = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
    "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
)


def _openssl(*args: str | Path) -> None:
    run([require_tool("openssl"), *map(str, args)])


def make_ca(directory: Path) -> CA:
    """EC P-256 self-signed CA and a server cert signed by it, via openssl."""
    d = _mkdir(directory)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-days", "3650", "-keyout", d / "ca.key", "-out", d / "ca.crt",
             "-subj", "/CN=pullgate realenv test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=localhost")
    (d / "server.ext").write_text(_SERVER_EXT)
    _openssl("x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
             "-CAcreateserial", "-days", "825", "-out", d / "server.crt", "-extfile", d / "server.ext")
    return CA(d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key")


# ---------------------------------------------------------------------------
# notary-server 0.7
# ---------------------------------------------------------------------------


@dataclass
class NotaryServer:
    """notary-server over TLS (memory storage, local signer)."""

    url: str
    host: str
    ca_cert: Path
    service: Service
    netns: NetNS | None = None

    def stop(self) -> None:
        self.service.stop()


def start_notary_server(workdir: Path, ca: CA, netns: NetNS | None = None) -> NotaryServer:
    """Start notary-server on https://127.0.0.1:<free port> and wait for its health URL."""
    binary = require_tool("notary-server")
    workdir = _mkdir(workdir)
    host = f"{LOOPBACK}:{free_port()}"
    config = {
        "server": {"http_addr": host, "tls_key_file": str(ca.server_key), "tls_cert_file": str(ca.server_cert)},
        "trust_service": {"type": "local"},
        "storage": {"backend": "memory"},
        "logging": {"level": "info"},
    }
    config_path = workdir / "server-config.json"
    config_path.write_text(json.dumps(config, indent=2))
    argv = [binary, "-config", str(config_path)]
    service = start_service("notary-server", netns.wrap(argv) if netns else argv, workdir / "notary-server.log")
    server = NotaryServer(f"https://{host}", host, ca.ca_cert, service, netns)
    health = f"{server.url}/_notary_server/health"
    context = ca.ssl_context()
    _wait_or_stop(service, lambda: in_netns(netns, lambda: _http_ok(health, context)), 20, "health check")
    return server


# ---------------------------------------------------------------------------
# containerd 1.6 (standalone, for ctr)
# ---------------------------------------------------------------------------


@dataclass
class Containerd:
    """A private containerd; talk to it with ``ctr(...)``."""

    address: str
    service: Service
    netns: NetNS | None = None
    _temp_dirs: list[Path] = field(default_factory=list, repr=False)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``ctr --address <our socket> ARGS`` (inside our netns, if any)."""
        argv = [require_tool("ctr"), "--address", self.address, *args]
        return run(argv, netns=self.netns, check=check, env=clean_env(("CONTAINERD_",)))

    def stop(self) -> None:
        self.service.stop()
        for path in self._temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._temp_dirs.clear()


def _containerd_config(workdir: Path, sock: Path) -> str:
    """containerd v2 config: own root/state/socket, CRI and exotic snapshotters off."""
    disabled = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                "io.containerd.snapshotter.v1.devmapper"]
    return f"""version = 2
root = "{_mkdir(workdir / 'root')}"
state = "{_mkdir(workdir / 'state')}"
disabled_plugins = {json.dumps(disabled)}
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{_mkdir(workdir / 'opt')}"
"""


def start_containerd(workdir: Path, netns: NetNS | None = None) -> Containerd:
    """Start a standalone containerd and wait until ``ctr version`` answers."""
    binary = require_tool("containerd")
    require_tool("ctr")
    workdir = _mkdir(workdir)
    sock_dir, temporary = short_dir(workdir, len("/containerd.sock.ttrpc"), "pg-ctrd-")
    sock = sock_dir / "containerd.sock"
    config = workdir / "config.toml"
    config.write_text(_containerd_config(workdir, sock))
    argv = [binary, "--config", str(config)]
    service = start_service("containerd", netns.wrap(argv) if netns else argv, workdir / "containerd.log")
    daemon = Containerd(str(sock), service, netns, [sock_dir] if temporary else [])
    try:
        wait_until(lambda: daemon.ctr("version", check=False).returncode == 0, 20, service, "ctr version")
    except BaseException:
        daemon.stop()
        raise
    return daemon


# ---------------------------------------------------------------------------
# dockerd 20.10
# ---------------------------------------------------------------------------

DOCKERD_DEFAULTS: dict[str, Any] = {
    "iptables": False,
    "ip6tables": False,
    "ip-forward": False,
    "ip-masq": False,
    "bridge": "none",
    "userland-proxy": False,
    "storage-driver": "vfs",
}
"""daemon.json keys that keep dockerd off the host network config and need no kernel fs."""


@dataclass
class Dockerd:
    """A private dockerd plus the DOCKER_CONFIG dir its CLI calls use.

    With ``netns`` set, dockerd (and every ``docker(...)`` CLI call, because
    the CLI itself talks to notary for content trust) runs inside that
    namespace and only sees services started there too.
    """

    host: str
    config_dir: Path
    service: Service
    netns: NetNS | None = None
    data_root: Path | None = None
    _owned_netns: bool = field(default=False, repr=False)
    _temp_dirs: list[Path] = field(default_factory=list, repr=False)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment pointing the docker CLI at this daemon only."""
        env = clean_env(("DOCKER_",), DOCKER_HOST=self.host, DOCKER_CONFIG=str(self.config_dir))
        env.update(extra or {})
        return env

    def docker(self, *args: str, env: Mapping[str, str] | None = None,
               check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon; *env* adds/overrides variables."""
        argv = [require_tool("docker"), *args]
        return run(argv, env=self.env(env), netns=self.netns, check=check, timeout=timeout)

    def stop(self) -> None:
        """Stop dockerd (it stops its own containerd), unmount leftovers, drop temp dirs."""
        self.service.stop()
        for root in [self.data_root, *self._temp_dirs]:
            if root is not None and root.exists():
                unmount_under(root)
        for path in self._temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._temp_dirs.clear()
        if self._owned_netns and self.netns is not None:
            self.netns.stop()


def _dockerd_argv(workdir: Path, exec_root: Path, config_file: Path) -> list[str]:
    """dockerd flags that must not also appear in daemon.json (dockerd rejects duplicates)."""
    return [
        require_tool("dockerd"),
        "--config-file", str(config_file),
        "--data-root", str(_mkdir(workdir / "data")),
        "--exec-root", str(exec_root),
        "--pidfile", str(workdir / "dockerd.pid"),
        "-H", f"unix://{workdir / 'docker.sock'}",
    ]


def start_dockerd(
    workdir: Path,
    daemon_config: Mapping[str, Any] | None = None,
    netns: bool | NetNS = False,
) -> Dockerd:
    """Start a private dockerd on ``unix://<workdir>/docker.sock``.

    *daemon_config* is merged over DOCKERD_DEFAULTS into daemon.json (don't
    put hosts/data-root/exec-root/pidfile there: they are flags).  127.0.0.0/8
    registries are insecure (plain HTTP) by default in dockerd, so loopback
    registries need no config.

    ``netns=True`` creates a fresh namespace (only ``lo``) owned by this
    Dockerd and stopped with it; pass an existing ``NetNS`` to join one.
    Start the registry/notary/proxy it must reach with ``netns=dockerd.netns``
    (or ``start_service(..., dockerd.netns.wrap(argv), ...)``) and do HTTP
    checks via ``dockerd.netns.call(fn)``.
    """
    require_tool("docker")
    workdir = _mkdir(workdir)
    # dockerd's containerd puts <exec-root>/containerd/containerd.sock.ttrpc under exec-root
    exec_root, temporary = short_dir(workdir / "exec", len("/containerd/containerd.sock.ttrpc"), "pg-dexec-")
    config_file = workdir / "daemon.json"
    config_file.write_text(json.dumps({**DOCKERD_DEFAULTS, **(daemon_config or {})}, indent=2))
    config_dir = _mkdir(workdir / "config")
    owned = netns is True
    ns = start_netns(workdir, "dockerd-netns") if netns is True else (netns or None)
    argv = _dockerd_argv(workdir, exec_root, config_file)
    try:
        service = start_service("dockerd", ns.wrap(argv) if ns else argv, workdir / "dockerd.log")
    except BaseException:
        if owned and ns is not None:
            ns.stop()
        raise
    daemon = Dockerd(f"unix://{workdir / 'docker.sock'}", config_dir, service, ns, workdir / "data",
                     owned, [exec_root] if temporary else [])
    try:
        wait_until(lambda: daemon.docker("version", check=False, timeout=10).returncode == 0,
                   60, service, "docker version")
    except BaseException:
        daemon.stop()
        raise
    return daemon


# ---------------------------------------------------------------------------
# podman 4.3
# ---------------------------------------------------------------------------


def podman_cmd(workdir: Path) -> list[str]:
    """podman argv prefix with private storage/state, usable without systemd."""
    workdir = _mkdir(workdir)
    return [
        require_tool("podman"),
        "--root", str(_mkdir(workdir / "root")),
        "--runroot", str(_mkdir(workdir / "run")),
        "--tmpdir", str(_mkdir(workdir / "tmp")),
        "--storage-driver", "vfs",
        "--events-backend", "file",
        "--cgroup-manager", "cgroupfs",
    ]
