"""
### records__&lt;hospital&gt;: accept and quote records (互认结果 / 引用结果) into the store and to the platform

One DAG per hospital in the sources configuration whose `streams` include `accept` or `quote`.
The hospital records, for each recognisable item of another hospital's report, whether its
doctor accepted it (`sehr_accept_record`, spec §1.3.2.5 / §1.4.2.3) and what was quoted into the
medical record (`sehr_quote_record`, §1.3.2.6 / §1.4.2.6). Each run:

| task | does |
|---|---|
| `prepare_store` | creates the store schema where missing |
| `accept`, `quote` | the window, incrementally by `record_time` (their only time column): validate (`reason` required and in STD_REJECT_REASON when `is_accept` is 2, D7; `type` 1 or 2; dates; dictionary codes), upsert by (`new_event_no`, `hr_org_code`, `hr_report_form_no`, `code`, `id_no`) (D16), quarantine the rest with their rules |
| `push_accept`, `push_quote` | SubmitAccept / SubmitQuote of the hospital's queued records through the push outbox (each record written by a load is queued in the same transaction), 200 per call; a refused call is split until the refused records are isolated, the rest are acknowledged |

Retries, backoff and dead letters are those of reports (`docs/push.md`): a transport failure leaves
the records queued (the task fails and is retried; `push_reports` also sends them every 15
minutes); refused records fail the task after the rest are sent, named by report number, and stay
`rejected` in `push_outbox` (`python -m hurren.push dead --status rejected`); a corrected record at
the source is a new version, queued by its load.

**Backfill** a window without moving the watermarks: trigger with params `since` / `until` (source local
time), or `airflow backfill create --dag-id records__<id> --from-date … --to-date …`.
"""

from hurren.dagfactory import records_dag
from hurren.site import site

for _source in site().sources.enabled:
    if {"accept", "quote"} & set(_source.streams):
        _dag = records_dag(_source, doc_md=__doc__)
        globals()[_dag.dag_id] = _dag
