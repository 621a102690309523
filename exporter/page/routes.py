"""The page's HTTP side: the aiohttp handlers for the page, its static files, the drill-down,
the timeline and the text summary."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from importlib import resources

from aiohttp import web

from exporter.page.drill import render_target_page
from exporter.page.render import render_page
from exporter.page.source import PageSource
from exporter.page.summary import summary_text
from exporter.page.timeline import timeline
from exporter.page.view import (
    DEFAULT_HOURS,
    DEFAULT_POLL_S,
    DRILL_MEASUREMENTS,
    MAX_HOURS,
    as_status,
    rfc3339,
)

__all__ = ["add_page_routes"]

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_STATIC_TYPES = {"page.js": "text/javascript", "page.css": "text/css"}


def _hours(request: web.Request) -> float:
    raw = request.query.get("hours")
    if raw is None:
        return DEFAULT_HOURS
    try:
        hours = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text="hours: not a number\n") from None
    if not (0 < hours <= MAX_HOURS):
        raise web.HTTPBadRequest(text=f"hours: must be in (0, {MAX_HOURS:g}]\n")
    return hours


def _since_arg(now: datetime, hours: float) -> str:
    return rfc3339(now - timedelta(hours=hours))


class _Static:
    """page.js and page.css, read once from the package; versioned by content hash."""

    def __init__(self) -> None:
        folder = resources.files("exporter") / "static"
        self.files = {name: (folder / name).read_bytes() for name in _STATIC_TYPES}
        digest = hashlib.sha256(b"".join(self.files[n] for n in sorted(self.files)))
        self.version = digest.hexdigest()[:12]


class _Handlers:
    def __init__(self, source: PageSource, *, poll_s: float) -> None:
        self.source = source
        self.poll_s = poll_s
        self.static_files = _Static()

    def _html(self, body: str, status: int = 200) -> web.Response:
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": _CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    async def index(self, request: web.Request) -> web.Response:
        hours = _hours(request)
        now = datetime.now(UTC)
        status = as_status(await self.source.status())
        changes = await self.source.changes(since=_since_arg(now, hours))
        page = render_page(
            status,
            changes,
            now=now,
            hours=hours,
            poll_s=self.poll_s,
            only_problems=request.query.get("only") == "problems",
            static_v=self.static_files.version,
            window=await self.source.window(),
        )
        return self._html(page)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC_TYPES:
            raise web.HTTPNotFound()
        etag = f'"{self.static_files.version}"'
        headers = {
            "ETag": etag,
            "Cache-Control": "public, max-age=3600",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=self.static_files.files[name],
            content_type=_STATIC_TYPES[name],
            charset="utf-8",
            headers=headers,
        )

    async def target(self, request: web.Request) -> web.Response:
        q = request.query
        service, target, vantage = q.get("service"), q.get("target"), q.get("vantage")
        if not service or not target or not vantage:
            raise web.HTTPBadRequest(text="service, target and vantage are required\n")
        hours = _hours(request)
        now = datetime.now(UTC)
        status = as_status(await self.source.status())
        known = any(
            (c.service, c.target, c.vantage) == (service, target, vantage) for c in status.cells
        )
        changes = await self.source.changes(since=_since_arg(now, hours))
        records = await self.source.measurements(
            service=service, target=target, vantage=vantage, limit=DRILL_MEASUREMENTS
        )
        page = render_target_page(
            status,
            changes,
            records,
            service=service,
            target=target,
            vantage=vantage,
            now=now,
            hours=hours,
            static_v=self.static_files.version,
        )
        return self._html(page, status=200 if known or records else 404)

    async def timeline(self, request: web.Request) -> web.Response:
        hours = _hours(request)
        now = datetime.now(UTC)
        changes = await self.source.changes(since=_since_arg(now, hours))
        doc = timeline(changes, now=now, hours=hours, service=request.query.get("service") or None)
        return web.Response(
            text=json.dumps(doc, separators=(",", ":")),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def summary(self, request: web.Request) -> web.Response:
        status = as_status(await self.source.status())
        return web.Response(
            text=summary_text(status, now=datetime.now(UTC)),
            content_type="text/plain",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )


def add_page_routes(
    app: web.Application, source: PageSource, *, poll_s: float = DEFAULT_POLL_S
) -> None:
    """Register the status page, its static files, the drill-down, the timeline and the summary.

    ``poll_s`` is how often the open page asks ``/api/v1/status`` for news.
    """
    h = _Handlers(source, poll_s=poll_s)
    app.router.add_get("/", h.index)
    app.router.add_get("/static/{name}", h.static)
    app.router.add_get("/target", h.target)
    app.router.add_get("/api/v1/timeline", h.timeline)
    app.router.add_get("/api/v1/summary.txt", h.summary)
