"""One absolute deadline per measurement, passed down to every stage."""

from __future__ import annotations

import time

__all__ = ["Deadline"]


class Deadline:
    """A point on the monotonic clock; stages take what remains of it."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"
