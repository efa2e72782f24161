"""A simulator of the region platform's Myhealth SOAP service, for tests, the benchmark and the demo.

    python -m hurren_testkit.simulator --host 127.0.0.1 --port 58080 [--key-file sim-key.json] [--db sim.db]
    python -m hurren_testkit.simulator --key-file sim-key.json --print-public-key

It has its own SM2 key pair, implements the ten methods as the spec describes them
(``service``), checks every payload against the field specs and dictionaries (``checks``), keeps
what it accepts in SQLite (``store``), and can misbehave on purpose (``faults``). Settings:
``config`` (flags and environment variables); HTTP side and admin endpoints: ``server``.

In tests::

    with Simulator(config=SimulatorConfig(port=0, private_key=key)) as sim:
        client = PlatformClient(endpoint=sim.url, public_key=sim.public_key, credential=...)
"""

from __future__ import annotations

from hurren_testkit.simulator.config import ConfigError, SimulatorConfig, Visitor, load_private_key
from hurren_testkit.simulator.faults import Faults, FaultsError
from hurren_testkit.simulator.server import Simulator
from hurren_testkit.simulator.service import Platform

__all__ = [
    "ConfigError",
    "Faults",
    "FaultsError",
    "Platform",
    "Simulator",
    "SimulatorConfig",
    "Visitor",
    "load_private_key",
]
