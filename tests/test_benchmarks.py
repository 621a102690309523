"""The benchmark runner works end to end on a tiny size (its figures are not asserted).

It runs as an operator runs it, in a subprocess: the farm, `lifeline serve`
and (when installed) blackbox_exporter are started, driven and stopped, and
the JSON report says what a run found. On host loopback (``--no-netns``):
every socket is on 127.0.0.0/8 and blackbox only gets IP literals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.configs import blackbox_config, lifeline_config
from benchmarks.farm import FAIL_EVERY, make_plan
from benchmarks.procs import blackbox_path
from benchmarks.profile import summarise
from probes.config import parse_config
from probes.lab.ca import LabCA

ROOT = Path(__file__).resolve().parent.parent


def test_plan_mixes_failing_names_and_every_config_is_valid(tmp_path: Path) -> None:
    plan, sockets = make_plan(2 * FAIL_EVERY, 10, tmp_path)
    try:
        assert len(plan.names) == 2 * FAIL_EVERY
        assert [n.name for n in plan.names if not n.exists] == [plan.names[FAIL_EVERY - 1].name]
        assert [n.name for n in plan.names if not n.listening] == [plan.names[-1].name]
        assert all(n.address.startswith("127.") for n in plan.names)
        LabCA(tmp_path).write(Path(plan.ca_file))  # the farm's own job, done here by hand
        config = parse_config(
            lifeline_config(plan, plan.names, vantages=3, interval_s=60, data_dir=str(tmp_path))
        )
        assert [v.name for v in config.vantages] == ["v0", "v1", "v2"]
        assert config.control is not None and config.control.name == "v0"
        assert sum(len(s.targets) for s in config.services) == len(plan.names)
        box = blackbox_config(plan, plan.names)
        assert box.count("prober: dns") == box.count("prober: http") == len(plan.names)
        assert "server_name: n0.bench.lifeline.test" in box
    finally:
        for s in sockets:
            s.close()


def test_profile_summary_counts_samples_and_skips_idle_threads() -> None:
    raw = (
        "main (a/cli.py:1);measure (probes/measure.py:10) 3\n"
        "main (a/cli.py:1);classify (probes/classify.py:5) 1\n"
        "_bootstrap (threading.py:1);_worker (concurrent/futures/thread.py:80) 50\n"
    )
    text = summarise(raw)
    assert text.startswith("4 samples")
    assert "75.0  measure (probes/measure.py)" in text
    assert "100.0  main (a/cli.py)" in text
    assert "_worker" not in text


def test_runner_smoke(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--no-netns",
        "--names",
        str(2 * FAIL_EVERY),
        "--concurrency",
        "4",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--sched-targets",
        "20",
        "--vantages",
        "2",
        "--interval",
        "4",
        "--sched-rounds",
        "1.5",
        "--workers",
        "2",
        "--out",
        str(out),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["machine"]["nproc"] >= 1
    probe = report["probe"]
    lifeline = probe["exporters"]["lifeline"]
    assert lifeline["errors"] == 0
    assert probe["agreement"]["lifeline_unexpected"] == 0
    if blackbox_path() is not None:
        assert probe["exporters"]["blackbox"]["errors"] == 0
        assert probe["agreement"]["disagreements"] == 0
        assert "ratio_lifeline_over_blackbox" in probe
    pooled = probe["exporters"]["lifeline-workers"]  # serve --workers 2, same load
    assert pooled["errors"] == 0
    assert probe["agreement_workers"]["lifeline_unexpected"] == 0
    if blackbox_path() is not None:
        assert probe["agreement_workers"]["disagreements"] == 0
    assert report["scheduler_workers"]["keys"] == 40
    sched = report["scheduler"]
    assert sched["keys"] == 40
    assert sched["skipped"] >= 0  # read from the final /metrics scrape
    assert sched["scrape_bytes"] > 0
    assert f"/probe, {2 * FAIL_EVERY} targets, concurrency 4:" in done.stdout
