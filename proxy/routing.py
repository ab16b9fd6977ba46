"""Which upstream a request is for, and the services each upstream has.

A request picks its upstream by containerd's ``?ns=<registry>`` (looked up
among the configured upstreams only: an unknown one is refused before any
connection is made), by a configured path prefix (``/v2/<prefix>/<name>/…``),
or else goes to the default upstream. Docker Hub upstreams name single-segment
repositories ``library/<name>``, as the Hub does.
"""

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from proxy.auth import ChallengeAuth
from proxy.blobtransport import BlobTransport
from proxy.config import Config, UpstreamConfig, implied_namespaces
from proxy.errors import RegistryError
from proxy.gate import Gate
from proxy.httpclient import client, through_env_proxy
from proxy.trust.notary import NotaryClient, NotarySettings
from proxy.trust.store import TrustStore
from proxy.upstream import Upstream


@dataclass(frozen=True)
class Services:
    """One upstream's gate and registry client, built once at start-up."""

    config: UpstreamConfig
    gate: Gate
    upstream: Upstream

    @property
    def namespace(self) -> str:
        return (self.config.namespaces or implied_namespaces(self.config))[0]


@dataclass(frozen=True)
class Routed:
    """Where one request goes: the upstream and the repository name there."""

    services: Services
    name: str
    namespace: str


class Router:
    def __init__(self, services: list[Services]) -> None:
        self.default = services[0]
        self._by_prefix = {s.config.path_prefix: s for s in services if s.config.path_prefix}
        self._by_namespace: dict[str, tuple[Services, str]] = {}
        for s in services:  # listed namespaces first, then each upstream's own host names
            self._by_namespace.update({n.lower(): (s, n) for n in s.config.namespaces})
        for s in services:
            for implied in implied_namespaces(s.config):
                self._by_namespace.setdefault(implied.lower(), (s, implied))

    def route(self, name: str, namespace: str | None) -> Routed:
        """Pick the upstream of a request for repository ``name`` (as the client wrote it)."""
        canonical = None
        if namespace:
            found = self._by_namespace.get(namespace.lower()) if namespace.isascii() else None
            if found is None:
                raise RegistryError(404, "NAME_UNKNOWN", f"pullgate has no upstream for namespace {namespace[:200]!r}",
                                    {"ns": namespace[:200]})
            services, canonical = found
        else:
            first, _, rest = name.partition("/")
            prefixed = self._by_prefix.get(first) if rest else None
            services, name = (prefixed, rest) if prefixed is not None else (self.default, name)
        if services.config.docker_hub and "/" not in name:
            name = f"library/{name}"
        return Routed(services=services, name=name, namespace=canonical or services.namespace)



def verify_with(ca: Path | None) -> ssl.SSLContext:
    """TLS verification: httpx's default CAs, or the configured CA file."""
    return httpx.create_ssl_context() if ca is None else ssl.create_default_context(cafile=str(ca))


@contextlib.asynccontextmanager
async def open_router(config: Config) -> AsyncIterator[Router]:
    """Every upstream's HTTP clients and gate, closed when the block ends.

    Each server gets its own client and its own credentials: what is
    configured for one never reaches another, and nothing a client sent
    pullgate is forwarded to any. Blob bodies come through a second client of
    the registry's, sharing its credentials and tokens, whose transport reads
    big bodies in big pieces; unless an environment proxy is set for the
    registry, where that client is the first one.
    """
    async with contextlib.AsyncExitStack() as stack:
        services = []
        for upstream in config.upstreams:
            notary_http = await stack.enter_async_context(
                client(config.trust_timeout, verify_with(upstream.notary_ca), ChallengeAuth(upstream.notary_auth),
                       keep_https=True))
            registry_tls, registry_auth = verify_with(upstream.registry_ca), ChallengeAuth(upstream.auth)
            registry_http = await stack.enter_async_context(client(config.upstream_timeout, registry_tls, registry_auth))
            blob_http = registry_http if through_env_proxy(upstream.registry) else await stack.enter_async_context(
                client(config.upstream_timeout, registry_tls, registry_auth, BlobTransport(registry_tls)))
            registry = Upstream(upstream.registry, registry_http, blob_http, config.upstream_timeout)
            services.append(_services(config, upstream, notary_http, registry))
        yield Router(services)


def _services(config: Config, upstream_config: UpstreamConfig, notary_http: httpx.AsyncClient,
              upstream: Upstream) -> Services:
    trust = config.trust
    gun_prefix = upstream_config.gun_prefix

    def at_upstream(name: str) -> str:
        """A repository named in the settings, as this upstream names it."""
        return f"library/{name}" if upstream_config.docker_hub and "/" not in name and name != "*" else name

    notary = NotaryClient(
        NotarySettings(
            url=upstream_config.notary,
            refresh_interval=trust.refresh_interval,
            role_order=trust.role_order,
            role_orders={f"{gun_prefix}/{at_upstream(name)}": roles for name, roles in trust.repository_roles.items()},
            max_metadata_bytes=trust.max_metadata_bytes,
            grace=trust.grace,
            pinning=upstream_config.pinning,
            download_timeout=config.trust_timeout,
        ),
        TrustStore(config.state_dir),
        notary_http,
    )
    open_blobs = frozenset(at_upstream(name) for name in trust.open_blobs)
    gate = Gate(notary, upstream, gun_prefix, config.manifest_cache_bytes, open_blobs)
    return Services(config=upstream_config, gate=gate, upstream=upstream)
