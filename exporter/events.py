"""Every line `serve` logs, one function per event (the table of docs/serve.md).

Each function names its event (``incident_start``, …), its level, a sentence
and the fields a JSON line carries. Secrets are masked here (and again by the
handler of :mod:`exporter.logsetup`), so even a handler of someone else's
(pytest's, an embedding program's) never sees one. Callers decide *when*:
once per transition (:mod:`exporter.transitions`), never once per round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from exporter.logsetup import EVENT_ATTR, FIELDS_ATTR, REDACTOR, _redact

__all__ = [
    "agent_lost",
    "agent_recovered",
    "incident_end",
    "incident_start",
    "measure_failed",
    "probe_log_fault",
    "probe_log_recovered",
    "reload_done",
    "reload_refused",
    "restore_failed",
    "serve_failed",
    "serve_started",
    "serve_stopped",
    "store_fault",
    "store_recovered",
]

_serve = logging.getLogger("lifeline.serve")
_incident = logging.getLogger("lifeline.incident")
_agent = logging.getLogger("lifeline.agent")
_store = logging.getLogger("lifeline.store")
_config = logging.getLogger("lifeline.config")
_probe_log = logging.getLogger("lifeline.logs")

#: Targets named in one line at most (the count is always there).
_MAX_TARGETS_SHOWN = 5


def _emit(logger: logging.Logger, level: int, event: str, msg: str, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
        "%s",
        REDACTOR(msg),
        extra={EVENT_ATTR: event, FIELDS_ATTR: _redact(fields)},
    )


def _targets(targets: Sequence[str]) -> str:
    shown = ", ".join(targets[:_MAX_TARGETS_SHOWN])
    more = len(targets) - _MAX_TARGETS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _where(service: str | None, vantage: str | None) -> str:
    if service is None:
        return f"vantage {vantage}"
    if vantage is None:
        return f"{service} (every vantage)"
    return f"{service} at {vantage}"


# --- serve -----------------------------------------------------------------------------


def serve_started(url: str, counts: Mapping[str, int]) -> None:
    said = ", ".join(f"{n} {what}" for what, n in counts.items())
    _emit(_serve, logging.INFO, "serve_start", f"serving on {url}: {said}", url=url, **counts)


def serve_failed(error: str) -> None:
    """serve cannot start (the store, the workers, the port): it exits 1."""
    _emit(_serve, logging.ERROR, "serve_failed", error, error=error)


def serve_stopped() -> None:
    _emit(_serve, logging.INFO, "serve_stop", "stopped")


def measure_failed(target: str, vantage: str, error: str) -> None:
    """A measurement raised instead of giving a result (a bug: the others go on)."""
    _emit(
        _serve,
        logging.ERROR,
        "measure_failed",
        f"measuring {target} from {vantage} failed: {error}",
        target=target,
        vantage=vantage,
        error=error,
    )


def restore_failed(error: str) -> None:
    _emit(
        _store,
        logging.WARNING,
        "restore_failed",
        f"could not restore verdicts from the store: {error}",
        error=error,
    )


# --- incidents ----------------------------------------------------------------------------


def incident_start(
    service: str | None, vantage: str | None, verdict: str, targets: Sequence[str], since: str
) -> None:
    """A confirmed verdict other than ok began (``service`` None: the whole vantage is down;
    ``vantage`` None: an outage seen from every vantage)."""
    _emit(
        _incident,
        logging.WARNING,
        "incident_start",
        f"{_where(service, vantage)}: {verdict} since {since}, "
        f"{len(targets)} target{'s' if len(targets) != 1 else ''}: {_targets(targets)}",
        service=service,
        vantage=vantage,
        verdict=verdict,
        targets=list(targets),
        since=since,
    )


def incident_end(
    service: str | None,
    vantage: str | None,
    verdict: str,
    targets: Sequence[str],
    since: str,
    until: str,
    *,
    why: str = "confirmed back to normal",
) -> None:
    """The last target of an incident left it (``targets``: every target it affected)."""
    _emit(
        _incident,
        logging.INFO,
        "incident_end",
        f"{_where(service, vantage)}: {verdict} ended at {until} ({why}; since {since}, "
        f"{len(targets)} target{'s' if len(targets) != 1 else ''}: {_targets(targets)})",
        service=service,
        vantage=vantage,
        verdict=verdict,
        targets=list(targets),
        since=since,
        until=until,
        why=why,
    )


# --- config ---------------------------------------------------------------------------------


def reload_done(path: str, before: Mapping[str, int], after: Mapping[str, int]) -> None:
    changed = [f"{what} {before.get(what, 0)} -> {n}" for what, n in after.items()
               if before.get(what, 0) != n]  # fmt: skip
    said = ", ".join(changed) if changed else "no change in counts"
    _emit(
        _config,
        logging.INFO,
        "reload",
        f"reloaded {path}: {said}",
        path=path,
        before=dict(before),
        after=dict(after),
    )


def reload_refused(path: str | None, errors: Sequence[str]) -> None:
    _emit(
        _config,
        logging.ERROR,
        "reload_refused",
        f"reload of {path} refused, the old config keeps running: " + "; ".join(errors),
        path=path,
        errors=list(errors),
    )


# --- agents ------------------------------------------------------------------------------------


def agent_lost(vantage: str, agent: str, error: str) -> None:
    _emit(
        _agent,
        logging.WARNING,
        "agent_lost",
        f"the agent of vantage {vantage} ({agent}) does not answer: {error}",
        vantage=vantage,
        agent=agent,
        error=error,
    )


def agent_recovered(vantage: str, agent: str, down_since: str) -> None:
    _emit(
        _agent,
        logging.INFO,
        "agent_recovered",
        f"the agent of vantage {vantage} ({agent}) answers again (lost since {down_since})",
        vantage=vantage,
        agent=agent,
        since=down_since,
    )


# --- the store ------------------------------------------------------------------------------------


def store_fault(error: str) -> None:
    _emit(
        _store,
        logging.ERROR,
        "store_fault",
        f"store write failed: {error}; measuring goes on, failed batches are counted "
        "(lifeline_store_write_failures_total), their records still go to the probe log",
        error=error,
    )


def store_recovered(failed_batches: int) -> None:
    _emit(
        _store,
        logging.INFO,
        "store_recovered",
        f"store writes work again ({failed_batches} batches failed so far)",
        failed_batches=failed_batches,
    )


def probe_log_fault(directory: str, error: str) -> None:
    _emit(
        _probe_log,
        logging.ERROR,
        "probe_log_fault",
        f"probe log {directory}: cannot write ({error}); measurements go on, lost lines are "
        "counted (lifeline_log_write_failures_total) until writing works again",
        directory=directory,
        error=error,
    )


def probe_log_recovered(directory: str, lost_lines: int) -> None:
    _emit(
        _probe_log,
        logging.INFO,
        "probe_log_recovered",
        f"probe log {directory} is writable again ({lost_lines} records lost so far)",
        directory=directory,
        lost_lines=lost_lines,
    )
