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
from typing import IO, Any

from exporter.export.common import EXIT_FOUND, EXIT_OK, EXIT_USAGE, load_config
from exporter.logs import BadLine, read_lines
from probes.judge import JudgingContext
from probes.model import CANARY_SERVICE
from probes.records import Measurement, Result
from probes.timefmt import parse_rfc3339

__all__ = ["Reclassified", "reclassify", "run_classify"]


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

    @property
    def changed(self) -> bool:
        return self.old != self.new


@dataclass(slots=True)
class _Round:
    """The records of one minute: a round, as far as a log can tell."""

    items: list[tuple[int, Result]] = field(default_factory=list)


def reclassify(
    stream: IO[bytes], judging: JudgingContext, *, bad_lines: list[BadLine] | None = None
) -> Iterator[Reclassified]:
    """Judge every record of a JSONL stream again, in rounds of one minute.

    Records of the same minute form a round: the ``canaries`` records of a
    vantage in it are that vantage's canaries, and the other vantages'
    records of the same target are its peers. A round is judged once the
    log has moved two minutes past it, so memory holds a few minutes of
    records, not the log. ``judging.control`` names the control vantage (when
    None, it is learnt from the records' ``control`` measurements). Unreadable
    lines are appended to ``bad_lines`` and skipped.
    """
    rounds: dict[int, _Round] = {}
    for lineno, item in read_lines(stream):
        result = _parse(lineno, item, bad_lines)
        if result is None:
            continue
        if judging.control is None and result.control is not None:
            judging = dataclasses.replace(judging, control=result.control.vantage)
        minute = int(parse_rfc3339(result.measurement.time) // 60)
        rounds.setdefault(minute, _Round()).items.append((lineno, result))
        for done in [k for k in rounds if k < minute - 1]:
            yield from _judge_round(rounds.pop(done), judging)
    for key in sorted(rounds):
        yield from _judge_round(rounds[key], judging)


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
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            result = None
            problem = BadLine(lineno, f"not a measurement record: {type(exc).__name__}: {exc}")
    if problem is not None and bad is not None:
        bad.append(problem)
    return result


def _judge_round(batch: _Round, judging: JudgingContext) -> Iterator[Reclassified]:
    canaries: dict[str, list[Measurement]] = {}
    by_target: dict[tuple[str, str], list[Measurement]] = {}
    for _, r in batch.items:
        m = r.measurement
        by_target.setdefault((m.service, m.target), []).append(m)
        if m.service == CANARY_SERVICE:
            canaries.setdefault(m.vantage, []).append(m)
    for lineno, r in sorted(batch.items, key=lambda item: item[0]):
        m = r.measurement
        again = judging.judge(
            m, control=r.control, canaries=canaries, same_target=by_target[(m.service, m.target)]
        )
        yield Reclassified(
            lineno, m.service, m.target, m.vantage, r.verdict.value, again.verdict.value,
            again.reason, again,
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
    judging = JudgingContext.from_config(config)
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
        for item in reclassify(stream, judging, bad_lines=bad):
            total += 1
            if records and item.result is not None:
                sys.stdout.write(json.dumps(item.result.to_dict(), separators=(",", ":")) + "\n")
            if item.changed:
                changed += 1
                print(
                    f"line {item.lineno}: {item.target} from {item.vantage}: "
                    f"{item.old} -> {item.new} ({item.reason})",
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
