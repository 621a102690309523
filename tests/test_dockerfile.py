"""The Dockerfile, read as Docker would (no engine here to build it): health, data, user, base."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from probes.lab import LabThread
from tests.test_prometheus import free_port
from tests.test_serve import fast_config, start_serve, stop

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def one(name: str) -> str:
    found = [args for word, args in instructions() if word == name]
    assert len(found) == 1, (name, found)
    return found[0]


def healthcheck() -> list[str]:
    args = one("HEALTHCHECK")
    command: list[str] = json.loads(args[args.index("CMD") + len("CMD") :].strip())
    return command


def test_the_base_image_is_pinned_to_a_python_and_a_debian_release() -> None:
    (base,) = [args for word, args in instructions() if word == "FROM"]
    assert re.fullmatch(r"python:3\.11\.?\d*-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base)


def test_it_runs_as_a_user_and_keeps_its_data_in_a_volume() -> None:
    assert one("USER") not in {"root", "0"}
    command = json.loads(one("CMD"))
    data_dir = command[command.index("--data-dir") + 1]
    assert one("VOLUME") == data_dir


def test_the_healthcheck_asks_serve_for_healthy_on_the_exposed_port(
    lab: LabThread, tmp_path: Path
) -> None:
    command = healthcheck()
    assert command[0] == "python"
    (url,) = re.findall(r"http://127\.0\.0\.1:\d+/-/healthy", " ".join(command))
    assert url.endswith(f":{one('EXPOSE')}/-/healthy")
    served = start_serve(fast_config(lab.config_path, tmp_path), tmp_path / "data")
    try:
        here = [sys.executable, *(a.replace(url, served.url + "-/healthy") for a in command[1:])]
        assert subprocess.run(here, timeout=30, capture_output=True).returncode == 0
    finally:
        assert stop(served.proc) == 0, served.err.read_text()
    dead = f"http://127.0.0.1:{free_port()}/-/healthy"
    gone = [sys.executable, *(a.replace(url, dead) for a in command[1:])]
    assert subprocess.run(gone, timeout=30, capture_output=True).returncode != 0
