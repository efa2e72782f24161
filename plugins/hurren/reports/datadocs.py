"""Great Expectations Data Docs per hospital and day, as a static site in the docs bucket.

Layout of the site (bucket ``settings().s3_bucket_docs``, all links relative, so it works from
the bucket and through the Airflow plugin's proxy alike)::

    index.html                                  hospitals × days of the retention window
    static/                                     CSS and the vendored Bootstrap 4.3.1 / jQuery 3.7.1 (MIT)
    datadocs/<org_code>/<day>/index.html        one index per hospital-day: its few result pages
    datadocs/<org_code>/<day>/<source>.<entity>.html   GX's validation result page of one entity
    datadocs/<org_code>/<day>/manifest.json     what the pages were built from (staleness check)

Each result page is rendered by GX's own ``ValidationResultsPageRenderer`` and a
``DefaultJinjaPageView`` whose page, navbar, script and footer templates are replaced by ours
(``templates/gx/``): the stock ones load Bootstrap, jQuery, Vega and Font Awesome from CDNs, and
the machines analysts use here have no internet. The results rendered are the slimmed, merged
day results of :mod:`hurren.reports.results`: counts only, no unexpected values, no row ids.

Granularity and speed: a hospital-day has one page per (source, entity) whatever the number of
runs and batches that day, its own index, and the site index is one query over the results
table; GX's own site index (which lists every stored validation result, client-side, from CDN
scripts) is not used. Retention: :func:`publish` removes the hospital-days older than
``keep_days`` from the bucket and drops their GX results from the store (summaries stay).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from hurren.reports import results

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
GX_TEMPLATES = PACKAGE_DIR / "templates" / "gx"
DOCS_PREFIX = "datadocs"
STATIC_PREFIX = "static"
DEFAULT_KEEP_DAYS = 30
TZ = ZoneInfo("Asia/Shanghai")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_BUILD_LOCKS: dict[tuple[str, date], Any] = {}
_LOCKS_LOCK = threading.Lock()


class ObjectStore(Protocol):
    """The part of ``minio.Minio`` the site needs (tests pass an in-memory fake)."""

    def put_object(
        self, bucket_name: str, object_name: str, data: Any, length: int, content_type: str = ...
    ) -> Any: ...
    def get_object(self, bucket_name: str, object_name: str) -> Any: ...
    def list_objects(self, bucket_name: str, prefix: str | None = None, recursive: bool = False) -> Any: ...
    def remove_object(self, bucket_name: str, object_name: str) -> Any: ...


def content_type(path: str) -> str:
    return CONTENT_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def today() -> date:
    return datetime.now(TZ).date()


def keep_days_from_env(environ: Mapping[str, str] | None = None) -> int:
    """``HURREN_DOCS_RETENTION_DAYS`` (default 30): hospital-days older than this leave the site."""
    import os

    raw = (environ if environ is not None else os.environ).get("HURREN_DOCS_RETENTION_DAYS", "")
    if not raw.strip():
        return DEFAULT_KEEP_DAYS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise results.ReportsError(
            f"HURREN_DOCS_RETENTION_DAYS must be a whole number of days >= 1, got {raw!r}"
        )
    return n


def day_prefix(org_code: str, day: date) -> str:
    if not _SAFE_PART.match(org_code):
        raise results.ReportsError(
            f"org_code {org_code!r} cannot name a Data Docs folder (letters, digits, _ . -)"
        )
    return f"{DOCS_PREFIX}/{org_code}/{day.isoformat()}/"


def page_name(row: results.DayRow) -> str:
    return f"{row.source}.{row.entity}.html"


# --- rendering one validation result with GX -------------------------------------------------


def to_gx(result: Mapping[str, Any]) -> Any:
    """A slimmed result (dict) as GX's ExpectationSuiteValidationResult, with the hurren rule
    shown in each expectation's notes."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from great_expectations.expectations.metadata_types import FailureSeverity

    evrs = []
    for r in result["results"]:
        cfg = r["expectation_config"]
        meta = dict(cfg.get("meta") or {})
        notes = None
        if meta.get("rule"):
            notes = (
                f"规则 rule **{meta['rule']}** ({meta.get('check', '')}): {meta.get('title_zh', '')} — "
                f"{meta.get('severity', '')}; {meta.get('entity', '')}.{meta.get('field', '')}"
            )
        try:
            severity = FailureSeverity(cfg.get("severity") or "critical")
        except ValueError:
            severity = FailureSeverity.CRITICAL
        config = ExpectationConfiguration(
            type=cfg["type"],
            kwargs=dict(cfg.get("kwargs") or {}),
            meta=meta,
            notes=notes,
            description=cfg.get("description"),
            severity=severity,
            id=cfg.get("id"),
        )
        evrs.append(
            ExpectationValidationResult(
                success=bool(r["success"]),
                expectation_config=config,
                result=dict(r.get("result") or {}),
                exception_info=dict(r.get("exception_info") or {}),
            )
        )
    return ExpectationSuiteValidationResult(
        success=bool(result["success"]),
        results=evrs,
        suite_name=str(result.get("suite_name") or "hurren"),
        statistics=dict(result.get("statistics") or {}),
        meta=dict(result.get("meta") or {}),
    )


def _page_view() -> Any:
    from great_expectations.render.view import DefaultJinjaPageView
    from jinja2 import ChoiceLoader, FileSystemLoader

    class OfflinePageView(DefaultJinjaPageView):
        """GX's page view with our page/navbar/script/footer templates first: no CDN, no GX
        walkthrough, a way back to the hospital-day index."""

        def __init__(self) -> None:
            super().__init__()
            self.env.loader = ChoiceLoader([FileSystemLoader(str(GX_TEMPLATES)), self.env.loader])

    return OfflinePageView()


_SUITE_LINK = re.compile(r'<a href="[^"]*expectations/[^"]*"\s*>(.*?)</a>', re.S)


def render_validation_page(result: Mapping[str, Any], *, title: str, run_name: str, run_time: datetime | None,
                           static: str, up: str, home: str) -> str:  # fmt: skip
    """One GX validation result page, offline: ``static`` (relative URL of static/), ``up`` (the
    hospital-day index), ``home`` (the site index)."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer

    data = dict(result)
    meta = dict(result.get("meta") or {})
    asset = (meta.get("active_batch_definition") or {}).get("data_asset_name")
    data["meta"] = {
        **meta,
        "batch_spec": {"data_asset_name": asset},
        "run_id": {"run_name": run_name, "run_time": (run_time or datetime.now()).isoformat()},  # noqa: DTZ005
    }
    with _quiet():
        document = ValidationResultsPageRenderer(run_info_at_end=True).render(to_gx(data))
        html = _page_view().render(
            document, hurren={"title": title, "static": static, "up": up, "home": home}
        )
    # the suite page is not part of this site (the expectations are on the result page itself)
    return _SUITE_LINK.sub(r"\1", html)


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")
        logging.getLogger("great_expectations").setLevel(logging.WARNING)

    def __exit__(self, *exc: Any) -> None:
        self._w.__exit__(*exc)


# --- hospital-day site ------------------------------------------------------------------------


@dataclass
class DaySite:
    org_code: str
    day: date
    fingerprint: str
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # object key -> (body, type)


def build_day_files(engine: Engine, org_code: str, day: date) -> DaySite:
    """Every file of one hospital-day (pages, index, manifest), rendered from the store."""
    from hurren.reports import pages

    prefix = day_prefix(org_code, day)
    with engine.connect() as conn:
        rows = results.day_rows(conn, org_code=org_code, days=[day])
        if not rows:
            raise results.ReportsError(f"no validation results for hospital {org_code} on {day}")
        fp = results.fingerprint(rows)
        site = DaySite(org_code, day, fp)
        entries = []
        for row in rows:
            gx = results.gx_result(conn, row.id) if row.has_gx else None
            name = page_name(row) if gx else None
            if gx:
                title = f"{row.org_name or org_code} · {day.isoformat()} · {row.source} · {row.entity}"
                html = render_validation_page(
                    gx, title=title, run_name=f"{org_code} {day.isoformat()} {row.entity}", run_time=row.updated_at,
                    static="../../../static/", up="index.html", home="../../../index.html",
                )  # fmt: skip
                site.files[prefix + name] = (html.encode("utf-8"), CONTENT_TYPES[".html"])
            entries.append(pages.DayEntry(row=row, page=name, statistics=(gx or {}).get("statistics") or {}))
    index = pages.day_index_html(org_code=org_code, org_name=rows[0].org_name or "", day=day, entries=entries)
    site.files[prefix + "index.html"] = (index.encode("utf-8"), CONTENT_TYPES[".html"])
    manifest = {
        "fingerprint": fp,
        "built_at": datetime.now(TZ).isoformat(timespec="seconds"),
        "pages": sorted(site.files),
    }
    site.files[prefix + "manifest.json"] = (json.dumps(manifest).encode(), CONTENT_TYPES[".json"])
    return site


def _put(client: ObjectStore, bucket: str, key: str, body: bytes, ctype: str) -> None:
    client.put_object(bucket, key, io.BytesIO(body), len(body), content_type=ctype)


def read_object(client: ObjectStore, bucket: str, key: str) -> bytes | None:
    """An object's bytes, or None when it does not exist."""
    try:
        resp = client.get_object(bucket, key)
    except Exception as exc:  # noqa: BLE001 - minio's S3Error NoSuchKey, or a fake's KeyError
        if getattr(exc, "code", None) in ("NoSuchKey", "NoSuchObject") or isinstance(exc, KeyError):
            return None
        raise
    try:
        return resp.read()
    finally:
        close = getattr(resp, "close", None)
        if close:
            close()
        release = getattr(resp, "release_conn", None)
        if release:
            release()


def static_files() -> dict[str, tuple[bytes, str]]:
    """The site's static files (our CSS, the vendored Bootstrap/jQuery and their licences)."""
    out = {}
    for p in sorted(STATIC_DIR.rglob("*")):
        if p.is_file():
            key = f"{STATIC_PREFIX}/{p.relative_to(STATIC_DIR).as_posix()}"
            out[key] = (p.read_bytes(), content_type(p.name))
    return out


def _static_version() -> str:
    h = hashlib.sha256()
    for key, (body, _) in static_files().items():
        h.update(key.encode())
        h.update(hashlib.sha256(body).digest())
    return h.hexdigest()[:16]


def ensure_static(client: ObjectStore, bucket: str) -> bool:
    """Upload the static files when the bucket's copy is missing or older; True if uploaded."""
    version = _static_version()
    marker = f"{STATIC_PREFIX}/VERSION"
    current = read_object(client, bucket, marker)
    if current is not None and current.decode(errors="replace").strip() == version:
        return False
    for key, (body, ctype) in static_files().items():
        _put(client, bucket, key, body, ctype)
    _put(client, bucket, marker, version.encode(), CONTENT_TYPES[".txt"])
    return True


def is_stale(engine: Engine, client: ObjectStore, bucket: str, org_code: str, day: date) -> bool:
    """Whether the hospital-day's pages are missing or older than its results."""
    with engine.connect() as conn:
        rows = results.day_rows(conn, org_code=org_code, days=[day])
    if not rows:
        return False
    raw = read_object(client, bucket, day_prefix(org_code, day) + "manifest.json")
    if raw is None:
        return True
    try:
        return json.loads(raw).get("fingerprint") != results.fingerprint(rows)
    except ValueError:
        return True


def build_day(engine: Engine, client: ObjectStore, bucket: str, org_code: str, day: date) -> DaySite:
    """Render one hospital-day and put it to the bucket (pages first, the manifest last)."""
    with _lock(org_code, day):
        ensure_static(client, bucket)
        site = build_day_files(engine, org_code, day)
        files = sorted(site.files.items(), key=lambda kv: kv[0].endswith("manifest.json"))
        for key, (body, ctype) in files:
            _put(client, bucket, key, body, ctype)
        log.info("Data Docs of %s %s: %d file(s) put to %s", org_code, day, len(site.files), bucket)
        return site


def ensure_day(engine: Engine, client: ObjectStore, bucket: str, org_code: str, day: date) -> bool:
    """Build the hospital-day if it is stale; True if it was (re)built."""
    if not is_stale(engine, client, bucket, org_code, day):
        return False
    with _lock(org_code, day):
        if not is_stale(engine, client, bucket, org_code, day):
            return False
        build_day(engine, client, bucket, org_code, day)
        return True


def _lock(org_code: str, day: date) -> Any:
    with _LOCKS_LOCK:
        return _BUILD_LOCKS.setdefault((org_code, day), threading.RLock())


def remove_prefix(client: ObjectStore, bucket: str, prefix: str) -> int:
    names = [o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)]
    for name in names:
        client.remove_object(bucket, name)
    return len(names)


def built_days(client: ObjectStore, bucket: str) -> set[tuple[str, date]]:
    """(org_code, day) of every hospital-day in the bucket (by its manifest)."""
    out = set()
    for o in client.list_objects(bucket, prefix=f"{DOCS_PREFIX}/", recursive=True):
        parts = o.object_name.split("/")
        if len(parts) == 4 and parts[3] == "manifest.json":
            try:
                out.add((parts[1], date.fromisoformat(parts[2])))
            except ValueError:
                continue
    return out


@dataclass
class Published:
    built: list[tuple[str, date]] = field(default_factory=list)
    removed: list[tuple[str, date]] = field(default_factory=list)
    pruned_results: int = 0
    static_uploaded: bool = False


def publish(
    engine: Engine,
    client: ObjectStore,
    bucket: str,
    *,
    keep_days: int = DEFAULT_KEEP_DAYS,
    on: date | None = None,
    org_codes: Iterable[str] | None = None,
) -> Published:
    """Bring the site up to date: build every stale hospital-day of the last ``keep_days`` days
    (ending ``on``, default today in Beijing), remove older ones from the bucket, drop their GX
    results from the store, rewrite the site index."""

    results.ensure_table(engine)
    on = on or today()
    since = on - timedelta(days=keep_days - 1)
    wanted = set(org_codes) if org_codes is not None else None
    out = Published(static_uploaded=ensure_static(client, bucket))
    with engine.connect() as conn:
        hdays = results.hospital_days(conn, since=since)
    for hd in hdays:
        if hd.day > on or (wanted is not None and hd.org_code not in wanted) or not hd.with_docs:
            continue
        if ensure_day(engine, client, bucket, hd.org_code, hd.day):
            out.built.append((hd.org_code, hd.day))
    for org, day in sorted(built_days(client, bucket)):
        if day < since and (wanted is None or org in wanted):
            remove_prefix(client, bucket, day_prefix(org, day))
            out.removed.append((org, day))
    out.pruned_results = results.prune_results(engine, before=since)
    write_index(engine, client, bucket, keep_days=keep_days, on=on)
    return out


def write_index(engine: Engine, client: ObjectStore, bucket: str, *, keep_days: int, on: date | None) -> None:
    """(Re)write the site index: the hospital-days present in the bucket, last ``keep_days``
    days up to ``on``. Removes nothing."""
    from hurren.reports import pages

    on = on or today()
    since = on - timedelta(days=keep_days - 1)
    with engine.connect() as conn:
        hdays = [hd for hd in results.hospital_days(conn, since=since) if hd.day <= on]
    present = built_days(client, bucket)
    index = pages.site_index_html(
        [hd for hd in hdays if (hd.org_code, hd.day) in present], keep_days=keep_days, on=on
    )
    _put(client, bucket, "index.html", index.encode("utf-8"), CONTENT_TYPES[".html"])
