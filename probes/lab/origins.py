"""The lab's web origins: real-looking sites, a geo-blocking one, an impostor, a block page.

One aiohttp application serves every origin; which site a request reaches
is decided by the local address it arrived on (each lab site has its own
loopback address, as real sites have their own IPs), and each address has its
own TLS certificate. Pages are generated from the site's name, so the CDN
replica serves byte-identical content to the primary.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from probes.lab.scenarios import SOURCE_ADDRESS

__all__ = ["ASSET", "OriginServer", "Site", "SiteKind", "block_page", "page"]

#: The ~1 MiB body of ``/asset.bin`` (deterministic, incompressible enough).
ASSET = bytes(range(256)) * 4096

_WORDS = (
    "reachable",
    "network",
    "people",
    "message",
    "resilience",
    "measurement",
    "archive",
    "community",
    "journalism",
    "library",
    "weather",
    "transport",
    "language",
    "history",
)


class SiteKind(StrEnum):
    NORMAL = "normal"
    GEO = "geo"  # another page for clients from the in-country address
    IMPOSTOR = "impostor"
    BLOCKPAGE = "blockpage"


@dataclass(frozen=True, slots=True)
class Site:
    """One origin: its address, the name its content is for, how it behaves."""

    address: str
    name: str  # content and certificate name
    kind: SiteKind = SiteKind.NORMAL


def page(name: str) -> bytes:
    """A few KiB of HTML with a <title>, the same for every replica of ``name``."""
    label = name.split(".")[0]
    paragraphs = "\n".join(
        f"<p>{label} {' '.join(_WORDS[(i + j) % len(_WORDS)] for j in range(12))}.</p>"
        for i in range(40)
    )
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{label} - lifeline lab</title></head>\n"
        f"<body><h1>{label}</h1>\n<nav><a href='/'>home</a> <a href='/asset.bin'>asset</a></nav>\n"
        f"{paragraphs}\n</body></html>\n"
    ).encode()


def block_page() -> bytes:
    """The page of Iran's filter, as users see it: an iframe to 10.10.34.34 and peyvandha.ir."""
    return (
        b"<html><head><meta http-equiv='Content-Type' content='text/html; charset=utf-8'>"
        b"<title>M1-2</title></head><body>"
        b"<iframe src='http://10.10.34.34?type=Invalid Site&policy=MainPolicy' "
        b"style='width: 100%; height: 100%' scrolling='no' marginwidth='0' marginheight='0' "
        b"frameborder='0' vspace='0' hspace='0'></iframe>"
        b"<p>peyvandha.ir</p></body></html>\n"
    )


_GEO_PAGE = (
    b"<!doctype html><html><head><title>Not available in your region</title></head>"
    b"<body><p>This service is not available in your country.</p></body></html>\n"
)
_IMPOSTOR_PAGE = (
    b"<!doctype html><html><head><title>Domain parked</title></head>"
    b"<body><p>This domain is parked. Buy it today!</p></body></html>\n"
)


def _html(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="text/html", charset="utf-8")


class OriginServer:
    """Every lab site, on its pre-bound HTTPS and HTTP sockets."""

    def __init__(self) -> None:
        self._sites: dict[str, Site] = {}
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=15.0,
            shutdown_timeout=1.0,
            handler_cancellation=True,
        )
        self._pending: list[tuple[socket.socket, ssl.SSLContext | None]] = []
        self._started = False

    def add(self, site: Site, sock: socket.socket, context: ssl.SSLContext | None) -> None:
        """Serve ``site`` on ``sock`` (TLS when ``context`` is given); call before start()."""
        self._sites[site.address] = site
        self._pending.append((sock, context))

    async def start(self) -> None:
        self._started = True
        await self._runner.setup()
        for sock, context in self._pending:
            await web.SockSite(self._runner, sock, ssl_context=context).start()
        self._pending.clear()

    async def close(self) -> None:
        for sock, _ in self._pending:  # never started
            sock.close()
        self._pending.clear()
        if self._started:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        site = self._sites.get(sockname[0]) if sockname else None
        if site is None:
            return _html(b"<html><title>no such site</title></html>", status=421)
        if site.kind is SiteKind.BLOCKPAGE:
            return _html(block_page())
        if site.kind is SiteKind.IMPOSTOR:
            return _html(_IMPOSTOR_PAGE)
        if site.kind is SiteKind.GEO and request.remote == SOURCE_ADDRESS:
            return _html(_GEO_PAGE, status=403)
        if request.path == "/":
            return _html(page(site.name))
        if request.path == "/asset.bin":
            return web.Response(body=ASSET, content_type="application/octet-stream")
        return _html(b"<html><title>404 not found</title></html>", status=404)
