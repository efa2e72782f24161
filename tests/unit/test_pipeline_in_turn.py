"""The pipeline's store thread (``hurren.pipeline._InTurn``): one batch is stored while the next
is read, batches are stored in their order, and none is stored after one that failed."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from hurren.load import LoadCounts
from hurren.pipeline import RunSummary, _InTurn

WAIT_S = 10


def _summary() -> RunSummary:
    return RunSummary("src", "org", "pacs_instance", "incremental", "a", "b")


def test_a_batch_is_stored_while_the_next_is_read_and_batches_are_stored_in_order() -> None:
    summary, stored = _summary(), []
    next_read = threading.Event()

    def part(i: int) -> Callable[[], LoadCounts]:
        def store() -> LoadCounts:
            if i == 0:  # only returns once the caller reads batch 1: the two overlap
                assert next_read.wait(WAIT_S)
            stored.append((i, threading.current_thread().name))
            return LoadCounts(extracted=1, loaded=1)

        return store

    with _InTurn(summary) as in_turn:
        in_turn.hand(part(0))
        next_read.set()  # "reading batch 1"
        in_turn.hand(part(1))
        in_turn.hand(part(2))
    assert [i for i, _ in stored] == [0, 1, 2]
    assert all(name.startswith("hurren-store") for _, name in stored)
    assert (summary.batches, summary.counts.extracted, summary.counts.loaded) == (3, 3, 3)


def test_no_batch_is_stored_after_one_that_failed() -> None:
    summary, stored = _summary(), []

    def fail() -> LoadCounts:
        raise RuntimeError("the store went away in batch 2")

    def ok() -> LoadCounts:
        stored.append("ok")
        return LoadCounts(extracted=1, loaded=1)

    with pytest.raises(RuntimeError, match="batch 2"), _InTurn(summary) as in_turn:
        in_turn.hand(ok)
        in_turn.hand(fail)
        in_turn.hand(ok)  # raises batch 2's error before handing batch 3 over
    assert stored == ["ok"] and summary.batches == 2 and summary.counts.extracted == 1


def test_the_batch_handed_over_ends_whole_when_the_caller_fails() -> None:
    summary, release = _summary(), threading.Event()

    def slow() -> LoadCounts:
        assert release.wait(WAIT_S)
        return LoadCounts(extracted=5, loaded=5)

    with pytest.raises(ValueError, match="batch 2 did not validate"), _InTurn(summary) as in_turn:
        in_turn.hand(slow)
        release.set()
        raise ValueError("batch 2 did not validate")
    assert summary.counts.loaded == 5  # counted: its transaction committed
