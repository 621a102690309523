"""The two exporters' configs for the same plan.

lifeline probes each target by name: its DNS stage asks the farm's resolver,
then TCP, TLS and HTTP go to the answer. blackbox_exporter 0.23 (Debian's)
has no ``hostname`` parameter, so it gets, per name, one ``dns`` module
(``query_name``, against the same resolver, by IP literal) and one ``http``
module whose URL is an IP literal and whose ``Host`` header and TLS
``server_name`` carry the name. blackbox therefore never resolves anything
itself and can never reach the system resolver.
"""

from __future__ import annotations

from typing import Any

import yaml

from benchmarks.farm import Name, Plan

__all__ = ["blackbox_config", "lifeline_config"]

TIMEOUT_S = 10


def lifeline_config(
    plan: Plan,
    names: list[Name],
    *,
    vantages: int,
    interval_s: float,
    data_dir: str,
    per_service: int = 100,
    dns_window: str | None = None,
) -> str:
    """A config watching ``names`` from ``vantages`` direct vantages (the first is the control).

    The measurement budget is TIMEOUT_S, or the interval when that is shorter
    (lifeline refuses a timeout longer than the interval). ``dns_window``
    (e.g. ``"0"``) is every vantage's; None leaves lifeline's default.
    """
    window = {} if dns_window is None else {"dns_window": dns_window}
    vs: list[dict[str, Any]] = [
        {
            "name": f"v{i}",
            "resolver": plan.resolver,
            **window,
            **({"control": True} if i == 0 else {}),
        }
        for i in range(vantages)
    ]
    services = [
        {"name": f"s{k // per_service}", "targets": [n.url for n in names[k : k + per_service]]}
        for k in range(0, len(names), per_service)
    ]
    doc = {
        "version": 1,
        "defaults": {
            "interval": f"{interval_s:g}s",
            "timeout": f"{min(TIMEOUT_S, interval_s):g}s",
            "ca_file": plan.ca_file,
        },
        "vantages": vs,
        "services": services,
        "storage": {"dir": data_dir, "retention": "1d"},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def blackbox_config(plan: Plan, names: list[Name]) -> str:
    """``d<i>`` (DNS) and ``h<i>`` (HTTPS by IP literal, Host/SNI set) modules per name."""
    modules: dict[str, Any] = {}
    for i, n in enumerate(names):
        modules[f"d{i}"] = {
            "prober": "dns",
            "timeout": f"{TIMEOUT_S}s",
            "dns": {
                "query_name": n.name,
                "query_type": "A",
                "transport_protocol": "udp",
                "preferred_ip_protocol": "ip4",
                "ip_protocol_fallback": False,
                "valid_rcodes": ["NOERROR"],
                "validate_answer_rrs": {"fail_if_not_matches_regexp": [r".*\tIN\tA\t.*"]},
            },
        }
        modules[f"h{i}"] = {
            "prober": "http",
            "timeout": f"{TIMEOUT_S}s",
            "http": {
                "preferred_ip_protocol": "ip4",
                "ip_protocol_fallback": False,
                "headers": {"Host": f"{n.name}:{n.port}"},
                "fail_if_not_ssl": True,
                "tls_config": {"ca_file": plan.ca_file, "server_name": n.name},
            },
        }
    return yaml.safe_dump({"modules": modules}, sort_keys=False)
