"""The schedule and confirmation policies, and the driver with a scripted measurer."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from pathlib import Path

from exporter.asyncstore import AsyncStore
from exporter.logs import ProbeLog, log_files, read_records
from exporter.scheduler import (
    MAX_IN_FLIGHT,
    MAX_PER_VANTAGE,
    Board,
    Confirmation,
    Decision,
    Monitor,
    SchedulePolicy,
    runner_bounds,
    slots_for,
)
from exporter.store import Latest
from probes.config import parse_config
from probes.model import CANARY_SERVICE, Config
from probes.records import DNSStage, Measurement, Result, Verdict
from probes.runner import Job, Observations

CONFIG = """
version: 1
defaults: {interval: 60s, timeout: 2s}
vantages:
  - {name: control, control: true, resolver: 127.0.0.1:5353, country: NL}
  - {name: censored, resolver: 127.0.0.1:5354, country: IR, timezone: Asia/Tehran}
canaries: [https://canary.lifeline.test/]
services:
  - name: open
    targets: [https://open.lifeline.test/, dns://open.lifeline.test]
  - name: other
    targets: [dns://other.lifeline.test]
"""


def config() -> Config:
    return parse_config(CONFIG)


# --- SchedulePolicy -------------------------------------------------------------------


def test_one_slot_per_target_holds_every_vantage_canaries_first() -> None:
    slots = slots_for(config())
    assert [(s.service, s.target.url) for s in slots] == [
        (CANARY_SERVICE, "https://canary.lifeline.test/"),
        ("open", "https://open.lifeline.test/"),
        ("open", "dns://open.lifeline.test"),
        ("other", "dns://other.lifeline.test"),
    ]
    for s in slots:
        assert sorted(j.vantage.name for j in s.jobs) == ["censored", "control"]


def test_slots_are_spread_over_the_interval_not_started_at_once() -> None:
    slots = slots_for(config())
    policy = SchedulePolicy(slots, 60.0, start=1000.0, rng=random.Random(1))
    first = policy.due(1000.0)
    assert len(first) <= 1  # no thundering herd at start
    started = [s for s, _ in first]
    for t in range(1001, 1060):
        started += [s for s, _ in policy.due(float(t))]
    assert sorted(s.key for s in started) == sorted(s.key for s in slots)  # all within one interval
    assert policy.skipped == 0


def test_a_measurement_still_running_is_skipped_and_counted_not_queued() -> None:
    slots = slots_for(config())[:1]
    policy = SchedulePolicy(slots, 10.0, start=0.0, rng=random.Random(2))
    ((slot, jobs),) = policy.due(10.0)
    assert jobs == slot.jobs  # every vantage of the target at once
    assert policy.due(20.0) == []  # still in flight: skipped
    assert policy.skipped == len(slot.jobs)
    assert policy.due(49.99) == []  # three more rounds passed while it ran
    assert policy.skipped == 4 * len(slot.jobs)
    for job in jobs:
        policy.finished(job)
    assert policy.due(60.0) == [(slot, slot.jobs)]  # runs again once, no backlog of missed rounds
    assert policy.due(60.0) == []


def test_a_slow_vantage_does_not_hold_back_the_others() -> None:
    slots = slots_for(config())[:1]
    policy = SchedulePolicy(slots, 10.0, start=0.0, rng=random.Random(5))
    ((slot, jobs),) = policy.due(10.0)
    slow = next(j for j in jobs if j.vantage.name == "censored")
    for job in jobs:
        if job is not slow:
            policy.finished(job)
    ((again, started),) = policy.due(20.0)
    assert again == slot
    assert [j.vantage.name for j in started] == ["control"]
    assert policy.skipped == 1
    assert not policy.complete


def test_a_driver_that_fell_behind_runs_each_slot_once() -> None:
    slots = slots_for(config())
    policy = SchedulePolicy(slots, 10.0, start=0.0, rng=random.Random(3))
    due = policy.due(1000.0)
    assert sorted(s.key for s, _ in due) == sorted(s.key for s in slots)
    jobs = sum(len(s.jobs) for s in slots)
    assert policy.skipped >= 98 * jobs  # the rounds that passed are counted as skipped
    assert policy.next_due() > 1000.0


def test_complete_after_every_measurement_finished_once() -> None:
    slots = slots_for(config())
    policy = SchedulePolicy(slots, 10.0, start=0.0, rng=random.Random(4))
    started = [j for _, jobs in policy.due(100.0) for j in jobs]
    for job in started[:-1]:
        policy.finished(job)
    assert not policy.complete
    policy.finished(started[-1])
    assert policy.complete


# --- Confirmation -------------------------------------------------------------------------


def result(
    verdict: Verdict, *, vantage: str = "censored", t: str = "2026-01-01T00:00:00Z"
) -> Result:
    m = Measurement(target="https://open.lifeline.test/", vantage=vantage, time=t, service="open")
    return Result(m, verdict, f"because {verdict}")


def test_first_verdict_is_published_without_confirmation() -> None:
    c = Confirmation()
    assert c.offer(result(Verdict.DNS_BLOCKED)) is Decision.PUBLISH


def test_a_change_is_published_only_when_the_reprobe_agrees() -> None:
    c = Confirmation()
    c.offer(result(Verdict.OK))
    first = result(Verdict.DNS_BLOCKED, t="2026-01-01T00:01:00Z")
    assert c.offer(first) is Decision.CONFIRM
    again = result(Verdict.DNS_BLOCKED, t="2026-01-01T00:01:01Z")
    assert c.settle(again) == [first, again]  # the change dates from the first sighting
    assert c.offer(result(Verdict.DNS_BLOCKED)) is Decision.PUBLISH


def test_a_blip_is_dropped_when_the_reprobe_is_back_to_normal() -> None:
    c = Confirmation()
    c.offer(result(Verdict.OK))
    assert c.offer(result(Verdict.TCP_BLOCKED)) is Decision.CONFIRM
    back = result(Verdict.OK)
    assert c.settle(back) == [back]
    assert c.offer(result(Verdict.OK)) is Decision.PUBLISH


def test_restored_verdicts_need_confirmation_to_change() -> None:
    key = ("open", "https://open.lifeline.test/", "censored")
    c = Confirmation({key: "dns_blocked"})
    assert c.offer(result(Verdict.OK)) is Decision.CONFIRM


# --- Monitor with a scripted measurer ---------------------------------------------------------


class Script:
    """A fake measurer: each (target, vantage) fails with the next scripted error, if any."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.failures: dict[tuple[str, str], list[str]] = {}
        self.calls: list[tuple[str, str]] = []
        self.closed = False

    def fail(self, target: str, vantage: str, *errors: str) -> None:
        self.failures.setdefault((target, vantage), []).extend(errors)

    async def measure(self, job: Job) -> Measurement:
        key = (job.target.url, job.vantage.name)
        self.calls.append(key)
        queue = self.failures.get(key, [])
        error = queue.pop(0) if queue else None
        return Measurement(
            target=job.target.url,
            vantage=job.vantage.name,
            time="2026-01-01T00:00:00Z",
            service=job.service,
            dns=DNSStage(
                ok=error is None,
                failure=error,
                duration_s=0.01,
                name=job.target.host,
                resolver="udp://127.0.0.1:5353",
            ),
        )

    def judge(self, obs: Measurement, observations: Observations) -> Result:
        if obs.succeeded:
            return Result(obs, Verdict.OK, "fine")
        ctl = observations.get(obs.service, obs.target, "control")
        ok_ctl = ctl is not None and ctl.succeeded
        return Result(obs, Verdict.DNS_BLOCKED if ok_ctl else Verdict.SERVICE_DOWN, "scripted")

    async def aclose(self) -> None:
        self.closed = True


def monitor_with(script: Script) -> Monitor:
    return Monitor(script.config, runner=lambda _: script)


def slot_of(monitor: Monitor, url: str) -> object:
    return next(s for s in slots_for(monitor.config) if s.target.url == url)


def verdicts(board: Board) -> dict[tuple[str, str], str]:
    return {(e.target, e.vantage): e.verdict for e in board.ordered()}


URL = "https://open.lifeline.test/"


async def run_slot(monitor: Monitor, url: str) -> None:
    slot = next(s for s in slots_for(monitor.config) if s.target.url == url)
    await monitor.measure_slot(slot)


async def test_one_lost_packet_pages_nobody() -> None:
    script = Script(config())
    monitor = monitor_with(script)
    await run_slot(monitor, URL)
    script.fail(URL, "censored", "dns_nxdomain_error")  # fails once only
    script.calls.clear()
    await run_slot(monitor, URL)
    assert verdicts(monitor.board)[(URL, "censored")] == "ok"
    # the re-probe measured that vantage and the control again
    assert sorted(script.calls) == sorted([(URL, "censored"), (URL, "control")] * 2)


async def test_a_real_block_is_published_after_one_reprobe() -> None:
    script = Script(config())
    monitor = monitor_with(script)
    await run_slot(monitor, URL)
    script.fail(URL, "censored", "dns_nxdomain_error", "dns_nxdomain_error")
    await run_slot(monitor, URL)
    entry = monitor.board.entries[("open", URL, "censored")]
    assert entry.verdict == "dns_blocked"
    assert monitor.board.measurements[("open", "censored", "dns_blocked")] == 2
    assert verdicts(monitor.board)[(URL, "control")] == "ok"


async def test_an_outage_at_the_control_is_service_down() -> None:
    script = Script(config())
    monitor = monitor_with(script)
    await run_slot(monitor, URL)
    script.fail(URL, "censored", *["connection_refused"] * 2)
    script.fail(
        URL, "control", *["connection_refused"] * 3
    )  # re-probed for itself and for censored
    await run_slot(monitor, URL)
    got = verdicts(monitor.board)
    assert got[(URL, "censored")] == got[(URL, "control")] == "service_down"


async def test_reload_drops_what_the_new_config_no_longer_names() -> None:
    script = Script(config())
    monitor = monitor_with(script)
    for s in slots_for(monitor.config):
        await monitor.measure_slot(s)
    smaller = parse_config(
        CONFIG.replace("  - name: other\n    targets: [dns://other.lifeline.test]\n", "")
    )
    await monitor.reload(smaller)
    assert {e.service for e in monitor.board.ordered()} == {"open", CANARY_SERVICE}
    assert all(k[0] != "other" for k in monitor.board.measurements)
    await monitor.aclose()
    assert script.closed


def restored_rows(rows: Iterable[dict[str, str]]) -> Board:
    board = Board(config())
    board.restore(Latest(**row) for row in rows)
    return board


def test_restore_keeps_since_and_ignores_unconfigured_keys() -> None:
    board = restored_rows(
        [
            {
                "service": "open",
                "target": URL,
                "vantage": "censored",
                "verdict": "dns_blocked",
                "reason": "r",
                "since": "2025-12-01T00:00:00Z",
                "time": "2026-01-01T00:00:00Z",
            },
            {
                "service": "gone",
                "target": URL,
                "vantage": "censored",
                "verdict": "ok",
                "reason": "r",
                "since": "2025-12-01T00:00:00Z",
                "time": "2026-01-01T00:00:00Z",
            },
        ]
    )
    assert [(e.service, e.verdict, e.since) for e in board.ordered()] == [
        ("open", "dns_blocked", "2025-12-01T00:00:00Z")
    ]
    m = Measurement(target=URL, vantage="censored", time="2026-01-02T00:00:00Z", service="open")
    board.publish(Result(m, Verdict.DNS_BLOCKED, "still"))
    assert board.entries[("open", URL, "censored")].since == "2025-12-01T00:00:00Z"


def test_vantage_is_down_when_every_canary_fails() -> None:
    board = Board(config())
    assert board.vantage_up("censored") is None
    canary = "https://canary.lifeline.test/"
    m = Measurement(
        target=canary,
        vantage="censored",
        time="2026-01-01T00:00:00Z",
        service=CANARY_SERVICE,
        error="proxy_error",
    )
    board.publish(Result(m, Verdict.VANTAGE_DOWN, "all canaries fail"))
    assert board.vantage_up("censored") is False


# --- at scale: the heap, the bounds, lateness, batched store writes -----------------------------


def big_config(targets: int, *, interval: str = "60s", timeout: str = "10s") -> Config:
    urls = ", ".join(f"https://t{i}.lifeline.test/" for i in range(targets))
    return parse_config(
        f"""
version: 1
defaults: {{interval: {interval}, timeout: {timeout}}}
vantages:
  - {{name: control, control: true, resolver: 127.0.0.1:5353}}
  - {{name: a, resolver: 127.0.0.1:5354}}
  - {{name: b, resolver: 127.0.0.1:5355}}
services:
  - {{name: s, targets: [{urls}]}}
"""
    )


def test_every_slot_comes_round_once_per_interval_in_due_order() -> None:
    policy = SchedulePolicy(slots_for(big_config(300)), 60.0, start=0.0, rng=random.Random(3))
    started: list[tuple[float, tuple[str, str]]] = []
    now = 0.0
    while now < 181.0:
        for slot, jobs, due in policy.due_at(now):
            assert due <= now
            started.append((due, slot.key))
            for job in jobs:
                policy.finished(job)
        assert policy.next_due() > now
        now += 0.25
    keys = [k for d, k in started if d < 180.0]
    assert len(keys) == 3 * 300 and len(set(keys)) == 300  # three rounds, each slot once a round
    assert [d for d, _ in started] == sorted(d for d, _ in started)
    assert policy.skipped == 0


def test_bounds_grow_with_the_config_but_stay_capped() -> None:
    assert runner_bounds(config(), fd_limit=65536) == (64, 24)  # a small config: the defaults
    # 1,000 targets x 10 s / 60 s: 167 places a vantage cover a round of black holes
    total, per_vantage = runner_bounds(big_config(1000), fd_limit=65536)
    assert per_vantage >= 1000 * 10 / 60 and total == min(MAX_IN_FLIGHT, 3 * per_vantage)
    total, per_vantage = runner_bounds(big_config(10_000), fd_limit=65536)
    assert (total, per_vantage) == (MAX_IN_FLIGHT, MAX_PER_VANTAGE)
    total, per_vantage = runner_bounds(big_config(10_000), fd_limit=1024)  # a default ulimit
    assert per_vantage <= total <= 1024 // 4


async def test_a_measurement_that_waited_is_counted_late() -> None:
    now = [1000.0]
    script = Script(config())
    monitor = Monitor(script.config, runner=lambda _: script, clock=lambda: now[0])
    policy = SchedulePolicy(slots_for(monitor.config), 60.0, start=now[0])
    slot = next(s for s in policy.slots if s.target.url == URL)
    await monitor.measure_slot(slot, policy=policy, due=now[0] - 7.0)  # started 7 s late
    await monitor.measure_slot(slot, policy=policy, due=now[0] - 90.0)  # over an interval
    lateness = monitor.board.lateness
    assert lateness.count == 2 * len(slot.jobs)
    assert lateness.late == len(slot.jobs)
    assert dict(lateness.cumulative())[10.0] == len(slot.jobs)


async def test_stopping_ends_even_as_a_slot_finishes(tmp_path: Path) -> None:
    """A stop that lands as the scheduler (or the store writer) is being woken still stops it.

    On Python 3.11 `asyncio.wait_for` drops a cancellation that arrives just as what
    it waits for completes; a loop around it then runs on and `serve` never exits
    (CI saw it killed after two minutes). Every few loop turns of that window are tried.
    """
    hung = []
    for turns in range(6):
        script = Script(config())
        store = AsyncStore(tmp_path / str(turns))
        await store.open()
        monitor = Monitor(script.config, store=store, runner=lambda _, s=script: s)
        try:
            await monitor.start()
            await asyncio.sleep(0.05)
            monitor._wake.set()  # what a finished slot does, and a full batch for the writer
            store._flush_now.set()
            for _ in range(turns):
                await asyncio.sleep(0)
            try:
                async with asyncio.timeout(30):  # a hang, not a speed: it takes milliseconds
                    await monitor.aclose()
            except TimeoutError:
                hung.append(turns)
        finally:
            for task in (monitor._loop_task, store._writer):
                if task is not None:
                    task.cancel()
            await store.aclose()
    assert hung == []


async def test_published_results_reach_the_store_batched_and_whole_at_stop(
    tmp_path: Path,
) -> None:
    script = Script(config())
    store = AsyncStore(tmp_path)
    await store.open()
    log = ProbeLog(tmp_path / "log")
    monitor = Monitor(script.config, store=store, log=log, runner=lambda _: script)
    try:
        await monitor.start()
        for slot in slots_for(monitor.config):
            await monitor.measure_slot(slot)
        await monitor.aclose()  # the last batch is written before the monitor stops
        stored = await store.measurements()
        logged = [r for p in log_files(tmp_path / "log") for r in read_records(p)]
        current = await store.current()
    finally:
        log.close()
        await store.aclose()
    published = {(e.service, e.target, e.vantage) for e in monitor.board.ordered()}
    assert {(r["service"], r["target"], r["vantage"]) for r in current} == published
    assert stored and all(r in logged for r in stored)  # the very records the log got


async def test_probe_has_bounds_of_its_own() -> None:
    script, prober = Script(config()), Script(config())
    monitor = Monitor(script.config, runner=lambda _: script, probe_runner=lambda _: prober)
    target = next(s.target for s in slots_for(monitor.config) if s.target.url == URL)
    vantage = monitor.config.vantage("censored")
    assert vantage is not None
    result = await monitor.probe(target, vantage, "open")
    assert result.verdict is Verdict.OK
    assert prober.calls == [(URL, "censored")] and script.calls == []
    await monitor.aclose()
    assert script.closed and prober.closed
