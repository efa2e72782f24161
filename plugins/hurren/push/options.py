"""How a push run behaves: concurrency, retries, the circuit breaker, what it pushes.

Every field has a production default; the DAG's params, the CLI flags and tests override them
(:meth:`PushOptions.from_mapping` refuses unknown keys, so a typo is an error, not a default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from hurren.push.exceptions import PushConfigError

__all__ = ["PUSH_ENTITIES", "RECORD_ENTITIES", "REPORT_ENTITIES", "PushOptions"]

REPORT_ENTITIES: dict[str, tuple[str, str, str]] = {
    # master entity -> (report kind, item entity, void method); one report per call
    "labmaster": ("lab", "lab_subitem", "DeleteLabInfo"),
    "exammaster": ("exam", "exam_subitem", "DeleteExamInfo"),
}
RECORD_ENTITIES: dict[str, tuple[str, str]] = {
    # entity -> (method, the field shown as the entry's report_form_no); many rows per call
    "lab_exam_report": ("ArchiveAutoReport", "date_t"),
    "sehr_accept_record": ("SubmitAccept", "hr_report_form_no"),
    "sehr_quote_record": ("SubmitQuote", "hr_report_form_no"),
}
PUSH_ENTITIES: tuple[str, ...] = (*REPORT_ENTITIES, *RECORD_ENTITIES)


@dataclass(frozen=True, kw_only=True)
class PushOptions:
    concurrency: int = 4
    """Calls in flight at once (one keep-alive pool of this size)."""
    max_attempts: int = 8
    """Counted calls (connect failures excluded) before a version is dead-lettered."""
    backoff_base_s: float = 30.0
    """Retry delay after the first failure; doubled per attempt (with jitter) ..."""
    backoff_max_s: float = 3600.0
    """... up to this."""
    lease_s: float = 600.0
    """A version left ``sending`` this long by a run that died is taken back (and may be re-sent)."""
    max_run_s: float = 900.0
    """A run stops claiming after this long; what is left waits for the next run."""
    max_wait_s: float = 60.0
    """A run with nothing due waits for a retry falling due within this long, else it ends."""
    breaker_threshold: int = 5
    """Consecutive transport failures (any reports) that open the circuit breaker."""
    breaker_cooldown_s: float = 15.0
    """First wait before one probe call; doubled while probes fail ..."""
    breaker_max_cooldown_s: float = 300.0
    """... up to this."""
    transient_errors: tuple[str, ...] = ()
    """Regular expressions of ``error:`` reasons that are retried like transport failures (a
    platform answering ``error:系统繁忙``); every other ``error:`` is a rejection."""
    key_change: Literal["report_form_no", "off"] = "report_form_no"
    """How a changed primary key is detected (docs/push.md): ``report_form_no`` — another key of the
    same (entity, org_code, report_form_no) is a superseded key, voided on the platform; ``off``."""
    batch_size: int = 200
    """Rows per call for daily counts and accept/quote records (a refused call is split in halves
    until the refused rows are isolated; the rest are acknowledged)."""
    report_batch: int = 8
    """Reports a worker takes at once: their rows and sub-items read in two statements, their
    answers recorded in one transaction (each report is still its own call). A process killed
    mid-run may thus leave up to ``2 x concurrency x report_batch`` reports to be sent again."""
    entities: tuple[str, ...] = PUSH_ENTITIES
    org_codes: tuple[str, ...] = ()
    """Push only these hospitals; empty: all."""

    def __post_init__(self) -> None:
        for name in ("concurrency", "max_attempts", "breaker_threshold", "batch_size", "report_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PushConfigError(f"push option {name} must be a whole number >= 1, got {value!r}")
        for name in ("backoff_base_s", "backoff_max_s", "lease_s", "max_run_s", "max_wait_s",
                     "breaker_cooldown_s", "breaker_max_cooldown_s"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise PushConfigError(f"push option {name} must be a number of seconds >= 0, got {value!r}")
        unknown = sorted(set(self.entities) - set(PUSH_ENTITIES))
        if unknown or not self.entities:
            raise PushConfigError(
                f"push option entities must be some of {list(PUSH_ENTITIES)}, got {list(self.entities)}"
            )
        if self.key_change not in ("report_form_no", "off"):
            raise PushConfigError(
                f"push option key_change must be 'report_form_no' or 'off', got {self.key_change!r}"
            )
        for pattern in self.transient_errors:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise PushConfigError(
                    f"push option transient_errors: {pattern!r} is not a regex ({exc})"
                ) from None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: PushOptions | None = None) -> PushOptions:
        """``base`` (default: the defaults) with ``values``; None values are ignored, lists become tuples."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PushConfigError(f"unknown push option(s) {unknown}; known: {sorted(known)}")
        merged = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if v is not None}
        return replace(base or cls(), **merged)

    def is_transient(self, reason: str) -> bool:
        return any(re.search(p, reason) for p in self.transient_errors)
