"""Where `lifeline serve` spends its CPU under /probe load: py-spy, summarised.

    python -m benchmarks.profile [--seconds 15] [--names 1000] [--concurrency 16]

Starts the farm and `lifeline serve` (on host loopback: everything binds
127.0.0.0/8), drives /probe with the benchmark's load generator while
``py-spy record --format raw`` samples serve, then prints the functions with
the most samples, by self time and inclusive time. Needs ``pip install
py-spy`` (and ptrace rights: root, or ``--cap-add SYS_PTRACE`` in a container).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.configs import lifeline_config
from benchmarks.farend import start_far_end
from benchmarks.farm import ORIGINS
from benchmarks.load import run_load
from benchmarks.run import CONCURRENCY, PROBE_DNS_WINDOW, _serve

__all__ = ["summarise"]


def summarise(raw: str, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        # with --subprocesses py-spy roots each stack in "process PID:..." frames: dropped,
        # so that serve and its workers add up per function
        frames = [_short(f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        if frames[-1].startswith("_worker ("):
            continue  # an idle pool thread (the store's), not CPU
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * n / total:6.1f}  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``: lines would split a function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])})" if parts else name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--names", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=CONCURRENCY)
    p.add_argument(
        "--origin", choices=ORIGINS, help="the farm's origins (default: nginx if installed)"
    )
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--keep", type=Path, help="copy py-spy's raw collapsed stacks here")
    p.add_argument(
        "--workers", type=int, default=0, help="profile `serve --workers N` (and its workers)"
    )
    args = p.parse_args(argv)
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lifeline-profile-") as tmp:
        work = Path(tmp)
        far = start_far_end(work, args.names, 10, args.origin)
        plan = far.plan
        try:
            names = plan.names[: args.names]
            config = lifeline_config(
                plan,
                names,
                vantages=1,
                interval_s=86400,
                data_dir=str(work),
                dns_window=PROBE_DNS_WINDOW,  # as in benchmarks.run's /probe comparison
            )
            serve, base = _serve(work, "profile", config, workers=args.workers)
            try:
                raw = work / "profile.txt"
                spy_proc = subprocess.Popen(
                    [
                        spy,
                        "record",
                        "-p",
                        str(serve.pid),
                        "-d",
                        str(int(args.seconds)),
                        "-f",
                        "raw",
                        "-o",
                        str(raw),
                        "-r",
                        "200",
                        *(["--subprocesses"] if args.workers else []),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                result = asyncio.run(
                    run_load(
                        "lifeline",
                        base,
                        serve.pid,
                        names,
                        resolver=plan.resolver,
                        concurrency=args.concurrency,
                        seconds=args.seconds,
                    )
                )
                spy_proc.wait(timeout=60)
            finally:
                serve.close()
        finally:
            far.close()
        print(
            f"{result.rate:.1f} probes/s, {result.cpu_per_probe_ms:.2f} ms CPU/probe"
            " (with py-spy attached)"
        )
        text = raw.read_text() if raw.exists() else ""
        if args.keep is not None:
            args.keep.write_text(text)
        print(summarise(text, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
