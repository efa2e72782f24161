"""
### push_requeue: see and requeue the push's dead letters

Trigger by hand. With the defaults (**dry run**) it only lists the `dead` entries of
`push_outbox`, newest first, with their last error (in the task log and its XCom): what the push
gave up on. After fixing the cause (the data at the hospital, the platform's configuration),
trigger again with `dry_run` off to put them back in the queue (attempts reset, due now); the
next `push_reports` run sends them.

| param | meaning |
|---|---|
| `status` | `dead` (gave up after retries, or unbuildable) or `rejected` (the platform answered `error:`) |
| `ids` | only these outbox ids (from the listing) |
| `entity`, `org_code` | only this report type / hospital |
| `error_contains` | only entries whose last error contains this text |
| `dry_run` | list only (default) |

An entry whose report has a newer version queued is not requeued: it is marked `superseded`.
The same from a shell: `python -m hurren.push dead`, `python -m hurren.push requeue --ids …`.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, task

from hurren.dagfactory import DEFAULT_ARGS, START
from hurren.push.tasks import requeue_task

with DAG(
    dag_id="push_requeue",
    description="list the push's dead letters; requeue them after a fix",
    doc_md=__doc__,
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["hurren", "push", "platform"],
    params={
        "status": Param("dead", enum=["dead", "rejected"], description="which entries"),
        "ids": Param([], type="array", description="only these outbox ids; empty: all matching"),
        "entity": Param(None, type=["null", "string"], enum=[None, "labmaster", "exammaster"]),
        "org_code": Param(None, type=["null", "string"], description="only this hospital"),
        "error_contains": Param(
            None, type=["null", "string"], description="only when the last error contains this"
        ),
        "dry_run": Param(True, type="boolean", description="list only; switch off to requeue"),
    },
) as dag:
    task(requeue_task, task_id="requeue")()
