"""Which event loop lifeline runs on: uvloop where it is installed, asyncio's otherwise.

uvloop (libuv under asyncio's API) costs less CPU per measurement than
asyncio's own loop (docs/performance.md). The stages' evidence is the same on
either: what a connection received is counted at the protocol layer
(:mod:`probes.wire`), never by reading the socket behind the loop's back.

``--loop`` on the commands that run a loop: ``auto`` (the default) is uvloop
when it can be imported, ``uvloop`` insists on it, ``asyncio`` opts out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator

__all__ = [
    "LOOP_CHOICES",
    "LOOP_ENV",
    "LOOP_NAMES",
    "LoopUnavailable",
    "loop_factory",
    "resolve",
    "use",
]

#: The loops themselves, and what ``--loop`` accepts.
LOOP_NAMES = ("asyncio", "uvloop")
LOOP_CHOICES = ("auto", *LOOP_NAMES)
#: Where the chosen loop is written for the processes this one starts (worker processes).
LOOP_ENV = "LIFELINE_LOOP"


class LoopUnavailable(ValueError):
    """The loop asked for cannot be had here (not installed, or no such loop)."""


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def resolve(choice: str) -> str:
    """``asyncio`` or ``uvloop`` for a ``--loop`` choice; LoopUnavailable naming what
    is wrong."""
    if choice not in LOOP_CHOICES:
        raise LoopUnavailable(f"--loop {choice!r}: expected one of {', '.join(LOOP_CHOICES)}")
    if choice == "auto":
        return "uvloop" if _uvloop_factory() is not None else "asyncio"
    if choice == "uvloop" and _uvloop_factory() is None:
        raise LoopUnavailable("--loop uvloop: uvloop is not installed (pip install uvloop)")
    return choice


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new loop of ``name`` (``asyncio``/``uvloop``/``auto``);
    LoopUnavailable when it cannot be had here."""
    name = resolve(name)
    if name == "uvloop":
        factory = _uvloop_factory()
        assert factory is not None
        return factory
    return asyncio.new_event_loop


@contextlib.contextmanager
def use(choice: str) -> Iterator[str]:
    """While inside, every loop this process creates (``asyncio.run``, the lab's
    threads) is one of ``choice``; yields the loop's name, also in ``LIFELINE_LOOP``
    for the processes started meanwhile. LoopUnavailable naming what is wrong; what was
    set before comes back on leaving."""
    name = resolve(choice)
    if name == "uvloop":
        import uvloop

        policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    else:
        policy = asyncio.DefaultEventLoopPolicy()
    before, env_before = asyncio.get_event_loop_policy(), os.environ.get(LOOP_ENV)
    asyncio.set_event_loop_policy(policy)
    os.environ[LOOP_ENV] = name
    try:
        yield name
    finally:
        asyncio.set_event_loop_policy(before)
        if env_before is None:
            os.environ.pop(LOOP_ENV, None)
        else:
            os.environ[LOOP_ENV] = env_before
