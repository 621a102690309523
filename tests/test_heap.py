"""glibc's mmap threshold stays where serve put it (probes.heap).

Each check runs in a fresh interpreter: the setting is process-wide, and the
test process's own heap must not be changed by it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Frees a 4 MiB block (which makes glibc raise its threshold), then counts how many
#: blocks a 256 KiB buffer adds to the mmapped ones: 1 below the threshold, 0 in the heap.
PROGRAM = """
import ctypes, sys
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
from probes.heap import steady_heap
print(steady_heap() if sys.argv[1] == "steady" else "untouched")
big = bytearray(4 << 20)
del big
before = libc.mallinfo2().hblks
buffer = bytearray(256 << 10)
print(libc.mallinfo2().hblks - before)
"""


def _run(mode: str, **env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    environment.update(env, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True, text=True, env=environment, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.split()


def _glibc() -> bool:
    import ctypes

    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return sys.platform.startswith("linux")


pytestmark = pytest.mark.skipif(not _glibc(), reason="glibc's malloc only (Linux with glibc)")


def test_big_short_lived_buffers_keep_going_back_to_the_kernel() -> None:
    assert _run("untouched") == ["untouched", "0"]  # glibc's default: the heap takes it
    assert _run("steady") == ["True", "1"]  # fixed: mmapped, and unmapped when freed


def test_an_operators_own_setting_is_left_alone() -> None:
    assert _run("steady", MALLOC_MMAP_THRESHOLD_="1048576") == ["False", "0"]
