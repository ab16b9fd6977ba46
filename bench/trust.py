"""Trust resolution: pullgate's notary client beside the notary CLI, and verification growth.

1. Against one real notary-server and tag: a cold resolution (no trusted state,
   every role fetched and verified), a warm one (the timestamp alone re-checked),
   both inside pullgate's own client; beside `notary lookup` of the same tag.
   `pullgate check` and `notary lookup` are also timed as whole commands.
2. Verification of a targets role signing 1,000, 10,000 and 100,000 tags: pure
   time of the checks and the tag index, which must grow linearly.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.stats import median_seconds, median_seconds_async, ms
from proxy.trust.notary import NotaryClient, NotarySettings
from proxy.trust.repository import DEFAULT_ROLE_ORDER, TrustedRepository
from proxy.trust.store import TrustStore
from proxy.trust.trusted_set import TrustedSet
from tests.realenv.pullgate import REPO_ROOT
from tests.realenv.sandbox import Sandbox
from tests.tuf_factory import NOW_NS, Repo, target

RUNS = 25


async def _resolutions(sandbox: Sandbox, workdir: Path) -> tuple[float, float]:
    gun = sandbox.gun("library/demo")
    verify = ssl.create_default_context(cafile=str(sandbox.ca.ca_cert))
    async with httpx.AsyncClient(verify=verify) as http:
        def fresh(refresh: float) -> NotaryClient:
            state = Path(tempfile.mkdtemp(dir=workdir))
            return NotaryClient(NotarySettings(url=sandbox.notary.url, refresh_interval=refresh),
                                TrustStore(state), http)

        async def cold() -> None:
            (await fresh(0).repository(gun)).resolve("v1")

        warm_client = fresh(0)
        await warm_client.repository(gun)

        async def warm() -> None:
            (await warm_client.repository(gun)).resolve("v1")

        return await median_seconds_async(cold, RUNS), await median_seconds_async(warm, RUNS)


def _commands(sandbox: Sandbox, workdir: Path) -> tuple[float, float, float]:
    gun = sandbox.gun("library/demo")
    lookup = lambda: sandbox.notary_cli.lookup(gun, "v1")  # noqa: E731 - a thunk to time
    check = [sys.executable, "-m", "proxy", "check", "--upstream", sandbox.registry.url,
             "--notary", sandbox.notary.url, "--notary-ca", str(sandbox.ca.ca_cert),
             "--state-dir", str(workdir / "check-state"), "library/demo:v1"]
    run = lambda: subprocess.run(check, cwd=REPO_ROOT, check=True, capture_output=True)  # noqa: E731
    startup = [sys.executable, "-c", "import proxy.app"]
    bare = lambda: subprocess.run(startup, cwd=REPO_ROOT, check=True, capture_output=True)  # noqa: E731
    return median_seconds(lookup, 10), median_seconds(run, 10), median_seconds(bare, 10)


def verification_growth() -> list[tuple[int, float]]:
    rows = []
    for count in (1_000, 10_000, 100_000):
        repo = Repo.standard()
        repo.targets["targets/releases"] = {f"tag-{i}": target(f"{i:064x}", 1000 + i) for i in range(count)}
        files = repo.files()

        def verify() -> None:
            trusted = TrustedSet(files["root"], NOW_NS)
            trusted.update_timestamp(files["timestamp"])
            trusted.update_snapshot(files["snapshot"])
            trusted.update_targets(files["targets"])
            trusted.update_delegation("targets/releases", files["targets/releases"])
            TrustedRepository.build("gun", trusted, DEFAULT_ROLE_ORDER, {}).resolve("tag-7")

        rows.append((count, median_seconds(verify, 5 if count < 100_000 else 3)))
    return rows


def run(sandbox: Sandbox, workdir: Path) -> str:
    cold, warm = asyncio.run(_resolutions(sandbox, workdir))
    lookup, check_cmd, python_start = _commands(sandbox, workdir)
    lookup_cmd = median_seconds(lambda: sandbox.notary_cli.lookup(sandbox.gun("library/demo"), "v1"), RUNS)
    growth = verification_growth()
    base_count, base_time = growth[0]
    lines = [
        "## Trust resolution (issue: trust verification that holds up)",
        "",
        f"Same notary-server, GUN `{sandbox.gun('library/demo')}`, tag `v1` (in `targets/releases`); "
        f"medians of {RUNS} runs.",
        "",
        "| what | median | ratio to `notary lookup` |",
        "|---|---|---|",
        f"| `notary lookup` (CLI, its cache warm: timestamp re-checked) | {ms(lookup_cmd)} | 1.00 |",
        f"| pullgate cold: root, timestamp, snapshot, targets, targets/releases fetched and verified "
        f"| {ms(cold)} | {cold / lookup_cmd:.2f} |",
        f"| pullgate warm: timestamp fetched, compared, expiry re-checked | {ms(warm)} | {warm / lookup_cmd:.2f} |",
        "",
        "As whole commands (process start-up included; medians of 10):",
        "",
        "| command | median | ratio |",
        "|---|---|---|",
        f"| `notary lookup GUN v1` | {ms(lookup)} | 1.00 |",
        f"| `pullgate check library/demo:v1` (cold: empty state each time) | {ms(check_cmd)} | "
        f"{check_cmd / lookup:.2f} |",
        f"| of which Python start-up and imports (`python -c 'import proxy.app'`) | {ms(python_start)} | "
        f"{python_start / lookup:.2f} |",
        "",
        "Verification of one targets role signing N tags (signatures, hashes, the tag index; medians):",
        "",
        "| tags | median | per tag | growth vs 1,000 (linear = N/1,000) |",
        "|---|---|---|---|",
    ]
    for count, seconds in growth:
        lines.append(f"| {count:,} | {ms(seconds)} | {seconds / count * 1e6:.1f} µs | "
                     f"{seconds / base_time:.1f}× for {count / base_count:.0f}× the tags |")
    return "\n".join(lines) + "\n"

