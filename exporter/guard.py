"""The SSRF guard: which URLs a /probe request or a hub's measure request may measure.

Configured targets match exactly; an unconfigured URL needs a ``probe.allow``
glob. Anything else is a 400, before anything is resolved or connected. The
server's /probe and the agent's measure endpoint both admit through here, so
there is one guard, not two.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from aiohttp import web

from probes.model import CANARY_SERVICE, Config, Target

__all__ = ["ADHOC_SERVICE", "TargetIndex", "admitted_target"]

#: The service label of a /probe target that only a `probe.allow` pattern admits.
ADHOC_SERVICE = "probe"


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=text + "\n")


class TargetIndex:
    """The configured targets by URL, built once per config (at load and reload).

    /probe looks a URL up here instead of scanning every target of every
    service per request.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._by_url: dict[str, tuple[str, Target]] = {}
        for s in reversed(config.services):  # the first service naming a URL wins
            for t in reversed(s.targets):
                self._by_url[t.url] = (s.name, t)
        for t in reversed(config.canaries):  # canaries before services, as before
            self._by_url[t.url] = (CANARY_SERVICE, t)

    def admit(self, url: str) -> tuple[str, Target]:
        """The (service, target) a /probe URL may measure; anything else is a 400."""
        found = self._by_url.get(url)
        if found is not None:
            return found
        return _allowed(self.config, url)


def admitted_target(config: Config, url: str) -> tuple[str, Target]:
    """The (service, target) a /probe URL may measure; anything else is a 400.

    Configured targets match exactly; `probe.allow` globs admit others. This
    runs before anything is resolved or connected.
    """
    for t in config.canaries:
        if t.url == url:
            return CANARY_SERVICE, t
    for s in config.services:
        for t in s.targets:
            if t.url == url:
                return s.name, t
    return _allowed(config, url)


def _allowed(config: Config, url: str) -> tuple[str, Target]:
    """An unconfigured URL that a `probe.allow` glob admits, as a target of its own."""
    if not any(fnmatchcase(url, pattern) for pattern in config.probe_allow):
        raise _bad("target is not configured and matches no probe.allow pattern")
    try:
        return ADHOC_SERVICE, Target.parse(url)
    except ValueError as exc:
        raise _bad(str(exc)) from None
