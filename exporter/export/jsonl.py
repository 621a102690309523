"""`export --format jsonl`: the records as stored, one JSON object a line.

`export` copies the store's JSON text as it is (the format is ``verbatim``);
this writer serves typed records, encoded the way the store and the log encode them.
"""

from __future__ import annotations

from typing import IO

from exporter.export.formats import ExportOptions, RowWriter
from probes.records import Result, record_json

__all__ = ["open_writer"]


def open_writer(out: IO[str], options: ExportOptions) -> RowWriter:
    def write(result: Result) -> None:
        out.write(record_json(result.to_dict()))
        out.write("\n")

    return write
