"""What `export`, `classify` and `incidents` share: where the data is, what time is meant."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from exporter.store import DB_NAME, Store, StoreError
from probes.model import Config, Storage
from probes.timefmt import parse_rfc3339, rfc3339

__all__ = [
    "EXIT_FOUND", "EXIT_OK", "EXIT_USAGE", "load_config", "resolve_time", "unmatched_filters",
]  # fmt: skip

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2


def load_config(path: str) -> Config | None:
    """The config at ``path``; prints every problem and returns None when it is invalid."""
    from probes.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"lifeline: {path}: invalid config:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return None


def resolve_data(args: argparse.Namespace) -> tuple[Path, Config | None] | None:
    """The data directory (--data-dir, else the config's storage.dir, else the default).

    The config is read only when its file exists; None when it is invalid.
    """
    config: Config | None = None
    config_path = getattr(args, "config", None)
    if config_path and Path(config_path).is_file():
        config = load_config(config_path)
        if config is None:
            return None
    if args.data_dir:
        return Path(args.data_dir), config
    return Path((config.storage if config else Storage()).dir), config


def open_existing(directory: Path) -> Store | None:
    """Open the store for reading; None (with a message) when there is none or it is unusable."""
    if not (directory / DB_NAME).is_file():
        print(f"lifeline: no store at {directory / DB_NAME} (use --data-dir)", file=sys.stderr)
        return None
    try:
        return Store(directory)
    except StoreError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return None


def resolve_time(text: str, *, now: float | None = None) -> str:
    """An RFC 3339 UTC time from RFC 3339 text or a duration before now ("24h", "7d", "90m").

    Whole seconds, as people type them. Raises ValueError with a sentence when it is neither.
    """
    from probes.config import parse_duration

    text = text.strip()
    if text == "now":
        return rfc3339(time.time() if now is None else now, timespec="seconds")
    try:
        return rfc3339(parse_rfc3339(text), timespec="seconds")
    except ValueError:
        pass
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an RFC 3339 time (2024-05-01T12:00:00Z) "
            "nor a duration before now (24h, 7d, 90m)"
        ) from None
    return rfc3339((time.time() if now is None else now) - seconds, timespec="seconds")


def unmatched_filters(store: Store, services: Sequence[str], vantages: Sequence[str]) -> list[str]:
    """A sentence for each --service / --vantage name the store has never seen.

    Such a name matches nothing: the commands print these on stderr beside their
    (possibly empty) answer, so that a typo does not read as "all quiet".
    """
    rows = store.latest()
    problems = []
    for flag, asked, known in (
        ("--service", services, sorted({r.service for r in rows})),
        ("--vantage", vantages, sorted({r.vantage for r in rows})),
    ):
        for name in asked:
            if name not in known:
                listed = ", ".join(known) if known else "none"
                problems.append(f"{flag} {name!r}: not in the store (it has: {listed})")
    return problems
