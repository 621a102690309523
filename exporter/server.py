"""`lifeline serve`: the long-running exporter (CONTRACT §5-6).

One aiohttp application in front of a :class:`~exporter.scheduler.Monitor`.
Scrapes read what the schedule published; only `/probe` measures on demand,
and only targets the config names (or `probe.allow` patterns): anything else
is refused before a single connection is opened (no SSRF through us).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import MultiMapping

from exporter import events
from exporter.guard import ADHOC_SERVICE, TargetIndex, admitted_target
from exporter.logsetup import LEVELS, LOG_FORMATS, configure, remember_secrets
from exporter.metricspage import MetricsPage
from exporter.probemetrics import ProbeExposition
from exporter.scheduler import Board, Monitor, epoch, rfc3339
from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from probes.config import ConfigError, load_config, parse_duration
from probes.model import Config, Vantage
from probes.records import Result, Verdict

if TYPE_CHECKING:
    from exporter.agent import AgentReadiness
    from exporter.page.view import Status

__all__ = [
    "ADHOC_SERVICE",
    "STATUS_SCHEMA",
    "ServeOptions",
    "Server",
    "TargetIndex",
    "accepts_gzip",
    "admitted_target",
    "parse_listen",
    "run_serve",
    "serve",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATUS_SCHEMA = "lifeline.status/1"
#: Most records one /api/v1/measurements request returns.
MAX_RECORDS = 100_000
DEFAULT_RECORDS = 10_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ServeOptions:
    listen: str = ":9478"
    data_dir: str | None = None
    web: WebConfig = field(default_factory=WebConfig)
    agent: str | None = None  # agent mode (`--agent`): the name it answers hubs with
    workers: int = 0  # measuring worker processes (`--workers`); 0: measure in this process
    log_level: str = "info"  # `--log-level` (exporter.logsetup.LEVELS)
    log_format: str = "text"  # `--log-format`: text or json


def parse_listen(text: str) -> tuple[str | None, int]:
    """``HOST:PORT`` (``:PORT`` = every interface, ``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. :9478 or 127.0.0.1:9478")
    host = host.strip("[]")
    return (host or None, int(port))


# --- the status page ----------------------------------------------------------------
# exporter/page/ renders it from the status document and the store's timeline;
# this adapter is all it sees of `serve`, and _add_status_page the one place it is routed.


class _PageSource:
    """What the status page reads: the status document, the timeline, the evidence."""

    #: How far back the drill-down looks for a target's newest measurements.
    EVIDENCE_WINDOW_S = 24 * 3600.0

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    async def status(self) -> Status:
        return _page_status(self._monitor.board)

    async def changes(self, *, since: str | None) -> Sequence[Any]:
        store = self._monitor.store
        return [] if store is None else await store.changes(since=since)

    async def measurements(
        self, *, service: str, target: str, vantage: str, limit: int
    ) -> list[Result]:
        store = self._monitor.store
        if store is None:
            return []
        results = await store.results(
            since=rfc3339(time.time() - self.EVIDENCE_WINDOW_S),
            services=[service],
            vantages=[vantage],
        )
        mine = [r for r in results if r.measurement.target == target]
        return mine[-limit:][::-1]  # newest first

    async def window(self) -> Mapping[str, Any] | None:
        return await window_for(self._monitor, {})


def _page_status(board: Board) -> Status:
    """The board as the page reads it: typed, with what `status_document` would say."""
    from exporter.page.view import Cell, VantageInfo, make_status, parse_time

    up = board.vantages_up()
    cells = [
        Cell(
            e.service,
            e.target,
            e.vantage,
            e.verdict or Verdict.ERROR.value,
            e.reason,
            parse_time(e.since),
            parse_time(e.time),
            e.since,
        )
        for e in board.ordered()
    ]
    vantages = [
        VantageInfo(v.name, v.control, v.country or None, v.timezone or None, up.get(v.name))
        for v in board.config.vantages
    ]
    return make_status(cells, vantages, time=datetime.now(UTC), ready=board.ready)


async def window_for(monitor: Monitor, query: Mapping[str, str]) -> dict[str, Any]:
    """The window document for the current verdicts and the store's timeline (400 on bad input)."""
    from exporter.windowcmd import window_document, window_options

    try:
        options = window_options(
            duration=query.get("duration", "1h"),
            within=query.get("within", "72h"),
            not_before=query.get("not_before"),
            check=query.get("check"),
        )
    except ValueError as exc:
        raise _bad(str(exc)) from None
    store = monitor.store
    changes = [] if store is None else await store.changes()
    current = monitor.board.ordered()
    return window_document(monitor.config, current, changes, now=datetime.now(UTC), **options)


_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


async def incidents_document(monitor: Monitor, query: MultiMapping[str]) -> dict[str, Any]:
    """The ``lifeline.incidents/2`` document of ``/api/v1/incidents`` (400 on a bad parameter).

    From the store's timeline when there is a store, else from the current verdicts.
    """
    from exporter.export.common import resolve_time
    from exporter.incidents import INCIDENT_SCHEMA, Period, build_incidents, select_incidents

    now = time.time()
    unknown = sorted(set(query) - {"service", "vantage", "since", "ongoing"})
    if unknown:
        raise _bad(f"unknown parameter {unknown[0]!r}: use service, vantage, since, ongoing")
    since: float | None = None
    if "since" in query:
        try:
            since = epoch(resolve_time(query["since"], now=now))
        except ValueError as exc:
            raise _bad(f"since: {exc}") from None
    ongoing = query.get("ongoing", "").strip().lower()
    if ongoing not in _YES + _NO:
        raise _bad(f"ongoing: {ongoing!r} is not a yes or no (use ongoing=1 or ongoing=0)")
    entries = monitor.board.ordered()
    seen = {(e.service, e.target, e.vantage): e.time for e in entries}
    store = monitor.store
    periods: Sequence[Any]
    if store is not None:
        periods = await store.changes()  # all: an incident may begin before `since`
    else:
        periods = [
            Period(e.service, e.target, e.vantage, e.verdict or "", e.since, None, e.reason)
            for e in entries
        ]
    items = select_incidents(
        build_incidents(periods, last_measured=seen),
        services=query.getall("service", []),
        vantages=query.getall("vantage", []),
        since=since,
        ongoing=ongoing in _YES,
    )
    return {
        "schema": INCIDENT_SCHEMA,
        "time": rfc3339(now),
        "incidents": [i.to_dict(now) for i in items],
    }


def _add_status_page(app: web.Application, monitor: Monitor) -> None:
    from exporter.page import add_page_routes

    add_page_routes(app, _PageSource(monitor))


# --- the application -----------------------------------------------------------------


class Server:
    """The HTTP side of `serve`: routes, auth, reload."""

    def __init__(
        self,
        monitor: Monitor,
        *,
        config_path: str | None,
        web_config: WebConfig,
        agent: str | None = None,
    ) -> None:
        from exporter.agent import AgentCollector

        self.monitor = monitor
        self.config_path = config_path
        self.web_config = web_config
        self.agent = agent
        self._agent_ready: AgentReadiness | None = None  # set when the app is made
        self._reload_lock = asyncio.Lock()
        # hub: its agents' clocks come after lifeline's own families
        self._page = MetricsPage(monitor.board, extra=[AgentCollector(monitor)])
        self._probe_page = ProbeExposition()
        self._targets = TargetIndex(monitor.config)
        self.background: set[asyncio.Task[list[str]]] = set()  # reloads started by SIGHUP

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.add_routes(self._routes())
        _add_status_page(app, self.monitor)
        if self.agent is not None:  # docs/agents.md: POST /api/v1/measure for hubs
            from exporter.agent import AgentIdentity, add_agent_routes

            self._agent_ready = add_agent_routes(app, self.monitor, AgentIdentity(self.agent))
        return app

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.get("/metrics", self._metrics),
            web.get("/probe", self._probe),
            web.get("/api/v1/status", self._status),
            web.get("/api/v1/measurements", self._measurements),
            web.get("/api/v1/window", self._window),
            web.get("/api/v1/incidents", self._incidents),
            web.get("/-/healthy", self._healthy),
            web.get("/-/ready", self._ready),
            web.post("/-/reload", self._reload),
        ]

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        wc = self.web_config
        if wc.users and not await asyncio.to_thread(
            wc.authorized, request.headers.get("Authorization")
        ):
            raise web.HTTPUnauthorized(
                text="401 Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="lifeline"'}
            )
        return await handler(request)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        """The page as it is now, gzipped when the scraper accepts it (Prometheus does).

        The page is never held whole: gzipped (in a worker thread: zlib lets
        the event loop run meanwhile), it is 1/17 of the size; plain, it
        is written a chunk at a time, each once the previous one left.
        """
        page = self._page.exposition(request.headers.get("Accept"))
        headers = {"Content-Type": page.content_type, "Vary": "Accept-Encoding"}
        if accepts_gzip(request.headers.get("Accept-Encoding")):
            body = await asyncio.to_thread(page.gzipped)
            return web.Response(body=body, headers={**headers, "Content-Encoding": "gzip"})
        response = web.StreamResponse(headers=headers)
        response.content_length = page.length
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            for chunk in page.chunks():
                await response.write(chunk)
        except ConnectionResetError:  # the scraper left (timed out): nobody to tell
            return response
        await response.write_eof()
        return response

    async def _probe(self, request: web.Request) -> web.Response:
        config = self.monitor.config
        url = request.query.get("target", "").strip()
        if not url:
            raise _bad("the target parameter is required")
        if self._targets.config is not config:  # reloaded: index the new config once
            self._targets = TargetIndex(config)
        service, target = self._targets.admit(url)
        name = request.query.get("vantage") or _default_vantage(config).name
        vantage = config.vantage(name)
        if vantage is None:
            raise _bad(f"unknown vantage {name!r}")
        started = time.monotonic()
        result = await self.monitor.probe(target, vantage, service)
        body, content_type = self._probe_page.render(
            result, time.monotonic() - started, request.headers.get("Accept")
        )
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(status_document(self.monitor.board))

    async def _window(self, request: web.Request) -> web.Response:
        """`lifeline window` on the live verdicts: ?duration=1h&within=72h&not_before=T&check=T."""
        return web.json_response(await window_for(self.monitor, request.query))

    async def _incidents(self, request: web.Request) -> web.Response:
        """The incident model (`lifeline incidents`): ?service=S&vantage=V&since=T&ongoing=1."""
        return web.json_response(await incidents_document(self.monitor, request.query))

    async def _measurements(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        store = self.monitor.store
        if store is None:
            raise web.HTTPNotFound(text="no store is configured\n")
        try:
            since = _time_param(q.get("since"), default_ago=3600.0)
            until = _time_param(q.get("until"), default_ago=None)
            limit = min(MAX_RECORDS, int(q.get("limit", DEFAULT_RECORDS)))
        except ValueError as exc:
            raise _bad(str(exc)) from None
        lines = await store.measurement_lines(
            since=since,
            until=until,
            services=q.getall("service", []),
            vantages=q.getall("vantage", []),
            limit=max(0, limit),
        )
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for i in range(0, len(lines), 256):  # the stored JSON text as it is, no re-encoding
            await response.write("".join(f"{line}\n" for line in lines[i : i + 256]).encode())
        await response.write_eof()
        return response

    async def _healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="lifeline is healthy\n")

    async def _ready(self, request: web.Request) -> web.Response:
        agent_ready = self._agent_ready is not None and self._agent_ready.ready
        if self.monitor.board.ready or agent_ready:
            return web.Response(text="lifeline is ready\n")
        if self._agent_ready is not None:
            return web.Response(status=503, text="lifeline's agent is checking its vantages\n")
        return web.Response(status=503, text="lifeline is measuring its first round\n")

    async def _reload(self, request: web.Request) -> web.Response:
        errors = await self.reload()
        if errors:
            return web.json_response({"status": "error", "errors": errors}, status=400)
        return web.json_response({"status": "success"})

    def reload_soon(self) -> None:
        """Start a reload from a signal handler (which cannot await)."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def reload(self) -> list[str]:
        """Re-read the config; a bad one is refused (errors returned), the old one keeps running."""
        async with self._reload_lock:
            if self.config_path is None:
                return ["no config file to reload"]
            try:
                config = load_config(self.config_path)
            except ConfigError as exc:
                self.monitor.board.reload_ok = False
                events.reload_refused(self.config_path, exc.errors)
                return list(exc.errors)
            remember_secrets(config, *self.web_config.secrets())
            before = config_counts(self.monitor.config)
            await self.monitor.reload(config)
            events.reload_done(self.config_path, before, config_counts(config))
            return []


def config_counts(config: Config) -> dict[str, int]:
    """What a config holds, in numbers (serve's start and reload lines)."""
    return {
        "services": len(config.services),
        "targets": sum(len(s.targets) for s in config.services),
        "canaries": len(config.canaries),
        "vantages": len(config.vantages),
    }


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header takes gzip (RFC 9110 12.5.3: ``*`` too; q=0 refuses)."""
    if not accept_encoding:
        return False
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.lower()] = weight
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False


def status_document(board: Board) -> dict[str, Any]:
    """The `/api/v1/status` JSON: the current verdict of every (service, target, vantage)."""
    vantages = {v.name: v for v in board.config.vantages}
    up = board.vantages_up()
    results = []
    for e in board.ordered():
        v = vantages.get(e.vantage)
        results.append(
            {
                "service": e.service,
                "target": e.target,
                "vantage": e.vantage,
                "verdict": e.verdict,
                "reason": e.reason,
                "since": e.since,
                "time": e.time,
                "country": v.country if v else None,
                "timezone": v.timezone if v else None,
            }
        )
    return {
        "schema": STATUS_SCHEMA,
        "time": rfc3339(time.time()),
        "ready": board.ready,
        "results": results,
        "vantages": [
            {
                "name": v.name,
                "control": v.control,
                "country": v.country,
                "timezone": v.timezone,
                "up": up.get(v.name),
            }
            for v in board.config.vantages
        ],
    }


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=text + "\n")


def _default_vantage(config: Config) -> Vantage:
    return next((v for v in config.vantages if not v.control), config.vantages[0])


def _time_param(text: str | None, *, default_ago: float | None) -> str | None:
    """An RFC 3339 time, or a duration meaning that long ago ('15m')."""
    if not text:
        return None if default_ago is None else rfc3339(time.time() - default_ago)
    try:
        return rfc3339(epoch(text))
    except ValueError:
        pass
    try:
        return rfc3339(time.time() - parse_duration(text))
    except ValueError:
        raise ValueError(f"not an RFC 3339 time or a duration: {text!r}") from None


def _say(text: str) -> None:
    """A line on stdout that scripts read (``listening on URL``, ``stopped``)."""
    print(text, file=sys.stdout, flush=True)


# --- running -----------------------------------------------------------------------------


async def serve(
    config: Config,
    options: ServeOptions,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``): schedule, serve HTTP, persist; then stop cleanly."""
    from exporter.asyncstore import AsyncStore
    from exporter.logs import ProbeLog
    from exporter.store import StoreError

    remember_secrets(config, *options.web.secrets())
    host, port = parse_listen(options.listen)
    data_dir = Path(options.data_dir or config.storage.dir)
    store = AsyncStore(data_dir, retention_s=config.storage.retention)
    try:
        await store.open()
    except (StoreError, OSError) as exc:
        events.serve_failed(f"cannot open the store in {data_dir}: {exc}")
        await store.aclose()
        return EXIT_FAILED
    log = ProbeLog(data_dir)
    workers = None
    if options.workers:
        from exporter.cores import WorkerSet, stamp

        workers = WorkerSet(options.workers, log_level=options.log_level,
                            log_format=options.log_format)  # fmt: skip
    monitor = Monitor(config, store=store, log=log, pool=None if workers is None else workers.pool)
    server = Server(monitor, config_path=config.path, web_config=options.web, agent=options.agent)
    app = server.app()
    if workers is not None:
        workers.attach(monitor)
        app.on_response_prepare.append(stamp("main"))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=config.defaults.timeout)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        await runner.setup()
        if workers is not None:  # they listen on the same address, and first
            await workers.start(runner, host, port, options.web)
        else:
            await web.TCPSite(runner, host, port, ssl_context=options.web.ssl_context()).start()
        url = _url(runner, options.web)
        await monitor.start()
        _say(f"listening on {url}")
        events.serve_started(url, config_counts(config))
        if on_listening is not None:
            on_listening(url)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, server.reload_soon)
        await stop.wait()  # retention: the store prunes itself, at most hourly, as it writes
        await asyncio.gather(*server.background, return_exceptions=True)
    except OSError as exc:  # the port is taken, or the cert cannot be read
        failed = workers is not None and workers.failed  # the workers' own failure, said
        events.serve_failed(str(exc) if failed else f"cannot listen on {options.listen}: {exc}")
        return EXIT_FAILED
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        await monitor.aclose()
        if workers is not None:
            await workers.aclose()
        log.close()
        await store.aclose()
    events.serve_stopped()
    _say("stopped")
    return EXIT_OK


def _url(runner: web.AppRunner, wc: WebConfig) -> str:
    # the TCP listener's (a Unix socket's address, with --workers, is a path)
    host, port = next(a for a in runner.addresses if isinstance(a, tuple))[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if wc.tls else 'http'}://{shown}:{port}/"


def options_from_args(args: argparse.Namespace) -> ServeOptions | None:
    """Options from the command line; None (after saying why) on a usage error."""
    web_config = WebConfig()
    if args.web_config:
        try:
            web_config = load_web_config(args.web_config)
        except WebConfigError as exc:
            print(f"lifeline: {args.web_config}: invalid web config:", file=sys.stderr)
            for line in exc.errors:
                print(f"  {line}", file=sys.stderr)
            return None
    try:
        parse_listen(args.listen)
    except ValueError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return None
    agent = None
    if getattr(args, "agent", False):
        import socket

        agent = args.agent_name or socket.gethostname()
    from probes.workers import parse_workers

    try:
        workers = parse_workers(getattr(args, "workers", "auto"))
    except ValueError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return None
    level, fmt = getattr(args, "log_level", "info"), getattr(args, "log_format", "text")
    if level not in LEVELS or fmt not in LOG_FORMATS:  # argparse's choices already say so
        print(f"lifeline: --log-level {level!r} / --log-format {fmt!r}", file=sys.stderr)
        return None
    return ServeOptions(
        listen=args.listen,
        data_dir=args.data_dir,
        web=web_config,
        agent=agent,
        workers=workers,
        log_level=level,
        log_format=fmt,
    )


def run_serve(args: argparse.Namespace) -> int:
    from exporter.check import load_or_report

    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    options = options_from_args(args)
    if options is None:
        return EXIT_USAGE
    configure(options.log_level, options.log_format)
    return asyncio.run(serve(config, options))
