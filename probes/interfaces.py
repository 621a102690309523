"""The addresses of a network interface, for a vantage bound to one (``{interface: …}``).

Only the standard library: on Linux the interface's IPv4 address comes from
the ``SIOCGIFADDR`` ioctl and its IPv6 addresses from ``/proc/net/if_inet6``.
Elsewhere there is no portable way in the standard library, and binding to
an interface is refused when the config is read (probes/config/vantages.py).

An IPv6 address is chosen the way a source address is for a global
destination: global scope before site-local and host scope (``::1`` on
``lo``); never link-local (it reaches only its own link), and never one that
is tentative, deprecated or failed duplicate address detection.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import sys
from dataclasses import dataclass

__all__ = ["InterfaceAddresses", "interface_addresses", "interface_exists", "supported"]

_SIOCGIFADDR = 0x8915
_IF_INET6 = "/proc/net/if_inet6"
# /proc/net/if_inet6 scope and flag values (linux/include/net/ipv6.h, if_addr.h)
_SCOPE_RANK = {0x00: 0, 0x40: 1, 0x10: 2}  # global, site-local, host; link-local (0x20) never
_UNUSABLE_FLAGS = 0x08 | 0x20 | 0x40  # IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE


def supported() -> bool:
    """Whether this system's interface addresses can be read (Linux only)."""
    return sys.platform.startswith("linux")


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class InterfaceAddresses:
    """One address per family of an interface, or why there is none."""

    ipv4: str | None
    ipv6: str | None
    problem: str | None = None  # the interface is missing, or cannot be read here


def interface_addresses(name: str) -> InterfaceAddresses:
    """The interface's IPv4 address and best IPv6 address, as it is now."""
    if not supported():
        return InterfaceAddresses(None, None, f"reading interface addresses needs Linux ({name})")
    if not interface_exists(name):
        return InterfaceAddresses(None, None, f"there is no interface {name} on this host")
    return InterfaceAddresses(_ipv4_of(name), _ipv6_of(name))


def _ipv4_of(name: str) -> str | None:
    import fcntl  # POSIX only: imported where it is used (only on Linux)

    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENXIO):
                return None  # no IPv4 address (or the interface just went away)
            raise
    return socket.inet_ntoa(reply[20:24])  # struct ifreq: name[16], sockaddr_in (family, port)


def _ipv6_of(name: str) -> str | None:
    try:
        with open(_IF_INET6, encoding="ascii") as lines:
            rows = [line.split() for line in lines]
    except OSError:
        return None  # IPv6 is disabled in this kernel
    best: tuple[int, str] | None = None
    for row in rows:
        if len(row) != 6 or row[5] != name:
            continue
        scope, flags = int(row[3], 16), int(row[4], 16)
        rank = _SCOPE_RANK.get(scope)
        if rank is None or flags & _UNUSABLE_FLAGS:
            continue
        address = str(ipaddress.IPv6Address(bytes.fromhex(row[0])))
        if best is None or rank < best[0]:
            best = (rank, address)
    return best[1] if best is not None else None
