"""The operator kit against real Prometheus tools: rules, their unit tests, and a live scrape."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from probes.lab import LabThread
from tests.test_serve import (
    PATIENCE_S,
    Served,
    fast_config,
    http,
    ready,
    start_serve,
    stop,
    wait_for,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "lifeline.json"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package `prometheus` provides it)",
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool is not installed (Debian package `prometheus-alertmanager` provides it)",
)
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus is not installed (Debian package `prometheus`)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, check=False,
        cwd=DEPLOY / "prometheus",
    )  # fmt: skip


@needs_promtool
def test_rules_are_valid() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_rules_unit_tests_pass() -> None:
    proc = promtool("test", "rules", "rules_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_example_scrape_config_is_valid() -> None:
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


def test_every_alert_has_a_unit_test_that_expects_it_to_fire() -> None:
    firing = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alert_names()) <= firing, sorted(set(alert_names()) - firing)


def test_rules_read_only_the_scheduled_job() -> None:
    """Every rule selects job="lifeline": /probe's and the agents' verdicts never add up."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    scraped = re.compile(r"\b(lifeline_[a-z_]+|up)\{([^}]*)\}")
    for rule in (r for g in groups for r in g["rules"]):
        selectors = scraped.findall(rule["expr"])
        assert selectors, rule
        for name, matchers in selectors:
            assert re.search(r'job="lifeline(-agents)?"', matchers), (rule.get("record"), name)


@needs_amtool
def test_alertmanager_example_is_valid_and_routes_every_alert() -> None:
    proc = subprocess.run(
        ["amtool", "check-config", str(ALERTMANAGER)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert {"service", "vantage"} <= set(config["route"]["group_by"])
    named = set(alert_names())
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            for name in re.findall(r"Lifeline\w+", matcher):
                assert name in named, matcher
    for labels, receiver in [
        (["alertname=LifelineServiceBlocked", "service=x", "vantage=ir", "severity=warning"],
         "lifeline-oncall"),
        (["alertname=LifelineVantageDown", "vantage=ir", "severity=critical"], "lifeline-oncall"),
        (["alertname=LifelineServiceDown", "service=x", "severity=info"], "lifeline-info"),
    ]:  # fmt: skip
        proc = subprocess.run(
            ["amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
             f"--verify.receivers={receiver}", *labels],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, (labels, proc.stdout + proc.stderr)


# --- the dashboard's queries --------------------------------------------------------------


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard, with Grafana's variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    filled = []
    for e in exprs:
        e = e.replace("$__rate_interval", "1m")
        filled.append(re.sub(r"\$(service|vantage)\b", ".*", e))
    return filled


def recording_rules() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["record"] for g in groups for r in g["rules"] if "record" in r]


def test_dashboard_queries_use_only_defined_variables() -> None:
    for q in dashboard_queries():
        assert "$" not in q, q


# --- a live Prometheus scraping serve on the lab -------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(lab: LabThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("serve")
    s = start_serve(fast_config(lab.config_path, work), work / "data")
    try:
        wait_for("the first full round", lambda: ready(s))
        yield s
    finally:
        assert stop(s.proc) == 0, s.err.read_text()


@pytest.fixture(scope="module")
def prometheus(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian package `prometheus`)")
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{
            "job_name": "lifeline",
            "static_configs": [{"targets": [urllib.parse.urlsplit(served.url).netloc]}],
        }],
    }  # fmt: skip
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("prometheus to be ready", lambda: _up(url) or proc.poll() is not None)
        assert proc.poll() is None, (work / "prometheus.log").read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _up(url: str) -> bool:
    try:
        return http(url + "/-/ready")[0] == 200
    except OSError:
        return False


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    code, _, body = http(f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}")
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


@needs_prometheus
def test_every_dashboard_query_and_recording_rule_has_data(prometheus: str) -> None:
    pending = set(dashboard_queries()) | set(recording_rules())
    deadline = time.monotonic() + PATIENCE_S
    while pending and time.monotonic() < deadline:
        pending = {q for q in pending if not query(prometheus, q)}
        if pending:
            time.sleep(1.0)
    assert not pending, f"no data from Prometheus for: {sorted(pending)}"


@needs_prometheus
def test_prometheus_sees_the_lab_verdicts(prometheus: str, lab: LabThread) -> None:
    expected = {(r["service"], r["target"], r["vantage"]): r["verdict"] for r in lab.expected}

    def seen() -> dict[tuple[str, str, str], str]:
        rows = query(prometheus, "lifeline_verdict == 1")
        m = [r["metric"] for r in rows]
        return {(x["service"], x["target"], x["vantage"]): x["verdict"] for x in m}

    got = wait_for(
        "every verdict in Prometheus", lambda: (s := seen()).keys() >= expected.keys() and s
    )
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong, wrong
