"""The incident model (exporter/incidents.py) on synthetic verdict periods."""

from __future__ import annotations

from exporter.incidents import RANK, Period, build_incidents, select_incidents
from probes.records import Verdict
from probes.timefmt import rfc3339

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def at(minutes: float) -> str:
    return rfc3339(T0 + minutes * 60)


def period(
    service: str, target: str, vantage: str, verdict: str, since: float, until: float | None
) -> Period:
    return Period(
        service, target, vantage, verdict, at(since), None if until is None else at(until),
        f"judged {verdict}",
    )  # fmt: skip


def test_one_incident_per_service_vantage_and_method() -> None:
    periods = [
        period("news", "https://news.example/", "ir", "dns_blocked", 0, None),
        period("news", "dns://news.example", "ir", "dns_blocked", 1, None),
        period("news", "https://news.example/", "kz", "dns_blocked", 0, None),
        period("chat", "https://chat.example/", "ir", "tls_blocked", 2, None),
        period("chat", "https://chat.example/", "ir", "ok", 0, 2),
    ]
    got = build_incidents(periods)
    assert [(i.verdict, i.service, i.vantage, len(i.targets)) for i in got] == [
        ("dns_blocked", "news", "ir", 2),
        ("dns_blocked", "news", "kz", 1),
        ("tls_blocked", "chat", "ir", 1),
    ]
    first = got[0]
    assert first.ongoing and first.since == "2026-01-01T00:00:00Z" and first.until is None
    assert first.reason == "judged dns_blocked"


def test_a_down_vantage_is_one_incident_holding_its_services() -> None:
    periods = [
        period(s, f"https://{s}-{n}.example/", "shutdown", "vantage_down", n, None)
        for s in ("news", "chat", "video", "canaries")
        for n in range(4)
    ]
    periods.append(period("news", "https://news-0.example/", "ir", "tcp_blocked", 0, None))
    got = build_incidents(periods)
    assert [(i.verdict, i.vantage) for i in got] == [
        ("vantage_down", "shutdown"),
        ("tcp_blocked", "ir"),
    ]
    down = got[0]
    assert down.service is None
    assert down.services == ("chat", "news", "video")  # the canaries only say it is down
    assert len(down.targets) == 16 and down.start == T0
    assert select_incidents(got, services=["video"]) == [down]
    assert select_incidents(got, vantages=["ir"]) == [got[1]]


def test_an_outage_seen_everywhere_is_one_service_down_incident() -> None:
    periods = [
        period("down", "https://down.example/", v, "service_down", 0, None)
        for v in ("control", "ir", "kz")
    ] + [period("down", "tcp://down.example:443", v, "service_down", 1, None) for v in ("ir",)]
    (outage,) = build_incidents(periods)
    assert (outage.verdict, outage.service, outage.vantage) == ("service_down", "down", None)
    assert outage.vantages == ("control", "ir", "kz")
    assert outage.to_dict(T0)["vantage"] is None
    assert select_incidents([outage], vantages=["kz"]) == [outage]


def test_overlapping_and_touching_periods_merge_and_end_with_the_last() -> None:
    periods = [
        period("news", "https://a.example/", "ir", "http_blocked", 0, 10),
        period("news", "https://b.example/", "ir", "http_blocked", 5, 20),
        period("news", "https://c.example/", "ir", "http_blocked", 20, 30),  # touches b's end
        period("news", "https://a.example/", "ir", "http_blocked", 31, None),  # after: a new one
    ]
    ongoing, ended = build_incidents(periods)
    assert ended.start == T0 and ended.end == T0 + 30 * 60 and not ended.ongoing
    assert ended.until == "2026-01-01T00:30:00Z"
    assert len(ended.targets) == 3
    assert ended.to_dict(T0 + 3600)["duration"] == "30m"
    assert ongoing.ongoing and ongoing.start == T0 + 31 * 60
    assert ongoing.to_dict(T0 + 31 * 60 + 90)["duration"] == "1m"


def test_an_incident_ends_when_no_target_has_the_method_any_more() -> None:
    periods = [
        period("news", "https://a.example/", "ir", "dns_blocked", 0, 10),
        period("news", "https://a.example/", "ir", "ok", 10, None),
        period("news", "https://b.example/", "ir", "dns_blocked", 0, None),
    ]
    (i,) = build_incidents(periods)
    assert i.ongoing  # b still has it
    periods[2] = period("news", "https://b.example/", "ir", "dns_blocked", 0, 12)
    (i,) = build_incidents(periods)
    assert i.end == T0 + 12 * 60
    # a method change is another incident: tcp after dns
    periods.append(period("news", "https://b.example/", "ir", "tcp_blocked", 12, None))
    assert [x.verdict for x in build_incidents(periods)] == ["tcp_blocked", "dns_blocked"]


def test_worst_first_shutdown_then_blocking_then_anomaly_then_outage_then_error() -> None:
    verdicts = ["error", "service_down", "anomaly", "throttled", "http_blocked",
                "tls_blocked", "tcp_blocked", "dns_blocked", "vantage_down"]  # fmt: skip
    periods = [
        period(f"s{n}", "https://x.example/", "ir", v, n, None) for n, v in enumerate(verdicts)
    ]
    assert [i.verdict for i in build_incidents(periods)] == verdicts[::-1]
    assert sorted(RANK, key=RANK.__getitem__)[0] == Verdict.VANTAGE_DOWN


def test_last_measured_and_the_since_and_ongoing_filters() -> None:
    key = ("news", "https://a.example/", "ir")
    periods = [
        period(*key, "dns_blocked", 0, 10),
        period(*key, "dns_blocked", 60, None),
    ]
    got = build_incidents(periods, last_measured={key: at(90)})
    assert got[0].to_dict(T0)["last_measured"] == "2026-01-01T01:30:00Z"
    assert got[1].to_dict(T0)["last_measured"] is None  # ended: nothing to confirm
    assert select_incidents(got, ongoing=True) == [got[0]]
    assert select_incidents(got, since=T0 + 30 * 60) == [got[0]]
    assert select_incidents(got, since=T0 + 5 * 60) == got
