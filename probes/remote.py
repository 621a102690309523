"""Measuring through a remote agent: the hub's side of `serve --agent` (docs/agents.md).

A vantage with ``agent:`` in the config is a machine elsewhere (a VPS in the
country, a volunteer's box) running ``lifeline serve --agent``. The hub asks
it to measure (``POST /api/v1/measure``) and gets back the raw observation,
which it then judges against its *own* control with the same pure
classifier: :class:`RemoteAgents` plays the role :class:`~probes.net.VantageNet`
plays for local vantages.

Failures are told honestly, never as blocking: an agent that does not answer
gives a measurement whose ``error`` starts with
:data:`~probes.classify.AGENT_UNREACHABLE` (the classifier calls it
``vantage_down``); an agent that answers but refuses (a 400 for a target its
config does not allow, a 401) or answers nonsense gives ``agent_refused`` /
``agent_bad_answer`` errors (verdict ``error``).

The agent's clock dates the measurement; the hub only estimates how far that
clock is off (:func:`clock_skew`) and records it, so a skewed agent is
visible but never rewritten.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from probes.classify import AGENT_UNREACHABLE
from probes.model import Agent, Target, Vantage
from probes.records import Measurement
from probes.timefmt import rfc3339

__all__ = [
    "AGENT_BAD_ANSWER",
    "AGENT_REFUSED",
    "MEASURE_PATH",
    "MEASURE_SCHEMA",
    "RemoteAgents",
    "clock_skew",
]

#: The agent's endpoint and the schema of its answer.
MEASURE_PATH = "/api/v1/measure"
MEASURE_SCHEMA = "lifeline.agent.measurement/2"
#: What a hub still reads: /1 agents keep a measurement's stage records flat
#: beside its other keys, /2 under ``stages`` (as records do since
#: lifeline.measurement/2); Measurement.from_dict reads both.
READ_SCHEMAS = frozenset({"lifeline.agent.measurement/1", MEASURE_SCHEMA})
#: ``Measurement.error`` prefixes for an agent that answered but did not measure.
AGENT_REFUSED = "agent_refused"
AGENT_BAD_ANSWER = "agent_bad_answer"
#: Time allowed on top of the measurement budget for the round trip to the agent.
AGENT_GRACE_S = 3.0
#: Requests in flight to one agent (the runner's per-vantage bound applies too).
DEFAULT_PER_AGENT = 24
#: Statuses that mean "something in front of the agent answered, the agent did not".
_GATEWAY_STATUSES = frozenset({502, 503, 504})
#: Most of an error answer quoted into a measurement's error.
_QUOTE_CHARS = 200


def clock_skew(sent: float, received: float, agent_time: float, agent_elapsed: float) -> float:
    """How far the agent's clock is ahead of ours (negative: behind), NTP style.

    ``sent`` and ``received`` are our wall clock around the request;
    ``agent_time`` the agent's wall clock when it answered, ``agent_elapsed``
    how long it held the request by its own monotonic clock. The rest of the
    round trip is network, taken as symmetric: the answer left the agent half
    of it before ``received``. The error is at most half the network time.
    """
    network = max(0.0, (received - sent) - max(0.0, agent_elapsed))
    return agent_time - (received - network / 2)


@dataclass(frozen=True, slots=True)
class _Request:
    """What the hub asks one agent to measure."""

    target: Target
    vantage: Vantage
    agent: Agent
    service: str
    timeout: float
    max_body_bytes: int

    def payload(self) -> dict[str, Any]:
        return {
            "target": self.target.url,
            "vantage": self.agent.vantage,
            "service": self.service,
            "timeout": self.timeout,
            "max_body_bytes": self.max_body_bytes,
            "expect_status": list(self.target.expect_status),
            "throughput": self.target.throughput,
        }

    def failed(self, prefix: str, detail: str, started: float) -> Measurement:
        """A measurement that says the agent did not measure, and why (naming the agent)."""
        return Measurement(
            target=self.target.url,
            vantage=self.vantage.name,
            time=_rfc3339(time.time()),
            duration_s=max(0.0, time.monotonic() - started),
            service=self.service,
            error=f"{prefix}: agent {self.agent.url}: {detail}",
            expect_status=list(self.target.expect_status),
            throughput=self.target.throughput,
        )


class _Failed(Exception):
    """The exchange with the agent ended without a measurement."""

    def __init__(self, prefix: str, detail: str) -> None:
        super().__init__(detail)
        self.prefix = prefix
        self.detail = detail


_SessionKey = tuple[str, str | None, str | None, str | None]


class RemoteAgents:
    """The hub's client of its agents: one bounded aiohttp session per agent.

    Sessions are made on first use (inside the running loop) and closed by
    :meth:`aclose`. ``clock`` is the wall clock used for the skew estimate.
    """

    def __init__(
        self,
        *,
        per_agent: int = DEFAULT_PER_AGENT,
        grace_s: float = AGENT_GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._per_agent = per_agent
        self._grace = grace_s
        self._clock = clock
        self._sessions: dict[_SessionKey, aiohttp.ClientSession] = {}

    async def measure(
        self,
        target: Target,
        vantage: Vantage,
        *,
        timeout: float,  # noqa: ASYNC109 (the measurement's budget, passed on to the agent)
        max_body_bytes: int,
        service: str = "",
    ) -> Measurement:
        """Have the vantage's agent measure ``target``; never raises (cancellation aside)."""
        agent = vantage.agent
        if agent is None:
            raise ValueError(f"vantage {vantage.name!r} has no agent")
        request = _Request(target, vantage, agent, service, timeout, max_body_bytes)
        started = time.monotonic()
        try:
            return await self._exchange(request)
        except _Failed as failure:
            return request.failed(failure.prefix, failure.detail, started)

    async def _exchange(self, request: _Request) -> Measurement:
        session = self._session(request.agent)
        url = request.agent.url + MEASURE_PATH
        budget = aiohttp.ClientTimeout(total=request.timeout + self._grace)
        sent = self._clock()
        try:
            async with session.post(url, json=request.payload(), timeout=budget) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise _Failed(AGENT_UNREACHABLE, "no answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Failed(AGENT_UNREACHABLE, _describe(exc)) from None
        received = self._clock()
        if status != 200:
            raise _refusal(status, body)
        return _measurement(request, _document(body), sent, received)

    def _session(self, agent: Agent) -> aiohttp.ClientSession:
        key = (agent.url, agent.username, agent.password, agent.ca_file)
        session = self._sessions.get(key)
        if session is None or session.closed:
            context = _ssl_context(agent) if agent.url.startswith("https://") else None
            headers = {}
            if agent.username is not None:
                headers["Authorization"] = aiohttp.encode_basic_auth(
                    agent.username, agent.password or ""
                )
            connector = aiohttp.TCPConnector(limit=self._per_agent, ssl=context or False)
            session = aiohttp.ClientSession(connector=connector, headers=headers, trust_env=False)
            self._sessions[key] = session
        return session

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def __aenter__(self) -> RemoteAgents:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _ssl_context(agent: Agent) -> ssl.SSLContext:
    """System trust plus the agent's ``ca_file``; hostnames (IP SANs) are checked."""
    context = ssl.create_default_context()
    if agent.ca_file is not None:
        context.load_verify_locations(cafile=agent.ca_file)
    return context


def _refusal(status: int, body: bytes) -> _Failed:
    """A non-200 answer: gateways mean the agent is not there; anything else is its refusal."""
    said = " ".join(body.decode("utf-8", "replace").split())[:_QUOTE_CHARS]
    detail = f"HTTP {status}" + (f": {said}" if said else "")
    if status in _GATEWAY_STATUSES:
        return _Failed(AGENT_UNREACHABLE, detail)
    if status == 404:
        detail += " (is it running `lifeline serve --agent`?)"
    return _Failed(AGENT_REFUSED, detail)


def _document(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _Failed(AGENT_BAD_ANSWER, "the answer is not JSON") from None
    if not isinstance(doc, dict) or doc.get("schema") not in READ_SCHEMAS:
        raise _Failed(AGENT_BAD_ANSWER, f"the answer is not a {MEASURE_SCHEMA} document")
    return doc


def _measurement(
    request: _Request, doc: dict[str, Any], sent: float, received: float
) -> Measurement:
    """The agent's observation, renamed to our vantage and stamped with who measured it."""
    raw = doc.get("measurement")
    agent_time, elapsed = doc.get("agent_time"), doc.get("agent_elapsed_s")
    if not isinstance(raw, dict) or not isinstance(agent_time, str):
        raise _Failed(AGENT_BAD_ANSWER, "the answer lacks measurement or agent_time")
    try:
        m = Measurement.from_dict(raw)
        their_clock = datetime.fromisoformat(agent_time.replace("Z", "+00:00")).timestamp()
        _check_shape(m)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _Failed(AGENT_BAD_ANSWER, f"malformed measurement ({exc})") from None
    if m.target != request.target.url:
        raise _Failed(AGENT_BAD_ANSWER, f"it measured {m.target!r}, not the target asked for")
    held = float(elapsed) if isinstance(elapsed, int | float) else 0.0
    m.vantage = request.vantage.name
    m.service = request.service
    m.agent = _text(doc.get("agent"))
    m.agent_version = _text(doc.get("version"))
    m.clock_skew_s = clock_skew(sent, received, their_clock, held)
    v = request.vantage  # where it is, as the hub's config says (else as the agent's did)
    m.country = v.country or _text(m.country) or None
    m.asn = v.asn or (m.asn if isinstance(m.asn, int) and not isinstance(m.asn, bool) else None)
    m.network_name = v.network_name or _text(m.network_name) or None
    return m


def _check_shape(m: Measurement) -> None:
    """Fields the classifier relies on have their types (an agent is trusted, not infallible)."""
    if not isinstance(m.time, str) or not isinstance(m.duration_s, int | float):
        raise ValueError("time or duration_s has the wrong type")
    if m.error is not None and not isinstance(m.error, str):
        raise ValueError("error is not text")
    for name, stage in m.stages.items():
        if stage is not None and not isinstance(stage.ok, bool):
            raise ValueError(f"{name}.ok is not true or false")


def _text(value: object) -> str:
    return value[:100] if isinstance(value, str) else ""


def _describe(exc: BaseException) -> str:
    """A connection problem in a few words (the OS's reason where there is one)."""
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno).lower()
    text = " ".join(str(exc).split())
    return text[:_QUOTE_CHARS] or type(exc).__name__


def _rfc3339(ts: float) -> str:
    return rfc3339(ts)
