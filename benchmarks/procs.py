"""The processes under test: starting them, stopping them, reading their cost from /proc.

Both exporters run as subprocesses of the benchmark, as operators run them,
so that /proc charges each one only its own work: CPU seconds are
``utime + stime`` of the exporter's process and its children (``/proc/PID/stat``;
``serve --workers`` measures in children), memory is their resident set
(``VmRSS``, and the kernel's own peak ``VmHWM``, summed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BLACKBOX",
    "CpuMem",
    "Proc",
    "blackbox_path",
    "free_port",
    "sample",
    "start",
]

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
_TICK = os.sysconf("SC_CLK_TCK")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def blackbox_path() -> str | None:
    """Debian's blackbox_exporter, if installed.

    (``apt-get install prometheus-blackbox-exporter`` installs it.)
    """
    if os.access(BLACKBOX, os.X_OK):
        return BLACKBOX
    return shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the exporter binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class CpuMem:
    """One reading of a process: CPU seconds so far, resident and peak memory (bytes)."""

    cpu_s: float
    rss: int
    peak_rss: int
    own_cpu_s: float = 0.0  # the process itself, without its children (serve without workers)


def sample(pid: int) -> CpuMem:
    """CPU (user + system) and memory of ``pid`` and its descendants, from /proc.

    ``serve --workers N`` measures in child processes: their CPU counts, as do
    the children they have already reaped (``cutime``, ``cstime``). Memory is
    the sum over the live processes; the peak is the sum of each one's own
    peak, an upper bound (the processes need not peak at the same moment).
    """
    cpu = own = 0.0
    rss = peak = 0
    for p in [pid, *_descendants(pid)]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            status = Path(f"/proc/{p}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            if p == pid:
                raise
            continue  # a worker that just ended
        fields = stat[stat.rindex(")") + 2 :].split()
        # utime, stime, cutime, cstime (fields 14-17 of proc(5))
        cpu += sum(int(f) for f in fields[11:15]) / _TICK
        if p == pid:
            own = (int(fields[11]) + int(fields[12])) / _TICK
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1]) * 1024
    return CpuMem(cpu, rss, peak, own)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            out += kids
            todo += kids
    return out


class Proc:
    """A started subprocess, stopped with SIGTERM (then SIGKILL) on close."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.name = name
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            argv,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        """Until ``url`` answers 2xx; raise with the process's log if it dies or never does."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            with contextlib.suppress(OSError):
                with _OPENER.open(url, timeout=2):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {url} in {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        self._out.flush()
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def close(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()


def start(name: str, argv: list[str], log: Path, *, tree: Path | None = None) -> Proc:
    """Start ``argv``; with ``tree``, Python imports lifeline from that checkout first.

    (``python -m`` puts the working directory first on sys.path, so the
    process also starts in ``tree``.)
    """
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    return Proc(name, argv, log, env, cwd=tree)


def python() -> str:
    return sys.executable
