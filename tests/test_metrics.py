"""What /metrics and /probe expose, read back the way Prometheus reads it."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from exporter.metrics import encode, registry_for
from exporter.metricspage import CHUNK_SERIES, MetricsPage
from exporter.probemetrics import ProbeExposition, probe_registry
from exporter.scheduler import Board, epoch
from probes.config import parse_config
from probes.model import CANARY_SERVICE, Config
from probes.records import (
    DNSStage,
    HTTPStage,
    Measurement,
    Result,
    TCPStage,
    TLSStage,
    Verdict,
)

CONFIG = """
version: 1
vantages:
  - {name: control, control: true, resolver: 127.0.0.1:5353,
     country: NL, timezone: Europe/Amsterdam}
  - {name: censored, resolver: 127.0.0.1:5354, country: IR, timezone: Asia/Tehran}
canaries: [https://canary.lifeline.test/]
services:
  - name: open
    targets: [https://open.lifeline.test/, https://open.lifeline.test/other]
"""
OPEN = "https://open.lifeline.test/"
OTHER = "https://open.lifeline.test/other"
CANARY = "https://canary.lifeline.test/"


def config() -> Config:
    return parse_config(CONFIG)


def measurement(
    target: str,
    vantage: str,
    *,
    service: str = "open",
    ok: bool = True,
    t: str = "2026-01-01T00:00:10Z",
) -> Measurement:
    return Measurement(
        target=target,
        vantage=vantage,
        time=t,
        service=service,
        duration_s=0.5,
        dns=DNSStage(
            ok=ok,
            failure=None if ok else "dns_nxdomain_error",
            duration_s=0.01,
            name="open.lifeline.test",
            resolver="udp://127.0.0.1:5354",
            addresses=["127.0.0.10"] if ok else [],
        ),
        tcp=TCPStage(ok=True, failure=None, duration_s=0.02) if ok else None,
        tls=TLSStage(ok=True, failure=None, duration_s=0.03) if ok else None,
        http=HTTPStage(ok=True, failure=None, duration_s=0.04, status=200, transfer_s=0.01)
        if ok
        else None,
    )


def board() -> Board:
    b = Board(config())
    for v in ("control", "censored"):
        b.publish(Result(measurement(CANARY, v, service=CANARY_SERVICE), Verdict.OK, "fine"))
        b.publish(Result(measurement(OTHER, v), Verdict.OK, "fine"))
        b.count(Result(measurement(OTHER, v), Verdict.OK, "fine"))
    b.publish(Result(measurement(OPEN, "control"), Verdict.OK, "fine"))
    blocked = Result(
        measurement(OPEN, "censored", ok=False, t="2026-01-01T00:00:05Z"),
        Verdict.DNS_BLOCKED,
        "NXDOMAIN",
    )
    b.publish(blocked)
    b.count(blocked)
    b.publish(Result(measurement(OPEN, "censored", ok=False), Verdict.DNS_BLOCKED, "NXDOMAIN"))
    return b


def scrape(b: Board, accept: str | None = None) -> tuple[str, str]:
    body, content_type = encode(registry_for(b), accept)
    return body.decode(), content_type


def samples(text: str) -> list[Sample]:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def value(text: str, name: str, **labels: str) -> float:
    found = [
        s.value for s in samples(text) if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_current_verdict_is_one_and_every_other_verdict_zero() -> None:
    text, _ = scrape(board())
    key = {"service": "open", "target": OPEN, "vantage": "censored"}
    assert value(text, "lifeline_verdict", **key, verdict="dns_blocked") == 1
    assert value(text, "lifeline_verdict", **key, verdict="ok") == 0
    assert sum(s.value for s in samples(text) if s.name == "lifeline_verdict") == 6
    assert value(text, "lifeline_reachable", **key) == 0
    assert value(text, "lifeline_reachable", service="open", target=OPEN, vantage="control") == 1


def test_change_timestamp_is_when_the_verdict_began_not_the_latest_measurement() -> None:
    text, _ = scrape(board())
    key = {"service": "open", "target": OPEN, "vantage": "censored"}
    assert value(text, "lifeline_verdict_change_timestamp_seconds", **key) == epoch(
        "2026-01-01T00:00:05Z"
    )
    assert value(text, "lifeline_last_measurement_timestamp_seconds", **key) == epoch(
        "2026-01-01T00:00:10Z"
    )


def test_stage_durations_service_ratio_and_counters() -> None:
    text, _ = scrape(board())
    ctl = {"service": "open", "target": OPEN, "vantage": "control"}
    assert value(text, "lifeline_stage_duration_seconds", **ctl, stage="tls") == 0.03
    assert not [
        s
        for s in samples(text)
        if s.name == "lifeline_stage_duration_seconds"
        and s.labels["vantage"] == "censored"
        and s.labels["target"] == OPEN
        and s.labels["stage"] != "dns"
    ]  # stages that did not run are absent
    assert (
        value(text, "lifeline_service_reachable_ratio", service="open", vantage="censored") == 0.5
    )
    assert value(text, "lifeline_service_reachable_ratio", service="open", vantage="control") == 1
    assert (
        value(
            text,
            "lifeline_measurements_total",
            service="open",
            vantage="censored",
            verdict="dns_blocked",
        )
        == 1
    )


def test_vantage_metrics_and_health() -> None:
    text, _ = scrape(board())
    assert (
        value(
            text,
            "lifeline_vantage_info",
            vantage="censored",
            control="false",
            country="IR",
            timezone="Asia/Tehran",
        )
        == 1
    )
    assert value(text, "lifeline_vantage_info", vantage="control", control="true") == 1
    assert value(text, "lifeline_vantage_up", vantage="censored") == 1
    assert value(text, "lifeline_build_info") == 1
    assert value(text, "lifeline_skipped_measurements_total") == 0
    assert value(text, "lifeline_log_write_failures_total") == 0
    assert value(text, "lifeline_config_last_reload_successful") == 1


def test_a_vantage_whose_canaries_all_fail_is_down() -> None:
    b = board()
    b.publish(
        Result(
            measurement(CANARY, "censored", service=CANARY_SERVICE, ok=False),
            Verdict.VANTAGE_DOWN,
            "every canary fails",
        )
    )
    text, _ = scrape(b)
    assert value(text, "lifeline_vantage_up", vantage="censored") == 0


def test_label_values_come_only_from_the_config() -> None:
    text, _ = scrape(board())
    allowed = {OPEN, OTHER, CANARY}
    for s in samples(text):
        if "target" in s.labels:
            assert s.labels["target"] in allowed
        if "vantage" in s.labels:
            assert s.labels["vantage"] in {"control", "censored"}


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    b = board()
    text, content_type = scrape(b, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    strict = list(openmetrics_families(text))  # type: ignore[no-untyped-call]  # strict parser
    assert "lifeline_verdict" in {f.name for f in strict}
    plain, plain_type = scrape(b, "text/plain")
    assert plain_type.startswith("text/plain")
    assert "# EOF" not in plain


def test_probe_registry_is_blackbox_shaped() -> None:
    result = Result(measurement(OPEN, "censored"), Verdict.OK, "fine")
    body, _ = encode(probe_registry(result, 1.25), None)
    text = body.decode()
    assert value(text, "probe_success") == 1
    assert value(text, "probe_duration_seconds") == 1.25
    assert value(text, "probe_dns_lookup_time_seconds") == 0.01
    assert value(text, "probe_http_status_code") == 200
    phases = {
        s.labels["phase"]: s.value for s in samples(text) if s.name == "probe_http_duration_seconds"
    }
    assert phases == {
        "resolve": 0.01,
        "connect": 0.02,
        "tls": 0.03,
        "processing": 0.03,
        "transfer": 0.01,
    }
    assert value(text, "lifeline_verdict", verdict="ok") == 1


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)"
)
def test_promtool_accepts_the_exposition() -> None:
    text, _ = scrape(board())
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the incremental page: the same bytes as the reference collector -------------------------

ACCEPTS = [
    None,
    "text/plain",
    "text/plain;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0; charset=utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_the_page_is_byte_for_byte_the_collectors_exposition(accept: str | None) -> None:
    b = board()
    page = MetricsPage(b)
    assert page.render(accept) == encode(registry_for(b), accept)


def test_the_page_follows_changes_of_verdicts_times_and_the_config() -> None:
    b = board()
    page = MetricsPage(b)
    page.render(None)
    b.publish(Result(measurement(OPEN, "censored", t="2026-01-01T00:01:00Z"), Verdict.OK, "back"))
    text = page.render(None)[0].decode()
    assert text == encode(registry_for(b), None)[0].decode()
    key = {"service": "open", "target": OPEN, "vantage": "censored"}
    assert value(text, "lifeline_verdict", **key, verdict="ok") == 1
    assert value(text, "lifeline_last_measurement_timestamp_seconds", **key) == epoch(
        "2026-01-01T00:01:00Z"
    )
    b.retarget(parse_config(CONFIG.replace(", https://open.lifeline.test/other", "")))
    text = page.render("application/openmetrics-text")[0].decode()
    assert OTHER not in text
    assert text == encode(registry_for(b), "application/openmetrics-text")[0].decode()


@pytest.mark.parametrize("accept", ACCEPTS)
def test_the_page_in_chunks_and_gzipped_is_the_collectors_exposition(accept: str | None) -> None:
    """Many series (several chunks per family): written in pieces or gzipped, the same bytes."""
    targets = ", ".join(f"https://t{i}.lifeline.test/" for i in range(CHUNK_SERIES // 2 + 10))
    b = Board(parse_config(CONFIG.replace("https://open.lifeline.test/other", targets)))
    for i, (service, target, vantage) in enumerate(b.keys()):
        ok = i % 3 != 0
        verdict = Verdict.OK if ok else Verdict.DNS_BLOCKED
        b.publish(Result(measurement(target, vantage, service=service, ok=ok), verdict, "x"))
    expected, content_type = encode(registry_for(b), accept)
    page = MetricsPage(b).exposition(accept)
    assert page.content_type == content_type
    assert b"".join(page.chunks()) == expected
    assert page.length == len(expected)
    assert gzip.decompress(page.gzipped()) == expected


def test_a_scrape_is_the_page_as_it_was_when_the_scrape_began() -> None:
    b = board()
    before = encode(registry_for(b), None)[0]
    page = MetricsPage(b).exposition(None)
    b.publish(Result(measurement(OPEN, "censored", t="2026-01-01T00:01:00Z"), Verdict.OK, "back"))
    assert page.body() == before


def test_label_values_are_escaped_as_the_library_escapes_them() -> None:
    odd = 'https://odd.lifeline.test/a"b\\c'
    b = Board(parse_config(CONFIG.replace("https://open.lifeline.test/other", f"'{odd}'")))
    b.publish(Result(measurement(odd, "censored"), Verdict.OK, "fine"))
    page = MetricsPage(b)
    for accept in (None, "application/openmetrics-text"):
        assert page.render(accept) == encode(registry_for(b), accept)
    assert value(page.render(None)[0].decode(), "lifeline_reachable", target=odd) == 1


def test_lateness_is_a_histogram_with_late_measurements_counted() -> None:
    b = board()
    b.lateness.observe(0.2, interval=60.0)
    b.lateness.observe(7.0, interval=60.0)
    b.lateness.observe(75.0, interval=60.0)  # more than an interval late
    text = MetricsPage(b).render(None)[0].decode()
    assert value(text, "lifeline_measurement_lateness_seconds_count") == 3
    assert value(text, "lifeline_measurement_lateness_seconds_bucket", le="0.5") == 1
    assert value(text, "lifeline_measurement_lateness_seconds_bucket", le="10.0") == 2
    assert value(text, "lifeline_measurement_lateness_seconds_bucket", le="+Inf") == 3
    assert value(text, "lifeline_measurement_lateness_seconds_sum") == 82.2
    assert value(text, "lifeline_late_measurements_total") == 1


@pytest.mark.parametrize("accept", ACCEPTS)
def test_the_probe_answer_is_byte_for_byte_the_registrys(accept: str | None) -> None:
    for verdict, ok in ((Verdict.OK, True), (Verdict.DNS_BLOCKED, False)):
        result = Result(measurement(OPEN, "censored", ok=ok), verdict, "x")
        got = ProbeExposition().render(result, 0.75, accept)
        assert got == encode(probe_registry(result, 0.75), accept)


def test_the_page_follows_publishes_between_scrapes_a_restore_and_a_new_config() -> None:
    """Series rendered as they are published, a restore and a reload between: the same bytes."""
    from exporter.store import Latest

    b = board()
    page = MetricsPage(b)
    b.publish(Result(measurement(OPEN, "censored", t="2026-01-01T00:01:00Z"), Verdict.OK, "back"))
    b.publish(Result(measurement(OPEN, "censored", t="2026-01-01T00:02:00Z"), Verdict.OK, "ok"))
    assert page.render(None) == encode(registry_for(b), None)
    b.restore([Latest("open", OTHER, "control", "anomaly", "odd", "2026-01-01T00:00:30Z", "")])
    b.publish(Result(measurement(OPEN, "control", t="2026-01-01T00:03:00Z"), Verdict.OK, "fine"))
    assert page.render(None) == encode(registry_for(b), None)
    b.retarget(parse_config(CONFIG.replace(", https://open.lifeline.test/other", "")))
    b.publish(Result(measurement(OPEN, "censored", t="2026-01-01T00:04:00Z"), Verdict.OK, "ok"))
    text = page.render(None)[0]
    assert text == encode(registry_for(b), None)[0] and OTHER.encode() not in text
