"""Hostile servers: what a censor's middlebox (or a broken network) may answer instead.

lifeline measures from networks run by adversaries, so every parser we feed
from the wire must end a measurement with a clear failure string, in bounded
time and memory. This package is the corpus that says so: each :class:`Case`
names one hostile behaviour (a decompression bomb, a slowloris, a redirect to
the cloud metadata address, a DNS compression-pointer loop, a SOCKS proxy
that lies, ...) and the outcome a correct measurement records.

Everything runs on 127.0.0.0/8, on ports the kernel picks. Servers stream
what they send (100 MB of headers are never held in memory here) and every
connection is bounded (:mod:`probes.lab.netutil`). :class:`HostileCorpus`
runs on the caller's loop; :class:`HostileThread` runs it in a background
thread and writes a lifeline config that measures the whole corpus.
"""

from tests.hostile.cases import (
    CASES,
    DIRECT_VANTAGE,
    MAX_BODY_BYTES,
    METADATA_ADDRESS,
    PRIVATE_ADDRESS,
    PROXIED_SERVICE,
    TIMEOUT_S,
    ZONE,
    Case,
    Expect,
    Kind,
    available,
    case_named,
)
from tests.hostile.corpus import HostileCorpus, HostileThread, RecordingNet

__all__ = [
    "CASES",
    "DIRECT_VANTAGE",
    "MAX_BODY_BYTES",
    "METADATA_ADDRESS",
    "PRIVATE_ADDRESS",
    "PROXIED_SERVICE",
    "TIMEOUT_S",
    "ZONE",
    "Case",
    "Expect",
    "HostileCorpus",
    "HostileThread",
    "Kind",
    "RecordingNet",
    "available",
    "case_named",
]
