"""Settings as typed values, from a YAML file and command-line flags.

Flags override the file. Every problem is a ``ConfigError`` naming the setting
(``upstream.notary``, ``listen``...), so the command line can print one line
and exit 2 instead of failing later with a traceback.
"""

import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509

from proxy.auth import Credentials
from proxy.clientauth import read_htpasswd
from proxy.httpclient import host_of
from proxy.names import NAME
from proxy.trust.pinning import Pinning
from proxy.trust.repository import DEFAULT_ROLE_ORDER

DEFAULT_LISTEN = "127.0.0.1:5050"
_KEY_ID = re.compile(r"[0-9a-f]{64}\Z")


class ConfigError(Exception):
    """A setting that cannot be used; ``setting`` is its dotted name."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class UpstreamConfig:
    """One registry and the trust server that signs its images.

    A request reaches it by containerd's ``?ns=`` (one of ``namespaces``), by
    its ``path_prefix`` (``/v2/<prefix>/<name>/…``), or as the default upstream.
    ``docker_hub`` maps single-segment names to ``library/<name>``.
    """

    registry: str
    notary: str
    notary_ca: Path | None
    gun_prefix: str
    notary_auth: Credentials | None = None
    pinning: Pinning = field(default_factory=Pinning)
    auth: Credentials | None = None
    registry_ca: Path | None = None
    name: str = "default"
    path_prefix: str | None = None
    namespaces: tuple[str, ...] = ()
    docker_hub: bool = False


@dataclass(frozen=True)
class TLSConfig:
    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class ClientAuthConfig:
    """Basic auth of clients to pullgate, against an htpasswd file of bcrypt hashes."""

    htpasswd: Path
    realm: str = "pullgate"


@dataclass(frozen=True)
class TrustConfig:
    """How trust data is used; ``repository_roles`` maps a repository name to its own role order."""

    refresh_interval: float = 30.0
    role_order: tuple[str, ...] = DEFAULT_ROLE_ORDER
    repository_roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    grace: float = 0.0
    max_metadata_bytes: int = 100 << 20
    open_blobs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Config:
    listen: Listen
    upstreams: tuple[UpstreamConfig, ...]
    state_dir: Path
    trust: TrustConfig
    manifest_cache_bytes: int
    trust_timeout: float
    upstream_timeout: float
    client_head_timeout: float
    client_send_timeout: float
    shutdown_timeout: int
    tls: TLSConfig | None = None
    client_auth: ClientAuthConfig | None = None

    @property
    def upstream(self) -> UpstreamConfig:
        """The default upstream: requests that name no other go there."""
        return self.upstreams[0]


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "pullgate"


def parse_listen(text: str, setting: str = "listen") -> Listen:
    """``HOST:PORT``, with IPv6 hosts in brackets: ``[::1]:5050``."""
    host, sep, port = str(text).rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(setting, f"IPv6 addresses need brackets, e.g. [::1]:5050, got {text!r}")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(setting, f"expected HOST:PORT, e.g. {DEFAULT_LISTEN}, got {text!r}")
    return Listen(host=host, port=int(port))


def _url(value: Any, setting: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(setting, "required: an http:// or https:// URL")
    try:
        parts = urlsplit(value)
        parts.port
    except ValueError as exc:
        raise ConfigError(setting, f"is not a valid URL ({exc}): {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(setting, f"must be an http:// or https:// URL, got {value!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(setting, "must not hold credentials (they would show in messages and logs); "
                                   "give them in the auth settings")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(setting, f"must be the server's base URL with no path, got {value!r}")
    return value.rstrip("/")


def _number(value: Any, setting: str, minimum: float, maximum: float = 1e12) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
        raise ConfigError(setting, f"must be a number from {minimum:g} to {maximum:g}, got {value!r}")
    return float(value)


def _whole(value: Any, setting: str, minimum: int, maximum: int) -> int:
    """A count (of bytes, of seconds): 1.5 bytes is a mistake to name, not a number to round."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ConfigError(setting, f"must be a whole number from {minimum} to {maximum}, got {value!r}")
    return value


def _section(document: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    section = document.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(name, "must be a mapping")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(allowed))})")
    return section


MAX_CONFIG_BYTES = 1 << 20


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping: the first one's settings
    would be dropped without a word (two ``upstream:`` sections, say)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:  # as written: keys a merge (<<) brings may be overridden
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key_node.value!r} is given twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_file(path: Path) -> dict[str, Any]:
    """Read the YAML file; its problems are errors of the ``--config`` setting."""
    try:
        if not path.exists():
            raise ConfigError("--config", f"cannot read {path}: No such file or directory")
        if not path.is_file():
            raise ConfigError("--config", f"{path} is not a regular file")
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError("--config", f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
        document = yaml.load(data.decode("utf-8"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("--config", f"{path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of settings")
    return document


TOP_LEVEL = {"listen", "state_dir", "upstream", "upstreams", "trust", "cache", "timeouts", "tls", "auth"}
UPSTREAM_KEYS = {"registry", "notary", "notary_ca", "gun_prefix", "notary_auth", "pinning", "auth", "registry_ca",
                 "name", "path_prefix", "namespaces", "docker_hub"}
HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
HUB_REGISTRY = "https://registry-1.docker.io"
HUB_NOTARY = "https://notary.docker.io"
TRUST_KEYS = {"refresh_interval", "roles", "repositories", "grace", "max_metadata_bytes", "blobs"}
BLOB_POLICIES = ("signed", "open")


def build(document: dict[str, Any], overrides: dict[str, Any]) -> Config:
    """Validate a parsed file plus flag overrides (``None`` means "not given")."""
    unknown = sorted(set(document) - TOP_LEVEL)
    if unknown:
        raise ConfigError(unknown[0], f"unknown setting (known: {', '.join(sorted(TOP_LEVEL))})")
    cache = _section(document, "cache", {"manifest_bytes"})
    timeouts = _section(document, "timeouts", {"trust", "upstream", "client_head", "client_send", "shutdown"})
    listen = overrides.get("listen") or document.get("listen", DEFAULT_LISTEN)
    state = overrides.get("state_dir") or document.get("state_dir")
    if not isinstance(listen, str):
        raise ConfigError("listen", f"expected HOST:PORT as text, got {listen!r}")
    if state is not None and (not isinstance(state, str) or not state):
        raise ConfigError("state_dir", f"must be a directory path, got {state!r}")
    if state is not None and Path(state).exists() and not Path(state).is_dir():
        raise ConfigError("state_dir", f"{state} exists and is not a directory")
    return Config(
        listen=parse_listen(listen),
        upstreams=_upstreams(document, overrides),
        state_dir=Path(state) if state else default_state_dir(),
        trust=_trust(_section(document, "trust", TRUST_KEYS), overrides),
        manifest_cache_bytes=_whole(cache.get("manifest_bytes", 64 << 20), "cache.manifest_bytes", 0, 1 << 40),
        trust_timeout=_number(timeouts.get("trust", 10), "timeouts.trust", 0.1, 3600),
        upstream_timeout=_number(timeouts.get("upstream", 30), "timeouts.upstream", 0.1, 3600),
        client_head_timeout=_number(timeouts.get("client_head", 30), "timeouts.client_head", 0.1, 3600),
        client_send_timeout=_number(timeouts.get("client_send", 60), "timeouts.client_send", 0.1, 86400),
        shutdown_timeout=_whole(timeouts.get("shutdown", 10), "timeouts.shutdown", 0, 86400),
        tls=_tls(_section(document, "tls", {"cert", "key", "client_ca"})),
        client_auth=_client_auth(_section(document, "auth", {"htpasswd", "realm"})),
    )


def _upstreams(document: dict[str, Any], overrides: dict[str, Any]) -> tuple[UpstreamConfig, ...]:
    """The default upstream (``upstream``, else the first of ``upstreams``; flags apply to it) and the rest."""
    listed = document.get("upstreams")
    if listed is not None and (not isinstance(listed, list) or not listed
                               or not all(isinstance(entry, dict) for entry in listed)):
        raise ConfigError("upstreams", "must be a non-empty list of upstream mappings")
    if listed and "upstream" in document:
        raise ConfigError("upstreams", "give either upstream (one registry) or upstreams (several), not both; "
                                       "the first of upstreams is the default")
    listed = listed or []
    sections = [(f"upstreams[{i}]", entry) for i, entry in enumerate(listed)]
    if "upstream" in document or not sections:
        sections.insert(0, ("upstream", _section(document, "upstream", UPSTREAM_KEYS)))
    upstreams = tuple(
        _upstream(_checked(entry, setting), overrides if index == 0 else {}, setting)
        for index, (setting, entry) in enumerate(sections)
    )
    _check_unique(upstreams)
    return upstreams


def _checked(section: dict[str, Any], setting: str) -> dict[str, Any]:
    unknown = sorted(set(section) - UPSTREAM_KEYS)
    if unknown:
        raise ConfigError(f"{setting}.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(UPSTREAM_KEYS))})")
    return section


def _check_unique(upstreams: tuple[UpstreamConfig, ...]) -> None:
    """Names, path prefixes and namespaces must each pick one upstream."""
    seen: dict[str, str] = {}
    for upstream in upstreams:
        keys = [f"name {upstream.name}"] + [f"namespace {n}" for n in upstream.namespaces]
        if upstream.path_prefix:
            keys.append(f"path_prefix {upstream.path_prefix}")
        for key in keys:
            if key in seen:
                raise ConfigError("upstreams", f"{key} is given to both {seen[key]} and {upstream.name}")
            seen[key] = upstream.name


def _tls(section: dict[str, Any]) -> TLSConfig | None:
    if not section:
        return None
    if "cert" not in section or "key" not in section:
        raise ConfigError("tls", "needs both cert and key")
    client_ca = section.get("client_ca")
    tls = TLSConfig(cert=_file(section["cert"], "tls.cert"), key=_file(section["key"], "tls.key"),
                    client_ca=_ca_file(client_ca, "tls.client_ca") if client_ca else None)
    try:  # loaded once here, so a bad pair fails before any worker starts
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            str(tls.cert), str(tls.key), password=lambda: b"")
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError("tls", f"{tls.cert} and {tls.key} are not a usable certificate and unencrypted key "
                                 f"({getattr(exc, 'reason', None) or exc})") from None
    return tls


def _client_auth(section: dict[str, Any]) -> ClientAuthConfig | None:
    if not section:
        return None
    if "htpasswd" not in section:
        raise ConfigError("auth.htpasswd", "required: an htpasswd file of bcrypt hashes (htpasswd -B)")
    realm = section.get("realm", "pullgate")
    if not isinstance(realm, str) or not re.fullmatch(r"[A-Za-z0-9 ._:/-]{1,100}", realm):
        raise ConfigError("auth.realm", "must be up to 100 letters, digits, spaces or ._:/-")
    config = ClientAuthConfig(htpasswd=_file(section["htpasswd"], "auth.htpasswd"), realm=realm)
    try:  # read once here, so the file's problems are config errors
        read_htpasswd(config.htpasswd)
    except (ValueError, OSError) as exc:
        raise ConfigError("auth.htpasswd", str(exc)) from None
    return config


def _pick(overrides: dict[str, Any], flag: str, section: dict[str, Any], key: str, default: Any = None) -> Any:
    value = overrides.get(flag)
    return value if value is not None else section.get(key, default)


def _upstream(section: dict[str, Any], overrides: dict[str, Any], setting: str = "upstream") -> UpstreamConfig:
    given_registry = _pick(overrides, "upstream", section, "registry")
    hub = section.get("docker_hub", False)
    if not isinstance(hub, bool):
        raise ConfigError(f"{setting}.docker_hub", "must be true or false")
    registry = _url(given_registry or (HUB_REGISTRY if hub else None), f"{setting}.registry")
    hub = hub or host_of(registry) in HUB_HOSTS
    notary = _url(_pick(overrides, "notary", section, "notary") or (HUB_NOTARY if hub else None), f"{setting}.notary")
    ca = _pick(overrides, "notary_ca", section, "notary_ca")
    prefix = _pick(overrides, "gun_prefix", section, "gun_prefix") or ("docker.io" if hub else host_of(registry))
    if not isinstance(prefix, str) or "://" in prefix or prefix.endswith("/") or prefix.startswith("/") or \
            not prefix.isprintable() or any(c.isspace() for c in prefix):
        raise ConfigError(f"{setting}.gun_prefix", f"must be a host[:port][/path] prefix, got {prefix!r}")
    name = section.get("name", "default" if setting == "upstream" else setting)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{setting}.name", "must be a word")
    path_prefix = section.get("path_prefix")
    if path_prefix is not None and (not isinstance(path_prefix, str) or not NAME.match(path_prefix)
                                    or "/" in path_prefix):
        raise ConfigError(f"{setting}.path_prefix", "must be one path segment, e.g. hub")
    namespaces = section.get("namespaces", [])
    if not isinstance(namespaces, list) or not all(
        isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?", n) for n in namespaces
    ):
        raise ConfigError(f"{setting}.namespaces", "must be a list of registry hosts, e.g. [docker.io]")
    return UpstreamConfig(
        registry=registry,
        notary=notary,
        notary_ca=_ca_file(ca, f"{setting}.notary_ca") if ca else None,
        gun_prefix=prefix,
        notary_auth=_credentials(section.get("notary_auth"), f"{setting}.notary_auth"),
        pinning=_pinning(section.get("pinning"), f"{setting}.pinning"),
        auth=_credentials(section.get("auth"), f"{setting}.auth"),
        registry_ca=_ca_file(section["registry_ca"], f"{setting}.registry_ca") if section.get("registry_ca") else None,
        name=name,
        path_prefix=path_prefix,
        namespaces=tuple(dict.fromkeys(n.lower() for n in namespaces)),
        docker_hub=hub,
    )


def implied_namespaces(upstream: UpstreamConfig) -> tuple[str, ...]:
    """The ``ns`` values an upstream answers without listing them: its own registry host names."""
    return HUB_HOSTS if upstream.docker_hub else (host_of(upstream.registry), upstream.gun_prefix.split("/")[0])


def _trust(section: dict[str, Any], overrides: dict[str, Any]) -> TrustConfig:
    repositories = section.get("repositories") or {}
    if not isinstance(repositories, dict):
        raise ConfigError("trust.repositories", "must map repository names to {roles: [...]}")
    repository_roles = {}
    open_blobs = {"*"} if _blob_policy(section.get("blobs", "signed"), "trust.blobs") == "open" else set()
    for name, settings in repositories.items():
        setting = f"trust.repositories.{name}"
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigError(setting, "is not a valid repository name")
        if not isinstance(settings, dict) or not settings or set(settings) - {"roles", "blobs"}:
            raise ConfigError(setting, "must be {roles: [...], blobs: signed|open}")
        if "roles" in settings:
            repository_roles[name] = _roles(settings["roles"], f"{setting}.roles")
        if _blob_policy(settings.get("blobs", "signed"), f"{setting}.blobs") == "open":
            open_blobs.add(name)
    refresh = _pick(overrides, "refresh_interval", section, "refresh_interval", 30)
    return TrustConfig(
        refresh_interval=_number(refresh, "trust.refresh_interval", 0, 86400),
        role_order=_roles(section.get("roles", list(DEFAULT_ROLE_ORDER)), "trust.roles"),
        repository_roles=repository_roles,
        grace=_number(section.get("grace", 0), "trust.grace", 0, 30 * 86400),
        max_metadata_bytes=_whole(section.get("max_metadata_bytes", 100 << 20), "trust.max_metadata_bytes",
                                  1024, 1 << 32),
        open_blobs=frozenset(open_blobs),
    )


def _blob_policy(value: Any, setting: str) -> str:
    """``signed``: a blob must be named by a signed manifest; ``open``: any blob, still digest-checked."""
    if value not in BLOB_POLICIES:
        raise ConfigError(setting, f"must be one of {', '.join(BLOB_POLICIES)}, got {value!r}")
    return str(value)


def _roles(value: Any, setting: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(
        isinstance(r, str) and (r == "targets" or (r.startswith("targets/") and NAME.match(r))) for r in value
    ):
        raise ConfigError(setting, "must be a list of roles such as [targets/releases, targets]")
    return tuple(value)


def _file(value: Any, setting: str) -> Path:
    path = Path(str(value))
    if not path.is_file():
        raise ConfigError(setting, f"no such file: {path}")
    return path


def _ca_file(value: Any, setting: str) -> Path:
    """A file of PEM CA certificates, loaded once here so a bad one is a config error."""
    path = _file(value, setting)
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(setting, f"{path} holds no usable PEM certificate ({exc})") from None
    return path


def _credentials(value: Any, setting: str) -> Credentials | None:
    if value is None:
        return None
    if isinstance(value, dict) and "htpasswd" in value:
        raise ConfigError(setting, "is what pullgate logs in to that server with; client logins to pullgate "
                                   "go in the top-level auth: {htpasswd: FILE}")
    if not isinstance(value, dict) or set(value) != {"username", "password"} or not all(
        isinstance(v, str) for v in value.values()
    ):
        raise ConfigError(setting, "must be {username: ..., password: ...}")
    return Credentials(value["username"], value["password"])


def _pinning(value: Any, setting: str) -> Pinning:
    """``{keys: {GUN: [key IDs]}, ca: {GUN or prefix: PEM file}, disable_tofu: bool}``."""
    if value is None:
        return Pinning()
    if not isinstance(value, dict) or set(value) - {"keys", "ca", "disable_tofu"}:
        raise ConfigError(setting, "must be a mapping with keys, ca and disable_tofu")
    keys = value.get("keys") or {}
    if not isinstance(keys, dict) or not all(
        isinstance(gun, str) and isinstance(ids, list) and ids and all(isinstance(i, str) and _KEY_ID.match(i) for i in ids)
        for gun, ids in keys.items()
    ):
        raise ConfigError(f"{setting}.keys", "must map each GUN to a list of 64-hex-digit key IDs (quote them in YAML)")
    ca_section = value.get("ca") or {}
    if not isinstance(ca_section, dict):
        raise ConfigError(f"{setting}.ca", "must map GUNs or GUN prefixes to PEM files")
    cas = {}
    for prefix, path in ca_section.items():
        file = _file(path, f"{setting}.ca.{prefix}")
        try:
            cas[str(prefix)] = tuple(x509.load_pem_x509_certificates(file.read_bytes()))
        except ValueError as exc:
            raise ConfigError(f"{setting}.ca.{prefix}", f"{file} holds no PEM certificate: {exc}") from None
    tofu = value.get("disable_tofu", False)
    if not isinstance(tofu, bool):
        raise ConfigError(f"{setting}.disable_tofu", "must be true or false")
    return Pinning(keys={g: frozenset(ids) for g, ids in keys.items()}, cas=cas, tofu=not tofu)


def load(path: Path | None, overrides: dict[str, Any]) -> Config:
    return build(load_file(path) if path else {}, overrides)
