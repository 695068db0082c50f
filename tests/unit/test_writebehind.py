"""The writer thread behind the engine: writes finish in order, a caller's ordinary error lets
the queued writes finish, and a fatal error (the store is gone) stops every write after it, so
that an outage costs one retry window, not one per queued prompt."""

from __future__ import annotations

import threading

import pytest

from circuitstore.ingest.writebehind import write_behind


class GoneError(Exception):
    pass


def test_writes_finish_in_order():
    written = []
    with write_behind(written.append, depth=2) as behind:
        for i in range(5):
            behind.put(i)
        done = behind.close()
    assert written == [0, 1, 2, 3, 4]
    assert all(d.error is None for d in done)


def test_after_a_fatal_write_the_queued_ones_are_not_tried():
    tried, gate = [], threading.Event()

    def write(item: int) -> None:
        gate.wait()
        tried.append(item)
        if item == 0:
            raise GoneError

    with write_behind(write, depth=4, fatal=(GoneError,)) as behind:
        for i in range(4):
            behind.put(i)
        gate.set()
        done = behind.close()
    assert tried == [0]
    assert [type(d.error) for d in done] == [GoneError] * 4


def test_a_fatal_error_in_the_caller_skips_the_queued_writes():
    tried, gate = [], threading.Event()

    def write(item: int) -> None:
        gate.wait()
        tried.append(item)

    # The first write is in flight (held at the gate) when the caller fails; it finishes once
    # the gate opens, and the two queued behind it are skipped.
    threading.Timer(0.2, gate.set).start()
    with pytest.raises(GoneError):
        fail_after_queueing(write, GoneError)
    assert tried in ([], [0])


def test_an_ordinary_error_in_the_caller_lets_queued_writes_finish():
    tried, gate = [], threading.Event()

    def write(item: int) -> None:
        gate.wait()
        tried.append(item)

    gate.set()
    with pytest.raises(KeyError):
        fail_after_queueing(write, KeyError)
    assert tried == [0, 1, 2]


def fail_after_queueing(write, error: type[Exception]) -> None:  # type: ignore[no-untyped-def]
    """Queue three writes, then fail in the caller."""
    with write_behind(write, depth=4, fatal=(GoneError,)) as behind:
        for i in range(3):
            behind.put(i)
        raise error
