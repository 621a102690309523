"""`lifeline import ooni` over the real and simulated OONI measurements of ../shared/ooni-real/.

The folder is not part of the repository (SOURCES.md there says where each
file came from); it is looked for beside the checkout (``../shared/ooni-real``
from the repository, or from the directory that holds the worktree), or where
``LIFELINE_OONI_REAL`` points. Without it the module is skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from exporter.cli import main
from exporter.ooniimport import Imported, Skipped, import_files

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "docs" / "schema" / "measurement.schema.json"


def _find_folder() -> Path | None:
    named = os.environ.get("LIFELINE_OONI_REAL")
    if named:
        candidates = [Path(named)]
    else:
        candidates = [p / "shared" / "ooni-real" for p in ROOT.parents]
    for path in candidates:
        if (path / "manifest.json").is_file():
            return path
    return None


FOLDER = _find_folder()
if FOLDER is None:
    pytest.skip(
        "the real OONI measurements (../shared/ooni-real/ with its manifest.json) are not "
        "here; set LIFELINE_OONI_REAL to the folder to run these tests",
        allow_module_level=True,
    )
assert FOLDER is not None
MANIFEST: list[dict[str, Any]] = json.loads((FOLDER / "manifest.json").read_text())
FILES = [str(FOLDER / entry["file"]) for entry in MANIFEST]


def _raw(path: str) -> Any:
    """The file's JSON as OONI wrote it (commented lines dropped), without lifeline's reader."""
    text = Path(path).read_text()
    return json.loads("\n".join(x for x in text.splitlines() if not x.lstrip().startswith("//")))


def _is_measurement(path: str) -> bool:
    """A web_connectivity measurement, bare or inside the API's / a saved answer's wrapping."""
    item = _raw(path)
    for key in ("body", "raw_measurement"):
        if isinstance(item, dict) and "test_name" not in item and key in item:
            item = item[key]
            item = json.loads(item) if isinstance(item, str) else item
    return isinstance(item, dict) and item.get("test_name") == "web_connectivity"


@pytest.fixture(scope="module")
def imported() -> dict[str, Imported | Skipped]:
    return {item.source: item for item in import_files(FILES)}


def test_the_folder_holds_real_and_simulated_measurements() -> None:
    kinds = {entry["kind"] for entry in MANIFEST}
    assert {"raw", "explorer", "sim"} <= kinds
    assert len(FILES) >= 80


def test_every_web_connectivity_file_imports_as_one_record_that_validates(
    imported: dict[str, Imported | Skipped],
) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    measurements = [path for path in FILES if _is_measurement(path)]
    assert len(measurements) >= 80
    for path in measurements:
        item = imported.get(path)
        assert isinstance(item, Imported), f"{path}: {item}"
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(item.record)]
        assert not errors, f"{path}: {errors[:3]}"
        ooni = item.record["ooni"]
        assert ooni["input"] == item.record["target"]
        assert item.record["vantage"].startswith(f"ooni-{str(ooni['probe_cc']).lower()}-")


def test_what_is_not_a_measurement_is_skipped_by_name(
    imported: dict[str, Imported | Skipped],
) -> None:
    others = [path for path in FILES if not _is_measurement(path)]
    assert others  # the folder holds a bare test_keys object (SOURCES.md: PK)
    for path in others:
        item = imported[path]
        assert isinstance(item, Skipped)
        assert "not an OONI measurement" in item.why


def test_the_ooni_block_keeps_the_metadata_of_each_kind(
    imported: dict[str, Imported | Skipped],
) -> None:
    for entry in MANIFEST:
        item = imported[str(FOLDER / entry["file"])]
        if not isinstance(item, Imported):
            continue
        ooni = item.record["ooni"]
        assert ooni["test_version"], entry["file"]
        assert ooni["probe_asn"] is None or ooni["probe_asn"].startswith("AS")
        if entry["kind"] == "explorer":  # the API's answer names the measurement
            assert ooni["measurement_uid"] and ooni["report_id"], entry["file"]


def test_records_carry_the_probe_and_the_test_helper_observations(
    imported: dict[str, Imported | Skipped],
) -> None:
    with_control = [i for i in imported.values() if isinstance(i, Imported) and i.record["control"]]
    assert len(with_control) >= 70
    for item in with_control:
        assert item.record["control"]["vantage"] == "ooni-th"
        assert item.record["control"]["stages"]["dns"] is not None, item.source


def test_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    measurements = [path for path in FILES if _is_measurement(path)]
    assert main(["import", "ooni", *measurements[:5]]) == 0
    out, _ = capsys.readouterr()
    assert len(out.splitlines()) == 5
    assert main(["import", "ooni", *FILES]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == len(measurements)
    for path in FILES:
        if path not in measurements:
            assert f"{path}: skipped:" in err


def test_summary_table_over_the_folder(capsys: pytest.CaptureFixture[str]) -> None:
    main(["import", "ooni", "--summary", "--root", str(FOLDER), *FILES])
    out, _ = capsys.readouterr()
    for row in ("false", "dns", "tcp_ip", "http-failure", "http-diff", "null"):
        assert f"\n| {row} |" in out
    assert "lifeline says what OONI says on" in out
