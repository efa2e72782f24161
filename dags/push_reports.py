"""
### push_reports: the store's lab and exam reports (and every other queued row) to the region platform

Runs when a hospital's reports reach the store (the Assets `hurren://store/lab_reports` and
`hurren://store/exam_reports`, updated by every `lab_reports__*` / `exam_reports__*` run) and
every 15 minutes (Beijing time) for retries that fell due. One task, `push`: it claims the due
report versions from `push_outbox`, sends each (XML with its PDF from S3, SM4/SM2 envelope, SOAP)
with bounded concurrency, and records every answer per version: `ok`, `ok:<who quoted it>` for a
void, `error:<reason>`, or no answer.

| outcome | what happens |
|---|---|
| `ok` | acknowledged; never sent again (a changed report is a new version) |
| `error:<reason>` | **rejected**, not retried: a new version of the report, or a requeue after a fix, sends it again |
| no answer (time-out, HTTP 5xx, dropped connection) | retried with exponential backoff; **dead** after `max_attempts` |
| platform down | the circuit breaker stops calling, waits, probes with one call; the task fails at the end (retried), nothing is lost |

Voids: a report whose `data_status` is `0` in the source (D15) is voided with DeleteLabInfo /
DeleteExamInfo; the platform's `ok:` text naming who quoted it is kept (`push_outbox.answer_text`)
and listed in the task's result. A report whose key changed is voided under its old key.

The same run sends whatever else the outbox holds due: daily counts (`lab_exam_report`) and
accept/quote records that their own DAGs' push tasks could not deliver (many rows per call; a
refused call is split until the refused rows are isolated).

**Returns** counts per report type and hospital (sent, acked, rejected, retried, dead) and the
outbox's states, the voids quoted by others, and this run's dead letters with their last error.
**Dead letters**: read them with `python -m hurren.push dead`, or trigger `push_requeue` (dry run
by default); requeue after a fix there or with `python -m hurren.push requeue`.
**Platform**: Airflow connection `hurren_platform` (host = endpoint URL, login = visitor code,
password = visitor key, extra = `org_code`, `org_name`, `public_key`, SM2 options), else
`HURREN_PLATFORM_*`. See docs/push.md.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, task

from hurren.dagfactory import DEFAULT_ARGS, START, STREAM_ASSETS, prepare_store
from hurren.push.options import PUSH_ENTITIES
from hurren.push.tasks import push_reports as push

with DAG(
    dag_id="push_reports",
    description="store → region platform: register, void, retry; counts per report type and hospital",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/15 * * * *", timezone="Asia/Shanghai"),
        assets=STREAM_ASSETS["lab"] | STREAM_ASSETS["exam"],
    ),
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["hurren", "push", "platform"],
    params={
        "concurrency": Param(4, type="integer", minimum=1, maximum=32, description="calls in flight at once"),
        "max_run_s": Param(
            900, type="number", minimum=10, description="stop claiming after this many seconds"
        ),
        "entities": Param(
            list(PUSH_ENTITIES),
            type="array",
            description="what to push: labmaster, exammaster, lab_exam_report, sehr_accept_record, sehr_quote_record",
        ),
        "org_codes": Param([], type="array", description="only these hospitals (org_code); empty: all"),
    },
) as dag:
    prepare = task(prepare_store, task_id="prepare_store")()
    pushed = task(push, task_id="push", execution_timeout=timedelta(minutes=30))()
    prepare >> pushed
