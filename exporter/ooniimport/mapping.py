"""One OONI measurement judged as a lifeline record, and every measurement of files."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from probes.judge import JudgingContext
from probes.records import Measurement, Result

from .control import CONTROL_VANTAGE, control_measurement
from .fields import asn_of, service_of, time_of, vantage_of
from .probe import probe_measurement
from .read import Skipped, read_file


@dataclass(slots=True)
class Imported:
    """One OONI measurement judged by lifeline: the record, and where it came from."""

    source: str  # "FILE" or "FILE:N" (line N of a JSONL file)
    record: dict[str, Any]  # Result.to_dict() with its `ooni` block

    @property
    def verdict(self) -> str:
        return str(self.record["verdict"])


def to_measurements(m: dict[str, Any]) -> tuple[Measurement, Measurement | None]:
    """The probe's measurement and the test helper's (None without a control) of one OONI one."""
    url = str(m["input"]).strip()
    runtime = m.get("test_runtime")
    base: dict[str, Any] = {
        "target": url,
        "vantage": vantage_of(m),
        "time": time_of(m.get("measurement_start_time")),
        "duration_s": float(runtime) if isinstance(runtime, (int, float)) and runtime >= 0 else 0.0,
        "service": service_of(url),
    }
    tk = m.get("test_keys")
    if not isinstance(tk, dict):
        probe = Measurement(**base, error="the OONI measurement has no test_keys")
        control = None
    else:
        probe, control = probe_measurement(m, tk, base), control_measurement(m, tk, base)
    # the probe's network, as OONI says it (the test helper's is not in the record)
    cc = str(m.get("probe_cc") or "").upper()
    probe.country = cc if re.fullmatch(r"[A-Z]{2}", cc) and cc != "ZZ" else None
    number = int(asn_of(m.get("probe_asn"))[2:])
    probe.asn = number if 0 < number < 2**32 else None
    name = m.get("probe_network_name")
    probe.network_name = name if isinstance(name, str) and name else None
    return probe, control


def ooni_block(m: dict[str, Any]) -> dict[str, Any]:
    """Who measured, where, and what OONI itself concluded."""
    keys = m.get("test_keys")
    tk: dict[str, Any] = keys if isinstance(keys, dict) else {}
    blocking = tk.get("blocking")
    accessible = tk.get("accessible")
    return {
        "report_id": m.get("report_id") or None,
        "measurement_uid": m.get("measurement_uid") or None,
        "input": m.get("input"),
        "probe_cc": m.get("probe_cc") or None,
        "probe_asn": asn_of(m.get("probe_asn")) if m.get("probe_asn") is not None else None,
        "test_version": m.get("test_version") or None,
        "blocking": blocking if isinstance(blocking, (str, bool)) else None,
        "accessible": accessible if isinstance(accessible, bool) else None,
    }


def judge(m: dict[str, Any], judging: JudgingContext | None = None) -> dict[str, Any]:
    """One OONI measurement as a lifeline record (``Result.to_dict()`` plus its ``ooni`` block)."""
    judging = judging or JudgingContext(control=CONTROL_VANTAGE)
    obs, control = to_measurements(m)
    result: Result = judging.judge(obs, control=control, canaries={})
    result.ooni = ooni_block(m)
    return result.to_dict()


def import_files(paths: Sequence[str]) -> Iterator[Imported | Skipped]:
    """Every measurement of the files judged, in file order; a Skipped for what is not one."""
    judging = JudgingContext(control=CONTROL_VANTAGE)
    for path in paths:
        try:
            items = list(read_file(path))
        except OSError as exc:
            yield Skipped(path, f"cannot read: {exc.strerror or exc}")
            continue
        for source, item in items:
            if isinstance(item, Skipped):
                yield item
                continue
            try:
                record = judge(item, judging)
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                # a field of an unexpected type: name it, never a traceback
                yield Skipped(source, f"malformed web_connectivity measurement: {exc!r}"[:300])
                continue
            yield Imported(source, record)
