"""`serve --workers N`'s worker process: measures, listens beside `serve`, answers ``/probe``.

Run as ``python -m exporter.coreworker FD INDEX`` by :class:`exporter.cores.WorkerSet`
(see there, and docs/serve.md): it measures what `serve`'s schedule sends it
(``probes.workers``), listens on the same address (``SO_REUSEPORT``), answers
``/probe`` itself and forwards every other request to `serve` over its Unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from aiohttp import ClientError, ClientSession, ClientTimeout, UnixConnector, web

from exporter.cores import CoreSettings, stamp
from probes import loops
from probes.model import Config, Target, Vantage
from probes.records import Result

if TYPE_CHECKING:
    from probes.runner import Runner
    from probes.workers import Channel

__all__ = ["main"]

#: Headers that belong to one hop of a connection (RFC 9110 7.6.1), not forwarded.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class _ProbeMonitor:
    """What :class:`exporter.server.Server` reads of a monitor, for /probe in a worker."""

    store = None

    def __init__(self, config: Config, channel: Channel) -> None:
        from exporter.board import Board

        self.board = Board(config)
        self._runner = _probe_runner(config)
        self._channel = channel
        self._old: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> Config:
        return self.board.config

    @property
    def observations(self) -> Any:
        from probes.runner import Observations

        return Observations(())

    async def probe(self, target: Target, vantage: Vantage, service: str) -> Result:
        """Measured here; judged with the context the parent's schedule holds."""
        from probes.runner import Job, Observations

        runner = self._runner
        m = await runner.measure(Job(service, target, vantage))
        context = await self._channel.ask(("context", service, target.url, vantage.name))
        return runner.judge(m, Observations([*context, m]))

    def reconfigure(self, config: Config) -> None:
        """A new config; the old runner closes once the probes it holds are done."""
        old = self._runner
        self.board.retarget(config)
        self._runner = _probe_runner(config)
        task = asyncio.create_task(self._close_later(old, 2 * config.defaults.timeout + 1.0))
        self._old.add(task)
        task.add_done_callback(self._old.discard)

    @staticmethod
    async def _close_later(runner: Any, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            await runner.aclose()

    async def aclose(self) -> None:
        for task in list(self._old):
            task.cancel()
        await asyncio.gather(*self._old, return_exceptions=True)
        await self._runner.aclose()


class _Listener:
    """The worker's HTTP side (a :class:`probes.workers.Extension`)."""

    def __init__(self) -> None:
        self._monitor: _ProbeMonitor | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._told: asyncio.Task[Any] | None = None

    async def frame(self, frame: tuple[Any, ...], channel: Channel) -> None:
        kind = frame[0]
        if kind == "serve" and self._runner is None:
            await self._start(frame[1], frame[2], channel)
        elif kind == "config" and self._monitor is not None:
            from exporter.logsetup import remember_secrets

            remember_secrets(frame[1])
            self._monitor.reconfigure(frame[1])

    async def _start(self, settings: CoreSettings, config: Config, channel: Channel) -> None:
        from exporter.logsetup import configure, remember_secrets
        from exporter.server import Server

        configure(settings.log_level, settings.log_format)
        remember_secrets(config, *settings.web.secrets())
        self._monitor = _ProbeMonitor(config, channel)
        server = Server(self._monitor, config_path=None, web_config=settings.web)  # type: ignore[arg-type]
        self._session = ClientSession(
            connector=UnixConnector(path=settings.parent_socket),
            auto_decompress=False,
            timeout=ClientTimeout(total=None, sock_connect=10.0),
        )

        async def probe(request: web.Request) -> web.StreamResponse:
            return await server._auth(request, server._probe)

        app = web.Application()
        app.on_response_prepare.append(stamp(f"worker {channel.index}"))
        app.add_routes([web.get("/probe", probe), web.route("*", "/{tail:.*}", self._forward)])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            settings.host,
            settings.port,
            ssl_context=settings.web.ssl_context(),
            reuse_port=True,
        )
        error = None
        try:
            await site.start()
        except OSError as exc:  # the port is taken (by a program without SO_REUSEPORT)
            error = str(exc)
        # told, not awaited: the answer comes through the loop that is running this frame
        self._told = asyncio.create_task(channel.ask(("listening", channel.index, error)))

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        """The request as it came, to the parent; its answer as it comes back."""
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        body = await request.read()
        try:
            async with self._session.request(
                request.method,
                f"http://lifeline{request.rel_url}",
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for k, v in upstream.headers.items():
                    if k.lower() not in _HOP:
                        response.headers.add(k, v)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(1 << 16):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (ClientError, OSError) as exc:
            if "response" in locals() and response.prepared:  # cut short: nothing to add
                return response
            return web.Response(status=503, text=f"lifeline's main process did not answer: {exc}\n")

    async def aclose(self) -> None:
        if self._told is not None:
            self._told.cancel()
            await asyncio.gather(self._told, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self._monitor is not None:
            await self._monitor.aclose()


def main(argv: list[str] | None = None) -> int:
    from probes.workers import _work, ignore_group_signals

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not all(a.isdigit() for a in args):
        print("usage: python -m exporter.coreworker FD INDEX (started by `serve --workers`)",
              file=sys.stderr)  # fmt: skip
        return 2
    ignore_group_signals()
    with contextlib.suppress(KeyboardInterrupt), loops.use(os.environ.get(loops.LOOP_ENV, "auto")):
        asyncio.run(_work(int(args[0]), int(args[1]), _Listener()))  # on serve's --loop
    return 0


if __name__ == "__main__":
    from exporter.coreworker import main as _main

    sys.exit(_main())


def _probe_runner(config: Config) -> Runner:
    """The worker's /probe runner, with serve's /probe bounds (exporter.scheduler)."""
    from exporter.scheduler import probe_bounds
    from probes.runner import Runner

    total, per_vantage = probe_bounds()
    return Runner(config, concurrency=total, per_vantage=per_vantage)
