"""The analysts' web pages: a FastAPI app, mounted by the Airflow plugin at ``/hurren``.

=============================================  ===================================================
path (under the mount)                         page
=============================================  ===================================================
``/``                                          hospitals: last day, pass rate, open quarantine
``/hospitals/{org}``                           one hospital: quarantine by rule, scorecard, docs
``/hospitals/{org}/quarantine``                held reports per rule (filters), identifiers masked
``/hospitals/{org}/quarantine.csv`` ``.xlsx``  the same lines, for the hospital
``/hospitals/{org}/scorecard``                 pass rate by rule per day (SVG), daily counts
``/hospitals/{org}/docs/{day}``                builds that hospital-day's Data Docs if stale, redirects
``/datadocs``                                  hospitals × days with links to Data Docs
``/docs/{path}``                               the Data Docs site, read from the docs bucket
``/run/{dag_id}/{run_id}``                     one DAG run: counts, rules, held reports, docs
``/dag/{dag_id}``                              one DAG's recent runs
``/static/{path}``                             CSS, icon, vendored Bootstrap/jQuery
=============================================  ===================================================

:func:`create_app` takes the store engine, the S3 client and the docs bucket (or factories for
them; by default from ``hurren.settings``), and an optional ``auth`` dependency: the plugin passes
:func:`airflow_auth` (the Airflow user of the request's token or session cookie, with read access
to DAG runs, and to that DAG on the DAG and run pages); tests and ``python -m hurren.reports
serve`` run without. Nothing touches the store or S3 when the app is built.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

log = logging.getLogger(__name__)

_DOC_PATH = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_DAY_PAGE = re.compile(r"^datadocs/([A-Za-z0-9_.-]+)/(\d{4}-\d{2}-\d{2})/")
_ORG = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
PAGE_LIMIT = 500  # quarantine entries per page; exports carry them all


class _Dep:
    """A value, or a zero-argument factory called on every use (the defaults below memoize per
    setting, so a changed environment plus ``settings.cache_clear()`` is picked up)."""

    def __init__(self, value: Any, default: Callable[[], Any]) -> None:
        self._value, self._default = value, default

    def get(self) -> Any:
        if self._value is None:
            return self._default()
        return self._value() if callable(self._value) else self._value


@dataclass
class Deps:
    engine: _Dep
    s3: _Dep
    bucket: _Dep
    keep_days: int
    org_names: Callable[[], dict[str, str]]


@lru_cache(maxsize=4)
def _engine_for(url: str) -> Any:
    from sqlalchemy import create_engine

    return create_engine(url, pool_pre_ping=True)


def _default_engine() -> Any:
    from hurren.settings import settings

    return _engine_for(settings().store_url)


@lru_cache(maxsize=4)
def _s3_for(endpoint: str, access_key: str) -> Any:
    from hurren.clients import minio_client
    from hurren.settings import settings

    return minio_client(settings())


def _default_s3() -> Any:
    from hurren.settings import settings

    s = settings()
    return _s3_for(s.s3_endpoint, s.s3_access_key)


def _default_bucket() -> str:
    from hurren.settings import settings

    return settings().s3_bucket_docs


def configured_org_names() -> dict[str, str]:
    """org_code -> hospital name from the sources configuration ({} when it cannot be read)."""
    try:
        from hurren.sources import resolve_sources

        return {s.org_code: s.org_name for s in resolve_sources()}
    except Exception:  # noqa: BLE001 - names are a nicety; the store has them too
        return {}


# --- Airflow authentication ---------------------------------------------------------------------


async def airflow_auth(request: Request) -> Any:
    """The Airflow user of the request (``Authorization: Bearer`` or the UI's session cookie),
    allowed to read DAG runs (of the DAG in the path, when there is one). Raises 401/403."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi.security import HTTPAuthorizationCredentials
    from starlette.concurrency import run_in_threadpool

    header = request.headers.get("authorization") or ""
    creds = None
    if header.lower().startswith("bearer "):
        creds = HTTPAuthorizationCredentials(scheme="Bearer", credentials=header[7:].strip())
    user = await get_user(request, None, creds)
    await run_in_threadpool(requires_access_dag("GET", DagAccessEntity.RUN), request, user)
    return user


# --- the app ----------------------------------------------------------------------------------


def create_app(
    *,
    engine: Any = None,
    s3: Any = None,
    bucket: Any = None,
    auth: Callable[..., Any] | None = None,
    keep_days: int | None = None,
    org_names: Callable[[], dict[str, str]] | None = None,
) -> FastAPI:
    """The reports app. ``engine``/``s3``/``bucket``: values, or zero-argument factories called
    on each use (default: from ``hurren.settings``); ``auth``: a FastAPI dependency run before
    every route."""
    from hurren.reports import datadocs

    deps = Deps(
        engine=_Dep(engine, _default_engine),
        s3=_Dep(s3, _default_s3),
        bucket=_Dep(bucket, _default_bucket),
        keep_days=keep_days or datadocs.keep_days_from_env(),
        org_names=org_names or configured_org_names,
    )
    app = FastAPI(
        title="hurren validation reports",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(auth)] if auth is not None else [],
    )
    app.state.hurren = deps

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code in (401, 403):
            return HTMLResponse(
                _message_page(request, "需要登录 Sign in required",
                              "Sign in to Airflow first (these pages show hospital data), then open them from the Airflow UI."),
                status_code=exc.status_code,
            )  # fmt: skip
        return HTMLResponse(
            _message_page(request, f"{exc.status_code}", str(exc.detail)), status_code=exc.status_code
        )

    _routes(app, deps)
    return app


def _root(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


def _ctx(request: Request, **extra: Any) -> dict[str, Any]:
    root = _root(request)
    return {"root": root, "static": f"{root}/static/", **extra}


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    from hurren.reports import pages

    return HTMLResponse(pages.render(template, **_ctx(request, **context)))


def _message_page(request: Request, title: str, text: str) -> str:
    from hurren.reports import pages

    return pages.render("message.html", **_ctx(request, title=title, text=text))


def _org(org_code: str) -> str:
    if not _ORG.match(org_code):
        raise HTTPException(404, f"no hospital {org_code!r}")
    return org_code


def _names(deps: Deps, conn: Any) -> dict[str, str]:
    from sqlalchemy import func, select

    from hurren.reports import results

    names = dict(deps.org_names())
    if results.table_exists(conn):
        t = results.validation_result
        for org, name in conn.execute(select(t.c.org_code, func.max(t.c.org_name)).group_by(t.c.org_code)):
            if name and org not in names:
                names[org] = name
    return names


@dataclass
class HospitalLine:
    org_code: str
    name: str
    last_day: date | None = None
    records: int = 0
    held: int = 0
    open: int = 0
    resolved: int = 0
    sources: set[str] = field(default_factory=set)
    last_run: Any = None

    @property
    def rate(self) -> float | None:
        return None if not self.records else 100.0 * (self.records - self.held) / self.records


def _runs(conn: Any, *, where: Any = None, limit: int = 200) -> list[dict[str, Any]]:
    from sqlalchemy import inspect, select

    from hurren import store

    if not inspect(conn).has_table(store.run.name):
        return []
    r = store.run
    stmt = select(r).order_by(r.c.started_at.desc(), r.c.id.desc()).limit(limit)
    if where is not None:
        stmt = stmt.where(where)
    out = []
    for row in conn.execute(stmt).mappings():
        d = dict(row)
        try:
            d["details"] = json.loads(d.get("details") or "{}")
        except ValueError:
            d["details"] = {}
        out.append(d)
    return out


def _source_orgs(names_by_source: dict[str, str], runs: list[dict[str, Any]]) -> dict[str, str]:
    out = dict(names_by_source)
    for r in runs:
        org = (r.get("details") or {}).get("org_code")
        if org:
            out.setdefault(r["source"], org)
    return out


def _configured_source_orgs() -> dict[str, str]:
    try:
        from hurren.sources import resolve_sources

        return {s.id: s.org_code for s in resolve_sources()}
    except Exception:  # noqa: BLE001
        return {}


def _routes(app: FastAPI, deps: Deps) -> None:  # noqa: C901 - one closure per page
    from sqlalchemy import and_, select

    from hurren import store
    from hurren.reports import datadocs, quarantine, results, scorecard

    def engine() -> Any:
        return deps.engine.get()

    def _refresh_index() -> None:
        """The site index after a hospital-day was built here (the bucket's copy stays current)."""
        client, bucket = deps.s3.get(), deps.bucket.get()
        datadocs.ensure_static(client, bucket)
        datadocs.write_index(engine(), client, bucket, keep_days=deps.keep_days, on=_latest_day(engine()))

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        with engine().connect() as conn:
            names = _names(deps, conn)
            lines: dict[str, HospitalLine] = {}

            def line(org: str) -> HospitalLine:
                return lines.setdefault(org, HospitalLine(org, names.get(org, org)))

            latest = None
            if results.table_exists(conn):
                from sqlalchemy import func

                latest = conn.execute(select(func.max(results.validation_result.c.day))).scalar()
            if latest is not None:
                latest = results.as_date(latest)
                for hd in results.hospital_days(conn, since=latest - timedelta(days=7)):
                    ln = line(hd.org_code)
                    if ln.last_day is None or hd.day > ln.last_day:
                        ln.last_day, ln.records, ln.held = hd.day, hd.records, hd.held
            for org, (n_open, n_resolved) in quarantine.open_counts(conn).items():
                ln = line(org)
                ln.open, ln.resolved = n_open, n_resolved
            runs = _runs(conn, limit=500)
            src_org = _source_orgs(_configured_source_orgs(), runs)
            for r in runs:
                org = src_org.get(r["source"])
                if org is None:
                    continue
                ln = line(org)
                ln.sources.add(r["source"])
                if ln.last_run is None:
                    ln.last_run = r
            for org in names:
                line(org)
        return _page(request, "home.html", title="校验报告 Validation reports",
                     hospitals=sorted(lines.values(), key=lambda x: (-x.open, x.org_code)))  # fmt: skip

    @app.get("/hospitals/{org_code}", response_class=HTMLResponse)
    def hospital(request: Request, org_code: str) -> Response:
        org = _org(org_code)
        with engine().connect() as conn:
            names = _names(deps, conn)
            counts = quarantine.rule_counts(conn, quarantine.Filter(org_code=org))
            hdays = results.hospital_days(conn, org_code=org)[: deps.keep_days]
            until = hdays[0].day if hdays else datadocs.today()
            card = scorecard.scorecard(conn, org, until=until, days=14, org_name=names.get(org, ""))
            runs = _runs(conn, where=store.run.c.source.in_(_sources_of(conn, org)), limit=20)
        if not hdays and not counts and org not in names:
            raise HTTPException(404, f"no hospital {org}")
        return _page(request, "hospital.html", title=names.get(org, org), org_code=org, org_name=names.get(org, org),
                     rule_counts=counts, hospital_days=hdays, card=card, chart=scorecard.svg_chart(card, width=760, height=300),
                     runs=runs)  # fmt: skip

    def _filter(org: str, rule: str | None, entity: str | None, status: str, since: str | None,
                until: str | None, source: str | None, run_id: str | None) -> quarantine.Filter:  # fmt: skip
        if status not in ("open", "resolved", "all"):
            raise HTTPException(400, "status must be open, resolved or all")
        try:
            d_since = date.fromisoformat(since) if since else None
            d_until = date.fromisoformat(until) if until else None
        except ValueError:
            raise HTTPException(400, "since/until must be dates YYYY-MM-DD") from None
        return quarantine.Filter(org_code=org, rule=rule or None, entity=entity or None, status=status,
                                 since=d_since, until=d_until, source=source or None, run_id=run_id or None)  # fmt: skip

    @app.get("/hospitals/{org_code}/quarantine", response_class=HTMLResponse)
    def quarantine_page(
        request: Request, org_code: str, rule: str | None = None, entity: str | None = None,
        status: str = "open", since: str | None = None, until: str | None = None,
        source: str | None = None, run_id: str | None = None,
    ) -> Response:  # fmt: skip
        org = _org(org_code)
        flt = _filter(org, rule, entity, status, since, until, source, run_id)
        with engine().connect() as conn:
            names = _names(deps, conn)
            counts = quarantine.rule_counts(conn, flt)
            lines = quarantine.quarantine_lines(conn, flt, limit=PAGE_LIMIT, org_names=names)
        entities = sorted({ln.entity for ln in lines} | ({flt.entity} if flt.entity else set()))
        return _page(request, "quarantine.html", title=f"{names.get(org, org)} 暂扣 quarantine", org_code=org,
                     org_name=names.get(org, org), flt=flt, rule_counts=counts, lines=lines, limit=PAGE_LIMIT,
                     entities=entities)  # fmt: skip

    def _export(org_code: str, fmt: str, **kw: Any) -> Response:
        org = _org(org_code)
        flt = _filter(org, **kw)
        with engine().connect() as conn:
            names = _names(deps, conn)
            lines = quarantine.quarantine_lines(conn, flt, org_names=names)
        stamp = datetime.now().strftime("%Y%m%d")  # noqa: DTZ005 - a file name
        name = f"quarantine_{org}_{flt.rule or 'all-rules'}_{flt.status}_{stamp}.{fmt}"
        disposition = f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"
        if fmt == "csv":
            return Response(quarantine.to_csv(lines), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": disposition})  # fmt: skip
        body = quarantine.to_xlsx(lines, title=f"{names.get(org, org)} quarantine")
        return Response(
            body,
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"Content-Disposition": disposition},
        )

    @app.get("/hospitals/{org_code}/quarantine.csv")
    def quarantine_csv(
        org_code: str, rule: str | None = None, entity: str | None = None, status: str = "open",
        since: str | None = None, until: str | None = None, source: str | None = None, run_id: str | None = None,
    ) -> Response:  # fmt: skip
        return _export(org_code, "csv", rule=rule, entity=entity, status=status, since=since, until=until,
                       source=source, run_id=run_id)  # fmt: skip

    @app.get("/hospitals/{org_code}/quarantine.xlsx")
    def quarantine_xlsx(
        org_code: str, rule: str | None = None, entity: str | None = None, status: str = "open",
        since: str | None = None, until: str | None = None, source: str | None = None, run_id: str | None = None,
    ) -> Response:  # fmt: skip
        return _export(org_code, "xlsx", rule=rule, entity=entity, status=status, since=since, until=until,
                       source=source, run_id=run_id)  # fmt: skip

    @app.get("/hospitals/{org_code}/scorecard", response_class=HTMLResponse)
    def scorecard_page(request: Request, org_code: str, days: int = Query(30, ge=2, le=366),
                       until: str | None = None) -> Response:  # fmt: skip
        org = _org(org_code)
        with engine().connect() as conn:
            names = _names(deps, conn)
            if until:
                try:
                    end = date.fromisoformat(until)
                except ValueError:
                    raise HTTPException(400, "until must be a date YYYY-MM-DD") from None
            else:
                hd = results.hospital_days(conn, org_code=org)
                end = hd[0].day if hd else datadocs.today()
            card = scorecard.scorecard(conn, org, until=end, days=days, org_name=names.get(org, ""))
            counts = scorecard.daily_counts(conn, org, since=card.days[0], until=end)
        return _page(request, "scorecard.html", title=f"{card.org_name} 质量评分 scorecard", org_code=org,
                     org_name=card.org_name, card=card, chart=scorecard.svg_chart(card), daily=counts, days=days,
                     until=end)  # fmt: skip

    @app.get("/hospitals/{org_code}/docs/{day}")
    def hospital_day_docs(request: Request, org_code: str, day: str) -> Response:
        org = _org(org_code)
        try:
            d = date.fromisoformat(day)
        except ValueError:
            raise HTTPException(404, "not a day") from None
        with engine().connect() as conn:
            if not results.day_rows(conn, org_code=org, days=[d]):
                raise HTTPException(404, f"no validation results for {org} on {d}")
        if datadocs.ensure_day(engine(), deps.s3.get(), deps.bucket.get(), org, d):
            _refresh_index()
        return RedirectResponse(
            f"{_root(request)}/docs/{datadocs.day_prefix(org, d)}index.html", status_code=303
        )

    @app.get("/datadocs", response_class=HTMLResponse)
    def docs_landing(request: Request) -> Response:
        with engine().connect() as conn:
            names = _names(deps, conn)
            hdays = results.hospital_days(conn)
        days = sorted({hd.day for hd in hdays}, reverse=True)[: deps.keep_days]
        keep = set(days)
        cells = {(hd.org_code, hd.day): hd for hd in hdays if hd.day in keep}
        orgs = sorted(
            {(hd.org_code, names.get(hd.org_code, hd.org_name or hd.org_code)) for hd in cells.values()}
        )
        return _page(request, "datadocs.html", title="Data Docs", days=days, orgs=orgs, cells=cells,
                     keep_days=deps.keep_days)  # fmt: skip

    @app.get("/docs/{path:path}")
    def docs(request: Request, path: str = "") -> Response:
        if path in ("", "/"):
            path = "index.html"
        elif path.endswith("/"):
            path += "index.html"
        if not _DOC_PATH.match(path) or ".." in path.split("/"):
            raise HTTPException(404, "no such page")
        client, bucket = deps.s3.get(), deps.bucket.get()
        m = _DAY_PAGE.match(path)
        if m:  # a hospital-day page: (re)build it first when its results changed
            try:
                d = date.fromisoformat(m.group(2))
            except ValueError:
                raise HTTPException(404, "no such page") from None
            try:
                if datadocs.ensure_day(engine(), client, bucket, m.group(1), d):
                    _refresh_index()
            except results.ReportsError as exc:
                raise HTTPException(404, str(exc)) from None
        elif path == "index.html" and datadocs.read_object(client, bucket, path) is None:
            _refresh_index()
        body = datadocs.read_object(client, bucket, path)
        if body is None:
            raise HTTPException(404, f"{path} is not in the Data Docs site")
        return Response(body, media_type=datadocs.content_type(path), headers={"Cache-Control": "no-cache"})

    @app.get("/run/{dag_id}/{run_id:path}", response_class=HTMLResponse)
    def run_page(request: Request, dag_id: str, run_id: str) -> Response:
        r = store.run
        with engine().connect() as conn:
            names = _names(deps, conn)
            runs = _runs(conn, where=and_(r.c.dag_id == dag_id, r.c.run_id == run_id))
            src_org = _source_orgs(_configured_source_orgs(), runs)
            held: dict[tuple[str, str], list[Any]] = {}
            docs_days: list[tuple[str, date]] = []
            for run in runs:
                org = src_org.get(run["source"], "")
                run["org_code"] = org
                if org:
                    flt = quarantine.Filter(org_code=org, run_id=run_id, source=run["source"], status="all")
                    held[(run["source"], run["stream"])] = quarantine.rule_counts(conn, flt)
                    end = run.get("interval_end")
                    if end is not None:
                        d = results.data_day(end)
                        if results.day_rows(conn, org_code=org, days=[d]) and (org, d) not in docs_days:
                            docs_days.append((org, d))
        return _page(request, "run.html", title=f"{dag_id} · {run_id}", dag_id=dag_id, run_id=run_id, runs=runs,
                     held=held, docs_days=docs_days, names=names)  # fmt: skip

    @app.get("/dag/{dag_id}", response_class=HTMLResponse)
    def dag_page(request: Request, dag_id: str) -> Response:
        with engine().connect() as conn:
            names = _names(deps, conn)
            runs = _runs(conn, where=store.run.c.dag_id == dag_id, limit=30)
            src_org = _source_orgs(_configured_source_orgs(), runs)
        orgs = sorted({src_org[r["source"]] for r in runs if r["source"] in src_org})
        return _page(request, "dag.html", title=dag_id, dag_id=dag_id, runs=runs, orgs=orgs, names=names)

    @app.get("/static/{path:path}")
    def static(path: str) -> Response:
        base = datadocs.STATIC_DIR
        target = (base / path).resolve()
        if not _DOC_PATH.match(path) or not target.is_relative_to(base) or not target.is_file():
            raise HTTPException(404, "no such file")
        return Response(target.read_bytes(), media_type=datadocs.content_type(path),
                        headers={"Cache-Control": "max-age=3600"})  # fmt: skip

    @app.get("/healthz")
    def healthz() -> Response:
        return JSONResponse({"ok": True})

    @app.get("/robots.txt")
    def robots() -> Response:
        return PlainTextResponse("User-agent: *\nDisallow: /\n")


def _sources_of(conn: Any, org: str) -> list[str]:
    from sqlalchemy import select

    from hurren import store
    from hurren.reports import results
    from hurren.reports.quarantine import has_quarantine

    found = {s for s, o in _configured_source_orgs().items() if o == org}
    q = store.quarantine
    if has_quarantine(conn):
        found.update(x for (x,) in conn.execute(select(q.c.source).where(q.c.org_code == org).distinct()))
    if results.table_exists(conn):
        t = results.validation_result
        found.update(x for (x,) in conn.execute(select(t.c.source).where(t.c.org_code == org).distinct()))
    return sorted(found)


def _latest_day(engine: Any) -> date | None:
    from sqlalchemy import func, select

    from hurren.reports import results

    results.ensure_table(engine)
    with engine.connect() as conn:
        v = conn.execute(select(func.max(results.validation_result.c.day))).scalar()
    return results.as_date(v) if v is not None else None
