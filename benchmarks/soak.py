"""A soak of `lifeline serve`: many targets on the lab for minutes; does anything grow?

    python -m benchmarks.soak                         # 1000 targets for 6 minutes
    python -m benchmarks.soak --targets 300 --minutes 2

Everything runs on loopback: the built-in lab (in this process, a thread),
and `lifeline serve` as a subprocess watching a generated config: the
targets are URLs on the lab's `open` host (varied query strings, so each is
its own target with the real page behind it), and a third of them on the
`tcp-blackhole` host, whose CONNECT the lab's middlebox never answers from
the `censored` vantage: each of those measurements waits out the timeout.

What is sampled, from outside the process (nothing is asked of serve that
an operator could not ask):

- RSS (``VmRSS`` of ``/proc/PID/status``) and open file descriptors
  (entries of ``/proc/PID/fd``);
- asyncio tasks alive in serve's event loop (the ``lifeline_tasks`` gauge);
- ``lifeline_skipped_measurements_total`` and ``lifeline_measurements_total``.

It prints the figures after the warm-up and at the end, and their ratio.
``tests/test_soak.py`` runs the same, smaller and shorter, and asserts that
the ratios stay near 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Sample",
    "SoakPlan",
    "flat",
    "main",
    "running_serve",
    "soak_config",
    "take_sample",
]

#: Share of the targets on the black-holed host.
BLACKHOLED_SHARE = 3
#: Targets per service (keeps each service's series a readable size).
PER_SERVICE = 50
#: Vantages of the lab config that the soak keeps: the dead `shutdown` vantage would only
#: add skipped measurements that say nothing about the schedule's own bounds.
VANTAGES = ("control", "censored")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class SoakPlan:
    """A generated soak config and what it holds."""

    path: Path
    targets: int
    blackholed: int  # targets on the black-holed host
    jobs_per_round: int  # (target + canary) x vantage measurements in one interval
    blackholed_jobs: int  # of those, the ones that wait out the timeout (censored only)


def soak_config(
    lab_config: Path, directory: Path, *, targets: int, interval: str, timeout: str
) -> SoakPlan:
    """Write ``directory/config.yaml``: ``targets`` URLs on the lab, a third black-holed."""
    lab = yaml.safe_load(lab_config.read_text())
    https_port, http_port = _lab_ports(lab)
    blackholed = targets // BLACKHOLED_SHARE
    urls = [_open_url(i, https_port, http_port) for i in range(targets - blackholed)]
    holes = [
        f"https://tcp-blackhole.lifeline.test:{https_port}/?soak={i}" for i in range(blackholed)
    ]
    services = _services("soak-open", urls) + _services("soak-blackhole", holes)
    vantages = [v for v in lab["vantages"] if v["name"] in VANTAGES]
    document = {
        "version": 1,
        "defaults": {**lab["defaults"], "interval": interval, "timeout": timeout},
        "vantages": vantages,
        "canaries": lab["canaries"],
        "services": services,
        "storage": {"dir": str(directory / "data"), "retention": "1d"},
        "fingerprints": lab.get("fingerprints", {}),
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    keys = targets + len(lab["canaries"])
    return SoakPlan(path, targets, blackholed, keys * len(vantages), blackholed)


def _lab_ports(lab: dict[str, Any]) -> tuple[int, int]:
    """The lab origins' HTTPS and HTTP ports, read off its `open` service."""
    open_targets = next(s["targets"] for s in lab["services"] if s["name"] == "open")
    urls = [t if isinstance(t, str) else t["url"] for t in open_targets]
    https = next(u for u in urls if u.startswith("https://"))
    http = next(u for u in urls if u.startswith("http://"))
    return _port(https), _port(http)


def _port(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def _open_url(i: int, https_port: int, http_port: int) -> str:
    """Half HTTPS, half HTTP; the query string makes each its own target on the real page."""
    if i % 2:
        return f"http://open.lifeline.test:{http_port}/?soak={i}"
    return f"https://open.lifeline.test:{https_port}/?soak={i}"


def _services(prefix: str, urls: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"name": f"{prefix}-{k // PER_SERVICE}", "targets": list(urls[k : k + PER_SERVICE])}
        for k in range(0, len(urls), PER_SERVICE)
    ]


# --- sampling -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at a running serve."""

    at: float  # monotonic seconds
    rss: int  # bytes
    fds: int
    tasks: int
    skipped: float
    measured: float


def take_sample(pid: int, base_url: str) -> Sample:
    """RSS and fds from /proc, tasks and counters from /metrics."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with _OPENER.open(base_url + "metrics", timeout=60) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[s.name] = values.get(s.name, 0.0) + s.value
    return Sample(
        at=time.monotonic(),
        rss=rss,
        fds=fds,
        tasks=int(values.get("lifeline_tasks", 0)),
        skipped=values.get("lifeline_skipped_measurements_total", 0.0),
        measured=values.get("lifeline_measurements_total", 0.0),
    )


def flat(before: Sequence[Sample], after: Sequence[Sample]) -> dict[str, float]:
    """Ratios of the peaks of a later window to an earlier one (1.0 = flat).

    Peaks, not single readings: tasks and descriptors rise and fall within
    every interval as measurements start and end; what must not happen is
    the peak itself climbing from window to window.
    """
    return {
        name: max(getattr(s, name) for s in after) / max(1, max(getattr(s, name) for s in before))
        for name in ("rss", "fds", "tasks")
    }


# --- running serve -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    err: Path


@contextmanager
def running_serve(config: Path, directory: Path) -> Iterator[Running]:
    """`lifeline serve` on ``config`` (a subprocess), stopped with SIGTERM on exit."""
    out, err = directory / "serve.out", directory / "serve.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "serve", "-c", str(config),
             "--listen", "127.0.0.1:0", "--data-dir", str(directory / "data")],
            stdout=o, stderr=e,
        )  # fmt: skip
    try:
        yield Running(proc, _listening(proc, out, err), err)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(proc: subprocess.Popen[bytes], out: Path, err: Path) -> str:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("listening on "):
                return line.removeprefix("listening on ").strip()
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}: {err.read_text()}")
        time.sleep(0.1)
    raise RuntimeError("serve did not start listening")


def wait_ready(url: str, proc: subprocess.Popen[bytes], patience: float = 600.0) -> None:
    """Until /-/ready says every (target, vantage) was measured once."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}")
        try:
            with _OPENER.open(url + "-/ready", timeout=60) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("serve never became ready")


def sample_for(run: Running, seconds: float, every: float) -> list[Sample]:
    """Samples every ``every`` seconds for ``seconds``."""
    samples = [take_sample(run.proc.pid, run.url)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(every)
        if run.proc.poll() is not None:
            raise RuntimeError(f"serve exited {run.proc.returncode}: {run.err.read_text()}")
        samples.append(take_sample(run.proc.pid, run.url))
    return samples


# --- the benchmark -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=6.0)
    # a third black-holed at 24 measurements per vantage at once: 333 x 2 s = 28 s a round
    parser.add_argument("--interval", default="60s")
    parser.add_argument("--timeout", default="2s")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    from probes.lab import LabThread

    with tempfile.TemporaryDirectory(prefix="lifeline-soak-") as tmp:
        directory = Path(tmp)
        (directory / "lab").mkdir()
        with LabThread(directory / "lab") as lab:
            plan = soak_config(
                lab.config_path,
                directory,
                targets=args.targets,
                interval=args.interval,
                timeout=args.timeout,
            )
            with running_serve(plan.path, directory) as run:
                wait_ready(run.url, run.proc)
                total = args.minutes * 60.0
                early = sample_for(run, total / 3, every=5.0)
                sample_for(run, total / 3, every=5.0)
                late = sample_for(run, total / 3, every=5.0)
    report = _report(plan, early, late)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


def _report(plan: SoakPlan, early: list[Sample], late: list[Sample]) -> dict[str, Any]:
    return {
        "targets": plan.targets,
        "blackholed": plan.blackholed,
        "jobs_per_round": plan.jobs_per_round,
        "seconds": round(late[-1].at - early[0].at, 1),
        "start": _figures(early),
        "end": _figures(late),
        "ratio_of_peaks": {k: round(v, 3) for k, v in flat(early, late).items()},
        "measured": late[-1].measured - early[0].measured,
        "skipped": late[-1].skipped - early[0].skipped,
    }


def _figures(samples: list[Sample]) -> dict[str, int]:
    return {
        "rss_mib": max(s.rss for s in samples) >> 20,
        "fds": max(s.fds for s in samples),
        "tasks": max(s.tasks for s in samples),
    }


def _print(report: dict[str, Any]) -> None:
    print(
        f"{report['targets']} targets ({report['blackholed']} black-holed), "
        f"{report['jobs_per_round']} measurements a round, {report['seconds']} s sampled"
    )
    print(f"{'':8}{'start':>10}{'end':>10}{'end/start':>11}")
    for name, label in (("rss_mib", "RSS MiB"), ("fds", "fds"), ("tasks", "tasks")):
        key = "rss" if name == "rss_mib" else name
        print(
            f"{label:8}{report['start'][name]:>10}{report['end'][name]:>10}"
            f"{report['ratio_of_peaks'][key]:>11.2f}"
        )
    print(f"measured {report['measured']:.0f}, skipped {report['skipped']:.0f}")


if __name__ == "__main__":
    raise SystemExit(main())
