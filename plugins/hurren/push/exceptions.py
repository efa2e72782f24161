"""What the push raises on purpose, as one hierarchy.

    PushError                 base class
    ├── PushConfigError       the platform connection or the push options are unusable: the message
    │                         names the setting (connection ``hurren_platform`` or HURREN_PLATFORM_*)
    ├── PlatformUnavailable   the run ended with the circuit breaker open: the platform did not answer;
    │                         everything is recorded, queued versions wait for the next run
    └── PushRefused           a hospital's push task (daily counts, accept/quote records) ended with
                              rows rejected or dead: everything else was sent and recorded

Per-report outcomes (acknowledged, rejected, retried, dead) are never raised by a push run: they are
recorded in ``push_outbox`` / ``push_log`` and counted in the run's result.
"""

from __future__ import annotations

__all__ = ["PlatformUnavailable", "PushConfigError", "PushError", "PushRefused"]


class PushError(Exception):
    """Anything the push raises on purpose."""


class PushConfigError(PushError, ValueError):
    """The platform connection or an option is unusable; fix the named setting, retrying will not help."""


class PlatformUnavailable(PushError):
    """The platform stayed unreachable until the run's time was up; nothing is lost, the queue waits."""


class PushRefused(PushError):
    """The platform refused rows (or they went dead); the message names them. Fix them at the source
    (a corrected row is a new version, queued by its load) or requeue them after a fix."""
