"""What `pip install lifeline` gets: the wheel built from this tree, and the test extra.

The wheel must hold every module of probes/ and exporter/ and the status
page's static files, and nothing of tests/ (the hostile-server corpus is test
code: it must never ship).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.hostile import CASES

ROOT = Path(__file__).resolve().parent.parent
#: Left behind by builds, editors and test runs; never part of the source a wheel is built from.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", ".*_cache", ".hypothesis",
    ".venv", "lifeline-data", "test-artifacts",
)  # fmt: skip
#: What pip says when the build backend cannot make wheels here (no `wheel`, old setuptools,
#: or no index to fetch a build environment from): the tooling is missing, not our packaging.
_NO_TOOLING = (
    "invalid command 'bdist_wheel'",
    "No matching distribution found for setuptools",
    "No matching distribution found for wheel",
)


def _pip_wheel(source: Path, out: Path, *isolation: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out),
         str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file names in a wheel built from a clean copy of this tree (tests/ included)."""
    base = tmp_path_factory.mktemp("wheel")
    # a copy, so the build writes no build/ or egg-info into the checkout and no stale
    # build/lib from an earlier build can add (or hide) a file
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    out = base / "out"
    # offline with the tools already installed; else in pip's own build environment
    proc = _pip_wheel(source, out, "--no-build-isolation")
    if proc.returncode != 0:
        proc = _pip_wheel(source, out)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if any(sign in output for sign in _NO_TOOLING):
            pytest.skip(f"no tooling to build a wheel here: {output.strip().splitlines()[-1]}")
        pytest.fail(f"building the wheel failed:\n{output}")
    (built,) = out.glob("lifeline-*.whl")
    with zipfile.ZipFile(built) as archive:
        return archive.namelist()


def _tree_files(package: str, pattern: str) -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / package).rglob(pattern)
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_wheel_holds_every_module_of_probes_and_exporter(wheel: list[str]) -> None:
    modules = _tree_files("probes", "*.py") | _tree_files("exporter", "*.py")
    assert "probes/__init__.py" in modules and "exporter/server.py" in modules
    assert sorted(modules - set(wheel)) == []


def test_the_wheel_holds_the_status_pages_static_files(wheel: list[str]) -> None:
    static = {p for p in _tree_files("exporter", "*") if p.startswith("exporter/static/")}
    assert static, "the tree has no exporter/static/ files"
    assert sorted(static - set(wheel)) == []


def test_the_wheel_holds_no_tests_and_no_hostile_corpus(wheel: list[str]) -> None:
    # the copy built from holds tests/ (the corpus among them): none of it may ship
    assert [n for n in wheel if n.split("/")[0] == "tests"] == []
    assert [n for n in wheel if "hostile" in n.lower()] == []
    stray = [n for n in wheel if n.endswith(".py") and not n.startswith(("probes/", "exporter/"))]
    assert stray == []


def test_every_module_a_hostile_case_needs_is_in_the_test_extra() -> None:
    # a case whose module is missing skips; CI installs the test extra, so none may skip there
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    test_extra = project["optional-dependencies"]["test"]
    extra = {canonicalize_name(Requirement(r).name) for r in test_extra}
    needs = {canonicalize_name(c.needs) for c in CASES if c.needs is not None}
    assert needs, "no hostile case names an optional module any more: drop this test"
    assert sorted(needs - extra) == []
