"""One judging context: what every judgement made under one config shares.

The fingerprints, the throttle ratio and the control vantage's name are the
same for every measurement of a config; :meth:`JudgingContext.judge` adds what
changes per measurement (the control's measurement of the target, the round's
canaries, other vantages' measurements of it) and calls the pure classifier.
Build it once, with :meth:`JudgingContext.from_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from probes import __version__
from probes.classify import classify
from probes.fingerprints import FingerprintSet
from probes.model import Config, Defaults
from probes.records import JudgedWith, Measurement, Result

__all__ = ["JudgingContext", "fingerprint_digest", "judged_with"]

_DEFAULTS = Defaults()

def fingerprint_digest(fingerprints: FingerprintSet) -> str:
    """"sha256:<hex>" of everything the set matches (:attr:`FingerprintSet.digest`)."""
    return fingerprints.digest


def judged_with(
    fingerprints: FingerprintSet, throttle_ratio: float, control: str | None
) -> JudgedWith:
    """The record's ``judged_with`` block for a judgement under these rules."""
    return JudgedWith(fingerprint_digest(fingerprints), throttle_ratio, control)


@dataclass(frozen=True, slots=True)
class JudgingContext:
    """Fingerprints, throttle ratio and control name: a config's judging rules."""

    fingerprints: FingerprintSet = field(default_factory=FingerprintSet.build)
    throttle_ratio: float = _DEFAULTS.throttle_ratio
    control: str | None = None  # the control vantage's name

    @classmethod
    def from_config(cls, config: Config | None) -> JudgingContext:
        """The context of ``config``; the built-in rules and no control without one."""
        if config is None:
            return cls()
        return cls(
            FingerprintSet.build(config.fingerprints),
            config.defaults.throttle_ratio,
            config.control.name if config.control is not None else None,
        )

    def judge(
        self,
        obs: Measurement,
        *,
        control: Measurement | None,
        canaries: Mapping[str, Sequence[Measurement]],
        same_target: Sequence[Measurement] = (),
        version: str = __version__,
    ) -> Result:
        """``obs`` judged against the control's ``control`` measurement (pure).

        ``canaries`` are the round's canary measurements by vantage (this
        vantage's and the control's are used); ``same_target`` are the round's
        measurements of the same target, of which those from other vantages
        than this one and the control are its peers.
        """
        name = self.control
        is_control = name is not None and obs.vantage == name
        j = classify(
            obs,
            control=control,
            canaries=canaries.get(obs.vantage, ()),
            fingerprints=self.fingerprints,
            throttle_ratio=self.throttle_ratio,
            is_control=is_control,
            control_canaries=canaries.get(name, ()) if name is not None and not is_control else (),
            peers=[p for p in same_target if p.vantage not in (obs.vantage, name)],
        )
        return Result(
            obs, j.verdict, j.reason, control=control, version=version,
            judged_with=judged_with(self.fingerprints, self.throttle_ratio, self.control),
        )  # fmt: skip
