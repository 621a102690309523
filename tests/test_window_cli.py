"""`lifeline window` as a user runs it: the CLI on a real store, and `/api/v1/window` on serve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.store import Store
from probes.lab import LabThread
from probes.records import DNSStage, Measurement, Result, Verdict
from tests.test_serve import Served, http
from tests.test_serve import served as served  # the module's own `serve` on the lab

CONFIG = """\
version: 1
defaults: {interval: 60s, timeout: 5s}
vantages:
  - {name: control, control: true, resolver: 127.0.0.1:53}
  - {name: tehran, resolver: 127.0.0.1:53, country: IR, timezone: Asia/Tehran}
  - {name: delhi, resolver: 127.0.0.1:53, country: IN, timezone: Asia/Kolkata}
services:
  - name: twitter
    targets: [dns://twitter.lifeline.test, dns://api.lifeline.test]
"""


def _result(target: str, vantage: str, verdict: Verdict, time: str) -> Result:
    dns = DNSStage(
        ok=verdict is Verdict.OK,
        failure=None if verdict is Verdict.OK else "dns_nxdomain_error",
        duration_s=0.01,
        name=target.removeprefix("dns://"),
        resolver="udp://127.0.0.1:53",
    )
    m = Measurement(target=target, vantage=vantage, time=time, service="twitter", dns=dns)
    return Result(m, verdict, "recorded for the test")


def _window(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter.cli", "window", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def _store_history(data: Path) -> None:
    """Tehran: both targets turn dns_blocked; Delhi stays ok."""
    store = Store(data)
    try:
        for t in ("dns://twitter.lifeline.test", "dns://api.lifeline.test"):
            store.add([_result(t, "tehran", Verdict.OK, "2026-11-20T20:00:00Z")])
            store.add([_result(t, "delhi", Verdict.OK, "2026-11-20T20:00:00Z")])
            store.add([_result(t, "tehran", Verdict.DNS_BLOCKED, "2026-11-21T00:10:00Z")])
    finally:
        store.close()


def test_check_names_the_region_in_crisis_first(config: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _store_history(data)
    proc = _window(
        config, "--data-dir", str(data), "--duration", "1h",
        "--check", "2026-11-23T06:00Z", "--format", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert doc["schema"] == "lifeline.window/1"
    [scored] = doc["windows"]
    assert scored["start"] == "2026-11-23T06:00:00Z"
    # 06:00 UTC is 09:30 in Tehran (UTC+3:30) and 11:30 in Delhi (UTC+5:30): both awake,
    # but Tehran has every target blocked, so it is hurt most and named first.
    hurt = [r["vantage"] for r in scored["regions"]]
    assert hurt[0] == "tehran"
    assert {r["vantage"]: r["local"] for r in scored["regions"]}["tehran"].startswith("09:30")
    regions = {r["vantage"]: r for r in doc["regions"]}
    assert regions["tehran"]["blocked"] == 2 and regions["delhi"]["blocked"] == 0
    assert "control" not in regions  # the control is not a watched region


def test_ranking_prints_utc_and_local_times(config: Path, tmp_path: Path) -> None:
    proc = _window(config, "--data-dir", str(tmp_path / "none"), "--duration", "90m")
    assert proc.returncode == 0, proc.stderr
    assert " UTC = " in proc.stdout and "Asia/Tehran" in proc.stdout
    assert "Asia/Kolkata" in proc.stdout


def test_bad_duration_is_a_usage_error(config: Path) -> None:
    proc = _window(config, "--duration", "soon")
    assert proc.returncode == 2 and "soon" in proc.stderr


def test_window_api_and_page_on_serve(served: Served, lab: LabThread) -> None:
    code, _, body = http(served.url + "api/v1/window?duration=1h&within=24h")
    assert code == 200
    doc = json.loads(body)
    watched = {r["vantage"] for r in doc["regions"]}
    lab_vantages = yaml.safe_load(lab.config_path.read_text())["vantages"]
    assert watched == {v["name"] for v in lab_vantages if not v.get("control")}
    censored = next(r for r in doc["regions"] if r["vantage"] == "censored")
    assert censored["blocked"] > 0  # the lab's censor is at work there
    assert doc["windows"] and doc["windows"][0]["explanation"]
    code, _, _ = http(served.url + "api/v1/window?duration=forever")
    assert code == 400
    code, _, page = http(served.url)
    assert code == 200 and "Least harmful maintenance window" in page
