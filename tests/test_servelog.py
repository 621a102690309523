"""What `serve` says on stderr: one line per transition, in text or JSON, never a secret.

The end-to-end test runs `serve` as an operator does (a subprocess on the lab,
``--log-format json``), with secrets in its config: a SOCKS password and an
agent password from the environment, a DoH URL with a token. It makes each
kind of transition happen (an agent that is not there and then is, a lab rule
that blocks a service and is lifted, a good and a refused reload) and reads
the lines back.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import events
from exporter.asyncstore import AsyncStore
from exporter.logsetup import configure, remember_secrets
from exporter.store import Store
from probes.config import parse_config
from probes.lab import LabThread
from probes.records import Verdict
from probes.redact import Redactor, redact_text
from tests.test_serve import PATIENCE_S, http, stop
from tests.test_store import T0, result

PROXY_PASS = "pr0xy-Pass-7f3a9c"
AGENT_PASS = "ag3nt-Pass-41d2e8"
DOH_TOKEN = "doh-T0ken-9b7e55"
LITERAL_PASS = "l1teral-Pass-c0ffee"  # only in a config that is refused
SECRETS = (PROXY_PASS, AGENT_PASS, DOH_TOKEN, LITERAL_PASS)
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\Z")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def hub_config(lab: LabThread, directory: Path, agent_port: int) -> Path:
    """The lab config, smaller and faster, with secrets in it and two more vantages:
    ``remote`` measured by an agent (on ``agent_port``), ``doh`` resolving through a
    DoH URL with a token that nothing answers."""
    doc = yaml.safe_load(lab.config_path.read_text())
    doc["defaults"]["interval"] = "4s"
    doc["services"] = [s for s in doc["services"] if s["name"] in ("open", "tcp-refused")]
    for v in doc["vantages"]:
        if v["name"] == "censored":
            v["proxy"] = v["proxy"].replace("socks5://", "socks5://watcher:${LL_PROXY_PASS}@")
    doc["vantages"] += [
        {
            "name": "remote",
            "agent": {
                "url": f"http://127.0.0.1:{agent_port}",
                "vantage": "censored",
                "username": "hub",
                "password": "${LL_AGENT_PASS}",
            },
        },
        {"name": "doh", "resolver": f"https://127.0.0.1:{free_port()}/dns-query?token={DOH_TOKEN}"},
    ]
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def agent_config(lab: LabThread, directory: Path) -> Path:
    doc = yaml.safe_load(lab.config_path.read_text())
    doc["defaults"]["interval"] = "60s"  # it measures for the hub; its own schedule hardly matters
    doc["services"] = [s for s in doc["services"] if s["name"] == "open"]
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Lines:
    """The JSON lines a process wrote to its stderr file so far."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        text = self.path.read_text() if self.path.exists() else ""
        out = []
        for line in text.splitlines():
            doc = json.loads(line)  # every line is one JSON object
            assert isinstance(doc, dict), line
            out.append(doc)
        return out

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            d
            for d in self.all()
            if d["event"] == name and all(d.get(k) == v for k, v in fields.items())
        ]

    def wait(self, name: str, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            found = self.events(name, **fields)
            if found:
                return found[0]
            time.sleep(0.25)
        raise AssertionError(f"no {name} {fields} line in:\n{self.path.read_text()}")


def serve_proc(
    command: list[str], out: Path, err: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "serve", *command], stdout=o, stderr=e, env=env
        )
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("listening on "):
                return proc, line.removeprefix("listening on ").strip()
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {err.read_text()}")
        time.sleep(0.1)
    stop(proc)
    raise AssertionError("serve did not start listening")


@pytest.fixture
def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "LL_PROXY_PASS": PROXY_PASS,
        "LL_AGENT_PASS": AGENT_PASS,
    }


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def set_rule(lab: LabThread, rule: dict[str, str] | None) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    if rule is None:
        request = urllib.request.Request(lab.admin_url + "/rules/reset", method="POST")
    else:
        body = json.dumps(rule).encode()
        request = urllib.request.Request(lab.admin_url + "/rules", data=body, method="PUT")
    with opener.open(request, timeout=30) as response:
        assert response.status == 200


def test_serve_logs_each_transition_once_as_json_and_never_a_secret(
    lab: LabThread, tmp_path: Path, env: dict[str, str], procs: list[subprocess.Popen[bytes]]
) -> None:
    agent_port = free_port()
    config = hub_config(lab, tmp_path, agent_port)
    out, err = tmp_path / "hub.out", tmp_path / "hub.err"
    hub, url = serve_proc(
        ["-c", str(config), "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--log-format", "json"],
        out, err, env,
    )  # fmt: skip
    procs.append(hub)
    lines = Lines(err)
    started = lines.wait("serve_start")
    assert started["services"] == 2 and started["vantages"] == 5 and started["url"] == url

    # an agent that is not there: lost once, its vantage one incident (not one per target)
    lost = lines.wait("agent_lost", vantage="remote")
    assert lost["agent"] == f"http://127.0.0.1:{agent_port}" and lost["level"] == "warning"
    down = lines.wait("incident_start", vantage="remote", verdict="vantage_down")
    assert down["service"] is None and down["targets"]
    # a vantage whose DoH resolver does not answer is down too, one line
    lines.wait("incident_start", vantage="doh", verdict="vantage_down")

    # the agent comes: recovered once, the vantage's incident ends
    agent_out, agent_err = tmp_path / "agent.out", tmp_path / "agent.err"
    agent, _ = serve_proc(
        ["-c", str(agent_config(lab, tmp_path)), "--listen", f"127.0.0.1:{agent_port}",
         "--data-dir", str(tmp_path / "agent-data"), "--agent", "--agent-name", "tehran"],
        agent_out, agent_err, env,
    )  # fmt: skip
    procs.append(agent)
    back = lines.wait("agent_recovered", vantage="remote")
    assert back["since"] == lost["ts"][:19] + back["since"][19:] or back["since"]
    ended = lines.wait("incident_end", vantage="remote", verdict="vantage_down")
    assert ended["since"] == down["since"] and RFC3339_UTC.match(ended["until"])

    # a block at the censored vantage: one start, and one end once it is lifted
    set_rule(lab, {"scenario": "open", "dns": "nxdomain"})
    try:
        start = lines.wait("incident_start", service="open", vantage="censored")
        assert start["verdict"] == "dns_blocked" and start["level"] == "warning"
        assert all(t.startswith(("https://open.", "http://open.", "tls://open.", "tcp://open.",
                                 "dns://open.")) for t in start["targets"])  # fmt: skip
    finally:
        set_rule(lab, None)
    end = lines.wait("incident_end", service="open", vantage="censored", verdict="dns_blocked")
    assert end["since"] == start["since"] and end["targets"]

    # a good reload says what changed in numbers; a refused one says why
    doc = yaml.safe_load(config.read_text())
    doc["services"] = [s for s in doc["services"] if s["name"] == "open"]
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert http(url + "-/reload", method="POST")[0] == 200
    reload = lines.wait("reload")
    assert reload["before"]["services"] == 2 and reload["after"]["services"] == 1
    assert "services 2 -> 1" in reload["msg"]
    ended_by_reload = [e for e in lines.events("incident_end") if e.get("service") == "tcp-refused"]
    assert all(e["why"] == "no longer configured" for e in ended_by_reload)
    good = config.read_text()
    bad = good.replace(
        "socks5://watcher:${LL_PROXY_PASS}@", f"socks5://watcher:{LITERAL_PASS}@nowhere"
    )
    config.write_text(bad.replace("version: 1", "version: 9"))
    assert http(url + "-/reload", method="POST")[0] == 400
    refused = lines.wait("reload_refused")
    assert refused["level"] == "error" and refused["errors"]
    assert any("version" in e for e in refused["errors"])
    config.write_text(good)

    # no line twice for one transition: the agent was lost once and came back once
    assert len(lines.events("agent_lost", vantage="remote")) == 1
    assert len(lines.events("agent_recovered", vantage="remote")) == 1
    assert len(lines.events("incident_start", vantage="doh")) == 1

    # the agent dies: lost again, once
    assert stop(agent) == 0
    lines.wait("agent_lost", vantage="remote", error=lines.events("agent_lost")[-1]["error"])
    deadline = time.monotonic() + PATIENCE_S
    while len(lines.events("agent_lost")) < 2 and time.monotonic() < deadline:
        time.sleep(0.25)
    assert len(lines.events("agent_lost")) == 2

    assert stop(hub) == 0
    lines.wait("serve_stop")
    for doc in lines.all():  # the shape of every line
        assert {"ts", "level", "logger", "event", "msg"} <= doc.keys(), doc
        assert RFC3339_UTC.match(doc["ts"]), doc
        assert doc["level"] in ("debug", "info", "warning", "error"), doc
        assert doc["logger"].startswith("lifeline"), doc
    everything = err.read_text() + out.read_text() + agent_err.read_text()
    for secret in SECRETS:
        assert secret not in everything, secret


def test_text_lines_and_the_level_filter() -> None:
    stream = io.StringIO()
    configure("warning", "text", stream=stream)
    try:
        events.incident_start("twitter", "censored", "dns_blocked", ["https://x.test/"], "T0")
        events.reload_done("c.yaml", {"services": 1}, {"services": 2})  # info: below warning
    finally:
        configure("info", "text", stream=io.StringIO())
    text = stream.getvalue()
    (line,) = text.splitlines()
    ts, level, event, rest = line.split(" ", 3)
    assert RFC3339_UTC.match(ts) and level == "warning" and event == "incident_start:"
    assert "twitter at censored: dns_blocked since T0, 1 target: https://x.test/" in rest


def test_every_line_is_masked_even_for_other_handlers(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(
        "version: 1\n"
        "vantages:\n"
        "  - name: v\n"
        "    resolver: 127.0.0.1:53\n"
        "    proxy: socks5://u:${P}@127.0.0.1:1080\n"
        "services:\n"
        "  - name: s\n"
        "    targets: [https://example.test/]\n",
        env={"P": PROXY_PASS},
    )
    remember_secrets(config)
    caplog.set_level(logging.INFO, logger="lifeline")
    events.measure_failed(
        "https://example.test/", "v", f"OSError('socks5://u:{PROXY_PASS}@127.0.0.1:1080 said no')"
    )
    events.store_fault(f"cannot open https://127.0.0.1/x?token={DOH_TOKEN}&a=1")
    (failed, fault) = caplog.records
    for record in (failed, fault):
        assert PROXY_PASS not in record.getMessage() and DOH_TOKEN not in record.getMessage()
        assert PROXY_PASS not in json.dumps(record.lifeline_fields)  # type: ignore[attr-defined]
    assert "socks5://u:***@127.0.0.1:1080" in failed.getMessage()
    assert "token=***&a=1" in fault.getMessage()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("socks5://user:pass@127.0.0.1:1080", "socks5://user:***@127.0.0.1:1080"),
        ("http://tok3n@10.0.0.1/", "http://***@10.0.0.1/"),
        ("https://9.9.9.9/dns-query?token=abc&x=1", "https://9.9.9.9/dns-query?token=***&x=1"),
        ("https://9.9.9.9/dns-query?x=1", "https://9.9.9.9/dns-query?x=1"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_redact_text(text: str, shown: str) -> None:
    assert redact_text(text) == shown


def test_a_redactor_masks_known_values_longest_first() -> None:
    r = Redactor(["abcdef", "abcdefgh", "xy"])  # "xy" is too short to mask everywhere
    assert r("abcdefgh and abcdef, xy") == "*** and ***, xy"


def test_a_store_fault_is_said_once_and_its_end_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="lifeline")
    broken = True
    real = Store.add_records

    def add_records(self: Store, records: Any) -> Any:
        if broken:
            raise OSError(28, "No space left on device")
        return real(self, records)

    monkeypatch.setattr(Store, "add_records", add_records)

    async def run() -> None:
        nonlocal broken
        store = AsyncStore(tmp_path)
        try:
            await store.open()
            for _ in range(3):
                await store.put([])  # nothing queued: no write, nothing to say
            for i in range(3):
                await store.put([result(Verdict.OK, T0 + i, vantage="ir").to_dict()])
            broken = False
            await store.put([result(Verdict.OK, T0 + 9, vantage="ir").to_dict()])
            await store.put([result(Verdict.OK, T0 + 10, vantage="ir").to_dict()])
        finally:
            await store.aclose()

    asyncio.run(run())
    lines = [r for r in caplog.records if getattr(r, "lifeline_event", "").startswith("store_")]
    said = [(r.lifeline_event, r.levelname) for r in lines]  # type: ignore[attr-defined]
    assert said == [("store_fault", "ERROR"), ("store_recovered", "INFO")]
    assert "No space left on device" in lines[0].getMessage()
    assert "3 batches failed" in lines[1].getMessage()


def test_bad_log_flags_are_usage_errors(tmp_path: Path) -> None:
    for flags in (["--log-level", "loud"], ["--log-format", "xml"]):
        done = subprocess.run(
            [sys.executable, "-m", "exporter.cli", "serve", "-c", str(tmp_path / "c.yaml"), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert flags[0] in done.stderr and flags[1] in done.stderr
