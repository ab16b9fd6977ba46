"""The one rule for missing tools in tests: fail under CI, skip elsewhere.

CI must never go green by silently skipping the real-environment tests, while
a developer without e.g. dockerd installed can still run the rest.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, NoReturn

import pytest

from .procs import MissingComponent, require_tool


def in_ci() -> bool:
    """True when the CI environment variable says so (CI=true, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing(message: str) -> NoReturn:
    """pytest.fail under CI, pytest.skip otherwise."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: missing components fail instead of skipping)", pytrace=False)
    pytest.skip(message)  # reached only outside CI


def needs(*tools: str) -> dict[str, str]:
    """Require executables for a test; returns {tool: path}."""
    try:
        return {tool: require_tool(tool) for tool in tools}
    except MissingComponent as exc:
        missing(str(exc))


@contextmanager
def components() -> Iterator[None]:
    """Apply the same rule to a MissingComponent raised while starting services."""
    try:
        yield
    except MissingComponent as exc:
        missing(str(exc))
