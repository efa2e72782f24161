"""Fixtures the end-to-end tests share (their regions: tests/fixtures/regions.py)."""

from __future__ import annotations

import pytest

from hurren import crypto
from hurren_testkit.simulator import Simulator, SimulatorConfig


@pytest.fixture(scope="module")
def sim():
    """A platform simulator of the module's own, in-process on a free port, with a fresh key pair
    (any well-formed credential passes)."""
    private, _ = crypto.generate_keypair()
    with Simulator(config=SimulatorConfig(port=0, private_key=private)) as s:
        yield s
