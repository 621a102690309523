"""The lab itself: every server wired together, started and stopped as one.

:class:`Lab` runs on the caller's event loop; :class:`LabThread` runs one in a
background thread (for tests and subprocesses that share one lab). What
``lifeline lab`` does is in :mod:`probes.lab.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar

from aiohttp import web

from probes.lab.admin import admin_app
from probes.lab.background import BackgroundService
from probes.lab.ca import LabCA
from probes.lab.configfile import (
    Endpoints,
    config_document,
    expected_document,
    write_config,
    write_expected,
)
from probes.lab.dnsserver import DNSServer
from probes.lab.middlebox import Middlebox, mute_proxy
from probes.lab.netutil import Listening, StreamServer, bind_same_port
from probes.lab.origins import OriginServer, Site, SiteKind
from probes.lab.rules import DNSReply, Rulebook
from probes.lab.scenarios import (
    BLOCKPAGE_ADDRESS,
    CATALOGUE,
    IMPOSTOR_ADDRESS,
    IMPOSTOR_NAME,
    INJECTED_NAME,
    REPLICA_ADDRESS,
    SOURCE_ADDRESS,
    Origin,
    host_name,
    origin_addresses,
)

__all__ = ["Lab", "LabThread", "lab_sites"]

_HOST = "127.0.0.1"
_SILENT = DNSReply(silent=True)
_T = TypeVar("_T")


class _Closable(Protocol):
    async def close(self) -> None: ...


def lab_sites() -> list[Site]:
    """Every web origin of the lab: one per scenario that listens, plus the helpers."""
    addresses = origin_addresses()
    sites = []
    for entry in CATALOGUE:
        address = addresses.get(entry.name)
        if address is None or entry.origin is Origin.NOLISTEN:
            continue
        kind = SiteKind.GEO if entry.origin is Origin.GEO else SiteKind.NORMAL
        sites.append(Site(address, host_name(entry), kind))
        if entry.replica:
            sites.append(Site(REPLICA_ADDRESS, host_name(entry)))
    sites.append(Site(IMPOSTOR_ADDRESS, IMPOSTOR_NAME, SiteKind.IMPOSTOR))
    sites.append(Site(BLOCKPAGE_ADDRESS, INJECTED_NAME, SiteKind.BLOCKPAGE))
    return sites


class Lab:
    """The censorship lab on 127.0.0.0/8: origins, resolvers, middlebox, admin.

    ``with_control`` picks which catalogue :attr:`config_path` and
    :attr:`expected` name; both are always written.
    """

    def __init__(self, directory: Path, *, with_control: bool = True) -> None:
        self.directory = Path(directory).resolve()
        self.with_control = with_control
        self.control_config_path = self.directory / "config.yaml"
        self.control_expected_path = self.directory / "expected.json"
        self.nocontrol_config_path = self.directory / "config-nocontrol.yaml"
        self.nocontrol_expected_path = self.directory / "expected-nocontrol.json"
        self.ca_path = self.directory / "ca.pem"
        self.admin_url = ""
        self.endpoints: Endpoints | None = None
        self.rulebook = Rulebook()
        self.ca: LabCA | None = None
        self._servers: list[_Closable] = []
        self._admin: web.AppRunner | None = None
        self._listening: list[Listening] = []

    @property
    def config_path(self) -> Path:
        return self.control_config_path if self.with_control else self.nocontrol_config_path

    @property
    def expected_path(self) -> Path:
        return self.control_expected_path if self.with_control else self.nocontrol_expected_path

    @property
    def expected(self) -> list[dict[str, str]]:
        return self.expected_for(with_control=self.with_control)

    def expected_for(self, *, with_control: bool) -> list[dict[str, str]]:
        """Expected verdicts of one catalogue under the rules in force now."""
        if self.endpoints is None:
            raise RuntimeError("the lab is not started")
        return expected_document(self.endpoints, self.rulebook.rules, with_control=with_control)

    def listening(self) -> list[Listening]:
        """Every (address, port, proto) the lab bound."""
        return list(self._listening)

    # --- rules ------------------------------------------------------------------

    def set_rule(self, scenario: str, layer: str, action: str) -> None:
        """Make the censor apply ``action`` at ``layer`` to ``scenario`` (ValueError if invalid)."""
        self.rulebook.set(scenario, layer, action)
        self._write_expected()

    def clear_rule(self, scenario: str, layer: str | None = None) -> None:
        """Remove a scenario's rule at ``layer`` (every layer when None)."""
        self.rulebook.clear(scenario, layer)
        self._write_expected()

    def reset_rules(self) -> None:
        """Back to the catalogue's rules."""
        self.rulebook.reset()
        self._write_expected()

    def rules(self) -> dict[str, dict[str, str]]:
        return self.rulebook.snapshot()

    # --- life cycle -------------------------------------------------------------

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind everything, start serving, write the configs and expectations."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca = LabCA(self.directory)
        self.ca.write(self.ca_path)
        try:
            https_port, http_port = await self._start_origins(self.ca)
            honest = await self._start_resolver(self.rulebook.honest)
            censor = await self._start_resolver(self.rulebook.censored)
            mute = await self._start_resolver(lambda _name: _SILENT)
            middlebox = Middlebox(self.rulebook, SOURCE_ADDRESS)
            box_port = await self._start_stream(middlebox.handle)
            mute_port = await self._start_stream(mute_proxy)
            await self._start_admin()
        except BaseException:
            await self.stop()
            raise
        self.endpoints = Endpoints(https_port, http_port, honest, censor, mute, box_port, mute_port)
        for with_control, path in (
            (True, self.control_config_path),
            (False, self.nocontrol_config_path),
        ):
            write_config(
                path, config_document(self.endpoints, self.directory, with_control=with_control)
            )
        self._write_expected()

    async def stop(self) -> None:
        """Close everything, the censor first (it holds connections to the origins)."""
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None
        while self._servers:
            await self._servers.pop().close()

    def _write_expected(self) -> None:
        if self.endpoints is None:
            return
        write_expected(self.control_expected_path, self.expected_for(with_control=True))
        write_expected(self.nocontrol_expected_path, self.expected_for(with_control=False))

    def _bound(self, sock: socket.socket) -> socket.socket:
        address, port = sock.getsockname()[:2]
        proto = "udp" if sock.type == socket.SOCK_DGRAM else "tcp"
        self._listening.append(Listening(address, port, proto))
        return sock

    async def _start_origins(self, ca: LabCA) -> tuple[int, int]:
        sites = lab_sites()
        addresses = [site.address for site in sites]
        origins = OriginServer()
        self._servers.append(origins)
        (https,) = bind_same_port(addresses, [socket.SOCK_STREAM])
        try:
            (http,) = bind_same_port(addresses, [socket.SOCK_STREAM])
        except OSError:
            for sock in https:
                sock.close()
            raise
        for site, tls_sock, plain_sock in zip(sites, https, http, strict=True):
            context = ca.server_context([site.name], label=site.address)
            origins.add(site, self._bound(tls_sock), context)
            origins.add(site, self._bound(plain_sock), None)
        await origins.start()
        return https[0].getsockname()[1], http[0].getsockname()[1]

    async def _start_resolver(self, policy: Callable[[str], DNSReply]) -> int:
        (udp,), (tcp,) = bind_same_port([_HOST], [socket.SOCK_DGRAM, socket.SOCK_STREAM])
        server = DNSServer(self._bound(udp), self._bound(tcp), policy)
        self._servers.append(server)
        await server.start()
        port: int = server.port
        return port

    async def _start_stream(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> int:
        ((sock,),) = bind_same_port([_HOST], [socket.SOCK_STREAM])
        server = StreamServer(self._bound(sock), handler)
        self._servers.append(server)
        await server.start()
        return server.port

    async def _start_admin(self) -> None:
        ((sock,),) = bind_same_port([_HOST], [socket.SOCK_STREAM])
        self._admin = web.AppRunner(
            admin_app(self), access_log=None, keepalive_timeout=15.0, shutdown_timeout=1.0
        )
        await self._admin.setup()
        port = self._bound(sock).getsockname()[1]
        await web.SockSite(self._admin, sock).start()
        self.admin_url = f"http://{_HOST}:{port}"


class LabThread(BackgroundService[Lab]):
    """A :class:`Lab` running on its own event loop in a background thread.

    Use it as a context manager. Attribute reads are plain; rule changes are
    run on the lab's loop and waited for.
    """

    def __init__(self, directory: Path, *, with_control: bool = True) -> None:
        super().__init__(Lab(directory, with_control=with_control), name="lifeline-lab")
        self.lab = self.service

    # --- the Lab's surface -------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self.lab.directory

    @property
    def config_path(self) -> Path:
        return self.lab.config_path

    @property
    def expected_path(self) -> Path:
        return self.lab.expected_path

    @property
    def control_config_path(self) -> Path:
        return self.lab.control_config_path

    @property
    def nocontrol_config_path(self) -> Path:
        return self.lab.nocontrol_config_path

    @property
    def ca_path(self) -> Path:
        return self.lab.ca_path

    @property
    def admin_url(self) -> str:
        return self.lab.admin_url

    @property
    def endpoints(self) -> Endpoints:
        assert self.lab.endpoints is not None
        return self.lab.endpoints

    @property
    def expected(self) -> list[dict[str, str]]:
        return self.call(lambda: self.lab.expected)

    def expected_for(self, *, with_control: bool) -> list[dict[str, str]]:
        return self.call(lambda: self.lab.expected_for(with_control=with_control))

    def listening(self) -> list[Listening]:
        return self.lab.listening()

    def rules(self) -> dict[str, dict[str, str]]:
        return self.call(self.lab.rules)

    def set_rule(self, scenario: str, layer: str, action: str) -> None:
        self.call(self.lab.set_rule, scenario, layer, action)

    def clear_rule(self, scenario: str, layer: str | None = None) -> None:
        self.call(self.lab.clear_rule, scenario, layer)

    def reset_rules(self) -> None:
        self.call(self.lab.reset_rules)

    @contextlib.contextmanager
    def rule(self, scenario: str, layer: str, action: str) -> Iterator[None]:
        """Apply a rule for the duration of a ``with`` block, then put the old one back."""
        before = self.rules().get(scenario, {}).get(layer)
        self.set_rule(scenario, layer, action)
        try:
            yield
        finally:
            if before is None:
                self.clear_rule(scenario, layer)
            else:
                self.set_rule(scenario, layer, before)
