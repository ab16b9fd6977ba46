"""``make bench``: seed a sandbox, run every benchmark beside its anchor, write docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

from bench import registry, trust
from tests.realenv.pullgate import REPO_ROOT
from tests.realenv.sandbox import seed_sandbox

SECTIONS = {"trust": trust.run, "registry": registry.run}


def main(argv: list[str]) -> int:
    chosen = argv or list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        print(f"bench: unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})", file=sys.stderr)
        return 2
    parts = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Each row is measured beside its anchor in the same run; "
        "these machines are noisy, so read the medians and ratios, not single numbers.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="pullgate-bench-") as directory:
        workdir = Path(directory)
        with seed_sandbox(workdir / "sandbox") as sandbox:
            for name in chosen:
                print(f"bench: {name} ...", flush=True)
                parts.append(SECTIONS[name](sandbox, workdir))
    text = "\n".join(parts)
    (REPO_ROOT / "docs" / "benchmarks.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
