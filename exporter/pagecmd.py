"""`lifeline page --data-dir D`: the status page of a store, read-only, measuring nothing.

`serve`'s page shows the (service, target, vantage) keys its config names;
records that came into a store another way (`lifeline import ooni`, a store
copied from another host) have no config to name them. This command serves
the same page (``exporter/page/``) and ``/api/v1/status`` from the store's
current verdicts, its timeline and its measurements: every key the store
holds, nothing measured, nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from exporter.asyncstore import AsyncStore
from exporter.server import STATUS_SCHEMA, parse_listen
from exporter.store import DB_NAME, Latest, StoreError
from probes.records import Result
from probes.timefmt import parse_rfc3339, rfc3339

__all__ = ["DEFAULT_LISTEN", "StorePageSource", "run_page", "serve_page", "store_status"]

#: Loopback by default: this page has no TLS or authentication of its own.
DEFAULT_LISTEN = "127.0.0.1:9479"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def store_status(rows: Sequence[Latest], *, now: float | None = None) -> dict[str, Any]:
    """The ``lifeline.status/1`` document of a store's current verdicts (its ``latest`` rows).

    ``ready`` is true (nothing is measuring); a vantage's ``up`` is unknown (null):
    no canary of it is judged here.
    """
    vantages = sorted({r.vantage for r in rows})
    return {
        "schema": STATUS_SCHEMA,
        "time": rfc3339(time.time() if now is None else now),
        "ready": True,
        "results": [
            {
                "service": r.service,
                "target": r.target,
                "vantage": r.vantage,
                "verdict": r.verdict,
                "reason": r.reason,
                "since": r.since,
                "time": r.time or r.since,
                "country": None,
                "timezone": None,
            }
            for r in rows
        ],
        "vantages": [
            {"name": v, "control": False, "country": None, "timezone": None, "up": None}
            for v in vantages
        ],
    }


class StorePageSource:
    """What the page reads (:class:`exporter.page.PageSource`), from a store alone."""

    #: The drill-down's look-back, counted from the key's own last measurement (not now:
    #: imported measurements may be years old).
    EVIDENCE_WINDOW_S = 24 * 3600.0

    def __init__(self, store: AsyncStore) -> None:
        self._store = store

    async def status(self) -> Mapping[str, Any]:
        return store_status(await self._store.latest())

    async def changes(self, *, since: str | None) -> Sequence[Any]:
        return await self._store.changes(since=since)

    async def measurements(
        self, *, service: str, target: str, vantage: str, limit: int
    ) -> list[Result]:
        rows = await self._store.latest()
        last = next(
            (r.time or r.since for r in rows if (r.service, r.target, r.vantage) == (
                service, target, vantage)),
            None,
        )  # fmt: skip
        if last is None:
            return []
        results = await self._store.results(
            since=rfc3339(parse_rfc3339(last) - self.EVIDENCE_WINDOW_S),
            services=[service],
            vantages=[vantage],
        )
        mine = [r for r in results if r.measurement.target == target]
        return mine[-limit:][::-1]  # newest first

    async def window(self) -> Mapping[str, Any] | None:
        return None  # a maintenance window needs a config's regions


def page_app(store: AsyncStore) -> web.Application:
    from exporter.page import add_page_routes

    source = StorePageSource(store)

    async def status(request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(await source.status(), separators=(",", ":")),
            content_type="application/json",
            headers={"Cache-Control": "no-cache"},
        )

    app = web.Application()
    app.router.add_get("/api/v1/status", status)
    add_page_routes(app, source)
    return app


def _say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


async def serve_page(
    data_dir: str | Path,
    listen: str = DEFAULT_LISTEN,
    *,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> int:
    """Serve the page of the store in ``data_dir`` until SIGTERM/SIGINT (or ``stop``)."""
    directory = Path(data_dir)
    if not (directory / DB_NAME).is_file():
        print(f"lifeline: no store at {directory / DB_NAME} (use --data-dir)", file=sys.stderr)
        return EXIT_USAGE
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = AsyncStore(directory, retention_s=float("inf"))  # never prunes: it never writes
    try:
        rows = await store.latest()
    except (StoreError, OSError) as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        await store.aclose()
        return EXIT_USAGE
    runner = web.AppRunner(page_app(store), access_log=None)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"http://{shown}:{bound_port}/"
        _say(f"listening on {url}")
        print(
            f"lifeline: the status page of {directory / DB_NAME} ({len(rows)} current verdicts), "
            "read-only: nothing is measured",
            file=sys.stderr,
        )
        if on_listening is not None:
            on_listening(url)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    except OSError as exc:
        print(f"lifeline: cannot listen on {listen}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        await store.aclose()
    _say("stopped")
    return EXIT_OK


def run_page(args: argparse.Namespace) -> int:
    return asyncio.run(serve_page(args.data_dir, args.listen))
