"""What a measurement saw, stage by stage, and what it was judged to be.

A :class:`Measurement` gathers the stage records of one target from one
vantage (``stages``: stage name -> record, the stages of :mod:`probes.stages`
that ran); a :class:`Result` adds the verdict and its reason. Records
round-trip through plain JSON (``to_dict`` / ``from_dict``) so stored logs can
be replayed and re-classified. The records of the built-in stages are in
:mod:`probes.evidence` and re-exported here.

One shape wherever a measurement appears: a result's own observations and
the control's it was judged against both keep their stage records under
``stages``. Records of schema ``lifeline.measurement/1``, whose control kept
them flat (``control.dns``, ``control.tcp``, ...), still load.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, Union

from probes.evidence import (
    DNSAnswer,
    DNSQuery,
    DNSResponse,
    DNSStage,
    HTTPHop,
    HTTPStage,
    StageRecord,
    TCPAttempt,
    TCPStage,
    TLSCertificate,
    TLSStage,
)
from probes.stages import STAGES
from probes.verdicts import Verdict

__all__ = [
    "SCHEMA",
    "DNSAnswer",
    "DNSQuery",
    "DNSResponse",
    "DNSStage",
    "EncodedRecord",
    "HTTPHop",
    "HTTPStage",
    "JudgedWith",
    "Measurement",
    "Result",
    "StageRecord",
    "TCPAttempt",
    "TCPStage",
    "TLSCertificate",
    "TLSStage",
    "Verdict",
    "record_json",
]

#: Version of the record format; bumped when a field changes meaning or shape.
#: /2: the control's stage records sit under ``control.stages`` as the result's
#: own do (under /1 they were flat in ``control``); both load.
SCHEMA = "lifeline.measurement/2"

_R = TypeVar("_R")


# --- Measurement and result --------------------------------------------------


@dataclass(slots=True, init=False)
class Measurement:
    """One target from one vantage at one time: the observations of every stage.

    ``stages`` holds the record of each stage that ran, by stage name; a stage
    that did not run (not applicable to the scheme, or an earlier stage
    failed) is absent. Typed code reads a stage with :meth:`record`
    (``m.record(DNSStage)``); ``m.dns`` and ``m.dns = ...`` also work, untyped.
    """

    target: str
    vantage: str
    time: str  # RFC 3339 UTC, when the measurement started
    duration_s: float
    service: str
    stages: dict[str, Any]
    error: str | None  # the measurement itself could not be made (verdict `error`)
    # what the target asked to be judged on (from the config), kept so that a
    # stored log can be re-classified without it
    expect_status: list[int]
    throughput: bool
    # set when a remote agent measured it (docs/agents.md): who, which version,
    # and how far the agent's clock (which dated ``time``) was ahead of the hub's
    agent: str | None
    agent_version: str | None
    clock_skew_s: float | None
    # where the vantage is, as its config says (``country``, ``asn``, ``network_name``):
    # kept in the record so exports never look it up in a config
    country: str | None
    asn: int | None
    network_name: str | None

    def __init__(
        self,
        target: str,
        vantage: str,
        time: str,
        duration_s: float = 0.0,
        service: str = "",
        *,
        stages: dict[str, Any] | None = None,
        error: str | None = None,
        expect_status: list[int] | None = None,
        throughput: bool = False,
        agent: str | None = None,
        agent_version: str | None = None,
        clock_skew_s: float | None = None,
        country: str | None = None,
        asn: int | None = None,
        network_name: str | None = None,
        **records: Any,
    ) -> None:
        self.target = target
        self.vantage = vantage
        self.time = time
        self.duration_s = duration_s
        self.service = service
        self.stages = dict(stages) if stages else {}
        for name, rec in records.items():  # Measurement(dns=..., tcp=...)
            if name not in STAGES:
                raise TypeError(f"Measurement() got an unexpected keyword argument {name!r}")
            if rec is not None:
                self.stages[name] = rec
        self.error = error
        self.expect_status = list(expect_status) if expect_status else []
        self.throughput = throughput
        self.agent = agent
        self.agent_version = agent_version
        self.clock_skew_s = clock_skew_s
        self.country = country
        self.asn = asn
        self.network_name = network_name

    if not TYPE_CHECKING:  # at run time only: typed code reads m.record(DNSStage)

        def __getattr__(self, name: str) -> Any:
            """``m.dns``: the record of the stage of that name, or None when it did not run."""
            if name in STAGES:
                return self.stages.get(name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

        def __setattr__(self, name: str, value: Any) -> None:
            """``m.dns = record`` keeps the record under ``stages`` (None removes it)."""
            if name in STAGES:
                if value is None:
                    self.stages.pop(name, None)
                else:
                    self.stages[name] = value
            else:
                object.__setattr__(self, name, value)

    def record(self, kind: type[_R]) -> _R | None:
        """The record of the stage whose record type is ``kind``, or None if it did not run."""
        found: _R | None = self.stages.get(STAGES.of_record(kind).name)
        return found

    def first_failure(self) -> tuple[str, str] | None:
        """(stage, failure) of the first stage that failed, or None."""
        stages = self.stages
        for name in STAGES.names:
            rec = stages.get(name)
            if rec is not None and not rec.ok:
                return name, rec.failure or "unknown_failure: no detail"
        return None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.first_failure() is None

    def network(self) -> dict[str, Any] | None:
        """The record's ``network`` object, or None when the vantage said nothing of it."""
        if self.country is None and self.asn is None and self.network_name is None:
            return None
        return {"country": self.country, "asn": self.asn, "name": self.network_name}

    def to_dict(self) -> dict[str, Any]:
        out = {
            "target": self.target,
            "vantage": self.vantage,
            "time": self.time,
            "duration_s": self.duration_s,
            "service": self.service,
            "stages": _stages_dict(self.stages),
            "error": self.error,
            "expect_status": list(self.expect_status),
            "throughput": self.throughput,
            "agent": self.agent,
            "agent_version": self.agent_version,
            "clock_skew_s": self.clock_skew_s,
        }
        network = self.network()
        if network is not None:  # only when the vantage says it: other records keep their shape
            out["network"] = network
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """A measurement from its dict: stage records under ``stages`` or, as under
        schema /1's control, flat beside the other keys. Unknown keys are ignored."""
        nested = data.get("stages")
        source = nested if isinstance(nested, dict) else data
        stages: dict[str, Any] = {}
        for stage in STAGES:
            value = source.get(stage.name)
            if isinstance(value, dict):
                stages[stage.name] = _from_dict(stage.record, value)
        return cls(
            data["target"],
            data["vantage"],
            data["time"],
            data.get("duration_s", 0.0),
            data.get("service", ""),
            stages=stages,
            error=data.get("error"),
            expect_status=data.get("expect_status") or [],
            throughput=bool(data.get("throughput", False)),
            agent=data.get("agent"),
            agent_version=data.get("agent_version"),
            clock_skew_s=data.get("clock_skew_s"),
            **_network(data.get("network")),
        )


#: How much of the control's body head a record's copy of the control keeps (characters).
#: The control vantage's own record keeps its whole head; the copy in every other record
#: is read for the comparison (status, title, length, headers), never for fingerprints,
#: so repeating 64 KiB of it in each would only grow the store.
CONTROL_BODY_HEAD_CHARS = 2048


def _control_dict(control: Measurement) -> dict[str, Any]:
    out = control.to_dict()
    http = out["stages"].get("http")
    head = http.get("body_head") if isinstance(http, dict) else None
    if isinstance(head, str) and len(head) > CONTROL_BODY_HEAD_CHARS:
        http["body_head"] = head[:CONTROL_BODY_HEAD_CHARS]
    return out


def _network(data: Any) -> dict[str, Any]:
    """The keyword arguments of a record's ``network`` object (none when absent)."""
    if not isinstance(data, dict):
        return {}
    return {"country": data.get("country"), "asn": data.get("asn"),
            "network_name": data.get("name")}  # fmt: skip


def _stages_dict(stages: dict[str, Any]) -> dict[str, Any]:
    """Every stage of the table, in order: its record's dict, or None when it did not run."""
    out: dict[str, Any] = {}
    for name in STAGES.names:
        rec = stages.get(name)
        out[name] = _to_dict(rec) if rec is not None else None
    return out


@dataclass(frozen=True, slots=True)
class JudgedWith:
    """What a verdict was judged with, kept in the record so that a log re-judged without
    its config gives the same verdicts (`lifeline classify`, docs/data.md).

    ``fingerprints`` is the digest of the whole fingerprint set (built-in and the
    config's); the config's own fingerprints are written once beside the log, in
    ``fingerprints-<digest>.json``, rather than in every record.
    """

    fingerprints: str  # "sha256:<hex>"
    throttle_ratio: float
    control: str | None  # the control vantage's name, if the config had one

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprints": self.fingerprints,
            "throttle_ratio": self.throttle_ratio,
            "control": self.control,
        }

    @classmethod
    def from_dict(cls, data: Any) -> JudgedWith | None:
        """The block of a record, or None when it is absent or not one (older records)."""
        if not isinstance(data, dict):
            return None
        digest, ratio, control = (
            data.get("fingerprints"), data.get("throttle_ratio"), data.get("control"),
        )  # fmt: skip
        if not isinstance(digest, str) or not isinstance(ratio, int | float):
            return None
        return cls(digest, float(ratio), control if isinstance(control, str) else None)


@dataclass(slots=True)
class Result:
    """A measurement with its verdict: one line of `check --format jsonl`."""

    measurement: Measurement
    verdict: Verdict
    reason: str
    control: Measurement | None = None  # the control's measurement it was judged against
    version: str = ""  # lifeline version that classified it
    # set on records imported from OONI (`lifeline import ooni`, docs/ooni.md): who
    # measured, where, and OONI's own conclusion; absent on lifeline's own records
    ooni: dict[str, Any] | None = None
    judged_with: JudgedWith | None = None  # absent in records older than it

    def to_dict(self) -> dict[str, Any]:
        m = self.measurement
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "service": m.service,
            "target": m.target,
            "vantage": m.vantage,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "time": m.time,
            "duration_s": m.duration_s,
            "error": m.error,
            "expect_status": list(m.expect_status),
            "throughput": m.throughput,
            "stages": _stages_dict(m.stages),
            "lifeline_version": self.version,
        }
        if m.agent is not None:  # only on agents' measurements: other records keep their shape
            out.update(agent=m.agent, agent_version=m.agent_version, clock_skew_s=m.clock_skew_s)
        network = m.network()
        if network is not None:
            out["network"] = network
        out["control"] = _control_dict(self.control) if self.control is not None else None
        if self.ooni is not None:
            out["ooni"] = dict(self.ooni)
        if self.judged_with is not None:
            out["judged_with"] = self.judged_with.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        m = Measurement.from_dict({**data, "stages": data.get("stages") or {}})
        ctl = data.get("control")
        return cls(
            measurement=m,
            verdict=Verdict(data["verdict"]),
            reason=data.get("reason", ""),
            control=Measurement.from_dict(ctl) if ctl else None,
            version=data.get("lifeline_version", ""),
            ooni=data["ooni"] if isinstance(data.get("ooni"), dict) else None,
            judged_with=JudgedWith.from_dict(data.get("judged_with")),
        )


# --- (de)serialisation helpers ------------------------------------------------

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _FIELD_NAMES[cls] = names
    return names


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _to_dict(obj: Any) -> Any:
    """Plain JSON-able data of a record (faster than dataclasses.asdict: no deep copies)."""
    cls = type(obj)
    if cls in _SCALARS:
        return obj
    names = _FIELD_NAMES.get(cls)  # a record class seen before: the common case
    if names is not None:
        return {name: _to_dict(getattr(obj, name)) for name in names}
    if cls is list:
        return [_to_dict(x) for x in obj]
    if cls is dict:
        return {k: _to_dict(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {name: _to_dict(getattr(obj, name)) for name in _field_names(cls)}
    return obj


#: Per record class: (its field names, (field, nested record class) pairs), made once.
_PLANS: dict[type, tuple[frozenset[str], tuple[tuple[str, type], ...]]] = {}


def _from_dict(cls: type[_R], data: dict[str, Any]) -> _R:
    """Build a record from its dict; unknown keys are ignored (forward compatible)."""
    plan = _PLANS.get(cls)
    if plan is None:
        found = _nested_records(cls)  # type: ignore[arg-type]  # a class is hashable
        nested = tuple((key, sub) for key, sub in found.items() if sub is not None)
        plan = _PLANS[cls] = (frozenset(_field_names(cls)), nested)
    names, nested = plan
    kwargs = {key: value for key, value in data.items() if key in names}
    for key, sub in nested:
        value = kwargs.get(key)
        if value is not None:
            if isinstance(value, list):
                kwargs[key] = [_from_dict(sub, v) for v in value]
            else:
                kwargs[key] = _from_dict(sub, value)
    return cls(**kwargs)


@functools.cache
def _nested_records(cls: type) -> dict[str, type | None]:
    """Field name -> the record class it holds (alone, optional or in a list), else None.

    Read from the field annotations, so a stage's record type needs no
    registration to round-trip: nested records are found by their types.
    """
    hints = typing.get_type_hints(cls)
    out: dict[str, type | None] = {}
    for f in dataclasses.fields(cls):
        out[f.name] = _record_in(hints.get(f.name))
    return out


def _record_in(hint: Any) -> type | None:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType, list):
        for arg in typing.get_args(hint):
            found = _record_in(arg)
            if found is not None:
                return found
    return None


class EncodedRecord(dict[str, Any]):
    """A record (``Result.to_dict()``) that carries its own JSON text, made once.

    serve writes each record to the probe log and, when published, to the
    store, both as the same compact JSON: encoding it once halves the
    JSON work of every measurement. Treat it as read-only once made.
    """

    __slots__ = ("json",)

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record)
        self.json = _compact(record)


def record_json(record: dict[str, Any]) -> str:
    """The compact JSON of a record (UTF-8 text, no spaces): the log's and the store's form."""
    text = getattr(record, "json", None)
    return text if isinstance(text, str) else _compact(record)


def _compact(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
