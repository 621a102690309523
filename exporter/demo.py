"""`lifeline demo`: the lab plus `serve` on it, everything visible with no internet.

It starts the censorship lab on loopback, serves its config, and tells the
user where to look and how to make something blocked while they watch.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
from pathlib import Path

from exporter.server import ServeOptions, parse_listen, serve
from probes.config import ConfigError, load_config

__all__ = ["free_listen", "run_demo"]


def free_listen(listen: str) -> tuple[str, bool]:
    """``listen``, or the same host with port 0 when that port is taken; (address, fell back)."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if host and ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "", port))
        except OSError:
            shown = f"[{host}]" if host and ":" in host else host or ""
            return f"{shown}:0", True
    return listen, False


def _instructions(url: str, admin_url: str) -> str:
    return "\n".join(
        [
            "",
            f"  status page:  {url}",
            f"  metrics:      {url}metrics",
            f"  status JSON:  {url}api/v1/status",
            "",
            "  Block a service while you watch (the lab's admin endpoint):",
            f'    curl -X PUT -d \'{{"scenario": "open", "dns": "nxdomain"}}\' {admin_url}/rules',
            "  and lift the block again:",
            f"    curl -X DELETE '{admin_url}/rules?scenario=open'",
            "  The verdict of `open` at the censored vantage turns dns_blocked within one",
            "  interval plus a confirming re-probe. Stop with Ctrl-C.",
            "",
        ]
    )


async def _demo(directory: Path, listen: str) -> int:
    from probes.lab import Lab

    async with Lab(directory) as lab:
        try:
            config = load_config(lab.config_path)
        except ConfigError as exc:  # the lab wrote a config we cannot read: a bug, say so
            print(f"lifeline demo: the lab config is invalid: {exc}", file=sys.stderr)
            return 1
        address, fell_back = free_listen(listen)
        if fell_back:
            print(f"lifeline demo: {listen} is in use; using a free port instead", flush=True)
        print(f"lab directory: {directory}", flush=True)

        def listening(url: str) -> None:
            print(_instructions(url, lab.admin_url), flush=True)

        return await serve(config, ServeOptions(listen=address), on_listening=listening)


def run_demo(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lifeline-demo-"))
    try:
        parse_listen(args.listen)
    except ValueError as exc:
        print(f"lifeline: {exc}", file=sys.stderr)
        return 2
    from exporter.logsetup import configure

    configure(getattr(args, "log_level", "info"), getattr(args, "log_format", "text"))
    return asyncio.run(_demo(directory, args.listen))
