"""Shared fixtures: one built-in lab for the whole test session; the event loops.

``lab`` is a started :class:`probes.lab.LabThread` in a temporary directory:
tests read ``lab.config_path``, ``lab.expected``, ``lab.directory`` and may
change rules only inside ``with lab.rule(scenario, layer, action):`` so the
next test finds the catalogue's rules again.

A module marked ``pytestmark = pytest.mark.both_loops`` runs each of its async
tests twice, under asyncio's loop and under uvloop's (ids ``[asyncio]`` and
``[uvloop]``): the stages' evidence must not depend on the loop. Where uvloop
is not installed the uvloop half skips, saying so. Every other async test
runs under asyncio's loop alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

import pytest

from probes.lab import LabThread
from probes.loops import LOOP_NAMES, LoopUnavailable, loop_factory


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_loops: run each async test under asyncio's loop and under uvloop's"
    )


def _uvloop() -> asyncio.AbstractEventLoop:
    try:
        factory = loop_factory("uvloop")
    except LoopUnavailable as exc:
        pytest.skip(str(exc))
    return factory()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, object]:
    """asyncio's loop for every async test; uvloop's too for a ``both_loops`` module."""
    if item.get_closest_marker("both_loops") is None:
        return {"asyncio": asyncio.new_event_loop}
    assert LOOP_NAMES == ("asyncio", "uvloop")
    return {"asyncio": asyncio.new_event_loop, "uvloop": _uvloop}


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabThread]:
    with LabThread(tmp_path_factory.mktemp("lab")) as running:
        yield running
