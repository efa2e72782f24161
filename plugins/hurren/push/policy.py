"""Pure decisions of the push: what an answer means for a version, when to retry, when to stop.

No I/O here: :func:`classify` maps one call's result to an :class:`Outcome`, :func:`backoff_s`
says how long a version waits, :class:`CircuitBreaker` says whether to call the platform at all.

How a call ends, and what happens to its version (``status`` in ``push_outbox``)::

    answer / exception                       kind        version becomes
    ok, ok:<who quoted it>                   ok          acked (the text kept in answer_text)
    error:<reason>                           rejected    rejected: not retried; a new version, or a
                                                         requeue by hand, sends it again
    error:<reason> matching transient_errors retry       queued again after a backoff
    SOAP fault, code Client (Sender)         rejected    rejected, like error: (the request is at
                                                         fault); transient_errors apply to its text
    SOAP fault, any other code (Server)      retry       queued again after a backoff (the platform
                                                         failed: counts for the breaker, as HTTP 500)
    ConnectError (could not connect)         unreachable queued again after a backoff; never dead
                                                         (a platform that is down is not the
                                                         report's fault: the breaker handles it)
    other TransportError, AnswerError        retry       queued again after a backoff; dead once
                                                         it has had max_attempts calls
    PayloadError (our XML cannot be built)   broken      dead at once: fix the data, then requeue

The runner adds outcomes found before any call: ``superseded`` (the store holds a newer version
than the one queued), ``skipped`` (a void of a report the platform does not hold), ``broken`` (the
store row or its PDF is missing or does not match its SHA-256), ``retry`` (S3 failed), ``waiting``
(D20: a register whose void did not go through goes back to the queue, unsent, behind it).

The circuit breaker counts transport failures of any version (``unreachable`` and ``retry``):
``breaker_threshold`` in a row open it; while open nothing is sent; after a cool-down one probe
goes out; its success closes the breaker, its failure doubles the cool-down (up to a maximum).
A business answer (``ok`` or ``error:``) proves the platform is up and closes it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hurren.platform import (
    AnswerError,
    BusinessError,
    ConnectError,
    PayloadError,
    PlatformError,
    SoapFault,
    TransportError,
)
from hurren.platform.answers import Ack

__all__ = ["CircuitBreaker", "Outcome", "OutcomeKind", "backoff_s", "classify"]

OutcomeKind = Literal["ok", "rejected", "retry", "unreachable", "broken", "superseded", "skipped", "waiting"]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    text: str | None = None
    """ok: the platform's text after ``ok:``; otherwise the reason or failure (no payload data)."""
    answered: bool = False
    """The platform gave a business answer (``ok`` or ``error:``): it is up."""
    called: bool = True
    """A call was made (``broken``: the payload could not even be built)."""

    @property
    def transport_failure(self) -> bool:
        """Evidence that the platform is unwell (for the circuit breaker)."""
        return self.called and self.kind in ("retry", "unreachable") and not self.answered

    @property
    def log_outcome(self) -> str:
        """``push_log.outcome``: ok | error | transport."""
        if self.kind == "ok":
            return "ok"
        return "error" if self.answered else "transport"


def classify(result: Ack | BaseException, *, transient: Callable[[str], bool] = lambda _: False) -> Outcome:
    """What one call's result (an ``Ack`` or the exception it raised) means for its version."""
    if isinstance(result, Ack):
        return Outcome("ok", result.text, answered=True)
    if isinstance(result, BusinessError):
        kind: OutcomeKind = "retry" if transient(result.reason) else "rejected"
        return Outcome(kind, f"error:{result.reason}", answered=True)
    if isinstance(result, SoapFault):
        text = f"fault:{result.code}: {result.text}"
        if result.retryable or transient(result.text):
            return Outcome("retry", text, answered=not result.retryable)
        return Outcome("rejected", text, answered=True)
    if isinstance(result, ConnectError):
        return Outcome("unreachable", f"{type(result).__name__}: {result}")
    if isinstance(result, TransportError | AnswerError):
        return Outcome("retry", f"{type(result).__name__}: {result}")
    if isinstance(result, PayloadError):
        return Outcome("broken", f"PayloadError: {result}", called=False)
    if isinstance(result, PlatformError):  # ConfigurationError is raised by the runner, never classified
        return Outcome("broken", f"{type(result).__name__}: {result}", called=False)
    raise TypeError(f"cannot classify {type(result).__name__}")


def backoff_s(attempts: int, *, base_s: float, max_s: float, salt: int = 0) -> float:
    """Delay before the next try after ``attempts`` counted failures: ``base * 2**(attempts-1)``,
    capped at ``max_s``, times a jitter in [0.5, 1.0) drawn from (``salt``, attempts) so that
    versions that failed together do not come back together, yet every run computes the same."""
    exponent = max(0, attempts - 1)
    delay = min(max_s, base_s * (2 ** min(exponent, 32)))
    digest = hashlib.sha256(f"{salt}:{attempts}".encode()).digest()
    jitter = 0.5 + 0.5 * int.from_bytes(digest[:4], "big") / 2**32
    return delay * jitter


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Closed → (threshold transport failures in a row) → open → (cool-down) → half-open: one probe.

    Not thread-safe: the runner's main thread owns it (workers hand their outcomes back)."""

    def __init__(
        self,
        *,
        threshold: int,
        cooldown_s: float,
        max_cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._base = cooldown_s
        self._max = max(cooldown_s, max_cooldown_s)
        self._clock = clock
        self.state: BreakerState = "closed"
        self._failures = 0
        self._cooldown = cooldown_s
        self._opened_at = 0.0
        self._probe_out = False
        self.opened = 0  # times it opened in this run
        self.down_since: float | None = None

    def allow(self) -> bool:
        """May one more call start now? (Half-open: only the one probe.)"""
        if self.state == "closed":
            return True
        if self.state == "open" and self._clock() - self._opened_at >= self._cooldown:
            self.state = "half_open"
            self._probe_out = False
        if self.state == "half_open" and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until a probe may go (0 when closed or a probe may go now)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self._cooldown - (self._clock() - self._opened_at))

    def record(self, outcome: Outcome) -> None:
        if outcome.transport_failure:
            self._failure()
        else:
            self._success()

    def _success(self) -> None:
        self.state = "closed"
        self._failures = 0
        self._cooldown = self._base
        self._probe_out = False
        self.down_since = None

    def _failure(self) -> None:
        self._failures += 1
        if self.state == "half_open":
            self._cooldown = min(self._max, self._cooldown * 2)
            self._open()
        elif self.state == "closed" and self._failures >= self._threshold:
            self._open()

    def _open(self) -> None:
        if self.state == "closed":
            self.opened += 1
            self.down_since = self._clock()
        self.state = "open"
        self._opened_at = self._clock()
        self._probe_out = False
