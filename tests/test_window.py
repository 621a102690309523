"""`lifeline window`: ranking maintenance windows by harm to regions in crisis.

Every test runs on a fixed clock. Local times come from the tz database of
this machine through zoneinfo; the first test checks that it knows 2009 Iran.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter.store import Latest, VerdictChange
from exporter.window import (
    DEFAULT_ACTIVITY,
    SCHEMA,
    RegionState,
    WindowScore,
    dependence_factor,
    parse_when,
    rank_windows,
    region_states,
    render_table,
    score_window,
    to_json,
)
from probes.model import CANARY_SERVICE, ResolverSpec, Vantage

HOUR = timedelta(hours=1)
#: A curve where every local hour has its own value, so a test can tell which hours were counted.
DISTINCT = tuple(float(2**h) for h in range(24))
FLAT = (1.0,) * 24
NOW_2009 = datetime(2009, 6, 16, 3, 10, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def vantage(
    name: str, tz: str | None, country: str | None = None, control: bool = False
) -> Vantage:
    return Vantage(
        name=name,
        resolver=ResolverSpec(kind="udp", host="127.0.0.1", port=5353),
        control=control,
        country=country,
        timezone=tz,
    )


def calm(name: str, tz: str) -> RegionState:
    return RegionState(name, tz, None, blocked=0, total=10, shutdown_recent=False, recent_changes=0)


def result(
    vantage: str,
    target: str,
    verdict: str,
    when: str = "2009-06-16T03:00:00Z",
    service: str = "twitter",
) -> Latest:
    return Latest(service, target, vantage, verdict, reason="", since=when, time=when)


def change(
    vantage: str,
    target: str,
    verdict: str,
    since: str,
    until: str | None = None,
    service: str = "twitter",
    previous: str | None = "ok",
) -> VerdictChange:
    return VerdictChange(service, target, vantage, verdict, previous, since, until, reason="")


def harm_of(score: WindowScore, vantage: str) -> float:
    return next(h.harm for h in score.regions if h.vantage == vantage)


# --- the 2009 case ------------------------------------------------------------------------


def test_tz_database_knows_tehran_summer_time_of_2009() -> None:
    tehran = ZoneInfo("Asia/Tehran")
    assert utc(2009, 6, 16, 5).astimezone(tehran).utcoffset() == timedelta(hours=4, minutes=30)
    assert utc(2009, 1, 16, 5).astimezone(tehran).utcoffset() == timedelta(hours=3, minutes=30)
    # Iran stopped daylight saving in 2022: summer is +03:30 now.
    assert utc(2024, 6, 16, 5).astimezone(tehran).utcoffset() == timedelta(hours=3, minutes=30)


def iran_2009() -> tuple[list[Latest], list[VerdictChange], list[Vantage]]:
    """Tehran in crisis on 2009-06-16: 15 of 20 targets blocked, churn, a recent shutdown."""
    blocked_verdicts = ["dns_blocked", "tcp_blocked", "tls_blocked", "http_blocked", "throttled"]
    results = []
    for i in range(20):
        verdict = blocked_verdicts[i % 5] if i < 15 else "ok"
        results.append(result("tehran", f"https://t{i}.example/", verdict))
        results.append(result("california", f"https://t{i}.example/", "ok"))
        results.append(result("control", f"https://t{i}.example/", "ok"))
    changes = [
        change("tehran", f"https://t{i}.example/", "dns_blocked", f"2009-06-15T{10 + i}:00:00Z")
        for i in range(6)
    ]
    changes.append(
        change(
            "tehran",
            "https://canary.example/",
            "vantage_down",
            "2009-06-15T12:00:00Z",
            "2009-06-15T14:00:00Z",
            service=CANARY_SERVICE,
        )
    )
    vantages = [
        vantage("control", "Europe/Amsterdam", "NL", control=True),
        vantage("tehran", "Asia/Tehran", "IR"),
        vantage("california", "America/Los_Angeles", "US"),
    ]
    return results, changes, vantages


def test_2009_midday_in_tehran_is_worse_than_night_in_tehran() -> None:
    regions = region_states(*iran_2009(), now=NOW_2009)
    assert [r.vantage for r in regions] == ["tehran", "california"]
    tehran = regions[0]
    assert (tehran.blocked, tehran.total) == (15, 20)
    assert tehran.shutdown_recent and tehran.recent_changes == 6

    morning = score_window(regions, utc(2009, 6, 16, 5), HOUR)
    night = score_window(regions, utc(2009, 6, 16, 21), HOUR)

    assert morning.harm > night.harm
    assert harm_of(morning, "tehran") > 3 * harm_of(night, "tehran")
    assert morning.regions[0].vantage == "tehran"  # --check names who it hurts most
    morning_text = "\n".join(morning.explanation)
    night_text = "\n".join(night.explanation)
    assert "05:00-06:00 UTC = 09:30-10:30 Asia/Tehran (morning, weight 0.85)" in morning_text
    assert "05:00-06:00 UTC = 22:00-23:00 America/Los_Angeles" in morning_text
    assert "21:00-22:00 UTC = 01:30-02:30 Asia/Tehran (night, weight 0.15)" in night_text
    assert "21:00-22:00 UTC = 14:00-15:00 America/Los_Angeles (afternoon" in night_text
    assert "15 of 20 targets blocked, shutdown in the last 24h" in night_text
    assert "6 verdict changes in the last 24h" in night_text


def test_2009_best_window_of_the_day_is_night_in_tehran() -> None:
    regions = region_states(*iran_2009(), now=NOW_2009)
    best = rank_windows(regions, duration=HOUR, now=NOW_2009, within=timedelta(hours=24))[0]
    tehran_local = best.start.astimezone(ZoneInfo("Asia/Tehran"))
    assert 0 <= tehran_local.hour < 6
    assert best.start.astimezone(ZoneInfo("America/Los_Angeles")).hour >= 6


# --- reading the state --------------------------------------------------------------


def test_control_and_vantages_without_timezone_are_not_regions() -> None:
    vantages = [
        vantage("control", "UTC", control=True),
        vantage("lab", None),
        vantage("ir", "Asia/Tehran"),
    ]
    assert [r.vantage for r in region_states([], [], vantages, now=NOW_2009)] == ["ir"]


def test_counts_blocking_verdicts_of_latest_results_without_canaries() -> None:
    results = [
        result("ir", "https://a/", "dns_blocked", "2009-06-16T01:00:00Z"),
        result("ir", "https://a/", "ok", "2009-06-16T02:00:00Z"),  # newer: a is open again
        result("ir", "https://b/", "throttled"),
        result("ir", "https://c/", "anomaly"),
        result("ir", "https://d/", "service_down"),
        result("ir", "https://canary/", "dns_blocked", service=CANARY_SERVICE),
        result("other", "https://b/", "tcp_blocked"),
    ]
    (region,) = region_states(results, [], [vantage("ir", "Asia/Tehran")], now=NOW_2009)
    assert (region.blocked, region.total) == (1, 4)
    assert not region.shutdown_recent


def test_shutdown_and_changes_only_count_within_the_lookback() -> None:
    v = [vantage("ir", "Asia/Tehran")]
    old = [
        change("ir", "https://a/", "vantage_down", "2009-06-10T00:00:00Z", "2009-06-14T00:00:00Z"),
        change("ir", "https://a/", "ok", "2009-06-14T00:00:00Z", "2009-06-15T02:00:00Z"),
    ]
    (region,) = region_states([], old, v, now=NOW_2009)
    assert not region.shutdown_recent and region.recent_changes == 0

    recent = [
        change("ir", "https://a/", "vantage_down", "2009-06-14T00:00:00Z", "2009-06-15T04:00:00Z"),
        change("ir", "https://a/", "tls_blocked", "2009-06-15T04:00:00Z"),
        change("ir", "https://b/", "ok", "2009-06-16T03:10:00Z"),
        change("ir", "https://c/", "ok", "2009-06-16T04:00:00Z"),  # after now: not yet
    ]
    (region,) = region_states([], recent, v, now=NOW_2009)
    assert region.shutdown_recent and region.recent_changes == 2
    (short,) = region_states([], recent, v, now=NOW_2009, lookback=timedelta(hours=1))
    assert not short.shutdown_recent and short.recent_changes == 1


def test_first_verdict_of_a_target_is_not_a_change() -> None:
    first = change("ir", "https://a/", "ok", "2009-06-16T01:00:00Z", previous=None)
    then = change("ir", "https://a/", "dns_blocked", "2009-06-16T02:00:00", previous="ok")
    (region,) = region_states([], [first, then], [vantage("ir", "Asia/Tehran")], now=NOW_2009)
    assert region.recent_changes == 1  # and the stored time without offset is read as UTC


def test_current_vantage_down_is_a_shutdown() -> None:
    results = [result("ir", "https://a/", "vantage_down")]
    (region,) = region_states(results, [], [vantage("ir", "Asia/Tehran")], now=NOW_2009)
    assert region.shutdown_recent


def test_bad_inputs_are_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        region_states([], [], [vantage("ir", "Asia/Tehrn")], now=NOW_2009)
    with pytest.raises(ValueError, match="not an RFC 3339 time"):
        region_states(
            [result("ir", "https://a/", "ok", "yesterday")],
            [],
            [vantage("ir", "Asia/Tehran")],
            now=NOW_2009,
        )
    with pytest.raises(ValueError, match="timezone"):
        score_window([], datetime(2009, 6, 16, 5), HOUR)
    with pytest.raises(ValueError, match="24 weights"):
        score_window([], utc(2009, 6, 16, 5), HOUR, activity=[1.0] * 23)
    with pytest.raises(ValueError, match="positive"):
        score_window([], utc(2009, 6, 16, 5), timedelta(0))


# --- dependence ---------------------------------------------------------------------


def test_region_in_crisis_counts_more_than_calm_one_at_same_local_hour() -> None:
    crisis = RegionState("ir", "Asia/Tehran", "IR", 12, 20, shutdown_recent=True, recent_changes=3)
    quiet = calm("ir2", "Asia/Tehran")
    score = score_window([crisis, quiet], utc(2009, 6, 16, 5), HOUR)
    assert harm_of(score, "ir") > harm_of(score, "ir2") > 0
    assert [h.vantage for h in score.regions] == ["ir", "ir2"]

    # The same local hour in another zone: 10:30 in Kolkata (+05:30) and in Tehran (+04:30).
    in_india = score_window([calm("in", "Asia/Kolkata")], utc(2009, 6, 16, 5), HOUR)
    in_iran_same_hour = score_window([crisis], utc(2009, 6, 16, 6), HOUR)
    assert in_india.regions[0].local_span == "10:30-11:30 Asia/Kolkata"
    assert in_iran_same_hour.regions[0].local_span == "10:30-11:30 Asia/Tehran"
    assert in_iran_same_hour.regions[0].hour_weight == in_india.regions[0].hour_weight
    assert in_iran_same_hour.harm > in_india.harm


def test_dependence_grows_with_each_kind_of_trouble() -> None:
    base = calm("x", "UTC")
    blocked = RegionState("x", "UTC", None, 5, 10, False, 0)
    shutdown = RegionState("x", "UTC", None, 0, 10, True, 0)
    churn = RegionState("x", "UTC", None, 0, 10, False, 2)
    more_churn = RegionState("x", "UTC", None, 0, 10, False, 4)
    nothing_measured = RegionState("x", "UTC", None, 0, 0, False, 0)
    assert dependence_factor(base) == dependence_factor(nothing_measured) == 1.0
    for worse in (blocked, shutdown, churn):
        assert dependence_factor(worse) > dependence_factor(base)
    assert dependence_factor(more_churn) > dependence_factor(churn)


# --- time zones ---------------------------------------------------------------------


def test_half_hour_zone_kolkata_splits_the_hour() -> None:
    score = score_window(
        [calm("in", "Asia/Kolkata")], utc(2009, 6, 16, 21), HOUR, activity=DISTINCT
    )
    (h,) = score.regions
    assert h.local_span == "02:30-03:30 Asia/Kolkata"  # already the 17th there
    assert h.local_start == "2009-06-17T02:30:00+05:30"
    assert h.harm == pytest.approx(0.5 * DISTINCT[2] + 0.5 * DISTINCT[3])


def test_adelaide_is_plus_0930_in_winter_and_plus_1030_in_summer() -> None:
    region = [calm("au", "Australia/Adelaide")]
    june = score_window(region, utc(2024, 6, 16, 5), HOUR).regions[0]
    january = score_window(region, utc(2024, 1, 16, 5), HOUR).regions[0]
    assert june.local_span == "14:30-15:30 Australia/Adelaide"
    assert january.local_span == "15:30-16:30 Australia/Adelaide"


def test_window_across_dst_start_counts_real_time_in_the_hours_lived() -> None:
    # Adelaide 2024-10-06 02:00 ACST (+09:30) jumps to 03:00 ACDT (+10:30) at 16:30 UTC.
    score = score_window(
        [calm("au", "Australia/Adelaide")],
        utc(2024, 10, 5, 16),
        timedelta(minutes=90),
        activity=DISTINCT,
    )
    (h,) = score.regions
    assert h.local_span == "01:30-04:00 Australia/Adelaide, clocks change UTC+09:30 -> UTC+10:30"
    # 30 minutes of local hour 1, none of the skipped hour 2, 60 minutes of hour 3.
    assert h.harm == pytest.approx(0.5 * DISTINCT[1] + 1.0 * DISTINCT[3])
    assert h.hour_weight == pytest.approx(h.harm / 1.5)
    assert "clocks change" in score.explanation[1]


def test_clock_change_in_the_middle_of_a_local_hour() -> None:
    # Chatham 2024-09-29: at 02:45 local (+12:45) clocks jump to 03:45 (+13:45), mid-hour.
    score = score_window(
        [calm("nz", "Pacific/Chatham")], utc(2024, 9, 28, 13, 15), HOUR, activity=DISTINCT
    )
    (h,) = score.regions
    assert h.local_span == "02:00-04:00 Pacific/Chatham, clocks change UTC+12:45 -> UTC+13:45"
    assert h.harm == pytest.approx(0.75 * DISTINCT[2] + 0.25 * DISTINCT[3])


def test_window_across_dst_end_counts_the_repeated_hour_twice() -> None:
    # Los Angeles 2009-11-01: 01:00-02:00 is lived twice (PDT, then PST).
    score = score_window(
        [calm("la", "America/Los_Angeles")], utc(2009, 11, 1, 8), 2 * HOUR, activity=DISTINCT
    )
    (h,) = score.regions
    # Two real hours, though the wall clock moves by one.
    assert h.local_span == "01:00-02:00 America/Los_Angeles, clocks change UTC-07:00 -> UTC-08:00"
    assert h.harm == pytest.approx(2 * DISTINCT[1])
    assert h.hours == 2


def test_window_across_local_midnight() -> None:
    score = score_window(
        [calm("ir", "Asia/Tehran")], utc(2009, 6, 16, 19), 2 * HOUR, activity=DISTINCT
    )
    (h,) = score.regions
    assert h.local_span == "23:30-01:30+1d Asia/Tehran"
    assert h.harm == pytest.approx(0.5 * DISTINCT[23] + DISTINCT[0] + 0.5 * DISTINCT[1])


def test_tehran_no_longer_has_summer_time() -> None:
    region = [calm("ir", "Asia/Tehran")]
    in_2009 = score_window(region, utc(2009, 6, 16, 21), HOUR).regions[0]
    in_2024 = score_window(region, utc(2024, 6, 16, 21), HOUR).regions[0]
    assert in_2009.local_span == "01:30-02:30 Asia/Tehran"
    assert in_2024.local_span == "00:30-01:30 Asia/Tehran"


# --- ranking ------------------------------------------------------------------------


def test_rank_respects_not_before_within_and_step() -> None:
    regions = [calm("ir", "Asia/Tehran"), calm("la", "America/Los_Angeles")]
    not_before = utc(2009, 6, 16, 10, 7)
    within = timedelta(hours=30)
    duration = 2 * HOUR
    step = timedelta(minutes=45)
    scores = rank_windows(
        regions,
        duration=duration,
        now=NOW_2009,
        within=within,
        not_before=not_before,
        step=step,
        top=1000,
    )
    starts = sorted(s.start for s in scores)
    assert starts[0] == utc(2009, 6, 16, 10, 30)  # 10:07 rounded up to the 45-minute grid
    assert all((s - utc(1970, 1, 1)) % step == timedelta(0) for s in starts)
    assert all(b - a == step for a, b in itertools.pairwise(starts))
    assert starts[-1] + duration <= NOW_2009 + within < starts[-1] + step + duration
    assert all(s.end - s.start == duration for s in scores)
    harms = [s.harm for s in scores]
    assert harms == sorted(harms)
    assert len(rank_windows(regions, duration=duration, now=NOW_2009, top=3)) == 3


def test_rank_starts_at_now_rounded_up_and_ties_go_to_the_earlier_start() -> None:
    scores = rank_windows(
        [calm("ir", "Asia/Tehran")], duration=HOUR, now=NOW_2009, activity=FLAT, top=3
    )
    assert [s.start for s in scores] == [
        utc(2009, 6, 16, 3, 30),
        utc(2009, 6, 16, 4),
        utc(2009, 6, 16, 4, 30),
    ]
    past = rank_windows(
        [calm("ir", "Asia/Tehran")],
        duration=HOUR,
        now=NOW_2009,
        not_before=utc(2009, 6, 1),
        activity=FLAT,
        top=1,
    )
    assert past[0].start == utc(2009, 6, 16, 3, 30)


def test_rank_returns_nothing_when_no_window_fits() -> None:
    regions = [calm("ir", "Asia/Tehran")]
    assert rank_windows(regions, duration=4 * HOUR, now=NOW_2009, within=3 * HOUR) == []


def test_rank_best_first_prefers_the_quiet_hours() -> None:
    regions = [calm("ir", "Asia/Tehran")]
    scores = rank_windows(regions, duration=HOUR, now=NOW_2009, within=timedelta(hours=24), top=48)
    best, worst = scores[0], scores[-1]
    assert best.harm < worst.harm
    assert best.start.astimezone(ZoneInfo("Asia/Tehran")).hour in range(2, 5)


# --- input and output ---------------------------------------------------------------


def test_parse_when_needs_an_offset_and_returns_utc() -> None:
    assert parse_when("2009-06-15T22:00-07:00") == utc(2009, 6, 16, 5)
    assert parse_when("2009-06-15T22:00Z") == utc(2009, 6, 15, 22)
    assert parse_when(" 2009-06-15T22:00:30+04:30 ").tzinfo is UTC
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_when("2009-06-15T22:00")
    with pytest.raises(ValueError, match="cannot read"):
        parse_when("tomorrow night")


def test_table_shows_every_window_in_utc_and_every_local_time() -> None:
    regions = region_states(*iran_2009(), now=NOW_2009)
    scores = [score_window(regions, utc(2009, 6, 16, 21), HOUR)]
    table = render_table(scores, regions)
    assert "2009-06-16 21:00-22:00 UTC" in table
    assert "01:30-02:30 Asia/Tehran" in table
    assert "14:00-15:00 America/Los_Angeles" in table
    assert "tehran (IR, Asia/Tehran): crisis factor" in table
    assert "No candidate window fits." in render_table([], regions)


def test_json_document_is_serializable_and_in_utc() -> None:
    regions = region_states(*iran_2009(), now=NOW_2009)
    scores = rank_windows(regions, duration=HOUR, now=NOW_2009, top=2)
    doc: Mapping[str, Any] = json.loads(json.dumps(to_json(scores, regions)))
    assert doc["schema"] == SCHEMA == "lifeline.window/1"
    assert doc["activity"] == list(DEFAULT_ACTIVITY)
    assert [r["vantage"] for r in doc["regions"]] == ["tehran", "california"]
    first = doc["windows"][0]
    assert first["rank"] == 1 and first["start"].endswith("Z") and first["end"].endswith("Z")
    assert parse_when(first["start"]) == scores[0].start
    assert {r["vantage"] for r in first["regions"]} == {"tehran", "california"}
    assert first["explanation"] == list(scores[0].explanation)
    custom = rank_windows(regions, duration=HOUR, now=NOW_2009, activity=FLAT, top=1)
    assert to_json(custom, regions)["activity"] == list(FLAT)
    assert to_json([], regions)["windows"] == []


def test_no_regions_means_no_harm() -> None:
    score = score_window([], utc(2009, 6, 16, 5), HOUR)
    assert score.harm == 0 and score.regions == ()
    assert "no watched regions" in score.explanation[0]
