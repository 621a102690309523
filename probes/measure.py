"""One measurement: the stages of a target, in order, under one deadline.

The stages live in one table (:mod:`probes.stages`): adding a stage is one
module plus one row there. The first failing stage ends the measurement, as does a DNS
answer made only of known censor-injected addresses: lifeline never connects
to a censor's server. ``measure`` never raises (cancellation aside): anything
unexpected becomes ``Measurement.error``, which the classifier calls `error`.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from datetime import UTC, datetime

from probes.deadline import Deadline
from probes.defaults import DEFAULT_BODY_HEAD_BYTES
from probes.errors import NotMeasurable
from probes.evidence import DNSStage
from probes.failures import unknown
from probes.fingerprints import FingerprintSet
from probes.model import Target, Vantage
from probes.net import StageContext, VantageNet
from probes.records import Measurement
from probes.stages import STAGES, StageFn
from probes.tcp import connect_every_address
from probes.timefmt import rfc3339

__all__ = ["STAGES", "StageFn", "blank_measurement", "measure"]


async def measure(
    target: Target,
    vantage: Vantage,
    net: VantageNet,
    *,
    timeout: float,  # noqa: ASYNC109 (the budget of the whole measurement, passed down)
    max_body_bytes: int,
    service: str = "",
    stop_addresses: frozenset[str] = frozenset(),
    fingerprints: FingerprintSet | None = None,
    body_head_bytes: int = DEFAULT_BODY_HEAD_BYTES,
) -> Measurement:
    """Measure ``target`` from ``vantage`` within ``timeout`` seconds; never raises.

    ``fingerprints``: what the HTTP stage scans bodies for and which redirects it
    does not follow (the built-in set when None); ``body_head_bytes``: how much
    of the body's start the HTTP record keeps."""
    started = time.monotonic()
    measurement = blank_measurement(target, vantage, service)
    ctx = StageContext(
        target=target,
        vantage=vantage,
        net=net,
        deadline=Deadline.after(timeout),
        measurement=measurement,
        max_body_bytes=max_body_bytes,
        fingerprints=fingerprints,
        body_head_bytes=body_head_bytes,
    )
    try:
        await _run_stages(ctx, _normalized_stop(stop_addresses))
        ctx.close()
        await ctx.settle()  # evidence the stages left collecting (a DNS window)
    except NotMeasurable as exc:
        measurement.error = unknown(str(exc))
    except Exception as exc:  # a bug of ours must not take the runner down
        measurement.error = unknown(f"{type(exc).__name__}: {exc}")
    finally:
        ctx.close()
        await ctx.abandon()
    measurement.duration_s = time.monotonic() - started
    return measurement


def blank_measurement(target: Target, vantage: Vantage, service: str) -> Measurement:
    """A measurement of ``target`` from ``vantage`` dated now, no stage run yet."""
    return Measurement(
        target=target.url,
        vantage=vantage.name,
        time=rfc3339(datetime.now(UTC)),
        service=service,
        expect_status=list(target.expect_status),
        throughput=target.throughput,
        country=vantage.country,
        asn=vantage.asn,
        network_name=vantage.network_name,
    )


async def _run_stages(ctx: StageContext, stop: frozenset[str]) -> None:
    stages = ctx.measurement.stages
    for stage in STAGES.for_scheme(ctx.target.scheme):
        record = await stage.run(ctx)
        stages[stage.name] = record
        if not record.ok:
            if ctx.vantage.connect_every_address:
                await connect_every_address(ctx, stop)
            return
        if isinstance(record, DNSStage) and _only_censor_addresses(record, stop):
            return


def _only_censor_addresses(record: DNSStage, stop: frozenset[str]) -> bool:
    """Every answer is a known injected address: do not connect to the censor."""
    return bool(stop) and bool(record.addresses) and _normalized(record.addresses) <= stop


def _normalized(addresses: frozenset[str] | list[str]) -> frozenset[str]:
    """The canonical text of each IP address; anything else is left out."""
    out = {c for c in map(_canonical, addresses) if c is not None}
    return frozenset(out)


@functools.lru_cache(maxsize=8192)  # the same addresses, measurement after measurement
def _canonical(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


#: The stop list, normalised once per distinct set rather than on every measurement.
#: A caller passes the same frozenset each time (the Runner's, made once): the
#: memo's lookup finds it by identity, without comparing its contents.
_normalized_stop = functools.lru_cache(maxsize=8)(_normalized)
