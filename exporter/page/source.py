"""What the status page reads from ``serve``: the two protocols ``server.py`` implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from exporter.page.view import ChangeRow, Status
from probes.records import Result

__all__ = ["ChangeRow", "PageSource"]


class PageSource(Protocol):
    """What ``serve`` hands the page: the current status, the timeline, the evidence."""

    async def status(self) -> Status | Mapping[str, Any]:
        """The current verdicts: typed, or as the ``/api/v1/status`` document."""
        ...

    async def changes(self, *, since: str | None) -> Sequence[ChangeRow]:
        """Verdict periods still going on at or after ``since`` (all when None)."""
        ...

    async def measurements(
        self, *, service: str, target: str, vantage: str, limit: int
    ) -> list[Result]:
        """The newest ``limit`` measurements of one (target, vantage), decoded at the store."""
        ...

    async def window(self) -> Mapping[str, Any] | None:
        """The ``lifeline.window/1`` document for a 1 h window (None when there is none)."""
        ...
