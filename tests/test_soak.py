"""A bounded soak: `lifeline serve` with a few hundred targets stays flat and keeps its schedule.

`serve` runs as a subprocess on the lab (loopback only) watching a generated
config: 300 targets, a third of them on the lab's black-holed host, so that
every round a hundred measurements from the `censored` vantage wait out the
timeout. After a warm-up, the peaks of RSS, open descriptors and asyncio
tasks (the `lifeline_tasks` gauge) in a late window are compared with those
of an early one: ratios, not times. Skipped measurements may only come from
the black-holed share. The longer run with figures is `benchmarks/soak.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.soak import flat, running_serve, sample_for, soak_config, wait_ready
from probes.lab import LabThread

TARGETS = 300
INTERVAL_S = 20  # 100 black holes x 2 s at 24 per vantage: 8 s of every 20 s
#: Windows of the soak: early (after the first full round), a gap, late.
WINDOW_S = 16.0
#: A generous bound on growth between the windows: a leak of one object per
#: measurement would pass it within a few minutes, not within this soak, so it
#: is paired with the additive slack below that covers a round's in-flight work.
FACTOR = 1.5


def test_serve_stays_flat_and_keeps_every_interval(lab: LabThread, tmp_path: Path) -> None:
    plan = soak_config(
        lab.config_path, tmp_path, targets=TARGETS, interval=f"{INTERVAL_S}s", timeout="2s"
    )
    with running_serve(plan.path, tmp_path) as run:
        wait_ready(run.url, run.proc)
        early = sample_for(run, WINDOW_S, every=2.0)
        sample_for(run, WINDOW_S, every=4.0)
        late = sample_for(run, WINDOW_S, every=2.0)
    assert run.proc.returncode == 0, run.err.read_text()

    ratios = flat(early, late)
    assert ratios["rss"] <= FACTOR, ratios
    slack = {"fds": 32, "tasks": 64}  # one round's worth of measurements in flight, or so
    for name, extra in slack.items():
        peak_early = max(getattr(s, name) for s in early)
        peak_late = max(getattr(s, name) for s in late)
        assert peak_late <= FACTOR * peak_early + extra, (name, peak_early, peak_late)
    assert max(s.tasks for s in late) > 0  # the gauge is really read

    elapsed = late[-1].at - early[0].at
    skipped = late[-1].skipped - early[0].skipped
    at_most = plan.blackholed_jobs * (math.ceil(elapsed / INTERVAL_S) + 1)
    assert skipped <= at_most, (skipped, plan.blackholed_jobs, elapsed)
    measured = late[-1].measured - early[0].measured
    kept = plan.jobs_per_round - plan.blackholed_jobs  # every live one, every whole round
    assert measured >= kept * (math.floor(elapsed / INTERVAL_S) - 1), (measured, kept, elapsed)
