"""The one exception of :mod:`hurren.validation`."""

from __future__ import annotations


class ValidationError(RuntimeError):
    """Validation could not run (bad arguments, or an engine failed): fix the call, not the data."""
