"""A lean HTTP/1.1 client for one GET on a connection the stages already own.

The wire format is parsed by httptools (llhttp, the parser uvicorn and aiohttp's
own C parser are built on); this module only adds what a measurement needs on
top of it: the request bytes, the bounds a hostile server must not get past
(the response head, each header, the framing between body bytes), the body
decoded (gzip, deflate, br) with the output bounded by the caller, and failures
as :class:`~probes.errors.StageError` with the vocabulary's names.

:class:`ResponseReader` is an :class:`asyncio.Protocol`: it works on any
transport made by a loop's public API (asyncio's, uvloop's, plain or TLS). It
never dials, resolves or closes anything by itself; the HTTP stage
(:mod:`probes.http`) does, and aborts every transport it made.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import httptools
from multidict import CIMultiDict

from probes.errors import StageError, failure_of
from probes.failures import Failure, unknown

try:  # optional: only then does the request offer br (probes.http._accept_encoding)
    import brotli  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - brotli is installed in the test environment
    brotli = None

__all__ = [
    "MAX_FIELD_BYTES",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "BodyDecoder",
    "ResponseHead",
    "ResponseReader",
    "decoder_for",
    "request_bytes",
]

#: The response head (status line, headers; any 1xx heads before it) at most this
#: long: a head that never ends is refused, not held (100 Set-Cookie of 8 KB pass).
MAX_HEAD_BYTES = 1024 * 1024
#: A header name or value, or the status line's reason, at most this long (aiohttp's limit).
MAX_FIELD_BYTES = 8190
#: Header lines in one head at most (aiohttp's limit).
MAX_HEADERS = 32768
#: Bytes on the wire between two pieces of body (chunk sizes, extensions, trailers)
#: at most this many: an endless chunk extension or trailer line is refused.
MAX_FRAMING_BYTES = MAX_HEAD_BYTES
#: Body bytes buffered before reading from the transport pauses (flow control).
_HIGH_WATER = 256 * 1024


@dataclass(slots=True)
class ResponseHead:
    """What came before the body: the status line and every header, in order."""

    status: int
    reason: str
    headers: CIMultiDict[str]
    keep_alive: bool

    @property
    def charset(self) -> str | None:
        """The Content-Type's charset parameter, if any (unquoted, lower case)."""
        content_type = self.headers.get("Content-Type")
        if not content_type:
            return None
        for param in content_type.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset":
                value = value.strip().strip("\"'").strip()
                return value.lower() or None
        return None


def request_bytes(target: str, host: str, headers: dict[str, str]) -> bytes:
    """``GET target HTTP/1.1`` with Host first, then ``headers`` in their order."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Transport(Protocol):
    """What the reader uses of a transport: the public flow-control calls."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool: ...


class ResponseReader(asyncio.Protocol):
    """One response read from a transport: its head, then its body as it arrives.

    Interim (1xx) responses are skipped. Body pieces are the message body (chunked
    framing removed) still content-encoded; ``read()`` gives them in order, then
    b"" at the end, then raises what ended the connection early. What arrived
    before a failure is given first: a page shown before a reset was shown.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self._transport: _Transport | None = None
        self._head_waiter: asyncio.Future[ResponseHead] = self._loop.create_future()
        self._body_waiter: asyncio.Future[None] | None = None
        self._status_reason = ""
        self._raw: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._framing = 0
        self._head: ResponseHead | None = None
        self._interim = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._ended = False  # nothing more will arrive (complete, EOF, lost, error)
        self._error: StageError | None = None
        self._framed = False  # the body's end is announced (Content-Length or chunked)

    # --- what the caller reads -------------------------------------------------

    @property
    def reusable(self) -> bool:
        """The response ended as framed and reading is not paused: the connection may
        carry the next request (what is still buffered of the body is dropped)."""
        return self._complete and not self._paused

    @property
    def complete(self) -> bool:
        """The whole response arrived (its body to the end the framing announced)."""
        return self._complete

    async def head(self) -> ResponseHead:
        """The final response's head; StageError if the connection ended before it."""
        return await self._head_waiter

    async def read(self) -> bytes:
        """The next piece of body (still content-encoded); b"" at its end."""
        while not self._chunks:
            if self._ended:
                if self._error is not None and not self._complete:
                    raise self._error
                return b""
            self._body_waiter = self._loop.create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < _HIGH_WATER // 2 and self._transport is not None:
            self._paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
        return chunk

    # --- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        if self._head is None:
            self._head_bytes += len(data)
        else:
            self._framing += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(StageError(Failure.HTTP_PROTOCOL_ERROR, "the server switched protocols"))
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, StageError):
                self._fail(cause)
            else:
                self._fail(StageError(Failure.HTTP_PROTOCOL_ERROR, f"bad response: {exc}"))
        except httptools.HttpParserError as exc:
            self._fail(StageError(Failure.HTTP_PROTOCOL_ERROR, f"bad response: {exc}"))
        if self._ended:
            return
        if self._head is None and self._head_bytes > MAX_HEAD_BYTES:
            too_long = f"response head over {MAX_HEAD_BYTES} bytes"
            self._fail(StageError(Failure.HTTP_PROTOCOL_ERROR, too_long))
        elif self._head is not None and self._framing > MAX_FRAMING_BYTES:
            self._fail(
                StageError(
                    Failure.HTTP_PROTOCOL_ERROR,
                    f"over {MAX_FRAMING_BYTES} bytes of chunk framing or trailers without body",
                )
            )

    def eof_received(self) -> bool:
        self._end(None)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)
        self._transport = None

    # --- httptools' callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        if self._ended:
            return  # a message after the one read (pipelined, unsolicited): not read
        self._raw = []
        self._status_reason = ""
        self._interim = False

    def on_status(self, reason: bytes) -> None:
        if self._ended:
            return  # a message after the one read (pipelined, unsolicited): not read
        self._status_reason += reason.decode("utf-8", "surrogateescape")
        if len(self._status_reason) > MAX_FIELD_BYTES:
            raise StageError(Failure.HTTP_PROTOCOL_ERROR, "status line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._ended:
            return  # a message after the one read (pipelined, unsolicited): not read
        if self._head is not None:
            return  # a trailer: not part of the head that was recorded
        if len(name) > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES:
            raise StageError(
                Failure.HTTP_PROTOCOL_ERROR,
                f"header {name[:64]!r} longer than {MAX_FIELD_BYTES} bytes",
            )
        if len(self._raw) >= MAX_HEADERS:
            raise StageError(Failure.HTTP_PROTOCOL_ERROR, f"more than {MAX_HEADERS} headers")
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        if self._ended:
            return  # a message after the one read (pipelined, unsolicited): not read
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: the real one follows
            return
        headers: CIMultiDict[str] = CIMultiDict(
            (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
            for n, v in self._raw
        )
        self._raw = []
        self._framed = "Content-Length" in headers or "chunked" in headers.get(
            "Transfer-Encoding", ""
        ).lower()
        self._head = ResponseHead(
            status, self._status_reason, headers, self._parser.should_keep_alive()
        )
        self._framing = 0
        if not self._head_waiter.done():
            self._head_waiter.set_result(self._head)

    def on_body(self, body: bytes) -> None:
        if self._ended:
            return  # a message after the one read (pipelined, unsolicited): not read
        self._framing = 0
        if not body:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if not self._paused and self._buffered >= _HIGH_WATER and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_chunk_header(self) -> None:
        if self._ended:
            return  # a message after the one read (pipelined, unsolicited): not read
        self._framing = 0

    def on_message_complete(self) -> None:
        if self._ended:
            return  # a message after the one read (pipelined, unsolicited): not read
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._ended = True
        self._wake()

    # --- ends ------------------------------------------------------------------

    def _end(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        if exc is not None:
            self._fail(StageError(failure_of(exc), str(exc) or type(exc).__name__))
        elif self._head is None:
            self._fail(StageError(Failure.EOF, "server disconnected before the response head"))
        elif not self._framed:
            self.on_message_complete()  # close-delimited: the end of the connection ends it
        else:
            self._fail(StageError(Failure.EOF, "body ended before its announced length"))

    def _fail(self, error: StageError) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        if not self._head_waiter.done():
            self._head_waiter.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


# --- content decoding ----------------------------------------------------------


class BodyDecoder:
    """The identity: body bytes as they came."""

    def feed(self, data: bytes, limit: int) -> bytes:
        """Decoded bytes of ``data``: at most about ``limit`` more (the caller stops there)."""
        return data

    def flush(self) -> bytes:
        return b""


class _ZlibDecoder(BodyDecoder):
    """gzip, or deflate (zlib-wrapped as the RFC says, raw as some servers send it)."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._zlib: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None

    def feed(self, data: bytes, limit: int) -> bytes:
        if not data:
            return b""
        if self._zlib is None:  # deflate: the first byte tells a zlib header from raw
            raw = data[0] & 0x0F != 8
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        try:
            # at most ``limit`` out; the rest of the input waits in unconsumed_tail,
            # never decompressed: the caller stops at its cap
            return bytes(self._zlib.decompress(data, max(1, limit)))
        except zlib.error as exc:
            raise _cannot_decode(self._encoding, exc) from exc

    def flush(self) -> bytes:
        if self._zlib is None or self._zlib.unconsumed_tail:
            return b""
        try:
            return bytes(self._zlib.flush())
        except zlib.error as exc:
            raise _cannot_decode(self._encoding, exc) from exc


class _BrotliDecoder(BodyDecoder):
    #: input fed at a time where brotli cannot bound its output (old versions)
    _SLICE = 1024

    def __init__(self) -> None:
        assert brotli is not None
        self._brotli: Any = brotli.Decompressor()
        self._bounded = True

    def feed(self, data: bytes, limit: int) -> bytes:
        try:
            if self._bounded:
                try:
                    return bytes(self._brotli.process(data, output_buffer_limit=max(1, limit)))
                except TypeError:  # a brotli without output_buffer_limit
                    self._bounded = False
            out = bytearray()
            for start in range(0, len(data), self._SLICE):
                out += self._brotli.process(data[start : start + self._SLICE])
                if len(out) >= limit:
                    break
            return bytes(out)
        except brotli.error as exc:
            raise _cannot_decode("br", exc) from exc


def _cannot_decode(encoding: str, exc: Exception) -> StageError:
    # lifeline's own decode failure, named as before (aiohttp's ContentEncodingError)
    return StageError(unknown(f"cannot decode content-encoding {encoding}: {exc}"))


def decoder_for(head: ResponseHead) -> BodyDecoder:
    """The decoder of the response's Content-Encoding (one of gzip, deflate, br), else
    the identity: other or stacked encodings are kept as they came."""
    encoding = (head.headers.get("Content-Encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return _ZlibDecoder("gzip")
    if encoding == "deflate":
        return _ZlibDecoder("deflate")
    if encoding == "br" and brotli is not None:
        return _BrotliDecoder()
    return BodyDecoder()
