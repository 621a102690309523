"""An agent is ready when it can measure for hubs, not after its first round (issue 15).

A hub's request is measured at once, whatever the agent's own schedule; with a
24 h interval the first round takes most of a day. Everything is on loopback:
a fake resolver and a canary web server the agent's vantage reaches.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from exporter.agent import AgentReadiness
from exporter.scheduler import Monitor
from exporter.server import Server
from exporter.webconfig import WebConfig
from probes.config import parse_config
from tests.fakes import LOOPBACK, FakeDNS

#: How long the test waits at most for what should come within a second or two:
#: a bound for a loaded machine, not a measure of speed.
PATIENCE_S = 60.0


async def _until(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + PATIENCE_S
    while not await check():
        assert loop.time() < give_up, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def agent(
    *, proxy: str | None = None, canaries: bool = True
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Monitor, Server]]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<title>canary</title>fine", content_type="text/html")

    site_app = web.Application()
    site_app.router.add_get("/", page)
    site = web.AppRunner(site_app, access_log=None)
    await site.setup()
    await web.TCPSite(site, LOOPBACK, 0).start()
    port = site.addresses[0][1]
    dns = await FakeDNS(
        {"canary.lifeline.test": ["A 127.0.0.1"], "news.lifeline.test": ["A 127.0.0.1"]}
    ).start()
    vantage = f"{{name: ir, resolver: '{LOOPBACK}:{dns.port}'"
    vantage += f", proxy: '{proxy}'}}" if proxy else "}"
    text = f"""
version: 1
defaults: {{interval: 24h, timeout: 5s}}
vantages: [{vantage}]
{f"canaries: ['http://canary.lifeline.test:{port}/']" if canaries else ""}
services:
  - name: news
    targets: ['http://news.lifeline.test:{port}/']
"""
    monitor = Monitor(parse_config(text))
    server = Server(monitor, config_path=None, web_config=WebConfig(), agent="agent-1")
    try:
        await monitor.start()
        async with TestClient(TestServer(server.app(), host=LOOPBACK, port=0)) as client:
            yield client, monitor, server
    finally:
        await monitor.aclose()
        await dns.close()
        await site.cleanup()


async def _ready(client: TestClient[web.Request, web.Application]) -> bool:
    async with client.get("/-/ready") as response:
        return response.status == 200


async def test_an_agent_with_a_24h_interval_is_ready_before_its_first_round() -> None:
    async with agent() as (client, monitor, _):
        await _until("the agent's readiness", lambda: _ready(client))
        # the schedule's round (spread over 24 h) is far from complete
        assert not monitor.board.ready
        async with client.get("/-/ready") as response:
            assert response.status == 200 and "ready" in await response.text()


async def test_an_agent_without_canaries_is_ready_once_it_serves() -> None:
    async with agent(canaries=False) as (client, monitor, _):
        await _until("the agent's readiness", lambda: _ready(client))
        assert not monitor.board.ready


async def test_an_agent_whose_own_proxy_cannot_be_used_is_not_ready() -> None:
    """The vantage's path (a SOCKS proxy nobody listens on) cannot be measured through."""
    with socket.socket() as bound:  # bound, never listening: connecting is refused
        bound.bind((LOOPBACK, 0))
        dead = bound.getsockname()[1]
        async with agent(proxy=f"socks5://{LOOPBACK}:{dead}") as (client, _, server):
            readiness = server._agent_ready
            assert isinstance(readiness, AgentReadiness)
            await _until("two readiness checks", lambda: _checked(readiness, 2))
            async with client.get("/-/ready") as response:
                assert response.status == 503
                assert "checking its vantages" in await response.text()


async def _checked(readiness: AgentReadiness, n: int) -> bool:
    return readiness.checks >= n
