"""Fault injection: what the simulator does to a SOAP call instead of (or besides) answering it.

Set at start (``--faults '{"error_rate": 0.1, "seed": 7}'`` or the flags) or at run time
(``POST /_admin/faults`` with the same JSON; fields not given keep their value). Faults apply to
SOAP calls only, never to ``/_admin`` or ``?wsdl``.

=================  ==============================================================================
field              effect
=================  ==============================================================================
latency_ms         every call waits this long before it is handled
error_rate         this fraction of calls answer ``error:simulated failure`` (nothing stored)
http500_rate       this fraction answer HTTP 500 with an HTML body (nothing stored)
drop_rate          this fraction are handled (and stored), then the connection is closed unanswered
timeout_rate       this fraction are handled after ``timeout_s`` seconds (past the client's timeout)
timeout_s          how long a "timeout" call sleeps (default 30)
seed               the random stream deciding which call gets which fault (deterministic)
methods            restrict the rate faults to these methods (empty: all)
quote_identifiers  an ``error`` answer quotes the first record's name and ID number, as a careless
                   platform may (the privacy tests: our logs must mask them)
down_for_s         from now, for this many seconds, reset (RST) the connection of every SOAP call
down               true: down until ``{"down": false}`` or ``POST /_admin/reset``
=================  ==============================================================================

One random draw per call picks at most one of error / http500 / drop / timeout (the rates are
stacked in that order, so they must add up to at most 1); a fixed seed and a sequential client
give the same faults on every run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

__all__ = ["Decision", "FaultInjector", "Faults", "FaultsError"]

FaultKind = Literal["error", "http500", "drop", "timeout"]


class FaultsError(ValueError):
    """A fault setting is invalid; the message names it."""


@dataclass(frozen=True, kw_only=True)
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    http500_rate: float = 0.0
    drop_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_s: float = 30.0
    seed: int = 0
    methods: tuple[str, ...] = field(default=())
    quote_identifiers: bool = False

    def __post_init__(self) -> None:
        rates = ("error_rate", "http500_rate", "drop_rate", "timeout_rate")
        for name in (*rates, "latency_ms", "timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise FaultsError(f"faults.{name} must be a number >= 0, got {value!r}")
        for name in rates:
            if getattr(self, name) > 1:
                raise FaultsError(
                    f"faults.{name} is a fraction of calls, between 0 and 1; got {getattr(self, name)}"
                )
        if sum(getattr(self, n) for n in rates) > 1 + 1e-9:
            raise FaultsError(f"the fault rates {rates} add up to more than 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise FaultsError(f"faults.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.quote_identifiers, bool):
            raise FaultsError(
                f"faults.quote_identifiers must be true or false, got {self.quote_identifiers!r}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: Faults | None = None) -> Faults:
        """``base`` updated with ``values`` (JSON); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise FaultsError(
                f"unknown fault setting(s) {unknown}; known: {sorted(known | {'down', 'down_for_s'})}"
            )
        merged = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        try:
            return replace(base or cls(), **merged)
        except TypeError as exc:
            raise FaultsError(str(exc)) from None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"] = list(self.methods)
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    latency_s: float
    fault: FaultKind | None
    timeout_s: float


class FaultInjector:
    """The current faults, the random stream and the down window. Thread-safe."""

    def __init__(self, *, faults: Faults | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._faults = faults or Faults()
        self._rng = random.Random(self._faults.seed)
        self._down_until: float | None = None  # inf: until reset
        self.injected: dict[str, int] = {}

    @property
    def faults(self) -> Faults:
        return self._faults

    def update(self, values: Mapping[str, Any]) -> None:
        """Apply an admin request: fault fields, plus ``down`` / ``down_for_s``."""
        values = dict(values)
        down = values.pop("down", None)
        down_for = values.pop("down_for_s", None)
        if down is not None and not isinstance(down, bool):
            raise FaultsError(f"down must be true or false, got {down!r}")
        if down_for is not None and (
            isinstance(down_for, bool) or not isinstance(down_for, int | float) or down_for < 0
        ):
            raise FaultsError(f"down_for_s must be a number of seconds >= 0, got {down_for!r}")
        faults = Faults.from_mapping(values, base=self._faults)
        with self._lock:
            if "seed" in values or faults != self._faults:
                self._rng = random.Random(faults.seed)
            self._faults = faults
            if down is True:
                self._down_until = float("inf")
            elif down is False:
                self._down_until = None
            if down_for is not None:
                self._down_until = self._clock() + float(down_for)

    def reset(self) -> None:
        with self._lock:
            self._faults = Faults()
            self._rng = random.Random(0)
            self._down_until = None
            self.injected = {}

    def is_down(self) -> bool:
        with self._lock:
            if self._down_until is None:
                return False
            if self._clock() >= self._down_until:
                self._down_until = None
                return False
            self.injected["down"] = self.injected.get("down", 0) + 1
            return True

    def down_remaining_s(self) -> float | None:
        with self._lock:
            if self._down_until is None:
                return None
            left = self._down_until - self._clock()
            return None if left <= 0 else left

    def decide(self, method: str) -> Decision:
        with self._lock:
            f = self._faults
            fault: FaultKind | None = None
            if not f.methods or method in f.methods:
                draw = self._rng.random()
                edge = 0.0
                for kind, rate in (
                    ("error", f.error_rate),
                    ("http500", f.http500_rate),
                    ("drop", f.drop_rate),
                    ("timeout", f.timeout_rate),
                ):
                    edge += rate
                    if draw < edge:
                        fault = kind
                        break
            if fault:
                self.injected[fault] = self.injected.get(fault, 0) + 1
            return Decision(latency_s=f.latency_ms / 1000.0, fault=fault, timeout_s=f.timeout_s)

    def status(self) -> dict[str, Any]:
        return {
            **self._faults.as_dict(),
            "down_remaining_s": self.down_remaining_s(),
            "injected": dict(self.injected),
        }
