"""`lifeline check` end to end on the lab's catalogue, as a user runs it.

One `check` run per catalogue (with and without a control) in a subprocess;
then every scenario is asserted on its own, so a failure names the technique
that was misjudged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from probes.lab import LabThread
from probes.lab.scenarios import CATALOGUE

SERVICES = [s.service for s in CATALOGUE]
STAGE_FIELDS = {"ok", "failure", "duration_s"}


def _check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", "check", "-c", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["service"], r["target"], r["vantage"]): r for r in rows}


@pytest.fixture(scope="module")
def with_control(lab: LabThread) -> dict[str, Any]:
    proc = _check(lab.control_config_path, "--format", "json")
    assert proc.returncode == 1, proc.stderr  # the lab blocks things: not every verdict is ok
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


@pytest.fixture(scope="module")
def without_control(lab: LabThread) -> dict[str, Any]:
    proc = _check(lab.nocontrol_config_path, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _mismatches(doc: dict[str, Any], expected: list[dict[str, str]], service: str) -> list[str]:
    got = _by_key(doc["results"])
    out = []
    for e in expected:
        if e["service"] != service:
            continue
        r = got.get((e["service"], e["target"], e["vantage"]))
        if r is None:
            out.append(f"{e['target']} @ {e['vantage']}: missing from the output")
        elif r["verdict"] != e["verdict"]:
            out.append(
                f"{e['target']} @ {e['vantage']}: expected {e['verdict']}, got {r['verdict']}"
                f" ({r['reason']})"
            )
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_catalogue_with_control(service: str, with_control: dict[str, Any], lab: LabThread) -> None:
    expected = lab.expected_for(with_control=True)
    assert any(e["service"] == service for e in expected)
    assert _mismatches(with_control, expected, service) == []


@pytest.mark.parametrize("service", SERVICES)
def test_catalogue_without_control(
    service: str, without_control: dict[str, Any], lab: LabThread
) -> None:
    expected = lab.expected_for(with_control=False)
    assert any(e["service"] == service for e in expected)
    assert _mismatches(without_control, expected, service) == []


def test_every_pair_reported_once_with_contract_fields(
    with_control: dict[str, Any], lab: LabThread
) -> None:
    assert with_control["schema"] == "lifeline.check/1"
    rows = with_control["results"]
    keys = [(r["service"], r["target"], r["vantage"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == {(e["service"], e["target"], e["vantage"]) for e in lab.expected}
    for r in rows:
        assert {"service", "target", "vantage", "verdict", "reason", "time", "stages"} <= set(r)
        assert r["reason"] and r["time"].endswith("Z")
        assert set(r["stages"]) == {"dns", "tcp", "tls", "http"}
        for stage in r["stages"].values():
            assert stage is None or STAGE_FIELDS <= set(stage)


def test_blocked_stage_evidence_is_kept(with_control: dict[str, Any]) -> None:
    rows = with_control["results"]
    nx = next(
        r
        for r in rows
        if r["service"] == "dns-nxdomain"
        and r["vantage"] == "censored"
        and r["target"].startswith("dns://")
    )
    assert nx["stages"]["dns"]["failure"] == "dns_nxdomain_error"
    assert nx["control"]["stages"]["dns"]["addresses"]  # the control resolved it: the evidence
    refused = next(
        r
        for r in rows
        if r["service"] == "tcp-refused"
        and r["vantage"] == "censored"
        and r["target"].startswith("tcp://")
    )
    assert refused["stages"]["tcp"]["failure"] == "connection_refused"
    assert refused["stages"]["dns"]["ok"] is True


def test_table_and_jsonl_formats(lab: LabThread) -> None:
    table = _check(lab.control_config_path, "--service", "open", "--format", "table")
    assert table.returncode == 1  # the shutdown vantage is down
    assert "SERVICE" in table.stdout and "vantage_down" in table.stdout
    assert "\x1b[" not in table.stdout  # not a terminal: no colour
    lines = _check(
        lab.control_config_path, "--service", "open", "--vantage", "censored", "--format", "jsonl"
    )
    assert lines.returncode == 0, lines.stdout + lines.stderr  # open + canaries are ok at censored
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert rows and {r["vantage"] for r in rows} == {"censored"}
    assert {r["service"] for r in rows} == {"open", "canaries"}
    assert all(r["verdict"] == "ok" for r in rows)


def test_usage_and_config_errors_exit_2(tmp_path: Path, lab: LabThread) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 2\nservices: []\n")
    proc = _check(bad)
    assert proc.returncode == 2
    assert "version" in proc.stderr
    proc = _check(lab.control_config_path, "--service", "nope")
    assert proc.returncode == 2 and "--service nope" in proc.stderr
