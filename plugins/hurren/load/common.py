"""What every part of :mod:`hurren.load` shares: its errors, counts, holds and small helpers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from hurren import rules, spec
from hurren.incremental import LoadCounts, SourceClock  # noqa: F401 - load's names for them
from hurren.rows import canonical_json

if TYPE_CHECKING:
    from hurren.load.units import _Unit

log = logging.getLogger(__name__)


Method = Literal["auto", "copy", "portable"]


_IN_GROUP = 500  # values per IN list (Oracle allows 1000)


_UPSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class LoadError(Exception):
    """Anything this module raises on purpose."""


class ObjectStoreError(LoadError):
    """A PDF could not be put to S3; the batch was not committed and the watermark not moved."""


class StoreWriteError(LoadError):
    """The store refused the batch; the transaction rolled back, the watermark did not move.

    The message carries the database's SQLSTATE and primary message only: a driver's full text
    can quote the rows (COPY's CONTEXT line), and patient data must not reach a log. The original
    exception is kept in ``cause`` for a debugger, not chained into the traceback."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


def db_error_summary(exc: BaseException) -> str:
    """What a database error says, short and without data: the server's SQLSTATE and primary
    message (not its DETAIL or CONTEXT, which can quote rows), or the driver's own first line (a
    lost connection, a refused login); never SQLAlchemy's text with the statement."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    state = getattr(orig, "sqlstate", None) or getattr(diag, "sqlstate", None)
    if primary:
        return f"{type(orig).__name__} [{state}]: {primary}"
    first = str(orig).strip().splitlines()[0][:300] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__


def db_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency; the portable path needs none
        return (DBAPIError,)
    return (DBAPIError, psycopg.Error)


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a record is held back: every rule it broke, and a readable reason (no patient data)."""

    rules: tuple[Mapping[str, Any], ...]
    reason: str


def _rule_text(rule: str, check: str, **context: Any) -> str:
    """The rule book's bilingual message of a load-found failure (as validation words its own)."""
    zh, en = rules.load_rulebook().message(rule, check)
    return f"{zh.format(**context)} / {en.format(**context)}"


_json = canonical_json


def _storable(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 database column can hold) written as ``\\udXXX``:
    a report that validation holds for them must still reach the quarantine, not fail the batch."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _report_form_no(master: spec.Entity, u: _Unit) -> str | None:
    """The number a held report goes by, also when its key is broken (None: not a report)."""
    if "report_form_no" not in master.key:
        return None
    row = u.master or (u.items[0] if u.items else {})
    value = row.get("report_form_no")
    return None if value is None or str(value) == "" else str(value)[:128]
