"""`lifeline` command line (CONTRACT §4).

Exit status: 0 success (for `check`: every verdict ok), 1 when `check` finds
anything not ok (or a command fails at run time), 2 on a usage or config error.
Each command's work lives in its own module; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from probes import __version__, loops
from probes.defaults import DEFAULT_CONCURRENCY
from probes.loops import LOOP_CHOICES

__all__ = ["main"]

EXIT_OK, EXIT_FOUND, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with our wording on a usage error (its default is 2 as well)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"lifeline: error: {message}\n")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default="config.yaml",
        metavar="FILE",
        help="config file (default: ./config.yaml)",
    )


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="least severe log line written to stderr (default: info)",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text, or one JSON object a line (default: text)",
    )


def _loop_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="auto",
        help="event loop: uvloop (less CPU per measurement), asyncio's own, or auto "
        "(default: uvloop where it is installed)",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lifeline",
        description="Is a service blocked (and how), or simply down, from each vantage point?",
    )
    parser.add_argument("--version", action="version", version=f"lifeline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("check", help="one round of every (target, vantage); exit 0 iff all ok")
    _config_arg(p)
    p.add_argument(
        "--service", action="append", default=[], metavar="S", help="only this service (repeatable)"
    )
    p.add_argument(
        "--vantage", action="append", default=[], metavar="V", help="only this vantage (repeatable)"
    )
    p.add_argument("--format", choices=("table", "json", "jsonl"), default="table")
    p.add_argument(
        "--log", metavar="FILE", help="also append every measurement to this JSONL probe log"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"measurements in flight (default {DEFAULT_CONCURRENCY})",
    )
    _loop_arg(p)

    p = sub.add_parser("validate", help="check a config and say what is wrong")
    _config_arg(p)

    p = sub.add_parser("lab", help="start the built-in censorship lab on loopback")
    p.add_argument(
        "--dir", default=None, metavar="D", help="where to write config.yaml and expected.json"
    )
    p.add_argument(
        "--selftest", action="store_true", help="check every lab rule with raw clients and exit"
    )
    _loop_arg(p)

    p = sub.add_parser(
        "demo", help="the lab plus `serve` on it: everything visible with no internet"
    )
    p.add_argument(
        "--dir", default=None, metavar="D", help="lab directory (default: a temporary one)"
    )
    p.add_argument("--listen", default="127.0.0.1:9478", metavar="HOST:PORT")
    _loop_arg(p)
    _log_args(p)

    p = sub.add_parser("serve", help="the long-running exporter")
    _config_arg(p)
    p.add_argument("--listen", default=":9478", metavar="HOST:PORT")
    p.add_argument("--data-dir", default=None, metavar="D")
    p.add_argument("--web-config", default=None, metavar="FILE")
    p.add_argument(
        "--agent",
        action="store_true",
        help="also measure on a hub's request (POST /api/v1/measure; docs/agents.md)",
    )
    p.add_argument(
        "--agent-name", default=None, metavar="NAME", help="agent name (default: the host name)"
    )
    p.add_argument(
        "--workers",
        default="auto",
        metavar="N",
        help=(
            "N worker processes, or 'auto' (one per CPU): each measures its share of the "
            "schedule and answers /probe on --listen itself (SO_REUSEPORT); everything else "
            "is answered from the one board in this process. Default 'auto' (on one CPU: 0, "
            "all in-process); 2 on 2 cores measured faster on /probe at 32 in flight, "
            "at more CPU per probe (docs/performance.md)"
        ),
    )
    _loop_arg(p)
    _log_args(p)

    p = sub.add_parser(
        "page",
        help="the status page of a store, read-only (e.g. imported OONI data); measures nothing",
    )
    p.add_argument("--data-dir", required=True, metavar="D", help="the store to show")
    p.add_argument(
        "--listen",
        default="127.0.0.1:9479",
        metavar="HOST:PORT",
        help="where to serve it (default: 127.0.0.1:9479; no TLS or authentication)",
    )
    _loop_arg(p)

    p = sub.add_parser("export", help="measurements from the store, streamed")
    p.add_argument("--data-dir", default=None, metavar="D")
    _config_arg(p)
    p.set_defaults(config=None)  # ./config.yaml for the data directory; -c also for countries
    p.add_argument("--since", default=None, metavar="T")
    p.add_argument("--until", default=None, metavar="T")
    p.add_argument("--service", action="append", default=[], metavar="S")
    p.add_argument("--vantage", action="append", default=[], metavar="V")
    from exporter.export.formats import FORMATS

    p.add_argument("--format", choices=tuple(FORMATS), default="jsonl")

    p = sub.add_parser("classify", help="re-classify a JSONL log with today's rules")
    p.add_argument(
        "file", nargs="?", default="-", metavar="FILE", help="JSONL log (default: stdin)"
    )
    p.add_argument(
        "-c", "--config", default=None, metavar="FILE", help="config for fingerprints and ratio"
    )
    p.add_argument(
        "--format",
        choices=("text", "jsonl"),
        default="text",
        help="text: the changes and a summary; jsonl: every record as judged again on stdout "
        "(the changes and the summary on stderr)",
    )

    p = sub.add_parser(
        "import", help="judge measurements made by others (OONI) with lifeline's rules"
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", parser_class=_Parser)
    kinds.required = True
    p = kinds.add_parser(
        "ooni",
        help="OONI web_connectivity measurements (JSON, JSONL, gzip, API measurement_meta)",
        description="Exit status: 0 every file imported, 1 some file or line skipped "
        "(named on stderr), 2 usage error or an unusable store.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="OONI measurement files")
    p.add_argument(
        "--data-dir", default=None, metavar="D", help="store the records there (not printed)"
    )
    p.add_argument("--format", choices=("jsonl",), default="jsonl", help="records as jsonl")
    p.add_argument(
        "--summary",
        action="store_true",
        help="print a markdown confusion table (OONI's blocking vs lifeline's verdict) instead",
    )
    p.add_argument(
        "--root", default=None, metavar="DIR", help="with --summary: file names relative to DIR"
    )

    p = sub.add_parser("incidents", help="incidents: what was blocked where, how, when")
    p.add_argument("--data-dir", default=None, metavar="D")
    _config_arg(p)
    p.add_argument(
        "--service", action="append", default=[], metavar="S", help="only this service (repeatable)"
    )
    p.add_argument(
        "--vantage", action="append", default=[], metavar="V", help="only this vantage (repeatable)"
    )
    p.add_argument(
        "--since", default=None, metavar="T", help="not ended before T (RFC 3339, or 2h, 7d ago)"
    )
    p.add_argument("--ongoing", action="store_true", help="only incidents still going on")
    p.add_argument(
        "--by",
        choices=("incident", "target"),
        default="incident",
        help="'target': one row per verdict period of each target (the detail)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = sub.add_parser("window", help="least harmful maintenance windows for the watched regions")
    _config_arg(p)
    p.add_argument("--data-dir", default=None, metavar="D")
    p.add_argument("--duration", required=True, metavar="D", help="length of the window, e.g. 1h")
    p.add_argument(
        "--within", default="72h", metavar="D", help="how far ahead to look (default 72h)"
    )
    p.add_argument("--not-before", default=None, metavar="T")
    p.add_argument("--check", default=None, metavar="T", help="score this proposed start instead")
    p.add_argument("--format", choices=("table", "json"), default="table")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "check": _cmd_check,
        "validate": _cmd_validate,
        "lab": _cmd_lab,
        "demo": _cmd_demo,
        "serve": _cmd_serve,
        "page": _cmd_page,
        "export": _cmd_export,
        "classify": _cmd_classify,
        "incidents": _cmd_incidents,
        "import": _cmd_import,
        "window": _cmd_window,
    }
    return commands[args.command](args)


def _cmd_check(args: argparse.Namespace) -> int:
    from exporter.check import run_check

    return run_check(args)


def _cmd_validate(args: argparse.Namespace) -> int:
    from exporter.check import run_validate

    return run_validate(args)


def _cmd_lab(args: argparse.Namespace) -> int:
    from probes.lab import run_lab

    directory = Path(args.dir) if args.dir else _temp_dir("lifeline-lab-")
    return asyncio.run(run_lab(directory, selftest=args.selftest))


def _cmd_demo(args: argparse.Namespace) -> int:
    from exporter.demo import run_demo

    return run_demo(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from exporter.server import run_serve

    return run_serve(args)


def _cmd_page(args: argparse.Namespace) -> int:
    from exporter.pagecmd import run_page

    return run_page(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from exporter.export import run_export

    return run_export(args)


def _cmd_classify(args: argparse.Namespace) -> int:
    from exporter.export import run_classify

    return run_classify(args)


def _cmd_incidents(args: argparse.Namespace) -> int:
    from exporter.export import run_incidents

    return run_incidents(args)


def _cmd_import(args: argparse.Namespace) -> int:
    from exporter.ooniimport import run_import

    return run_import(args)


def _cmd_window(args: argparse.Namespace) -> int:
    from exporter.windowcmd import run_window

    return run_window(args)


def _temp_dir(prefix: str) -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix=prefix))


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        with loops.use(getattr(args, "loop", "asyncio")):
            return _dispatch(args)
    except loops.LoopUnavailable as exc:
        print(f"lifeline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `lifeline export | head`
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
