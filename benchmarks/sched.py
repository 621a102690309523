"""The scheduler under load: N targets x V vantages every interval, for a few intervals.

`lifeline serve` runs on a config of the farm's names; the benchmark samples
its CPU and memory every second and scrapes ``/metrics`` every few seconds
(timing the scrape and noting its size). Steady state is judged after the
first interval (the first round starts everything at once-ish). At the end:

- ``lifeline_skipped_measurements`` must be 0 (nothing overran its slot);
- every (service, target, vantage) has a
  ``lifeline_last_measurement_timestamp_seconds`` no older than one interval
  plus a grace (a measurement's own duration), i.e. every slot came round on time.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.procs import Proc, sample

__all__ = ["SchedResult", "watch_schedule"]

SCRAPE_EVERY_S = 15.0  # a common Prometheus scrape interval
#: A measurement stamps its start time; it may start up to this late and still be on time.
GRACE_S = 5.0


@dataclass(slots=True)
class SchedResult:
    targets: int
    vantages: int
    interval_s: float
    seconds: float = 0.0
    steady_cpu_cores: float = 0.0  # CPU seconds per wall second after the first interval
    steady_main_cpu_cores: float = 0.0  # of which serve's own process (the rest: its workers)
    peak_rss: int = 0
    scrape_s: list[float] = field(default_factory=list)
    scrape_bytes: int = 0
    skipped: int = -1
    keys_seen: int = 0
    keys_on_time: int = 0
    oldest_age_s: float = 0.0
    measurements: float = 0.0  # lifeline_measurements_total summed, at the end
    first_round_s: float | None = None  # until lifeline_ready 1
    # the far end's CPU over the same window, by part: "farm" (the resolver, and the
    # origins when Python serves them), "nginx" (its master and workers)
    far_cpu_cores: dict[str, float] = field(default_factory=dict)

    @property
    def keys(self) -> int:
        return self.targets * self.vantages

    @property
    def on_time(self) -> bool:
        return self.skipped == 0 and self.keys_on_time == self.keys

    def summary(self) -> dict[str, object]:
        scrapes = self.scrape_s or [float("nan")]
        return {
            "targets": self.targets,
            "vantages": self.vantages,
            "interval_s": self.interval_s,
            "seconds": round(self.seconds, 1),
            "measurements_per_s_needed": round(self.keys / self.interval_s, 1),
            "steady_cpu_cores": round(self.steady_cpu_cores, 3),
            "steady_main_cpu_cores": round(self.steady_main_cpu_cores, 3),
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "scrape_s_max": round(max(scrapes), 3),
            "scrape_s_median": round(statistics.median(scrapes), 3),
            "scrape_bytes": self.scrape_bytes,
            "skipped": self.skipped,
            "measurements_total": int(self.measurements),
            "measurements_per_s": round(self.measurements / self.seconds, 1) if self.seconds else 0,
            "keys": self.keys,
            "keys_seen": self.keys_seen,
            "keys_on_time": self.keys_on_time,
            "oldest_age_s": round(self.oldest_age_s, 1),
            "first_round_s": None if self.first_round_s is None else round(self.first_round_s, 1),
            "farm_cpu_cores": round(self.far_cpu_cores.get("farm", 0.0), 3),
            "nginx_cpu_cores": round(self.far_cpu_cores.get("nginx", 0.0), 3),
            "far_end_cpu_cores": round(sum(self.far_cpu_cores.values()), 3),
            "on_time": self.on_time,
        }


def _read(text: str, result: SchedResult, now: float) -> bool:
    """Fill the end-of-run figures from one exposition; True once lifeline_ready is 1."""
    ready = False
    seen = on_time = 0
    oldest = 0.0
    total = 0.0
    limit = result.interval_s + GRACE_S
    for line in text.splitlines():
        if line.startswith("lifeline_last_measurement_timestamp_seconds{"):
            age = now - float(line.rsplit(" ", 1)[1])
            seen += 1
            on_time += age <= limit
            oldest = max(oldest, age)
        elif line.startswith("lifeline_skipped_measurements_total "):
            result.skipped = int(float(line.split()[1]))
        elif line.startswith("lifeline_ready "):
            ready = float(line.split()[1]) == 1.0
        elif line.startswith("lifeline_measurements_total{"):
            total += float(line.rsplit(" ", 1)[1])
    result.keys_seen, result.keys_on_time, result.oldest_age_s = seen, on_time, oldest
    result.measurements = total
    return ready


async def watch_schedule(
    proc: Proc,
    base: str,
    *,
    targets: int,
    vantages: int,
    interval_s: float,
    rounds: float,
    far_pids: dict[str, int] | None = None,
) -> SchedResult:
    """Watch `serve` for ``rounds`` intervals; sample it each second, scrape it every few.

    ``far_pids``: the far end's processes by part, whose CPU is read over the
    same steady window.
    """
    far = far_pids or {}
    result = SchedResult(targets, vantages, interval_s)
    started = time.monotonic()
    end = started + rounds * interval_s
    steady_at = started + interval_s
    # (when, serve's CPU with its workers', serve's own, the farm's)
    steady_cpu: tuple[float, float, float, dict[str, float]] | None = None
    next_scrape = started + SCRAPE_EVERY_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        while True:
            now = time.monotonic()
            if not proc.alive():
                raise RuntimeError(f"lifeline serve exited:\n{proc.tail()}")
            s = sample(proc.pid)
            result.peak_rss = max(result.peak_rss, s.peak_rss)
            if steady_cpu is None and now >= steady_at:
                steady_cpu = (now, s.cpu_s, s.own_cpu_s, _cpu(far))
            if now >= end:
                break
            if now >= next_scrape:
                next_scrape = now + SCRAPE_EVERY_S
                ready = await _scrape(session, base, result)
                if ready and result.first_round_s is None:
                    result.first_round_s = time.monotonic() - started
            await asyncio.sleep(1.0)
        await _scrape(session, base, result)
        final = sample(proc.pid)
        if steady_cpu is not None:
            span = time.monotonic() - steady_cpu[0]
            result.steady_cpu_cores = (final.cpu_s - steady_cpu[1]) / span
            result.steady_main_cpu_cores = (final.own_cpu_s - steady_cpu[2]) / span
            result.far_cpu_cores = {
                part: (cpu - steady_cpu[3][part]) / span for part, cpu in _cpu(far).items()
            }
        result.peak_rss = max(result.peak_rss, final.peak_rss)
    result.seconds = time.monotonic() - started
    return result


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    return {part: sample(pid).cpu_s for part, pid in pids.items()}


async def _scrape(session: aiohttp.ClientSession, base: str, result: SchedResult) -> bool:
    t0 = time.monotonic()
    async with session.get(f"{base}/metrics") as resp:
        body = await resp.read()
    result.scrape_s.append(time.monotonic() - t0)
    result.scrape_bytes = len(body)
    return _read(body.decode(), result, time.time())


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
