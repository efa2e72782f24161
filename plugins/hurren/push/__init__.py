"""Pushing the store to the region platform: outbox, void and update, retries.

    load (one transaction per batch) ──► push_outbox: one entry per report version
                                          │ register (data_status 1) | void (data_status 0, D15;
                                          │ or the old key of a report whose key changed)
    load of accept/quote records, daily counts ──► one entry per row version (register)
    push run (dags/push_reports.py, the records__ and daily_counts push tasks, ``python -m hurren.push run``)
        claim due entries ─► store row + sub-items + PDF from S3 ─► XML ─► SM4/SM2 ─► SOAP
        (records: up to batch_size rows of one entity and hospital per call; a refused call split)
        ─► ok | ok:<who quoted it> | error:<reason> | no answer ─► push_outbox + push_log

States of an entry (``push_outbox.status``)::

    queued ──claim──► sending ──ok──────────────► acked
      ▲                  │ ──error:<reason>─────► rejected ──requeue by hand──► queued
      │                  │ ──no answer, backoff─► queued (due later)
      │                  │ ──max attempts──────► dead ──requeue by hand──────► queued
      │                  │ ──store moved on────► superseded   (a newer version is queued)
      │                  │ ──void, not on the──► skipped      platform: nothing to void
      └──lease expired (the run died)──┘

Modules: ``outbox`` (the SQL: enqueue, claim, record, recover, requeue, counts), ``policy`` (pure:
outcome of an answer, backoff, circuit breaker), ``payload`` (store row and PDF to send),
``connection`` (the platform from the Airflow connection ``hurren_platform`` or
HURREN_PLATFORM_*), ``runner`` (one run, bounded concurrency), ``tasks`` (what the DAGs call),
``__main__`` (``python -m hurren.push``: run, status, dead, requeue, sync). docs/push.md has the
whole story. This package's ``__init__`` imports nothing: ``hurren.load`` imports ``outbox``.
"""
