"""
### daily_counts: yesterday's audited lab and exam reports per ordering department (检查检验日报, spec §1.2.2.5)

Every night at 03:00 Beijing time (`CronTriggerTimetable("0 3 * * *", timezone="Asia/Shanghai")`;
set `HURREN_DAILY_COUNTS_CRON` / `HURREN_DAILY_COUNTS_TIMEZONE` in the scheduler's and the dag
processor's environment for another time), for every hospital with lab or exam reports, one task
group:

| task | does |
|---|---|
| `<hospital>.count` | counts, **from the store**, the reports audited on the day (`authenticator_dtime`, Beijing), not void, exams in state 3/4; by `participant_dept_code` (开单科室), lab and exam merged into one row per department → `lab_exam_report`, replacing the day's rows (D18) |
| `<hospital>.push` | ArchiveAutoReport with the hospital's queued `lab_exam_report` rows through the push outbox (`count` queues a row only when its counts changed since the platform acknowledged them), many rows per call; retries, backoff and dead letters as for reports (`docs/push.md`) |
| `<hospital>.reconcile` | per department: counted, sent (D8 clamps above 9999 and records the overflow), the platform's answer, and the reports of the day the platform acknowledged → `daily_count_recon` |

The run counts the previous day and recounts the `recount_days` days before it (late reports); a
day that comes out the same is neither rewritten nor sent again, a changed day replaces its rows
(re-running never double-counts).

**Backfill** any day: trigger with `date` = `YYYY-MM-DD` (and `recount_days` = 1 for that day
only), e.g. `airflow dags trigger daily_counts -c '{"date": "2024-05-29", "recount_days": 1}'`. **Fails** when a day cannot be counted, when
`daily_count_overflow` is `error` and a count exceeds NUMBER(4) (D8), when the platform refuses
rows (named in the error; `python -m hurren.push dead --status rejected`), or when it does not
answer (retried; queued rows also go out with `push_reports`' runs every 15 minutes).
"""

from hurren.dagfactory import daily_counts_dag
from hurren.site import site

_site = site()
dag = daily_counts_dag(
    [s for s in _site.sources.enabled if {"lab", "exam"} & set(s.streams)],
    doc_md=__doc__,
    cron=_site.daily_counts_cron,
    timezone=_site.daily_counts_timezone,
)
