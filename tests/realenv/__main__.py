"""`python -m tests.realenv`: a seeded sandbox that runs until Ctrl-C (for `make run`).

Writes <workdir>/sandbox.json (everything about the seeded images) and
<workdir>/env.sh (variables for a shell), then waits for SIGINT/SIGTERM and
stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

from .procs import MissingComponent
from .sandbox import Sandbox, seed_sandbox
from .signing import PASSPHRASES
from .services import Dockerd, start_dockerd


def _env_lines(sb: Sandbox) -> list[str]:
    """Shell exports pointing notary/docker at the sandbox."""
    env = {
        "REALENV_WORKDIR": str(sb.workdir),
        "REGISTRY": sb.registry.host,
        "NOTARY_URL": sb.notary.url,
        "NOTARY_CA": str(sb.ca.ca_cert),
        "NOTARY_CLIENT_CONFIG": str(sb.notary_cli.config_path),
        **PASSPHRASES,
    }
    if sb.dockerd is not None:
        env.update(DOCKER_HOST=sb.dockerd.host, DOCKER_CONFIG=str(sb.dockerd.config_dir),
                   DOCKER_CONTENT_TRUST_SERVER=sb.notary.url)
    return [f"export {k}={shlex.quote(v)}" for k, v in env.items()]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.realenv", description=__doc__)
    parser.add_argument("--workdir", type=Path, help="state directory (default: a new temp dir)")
    parser.add_argument("--docker", action="store_true", help="also start dockerd and seed dsigned:v1")
    parser.add_argument("--netns", action="store_true",
                        help="run dockerd, registry and notary in a private network namespace (implies --docker)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="pullgate-sandbox-"))).resolve()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with ExitStack() as stack:
            dockerd: Dockerd | None = None
            if args.docker or args.netns:
                dockerd = start_dockerd(workdir / "dockerd", netns=args.netns)
                stack.callback(dockerd.stop)
            sb = stack.enter_context(seed_sandbox(workdir / "sandbox", dockerd))
            (workdir / "sandbox.json").write_text(json.dumps(sb.describe(), indent=2))
            (workdir / "env.sh").write_text("\n".join(_env_lines(sb)) + "\n")
            print(json.dumps(sb.describe(), indent=2))
            print(f"\nsandbox up (seeded in {sb.seconds:.1f}s); `source {workdir / 'env.sh'}`; Ctrl-C to stop",
                  flush=True)
            stop.wait()
            print("stopping...", flush=True)
    except MissingComponent as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
