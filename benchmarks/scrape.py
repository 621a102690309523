"""Micro-benchmark of `/metrics`: publishing results and scraping the page, in one process.

    python -m benchmarks.scrape                      # 3,000 and 30,000 series
    python -m benchmarks.scrape --series 30000 --alt-tree ../before   # A/B, side by side

A board of N targets x 3 vantages (one service, the farm's kind of names) is
filled with ordinary results. Then, per round, every series is published
again (as a 60 s interval does between two 15 s scrapes and more) and the page
is scraped, plain and gzipped, as `/metrics` serves it (`MetricsPage`); a
scrape with nothing published since is timed too. ``--alt-tree DIR`` loads
``DIR/exporter/metricspage.py`` beside this tree's and times both in
alternation, on the same board: the only fair before/after on a shared
machine. ``--busy`` runs the gzip beside a thread that keeps the GIL busy, as
serve's event loop does under load. Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Protocol

from exporter.board import Board
from probes.config import parse_config
from probes.records import DNSStage, HTTPStage, Measurement, Result, TCPStage, TLSStage, Verdict

__all__ = ["main"]


class _Page(Protocol):
    def exposition(self, accept: str | None) -> _Exposition: ...


class _Exposition(Protocol):
    def chunks(self) -> object: ...

    def gzipped(self) -> bytes: ...


def board_of(targets: int, vantages: int = 3) -> Board:
    """An empty board of ``targets`` x ``vantages`` series (loopback resolvers, never used)."""
    vs = "\n".join(
        f"  - {{name: v{i}, resolver: 127.0.0.53:53{', control: true' if i == 0 else ''}}}"
        for i in range(vantages)
    )
    ts = "\n".join(f"      - https://n{i}.bench.lifeline.test:8443/" for i in range(targets))
    return Board(
        parse_config(
            f"version: 1\nvantages:\n{vs}\nservices:\n  - name: bench\n    targets:\n{ts}\n"
        )
    )


def _result(target: str, vantage: str, minute: int) -> Result:
    m = Measurement(
        target=target,
        vantage=vantage,
        time=f"2026-01-01T00:{minute % 60:02d}:10.{minute:06d}Z",
        service="bench",
        duration_s=0.0052,
        dns=DNSStage(
            ok=True,
            failure=None,
            duration_s=0.000412 + minute * 1e-6,
            name="n.bench.lifeline.test",
            resolver="udp://127.0.0.53:53",
            addresses=["127.1.0.1"],
        ),
        tcp=TCPStage(ok=True, failure=None, duration_s=0.000183 + minute * 1e-6),
        tls=TLSStage(ok=True, failure=None, duration_s=0.00271 + minute * 1e-6),
        http=HTTPStage(
            ok=True, failure=None, duration_s=0.00113 + minute * 1e-6, status=200, transfer_s=1e-4
        ),
    )
    return Result(m, Verdict.OK, "The page loaded and matches the control's.")


def publish_all(board: Board, minute: int) -> float:
    """Publish a fresh result for every series; the seconds it took per result."""
    results = [_result(t, v, minute) for _, t, v in board.keys()]
    t0 = time.perf_counter()
    for r in results:
        board.publish(r)
    return (time.perf_counter() - t0) / max(1, len(results))


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _busy(fn: Callable[[], object]) -> float:
    """``fn`` in a thread while this thread runs Python (a busy event loop); its wall time."""
    out: list[float] = []
    worker = threading.Thread(target=lambda: out.append(_timed(fn)))
    worker.start()
    x = 0
    while worker.is_alive():
        for i in range(1000):
            x += i
    worker.join()
    return out[0]


def _plain(page: _Page) -> None:
    for _ in page.exposition(None).chunks():  # type: ignore[attr-defined]
        pass


def _gzip(page: _Page, busy: bool) -> float:
    if not busy:
        return _timed(lambda: page.exposition(None).gzipped())
    exposition = page.exposition(None)  # made on the loop, gzipped in a thread
    return _busy(exposition.gzipped)


def load_page_module(tree: Path) -> ModuleType:
    """``exporter/metricspage.py`` of another checkout, as a module of its own."""
    path = tree / "exporter" / "metricspage.py"
    spec = importlib.util.spec_from_file_location("alt_metricspage", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--alt-tree: no {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(targets: int, alt: ModuleType | None, rounds: int, busy: bool) -> None:
    import exporter.metricspage as this

    board = board_of(targets)
    pages: dict[str, _Page] = {}
    for name, module in (("this tree", this), ("alt tree", alt)):
        if module is not None:
            pages[name] = module.MetricsPage(board)
    publish_all(board, 0)
    for page in pages.values():
        _plain(page)
    times: dict[str, dict[str, list[float]]] = {n: {} for n in pages}
    publish: list[float] = []
    for r in range(rounds):
        order = list(pages.items())
        if r % 2:
            order.reverse()
        for kind in ("plain", "gzip"):
            publish.append(publish_all(board, r + 1))  # every page's watcher renders here
            for name, page in order:
                # a page that renders at scrape time pays for the changes here
                t = _timed(lambda p=page: _plain(p)) if kind == "plain" else _gzip(page, busy)
                times[name].setdefault(f"{kind} after every series changed", []).append(t)
                if kind == "plain":
                    t = _timed(lambda p=page: _plain(p))
                    times[name].setdefault("plain, nothing changed", []).append(t)
    series = len(board.keys())
    where = "beside a busy thread" if busy else "alone"
    print(f"{series:,} series, {rounds} rounds, median ms (gzip {where}):")
    for name, by_kind in times.items():
        shown = ", ".join(f"{k} {statistics.median(v) * 1e3:.0f}" for k, v in by_kind.items())
        print(f"  {name}: {shown}")
    print(
        f"  publishing, per result, every page above watching: "
        f"{statistics.median(publish) * 1e6:.1f} us"
    )


def memory(targets: int) -> None:
    """Bytes held per series by the board and the page (tracemalloc), all series published."""
    import exporter.metricspage as this

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    board = board_of(targets)
    empty = tracemalloc.get_traced_memory()[0]
    page = this.MetricsPage(board)
    publish_all(board, 1)
    publish_all(board, 2)
    _plain(page)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    series = len(board.keys())
    per_series = (held - empty) / series
    print(
        f"{series:,} series: config and empty board {(empty - before) / 1e6:.1f} MB; "
        f"entries and page {(held - empty) / 1e6:.1f} MB ({per_series:.0f} B per series)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scrape", description=__doc__)
    parser.add_argument("--series", type=int, action="append", help="series (default 3000, 30000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alt-tree", type=Path, help="another checkout to time beside this one")
    parser.add_argument("--busy", action="store_true", help="gzip beside a busy thread")
    parser.add_argument("--memory", action="store_true", help="also bytes held per series")
    args = parser.parse_args(argv)
    alt = load_page_module(args.alt_tree) if args.alt_tree is not None else None
    for series in args.series or [3000, 30000]:
        measure(max(1, series // 3), alt, args.rounds, args.busy)
        if args.memory:
            memory(max(1, series // 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
