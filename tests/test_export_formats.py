"""The export's formats table; rules kept once (HTTP similarity, RFC 3339); the judging context."""

from __future__ import annotations

import io
import json
import re
import sys
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

from exporter.cli import main
from exporter.export import FORMATS, ExportOptions, Format, export, ooni_record
from exporter.scheduler import rfc3339 as scheduler_rfc3339
from exporter.store import Store
from probes.compare import http_similarity
from probes.failures import Failure
from probes.fingerprints import FingerprintSet
from probes.judge import JudgingContext
from probes.measure import blank_measurement
from probes.model import ResolverSpec, Target, Vantage
from probes.records import Result, Verdict
from probes.runner import Observations, judge
from probes.timefmt import parse_rfc3339, rfc3339
from tests.test_export import _round
from tests.test_store import T0, http_stage, result, variety

# --- one formats table ---------------------------------------------------------------------


def test_a_new_format_is_its_module_and_one_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A throw-away format, added as a module and a row, is offered by the CLI and fed typed
    records."""
    seen: list[Result] = []

    def open_writer(out: IO[str], options: ExportOptions) -> object:
        out.write("verdicts\n")

        def write(r: Result) -> None:
            seen.append(r)
            out.write(f"{r.measurement.vantage} {r.verdict.value}\n")

        return write

    module = types.ModuleType("tests._verdicts_format")
    module.open_writer = open_writer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(FORMATS, "verdicts", Format("one verdict a line", module.__name__))
    with Store(tmp_path) as store:
        store.add(variety(T0))
    assert main(["export", "--data-dir", str(tmp_path), "--format", "verdicts"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["verdicts"] + [f"ir {r.verdict.value}" for r in variety(T0)]
    assert [r.to_dict() for r in seen] == [r.to_dict() for r in variety(T0)]


def test_an_unknown_format_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(tmp_path) as store:
        store.add(variety(T0))
        with pytest.raises(ValueError, match="unknown export format"):
            export(store, io.StringIO(), fmt="xml")
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--data-dir", str(tmp_path), "--format", "xml"])
    assert exit_.value.code == 2 and "jsonl" in capsys.readouterr().err


# --- the OONI export reports the classifier's HTTP comparison --------------------------------


def _with_headers(r: Result, ours: dict[str, str], theirs: dict[str, str]) -> Result:
    assert r.measurement.http is not None and r.control is not None and r.control.http
    r.measurement.http.headers = ours
    r.control.http.headers = theirs
    return r


def test_ooni_headers_match_uses_the_classifiers_common_headers() -> None:
    # x-powered-by is on the classifier's list of headers every server sends: sharing it
    # says nothing about the page (the OONI export's own shorter list used to count it)
    shared_common = {"x-powered-by": "PHP", "strict-transport-security": "max-age=1"}
    r = _with_headers(result(Verdict.OK, T0), shared_common, dict(shared_common))
    keys = ooni_record(r)["test_keys"]
    assert keys["headers_match"] is False
    shared_rare = {"x-powered-by": "PHP", "x-news-edition": "intl"}
    r = _with_headers(result(Verdict.OK, T0), shared_rare, {"X-News-Edition": "intl"})
    assert ooni_record(r)["test_keys"]["headers_match"] is True


def test_ooni_comparisons_are_http_similarity() -> None:
    obs = http_stage("https://news.example/", status=200, title="Access denied here", body=900)
    r = result(Verdict.ANOMALY, T0, http=obs)
    assert r.control is not None and r.control.http is not None
    same = http_similarity(obs, r.control.http)
    keys = ooni_record(r)["test_keys"]
    assert (keys["body_length_match"], same.body_length_match) == (False, False)
    assert same.body_proportion == pytest.approx(900 / 5120)
    assert (keys["title_match"], same.title_match) == (False, False)
    assert keys["status_code_match"] is same.status_code_match is True
    # a status differs only against a 2xx control, as the anomaly rule has it
    r.control.http.status = 503
    assert ooni_record(r)["test_keys"]["status_code_match"] is True


# --- one RFC 3339 writer -------------------------------------------------------------------

_MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_one_rfc3339_format() -> None:
    assert rfc3339(T0 + 0.25) == "2026-01-01T00:00:00.250000Z"
    assert rfc3339(datetime(2026, 1, 1, 3, 30, tzinfo=UTC)) == "2026-01-01T03:30:00.000000Z"
    assert rfc3339(datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000000Z"  # naive is UTC
    assert rfc3339(T0 + 0.75, timespec="seconds") == "2026-01-01T00:00:00Z"
    assert parse_rfc3339("2026-01-01T03:30:00+03:30") == T0
    assert parse_rfc3339(rfc3339(T0 + 0.25)) == T0 + 0.25
    # the scheduler's (agents' clocks, /api times) and a measurement's time: the same form
    assert scheduler_rfc3339(T0 + 0.25) == "2026-01-01T00:00:00.250000Z"
    target = Target(url="https://news.example/", scheme="https", host="news.example", port=443)
    vantage = Vantage(name="ir", resolver=ResolverSpec("udp", "127.0.0.1", 5353))
    m = blank_measurement(target, vantage, "news")
    assert _MICRO.match(m.time), m.time


# --- one judging context -------------------------------------------------------------------


def test_judging_context_judges_as_the_runner_does() -> None:
    fingerprints = FingerprintSet.build()
    ms = _round(T0 + 5) + _round(T0 + 65, ir_canary_down=True)
    ms = ms[len(ms) // 2 :]  # one round, the one with a canary down
    observations = Observations(ms)
    ctx = JudgingContext(fingerprints, 0.25, "control")
    for m in ms:
        expected = judge(
            m, observations, control="control", fingerprints=fingerprints, throttle_ratio=0.25
        )
        ctl = expected.control
        got = ctx.judge(
            m,
            control=ctl,
            canaries=observations.canaries,
            same_target=observations.by_target[(m.service, m.target)],
        )
        assert (got.verdict, got.reason) == (expected.verdict, expected.reason)
    verdicts = {
        ctx.judge(m, control=None, canaries=observations.canaries).verdict
        for m in ms
        if m.vantage == "ir" and m.tcp is not None and m.tcp.failure == Failure.CONNECTION_RESET
    }
    assert verdicts == {Verdict.VANTAGE_DOWN}


def test_export_of_every_format_reads_back(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.add(variety(T0))
        for fmt, form in FORMATS.items():
            if form.binary:  # bytes, not lines (parquet: tests/test_export_parquet.py)
                raw = io.BytesIO()
                text = io.TextIOWrapper(raw)  # kept: collecting it would close ``raw``
                assert export(store, text, fmt=fmt) == len(variety(T0))
                assert raw.getvalue()[:4] == raw.getvalue()[-4:] == b"PAR1"
                continue
            out = io.StringIO()
            assert export(store, out, fmt=fmt) == len(variety(T0))
            lines = out.getvalue().splitlines()
            assert len(lines) == len(variety(T0)) + (fmt == "csv")
            if fmt != "csv":
                assert all(json.loads(line) for line in lines)
