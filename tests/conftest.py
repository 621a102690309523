"""Shared fixtures: one built-in lab for the whole test session.

``lab`` is a started :class:`probes.lab.LabThread` in a temporary directory:
tests read ``lab.config_path``, ``lab.expected``, ``lab.directory`` and may
change rules only inside ``with lab.rule(scenario, layer, action):`` so the
next test finds the catalogue's rules again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from probes.lab import LabThread


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabThread]:
    with LabThread(tmp_path_factory.mktemp("lab")) as running:
        yield running
