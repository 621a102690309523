"""Measuring in worker processes: one Python process uses one core, a host has more.

``serve --workers N`` starts N child processes (``python -m probes.workers``)
that each run an event loop of their own and measure whatever the parent
sends them, many measurements at once. The parent keeps everything that
needs the whole picture (judging against the control, confirmation, the
board, the store, ``/metrics``); a worker only turns a (target, vantage)
into a :class:`~probes.records.Measurement`, exactly as
:func:`probes.measure.measure` does in-process.

The wire between them is a Unix socket pair made by the parent: each frame is
a 4-byte big-endian length and a pickle. Pickle is safe here because both
ends are this program and the socket is never reachable by anyone else (it
has no name; the child inherits its end).

Failures are told honestly, never as blocking: a worker that dies gives the
measurements it held an ``unknown:`` error (verdict ``error``), and is started
again; a worker that does not answer within the budget plus a grace gives
the same. A worker whose parent goes away sees the socket close and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from probes import loops
from probes.defaults import DEFAULT_BODY_HEAD_BYTES
from probes.failures import unknown
from probes.fingerprints import FingerprintSet
from probes.model import Target, Vantage
from probes.records import Measurement

__all__ = ["WORKER_GRACE_S", "Channel", "Extension", "MeasuringPool", "parse_workers"]

#: Time allowed on top of a measurement's budget before the parent gives up on a worker.
WORKER_GRACE_S = 5.0
#: Largest frame either side accepts (a measurement is a few KiB; its body head is bounded).
_MAX_FRAME = 64 << 20
_HEADER = struct.Struct(">I")
#: Between restarts of a worker that keeps dying.
_RESTART_BACKOFF_S = (0.0, 0.5, 2.0, 5.0)
#: The directory holding the ``probes`` package the parent runs.
_TREE = str(Path(__file__).resolve().parent.parent)


def parse_workers(text: str) -> int:
    """``--workers``: a count, or ``auto`` (one per CPU this process may use, 0 on one CPU)."""
    if text == "auto":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return 0 if not cpus or cpus < 2 else cpus
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--workers {text!r}: expected a number of processes or 'auto'") from None
    if not 0 <= n <= 256:
        raise ValueError(f"--workers {text!r}: expected 0 (measure in-process) to 256")
    return n


@dataclass(frozen=True, slots=True)
class _Ask:
    """One measurement the parent asks a worker for."""

    id: int
    target: Target
    vantage: Vantage
    ca_file: str | None
    timeout: float
    max_body_bytes: int
    service: str
    stop_addresses: frozenset[str]
    #: the fingerprints the worker was sent under this key (a "fingerprints" frame, once
    #: per worker and set: a config's fingerprint files may hold thousands of rows)
    fingerprints_key: int | None = None
    body_head_bytes: int = DEFAULT_BODY_HEAD_BYTES


def _frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    """The next object, or None at a clean end of the stream."""
    try:
        head = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ConnectionError("the stream ended inside a frame header") from None
        return None
    (size,) = _HEADER.unpack(head)
    if size > _MAX_FRAME:
        raise ConnectionError(f"a frame of {size} bytes is over the limit")
    return pickle.loads(await reader.readexactly(size))


def failed_measurement(target: Target, vantage: Vantage, service: str, error: str) -> Measurement:
    """A measurement that did not happen: what the classifier calls ``error``."""
    from probes.measure import blank_measurement

    m = blank_measurement(target, vantage, service)
    m.error = unknown(error)
    return m


class _Worker:
    """One child process and the measurements it holds."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, asyncio.Future[Measurement]] = {}
        self.reader_task: asyncio.Task[None] | None = None
        self.starts = 0
        self.ended: str | None = None  # why it last stopped, for the error of what it held
        self.fingerprints_sent: set[int] = set()  # keys of the sets this process holds

    @property
    def alive(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()


#: What a worker may ask its parent (``("ask", id, question)`` frames): question -> answer.
AskHandler = Callable[[Any], Awaitable[Any]]


class MeasuringPool:
    """N worker processes that measure; :meth:`measure` picks the least busy one.

    ``module`` is what each worker runs (``python -m module FD``): ``probes.workers``
    measures only; ``serve`` runs ``exporter.coreworker``, which also answers ``/probe``.
    ``hello(index)`` gives the frames a worker is sent as soon as it starts (and
    again when it is restarted); ``on_ask`` answers what a worker asks its parent.
    """

    def __init__(
        self,
        size: int,
        *,
        python: str | None = None,
        module: str = "probes.workers",
        hello: Callable[[int], list[object]] | None = None,
        on_ask: AskHandler | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a measuring pool needs at least one worker")
        self.size = size
        self._python = python or sys.executable
        self._module = module
        self._hello = hello
        self._on_ask = on_ask
        self._answers: set[asyncio.Task[None]] = set()
        self._workers = [_Worker(i) for i in range(size)]
        self._ids = itertools.count(1)
        self._closing = False
        self._restarts: set[asyncio.Task[None]] = set()
        #: Workers that ended while holding measurements, or were restarted.
        self.restarts = 0
        #: id of a fingerprint set -> (the set, kept so its id is not reused; its key)
        self._fingerprint_keys: dict[int, tuple[FingerprintSet, int]] = {}
        self._next_key = itertools.count(1)

    async def start(self) -> None:
        await asyncio.gather(*(self._spawn(w) for w in self._workers))

    async def _spawn(self, w: _Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = dict(os.environ)
            # the child imports this very tree, whatever the parent was started as
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_TREE, env.get("PYTHONPATH", "")) if p)
            w.proc = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                self._module,
                str(child.fileno()),
                str(w.index),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        w.writer = writer
        w.fingerprints_sent = set()
        w.starts += 1
        w.ended = None
        for frame in self._hello(w.index) if self._hello is not None else []:
            writer.write(_frame(frame))
        w.reader_task = asyncio.create_task(self._read(w, reader), name=f"worker-{w.index}")

    async def _read(self, w: _Worker, reader: asyncio.StreamReader) -> None:
        why = "ended"
        try:
            while True:
                frame = await _read_frame(reader)
                if frame is None:
                    break
                if frame[0] == "ask":
                    self._answer(w, frame[1], frame[2])
                    continue
                ident, measurement = frame
                fut = w.pending.pop(ident, None)
                if fut is not None and not fut.done():
                    fut.set_result(measurement)
        except (ConnectionError, OSError, pickle.UnpicklingError, ValueError, EOFError) as exc:
            why = f"sent an unreadable answer ({type(exc).__name__}: {exc})"
        finally:
            if w.writer is not None:
                w.writer.close()
            code = await self._reap(w)
            if code is not None:
                why = f"exited with code {code}" if why == "ended" else why
            w.ended = why
            for fut in w.pending.values():
                if not fut.done():
                    fut.set_exception(_WorkerGone(f"measuring worker {w.index} {why}"))
            w.pending.clear()
            if not self._closing:
                self.restarts += 1
                task = asyncio.create_task(self._restart(w))
                self._restarts.add(task)
                task.add_done_callback(self._restarts.discard)

    def _answer(self, w: _Worker, ident: int, question: Any) -> None:
        """Answer a worker's question (``on_ask``) when it is ready; a failure is the answer."""

        async def answer() -> None:
            try:
                if self._on_ask is None:
                    raise LookupError("this pool answers no questions")
                reply: Any = ("answer", ident, True, await self._on_ask(question))
            except Exception as exc:  # told to the worker, which decides
                reply = ("answer", ident, False, f"{type(exc).__name__}: {exc}")
            if w.alive:
                assert w.writer is not None
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    w.writer.write(_frame(reply))

        task = asyncio.create_task(answer())
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    def broadcast(self, frame: object) -> None:
        """Send a frame to every live worker (a new config, say); a dead one gets its
        ``hello`` when it is started again."""
        data = _frame(frame)
        for w in self._workers:
            if w.alive:
                assert w.writer is not None
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    w.writer.write(data)

    async def _reap(self, w: _Worker) -> int | None:
        proc = w.proc
        if proc is None:
            return None
        try:
            async with asyncio.timeout(2.0):
                return await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return await proc.wait()

    async def _restart(self, w: _Worker) -> None:
        delay = _RESTART_BACKOFF_S[min(w.starts - 1, len(_RESTART_BACKOFF_S) - 1)]
        await asyncio.sleep(delay)
        if self._closing:
            return
        try:
            await self._spawn(w)
        except OSError as exc:
            print(f"lifeline: cannot start measuring worker {w.index}: {exc}", file=sys.stderr)
            w.ended = f"could not be started ({exc})"

    async def measure(
        self,
        target: Target,
        vantage: Vantage,
        *,
        ca_file: str | None,
        timeout: float,  # noqa: ASYNC109 (the measurement's budget, enforced by the worker)
        max_body_bytes: int,
        service: str = "",
        stop_addresses: frozenset[str] = frozenset(),
        fingerprints: FingerprintSet | None = None,
        body_head_bytes: int = DEFAULT_BODY_HEAD_BYTES,
    ) -> Measurement:
        """One measurement in a worker; never raises (cancellation aside)."""
        live = [w for w in self._workers if w.alive]
        if not live:
            ended = "; ".join(w.ended or "not started" for w in self._workers)
            return failed_measurement(target, vantage, service, f"no measuring worker ({ended})")
        w = min(live, key=lambda x: len(x.pending))
        ident = next(self._ids)
        key = self._fingerprint_key(fingerprints) if fingerprints is not None else None
        ask = _Ask(
            ident, target, vantage, ca_file, timeout, max_body_bytes, service, stop_addresses,
            key, body_head_bytes,
        )  # fmt: skip
        fut: asyncio.Future[Measurement] = asyncio.get_running_loop().create_future()
        w.pending[ident] = fut
        assert w.writer is not None
        try:
            if key is not None and key not in w.fingerprints_sent:
                w.writer.write(_frame(("fingerprints", key, fingerprints)))
                w.fingerprints_sent.add(key)
            w.writer.write(_frame(ask))
            async with asyncio.timeout(timeout + WORKER_GRACE_S):
                return await fut
        except _WorkerGone as exc:
            return failed_measurement(target, vantage, service, str(exc))
        except TimeoutError:
            self._cancel(w, ident)
            return failed_measurement(
                target, vantage, service, f"measuring worker {w.index} did not answer in time"
            )
        except asyncio.CancelledError:
            self._cancel(w, ident)
            raise
        except (ConnectionError, OSError) as exc:
            w.pending.pop(ident, None)
            return failed_measurement(
                target, vantage, service, f"measuring worker {w.index}: {exc}"
            )

    def _fingerprint_key(self, fingerprints: FingerprintSet) -> int:
        found = self._fingerprint_keys.get(id(fingerprints))
        if found is not None:
            return found[1]
        if len(self._fingerprint_keys) >= 8:  # old configs' sets: forget the oldest
            del self._fingerprint_keys[next(iter(self._fingerprint_keys))]
        key = next(self._next_key)
        self._fingerprint_keys[id(fingerprints)] = (fingerprints, key)
        return key

    def _cancel(self, w: _Worker, ident: int) -> None:
        """Forget a measurement and tell the worker to stop it."""
        w.pending.pop(ident, None)
        if w.alive:
            assert w.writer is not None
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                w.writer.write(_frame(("cancel", ident)))

    @property
    def in_flight(self) -> int:
        return sum(len(w.pending) for w in self._workers)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None and w.alive]

    async def aclose(self) -> None:
        """Close the sockets (the workers exit on their own), then reap them."""
        self._closing = True
        for t in [*self._restarts, *self._answers]:
            t.cancel()
        await asyncio.gather(*self._restarts, *self._answers, return_exceptions=True)
        for w in self._workers:
            if w.writer is not None:
                w.writer.close()
        tasks = [w.reader_task for w in self._workers if w.reader_task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)


class _WorkerGone(Exception):
    """The worker holding a measurement ended before answering."""


# --- the worker's side -------------------------------------------------------------------


class Channel:
    """A worker's end of the socket: answers to send, questions to ask the parent."""

    def __init__(self, writer: asyncio.StreamWriter, index: int) -> None:
        self.writer = writer
        self.index = index
        self._ids = itertools.count(1)
        self._asked: dict[int, asyncio.Future[Any]] = {}

    def send(self, obj: object) -> None:
        self.writer.write(_frame(obj))

    async def ask(self, question: object) -> Any:
        """The parent's answer (its ``on_ask``); raises ``LookupError`` with its error."""
        ident = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._asked[ident] = fut
        try:
            self.send(("ask", ident, question))
            return await fut
        finally:
            self._asked.pop(ident, None)

    def answered(self, ident: int, ok: bool, value: Any) -> None:
        fut = self._asked.get(ident)
        if fut is not None and not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(LookupError(value))

    def close(self) -> None:
        for fut in self._asked.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the parent went away"))


class Extension(Protocol):
    """More than measuring in a worker (``exporter.coreworker``: listening for /probe)."""

    async def frame(self, frame: tuple[Any, ...], channel: Channel) -> None:
        """A frame this module does not know (the extension's own, e.g. a new config)."""

    async def aclose(self) -> None: ...


async def _work(fd: int, index: int = 0, extension: Extension | None = None) -> None:
    from probes.measure import measure
    from probes.net import VantageNet

    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    channel = Channel(writer, index)
    nets: dict[tuple[Vantage, str | None], VantageNet] = {}
    tasks: dict[int, asyncio.Task[None]] = {}
    known: dict[int, FingerprintSet] = {}  # the fingerprint sets sent, by key

    async def one(ask: _Ask) -> None:
        key = (ask.vantage, ask.ca_file)
        net = nets.get(key)
        if net is None:
            net = nets[key] = VantageNet(ask.vantage, ca_file=ask.ca_file)
        try:
            m = await measure(
                ask.target,
                ask.vantage,
                net,
                timeout=ask.timeout,
                max_body_bytes=ask.max_body_bytes,
                service=ask.service,
                stop_addresses=ask.stop_addresses,
                fingerprints=(
                    known.get(ask.fingerprints_key) if ask.fingerprints_key is not None else None
                ),
                body_head_bytes=ask.body_head_bytes,
            )
            writer.write(_frame((ask.id, m)))
        finally:
            tasks.pop(ask.id, None)

    try:
        while True:
            frame = await _read_frame(reader)
            if frame is None:
                break
            if isinstance(frame, _Ask):
                tasks[frame.id] = asyncio.create_task(one(frame))
            elif isinstance(frame, tuple) and frame[:1] == ("fingerprints",):
                if len(known) >= 32:  # more than the parent keeps live (8)
                    del known[next(iter(known))]
                known[frame[1]] = frame[2]
            elif isinstance(frame, tuple) and frame[:1] == ("cancel",):
                task = tasks.pop(frame[1], None)
                if task is not None:
                    task.cancel()
            elif isinstance(frame, tuple) and frame[:1] == ("answer",):
                channel.answered(frame[1], frame[2], frame[3])
            elif isinstance(frame, tuple) and extension is not None:
                await extension.frame(frame, channel)
    except (ConnectionError, OSError):
        pass
    finally:
        channel.close()
        if extension is not None:
            await extension.aclose()
        for task in list(tasks.values()):
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for net in nets.values():
            await net.aclose()
        writer.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2 or not all(a.isdigit() for a in args):
        print("usage: python -m probes.workers FD [INDEX] (started by `lifeline serve --workers`)",
              file=sys.stderr)  # fmt: skip
        return 2
    ignore_group_signals()
    with loops.use(os.environ.get(loops.LOOP_ENV, "auto")):  # serve's --loop
        asyncio.run(_work(int(args[0]), int(args[1]) if len(args) > 1 else 0))
    return 0


def ignore_group_signals() -> None:
    """The parent decides when to stop and reload: ^C in a terminal (SIGINT) and a
    SIGHUP sent to the whole group reach the parent, which tells its workers."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


if __name__ == "__main__":
    # run as ``-m probes.workers`` this module is ``__main__``; frames name ``probes.workers``
    from probes.workers import main as _main

    sys.exit(_main())
