"""`lifeline classify`: replay a JSONL log through today's classifier and fingerprints.

It says which verdicts would change, so rules can be checked against history.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from exporter.export.common import EXIT_FOUND, EXIT_OK, EXIT_USAGE, load_config
from exporter.judgefile import file_for, read_fingerprints
from exporter.logs import BadLine, read_lines
from probes.fingerprints import FingerprintSet
from probes.judge import JudgingContext, fingerprint_digest
from probes.model import CANARY_SERVICE
from probes.records import JudgedWith, Measurement, Result
from probes.timefmt import parse_rfc3339

__all__ = ["Reclassified", "Rules", "reclassify", "run_classify"]


@dataclass(frozen=True, slots=True)
class Reclassified:
    """One record judged again: what it was, what it is now."""

    lineno: int
    service: str
    target: str
    vantage: str
    old: str
    new: str
    reason: str
    result: Result | None = None  # the record as judged again (what --format jsonl prints)
    #: with -c: the settings that differ from what the record was judged with
    settings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.old != self.new


@dataclass(slots=True)
class _Round:
    """The records of one minute: a round, as far as a log can tell."""

    items: list[tuple[int, Result]] = field(default_factory=list)


class Rules:
    """Which rules judge each record again.

    With a config (``-c``), its rules for every record, and for each changed one the
    settings that differ from those the record says it was judged with. Without one,
    each record's own ``judged_with``: its throttle ratio and control, and its
    fingerprint set, the built-in one or the config's part written beside the log
    (``fingerprints-<digest>.json``, :mod:`exporter.judgefile`) in ``beside``. A
    record older than ``judged_with`` gets the built-in rules. The control vantage,
    when no rule names it, is learnt from the records' ``control`` measurements.
    """

    def __init__(self, config: JudgingContext | None, beside: Path | None = None) -> None:
        self.config, self.beside = config, beside
        self.learnt: str | None = None
        #: digests of fingerprint sets neither built in nor found beside the log
        self.missing: set[str] = set()
        self._own: dict[JudgedWith, JudgingContext] = {}

    def learn(self, result: Result) -> None:
        if self.learnt is None and result.control is not None:
            self.learnt = result.control.vantage

    def context(self, result: Result) -> JudgingContext:
        if self.config is not None:
            if self.config.control is None and self.learnt is not None:
                return dataclasses.replace(self.config, control=self.learnt)
            return self.config
        said = result.judged_with
        if said is None:
            return JudgingContext(control=self.learnt)
        found = self._own.get(said)
        if found is None:
            fingerprints = read_fingerprints(self.beside or Path("."), said.fingerprints)
            if fingerprints is None:
                self.missing.add(said.fingerprints)
                fingerprints = FingerprintSet.build()
            found = JudgingContext(fingerprints, said.throttle_ratio, said.control or self.learnt)
            self._own[said] = found
        return found

    def differences(self, result: Result) -> tuple[str, ...]:
        """With a config: each setting it changes from what ``result`` was judged with."""
        said, now = result.judged_with, self.config
        if now is None or said is None:
            return ()
        out = []
        digest = fingerprint_digest(now.fingerprints)
        if said.fingerprints != digest:
            out.append(f"fingerprints {_short(said.fingerprints)} -> {_short(digest)}")
        if said.throttle_ratio != now.throttle_ratio:
            out.append(f"throttle_ratio {said.throttle_ratio:g} -> {now.throttle_ratio:g}")
        if now.control is not None and said.control != now.control:
            out.append(f"control {said.control or '(none)'} -> {now.control}")
        return tuple(out)


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


def reclassify(
    stream: IO[bytes], rules: Rules | JudgingContext, *, bad_lines: list[BadLine] | None = None
) -> Iterator[Reclassified]:
    """Judge every record of a JSONL stream again, in rounds of one minute.

    Records of the same minute form a round: the ``canaries`` records of a
    vantage in it are that vantage's canaries, and the other vantages'
    records of the same target are its peers. A round is judged once the
    log has moved two minutes past it, so memory holds a few minutes of
    records, not the log. ``rules`` says which rules judge each record
    (:class:`Rules`; a :class:`JudgingContext` judges them all). Unreadable
    lines are appended to ``bad_lines`` and skipped.
    """
    if isinstance(rules, JudgingContext):
        rules = Rules(rules)
    rounds: dict[int, _Round] = {}
    for lineno, item in read_lines(stream):
        result = _parse(lineno, item, bad_lines)
        if result is None:
            continue
        rules.learn(result)
        minute = int(parse_rfc3339(result.measurement.time) // 60)
        rounds.setdefault(minute, _Round()).items.append((lineno, result))
        for done in [k for k in rounds if k < minute - 1]:
            yield from _judge_round(rounds.pop(done), rules)
    for key in sorted(rounds):
        yield from _judge_round(rounds[key], rules)


def _parse(lineno: int, item: dict[str, Any] | BadLine, bad: list[BadLine] | None) -> Result | None:
    """The typed record of one log line, or None (its problem appended to ``bad``)."""
    if isinstance(item, BadLine):
        problem: BadLine | None = item
        result = None
    else:
        try:
            result = Result.from_dict(item)
            parse_rfc3339(result.measurement.time)
            problem = None
        except KeyError as exc:
            result = None
            problem = BadLine(lineno, f"not a measurement record: it has no {exc.args[0]!r} field")
        except (TypeError, ValueError, AttributeError) as exc:
            result = None
            problem = BadLine(lineno, f"not a measurement record: {type(exc).__name__}: {exc}")
    if problem is not None and bad is not None:
        bad.append(problem)
    return result


def _judge_round(batch: _Round, rules: Rules) -> Iterator[Reclassified]:
    canaries: dict[str, list[Measurement]] = {}
    by_target: dict[tuple[str, str], list[Measurement]] = {}
    for _, r in batch.items:
        m = r.measurement
        by_target.setdefault((m.service, m.target), []).append(m)
        if m.service == CANARY_SERVICE:
            canaries.setdefault(m.vantage, []).append(m)
    for lineno, r in sorted(batch.items, key=lambda item: item[0]):
        m = r.measurement
        again = rules.context(r).judge(
            m, control=r.control, canaries=canaries, same_target=by_target[(m.service, m.target)]
        )
        changed = again.verdict != r.verdict
        yield Reclassified(
            lineno, m.service, m.target, m.vantage, r.verdict.value, again.verdict.value,
            again.reason, again, rules.differences(r) if changed else (),
        )  # fmt: skip


def _input_stream(name: str) -> IO[bytes]:
    """The log to read: a file (plain or .gz) or stdin ('-')."""
    if name == "-":
        return sys.stdin.buffer
    if name.endswith(".gz"):
        return gzip.open(name, "rb")  # type: ignore[return-value]
    return open(name, "rb")


def run_classify(args: argparse.Namespace) -> int:
    """`lifeline classify`: replay a JSONL log; exit 0 unchanged, 1 changed, 2 unreadable input."""
    config = load_config(args.config) if args.config else None
    if args.config and config is None:
        return EXIT_USAGE
    beside = None if args.file == "-" else Path(args.file).parent
    rules = Rules(JudgingContext.from_config(config) if config is not None else None, beside)
    bad: list[BadLine] = []
    total = changed = bad_lines = 0
    try:
        stream = _input_stream(args.file)
    except OSError as exc:
        print(f"lifeline: {args.file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    records = getattr(args, "format", "text") == "jsonl"
    # with --format jsonl, stdout carries the re-judged records and the report goes to stderr
    report = sys.stderr if records else sys.stdout
    try:
        for item in reclassify(stream, rules, bad_lines=bad):
            total += 1
            if records and item.result is not None:
                sys.stdout.write(json.dumps(item.result.to_dict(), separators=(",", ":")) + "\n")
            if item.changed:
                changed += 1
                since = f" [changed: {'; '.join(item.settings)}]" if item.settings else ""
                print(
                    f"line {item.lineno}: {item.target} from {item.vantage}: "
                    f"{item.old} -> {item.new} ({item.reason}){since}",
                    file=report,
                )
            bad_lines += _report_bad(args.file, bad)
        bad_lines += _report_bad(args.file, bad)
    except (OSError, EOFError) as exc:
        print(f"lifeline: {args.file}: cannot read: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    for digest in sorted(rules.missing):
        print(
            f"lifeline: {args.file}: records were judged with fingerprint set {digest}, "
            f"whose {file_for('.', digest).name} is not beside the log (nor is it the "
            "built-in set of this version): they were judged again with the built-in "
            "fingerprints",
            file=sys.stderr,
        )
    summary = f"{total} records, {changed} changed"
    if bad_lines:
        summary += f", {bad_lines} unreadable lines skipped"
    print(summary, file=report)
    if bad_lines:
        return EXIT_USAGE
    return EXIT_FOUND if changed else EXIT_OK


def _report_bad(name: str, bad: list[BadLine]) -> int:
    """Print and forget the bad lines met so far; returns how many there were."""
    for problem in bad:
        print(f"lifeline: {name}: line {problem.lineno}: {problem.error}", file=sys.stderr)
    count = len(bad)
    bad.clear()
    return count
