"""The censor's rulebook: which rule applies to a name, an address, an SNI, a Host.

It is the lab's only mutable state besides its sockets. The resolver and the
middlebox read it on every decision, so a rule set at run time (admin
endpoint or :meth:`Rulebook.set`) applies to the very next query or
connection. It lives on the lab's event loop; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from probes.lab.scenarios import (
    BLOCKPAGE_ADDRESS,
    CATALOGUE,
    IMPOSTOR_ADDRESS,
    IMPOSTOR_NAME,
    INJECTED_NAME,
    LAYER_ACTIONS,
    REPLICA_ADDRESS,
    ZONE,
    Action,
    Layer,
    Scenario,
    host_name,
    origin_addresses,
    scenario,
)

__all__ = ["DNSReply", "Rulebook", "normalize_name"]


def normalize_name(name: str) -> str:
    """Lower-case, no trailing dot, no port: how names are compared everywhere in the lab."""
    name = name.strip().lower()
    if not name.startswith("[") and name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name.rstrip(".")


@dataclass(frozen=True, slots=True)
class DNSReply:
    """A resolver's decision for one name: an address, an rcode, or silence."""

    address: str | None = None
    rcode: str = "NOERROR"  # "NOERROR" | "NXDOMAIN" | "SERVFAIL"
    silent: bool = False


_NXDOMAIN = DNSReply(rcode="NXDOMAIN")


class Rulebook:
    """The rules in force per scenario, and the lookups the censor's machines make."""

    def __init__(self) -> None:
        self._by_name = {host_name(s): s for s in CATALOGUE}
        self._origin = origin_addresses()
        self._by_address = {address: name for name, address in self._origin.items()}
        self._rules: dict[str, dict[Layer, Action]] = {}
        self.reset()

    # --- changing rules ---------------------------------------------------------

    def reset(self) -> None:
        """Back to the catalogue's rules."""
        self._rules = {s.name: dict(s.rules) for s in CATALOGUE}

    def set(self, name: str, layer: str, action: str) -> None:
        """Set one rule; ValueError (with a sentence) when it makes no sense."""
        entry = self._scenario(name)
        try:
            the_layer = Layer(layer)
        except ValueError:
            raise ValueError(f"unknown layer {layer!r}; use one of {', '.join(Layer)}") from None
        allowed = LAYER_ACTIONS[the_layer]
        try:
            the_action = Action(action)
        except ValueError:
            the_action = None
        if the_action not in allowed:
            raise ValueError(
                f"{layer} rules are one of {', '.join(sorted(allowed))}, not {action!r}"
            )
        if the_action is Action.REPLICA and not entry.replica:
            raise ValueError(f"scenario {name!r} has no replica to answer with")
        self._rules[entry.name][the_layer] = the_action

    def clear(self, name: str, layer: str | None = None) -> None:
        """Remove one rule (or every rule) of a scenario: it then behaves like ``open``."""
        entry = self._scenario(name)
        if layer is None:
            self._rules[entry.name].clear()
            return
        try:
            self._rules[entry.name].pop(Layer(layer), None)
        except ValueError:
            raise ValueError(f"unknown layer {layer!r}; use one of {', '.join(Layer)}") from None

    def _scenario(self, name: str) -> Scenario:
        try:
            entry = scenario(name)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        if entry.canary:
            raise ValueError("no rule may touch the canary")
        return entry

    def rules(self, name: str) -> dict[Layer, Action]:
        return dict(self._rules[name])

    def snapshot(self) -> dict[str, dict[str, str]]:
        """Every rule in force, as plain strings (for the admin endpoint)."""
        return {
            name: {str(layer): str(action) for layer, action in rules.items()}
            for name, rules in self._rules.items()
            if rules
        }

    # --- lookups ----------------------------------------------------------------

    def honest(self, name: str) -> DNSReply:
        """The truth: lab names resolve to their origins; everything else does not exist."""
        name = normalize_name(name)
        helpers = {IMPOSTOR_NAME: IMPOSTOR_ADDRESS, INJECTED_NAME: BLOCKPAGE_ADDRESS}
        if name in helpers:
            return DNSReply(address=helpers[name])
        entry = self._by_name.get(name)
        if entry is None or entry.name not in self._origin:
            return _NXDOMAIN
        return DNSReply(address=self._origin[entry.name])

    def censored(self, name: str) -> DNSReply:
        """What the censor's resolver answers: its rule for the name, else the truth."""
        entry = self._by_name.get(normalize_name(name))
        action = None if entry is None else self._rules[entry.name].get(Layer.DNS)
        if action is Action.NXDOMAIN:
            return _NXDOMAIN
        if action is Action.SERVFAIL:
            return DNSReply(rcode="SERVFAIL")
        if action is Action.SILENCE:
            return DNSReply(silent=True)
        if action is Action.LIE:
            return DNSReply(address=IMPOSTOR_ADDRESS)
        if action is Action.INJECT:
            return DNSReply(address=BLOCKPAGE_ADDRESS)
        if action is Action.REPLICA:
            return DNSReply(address=REPLICA_ADDRESS)
        return self.honest(name)

    def connect_rule(self, address: str) -> Action | None:
        """The rule for a CONNECT to an origin address."""
        name = self._by_address.get(address)
        return None if name is None else self._rules[name].get(Layer.CONNECT)

    def tls_rule(self, server_name: str | None) -> Action | None:
        return self._name_rule(server_name, Layer.TLS)

    def http_rule(self, host: str | None) -> Action | None:
        return self._name_rule(host, Layer.HTTP)

    def _name_rule(self, name: str | None, layer: Layer) -> Action | None:
        if not name:
            return None
        entry = self._by_name.get(normalize_name(name))
        return None if entry is None else self._rules[entry.name].get(layer)

    @staticmethod
    def in_zone(name: str) -> bool:
        name = normalize_name(name)
        return name == ZONE or name.endswith("." + ZONE)
