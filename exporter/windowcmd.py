"""`lifeline window`: rank maintenance windows by expected harm to the watched regions."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.check import load_or_report
from exporter.window import (
    ChangeRow,
    CurrentRow,
    RegionState,
    WindowScore,
    parse_when,
    rank_windows,
    region_states,
    render_table,
    score_window,
    to_json,
)
from probes.config import parse_duration
from probes.model import Config

if TYPE_CHECKING:
    from exporter.store import Latest, VerdictChange

__all__ = [
    "evaluate",
    "history",
    "run_window",
    "window_document",
    "window_options",
]

EXIT_OK, EXIT_USAGE = 0, 2


def history(config: Config, data_dir: str | None) -> tuple[list[Latest], list[VerdictChange]]:
    """Current verdicts and verdict changes from the store, if there is one."""
    directory = Path(data_dir or config.storage.dir)
    if not (directory / "lifeline.db").exists():
        return [], []
    from exporter.store import Store

    store = Store(directory, retention_s=config.storage.retention)
    try:
        return store.latest(), store.changes()
    finally:
        store.close()


def window_options(
    *, duration: str, within: str = "72h", not_before: str | None = None, check: str | None = None
) -> dict[str, Any]:
    """The options of :func:`evaluate` from their text (CLI flags, API query); ValueError says
    which one is wrong."""
    return {
        "duration": timedelta(seconds=parse_duration(duration)),
        "within": timedelta(seconds=parse_duration(within)),
        "not_before": parse_when(not_before) if not_before else None,
        "check": parse_when(check) if check else None,
    }


def evaluate(
    config: Config,
    current: Sequence[CurrentRow],
    changes: Sequence[ChangeRow],
    *,
    duration: timedelta,
    now: datetime,
    within: timedelta = timedelta(hours=72),
    not_before: datetime | None = None,
    check: datetime | None = None,
) -> tuple[list[RegionState], list[WindowScore]]:
    """The watched regions, and one proposed window scored (`check`) or the best ranked."""
    regions = region_states(current, changes, config.vantages, now=now)
    activity = config.window_activity
    if check is not None:
        return regions, [score_window(regions, check, duration, activity=activity)]
    scores = rank_windows(
        regions,
        duration=duration,
        now=now,
        within=within,
        not_before=not_before,
        activity=activity,
    )
    return regions, scores


def window_document(
    config: Config,
    current: Sequence[CurrentRow],
    changes: Sequence[ChangeRow],
    **options: Any,
) -> dict[str, Any]:
    """The JSON answer of `window --format json` and `/api/v1/window` (options of evaluate)."""
    regions, scores = evaluate(config, current, changes, **options)
    return to_json(scores, regions)


def run_window(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        options = window_options(
            duration=args.duration, within=args.within, not_before=args.not_before, check=args.check
        )
    except ValueError as exc:
        print(f"lifeline: window: {exc}", file=sys.stderr)
        return EXIT_USAGE
    current, changes = history(config, args.data_dir)
    regions, scores = evaluate(config, current, changes, now=datetime.now(UTC), **options)
    if not regions:
        print(
            "lifeline: window: no watched regions: give non-control vantages a `timezone`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.format == "json":
        print(json.dumps(to_json(scores, regions), indent=2))
    else:
        sys.stdout.write(render_table(scores, regions))
    return EXIT_OK
