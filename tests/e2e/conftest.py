"""Fixtures the end-to-end tests share."""

from __future__ import annotations

import pytest

from hurren import crypto
from hurren.simulator import Simulator, SimulatorConfig


@pytest.fixture(scope="module")
def monkeypatch_module():
    """``monkeypatch`` for module-scoped fixtures (a region's env vars live as long as the region)."""
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def sim():
    """A platform simulator of the module's own, in-process on a free port, with a fresh key pair
    (any well-formed credential passes)."""
    private, _ = crypto.generate_keypair()
    with Simulator(config=SimulatorConfig(port=0, private_key=private)) as s:
        yield s
