"""
### lab_reports__&lt;hospital&gt;: audited lab reports (检验报告) into the municipal store

One DAG per hospital in the site's sources configuration (`sources.json` of `HURREN_SITE_DIR`,
`include/sources.json` without one, or the file named by `HURREN_SOURCES_FILE`). Each run reads `labmaster` + `lab_subitem` from the hospital's database
incrementally (watermark `last_update_dtime`, less the hospital's overlap), maps its local codes,
validates every report against the spec with Great Expectations, loads valid reports (PDFs to
S3) and quarantines the rest whole, with every rule they broke.

| task | does |
|---|---|
| `prepare_store` | creates the store schema where missing |
| `extract_validate_load` | the window, in chunks; returns extracted / loaded / unchanged / stale / quarantined, the rows changed in the future (`future_rows`) and the rules broken |

**Backfill** a past window without moving the watermark: trigger with params `since` / `until`
(source local time), or `airflow backfill create --dag-id lab_reports__<id> --from-date … --to-date …`.
**Fails** only when the database cannot be read, or when more than `max_quarantine_ratio` of the
window is quarantined (everything valid is loaded first). Runs in the hospital's pool.
"""

from hurren.dagfactory import report_dag
from hurren.site import site

for _source in site().sources.enabled:
    if "lab" in _source.streams:
        _dag = report_dag(_source, "lab", doc_md=__doc__)
        globals()[_dag.dag_id] = _dag
