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

    def __init__(self, write: Callable[[Item], Result], depth: int = 2) -> None:
        self._write = write
        self._todo: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._done: queue.Queue[Done[Item, Result]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="circuitstore-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self._todo.get()) is not _STOP:
            try:
                self._done.put(Done(item, self._write(item), None))  # type: ignore[arg-type]
            except BaseException as exc:  # handed to the caller's thread, which decides
                self._done.put(Done(item, None, exc))  # type: ignore[arg-type]

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
    write: Callable[[Item], Result], depth: int = 2
) -> Iterator[WriteBehind[Item, Result]]:
    """A writer thread for `write`, at most `depth` items behind; drained on leaving."""
    behind: WriteBehind[Item, Result] = WriteBehind(write, depth)
    try:
        yield behind
    finally:
        if behind._thread.is_alive():  # an error in the caller: let queued writes finish
            behind.close()
