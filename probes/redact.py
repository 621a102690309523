"""What a log line may never show: credentials in URLs, a config's secrets.

:func:`redact_text` masks what looks secret in any text (the password of a
``scheme://user:password@host`` URL, the value of a ``token=``/``key=``/…
query parameter). :class:`Redactor` masks, on top of that, the known secret
values of a config (:func:`config_secrets`): proxy and agent passwords,
everything substituted from the environment (``${NAME}``), the path and
query of a DoH URL that is not a plain ``/dns-query``. Masks are ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from probes.model import Config

__all__ = ["MASK", "Redactor", "config_secrets", "redact_text"]

MASK = "***"
#: Shorter values are not masked wherever they occur (a 2-character password
#: would turn every "ok" into "***"); the URL and query rules still apply to them.
MIN_SECRET_CHARS = 3
#: Query parameters whose values are masked in any URL.
_SECRET_PARAMS = (
    "token|access_token|auth|authorization|key|api_key|apikey|secret|password|passwd|pass"
    "|pwd|sig|signature|credential|credentials|session"
)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/?#@:]*):[^\s/?#@]*@")
_BARE_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@:]+@")
_PARAM = re.compile(rf"(?i)(?P<name>[?&;](?:{_SECRET_PARAMS})=)[^\s&#'\"]*")
#: DoH paths that are a protocol's, not a secret.
_PLAIN_DOH_PATHS = frozenset({"", "/", "/dns-query", "/resolve"})


def redact_text(text: str) -> str:
    """``text`` with URL passwords and secret query values masked.

    ``socks5://user:pass@127.0.0.1:1080`` -> ``socks5://user:***@127.0.0.1:1080``;
    ``https://9.9.9.9/dns-query?token=abc`` -> ``https://9.9.9.9/dns-query?token=***``.
    A user name alone before ``@`` is masked as well (it may be a token).
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BARE_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _PARAM.sub(lambda m: f"{m['name']}{MASK}", text)


def config_secrets(config: Config) -> frozenset[str]:
    """The values of a config that no log line may show."""
    found: set[str] = set(config.secrets)
    for v in config.vantages:
        if v.proxy is not None and v.proxy.password:
            found.add(v.proxy.password)
        if v.agent is not None and v.agent.password:
            found.add(v.agent.password)
        if v.resolver.kind == "https" and v.resolver.url:
            found.update(_doh_secrets(v.resolver.url))
    return frozenset(s for s in found if len(s) >= MIN_SECRET_CHARS)


def _doh_secrets(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    found = {value for _, value in parse_qsl(parts.query, keep_blank_values=False)}
    if parts.path not in _PLAIN_DOH_PATHS:
        found.add(parts.path.strip("/"))
    if parts.query:
        found.add(parts.query)
    return found


class Redactor:
    """Masks known secret values and what :func:`redact_text` finds, in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.remember(secrets)

    def remember(self, secrets: Iterable[str]) -> None:
        """Add secrets (a reloaded config's); the old ones stay masked too."""
        merged = self._secrets | {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
        if merged == self._secrets and self._pattern is not None:
            return
        self._secrets = frozenset(merged)
        longest_first = sorted(merged, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first))) if merged else None

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return redact_text(text)
