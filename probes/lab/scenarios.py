"""The lab's scenario catalogue as data, and the verdicts it should produce.

One table (:data:`CATALOGUE`) names every scenario, its targets, what its
origin does and which censor rules it starts with. Everything else derives
from it: the addresses, the DNS zone, the generated config, and the expected
verdicts. Expected verdicts are computed by :func:`expected_verdict` from the
rules in force, so flipping a rule at run time updates the expectation with
the same logic that produced the catalogue (a golden test pins the catalogue).
This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from probes.model import CANARY_SERVICE
from probes.records import Verdict

__all__ = [
    "BLOCKPAGE_ADDRESS",
    "CATALOGUE",
    "IMPOSTOR_ADDRESS",
    "IMPOSTOR_NAME",
    "INJECTED_NAME",
    "LAYER_ACTIONS",
    "REPLICA_ADDRESS",
    "SOURCE_ADDRESS",
    "VOID_ADDRESS",
    "ZONE",
    "Action",
    "Kind",
    "Layer",
    "Origin",
    "Role",
    "Scenario",
    "expected_verdict",
    "host_name",
    "origin_addresses",
    "scenario",
]

#: Lab names live under this RFC 6761 zone, never resolvable for real.
ZONE = "lifeline.test"
#: The censored vantage's "in-country" address: the middlebox connects from it.
SOURCE_ADDRESS = "127.0.0.2"
#: The address the censor injects (stands in for Iran's 10.10.34.34); a block page listens there.
BLOCKPAGE_ADDRESS = "127.0.0.66"
#: A second CDN replica of the ``cdn`` scenario (valid certificate, same content).
REPLICA_ADDRESS = "127.0.0.40"
#: The ``dns-lie`` impostor: a certificate for another name, another page.
IMPOSTOR_ADDRESS = "127.0.0.41"
IMPOSTOR_NAME = f"parked.{ZONE}"
INJECTED_NAME = f"blocked.{ZONE}"
#: Where ``down-nolisten`` resolves: nothing listens there.
VOID_ADDRESS = "127.0.0.99"
#: Origins get consecutive addresses from here, in catalogue order.
_FIRST_ORIGIN = 10


class Kind(StrEnum):
    """A target shape of CONTRACT §1; ``asset`` is an https target with throughput: true."""

    HTTPS = "https"
    HTTP = "http"
    TLS = "tls"
    TCP = "tcp"
    DNS = "dns"
    ASSET = "asset"


class Origin(StrEnum):
    """What the scenario's origin server does, independent of any censor."""

    NORMAL = "normal"
    GEO = "geo"  # a 403 page for clients from SOURCE_ADDRESS
    NOLISTEN = "nolisten"  # resolves, nothing listens
    NONE = "none"  # does not exist, even at the honest resolver


class Layer(StrEnum):
    """Where a censor rule acts: the resolver, the SOCKS CONNECT, the ClientHello, the request."""

    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    HTTP = "http"


class Action(StrEnum):
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    SILENCE = "silence"
    LIE = "lie"  # answer the impostor
    INJECT = "inject"  # answer BLOCKPAGE_ADDRESS
    REPLICA = "replica"  # answer the CDN replica (not blocking)
    REFUSE = "refuse"
    RESET = "reset"
    BLACKHOLE = "blackhole"
    STALL = "stall"
    THROTTLE = "throttle"
    BLOCKPAGE = "blockpage"
    UNAVAILABLE = "451"


LAYER_ACTIONS: Mapping[Layer, frozenset[Action]] = {
    Layer.DNS: frozenset(
        {
            Action.NXDOMAIN,
            Action.SERVFAIL,
            Action.SILENCE,
            Action.LIE,
            Action.INJECT,
            Action.REPLICA,
        }
    ),
    Layer.CONNECT: frozenset({Action.REFUSE, Action.RESET, Action.BLACKHOLE}),
    Layer.TLS: frozenset({Action.RESET, Action.STALL, Action.THROTTLE}),
    Layer.HTTP: frozenset({Action.BLOCKPAGE, Action.UNAVAILABLE, Action.RESET}),
}


class Role(StrEnum):
    """The lab's vantages."""

    CONTROL = "control"
    CENSORED = "censored"
    SHUTDOWN = "shutdown"


Rules = Mapping[Layer, Action]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One lab service: its targets, its origin's behaviour, its initial censor rules."""

    name: str
    kinds: tuple[Kind, ...]
    rules: tuple[tuple[Layer, Action], ...] = ()
    origin: Origin = Origin.NORMAL
    replica: bool = False  # a second origin at REPLICA_ADDRESS
    canary: bool = False  # reported under the pseudo-service "canaries"; no rule may touch it

    @property
    def service(self) -> str:
        return CANARY_SERVICE if self.canary else self.name


_H, _P, _TLS, _TCP, _D, _A = Kind.HTTPS, Kind.HTTP, Kind.TLS, Kind.TCP, Kind.DNS, Kind.ASSET

CATALOGUE: tuple[Scenario, ...] = (
    Scenario("canary", (_H,), canary=True),
    Scenario("open", (_H, _P, _TLS, _TCP, _D)),
    Scenario("cdn", (_H, _P, _D), ((Layer.DNS, Action.REPLICA),), replica=True),
    Scenario("dns-nxdomain", (_H, _D), ((Layer.DNS, Action.NXDOMAIN),)),
    Scenario("dns-servfail", (_H, _D), ((Layer.DNS, Action.SERVFAIL),)),
    Scenario("dns-silence", (_H, _D), ((Layer.DNS, Action.SILENCE),)),
    Scenario("dns-lie", (_H, _P), ((Layer.DNS, Action.LIE),)),
    Scenario("dns-injected", (_H, _D), ((Layer.DNS, Action.INJECT),)),
    Scenario("tcp-refused", (_H, _TCP), ((Layer.CONNECT, Action.REFUSE),)),
    Scenario("tcp-reset", (_H, _TCP), ((Layer.CONNECT, Action.RESET),)),
    Scenario("tcp-blackhole", (_H, _TCP), ((Layer.CONNECT, Action.BLACKHOLE),)),
    Scenario("tls-sni-reset", (_H, _TLS), ((Layer.TLS, Action.RESET),)),
    Scenario("tls-sni-stall", (_H, _TLS), ((Layer.TLS, Action.STALL),)),
    Scenario("http-blockpage", (_P,), ((Layer.HTTP, Action.BLOCKPAGE),)),
    Scenario("http-451", (_P,), ((Layer.HTTP, Action.UNAVAILABLE),)),
    Scenario("http-reset", (_P,), ((Layer.HTTP, Action.RESET),)),
    Scenario("throttle", (_H, _A), ((Layer.TLS, Action.THROTTLE),)),
    Scenario("geo", (_H, _P), origin=Origin.GEO),
    Scenario("down-nolisten", (_H, _TCP), origin=Origin.NOLISTEN),
    Scenario("down-nxdomain", (_H, _D), origin=Origin.NONE),
)


def scenario(name: str) -> Scenario:
    """The catalogue entry called ``name``; KeyError names the known ones."""
    for entry in CATALOGUE:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown scenario {name!r}; known: {', '.join(s.name for s in CATALOGUE)}")


def host_name(entry: Scenario) -> str:
    return f"{entry.name}.{ZONE}"


def origin_addresses() -> dict[str, str]:
    """Scenario name -> the address its name resolves to at the honest resolver."""
    addresses: dict[str, str] = {}
    serial = _FIRST_ORIGIN
    for entry in CATALOGUE:
        if entry.origin is Origin.NONE:
            continue
        if entry.origin is Origin.NOLISTEN:
            addresses[entry.name] = VOID_ADDRESS
            continue
        addresses[entry.name] = f"127.0.0.{serial}"
        serial += 1
    return addresses


# --- expected verdicts ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Effect:
    """What the censored vantage should see: the verdict against a control, and
    whether it still shows without one (a fingerprint) or fails (unreachable)."""

    verdict: Verdict
    failing: bool = True
    fingerprint: bool = False


_OK = _Effect(Verdict.OK, failing=False)
_WEB = frozenset({Kind.HTTPS, Kind.HTTP, Kind.ASSET})
_TLS_KINDS = frozenset({Kind.HTTPS, Kind.TLS, Kind.ASSET})


def _dns_effect(kind: Kind, action: Action) -> _Effect | None:
    if action is Action.INJECT:
        return _Effect(Verdict.DNS_BLOCKED, fingerprint=True)
    if action in (Action.NXDOMAIN, Action.SERVFAIL, Action.SILENCE):
        return _Effect(Verdict.DNS_BLOCKED)
    if action is Action.LIE:
        if kind in _TLS_KINDS:  # the impostor's certificate is for another name
            return _Effect(Verdict.DNS_BLOCKED)
        if kind is Kind.HTTP:  # a different page: blocking only against the control
            return _Effect(Verdict.DNS_BLOCKED, failing=False)
        return _OK  # an address alone says nothing: CDNs answer per region
    return None  # REPLICA serves the host: not blocking


def _layer_effect(kind: Kind, layer: Layer, action: Action) -> _Effect | None:
    """The effect of one rule on one target kind, or None when it does not touch it."""
    if layer is Layer.DNS:
        return _dns_effect(kind, action)
    if layer is Layer.CONNECT:
        return None if kind is Kind.DNS else _Effect(Verdict.TCP_BLOCKED)
    if layer is Layer.TLS:
        if kind not in _TLS_KINDS:
            return None
        if action is Action.THROTTLE:
            return _Effect(Verdict.THROTTLED, failing=False) if kind is Kind.ASSET else None
        return _Effect(Verdict.TLS_BLOCKED)
    if kind is not Kind.HTTP:
        return None
    fingerprint = action in (Action.BLOCKPAGE, Action.UNAVAILABLE)
    return _Effect(Verdict.HTTP_BLOCKED, fingerprint=fingerprint)


def _censored_effect(kind: Kind, origin: Origin, rules: Rules) -> _Effect:
    """Rules act in path order: the resolver, then the CONNECT, the ClientHello, the request."""
    for layer in Layer:
        action = rules.get(layer)
        if action is None:
            continue
        if layer is Layer.CONNECT and rules.get(Layer.DNS) is Action.REPLICA:
            continue  # the replica has another address: address rules miss it
        effect = _layer_effect(kind, layer, action)
        if effect is not None:
            return effect
    if origin is Origin.GEO and kind in _WEB:
        return _Effect(Verdict.ANOMALY, failing=False)
    return _OK


def expected_verdict(
    kind: Kind, origin: Origin, rules: Rules, role: Role, *, with_control: bool
) -> Verdict:
    """The verdict a correct lifeline gives for one target of the lab from one vantage."""
    if role is Role.SHUTDOWN:
        return Verdict.VANTAGE_DOWN
    if origin in (Origin.NOLISTEN, Origin.NONE):
        return Verdict.SERVICE_DOWN if with_control else Verdict.UNREACHABLE
    if role is Role.CONTROL:
        return Verdict.OK
    effect = _censored_effect(kind, origin, rules)
    if with_control or effect.fingerprint:
        return effect.verdict
    return Verdict.UNREACHABLE if effect.failing else Verdict.OK
