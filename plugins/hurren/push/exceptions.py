"""What the push raises on purpose, as one hierarchy.

    PushError                 base class
    ├── PushConfigError       the platform connection or the push options are unusable: the message
    │                         names the setting (connection ``hurren_platform`` or HURREN_PLATFORM_*)
    └── PlatformUnavailable   the run ended with the circuit breaker open: the platform did not answer;
                              everything is recorded, queued versions wait for the next run

Per-report outcomes (acknowledged, rejected, retried, dead) are never raised: they are recorded in
``push_outbox`` / ``push_log`` and counted in the run's result.
"""

from __future__ import annotations

__all__ = ["PlatformUnavailable", "PushConfigError", "PushError"]


class PushError(Exception):
    """Anything the push raises on purpose."""


class PushConfigError(PushError, ValueError):
    """The platform connection or an option is unusable; fix the named setting, retrying will not help."""


class PlatformUnavailable(PushError):
    """The platform stayed unreachable until the run's time was up; nothing is lost, the queue waits."""
