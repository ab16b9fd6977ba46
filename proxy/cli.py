"""The ``pullgate`` command: ``serve`` runs the proxy, ``check`` verifies one tag.

Bad settings end with one line naming the setting and exit code 2, never a
traceback.
"""

import argparse
import asyncio
import json
import logging
import os
import socket
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from proxy import __version__
from proxy.config import Config, ConfigError, Listen, load

EXIT_USAGE = 2
SETTINGS_VARIABLE = "PULLGATE_WORKER_SETTINGS"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"pullgate: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pullgate", description="A registry proxy that serves only signed images.")
    parser.add_argument("--version", action="version", version=f"pullgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (("serve", "run the proxy"), ("check", "resolve and verify one tag, like `notary lookup`")):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--config", type=Path, help="YAML settings file (flags override it)")
        command.add_argument("--upstream", help="upstream registry URL, e.g. http://127.0.0.1:5000")
        command.add_argument("--notary", help="trust (notary) server URL, e.g. https://127.0.0.1:4443")
        command.add_argument("--notary-ca", dest="notary_ca", help="CA certificate file of the trust server")
        command.add_argument("--state-dir", dest="state_dir",
                             help="where the trusted root of each GUN is kept, first seen or pinned "
                                  "(default $XDG_STATE_HOME/pullgate, else ~/.local/state/pullgate)")
        command.add_argument("--gun-prefix", dest="gun_prefix",
                             help="GUN of /v2/NAME is PREFIX/NAME (default: the registry's host[:port])")
        if name == "serve":
            command.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:5050)")
            command.add_argument("--refresh-interval", dest="refresh_interval", type=float,
                                 help="seconds a verified answer is reused before the timestamp is re-checked")
            command.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                                 help="debug also logs every request and every upstream call")
            command.add_argument("--workers", type=int, default=1,
                                 help="worker processes (default 1); they share the state dir")
        else:
            command.add_argument("reference", help="NAME:TAG, e.g. library/demo:v1")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        k: getattr(args, k, None)
        for k in ("upstream", "notary", "notary_ca", "state_dir", "listen", "refresh_interval", "gun_prefix")
    }
    empty = next((k for k, v in overrides.items() if v == ""), None)
    if empty is not None:  # an unset variable in a script, most likely: not a wish for the default
        print(f"pullgate: config error: --{empty.replace('_', '-')}: must not be empty", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"pullgate: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = state_dir_problem(config.state_dir)
    if problem:
        print(f"pullgate: config error: state_dir: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        if not 1 <= args.workers <= 64:
            print("pullgate: config error: --workers: must be from 1 to 64", file=sys.stderr)
            return EXIT_USAGE
        if args.workers > 1:
            os.environ[SETTINGS_VARIABLE] = json.dumps(
                {"config": str(args.config) if args.config else None, "overrides": overrides,
                 "log_level": args.log_level})
        return serve(config, args.log_level, args.workers)
    return check(config, args.reference)


class _QuietProbes(logging.Filter):
    """Clients try TLS first on plain-HTTP registries; uvicorn logs each such probe as a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


def listen_problem(listen: Listen) -> str | None:
    """Why the listen address cannot be bound, checked before anything starts."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as the server's own socket will be
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind((listen.host, listen.port))
    except OSError as exc:
        mapped = " (an IPv4-mapped address: give the IPv4 address itself)" if \
            listen.host.lower().startswith("::ffff:") else ""
        return (exc.strerror or str(exc)) + mapped
    return None


def state_dir_problem(state_dir: Path) -> str | None:
    """Why trusted state cannot be kept in ``state_dir``, found before the first pull needs it."""
    from proxy.trust.store import TrustStore

    directory = TrustStore(state_dir).directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except FileExistsError:
        broken = next((p for p in (directory, *directory.parents) if p.is_symlink() and not p.exists()), None)
        return f"cannot write in {directory}: " + (f"{broken} is a broken symbolic link" if broken else
                                                    "it is not a directory")
    except OSError as exc:
        return f"cannot write in {directory}: {exc.strerror or exc}"
    return None


def prepare_process(config: Config, log_level: str) -> None:
    """What every serving process sets before it serves: the one process, or each worker
    (a worker gets uvicorn's protocol class by name only, so its settings are set here)."""
    from proxy.server import GuardedHttpTools

    GuardedHttpTools.head_timeout = config.client_head_timeout
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.DEBUG if log_level == "debug" else logging.WARNING)
    if log_level != "debug":
        logging.getLogger("uvicorn.error").addFilter(_QuietProbes())


def serve(config: Config, log_level: str, workers: int = 1) -> int:
    import uvicorn

    from proxy.app import create_app
    from proxy.server import GuardedHttpTools

    problem = listen_problem(config.listen)
    if problem:
        print(f"pullgate: listen: cannot listen on {config.listen}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    prepare_process(config, log_level)
    scheme = "https" if config.tls else "http"
    if config.client_auth:
        logging.getLogger("pullgate").info("clients log in: basic auth against %s", config.client_auth.htpasswd)
    for upstream in config.upstreams:
        logging.getLogger("pullgate").info(
            "pullgate %s on %s://%s: upstream %s -> registry %s, trust server %s (GUN prefix %s)",
            __version__, scheme, config.listen, upstream.name, upstream.registry, upstream.notary, upstream.gun_prefix,
        )
    # several workers each build the app from the settings handed down in the environment
    app = "proxy.cli:app_from_environment" if workers > 1 else create_app(config)
    tls = config.tls
    # The stdlib event loop, not uvloop: measured with 100 concurrent layer pulls, uvloop reads ahead
    # from the registry faster than clients take the bytes (peak RSS 390 MiB against 90 MiB), for a
    # gain of about 12% on small requests only (docs/benchmarks.md).
    uvicorn.run(
        app, factory=workers > 1, workers=workers, host=config.listen.host, port=config.listen.port, loop="asyncio",
        http=GuardedHttpTools, ws="none", log_level=log_level, access_log=log_level == "debug", server_header=False,
        timeout_graceful_shutdown=config.shutdown_timeout,
        ssl_certfile=str(tls.cert) if tls else None, ssl_keyfile=str(tls.key) if tls else None,
        ssl_ca_certs=str(tls.client_ca) if tls and tls.client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.client_ca else ssl.CERT_NONE,
    )
    return 0


def app_from_environment() -> Any:
    """The app of one worker process, from the settings ``serve`` validated and handed down."""
    from proxy.app import create_app

    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    path = Path(settings["config"]) if settings["config"] else None
    config = load(path, settings["overrides"])
    prepare_process(config, settings["log_level"])
    return create_app(config)


def check(config: Config, reference: str) -> int:
    """Print ``GUN:TAG DIGEST LENGTH ROLE`` for a signed tag; else the proxy's own refusal, exit 1.

    Like the proxy, it trusts a GUN's first root on first use and keeps it in the state dir.
    """
    from proxy.routing import open_router
    from proxy.errors import RegistryError, from_trust_error
    from proxy.names import MAX_NAME, NAME, TAG
    from proxy.trust.errors import TrustError

    name, sep, tag = reference.rpartition(":")
    problem = (
        "a digest names no tag to check; give NAME:TAG" if "@" in reference else
        "no tag: give NAME:TAG" if not sep or "/" in tag else
        f"invalid repository name {name!r} (lowercase letters, digits, . _ - and /)" if not NAME.match(name) else
        f"repository name longer than {MAX_NAME} characters" if len(name) > MAX_NAME else
        f"invalid tag {tag!r}" if not TAG.match(tag) else None
    )
    if problem:
        print(f"pullgate: reference: {problem}, such as library/demo:v1; got {reference!r}", file=sys.stderr)
        return EXIT_USAGE

    async def resolve() -> int:
        async with open_router(config) as router:
            try:
                routed = router.route(name, None)
                target = (await routed.services.gate.repository(routed.name)).resolve(tag)
            except TrustError as exc:
                print(f"pullgate: {from_trust_error(exc).message}", file=sys.stderr)
                return 1
            except RegistryError as exc:
                print(f"pullgate: {exc.message}", file=sys.stderr)
                return 1
            print(f"{routed.services.gate.gun(routed.name)}:{tag} {target.digest} {target.length} {target.role}")
            return 0

    try:
        return asyncio.run(resolve())
    except KeyboardInterrupt:
        print("pullgate: interrupted", file=sys.stderr)
        return 130
