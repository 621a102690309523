"""Reading the first bytes a client sends: the SNI of a TLS ClientHello, the Host of a request.

This is what a censor's DPI box looks at. Both parsers are bounded (they only
look at the bytes given, never past a length field's end) and defensive: any
malformed input yields None, never an exception.
"""

from __future__ import annotations

__all__ = ["http_host", "is_tls_record", "sni", "tls_record_length"]

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_EXT_SERVER_NAME = 0x0000
_HOST_NAME = 0x00
_MAX_HEAD = 16384


class _Cursor:
    """Reads big-endian fields from a slice; raises ValueError on any overrun."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else min(end, len(data))

    def take(self, count: int) -> bytes:
        if count < 0 or self._pos + count > self._end:
            raise ValueError("truncated")
        chunk = self._data[self._pos : self._pos + count]
        self._pos += count
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def sub(self, length_size: int) -> _Cursor:
        """A cursor over the next length-prefixed block, skipping past it here."""
        length = self.number(length_size)
        start = self._pos
        self.take(length)
        return _Cursor(self._data, start, start + length)

    def limit(self, count: int) -> _Cursor:
        """A cursor over the next ``count`` bytes, or fewer when the data ends first."""
        start = self._pos
        self._pos = min(self._pos + max(count, 0), self._end)
        return _Cursor(self._data, start, self._pos)

    def rest(self) -> bytes:
        return self.take(self.left)

    @property
    def left(self) -> int:
        return self._end - self._pos


def is_tls_record(data: bytes) -> bool:
    return len(data) >= 3 and data[0] == _HANDSHAKE and data[1] == 0x03


def tls_record_length(data: bytes) -> int | None:
    """Bytes needed for the whole first record (header included), once its header is in."""
    if len(data) < 5 or not is_tls_record(data):
        return None
    return 5 + int.from_bytes(data[3:5], "big")


def sni(data: bytes) -> str | None:
    """The server_name of the ClientHello at the start of ``data``, if any."""
    try:
        return _parse_sni(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _parse_sni(data: bytes) -> str | None:
    record = _Cursor(data)
    if record.number(1) != _HANDSHAKE:
        return None
    record.take(2)  # legacy record version
    fragment = record.limit(record.number(2))
    if fragment.number(1) != _CLIENT_HELLO:
        return None
    # A hello may continue in a later record: parse what this one holds.
    hello = fragment.limit(fragment.number(3))
    hello.take(2 + 32)  # client_version, random
    hello.sub(1)  # session id
    hello.sub(2)  # cipher suites
    hello.sub(1)  # compression methods
    if hello.left == 0:
        return None  # no extensions at all
    extensions = hello.sub(2)
    while extensions.left >= 4:
        kind = extensions.number(2)
        content = extensions.sub(2)
        if kind != _EXT_SERVER_NAME:
            continue
        names = content.sub(2)
        while names.left >= 3:
            name_type = names.number(1)
            name = names.sub(2).rest()
            if name_type == _HOST_NAME and name:
                return name.decode("ascii").lower().rstrip(".")
        return None
    return None


def http_host(data: bytes) -> str | None:
    """The Host header of a plaintext HTTP/1.x request head at the start of ``data``."""
    head = data[:_MAX_HEAD]
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        head = head[:end]
    lines = head.split(b"\r\n")
    if not lines or b" HTTP/1." not in lines[0]:
        return None
    for line in lines[1:]:
        field, sep, value = line.partition(b":")
        if sep and field.strip().lower() == b"host":
            try:
                host = value.strip().decode("ascii").lower()
            except UnicodeDecodeError:
                return None
            if host.startswith("["):
                return host.split("]", 1)[0] + "]"
            return host.rsplit(":", 1)[0].rstrip(".") or None
    return None
