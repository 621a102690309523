"""`serve` on every core: worker processes that measure and answer ``/probe`` themselves.

``serve --workers N`` starts N of them (``python -m exporter.coreworker FD INDEX``,
children of `serve`, through :class:`probes.workers.MeasuringPool`); this module is
`serve`'s side of them (:class:`WorkerSet`), ``exporter.coreworker`` theirs. Each one

- measures what the parent's schedule sends it, as ``probes.workers`` does
  (the schedule, judging, confirmation, the board, the store and the probe
  log stay in the parent: one schedule, so no measurement is made twice);
- listens on serve's ``--listen`` address itself (``SO_REUSEPORT``: the
  kernel spreads the connections over the parent and the workers), with the
  same TLS and basic auth, and answers ``/probe`` in its own process: the
  SSRF guard, the measurement and the judging happen here; only the context
  it is judged with (the control's latest scheduled measurement of the
  target, the latest canaries) is asked of the parent;
- forwards every other request (``/metrics``, the page, the API,
  ``/-/ready``, ``/-/reload``, an agent's measure endpoint) unchanged to the
  parent over a private Unix socket, so they are all answered from the one
  board, and checked for auth there.

Each answer carries a ``Lifeline-Process`` header naming the process that
made it (``main``, or ``worker N``). A new config reaches the workers as a
frame from the parent (after SIGHUP or ``/-/reload`` there); a worker ignores
SIGHUP and SIGINT itself and exits when its socket to the parent closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from exporter.webconfig import WebConfig

if TYPE_CHECKING:
    from exporter.scheduler import Monitor

__all__ = ["PROCESS_HEADER", "WORKERS_START_S", "CoreSettings", "WorkerSet", "stamp"]

#: How long `serve --workers N` waits for its workers to listen before it gives up.
WORKERS_START_S = 60.0

#: The response header naming the process that answered.
PROCESS_HEADER = "Lifeline-Process"
@dataclass(frozen=True, slots=True)
class CoreSettings:
    """What a worker needs to listen beside its parent (sent in its first frame)."""

    host: str | None
    port: int
    web: WebConfig
    parent_socket: str  # the parent's Unix socket: every request but /probe goes there
    log_level: str = "info"
    log_format: str = "text"


def stamp(name: str) -> Any:
    """An ``on_response_prepare`` signal that names the answering process (kept when set)."""

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault(PROCESS_HEADER, name)

    return on_prepare


class WorkerSet:
    """`serve`'s side of its workers: the pool, the Unix socket they forward to, the port
    they share, the questions they ask (the /probe context, "I listen")."""

    def __init__(self, size: int, *, log_level: str = "info", log_format: str = "text") -> None:
        import tempfile

        from probes.workers import MeasuringPool

        self.size = size
        self._log = (log_level, log_format)
        _sweep_stale(tempfile.gettempdir())
        # 0700: ours alone; the pid lets a later serve remove it if this one is killed
        self._sockdir = tempfile.mkdtemp(prefix=f"{_SOCKDIR_PREFIX}{os.getpid()}-")
        self.socket = os.path.join(self._sockdir, "main.sock")
        self._settings: CoreSettings | None = None
        self._monitor: Monitor | None = None
        self._listening: set[int] = set()
        self._errors: list[str] = []
        self._all_listening = asyncio.Event()
        #: the workers could not be started (rather than the port being taken)
        self.failed = False
        self.pool = MeasuringPool(size, module="exporter.coreworker", hello=self._hello,
                                  on_ask=self._on_ask)  # fmt: skip

    def attach(self, monitor: Monitor) -> None:
        """The monitor whose config and observations the workers are given."""
        self._monitor = monitor

    def _hello(self, index: int) -> list[object]:
        assert self._monitor is not None and self._settings is not None
        return [("serve", self._settings, self._monitor.config)]

    async def _on_ask(self, question: Any) -> Any:
        assert self._monitor is not None
        if question[0] == "context":
            return self._monitor.probe_context(*question[1:])
        if question[0] == "listening":  # (index, why it cannot listen or None)
            self._listening.add(question[1])
            if question[2] is not None:
                self._errors.append(question[2])
            if len(self._listening) >= self.size or self._errors:
                self._all_listening.set()
            return None
        raise LookupError(f"unknown question {question[0]!r}")

    async def start(self, runner: web.AppRunner, host: str | None, port: int, wc: WebConfig) -> int:
        """Start the workers on (host, port) (``:0``: a free port), then ``serve`` there.

        The workers listen first, so that the first clients' connections (kept alive,
        as Prometheus and load generators keep them) are spread over them too. Returns
        the port; raises ``OSError`` when the workers cannot start or listen.
        """
        await web.UnixSite(runner, self.socket).start()
        with _reserved_port(host, port) as bound:
            self._settings = CoreSettings(host, bound, wc, self.socket, *self._log)
            try:
                await self.pool.start()  # each worker listens on the address as it starts
                async with asyncio.timeout(WORKERS_START_S):
                    await self._all_listening.wait()
            except (OSError, TimeoutError) as exc:
                why = str(exc) or f"not all listened within {WORKERS_START_S:.0f} s"
                self.failed = True
                raise WorkersFailed(f"cannot start {self.size} measuring workers: {why}") from exc
            if self._errors:
                raise OSError(self._errors[0])
            await web.TCPSite(runner, host, bound, ssl_context=wc.ssl_context(),
                              reuse_port=True).start()  # fmt: skip
        return bound

    async def aclose(self) -> None:
        await self.pool.aclose()
        shutil.rmtree(self._sockdir, ignore_errors=True)


class WorkersFailed(OSError):
    """The workers could not be started (as opposed to the port being taken)."""


_SOCKDIR_PREFIX = "lifeline-serve-"


def _sweep_stale(tmp: str) -> None:
    """Remove the socket directories of killed `serve`s (this user's, their pid gone)."""
    uid = os.getuid()
    with contextlib.suppress(OSError):
        for entry in os.scandir(tmp):
            pid = entry.name.removeprefix(_SOCKDIR_PREFIX).partition("-")[0]
            if not entry.name.startswith(_SOCKDIR_PREFIX) or not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid != uid or not entry.is_dir(
                    follow_symlinks=False
                ):
                    continue
                try:
                    os.kill(int(pid), 0)
                    continue  # alive (or another user's process: not ours to judge)
                except ProcessLookupError:
                    shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def _reserved_port(host: str | None, port: int) -> Iterator[int]:
    """``port``, or for ``:0`` a free one, held (bound, not listening, ``SO_REUSEPORT``)
    while the processes that share it start listening on it."""
    if port:
        yield port
        return
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host or "", 0))
        yield sock.getsockname()[1]
