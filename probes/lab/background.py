"""Run an async lab service on its own event loop in a background thread.

Tests (each with their own loop) and subprocesses (`lifeline check -c …`)
can then share one running lab. Stopping cancels every task and closes every
socket of the service (its own ``stop``) before the thread is joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

__all__ = ["BackgroundService", "Service"]

_T = TypeVar("_T")


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


_S = TypeVar("_S", bound=Service)


class BackgroundService(Generic[_S]):
    """``service`` started on a private loop in a daemon thread; a context manager."""

    def __init__(self, service: _S, *, name: str) -> None:
        self.service = service
        self._name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self._name} did not start")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"{self._name} failed to start") from self._error

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the service (every task cancelled, every socket closed) and join the thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self._name} did not stop")
        self._thread = None

    def call(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run ``function(*args)`` on the service's loop and return its result."""
        if self._loop is None:
            raise RuntimeError(f"{self._name} is not running")

        async def invoke() -> _T:
            return function(*args)

        future: Future[_T] = asyncio.run_coroutine_threadsafe(invoke(), self._loop)
        return future.result(timeout=30)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await self.service.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.service.stop()
