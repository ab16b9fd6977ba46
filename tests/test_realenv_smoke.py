"""Smoke test: the seeded sandbox really holds the trust situations we rely on."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tests.realenv.sandbox import SEED_TOOLS, seed_sandbox
from tests.realenv.testing import components, needs


def _http_status(url: str, context: object) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:  # type: ignore[arg-type]
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_seeded_sandbox(tmp_path: Path) -> None:
    needs(*SEED_TOOLS)
    with components(), seed_sandbox(tmp_path) as sb:
        v1 = sb.images["demo:v1"]
        assert v1.signed and v1.role == "targets/releases"

        found = sb.notary_cli.lookup(sb.gun("library/demo"), "v1")
        assert found.returncode == 0, found.stderr
        # notary 0.7 prints "<tag> sha256:<hex> <length>"
        assert found.stdout.split() == ["v1", v1.digest, str(v1.length)]

        dev = sb.notary_cli.lookup(sb.gun("library/demo"), "dev")
        assert dev.returncode != 0, dev.stdout

        status = _http_status(f"{sb.notary.url}/v2/{sb.gun('library/notrust')}/_trust/tuf/root.json",
                              sb.ca.ssl_context())
        assert status == 404
