"""How long from a block starting to /metrics showing it (and from its end to `ok`).

Starts the lab, `lifeline serve` on a copy of its config with a short interval
(a subprocess, as operators run it), then repeatedly flips a lab rule (the
`open` service's name answers NXDOMAIN at the censor resolver) and polls
/metrics until the published verdict follows. The expected worst case is one
interval (until the target's slot comes round) plus one confirming re-probe.

    python -m benchmarks.detection_latency [--interval 4s] [--rounds 3] [--workers N]

Everything stays on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from probes.config import parse_duration
from probes.lab import LabThread

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
GIVE_UP_S = 300.0


def _get(url: str) -> str:
    with _OPENER.open(url, timeout=30) as response:
        body: bytes = response.read()
        return body.decode()


def _send(url: str, method: str, document: dict[str, str] | None = None) -> None:
    data = json.dumps(document).encode() if document is not None else None
    with _OPENER.open(urllib.request.Request(url, data=data, method=method), timeout=30):
        pass


def _current(metrics_url: str, target: str) -> str | None:
    for fam in text_string_to_metric_families(_get(metrics_url)):
        for s in fam.samples:
            key = (s.labels.get("service"), s.labels.get("target"), s.labels.get("vantage"))
            wanted = ("open", target, "censored")
            if s.name == "lifeline_verdict" and s.value == 1 and key == wanted:
                return s.labels["verdict"]
    return None


def _wait_for(metrics_url: str, target: str, verdict: str) -> float:
    """Seconds until the published verdict is ``verdict`` (polling every 100 ms)."""
    start = time.monotonic()
    while time.monotonic() - start < GIVE_UP_S:
        if _current(metrics_url, target) == verdict:
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"{verdict} never showed on /metrics")


def _start_serve(
    config: Path, work: Path, workers: str = "0"
) -> tuple[subprocess.Popen[bytes], str]:
    out = work / "serve.out"
    with out.open("wb") as stream:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter.cli", "serve", "-c", str(config),
             "--listen", "127.0.0.1:0", "--data-dir", str(work / "data"),
             f"--workers={workers}"],
            stdout=stream, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    while proc.poll() is None:
        for line in out.read_text().splitlines():
            if line.startswith("listening on "):
                return proc, line.removeprefix("listening on ").strip()
        time.sleep(0.1)
    raise RuntimeError(f"serve exited with {proc.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", default="4s", help="measurement interval (>= the timeout)")
    parser.add_argument("--rounds", type=int, default=3, help="block/unblock cycles")
    parser.add_argument("--workers", default="0", help="serve --workers (N or auto)")
    args = parser.parse_args()
    interval = parse_duration(args.interval)
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-") as tmp:
        work = Path(tmp)
        with LabThread(work / "lab") as lab:
            document = yaml.safe_load(lab.config_path.read_text())
            document["defaults"]["interval"] = args.interval
            config = work / "config.yaml"
            config.write_text(yaml.safe_dump(document, sort_keys=False))
            target = next(
                r["target"]
                for r in lab.expected
                if r["service"] == "open" and r["target"].startswith("dns://")
            )
            proc, url = _start_serve(config, work, args.workers)
            rules = lab.admin_url + "/rules"
            blocked, lifted = [], []
            try:
                _wait_ready(url)
                _wait_for(url + "metrics", target, "ok")
                for n in range(args.rounds):
                    _send(rules, "PUT", {"scenario": "open", "dns": "nxdomain"})
                    blocked.append(_wait_for(url + "metrics", target, "dns_blocked"))
                    _send(rules + "?scenario=open", "DELETE")
                    lifted.append(_wait_for(url + "metrics", target, "ok"))
                    print(
                        f"round {n + 1}: block seen after {blocked[-1]:.1f}s, "
                        f"unblock after {lifted[-1]:.1f}s",
                        flush=True,
                    )
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    print(
        f"interval {interval:g}s (timeout {document['defaults']['timeout']}); "
        f"expected worst case about interval + one re-probe"
    )
    for name, xs in (("block -> dns_blocked", blocked), ("unblock -> ok", lifted)):
        print(
            f"{name:22s} min {min(xs):5.1f}s  median {statistics.median(xs):5.1f}s  "
            f"max {max(xs):5.1f}s  (n={len(xs)})"
        )
    return 0


def _wait_ready(url: str) -> None:
    start = time.monotonic()
    while time.monotonic() - start < GIVE_UP_S:
        try:
            if _OPENER.open(url + "-/ready", timeout=30).status == 200:
                return
        except urllib.error.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("serve never became ready")


if __name__ == "__main__":
    sys.exit(main())
