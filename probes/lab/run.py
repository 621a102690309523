"""``lifeline lab``: start the lab, then serve until a signal or run the selftest.

Kept apart from :mod:`probes.lab.lab` so the lab never imports its own
selftest (which drives a :class:`~probes.lab.lab.Lab`): the imports run one way.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from probes.lab.lab import Lab
from probes.lab.selftest import run_selftest

__all__ = ["run_lab"]


async def _until_signalled() -> None:
    """Wait for SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
        loop.add_signal_handler(number, stop.set)
    try:
        await stop.wait()
    finally:
        for number in signals:
            loop.remove_signal_handler(number)


async def run_lab(directory: Path, *, selftest: bool) -> int:
    """``lifeline lab``: serve until a signal, or check every rule and report (exit status)."""
    async with Lab(directory) as lab:
        print(f"lab config: {lab.config_path}", flush=True)
        print(f"lab expected verdicts: {lab.expected_path}", flush=True)
        print(f"lab admin: {lab.admin_url}", flush=True)
        if selftest:
            passed = await run_selftest(lab, lambda line: print(line, flush=True))
            return 0 if passed else 1
        print("lab running; stop with Ctrl-C", file=sys.stderr, flush=True)
        await _until_signalled()
    return 0
