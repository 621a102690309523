"""The HTTP stage's own HTTP/1.1 client (probes/http1.py) against servers that write the
wire by hand: every framing a server may use, bombs in every encoding, a head in pieces,
an answer before the request was read, interim responses; every socket closed after."""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import os
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from probes.failures import Failure
from probes.measure import measure
from probes.model import ResolverSpec, Target, Vantage
from probes.net import VantageNet
from probes.records import HTTPStage, Measurement
from tests.fakes import LOOPBACK, FakeDNS

pytestmark = pytest.mark.both_loops

HOST = "wire.lifeline.test"
CAP = 256 * 1024
PAGE = b"<html><head><title>By hand</title></head><body>" + b"wire " * 2000 + b"</body></html>"

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def _open_fds() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


@asynccontextmanager
async def _server(script: Script) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await script(reader, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def _measure(script: Script, path: str = "/") -> HTTPStage:
    dns = await FakeDNS({HOST: ["A 127.0.0.1"]}).start()
    net = VantageNet(Vantage("v", ResolverSpec("udp", LOOPBACK, dns.port)), ca_file=None)
    try:
        async with _server(script) as port:
            before = _open_fds()
            m: Measurement = await measure(
                Target.parse(f"http://{HOST}:{port}{path}"), net.vantage, net,
                timeout=10.0, max_body_bytes=CAP,
            )  # fmt: skip
            await asyncio.sleep(0)  # let the transports' close callbacks run
            assert _open_fds() <= before, "a socket of the measurement was left open"
    finally:
        await net.aclose()
        await dns.close()
    http = m.record(HTTPStage)
    assert http is not None
    return http


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_chunked_body_with_extensions_and_trailers_is_the_page() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n"
                b"Trailer: X-Checksum\r\n\r\n")  # fmt: skip
        for start in range(0, len(PAGE), 1000):
            piece = PAGE[start : start + 1000]
            w.write(f"{len(piece):x};name=value;other\r\n".encode() + piece + b"\r\n")
        w.write(b"0;last\r\nX-Checksum: abc\r\n\r\n")

    http = await _measure(script)
    assert http.ok and http.status == 200 and not http.body_truncated
    assert http.body_length == len(PAGE) and http.body_sha256 == _sha(PAGE)
    assert http.title == "By hand"
    assert "x-checksum" not in http.headers  # a trailer is not part of the head shown


async def test_a_close_delimited_body_ends_with_the_connection() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n")
        for start in range(0, len(PAGE), 3000):
            w.write(PAGE[start : start + 3000])
            await w.drain()

    http = await _measure(script)
    assert http.ok and http.body_length == len(PAGE) and http.body_sha256 == _sha(PAGE)
    assert not http.body_truncated


async def test_a_body_shorter_than_its_length_is_an_eof() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + PAGE[:500])

    http = await _measure(script)
    assert not http.ok and http.failure == Failure.EOF and http.request_sent


def _bomb(encoding: str) -> bytes:
    zeros = b"\0" * (16 * 1024 * 1024)
    if encoding == "gzip":
        return gzip.compress(zeros, 9)
    if encoding == "deflate":
        return zlib.compress(zeros, 9)
    if encoding == "raw-deflate":  # deflate without its zlib header, as some servers send
        packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return packer.compress(zeros) + packer.flush()
    import brotli  # type: ignore[import-untyped]

    return bytes(brotli.compress(zeros, quality=5))


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "br"])
async def test_a_chunked_bomb_in_each_encoding_stops_at_the_cap(encoding: str) -> None:
    if encoding == "br":
        pytest.importorskip("brotli")
    bomb = _bomb(encoding)
    name = "deflate" if encoding == "raw-deflate" else encoding

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(r)
        w.write(f"HTTP/1.1 200 OK\r\nContent-Encoding: {name}\r\n".encode()
                + b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        for start in range(0, len(bomb), 4096):
            piece = bomb[start : start + 4096]
            w.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await w.drain()
        w.write(b"0\r\n\r\n")

    http = await _measure(script)
    assert http.ok and http.body_truncated
    assert http.body_length == CAP and http.body_sha256 == _sha(b"\0" * CAP)


async def test_a_head_split_across_many_reads_is_read_whole() -> None:
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nX-Split: yes\r\n"
            + b"Content-Length: " + str(len(PAGE)).encode() + b"\r\n\r\n")  # fmt: skip

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(r)
        for i in range(len(head)):
            w.write(head[i : i + 1])
            await w.drain()
            await asyncio.sleep(0.001)  # each byte its own segment
        w.write(PAGE)

    http = await _measure(script)
    assert http.ok and http.status == 200 and http.headers["x-split"] == "yes"
    assert http.body_sha256 == _sha(PAGE)


async def test_a_response_before_the_request_was_read_is_recorded() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 11\r\n\r\nnot for you")
        await w.drain()
        await _request(r)  # read only after answering, then hang up

    http = await _measure(script)
    assert http.ok and http.status == 403 and http.body_length == 11


async def test_interim_responses_are_skipped_for_the_final_one() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(r)
        w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(PAGE)).encode() + b"\r\n\r\n")
        w.write(PAGE)

    http = await _measure(script)
    assert http.ok and http.status == 200 and http.title == "By hand"
    assert "link" not in http.headers


async def test_a_reset_after_part_of_the_page_keeps_what_was_shown() -> None:
    page = b"<html><head><title>Partial</title></head><body>" + b"x" * 3000

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + page)
        await w.drain()
        await asyncio.sleep(0.05)
        linger = struct.pack("ii", 1, 0)  # SO_LINGER 0: the close sends a reset
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        w.transport.abort()

    http = await _measure(script)
    assert not http.ok and http.failure == Failure.CONNECTION_RESET and http.request_sent
    assert http.body_signatures == []  # the page's start was scanned before the reset


async def test_a_measurement_cancelled_mid_body_leaves_no_socket_open() -> None:
    head_sent = asyncio.Event()

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n<html>")
        await w.drain()
        head_sent.set()
        await r.read()  # until the client goes away

    dns = await FakeDNS({HOST: ["A 127.0.0.1"]}).start()
    net = VantageNet(Vantage("v", ResolverSpec("udp", LOOPBACK, dns.port)), ca_file=None)
    try:
        async with _server(script) as port:
            before = _open_fds()
            task = asyncio.create_task(
                measure(Target.parse(f"http://{HOST}:{port}/"), net.vantage, net,
                        timeout=30.0, max_body_bytes=CAP)
            )  # fmt: skip
            await head_sent.wait()
            await asyncio.sleep(0.05)  # the head is in; the body is being waited for
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0)
            assert _open_fds() <= before, "a cancelled measurement left a socket open"
    finally:
        await net.aclose()
        await dns.close()
