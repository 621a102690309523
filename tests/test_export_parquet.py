"""`export --format parquet`: one typed row per measurement, streamed in row groups."""

from __future__ import annotations

import builtins
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.export import export
from exporter.store import Store
from probes.records import Verdict
from tests.test_store import T0, result, variety

pa = pytest.importorskip("pyarrow", reason="pyarrow (the parquet extra) is not installed")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the parquet extra) is not installed")


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    with Store(directory) as store:
        store.add(variety(T0))
        tagged = result(Verdict.DNS_BLOCKED, T0 + 3600, vantage="ir", service="chat",
                        addresses=("10.10.34.34",))  # fmt: skip
        tagged.measurement.country, tagged.measurement.asn = "IR", 12880
        store.add([tagged])
    return directory


def test_the_cli_writes_a_parquet_file_of_typed_rows(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    with out.open("wb") as stream:
        done = subprocess.run(
            [sys.executable, "-m", "exporter.cli", "export", "--data-dir", str(data),
             "--format", "parquet"],
            stdout=stream, stderr=subprocess.PIPE, text=False, check=False, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    with Store(data) as store:
        stored = list(store.results())
    assert table.num_rows == len(stored)
    rows = table.to_pylist()
    assert [r["target"] for r in rows] == [s.measurement.target for s in stored]
    assert [r["verdict"] for r in rows] == [s.verdict.value for s in stored]
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("dns_addresses").type == pa.list_(pa.string())
    assert table.schema.field("http_status").type == pa.int32()
    last = rows[-1]
    assert (last["service"], last["verdict"], last["country"], last["asn"]) == (
        "chat", "dns_blocked", "IR", 12880,
    )  # fmt: skip
    assert last["dns_addresses"] == ["10.10.34.34"]
    assert last["control_dns_addresses"] == ["127.0.0.2"]  # the control beside it
    assert last["time"].timestamp() == pytest.approx(T0 + 3600)


def test_rows_go_out_in_row_groups(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays flat: the writer holds at most one row group of records."""
    import exporter.export.parquet as parquet

    monkeypatch.setattr(parquet, "ROW_GROUP", 3)
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, write_through=True)
    with Store(data) as store:
        count = export(store, out, fmt="parquet")
    out.flush()
    meta = pq.ParquetFile(io.BytesIO(raw.getvalue())).metadata
    assert meta.num_rows == count and count > 3
    assert meta.num_row_groups == -(-count // 3)
    assert all(meta.row_group(i).num_rows <= 3 for i in range(meta.num_row_groups))


def test_without_pyarrow_it_says_what_to_install(
    data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter.cli import main

    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO()))
    code = main(["export", "--data-dir", str(data), "--format", "parquet"])
    assert code == 2
    assert "pip install 'lifeline[parquet]'" in capsys.readouterr().err
