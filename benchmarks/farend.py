"""The far end of a run: the farm process, and nginx when it serves the origins.

``start_far_end`` starts the farm (:mod:`benchmarks.farm`: the plan, the
resolver, and the Python origins or nginx's config), then nginx on that
config, and waits until every origin accepts connections. Its CPU is read
per part (``cpu()``), so a run can report the far end's cost apart from the
exporters' and say how much of the machine it took.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import nginx
from benchmarks.farm import ORIGINS, Plan
from benchmarks.procs import Proc, python, sample, start

__all__ = ["FarEnd", "default_origin", "start_far_end"]

FARM_WAIT_S = 120.0


def default_origin() -> str:
    """nginx when it is installed, the Python origins otherwise."""
    return "nginx" if nginx.nginx_path() is not None else "python"


@dataclass(slots=True)
class FarEnd:
    """The running far end: the farm, nginx (or None), the plan they serve."""

    plan: Plan
    origin: str
    farm: Proc
    nginx: Proc | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what the report says about it

    @property
    def pids(self) -> dict[str, int]:
        """The far end's processes by part: ``farm`` (resolver, Python origins), ``nginx``."""
        out = {"farm": self.farm.pid}
        if self.nginx is not None:
            out["nginx"] = self.nginx.pid
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each part (nginx with its workers)."""
        return {part: sample(pid).cpu_s for part, pid in self.pids.items()}

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.close()
        self.farm.close()


def _ready_line(log: Path) -> dict[str, Any] | None:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"ready": true' in line:
            doc: dict[str, Any] = json.loads(line)
            return doc
    return None


def _accepting(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect((address, port))
        except OSError:
            return False
    return True


def _start_nginx(work: Path, conf: Path, plan: Plan) -> Proc:
    exe = nginx.nginx_path()
    if exe is None:
        raise RuntimeError(
            "nginx is not installed (apt-get install nginx); or pass --origin python"
        )
    proc = start("nginx", nginx.argv(exe, conf), work / "nginx.log")
    origins = sorted({(n.address, n.port) for n in plan.names if n.should_succeed})
    end = time.monotonic() + FARM_WAIT_S
    waiting = list(origins)
    while waiting:
        if not proc.alive() or time.monotonic() > end:
            error_log = conf.parent / "error.log"
            detail = error_log.read_text(errors="replace") if error_log.exists() else ""
            proc.close()
            raise RuntimeError(f"nginx did not start:\n{proc.tail()}\n{detail[-2000:]}")
        if _accepting(*waiting[-1]):
            waiting.pop()
        else:
            time.sleep(0.1)
    return proc


def start_far_end(
    work: Path,
    count: int,
    per_address: int,
    origin: str | None = None,
    nginx_workers: int = nginx.WORKERS,
) -> FarEnd:
    """The farm for ``count`` names and its origins (``origin``: nginx or python; None: default)."""
    origin = origin or default_origin()
    if origin not in ORIGINS:
        raise ValueError(f"origin {origin!r}: one of {', '.join(ORIGINS)}")
    farm_dir = work / "farm"
    farm_dir.mkdir()
    argv = [python(), "-m", "benchmarks.farm", str(farm_dir), str(count), str(per_address)]
    proc = start("farm", [*argv, origin, str(nginx_workers)], work / "farm.log")
    end = time.monotonic() + FARM_WAIT_S
    while (ready := _ready_line(proc.log)) is None:
        if not proc.alive() or time.monotonic() > end:
            proc.close()
            raise RuntimeError(f"the farm did not start:\n{proc.tail()}")
        time.sleep(0.2)
    plan = Plan.load(farm_dir / "plan.json")
    far = FarEnd(plan, origin, proc, info={"origin": origin, "origins": ready.get("origins")})
    if origin == "nginx":
        try:
            far.nginx = _start_nginx(work, Path(ready["nginx_conf"]), plan)
        except BaseException:
            proc.close()
            raise
        exe = nginx.nginx_path()
        assert exe is not None
        far.info["nginx"] = nginx.nginx_version(exe)
        far.info["nginx_workers"] = nginx_workers
    return far
