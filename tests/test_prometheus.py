"""The operator kit against real Prometheus tools: rules, their unit tests, and a live scrape."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from probes.lab import LabThread
from probes.verdicts import Verdict
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


#: The lab target the /probe job measures: a service of two targets, both blocked at
#: "censored". Counted with the schedule's verdicts it would make three.
PROBED_SERVICE, PROBED_VANTAGE = "tls-sni-reset", "censored"


def probed_target(lab: LabThread) -> str:
    return next(
        r["target"]
        for r in lab.expected
        if (r["service"], r["vantage"]) == (PROBED_SERVICE, PROBED_VANTAGE)
        and r["target"].startswith("https://")
    )


def lab_scrape_config(served: Served, lab: LabThread) -> dict[str, Any]:
    """The shipped prometheus.yml, every job kept, its targets moved onto the lab.

    The direct job scrapes serve; the /probe job probes one lab target through serve,
    with the shipped relabelling; the agents' job points at a loopback port where
    nothing listens (a dead agent).
    """
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    address = urllib.parse.urlsplit(served.url).netloc
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"lifeline", "lifeline-probe", "lifeline-agents"}, set(jobs)
    jobs["lifeline"]["static_configs"] = [{"targets": [address]}]
    probe = jobs["lifeline-probe"]
    probe.update(scrape_interval="5s", scrape_timeout="5s")
    probe["params"]["vantage"] = [PROBED_VANTAGE]
    probe["static_configs"] = [{"targets": [probed_target(lab)]}]
    moved = [r for r in probe["relabel_configs"] if r.get("target_label") == "__address__"]
    assert len(moved) == 1, probe["relabel_configs"]
    moved[0]["replacement"] = address
    agents = jobs["lifeline-agents"]
    agents["scheme"] = "http"
    agents["static_configs"] = [{"targets": [f"127.0.0.1:{free_port()}"]}]
    return config


@pytest.fixture(scope="module")
def prometheus(
    served: Served, lab: LabThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian package `prometheus`)")
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text(yaml.safe_dump(lab_scrape_config(served, lab)))
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


# --- every recording rule against what the lab is doing --------------------------------------

BLOCKING = {"dns_blocked", "tcp_blocked", "tls_blocked", "http_blocked", "throttled"}


def _by(rows: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    """{label values: value}; a label set seen twice (two jobs, two instances) is an error."""
    out: dict[tuple[str, ...], float] = {}
    for r in rows:
        assert set(r["metric"]) - {"__name__"} == set(labels), r["metric"]
        key = tuple(r["metric"][k] for k in labels)
        assert key not in out, f"{key} twice: {rows}"
        out[key] = float(r["value"][1])
    return out


def _since(served: Served) -> dict[tuple[str, str, str], float]:
    doc = json.loads(http(served.url + "api/v1/status")[2])
    return {
        (r["service"], r["target"], r["vantage"]): datetime.fromisoformat(r["since"]).timestamp()
        for r in doc["results"]
    }


def rule_mismatches(prometheus: str, lab: LabThread, served: Served) -> dict[str, Any]:
    """What each recording rule says that the lab's expected verdicts do not (empty: all true)."""
    expected = lab.expected
    watched = [r for r in expected if r["service"] != "canaries"]
    vantages = sorted({r["vantage"] for r in expected})
    wrong: dict[str, Any] = {}

    blocked = Counter((r["service"], r["vantage"]) for r in expected if r["verdict"] in BLOCKING)
    want = {(r["service"], r["vantage"]): float(blocked[r["service"], r["vantage"]])
            for r in expected}  # fmt: skip
    got = _by(query(prometheus, "lifeline:blocked_targets:count"), "service", "vantage")
    if got != want:
        wrong["lifeline:blocked_targets:count"] = {
            k: (got.get(k), want.get(k))
            for k in want.keys() | got.keys()
            if got.get(k) != want.get(k)
        }

    cells = Counter((r["vantage"], r["verdict"]) for r in watched)
    want = {(v, d.value): float(cells[v, d.value]) for v in vantages for d in Verdict}
    got = _by(query(prometheus, "lifeline:targets:count_by_verdict"), "vantage", "verdict")
    if got != want:
        wrong["lifeline:targets:count_by_verdict"] = {
            k: (got.get(k), want.get(k))
            for k in want.keys() | got.keys()
            if got.get(k) != want.get(k)
        }

    got = _by(query(prometheus, "lifeline:vantage_reachable:ratio"), "vantage")
    for v in vantages:
        mine = [r["verdict"] == "ok" for r in watched if r["vantage"] == v]
        share = sum(mine) / len(mine)
        if got.get((v,)) is None or abs(got[v,] - share) > 1e-9:
            wrong.setdefault("lifeline:vantage_reachable:ratio", {})[v] = (got.get((v,)), share)

    got = _by(query(prometheus, "lifeline:measurements:rate5m"), "vantage", "verdict")
    unmeasured = {(r["vantage"], r["verdict"]) for r in expected} - {
        k for k, rate in got.items() if rate > 0
    }
    if unmeasured:
        wrong["lifeline:measurements:rate5m"] = sorted(unmeasured)

    now = time.time()
    since = _since(served)
    age_labels = ("job", "instance", "service", "target", "vantage")
    ages = _by(query(prometheus, "lifeline:verdict_age:seconds"), *age_labels)
    keyed = {k[2:]: age for k, age in ages.items()}
    if len(keyed) != len(ages) or keyed.keys() != {
        (r["service"], r["target"], r["vantage"]) for r in expected
    }:
        wrong["lifeline:verdict_age:seconds"] = sorted(ages)
    else:
        off = {
            k: (age, now - since[k]) for k, age in keyed.items() if abs(age - (now - since[k])) > 10
        }
        if off:
            wrong["lifeline:verdict_age:seconds"] = off
    return wrong


@needs_prometheus
def test_every_recording_rule_counts_what_the_lab_does(
    prometheus: str, lab: LabThread, served: Served
) -> None:
    """With both shipped jobs scraped (/probe measuring a blocked target too), every
    recorded number equals the lab's: no target counted twice, none left out."""
    checked = {
        "lifeline:blocked_targets:count",
        "lifeline:targets:count_by_verdict",
        "lifeline:vantage_reachable:ratio",
        "lifeline:measurements:rate5m",
        "lifeline:verdict_age:seconds",
    }
    assert set(recording_rules()) == checked, "a recording rule without a check against the lab"
    probe = f'probe_lifeline_verdict{{job="lifeline-probe",service="{PROBED_SERVICE}"}} == 1'
    wait_for(
        "the /probe job's first answer", lambda: query(prometheus, 'up{job="lifeline-probe"} == 1')
    )
    deadline = time.monotonic() + PATIENCE_S
    while (wrong := rule_mismatches(prometheus, lab, served)) and time.monotonic() < deadline:
        time.sleep(1.0)
    assert not wrong, wrong
    # the /probe job's verdict is there, under its own name only
    assert [r["metric"]["verdict"] for r in query(prometheus, probe)] == ["tls_blocked"]
    assert query(prometheus, 'lifeline_verdict{job!="lifeline"}') == []
    assert query(prometheus, 'probe_success{job="lifeline-probe"} == 0')


@needs_prometheus
def test_a_dead_agent_alerts_and_a_live_lifeline_does_not(prometheus: str) -> None:
    def alerting(name: str) -> list[dict[str, Any]]:
        return query(prometheus, f'ALERTS{{alertname="{name}"}}')

    wait_for(
        "the agents' job to be down", lambda: query(prometheus, 'up{job="lifeline-agents"} == 0')
    )
    active = wait_for("LifelineAgentDown", lambda: alerting("LifelineAgentDown"))
    assert {a["metric"]["job"] for a in active} == {"lifeline-agents"}
    assert query(prometheus, 'up{job="lifeline"} == 1')
    for name in ("LifelineDown", "LifelineAbsent", "LifelineMeasurementsStale"):
        assert alerting(name) == [], name


def timeline_codes() -> tuple[dict[str, int], dict[str, tuple[str, str]]]:
    """The verdict timeline's code of each verdict (from its query) and its mappings."""
    board = json.loads(DASHBOARD.read_text())
    (panel,) = [p for p in board["panels"] if p["type"] == "state-timeline"]
    (target,) = panel["targets"]
    codes = {
        v: int(c)
        for c, v in re.findall(r'(\d+) \* lifeline_verdict\{[^}]*verdict="(\w+)"', target["expr"])
    }
    codes["ok"] = 0
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    shown = {k: (o["text"], o["color"]) for k, o in mapping["options"].items()}
    return codes, shown


@needs_prometheus
def test_the_verdict_timeline_shows_the_worst_verdict_per_service_and_vantage(
    prometheus: str, lab: LabThread
) -> None:
    codes, _ = timeline_codes()
    worst: dict[tuple[str, str], int] = {}
    for r in lab.expected:
        if r["service"] != "canaries":
            key = (r["service"], r["vantage"])
            worst[key] = max(worst.get(key, 0), codes[r["verdict"]])
    (expr,) = [q for q in dashboard_queries() if "max by (service, vantage)" in q]
    wait_for("the timeline", lambda: _by(query(prometheus, expr), "service", "vantage") == {
        k: float(v) for k, v in worst.items()
    })  # fmt: skip


# --- the dashboard's colours and its provisioning ---------------------------------------------


def test_the_verdict_timeline_gives_each_verdict_its_own_colour() -> None:
    codes, shown = timeline_codes()
    assert set(codes) == {v.value for v in Verdict}
    assert set(shown) == {str(c) for c in codes.values()}
    colours = [colour for _, colour in shown.values()]
    assert len(set(colours)) == len(colours), shown
    assert shown[str(codes["ok"])][1] == "#73BF69"  # green
    assert shown[str(codes["vantage_down"])][1] != shown[str(codes["service_down"])][1]


def test_the_status_matrix_gives_each_verdict_its_own_colour() -> None:
    board = json.loads(DASHBOARD.read_text())
    (matrix,) = [p for p in board["panels"] if p["title"] == "Status matrix"]
    (override,) = [
        o for o in matrix["fieldConfig"]["overrides"] if o["matcher"]["options"] == "verdict"
    ]
    (mappings,) = [p["value"] for p in override["properties"] if p["id"] == "mappings"]
    options = mappings[0]["options"]
    assert set(options) == {v.value for v in Verdict}
    colours = [o["color"] for o in options.values()]
    assert len(set(colours)) == len(colours), options


def _uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource" and isinstance(v, dict):
                yield v["uid"]
            else:
                yield from _uids(v)
    elif isinstance(node, list):
        for v in node:
            yield from _uids(v)


def test_the_dashboard_loads_from_the_provisioning_files_without_clicks() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "lifeline.yml").read_text())
    prometheus_uids = {d["uid"] for d in sources["datasources"] if d["type"] == "prometheus"}
    board = json.loads(DASHBOARD.read_text())
    used = set(_uids(board))
    assert used and used <= prometheus_uids, (used, prometheus_uids)
    assert "__inputs" not in board and "${" not in json.dumps(board)
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "lifeline.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_serve_md_names_the_panels_that_need_the_recording_rules() -> None:
    board = json.loads(DASHBOARD.read_text())
    needing = {
        p["title"]
        for p in board["panels"]
        if any("lifeline:" in t["expr"] for t in p.get("targets", []))
    }
    kit = " ".join(
        (DEPLOY.parent / "docs" / "serve.md").read_text().split("## Operator kit")[1].split()
    )
    said = set(
        re.findall(r'"([^"]+)"', kit.split("need the recording rules")[1].split("The others")[0])
    )
    assert needing == said, (needing, said)
