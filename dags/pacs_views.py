"""
### pacs__&lt;hospital&gt;: the PACS views (影像数据, spec §2.3) into the municipal store, reconciled per study

One DAG per hospital in the sources configuration whose `streams` include `pacs_instance` or
`pacs_study`. The view names come from the hospital's `views` (the spec spells the instance view
`v_web_jcjg`, `v_web_jc.jg` and `v_web_jc jg`: D11), the study-UID column from
`pacs_study_uid_column` (`STUDIUIID`, or `STUDYIUID`).

| task | does |
|---|---|
| `prepare_store` | creates the store schema, the reconciliation tables and their indexes where missing |
| `pacs_study` | `v_web_jctj`, one row per study, incrementally by `MODIFYTIME`: validate, upsert by `STUDIUIID` |
| `pacs_instance` | `v_web_jcjg`, one row per DICOM instance (millions a day at a large hospital), incrementally by `CREATEDTIME`, `chunk_size` rows per batch (memory is one batch): validate, COPY + upsert by `INSTANCESOPIUID` |
| `reconcile` | per study of the last `reconcile_days` days: `INSTANCECOUNT` and `FILESIZE` against the instance rows received, the exam reports naming the study (`exammaster.study_instance_uid`) and the studies without one → table `pacs_recon`; counts per issue in the result and in `etl_run` (stream `pacs_recon`) |

Validation: every required column, `PATIENTSEX` against GB/T 2261.1 (STD_SEX; a PACS that sends
DICOM `M`/`F`/`O` maps them in the hospital's code mapping, D17), `MODALITY` against the Modality
dictionary, DICOM UIDs (digits and dots, no zero-led component, at most 64 characters), dates.
A failing row is quarantined with its rules; its study then shows `instance_count` in
`pacs_recon` until a corrected row loads.

**Backfill** a window without moving the watermarks: trigger with params `since` / `until` (source local
time), or `airflow backfill create --dag-id pacs__<id> --from-date … --to-date …`.
**Issues** in `pacs_recon.issues`: `no_study`, `no_instances`, `instance_count`,
`count_unreadable`, `file_size`, `no_report` (docs/pacs-and-counts.md).
"""

from hurren.dagfactory import pacs_dag
from hurren.site import site

for _source in site().sources.enabled:
    if {"pacs_instance", "pacs_study"} & set(_source.streams):
        _dag = pacs_dag(_source, doc_md=__doc__)
        globals()[_dag.dag_id] = _dag
