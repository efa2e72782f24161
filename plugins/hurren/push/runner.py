"""One push run: claim due versions, send them with bounded concurrency, record every answer.

    result = Pusher(engine=..., client=..., objects=minio, bucket=..., options=PushOptions()).run()

The main thread claims jobs (``concurrency`` at a time, so at most twice that many jobs are
``sending``), hands them to a pool of ``concurrency`` workers and feeds the circuit breaker with
their calls' outcomes. A job is one report version (under D20's ``void_then_register``, the void
of the version the platform holds, then the new version: the register only once the void is
acknowledged), or up to ``batch_size`` rows of one record entity (daily counts, accept or quote
records) of one hospital, sent in one call. A worker does a
job end to end: read the store rows (and sub-items), fetch and check the PDF, build the XML, seal
it (SM4 + Base64, strKey from the key ring), call the platform, classify the answer
(``hurren.push.policy``) and record every entry's outcome with its ``push_log`` rows in one
transaction. A batch the platform refuses (``error:``) is split in halves and the halves sent
again, until the refused rows are isolated: they are rejected, the rest acknowledged. Apart from
that nothing is retried inside a run's worker: a failed version goes back to the queue with a due
time, and the run picks it up again when it falls due (within ``max_wait_s``) or the
next run does. A run ends when nothing is due, when ``max_run_s`` is up, or on an error it cannot
attribute to one version (store down, bad configuration): in-flight calls finish and are recorded,
claimed but unsent entries go back to the queue.

``after_answer`` (tests only: ``tests/faults/kill_push.py``) is called right after each answer
arrives and before it is recorded: a test that SIGKILLs the process there makes the crash the
outbox must survive.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from hurren import spec
from hurren.platform import ConfigurationError, PayloadError, PlatformClient, PlatformError
from hurren.platform import xml as payloads
from hurren.platform.answers import read_submit
from hurren.push import outbox, payload
from hurren.push.connection import TimedSession
from hurren.push.exceptions import PushConfigError
from hurren.push.options import RECORD_ENTITIES, REPORT_ENTITIES, PushOptions
from hurren.push.policy import CircuitBreaker, Outcome, backoff_s, classify
from hurren.reports import masking

__all__ = ["Pusher", "RunResult", "Tally", "Timings"]

log = logging.getLogger("hurren.push")


@dataclass(slots=True)
class Tally:
    """What one run did to the versions of one report type of one hospital."""

    sent: int = 0  # calls made
    acked: int = 0
    rejected: int = 0
    retried: int = 0  # back in the queue after a failure
    dead: int = 0
    superseded: int = 0
    skipped: int = 0
    lost: int = 0  # taken back from a run that died between call and record

    def add(self, other: Tally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(slots=True)
class Timings:
    """Seconds spent per phase, summed over workers (shares, not wall time)."""

    store: float = 0.0  # reading the master and sub-items
    pdf: float = 0.0  # S3 get + SHA-256 check
    xml: float = 0.0  # lxml build
    sm4: float = 0.0  # seal: SM4 + Base64 (and an SM2 wrap when the key rotates)
    soap: float = 0.0  # zeep: envelope out, answer in
    wait: float = 0.0  # HTTP: sending, the platform's work, receiving
    record: float = 0.0  # writing the outcome and push_log

    def add(self, other: Timings) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def shares(self) -> dict[str, float]:
        total = sum(getattr(self, f.name) for f in fields(self)) or 1.0
        return {f.name: getattr(self, f.name) / total for f in fields(self)}


@dataclass(slots=True)
class RunResult:
    run_id: str
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (entity, org_code)
    quoted: list[dict[str, Any]] = field(default_factory=list)  # voids answered ok:<who quoted it>
    rejected: list[dict[str, Any]] = field(default_factory=list)  # answered error: in this run
    dead_letters: list[dict[str, Any]] = field(default_factory=list)  # dead in this run
    outbox: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # after the run
    breaker: str = "closed"
    breaker_opened: int = 0
    timings: Timings = field(default_factory=Timings)
    elapsed_s: float = 0.0

    @property
    def platform_down(self) -> bool:
        """The run ended while the platform was not answering."""
        return self.breaker != "closed"

    def total(self) -> Tally:
        t = Tally()
        for v in self.tallies.values():
            t.add(v)
        return t

    def by(self, part: int) -> dict[str, dict[str, int]]:
        out: dict[str, Tally] = {}
        for key, t in self.tallies.items():
            out.setdefault(key[part], Tally()).add(t)
        return {k: asdict(v) for k, v in sorted(out.items())}

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (XCom): counts, report numbers and errors; no patient data, no keys."""
        return {
            "run_id": self.run_id,
            "elapsed_s": round(self.elapsed_s, 2),
            "total": asdict(self.total()),
            "by_entity": self.by(0),
            "by_org": self.by(1),
            "outbox": self.outbox,
            "quoted_voids": self.quoted,
            "rejected": self.rejected[:100],
            "dead_letters": self.dead_letters,
            "breaker": {"state": self.breaker, "opened": self.breaker_opened},
            "time_shares": {k: round(v, 4) for k, v in self.timings.shares().items()},
        }


# a worker's entries: up to report_batch reports, or one call's rows of a record entity
Job = list[outbox.Entry]


@dataclass(slots=True)
class _Done:
    """One entry's outcome as recorded."""

    entry: outbox.Entry
    outcome: Outcome
    status: str
    recorded: bool
    last_error: str | None  # as stored and shown: the platform's words with identifiers masked
    shown: str | None  # the outcome's text, masked (the platform's ok:/error: text for logs, XCom)


@dataclass(slots=True)
class _JobDone:
    dones: list[_Done]
    calls: list[Outcome]  # one per call made (what the circuit breaker hears)
    timings: Timings


@dataclass(slots=True)
class _Result:
    """One entry's outcome before it is recorded, with the calls it was part of."""

    entry: outbox.Entry
    outcome: Outcome
    calls: list[outbox.Call] = field(default_factory=list)
    people: list[Mapping[str, Any]] = field(default_factory=list)  # the rows sent: whose identifiers to mask


@dataclass(slots=True)
class _Rows:
    """What the store holds for a job's reports, read in a few statements for all of them."""

    masters: dict[tuple[str, str], dict[str, Any]]  # (entity, record key) -> master row
    items: dict[str, dict[tuple[Any, ...], list[dict[str, Any]]]]  # entity -> master's link -> sub-items
    held: set[tuple[str, str]]  # (entity, record key) of the voids whose key the platform holds

    @classmethod
    def read(cls, conn: Connection, job: Job) -> _Rows:
        masters: dict[tuple[str, str], dict[str, Any]] = {}
        items: dict[str, dict[tuple[Any, ...], list[dict[str, Any]]]] = {}
        held: set[tuple[str, str]] = set()
        for entity in dict.fromkeys(e.entity for e in job):
            mine = [e for e in job if e.entity == entity]
            found = payload.read_rows(conn, entity, list(dict.fromkeys(e.record_key for e in mine)))
            masters.update(((entity, k), row) for k, row in found.items())
            registers = [found[e.record_key] for e in mine if e.action == "register" and e.record_key in found]  # fmt: skip
            items[entity] = payload.read_items(conn, entity, registers) if registers else {}
            voids = [e.record_key for e in mine if e.action == "void" and e.record_key in found]
            held |= {(entity, k) for k in (outbox.held(conn, entity, voids) if voids else ())}
        return cls(masters, items, held)


class Pusher:
    """One run against one platform client. Build a new one per run."""

    def __init__(
        self,
        *,
        engine: Engine,
        client: PlatformClient,
        objects: payload.ObjectReader,
        bucket: str,
        spec_options: spec.SpecOptions,
        options: PushOptions | None = None,
        text_encoding: str = "utf-8",
        session: TimedSession | None = None,
        run_id: str = "manual",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        after_answer: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.objects = objects
        self.bucket = bucket
        self.options = options or PushOptions()
        self.spec_options = spec_options
        self.encoding = text_encoding
        self.session = session
        self.run_id = run_id
        self.claimed_by = f"{run_id}@{socket.gethostname()}:{os.getpid()}"[:128]
        self._clock = clock
        self._sleep = sleep
        self.breaker = CircuitBreaker(
            threshold=self.options.breaker_threshold,
            cooldown_s=self.options.breaker_cooldown_s,
            max_cooldown_s=self.options.breaker_max_cooldown_s,
            clock=clock,
        )
        self._after_answer = after_answer
        self._due_but_blocked = 0

    # ------------------------------------------------------------------------------------------
    # the run

    def run(self) -> RunResult:
        o = self.options
        started = self._clock()
        deadline = started + o.max_run_s
        result = RunResult(run_id=self.run_id)
        with self.engine.begin() as conn:
            for e in outbox.recover_stale(conn, lease_s=o.lease_s, max_attempts=o.max_attempts):
                self._tally(result, e).lost += 1
                log.warning("%s: its run died before recording the answer; queued again", e.describe())
        pending: deque[Job] = deque()
        inflight: dict[Future[_JobDone], Job] = {}
        exhausted = False
        with ThreadPoolExecutor(max_workers=o.concurrency, thread_name_prefix="push") as pool:
            try:
                while True:
                    # dispatch what the breaker and the deadline allow
                    while len(inflight) < o.concurrency and self._clock() < deadline:
                        if not pending:
                            if exhausted:
                                break
                            pending.extend(self._claim(o.concurrency))
                            if not pending:
                                exhausted = True
                                break
                        if not self.breaker.allow():
                            break
                        job = pending.popleft()
                        inflight[pool.submit(self._deliver, job)] = job
                    if inflight:
                        done, _ = wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
                        for future in done:
                            inflight.pop(future)
                            self._absorb(result, future.result())
                        if done:
                            exhausted = False
                        if self.breaker.state == "open" and pending:
                            self._release(pending)
                        continue
                    if self._clock() >= deadline:
                        break
                    if self.breaker.state == "open":
                        self._release(pending)
                        pause = min(self.breaker.wait_s(), deadline - self._clock())
                        log.warning("platform not answering: waiting %.1f s before one probe call", pause)
                        self._sleep(max(pause, 0.01))
                        continue
                    if exhausted and not self._wait_for_due(deadline):
                        break
                    exhausted = False
            finally:
                # in-flight calls finish (the pool waits for them); unsent claims go back
                for future in list(inflight):
                    try:
                        self._absorb(result, future.result())
                    except BaseException:  # noqa: BLE001,S110 - the first error is the one re-raised
                        pass
                self._release(pending)
        result.elapsed_s = self._clock() - started
        result.breaker, result.breaker_opened = self.breaker.state, self.breaker.opened
        with self.engine.connect() as conn:
            result.outbox = outbox.counts(conn, entities=o.entities)
        self._log_summary(result)
        return result

    def _claim(self, limit: int) -> list[Job]:
        """Up to ``limit`` jobs, claimed in one statement (plus one per record entity and hospital,
        to fill its batch): the reports dealt out to the jobs, up to ``report_batch`` each (under
        D20 a register right after the void of the version the platform holds), and the rows of
        each record entity and hospital in jobs of up to ``batch_size``."""
        o = self.options
        with self.engine.begin() as conn:
            heads = outbox.claim(conn, limit=limit * o.report_batch, claimed_by=self.claimed_by,
                                 entities=o.entities, org_codes=o.org_codes)  # fmt: skip
            reports = [e for e in heads if e.entity in REPORT_ENTITIES]
            records: dict[tuple[str, str], list[outbox.Entry]] = {}
            for e in heads:
                if e.entity in RECORD_ENTITIES:
                    records.setdefault((e.entity, e.org_code), []).append(e)
            for (entity, org), rows in records.items():
                if len(rows) % o.batch_size:
                    rows += outbox.claim(conn, limit=o.batch_size - len(rows) % o.batch_size,
                                         claimed_by=self.claimed_by, entities=[entity], org_codes=[org])  # fmt: skip
            voids: dict[int, outbox.Entry] = {}
            if self.spec_options.update_mode == "void_then_register":  # D20: the held version goes first
                voids = outbox.precede_with_voids(conn, reports, claimed_by=self.claimed_by)
        units = [[voids[e.id], e] if e.id in voids else [e] for e in reports]
        deal = min(limit, len(units))
        jobs: list[Job] = [[e for unit in units[i::deal] for e in unit] for i in range(deal)]
        for rows in records.values():
            jobs += [rows[i : i + o.batch_size] for i in range(0, len(rows), o.batch_size)]
        if jobs:
            self._due_but_blocked = 0
        return jobs

    def _release(self, pending: deque[Job]) -> None:
        if pending:
            with self.engine.begin() as conn:
                outbox.release(conn, [e.id for job in pending for e in job], claimed_by=self.claimed_by)
            pending.clear()

    def _wait_for_due(self, deadline: float) -> bool:
        """Sleep until the next retry falls due if that is soon enough; False: end the run."""
        o = self.options
        with self.engine.connect() as conn:
            due = outbox.next_due(conn, entities=o.entities, org_codes=o.org_codes)
        if due is None:
            return False
        pause = (due - outbox.utcnow()).total_seconds()
        if pause <= 0:  # due, yet the last claim found nothing: claim once more (it may just have
            # fallen due), then end: its key is in flight in another run (or a dead run's lease)
            self._due_but_blocked += 1
            return self._due_but_blocked <= 1
        if pause > o.max_wait_s or self._clock() + pause >= deadline:
            return False
        self._sleep(max(pause, 0.01))
        return True

    def _tally(self, result: RunResult, e: outbox.Entry) -> Tally:
        return result.tallies.setdefault((e.entity, e.org_code), Tally())

    def _absorb(self, result: RunResult, job: _JobDone) -> None:
        result.timings.add(job.timings)
        for call in job.calls:
            self.breaker.record(call)
        for done in job.dones:
            self._count(result, done)

    def _count(self, result: RunResult, done: _Done) -> None:
        e, outcome = done.entry, done.outcome
        if not done.recorded:
            log.warning(
                "%s: another run took it over (lease expired); its answer was not recorded", e.describe()
            )
            return
        t = self._tally(result, e)
        t.sent += int(outcome.called)
        match done.status:
            case "acked":
                t.acked += 1
                if outcome.text:
                    result.quoted.append({"outbox_id": e.id, "entity": e.entity, "org_code": e.org_code,
                                          "report_form_no": e.report_form_no, "answer": done.shown})  # fmt: skip
                    log.info("%s acked; the platform says it was quoted by: %s", e.describe(), done.shown)
            case "rejected":
                t.rejected += 1
                result.rejected.append({"outbox_id": e.id, "entity": e.entity, "org_code": e.org_code,
                                        "report_form_no": e.report_form_no, "answer": (done.shown or "")[:300]})  # fmt: skip
                log.warning("%s rejected: %s", e.describe(), (done.shown or "")[:300])
            case "queued":
                t.retried += 1
            case "dead":
                t.dead += 1
                result.dead_letters.append({"outbox_id": e.id, "entity": e.entity, "org_code": e.org_code,
                                            "report_form_no": e.report_form_no, "action": e.action,
                                            "last_error": (done.last_error or "")[:500]})  # fmt: skip
                log.warning("%s dead-lettered: %s", e.describe(), (done.last_error or "")[:300])
            case "superseded":
                t.superseded += 1
            case "skipped":
                t.skipped += 1

    # ------------------------------------------------------------------------------------------
    # one entry (worker thread)

    def _deliver(self, job: Job) -> _JobDone:
        t = Timings()
        calls: list[Outcome] = []
        try:
            if job[0].entity in RECORD_ENTITIES:
                results = self._send_records(job, t, calls)
            else:
                results = self._send_reports(job, t, calls)
        except (ConfigurationError, PushConfigError) as exc:
            with self.engine.begin() as conn:
                outbox.release(conn, [e.id for e in job], claimed_by=self.claimed_by)
            raise PushConfigError(f"the platform client is misconfigured: {exc}") from None
        started = time.perf_counter()
        recordings = []
        for r in results:
            status, values = self._decide(r.entry, r.outcome)
            # the platform's words as the platform wrote them stay in push_log (r.calls); what is
            # shown (last_error, answer_text, logs, XCom) has the patient's identifiers masked
            for name in ("last_error", "answer_text"):
                if values.get(name):
                    values[name] = masking.mask_text(values[name], r.people)
            recordings.append(outbox.Recording(r.entry, status, calls=r.calls, **values))
        unsent = [e.id for e in job if e.id not in {r.entry.id for r in results}]
        with self.engine.begin() as conn:  # the whole job's answers in one transaction
            recorded = outbox.record(conn, recordings, claimed_by=self.claimed_by)
            outbox.release(conn, unsent, claimed_by=self.claimed_by)
        dones = [_Done(r.entry, r.outcome, rec.status, r.entry.id in recorded, rec.last_error,
                       masking.mask_text(r.outcome.text, r.people))
                 for r, rec in zip(results, recordings, strict=True)]  # fmt: skip
        t.record += time.perf_counter() - started
        return _JobDone(dones, calls, t)

    def _send_reports(self, job: Job, t: Timings, calls: list[Outcome]) -> list[_Result]:
        """The job's report versions, one call each, their store rows read for all at once. Under
        D20 a register right after the void of the version the platform holds (same key) waits in
        the queue unless that void was acknowledged or had nothing to void. After a transport
        failure the rest goes back to the queue unsent: the circuit breaker decides what comes next."""
        started = time.perf_counter()
        with self.engine.connect() as conn:
            rows = _Rows.read(conn, job)
        t.store += time.perf_counter() - started
        results: list[_Result] = []
        for entry in job:
            void = results[-1] if results and results[-1].entry.record_key == entry.record_key else None
            if void is None and any(r.outcome.transport_failure for r in results):
                break
            if void is None or void.outcome.kind in ("ok", "skipped"):
                results.append(self._send_report(entry, rows, t, calls))
            else:
                why = (f"waits for the void of the version the platform holds (outbox {void.entry.id}): "
                       f"{void.outcome.text}")  # fmt: skip
                results.append(_Result(entry, Outcome("waiting", why, called=False)))
        return results

    def _send_report(self, entry: outbox.Entry, rows: _Rows, t: Timings, calls: list[Outcome]) -> _Result:
        people: list[Mapping[str, Any]] = []
        checked = self._check(entry, rows, t, people)
        if isinstance(checked, Outcome):
            return _Result(entry, checked, people=people)
        outcome, call = self._call(entry.method, checked, t)
        calls.append(outcome)
        return _Result(entry, outcome, [call], people)

    def _call(self, method: str, body: bytes, t: Timings) -> tuple[Outcome, outbox.Call]:
        """Seal and send one payload; what its answer means, and the call for ``push_log``."""
        started = time.perf_counter()
        sealed = self.client.seal(body)
        t.sm4 += time.perf_counter() - started
        sent_at = outbox.utcnow()
        started = time.perf_counter()
        result: Any
        try:
            answer = self.client.invoke_sealed(method, sealed)
            result = read_submit(answer, method=method)
        except ConfigurationError:
            raise
        except PlatformError as exc:
            result = exc
        elapsed = time.perf_counter() - started
        waited = self.session.take_waited() if self.session is not None else 0.0
        t.wait += waited
        t.soap += max(0.0, elapsed - waited)
        self._answered()
        outcome = classify(result, transient=self.options.is_transient)
        call = outbox.Call(sent_at=sent_at, answered_at=outbox.utcnow(), outcome=outcome.log_outcome,
                           answer=(outcome.text or "")[:4000] or None)  # fmt: skip
        return outcome, call

    def _send_records(self, job: Job, t: Timings, calls: list[Outcome]) -> list[_Result]:
        """One call for the job's rows that are still current; refused calls split (see module doc)."""
        started = time.perf_counter()
        with self.engine.connect() as conn:
            rows = payload.read_rows(conn, job[0].entity, [e.record_key for e in job])
        t.store += time.perf_counter() - started
        results: dict[int, _Result] = {}
        ready = []
        for e in job:
            row = rows.get(e.record_key)
            if row is None:
                results[e.id] = _Result(e, Outcome("broken", "the store has no row for this key any more; nothing to "
                                                   "send", called=False))  # fmt: skip
            elif row.get("etl_content_hash") != e.content_hash:
                results[e.id] = _Result(e, Outcome("superseded", "the store holds a newer version of this row",
                                                   called=False))  # fmt: skip
            else:
                ready.append((e, row))
        if ready:
            self._send_batch(ready, results, calls, t, [])
        people = [row for _, row in ready]  # a batch's refusal may quote any of its rows
        for r in results.values():
            r.people = people
        return [results[e.id] for e in job]

    def _send_batch(self, batch: list[tuple[outbox.Entry, dict[str, Any]]], results: dict[int, _Result],
                    calls: list[Outcome], t: Timings, earlier: list[outbox.Call]) -> None:  # fmt: skip
        entity = batch[0][0].entity
        started = time.perf_counter()
        try:
            rows = [row for _, row in batch]
            if entity == "lab_exam_report":
                body = payloads.build_daily_counts(rows, options=self.spec_options, encoding=self.encoding)
            else:
                body = payloads.build_records(entity, rows, options=self.spec_options, encoding=self.encoding)
        except PayloadError as exc:
            t.xml += time.perf_counter() - started
            if len(batch) > 1:
                self._split(batch, results, calls, t, earlier)
            else:
                results[batch[0][0].id] = _Result(batch[0][0], classify(exc), earlier)
            return
        t.xml += time.perf_counter() - started
        outcome, call = self._call(batch[0][0].method, body, t)
        calls.append(outcome)
        if outcome.kind == "rejected" and len(batch) > 1:
            self._split(batch, results, calls, t, [*earlier, call])
            return
        for e, _ in batch:
            results[e.id] = _Result(e, outcome, [*earlier, call])

    def _split(self, batch: list[tuple[outbox.Entry, dict[str, Any]]], results: dict[int, _Result],
               calls: list[Outcome], t: Timings, earlier: list[outbox.Call]) -> None:  # fmt: skip
        half = len(batch) // 2
        self._send_batch(batch[:half], results, calls, t, earlier)
        self._send_batch(batch[half:], results, calls, t, earlier)

    def _check(
        self, entry: outbox.Entry, rows: _Rows, t: Timings, people: list[Mapping[str, Any]]
    ) -> Outcome | bytes:
        """The payload to send, or the outcome that makes sending pointless or impossible; the
        master row goes into ``people`` (its patient's identifiers are masked in what is shown)."""
        kind = REPORT_ENTITIES[entry.entity][0]
        master = rows.masters.get((entry.entity, entry.record_key))
        if master is None:
            return Outcome("broken", "the store has no row for this key any more; nothing to send",
                           called=False)  # fmt: skip
        people.append(master)
        stale = master.get("etl_content_hash") != entry.content_hash
        if entry.action == "register" or entry.cause in ("load", "update"):
            if stale:
                return Outcome("superseded", "the store holds a newer version of this report", called=False)
        if entry.action == "void":
            if entry.cause == "key_change" and self.options.key_change == "off":
                return Outcome("skipped", "key-change voids are off (push option key_change)", called=False)
            if (entry.entity, entry.record_key) not in rows.held:
                return Outcome("skipped", "the platform does not hold this key (never acknowledged as "
                               "registered): nothing to void", called=False)  # fmt: skip
            items: list[dict[str, Any]] = []
        else:
            link = tuple(master[k] for k in payload.item_link(entry.entity))
            items = rows.items[entry.entity].get(link, [])
        pdf = None
        if entry.action == "register" and "pdf_object_key" in master:
            started = time.perf_counter()
            try:
                pdf = payload.fetch_pdf(self.objects, self.bucket, master)
            except (payload.MissingPdf, payload.PdfMismatch) as exc:
                return Outcome("broken", str(exc), called=False)
            except Exception as exc:  # S3 unreachable or refusing: try again later
                return Outcome(
                    "retry", f"S3: {type(exc).__name__}: {str(exc)[:200]}; retried later", called=False
                )
            finally:
                t.pdf += time.perf_counter() - started
        fields_ = payload.report_fields(entry.entity, master, pdf)
        started = time.perf_counter()
        try:
            if entry.action == "register":
                body = payloads.build_report(
                    kind, fields_, items, options=self.spec_options, encoding=self.encoding
                )
            else:
                body = payloads.build_void_filter(
                    kind, fields_, options=self.spec_options, encoding=self.encoding
                )
        except PayloadError as exc:
            return classify(exc)
        finally:
            t.xml += time.perf_counter() - started
        return body

    def _answered(self) -> None:
        """The test hook between an answer and its record (a crash test dies here)."""
        if self._after_answer is not None:
            self._after_answer()

    def _decide(self, entry: outbox.Entry, outcome: Outcome) -> tuple[str, dict[str, Any]]:
        """The entry's new status and fields for an outcome."""
        o = self.options
        attempts = entry.attempts + (1 if outcome.called or outcome.kind == "retry" else 0)
        base = {"attempts": attempts}
        match outcome.kind:
            case "ok":
                return "acked", base | {"answer_text": outcome.text}
            case "rejected":
                return "rejected", base | {"last_error": outcome.text}
            case "retry" | "unreachable":
                if outcome.kind == "retry" and attempts >= o.max_attempts:
                    return "dead", base | {"last_error": f"{outcome.text} (gave up after {attempts} attempts: "
                                           "fix the cause, then requeue it)"}  # fmt: skip
                delay = backoff_s(
                    attempts or 1, base_s=o.backoff_base_s, max_s=o.backoff_max_s, salt=entry.id
                )
                return "queued", base | {"last_error": outcome.text,
                                         "next_attempt_at": outbox.utcnow() + timedelta(seconds=delay)}  # fmt: skip
            case "broken":
                return "dead", base | {"last_error": f"{outcome.text} (fix it, then requeue)"}
            case "waiting":  # not sent: back in the queue, held there by its void (outbox.claim)
                return "queued", {"attempts": entry.attempts, "last_error": outcome.text}
            case _:  # superseded | skipped
                return outcome.kind, base | {"last_error": outcome.text}

    # ------------------------------------------------------------------------------------------

    def _log_summary(self, result: RunResult) -> None:
        total = result.total()
        log.info(
            "push run %s: %s call(s) in %.1f s: %s acked, %s rejected, %s to retry, %s dead, %s superseded, "
            "%s skipped, %s lost; breaker %s (opened %s time(s))",
            result.run_id, total.sent, result.elapsed_s, total.acked, total.rejected, total.retried, total.dead,
            total.superseded, total.skipped, total.lost, result.breaker, result.breaker_opened,
        )  # fmt: skip
        head = f"{'entity':<18} {'org_code':<14} {'sent':>5} {'acked':>5} {'rejected':>8} {'retried':>7} {'dead':>4}"
        head += f" | outbox: {'queued':>6} {'acked':>6} {'rejected':>8} {'dead':>5}"
        lines = [head]
        for (entity, org), t in sorted(result.tallies.items()):
            box = result.outbox.get(entity, {}).get(org, {})
            lines.append(
                f"{entity:<18} {org:<14} {t.sent:>5} {t.acked:>5} {t.rejected:>8} {t.retried:>7} {t.dead:>4}"
                f" | outbox: {box.get('queued', 0):>6} {box.get('acked', 0):>6} {box.get('rejected', 0):>8}"
                f" {box.get('dead', 0):>5}"
            )
        log.info("push run %s by report type and hospital:\n%s", result.run_id, "\n".join(lines))
