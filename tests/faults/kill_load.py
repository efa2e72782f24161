"""Child process of the fault matrix: one real ``pipeline.run_stream`` that SIGKILLs itself.

    python -m tests.faults.kill_load '<json>'

The JSON gives the sources text, source id, stream, the hospital database URL, ``until``, the
run id, ``kill_at`` (the batch with masters, 1-based) and ``where``:

- ``before_commit``: inside that batch's transaction, right after ``advance_watermark`` has sent
  the watermark UPDATE (rows, sub-items, outbox entries, quarantine, run counts all written but
  not committed) — the worker dies after the load and before the watermark moves.
- ``after_commit``: right after ``load_reports`` returns for that batch (committed), before the
  validation results are kept and the next chunk is read.

The store and S3 come from the environment (``HURREN_STORE_URL``, ``HURREN_S3_*``) through the
production constructors, as a DAG task gets them. Nothing in production code is changed: the two
functions are wrapped in this process only. Each committed batch is printed as a ``BATCH <json>``
line (its LoadCounts and max cursor), each watermark write as ``WATERMARK <value>``, so the parent
knows exactly what was committed before the kill. The exit status must be -9.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from datetime import datetime
from typing import Any

from hurren.rules import load_rulebook
from hurren.spec import DEFAULT_OPTIONS


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    from sqlalchemy import create_engine

    from hurren import incremental, load, pipeline, sources
    from hurren.clients import minio_client, store_engine
    from hurren.settings import settings

    source = sources.parse_sources(args["sources"]).get(args["source_id"])
    kill_at, where = int(args["kill_at"]), args["where"]
    real_advance, real_load = incremental.advance_watermark, load.load_reports
    seen = {"watermarks": 0, "batches": 0}

    def die() -> None:
        print("KILL", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def advance_watermark(conn: Any, **kwargs: Any) -> Any:
        value = real_advance(conn, **kwargs)  # the UPDATE is sent, in the batch's open transaction
        seen["watermarks"] += 1
        print(f"WATERMARK {kwargs['last_value']}", flush=True)
        if where == "before_commit" and seen["watermarks"] == kill_at:
            die()
        return value

    def load_reports(engine: Any, batch: Any, **kwargs: Any) -> Any:
        counts = real_load(engine, batch, **kwargs)  # committed when it returns
        if batch.max_cursor is not None:
            seen["batches"] += 1
        line = {**dataclasses.asdict(counts), "stream": batch.stream, "run_id": kwargs["run_id"],
                "max_cursor": str(batch.max_cursor) if batch.max_cursor else None}  # fmt: skip
        print("BATCH " + json.dumps(line), flush=True)
        if where == "after_commit" and seen["batches"] == kill_at:
            die()
        return counts

    incremental.advance_watermark = (
        advance_watermark  # settle_batch looks it up in hurren.incremental at call time
    )
    load.load_reports = load_reports  # pipeline calls load.load_reports
    s = settings()
    engine = store_engine(s)
    pipeline.run_stream(
        source=source, stream=args["stream"], source_engine=create_engine(args["source_url"], pool_pre_ping=True),
        store_engine=engine, pdfs=load.Pdfs(client=minio_client(s), bucket=s.s3_bucket_reports),
        run_id=args["run_id"], dag_id=args["dag_id"], until=datetime.fromisoformat(args["until"]),
        validator="pandas", options=DEFAULT_OPTIONS, rulebook=load_rulebook()
    )  # fmt: skip
    print("FINISHED without being killed", flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
