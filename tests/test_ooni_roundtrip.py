"""`export --format ooni | import ooni` gives back the verdicts lifeline gave (issue 16).

The records are judged by the classifier itself (the verdicts an export carries are
lifeline's), exported as OONI web_connectivity lines, imported again and judged again
from what the OONI lines hold. Every verdict must survive, except what OONI's format
cannot carry: canaries (``vantage_down``) and throughput (``throttled``), which the
classifier does not reach here (no canaries, no throughput targets).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.store import Store
from probes.judge import JudgingContext
from probes.records import Result
from tests.test_export_ooni import varied
from tests.test_store import T0


def judged(results: list[Result]) -> list[Result]:
    context = JudgingContext(control="control")
    return [
        context.judge(r.measurement, control=r.control, canaries={})
        for r in results
        if r.measurement.vantage != "control"
    ]


def test_the_verdicts_survive_an_ooni_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = judged(varied(T0))
    with Store(tmp_path / "data") as store:
        store.add(mine)
    assert main(["export", "--data-dir", str(tmp_path / "data"), "--format", "ooni"]) == 0
    exported = tmp_path / "exported.jsonl"
    exported.write_text(capsys.readouterr().out)
    code = main(["import", "ooni", "--format", "jsonl", str(exported)])
    out, err = capsys.readouterr()
    assert code == 0, err
    back = [json.loads(line) for line in out.splitlines()]
    assert len(back) == len(mine)
    before = [(r.measurement.target, r.measurement.time, r.verdict.value) for r in mine]
    after = [(b["target"], b["time"], b["verdict"]) for b in back]
    assert sorted(after) == sorted(before)
    verdicts = {r.verdict.value for r in mine}
    assert {"ok", "dns_blocked", "tcp_blocked", "tls_blocked", "http_blocked"} <= verdicts
