"""The store from an event loop: one thread owns the SQLite connection, and writes are batched.

:class:`AsyncStore` runs every :class:`~exporter.store.Store` call in its own
thread (SQLite connections are thread-confined) and takes records from
``serve`` with :meth:`AsyncStore.put`, writing them in batches of
``STORE_BATCH`` or every ``STORE_FLUSH_S``, whichever comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from exporter import events
from exporter.store import STORE_BATCH, STORE_FLUSH_S, Latest, Store, VerdictChange
from probes.defaults import DEFAULT_RETENTION_S
from probes.records import Result

_T = TypeVar("_T")


class AsyncStore:
    """Runs a Store in one dedicated worker thread so store writes never block the event loop.

    The Store is created in that thread on first use (SQLite connections are
    thread-confined); an error opening it (a :class:`StoreError`) surfaces
    from the first awaited call.

    It batches what is :meth:`put` to it: once :meth:`start_writing` was called,
    the queued records are written in one transaction every ``flush_s`` seconds,
    or as soon as ``batch`` are waiting; before that (and after
    :meth:`stop_writing`) each put is written at once. A failed batch is counted
    (:attr:`write_failures`), told once per run of failures, and dropped:
    measuring goes on, the records are still in the probe log.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        flush_s: float = STORE_FLUSH_S,
        batch: int = STORE_BATCH,
    ) -> None:
        self._directory = Path(directory)
        self._retention_s = retention_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lifeline-store")
        self._store: Store | None = None
        self._flush_s = flush_s
        self._batch_size = batch
        self._queue: list[dict[str, Any]] = []  # records waiting for the next transaction
        self._flush_now = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failing = False  # warn once per run of failed writes, not per batch
        #: Batches whose transaction failed (``lifeline_store_write_failures_total``).
        self.write_failures = 0

    def _get(self) -> Store:
        """The worker thread's Store (runs in that thread only)."""
        if self._store is None:
            self._store = Store(self._directory, retention_s=self._retention_s)
        return self._store

    async def _call(self, fn: Callable[[Store], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._get()))

    async def open(self) -> None:
        """Open (and migrate) the store now, so that a bad or locked store fails at startup."""
        await self._call(lambda s: s.check_writable())

    async def add(self, results: Sequence[Result]) -> list[VerdictChange]:
        batch = list(results)
        return await self._call(lambda s: s.add(batch))

    async def add_records(self, records: Sequence[dict[str, Any]]) -> list[VerdictChange]:
        """Store ``Result.to_dict()`` records made once by the caller (one transaction)."""
        batch = list(records)
        return await self._call(lambda s: s.add_records(batch))

    # --- batched writes ----------------------------------------------------

    async def put(self, records: Iterable[dict[str, Any]]) -> None:
        """Queue ``Result.to_dict()`` records for the next batch (written now when not batching)."""
        self._queue.extend(records)
        if self._writer is None:
            await self.flush()
        elif len(self._queue) >= self._batch_size:
            self._flush_now.set()

    def start_writing(self) -> None:
        """Write what is put in batches from now on (by a task of the running loop)."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="lifeline-store-writer")

    async def stop_writing(self) -> None:
        """Stop batching and write what is queued; later puts are written at once."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self.flush()

    async def _write_loop(self) -> None:
        """Write the queued records every ``flush_s``, or sooner when a batch is full."""
        while True:
            await wait_at_most(self._flush_now, self._flush_s)
            self._flush_now.clear()
            await self.flush()

    async def flush(self) -> None:
        """One transaction for everything queued; a failure is counted once per batch."""
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            await self.add_records(batch)
        except Exception as exc:  # counted and shown once per run; measuring goes on
            self.write_failures += 1
            if not self._failing:
                self._failing = True
                events.store_fault(str(exc))
            return
        if self._failing:
            self._failing = False
            events.store_recovered(self.write_failures)

    async def current(self) -> list[dict[str, Any]]:
        return await self._call(lambda s: s.current())

    async def latest(self) -> list[Latest]:
        return await self._call(lambda s: s.latest())

    async def measurements(self, **filters: Any) -> list[dict[str, Any]]:
        return await self._call(lambda s: list(s.measurements(**filters)))

    async def measurement_lines(self, **filters: Any) -> list[str]:
        return await self._call(lambda s: list(s.measurement_lines(**filters)))

    async def results(self, **filters: Any) -> list[Result]:
        return await self._call(lambda s: list(s.results(**filters)))

    async def changes(self, **filters: Any) -> list[VerdictChange]:
        return await self._call(lambda s: s.changes(**filters))

    async def prune(self, now: float | None = None) -> int:
        return await self._call(lambda s: s.prune(now))

    async def aclose(self) -> None:
        """Write what is queued, close the store in its thread, then stop the thread."""
        await self.stop_writing()
        loop = asyncio.get_running_loop()

        def close() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        await loop.run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


async def wait_at_most(event: asyncio.Event, seconds: float) -> bool:
    """Wait at most ``seconds`` for ``event``; whether it is set.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that
    arrives just as the awaited event is set, and a loop around it (the
    scheduler's, the store writer's) then never ends, nor does ``serve``'s stop.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()
