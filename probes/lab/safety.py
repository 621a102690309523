"""The lab's one safety rule: it never touches an address outside 127.0.0.0/8.

Every place in the lab that binds or connects asks :func:`lab_address` first,
so a wrong rule, a hostile SOCKS client or a typo can never make the lab send
a packet off the machine. The check is a pure function: it is unit-tested
directly, never by trying a real connection.
"""

from __future__ import annotations

import ipaddress

__all__ = ["LAB_NETWORK", "OutsideLabError", "is_lab_address", "lab_address"]

#: The only network the lab may bind to or connect to.
LAB_NETWORK = ipaddress.IPv4Network("127.0.0.0/8")


class OutsideLabError(ValueError):
    """An address outside the lab network was about to be used."""


def is_lab_address(host: str) -> bool:
    """True only for an IPv4 literal inside 127.0.0.0/8 (names are never trusted)."""
    try:
        address = ipaddress.ip_address(host.strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is None:
            return False
        address = mapped
    return address in LAB_NETWORK


def lab_address(host: str) -> str:
    """Return the canonical lab address for ``host`` or raise :class:`OutsideLabError`."""
    if not is_lab_address(host):
        raise OutsideLabError(f"refusing {host!r}: the lab only uses {LAB_NETWORK}")
    address = ipaddress.ip_address(host.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
