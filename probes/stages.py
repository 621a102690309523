"""The stage table: every stage lifeline measures, in measuring order, in one place.

A row says everything the rest of the code needs to know about a stage: its
wire name (the key under ``stages`` in a record, the ``stage`` label of the
metrics), the label people read, the record type it returns, the function
that measures it, the ``*_blocked`` verdict the classifier names when it is the
first stage to fail, and the target schemes that run it. Records, the
classifier's stage walk, the metrics, the page, the export and the JSON
Schema's ``stages`` object all derive from this table, so a new stage is its
own module plus one row here (docs/architecture.md, "Adding a stage").

The table can be extended at run time (:meth:`StageTable.extended`), which is
how the tests show that a stage defined in a test flows through a
measurement, its JSON round trip and the classifier.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from probes.dns import dns_stage
from probes.evidence import DNSStage, HTTPStage, TCPStage, TLSStage
from probes.http import http_stage
from probes.net import StageContext
from probes.tcp import tcp_stage
from probes.tls import tls_stage
from probes.verdicts import Verdict

__all__ = ["STAGES", "Stage", "StageFn", "StageTable"]

StageFn = Callable[[StageContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Stage:
    """One row of the table."""

    name: str  # wire name: record key, metric label, Target scheme's stage list
    label: str  # what people read ("DNS", "TLS")
    record: type[Any]  # the record class ``run`` returns (a StageRecord)
    run: StageFn
    verdict: Verdict  # named when this is the first stage to fail where the control's passed
    schemes: frozenset[str]  # target schemes that run it


class StageTable:
    """The ordered rows, with the lookups derived from them."""

    def __init__(self, rows: tuple[Stage, ...]) -> None:
        self._set(rows)

    def _set(self, rows: tuple[Stage, ...]) -> None:
        names = [s.name for s in rows]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        self.rows = rows
        self.names: tuple[str, ...] = tuple(names)
        self._by_name = {s.name: s for s in rows}
        self._by_record = {s.record: s for s in rows}
        self._by_scheme: dict[str, tuple[Stage, ...]] = {}

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Stage:
        return self._by_name[name]

    def get(self, name: str) -> Stage | None:
        return self._by_name.get(name)

    def of_record(self, kind: type[Any]) -> Stage:
        """The row whose record type is ``kind`` (KeyError for a type no stage returns)."""
        return self._by_record[kind]

    def for_scheme(self, scheme: str) -> tuple[Stage, ...]:
        """The stages a target of ``scheme`` runs, in order."""
        found = self._by_scheme.get(scheme)
        if found is None:
            found = self._by_scheme[scheme] = tuple(s for s in self.rows if scheme in s.schemes)
        return found

    def last_for_scheme(self, scheme: str) -> Stage | None:
        """The last stage a target of ``scheme`` runs (its measurement is complete after it)."""
        rows = self.for_scheme(scheme)
        return rows[-1] if rows else None

    @contextmanager
    def extended(self, stage: Stage, *, after: str | None = None) -> Iterator[Stage]:
        """The table with ``stage`` added (after ``after``, else last) for the ``with`` block."""
        before = self.rows
        at = len(before) if after is None else self.names.index(after) + 1
        self._set((*before[:at], stage, *before[at:]))
        try:
            yield stage
        finally:
            self._set(before)


#: Target schemes, by the stages they run.
_ALL = frozenset({"https", "http", "tls", "tcp", "dns"})
_CONNECTING = _ALL - {"dns"}
_TLS = frozenset({"https", "tls"})
_WEB = frozenset({"https", "http"})

#: Every stage, in measuring order. A target's scheme picks its rows.
STAGES = StageTable(
    (
        Stage("dns", "DNS", DNSStage, dns_stage, Verdict.DNS_BLOCKED, _ALL),
        Stage("tcp", "TCP", TCPStage, tcp_stage, Verdict.TCP_BLOCKED, _CONNECTING),
        Stage("tls", "TLS", TLSStage, tls_stage, Verdict.TLS_BLOCKED, _TLS),
        Stage("http", "HTTP", HTTPStage, http_stage, Verdict.HTTP_BLOCKED, _WEB),
    )
)
