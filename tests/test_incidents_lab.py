"""Incidents on the real lab: `serve` measures it; `/api/v1/incidents` and `lifeline incidents`
read its store and give one incident per (service, vantage, method), one per down vantage and
one per outage."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from probes.lab import LabThread
from tests.test_serve import Served, fast_config, http, ready, start_serve, stop, wait_for

Key = tuple[str, str | None, str | None]


@pytest.fixture(scope="module")
def served(lab: LabThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("incidents")
    s = start_serve(fast_config(lab.config_path, work), work / "data")
    try:
        wait_for("the first full round", lambda: ready(s))
        yield s
    finally:
        assert stop(s.proc) == 0, s.err.read_text()


def expected_incidents(lab: LabThread) -> set[Key]:
    """What the lab is doing, as incidents: (verdict, service or None, vantage or None)."""
    out: set[Key] = set()
    for row in lab.expected:
        verdict = row["verdict"]
        if verdict == "ok":
            continue
        if verdict == "vantage_down":
            out.add((verdict, None, row["vantage"]))
        elif verdict == "service_down":
            out.add((verdict, row["service"], None))
        else:
            out.add((verdict, row["service"], row["vantage"]))
    return out


def api(served: Served, **query: str | list[str]) -> tuple[int, Any]:
    code, _, body = http(served.url + "api/v1/incidents?" + urllib.parse.urlencode(query, True))
    return code, (json.loads(body) if code == 200 else body)


def keys(doc: dict[str, Any]) -> list[Key]:
    return [(i["verdict"], i["service"], i["vantage"]) for i in doc["incidents"]]


def _whole(doc: dict[str, Any], lab: LabThread) -> bool:
    """Every incident holds all it will: the down vantage each of its services, each outage
    every vantage (the keys alone appear with the first target judged)."""
    shut = {r["service"] for r in lab.expected if r["vantage"] == "shutdown"} - {"canaries"}
    vantages = {r["vantage"] for r in lab.expected} - {"shutdown"}
    for i in doc.get("incidents", []):
        if i["verdict"] == "vantage_down" and set(i["services"]) != shut:
            return False
        if i["verdict"] == "service_down" and not vantages <= set(i["vantages"]):
            return False
    return True


@pytest.fixture(scope="module")
def settled(served: Served, lab: LabThread) -> dict[str, Any]:
    """The ongoing incidents once the store has every lab verdict."""
    want = expected_incidents(lab)
    last: dict[str, Any] = {}

    def check() -> bool:
        nonlocal last
        last = api(served, ongoing="1")[1]
        return set(keys(last)) == want and _whole(last, lab)

    try:
        wait_for("the lab's incidents", check)
    except AssertionError:
        assert set(keys(last)) == want  # says what differs
    return last


def test_the_api_gives_one_incident_per_service_vantage_and_per_down_vantage(
    settled: dict[str, Any], lab: LabThread
) -> None:
    assert settled["schema"] == "lifeline.incidents/2"
    got = keys(settled)
    assert len(got) == len(set(got))  # nothing listed twice
    assert got[0] == ("vantage_down", None, "shutdown")  # a shutdown first
    down = settled["incidents"][0]
    shut = {r["service"] for r in lab.expected if r["vantage"] == "shutdown"} - {"canaries"}
    assert set(down["services"]) == shut  # one incident holding every service of the vantage
    assert len(down["targets"]) >= len(shut)
    outage = next(i for i in settled["incidents"] if i["service"] == "down-nolisten")
    assert outage["verdict"] == "service_down" and outage["vantage"] is None
    assert set(outage["vantages"]) == {"control", "censored"}
    ranks = [i["verdict"] for i in settled["incidents"]]
    assert ranks.index("tls_blocked") < ranks.index("anomaly") < ranks.index("service_down")


def test_the_api_filters_and_refuses_bad_parameters(
    served: Served, settled: dict[str, Any]
) -> None:
    code, doc = api(served, vantage="censored", service=["tls-sni-reset", "geo"], ongoing="true")
    assert code == 200
    assert sorted(keys(doc)) == [
        ("anomaly", "geo", "censored"),
        ("tls_blocked", "tls-sni-reset", "censored"),
    ]
    code, doc = api(served, service="tls-sni-reset", since="1h")
    assert code == 200 and ("vantage_down", None, "shutdown") in keys(doc)
    for bad, word in [({"since": "garbage"}, "since"), ({"ongoing": "maybe"}, "ongoing"),
                      ({"servce": "geo"}, "servce")]:  # fmt: skip
        code, body = api(served, **bad)
        assert code == 400 and word in body, body


def test_the_command_on_the_lab_store(
    served: Served, settled: dict[str, Any], lab: LabThread
) -> None:
    def run(*argv: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "exporter.cli", "incidents", "--data-dir",
             str(served.data_dir), *argv],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    doc = json.loads(run("--ongoing", "--format", "json"))
    assert set(keys(doc)) == expected_incidents(lab)
    table = run("--ongoing").splitlines()
    assert all(len(line) <= 120 for line in table)
    assert len(table) == len(doc["incidents"]) + 3  # head, rows, blank, total
    assert "vantage_down" in table[1] and "shutdown" in table[1]
    mine = json.loads(run("--ongoing", "--vantage", "shutdown", "--format", "json"))
    assert keys(mine)[0] == ("vantage_down", None, "shutdown")


def test_classify_without_the_config_reproduces_serves_log(
    served: Served, settled: dict[str, Any]
) -> None:
    """The lab's config has a fingerprint of its own (its censor's DNS answer): serve keeps
    it beside the log, and every record says what judged it, so the log re-judged with no
    config gives every recorded verdict again (issue 16)."""
    (log,) = served.data_dir.glob("lifeline-*.jsonl")
    assert list(served.data_dir.glob("fingerprints-*.json"))  # the config's own, kept
    proc = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "classify", str(log)],
        capture_output=True, text=True, timeout=300, check=False, cwd=served.data_dir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert proc.stdout.strip().endswith(" changed") and ", 0 changed" in proc.stdout
