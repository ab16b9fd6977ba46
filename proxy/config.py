"""Settings as typed values, from a YAML file and command-line flags.

Flags override the file. Every problem is a ``ConfigError`` naming the setting
(``upstream.notary``, ``listen``...), so the command line can print one line
and exit 2 instead of failing later with a traceback.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from proxy.names import NAME
from proxy.trust.repository import DEFAULT_ROLE_ORDER

DEFAULT_LISTEN = "127.0.0.1:5050"


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
    """One registry and the trust server that signs its images."""

    registry: str
    notary: str
    notary_ca: Path | None
    gun_prefix: str


@dataclass(frozen=True)
class Config:
    listen: Listen
    upstream: UpstreamConfig
    state_dir: Path
    refresh_interval: float
    role_order: tuple[str, ...]
    manifest_cache_bytes: int
    trust_timeout: float
    upstream_timeout: float


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
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(setting, f"expected HOST:PORT, e.g. {DEFAULT_LISTEN}, got {text!r}")
    return Listen(host=host, port=int(port))


def _url(value: Any, setting: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(setting, "required: an http:// or https:// URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(setting, f"must be an http:// or https:// URL, got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(setting, f"must be the server's base URL with no path, got {value!r}")
    try:
        parts.port
    except ValueError:
        raise ConfigError(setting, f"has an invalid port: {value!r}") from None
    return value.rstrip("/")


def _number(value: Any, setting: str, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(setting, f"must be a number of at least {minimum}, got {value!r}")
    return float(value)


def _section(document: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    section = document.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(name, "must be a mapping")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(allowed))})")
    return section


def load_file(path: Path) -> dict[str, Any]:
    """Read the YAML file; its problems are errors of the ``--config`` setting."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of settings")
    return document


TOP_LEVEL = {"listen", "state_dir", "upstream", "trust", "cache", "timeouts"}


def build(document: dict[str, Any], overrides: dict[str, Any]) -> Config:
    """Validate a parsed file plus flag overrides (``None`` means "not given")."""
    unknown = sorted(set(document) - TOP_LEVEL)
    if unknown:
        raise ConfigError(unknown[0], f"unknown setting (known: {', '.join(sorted(TOP_LEVEL))})")
    upstream = _section(document, "upstream", {"registry", "notary", "notary_ca", "gun_prefix"})
    trust = _section(document, "trust", {"refresh_interval", "roles"})
    cache = _section(document, "cache", {"manifest_bytes"})
    timeouts = _section(document, "timeouts", {"trust", "upstream"})

    def pick(flag: str, section: dict[str, Any], key: str, default: Any = None) -> Any:
        value = overrides.get(flag)
        return value if value is not None else section.get(key, default)

    registry = _url(pick("upstream", upstream, "registry"), "upstream.registry")
    notary = _url(pick("notary", upstream, "notary"), "upstream.notary")
    ca = pick("notary_ca", upstream, "notary_ca")
    notary_ca = Path(ca) if ca else None
    if notary_ca is not None and not notary_ca.is_file():
        raise ConfigError("upstream.notary_ca", f"no such file: {notary_ca}")
    prefix = pick("gun_prefix", upstream, "gun_prefix") or urlsplit(registry).netloc
    if not isinstance(prefix, str) or "://" in prefix or prefix.endswith("/"):
        raise ConfigError("upstream.gun_prefix", f"must be a host[:port][/path] prefix, got {prefix!r}")
    roles = trust.get("roles", list(DEFAULT_ROLE_ORDER))
    if not isinstance(roles, list) or not roles or not all(
        isinstance(r, str) and (r == "targets" or (r.startswith("targets/") and NAME.match(r))) for r in roles
    ):
        raise ConfigError("trust.roles", "must be a list of roles such as [targets/releases, targets]")
    listen_text = pick("listen", document, "listen", DEFAULT_LISTEN)
    state = pick("state_dir", document, "state_dir")
    return Config(
        listen=parse_listen(listen_text),
        upstream=UpstreamConfig(registry=registry, notary=notary, notary_ca=notary_ca, gun_prefix=prefix),
        state_dir=Path(state) if state else default_state_dir(),
        refresh_interval=_number(pick("refresh_interval", trust, "refresh_interval", 30), "trust.refresh_interval", 0),
        role_order=tuple(roles),
        manifest_cache_bytes=int(_number(cache.get("manifest_bytes", 64 << 20), "cache.manifest_bytes", 0)),
        trust_timeout=_number(timeouts.get("trust", 10), "timeouts.trust", 0.1),
        upstream_timeout=_number(timeouts.get("upstream", 30), "timeouts.upstream", 0.1),
    )


def load(path: Path | None, overrides: dict[str, Any]) -> Config:
    return build(load_file(path) if path else {}, overrides)

