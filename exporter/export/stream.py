"""`lifeline export`: measurements from the store, streamed in one of :data:`FORMATS`.

Records are read from a cursor and written as read, so memory stays flat for
millions of rows. Each stored line is decoded once, to a typed
:class:`~probes.records.Result`, unless its format writes the stored text as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import IO

from exporter.export.common import (
    EXIT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    open_existing,
    resolve_data,
    resolve_time,
    unmatched_filters,
)
from exporter.export.formats import FORMATS, ExportOptions
from exporter.store import Store, StoreError
from probes.records import Result

__all__ = ["export", "run_export"]


def export(
    store: Store,
    out: IO[str],
    *,
    fmt: str = "jsonl",
    since: str | None = None,
    until: str | None = None,
    services: Sequence[str] = (),
    vantages: Sequence[str] = (),
    countries: Mapping[str, str] | None = None,
) -> int:
    """Write the selected measurements to ``out`` as they are read; returns the row count."""
    form = FORMATS.get(fmt)
    if form is None:
        raise ValueError(f"unknown export format {fmt!r}")
    lines = store.measurement_lines(since=since, until=until, services=services, vantages=vantages)
    count = 0
    if form.verbatim:
        for line in lines:
            out.write(line)
            out.write("\n")
            count += 1
        return count
    if form.binary:
        out.flush()  # what was written as text goes first
    write = form.open_writer(out, ExportOptions(countries=countries or {}))
    try:
        for line in lines:
            write(Result.from_dict(json.loads(line)))
            count += 1
    finally:
        close = getattr(write, "close", None)
        if close is not None:
            close()  # a format's footer (Parquet); also after a failure, to free it
    return count


def run_export(args: argparse.Namespace) -> int:
    """`lifeline export`: measurements from the store to stdout, streamed.

    What the records say of their vantage (country, network) is exported from them alone;
    only a config named with ``-c`` fills in the country of older records that lack it,
    never the ./config.yaml of wherever the command runs (which only names the data dir).
    """
    explicit = getattr(args, "config", None) is not None
    if not explicit:
        args.config = "config.yaml"
    resolved = resolve_data(args)
    if resolved is None:
        return EXIT_USAGE
    directory, config = resolved
    try:
        since = resolve_time(args.since) if args.since else None
        until = resolve_time(args.until) if args.until else None
    except ValueError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if since is not None and until is not None and since >= until:
        print(f"lifeline: --since {since} is not before --until {until}", file=sys.stderr)
        return EXIT_USAGE
    form = FORMATS[args.format]
    if form.binary and sys.stdout.isatty():
        print(
            f"lifeline: --format {args.format} is binary: redirect it to a file "
            f"(lifeline export --format {args.format} > measurements.{args.format})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    store = open_existing(directory)
    if store is None:
        return EXIT_FOUND
    countries = {}
    if config is not None and explicit:
        countries = {v.name: v.country for v in config.vantages if v.country}
    try:
        for problem in unmatched_filters(store, args.service or (), args.vantage or ()):
            print(f"lifeline: {problem}", file=sys.stderr)
        count = export(
            store,
            sys.stdout,
            fmt=args.format,
            since=since,
            until=until,
            services=args.service,
            vantages=args.vantage,
            countries=countries,
        )
        sys.stdout.flush()
        if count == 0:
            print("lifeline: 0 measurements match", file=sys.stderr)
    except StoreError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return EXIT_FOUND
    except RuntimeError as exc:  # a format that cannot run here (parquet without pyarrow)
        print(f"lifeline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        store.close()
    return EXIT_OK
