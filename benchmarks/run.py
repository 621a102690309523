"""lifeline vs. blackbox_exporter, side by side, on loopback only.

    python -m benchmarks.run            # the full run (< 20 minutes)
    python -m benchmarks.run --quick    # a smaller one (< 3 minutes)

By default the whole benchmark re-executes itself in a fresh network
namespace (``unshare -n``, then ``ip link set lo up``): the farm, both
exporters and the load generator then cannot reach anything but loopback,
whatever they are told. That needs root (or an unprivileged user namespace);
``--no-netns`` runs on the host's loopback instead (every socket the
benchmark opens is on 127.0.0.0/8 either way, and blackbox only ever gets IP
literals). See docs/performance.md for the method and the latest figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (python benchmarks/run.py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import nginx
from benchmarks.configs import blackbox_config, lifeline_config
from benchmarks.farend import FarEnd, default_origin, start_far_end
from benchmarks.farm import ORIGINS, Name, Plan
from benchmarks.load import KINDS, RunResult, run_load
from benchmarks.procs import Proc, blackbox_path, free_port, python, sample, start
from benchmarks.sched import SchedResult, watch_schedule
from probes.defaults import DEFAULT_DNS_WINDOW_S

__all__ = ["main"]

_INSIDE = "LIFELINE_BENCH_NETNS"
#: Probes in flight in the /probe comparison (issue 18's goal: "at 32 in flight").
CONCURRENCY = 32


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller run (< 3 minutes)")
    p.add_argument("--no-netns", action="store_true", help="do not isolate in a network namespace")
    p.add_argument("--names", type=int, help="targets of the /probe comparison (default 1000)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=CONCURRENCY,
        help=f"probes in flight (default {CONCURRENCY})",
    )
    p.add_argument("--seconds", type=float, help="length of one timed /probe run")
    p.add_argument("--rounds", type=int, help="alternating rounds of /probe runs")
    p.add_argument("--sched-targets", type=int, help="targets of the scheduler run")
    p.add_argument("--vantages", type=int, default=3, help="vantages of the scheduler run")
    p.add_argument("--interval", type=float, help="scheduler interval, seconds")
    p.add_argument("--sched-rounds", type=float, help="intervals the scheduler run lasts")
    p.add_argument("--skip-probe", action="store_true", help="no /probe comparison")
    p.add_argument("--skip-sched", action="store_true", help="no scheduler run")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    p.add_argument(
        "--origin",
        choices=ORIGINS,
        help="what serves the farm's HTTPS origins (default: nginx when installed, else python)",
    )
    p.add_argument(
        "--nginx-workers",
        type=int,
        default=nginx.WORKERS,
        help=f"nginx worker processes (default {nginx.WORKERS}; 0: one process, no master)",
    )
    p.add_argument(
        "--workers",
        default="auto",
        help="also measure `serve --workers N` (as lifeline-workers; default auto: one per CPU,"
        " none on one CPU; 0: not at all)",
    )
    p.add_argument(
        "--sched-workers-only",
        action="store_true",
        help="run the scheduler only with --workers, not also in-process",
    )
    p.add_argument(
        "--alt-tree",
        type=Path,
        help="another lifeline checkout (e.g. with a patch applied): its serve is measured "
        "too, as lifeline-alt, in the same alternation and on the same schedule config",
    )
    return p


def _defaults(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from probes.workers import parse_workers

    args.workers = parse_workers(str(args.workers))
    if args.origin is None:
        args.origin = default_origin()
    elif args.origin == "nginx" and nginx.nginx_path() is None:
        parser.error(
            f"--origin nginx: nginx is not installed ({nginx.NGINX}; apt-get install nginx)"
        )
    if args.nginx_workers < 0:
        parser.error(f"--nginx-workers {args.nginx_workers}: 0 (one process) or more")
    if args.concurrency < 1:
        parser.error(f"--concurrency {args.concurrency}: at least 1")
    quick = args.quick
    for name, full, small in (
        ("names", 1000, 1000),
        ("seconds", 20.0, 6.0),
        ("rounds", 3, 2),
        ("sched_targets", 10_000, 1000),
        ("interval", 60.0, 20.0),
        ("sched_rounds", 3.0, 3.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)


def _reexec_isolated(argv: Sequence[str]) -> int:
    """Run this same command again inside a loopback-only network namespace."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        print(
            "benchmarks: unshare(1) and ip(8) are needed for isolation (util-linux, iproute2);"
            " or pass --no-netns",
            file=sys.stderr,
        )
        return 2
    cmd = [
        "unshare",
        "-n",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        python(),
        "-m",
        "benchmarks.run",
        *argv,
    ]
    env = dict(os.environ, **{_INSIDE: "1"})
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(cmd, env=env, check=False)
    if done.returncode != 0 and os.geteuid() != 0:
        print(
            "benchmarks: unshare -n needs root (or user namespaces); try --no-netns",
            file=sys.stderr,
        )
    return done.returncode


def machine() -> dict[str, Any]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "event_loop": "asyncio",
    }


# --- /probe side by side ---------------------------------------------------------------


def _serve(
    work: Path,
    tag: str,
    config: str,
    tree: Path | None = None,
    workers: int = 0,
    extra: tuple[str, ...] = (),
) -> tuple[Proc, str]:
    path = work / f"{tag}.yaml"
    path.write_text(config)
    port = free_port()
    argv = [
        python(),
        "-m",
        "exporter.cli",
        "serve",
        "-c",
        str(path),
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(work / f"{tag}-data"),
        # always said: serve's own default is `auto` (worker processes) since round 4, and
        # "lifeline" is the in-process row (an --alt-tree older than round 3 has no option)
        f"--workers={workers}",
        *extra,
    ]
    proc = start(f"lifeline serve ({tag})", argv, work / f"{tag}.log", tree=tree)
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/-/healthy")
    return proc, base


def _blackbox(work: Path, exe: str, plan: Plan, names: list[Name]) -> tuple[Proc, str]:
    path = work / "blackbox.yml"
    path.write_text(blackbox_config(plan, names))
    port = free_port()
    argv = [
        exe,
        f"--config.file={path}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=error",
    ]
    proc = start("blackbox_exporter", argv, work / "blackbox.log")
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/-/healthy")
    return proc, base


def _agreement(runs: list[RunResult], names: list[Name], kind: str = "lifeline") -> dict[str, Any]:
    """Per target: did ``kind`` and blackbox (DNS+HTTP) give the same probe_success, always?"""
    seen: dict[str, dict[int, set[int]]] = {}
    for r in runs:
        merged = seen.setdefault(r.kind, {})
        for i, values in r.outcomes.items():
            merged.setdefault(i, set()).update(values)
    life, box = seen.get(kind, {}), seen.get("blackbox", {})
    both = sorted(set(life) & set(box))
    differ = [i for i in both if life[i] != box[i] or len(life[i]) != 1]
    wrong = [i for i in life if life[i] != {int(names[i].should_succeed)}]
    return {
        "targets_compared": len(both),
        "disagreements": len(differ),
        "examples": [
            {"target": names[i].url, kind: sorted(life[i]), "blackbox": sorted(box[i])}
            for i in differ[:5]
        ],
        "lifeline_unexpected": len(wrong),
        "failing_targets_compared": sum(1 for i in both if not names[i].should_succeed),
    }


#: The /probe comparison's lifeline has no DNS listening window: blackbox_exporter does
#: not listen for late (injected) DNS replies, and each /probe answer would otherwise wait
#: the window out (0.3 s by default), which caps probes/s at concurrency / 0.3 s however
#: little CPU a probe takes. ``lifeline-window`` keeps the default, to show that cost.
PROBE_DNS_WINDOW = "0"


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def probe_comparison(args: argparse.Namespace, work: Path, far: FarEnd) -> dict[str, Any]:
    plan = far.plan
    names = plan.names[: args.names]
    exe = blackbox_path()
    data = str(work / "p")
    config = lifeline_config(
        plan, names, vantages=1, interval_s=86400, data_dir=data, dns_window=PROBE_DNS_WINDOW
    )
    windowed = lifeline_config(plan, names, vantages=1, interval_s=86400, data_dir=data + "w")
    life, life_base = _serve(work, "probe", config)
    procs = [life]
    bases = {"lifeline": (life_base, life)}
    try:
        if _has_uvloop():  # the loop's effect, A/B in the same alternation
            plain, plain_base = _serve(work, "probe-asyncio", config, extra=("--loop=asyncio",))
            procs.append(plain)
            bases["lifeline-asyncio"] = (plain_base, plain)
        win, win_base = _serve(work, "probe-window", windowed)
        procs.append(win)
        bases["lifeline-window"] = (win_base, win)
        if args.workers:
            pooled, pooled_base = _serve(work, "probe-workers", config, workers=args.workers)
            procs.append(pooled)
            bases["lifeline-workers"] = (pooled_base, pooled)
        if args.alt_tree is not None:
            alt, alt_base = _serve(work, "probe-alt", config, tree=args.alt_tree)
            procs.append(alt)
            bases["lifeline-alt"] = (alt_base, alt)
        if exe is None:
            print(
                "benchmarks: blackbox_exporter is not installed "
                "(apt-get install prometheus-blackbox-exporter): lifeline alone",
                flush=True,
            )
        else:
            box, box_base = _blackbox(work, exe, plan, names)
            procs.append(box)
            bases["blackbox"] = bases["blackbox-http"] = (box_base, box)
        kinds = [k for k in KINDS if k in bases]
        runs: list[RunResult] = []
        for kind in kinds:  # warm-up: lazy imports, caches, connection pools
            base, proc = bases[kind]
            asyncio.run(_one(kind, base, proc, names, far, args, min(3.0, args.seconds)))
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for kind in order:
                base, proc = bases[kind]
                run = asyncio.run(_one(kind, base, proc, names, far, args, args.seconds))
                runs.append(run)
                far_ms = 1000 * sum(run.far_cpu_s.values()) / run.probes if run.probes else 0.0
                print(
                    f"  {kind:16} {run.rate:8.1f} probes/s  {run.cpu_per_probe_ms:6.2f} ms "
                    f"CPU/probe  far end {far_ms:5.2f} ms/probe  errors {run.errors}",
                    flush=True,
                )
        peaks = {k: sample(p.pid).peak_rss for k, (_, p) in bases.items()}
    finally:
        for p in procs:
            p.close()
    return _probe_summary(runs, names, peaks, args)


async def _one(
    kind: str,
    base: str,
    proc: Proc,
    names: list[Name],
    far: FarEnd,
    args: argparse.Namespace,
    seconds: float,
) -> RunResult:
    return await run_load(
        kind,
        base,
        proc.pid,
        names,
        resolver=far.plan.resolver,
        concurrency=args.concurrency,
        seconds=seconds,
        far_pids=far.pids,
    )


def _probe_summary(
    runs: list[RunResult], names: list[Name], peaks: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        mine = [r for r in runs if r.kind == kind]
        if not mine:
            continue
        probes, secs, cpu = (
            sum(getattr(r, a) for r in mine) for a in ("probes", "seconds", "cpu_s")
        )
        far_parts = sorted({part for r in mine for part in r.far_cpu_s})
        far_cpu = {part: sum(r.far_cpu_s.get(part, 0.0) for r in mine) for part in far_parts}
        per_kind[kind] = {
            "probes_per_s": round(probes / secs, 1),
            "probes_per_s_runs": [round(r.rate, 1) for r in mine],
            "cpu_ms_per_probe": round(1000 * cpu / probes, 3) if probes else None,
            "cpu_cores": round(cpu / secs, 2),
            "peak_rss_mb": round(peaks[kind] / 2**20, 1),
            "errors": sum(r.errors for r in mine),
            # the far end (farm: resolver, Python origins; nginx) during this exporter's runs
            "far_end_cpu_ms_per_probe": (
                round(1000 * sum(far_cpu.values()) / probes, 3) if probes else None
            ),
            "far_end_cpu_cores": {part: round(c / secs, 3) for part, c in far_cpu.items()},
        }
    out: dict[str, Any] = {
        "names": len(names),
        "concurrency": args.concurrency,
        "dns_window": {
            "lifeline": PROBE_DNS_WINDOW,
            "lifeline-window": f"default ({DEFAULT_DNS_WINDOW_S:g}s)",
        },
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "exporters": per_kind,
        "agreement": _agreement(runs, names),
        "agreement_window": _agreement(runs, names, "lifeline-window"),
        **(
            {"agreement_asyncio": _agreement(runs, names, "lifeline-asyncio")}
            if any(r.kind == "lifeline-asyncio" for r in runs)
            else {}
        ),
    }
    if "lifeline-workers" in per_kind:
        out["workers"] = args.workers
        out["agreement_workers"] = _agreement(runs, names, "lifeline-workers")
        if "blackbox" in per_kind:
            out["ratio_workers_over_blackbox"] = round(
                per_kind["lifeline-workers"]["probes_per_s"] / per_kind["blackbox"]["probes_per_s"],
                2,
            )
            out["median_run_ratio_workers"] = round(
                statistics.median(per_kind["lifeline-workers"]["probes_per_s_runs"])
                / statistics.median(per_kind["blackbox"]["probes_per_s_runs"]),
                2,
            )
    if "lifeline-alt" in per_kind:
        out["ratio_alt_over_lifeline"] = round(
            per_kind["lifeline-alt"]["probes_per_s"] / per_kind["lifeline"]["probes_per_s"], 2
        )
        if "blackbox" in per_kind:
            out["ratio_alt_over_blackbox"] = round(
                per_kind["lifeline-alt"]["probes_per_s"] / per_kind["blackbox"]["probes_per_s"], 2
            )
    if "lifeline" in per_kind and "blackbox" in per_kind:
        lf, bb = per_kind["lifeline"], per_kind["blackbox"]
        out["ratio_lifeline_over_blackbox"] = round(lf["probes_per_s"] / bb["probes_per_s"], 2)
        out["ratio_lifeline_over_blackbox_http_only"] = round(
            lf["probes_per_s"] / per_kind["blackbox-http"]["probes_per_s"], 2
        )
        out["median_run_ratio"] = round(
            statistics.median(lf["probes_per_s_runs"]) / statistics.median(bb["probes_per_s_runs"]),
            2,
        )
        if "lifeline-asyncio" in per_kind:
            out["ratio_asyncio_over_blackbox"] = round(
                per_kind["lifeline-asyncio"]["probes_per_s"] / bb["probes_per_s"], 2
            )
        if "lifeline-window" in per_kind:
            out["ratio_window_over_blackbox"] = round(
                per_kind["lifeline-window"]["probes_per_s"] / bb["probes_per_s"], 2
            )
    return out


# --- the scheduler -------------------------------------------------------------------------


def scheduler_run(
    args: argparse.Namespace,
    work: Path,
    far: FarEnd,
    tree: Path | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """serve's own schedule; its vantages keep lifeline's default DNS window.

    (There the window holds a measurement's place in flight a little longer, and
    serve sizes its bounds for a whole round of timeouts, far above that: it
    costs concurrency, not CPU or punctuality.)
    """
    plan = far.plan
    names = plan.names[: args.sched_targets]
    config = lifeline_config(
        plan, names, vantages=args.vantages, interval_s=args.interval, data_dir=str(work / "s")
    )
    tag = "sched" if tree is None else "sched-alt"
    tag += f"-w{workers}" if workers else ""
    proc, base = _serve(work, tag, config, tree=tree, workers=workers)
    try:
        result: SchedResult = asyncio.run(
            watch_schedule(
                proc,
                base,
                targets=len(names),
                vantages=args.vantages,
                interval_s=args.interval,
                rounds=args.sched_rounds,
                far_pids=far.pids,
            )
        )
    finally:
        proc.close()
    return result.summary()


# --- the report ----------------------------------------------------------------------------


def _print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\nmachine: {m['nproc']} x {m['cpu']}, Python {m['python']}, {m['event_loop']}")
    print(f"far end: {json.dumps(report['far_end'])}")
    probe = report.get("probe")
    if probe:
        print(
            f"\n/probe, {probe['names']} targets, concurrency {probe['concurrency']}"
            f" (lifeline: dns_window {probe['dns_window']['lifeline']};"
            f" lifeline-window: lifeline's {probe['dns_window']['lifeline-window']}):"
        )
        for kind, f in probe["exporters"].items():
            print(
                f"  {kind:16} {f['probes_per_s']:8.1f} probes/s"
                f"  {f['cpu_ms_per_probe']} ms CPU/probe"
                f"  {f['cpu_cores']} cores  peak RSS {f['peak_rss_mb']} MB  errors {f['errors']}"
                f"  far end {f['far_end_cpu_ms_per_probe']} ms/probe"
                f" {json.dumps(f['far_end_cpu_cores'])} cores"
            )
        if "ratio_lifeline_over_blackbox" in probe:
            print(
                f"  ratio lifeline/blackbox: {probe['ratio_lifeline_over_blackbox']} "
                f"(vs. blackbox without DNS: {probe['ratio_lifeline_over_blackbox_http_only']})"
            )
        if "ratio_window_over_blackbox" in probe:
            print(f"  ratio lifeline-window/blackbox: {probe['ratio_window_over_blackbox']}")
        if "ratio_asyncio_over_blackbox" in probe:
            print(f"  ratio lifeline-asyncio/blackbox: {probe['ratio_asyncio_over_blackbox']}")
        print(f"  agreement: {json.dumps(probe['agreement'])}")
        print(f"  agreement (lifeline-window): {json.dumps(probe['agreement_window'])}")
        if "ratio_workers_over_blackbox" in probe:
            print(
                f"  ratio lifeline --workers {probe['workers']}/blackbox: "
                f"{probe['ratio_workers_over_blackbox']}"
            )
            print(f"  agreement (--workers): {json.dumps(probe['agreement_workers'])}")
    for key in ("scheduler", "scheduler_workers", "scheduler_alt"):
        if report.get(key):
            print(f"\n{key}: {json.dumps(report[key])}")
    if probe and "ratio_alt_over_lifeline" in probe:
        print(f"\nlifeline-alt/lifeline: {probe['ratio_alt_over_lifeline']}")


def inside(args: argparse.Namespace) -> int:
    report: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-") as tmp:
        work = Path(tmp)
        count = max(
            args.names if not args.skip_probe else 0,
            args.sched_targets if not args.skip_sched else 0,
            1,
        )
        t0 = time.monotonic()
        far = start_far_end(work, count, 10, args.origin, args.nginx_workers)
        report["far_end"] = far.info
        print(
            f"farm: {count} names up in {time.monotonic() - t0:.1f} s, origins: "
            + (f"{far.info['nginx']}" if far.nginx is not None else "python (the farm process)"),
            flush=True,
        )
        try:
            if not args.skip_probe:
                print(
                    f"/probe comparison (lifeline with dns_window {PROBE_DNS_WINDOW},"
                    " as blackbox does not listen for late DNS replies; lifeline-window:"
                    " lifeline's default):",
                    flush=True,
                )
                report["probe"] = probe_comparison(args, work, far)
            if not args.skip_sched:
                print(
                    f"scheduler: {args.sched_targets} targets x {args.vantages} vantages "
                    f"every {args.interval:g} s for {args.sched_rounds:g} intervals",
                    flush=True,
                )
                if not args.sched_workers_only:
                    report["scheduler"] = scheduler_run(args, work, far)
                if args.workers:
                    print(f"scheduler with --workers {args.workers}", flush=True)
                    report["scheduler_workers"] = scheduler_run(
                        args, work, far, workers=args.workers
                    )
                if args.alt_tree is not None:
                    print(f"scheduler again, lifeline from {args.alt_tree}", flush=True)
                    report["scheduler_alt"] = scheduler_run(args, work, far, tree=args.alt_tree)
        finally:
            far.close()
    report["seconds"] = round(time.monotonic() - t0, 1)
    _print_report(report)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    _defaults(args, parser)
    if args.out is not None:
        args.out = args.out.resolve()
    if args.alt_tree is not None:
        args.alt_tree = args.alt_tree.resolve()
    if not args.no_netns and os.environ.get(_INSIDE) != "1":
        extra = [] if args.out is None else ["--out", str(args.out)]
        extra += [] if args.alt_tree is None else ["--alt-tree", str(args.alt_tree)]
        return _reexec_isolated([*argv, *extra])
    return inside(args)


if __name__ == "__main__":
    sys.exit(main())
