"""Export throughput and memory on a large store (not a test: run it by hand).

    python benchmarks/export_bench.py            # one million rows
    python benchmarks/export_bench.py --rows 100000 --keep /tmp/bench-store

Writes synthetic but realistic records (full DNS/TCP/TLS/HTTP stages and a
control measurement, several vantages and verdicts) into a store in a
temporary directory, then exports them as jsonl and csv to /dev/null, each in
a fresh process so that its peak memory (ru_maxrss) is the export's alone.
Prints rows/s and peak MiB per format; memory should not depend on --rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.export import export  # noqa: E402
from exporter.store import Store  # noqa: E402
from probes.failures import Failure  # noqa: E402
from probes.records import Verdict  # noqa: E402
from tests.test_store import T0, iso, result  # noqa: E402

VANTAGES = ("ir-mci", "ir-tci", "ru-mts", "cn-unicom", "tr-ttnet", "kz-beeline")
TARGETS = tuple(f"https://site{i}.example/" for i in range(40))
BATCH = 5_000


def _templates() -> list[dict[str, Any]]:
    """A few record shapes to vary: ok, injected DNS, TCP reset, TLS EOF."""
    return [
        result(Verdict.OK, T0).to_dict(),
        result(Verdict.DNS_BLOCKED, T0, addresses=("10.10.34.34",)).to_dict(),
        result(Verdict.TCP_BLOCKED, T0, tcp_failure=Failure.CONNECTION_RESET).to_dict(),
        result(Verdict.TLS_BLOCKED, T0, tls_failure=Failure.EOF).to_dict(),
    ]


def fill(directory: Path, rows: int) -> float:
    """Write ``rows`` records; returns the seconds it took."""
    templates = _templates()
    started = time.perf_counter()
    with Store(directory, retention_s=10 * 365 * 86400) as store:
        for start in range(0, rows, BATCH):
            batch = []
            for i in range(start, min(rows, start + BATCH)):
                record = dict(templates[(i // 97) % len(templates)])
                record["time"] = iso(T0 + i * 0.25)
                record["vantage"] = VANTAGES[i % len(VANTAGES)]
                record["target"] = TARGETS[(i // len(VANTAGES)) % len(TARGETS)]
                batch.append(record)
            store.add_records(batch)
            done = min(rows, start + BATCH)
            print(f"\rwriting: {done}/{rows}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - started


def export_once(directory: Path, fmt: str) -> dict[str, float]:
    """Export everything to /dev/null in this process; the figures as a dict."""
    opened = time.perf_counter()
    with Store(directory) as store, open(os.devnull, "w") as sink:
        started = time.perf_counter()
        rows = export(store, sink, fmt=fmt)
        seconds = time.perf_counter() - started
    open_s = started - opened
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"rows": rows, "seconds": seconds, "open_s": open_s, "peak_mib": peak_kib / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="records to write (1000000)")
    parser.add_argument("--keep", metavar="DIR", help="use (and keep) this store directory")
    parser.add_argument("--formats", default="jsonl,csv", help="comma-separated (jsonl,csv)")
    parser.add_argument("--export-only", nargs=2, metavar=("DIR", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_only:
        print(json.dumps(export_once(Path(args.export_only[0]), args.export_only[1])))
        return 0

    with tempfile.TemporaryDirectory(prefix="lifeline-export-bench-") as tmp:
        directory = Path(args.keep or tmp)
        if not (directory / "lifeline.db").exists():
            seconds = fill(directory, args.rows)
            size = (directory / "lifeline.db").stat().st_size / 2**20
            print(f"write: {args.rows} rows in {seconds:.1f}s ({args.rows / seconds:,.0f} rows/s), "
                  f"store {size:,.0f} MiB")  # fmt: skip
        for fmt in args.formats.split(","):
            done = subprocess.run(
                [sys.executable, __file__, "--export-only", str(directory), fmt],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(done.stdout)
            print(
                f"export {fmt:5}: {r['rows']:,.0f} rows in {r['seconds']:.1f}s "
                f"({r['rows'] / r['seconds']:,.0f} rows/s), peak RSS {r['peak_mib']:.0f} MiB, "
                f"store opened in {r['open_s']:.2f}s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
