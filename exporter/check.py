"""`lifeline check` and `lifeline validate`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import IO

from exporter.render import render_json, render_jsonl, render_table, use_color
from probes.config import ConfigError, load_config
from probes.model import Config
from probes.records import Result, Verdict
from probes.runner import Runner

__all__ = ["load_or_report", "run_check", "run_validate"]

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2


def load_or_report(path: str, stream: IO[str] = sys.stderr) -> Config | None:
    """Load a config; on error print every problem and return None (caller exits 2)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        file_level = all(line.startswith(f"{path}:") for line in exc.errors)
        if file_level:  # missing file, YAML syntax: the line already names the file
            for line in exc.errors:
                print(f"lifeline: {line}", file=stream)
        else:
            print(f"lifeline: {path}: invalid config:", file=stream)
            for line in exc.errors:
                print(f"  {line}", file=stream)
        return None


def run_validate(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    n_targets = sum(len(s.targets) for s in config.services)
    control = config.control.name if config.control else "none"
    print(
        f"{args.config}: ok: {len(config.services)} services, {n_targets} targets, "
        f"{len(config.vantages)} vantages (control: {control}), {len(config.canaries)} canaries"
    )
    return EXIT_OK


def _unknown_names(config: Config, services: list[str], vantages: list[str]) -> list[str]:
    problems = [f"--service {s}: no such service" for s in services if config.service(s) is None]
    problems += [f"--vantage {v}: no such vantage" for v in vantages if config.vantage(v) is None]
    return problems


class _Progress:
    """A one-line progress indicator on stderr, only when stderr is a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int) -> None:
        if self.enabled:
            self.stream.write(f"\rmeasuring: {done}/{total}")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


async def _round(config: Config, args: argparse.Namespace, progress: _Progress) -> list[Result]:
    async with Runner(config, concurrency=max(1, args.concurrency)) as runner:
        return await runner.run_round(
            services=args.service, vantages=args.vantage, progress=progress
        )


def run_check(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    problems = _unknown_names(config, args.service, args.vantage)
    if problems:
        for p in problems:
            print(f"lifeline: {p}", file=sys.stderr)
        return EXIT_USAGE
    progress = _Progress(sys.stderr)
    try:
        results = asyncio.run(_round(config, args, progress))
    finally:
        progress.finish()
    if args.log:
        from exporter.judgefile import write_fingerprints
        from exporter.logs import append_results

        try:
            append_results(args.log, results)
            write_fingerprints(Path(args.log).parent, config.fingerprints)
        except OSError as exc:
            print(f"lifeline: --log {args.log}: cannot write the probe log: {exc}", file=sys.stderr)
            return EXIT_USAGE
    out = sys.stdout
    if args.format == "json":
        out.write(render_json(results))
    elif args.format == "jsonl":
        out.write(render_jsonl(results))
    else:
        out.write(render_table(results, color=use_color(out)))
    out.flush()
    return EXIT_OK if all(r.verdict is Verdict.OK for r in results) else EXIT_FOUND
