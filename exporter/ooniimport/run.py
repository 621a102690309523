"""The command: `lifeline import ooni FILE...` printed, summarised or stored."""

from __future__ import annotations

import argparse
import json
import sys

from .mapping import Imported, import_files
from .read import Skipped
from .summary import summary_markdown

EXIT_ALL, EXIT_SKIPPED, EXIT_USAGE = 0, 1, 2


def run_import(args: argparse.Namespace) -> int:
    """`lifeline import ooni`: exit 0 all imported, 1 some skipped, 2 usage (nothing readable)."""
    items = list(import_files(args.files))
    skipped = [i for i in items if isinstance(i, Skipped)]
    imported = [i for i in items if isinstance(i, Imported)]
    for s in skipped:
        print(f"lifeline: {s.source}: skipped: {s.why}", file=sys.stderr)
    if args.summary:
        sys.stdout.write(summary_markdown(items, root=args.root))
    elif args.data_dir is None:
        out = sys.stdout
        for i in imported:
            out.write(json.dumps(i.record, ensure_ascii=False, separators=(",", ":")))
            out.write("\n")
    if args.data_dir is not None and imported:
        from exporter.store import Store, StoreError

        try:
            with Store(args.data_dir, retention_s=float("inf")) as store:
                store.add_records(sorted((i.record for i in imported), key=lambda r: r["time"]))
        except (StoreError, OSError) as exc:
            print(f"lifeline: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{len(imported)} measurements imported into {args.data_dir}", file=sys.stderr)
    if skipped and not imported:
        print("lifeline: nothing imported", file=sys.stderr)
    return EXIT_SKIPPED if skipped else EXIT_ALL
