"""Writing one prompt while the engine computes the next: a single writer thread behind a short
queue. The engine (torch) and the write (the driver packing parameters, then waiting on Neo4j)
overlap; at most `depth` computed prompts wait, so memory stays bounded.

Crash safety is unchanged: a prompt is in the store when its write transaction committed, and
the catalog only hears of a write after it returned. A kill loses at most the queued prompts,
which a resume computes again.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_STOP = object()


@dataclass(frozen=True)
class Done(Generic[Item, Result]):
    """A finished write: its item and the writer's return value, or the exception it raised."""

    item: Item
    result: Result | None
    error: BaseException | None


class WriteBehind(Generic[Item, Result]):
    """`put` hands an item to the writer thread (blocking while `depth` items wait); `done`
    returns the writes finished since the last call, in order."""

    def __init__(
        self,
        write: Callable[[Item], Result],
        depth: int = 2,
        fatal: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._write = write
        self._fatal = fatal
        self._stopped_by: BaseException | None = None
        self._todo: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._done: queue.Queue[Done[Item, Result]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="circuitstore-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._todo.get()) is not _STOP:
            if self._stopped_by is not None:  # after a fatal error nothing more is tried
                self._done.put(Done(item, None, self._stopped_by))  # type: ignore[arg-type]
                continue
            try:
                self._done.put(Done(item, self._write(item), None))  # type: ignore[arg-type]
            except BaseException as exc:  # handed to the caller's thread, which decides
                if isinstance(exc, self._fatal):
                    self._stopped_by = exc
                self._done.put(Done(item, None, exc))  # type: ignore[arg-type]

    def abandon(self, why: BaseException) -> None:
        """Skip the queued writes (the one in flight finishes): they are computed again on
        resume. Used when the store is gone, so that waits do not add up one per queued item."""
        self._stopped_by = why
        self.close()

    def put(self, item: Item) -> None:
        """Queue an item for writing."""
        self._todo.put(item)

    def done(self) -> list[Done[Item, Result]]:
        """The items written since the last call, with their results or errors."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> list[Done[Item, Result]]:
        """Wait for every queued write; the last ones finished."""
        self._todo.put(_STOP)
        self._thread.join()
        return self.done()


@contextmanager
def write_behind(
    write: Callable[[Item], Result],
    depth: int = 2,
    fatal: tuple[type[BaseException], ...] = (),
) -> Iterator[WriteBehind[Item, Result]]:
    """A :class:`WriteBehind` that is closed on the way out. After an error of a `fatal` type,
    in the caller or in a write, queued writes are skipped; after any other error in the caller
    they are finished first."""
    behind: WriteBehind[Item, Result] = WriteBehind(write, depth, fatal)
    try:
        yield behind
    except fatal as exc:
        behind.abandon(exc)
        raise
    finally:
        if behind._thread.is_alive():
            behind.close()
