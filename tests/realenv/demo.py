"""``make run``: a seeded registry + notary server, and pullgate in front, in the foreground.

Prints the pull commands to try and what each will answer, then runs
``pullgate serve`` with its log on this terminal until Ctrl-C, and stops every
process it started.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from proxy.cli import listen_problem
from proxy.config import parse_listen

from .procs import MissingComponent
from .pullgate import REPO_ROOT
from .sandbox import Sandbox, seed_sandbox
from .signing import PASSPHRASES


def banner(sandbox: Sandbox, listen: str, workdir: Path) -> str:
    images = sandbox.images
    lines = [
        "",
        f"registry      {sandbox.registry.url}   (images pushed with skopeo)",
        f"notary server {sandbox.notary.url}  (CA {sandbox.ca.ca_cert})",
        f"pullgate      http://{listen}",
        "",
        "Try (any docker daemon treats 127.0.0.1 registries as plain HTTP):",
    ]
    cases = [
        ("demo:v1", "pulls: signed in targets/releases"),
        ("demo:multi", "pulls: a signed multi-arch OCI index"),
        ("tsigned:v1", "pulls: signed in the top-level targets role"),
        ("demo:dev", "refused: remote trust data does not exist ... No valid trust data for dev"),
        ("notrust:latest", "refused: remote trust data does not exist ... does not have trust data"),
    ]
    for key, outcome in cases:
        image = images[key]
        reference = f"{listen}/{image.name}:{image.tag}"
        lines.append(f"  docker pull {reference}")
        lines.append(f"      -> {outcome}" + (f" ({image.digest})" if image.signed else ""))
    dev = images["demo:dev"]
    gun = sandbox.gun("library/demo")
    notary = f"notary -c {sandbox.notary_cli.config_path}"
    passphrases = " ".join(f"{k}={v}" for k, v in PASSPHRASES.items())
    lines += [
        f"  podman pull --tls-verify=false {listen}/library/demo:v1            -> pulls",
        f"  skopeo inspect --tls-verify=false docker://{listen}/library/demo:dev -> refused, as above",
        f"  curl -s http://{listen}/v2/library/demo/tags/list        -> only the signed tags",
        "",
        "Resolve one tag from the command line, like `notary lookup`:",
        f"  .venv/bin/pullgate check --upstream {sandbox.registry.url} --notary {sandbox.notary.url} \\",
        f"      --notary-ca {sandbox.ca.ca_cert} --state-dir {workdir / 'check-state'} library/demo:v1",
        "",
        "Sign dev with the notary CLI; pullgate serves it at most 30 s later (its refresh interval):",
        f"  export {passphrases}",
        f"  {notary} addhash {gun} dev {dev.length} --sha256 {dev.digest.removeprefix('sha256:')} "
        "-r targets/releases",
        f"  {notary} publish {gun}",
        "The size and sha256 of another tag's manifest, to sign it the same way:",
        f"  skopeo inspect --raw --tls-verify=false docker://{sandbox.registry.host}/library/demo:TAG > m.json",
        "  stat -c %s m.json; sha256sum m.json",
        "",
        "pullgate's log follows; Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:5050")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    address = parse_listen(args.listen)
    listen = str(address)
    busy = listen_problem(address)
    if busy:
        print(f"make run: cannot listen on {listen}: {busy}; choose another port: make run PORT=5051",
              file=sys.stderr)
        return 2
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="pullgate-run-"))).resolve()
    try:
        sandbox = seed_sandbox(workdir / "sandbox")
    except MissingComponent as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    with sandbox:
        print(banner(sandbox, listen, workdir), flush=True)
        command = [
            sys.executable, "-m", "proxy", "serve", "--listen", listen,
            "--upstream", sandbox.registry.url, "--notary", sandbox.notary.url,
            "--notary-ca", str(sandbox.ca.ca_cert), "--state-dir", str(workdir / "state"),
        ]
        proxy = subprocess.Popen(command, cwd=REPO_ROOT)
        for hangup in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(hangup, lambda *_: proxy.terminate())
        try:
            status = proxy.wait()
        except KeyboardInterrupt:
            proxy.terminate()
            status = proxy.wait()
        # stopped on purpose (Ctrl-C, kill, a closed terminal) is a clean end
        return 0 if status in (0, -signal.SIGTERM, -signal.SIGINT) else status


if __name__ == "__main__":
    raise SystemExit(main())
