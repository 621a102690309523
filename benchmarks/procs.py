"""The processes under test: starting them, stopping them, reading their cost from /proc.

Both exporters run as subprocesses of the benchmark, as operators run them,
so that /proc charges each one only its own work: CPU seconds are
``utime + stime`` of the exporter's process (``/proc/PID/stat``), memory is
its resident set (``VmRSS``, and the kernel's own peak ``VmHWM``).
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


def sample(pid: int) -> CpuMem:
    """CPU (user + system) and memory of ``pid``, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)
    rss = peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return CpuMem(cpu, rss, peak)


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
