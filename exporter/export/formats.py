"""The export formats: one table, :data:`FORMATS`, that `export` and `--format` derive from.

A format is a module with ``open_writer(out, options)``: it may write a header
to ``out`` and returns the function that writes one typed
:class:`~probes.records.Result` (with a ``close()`` when the format must end
its output, as Parquet writes its footer). A ``binary`` format is handed the
byte stream under the text one. Adding one is that module plus one row here.
Modules are imported when their format is used, so the CLI's startup pays
only for this table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from probes.records import Result

__all__ = ["FORMATS", "ExportOptions", "Format", "RowWriter"]

#: Writes one record to the stream its format was opened on.
RowWriter = Callable[["Result"], None]


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """What a format may need besides the records."""

    countries: Mapping[str, str] = field(default_factory=dict)  # vantage -> ISO country code


class _FormatModule(Protocol):
    def open_writer(self, out: IO[str], options: ExportOptions) -> RowWriter: ...


@dataclass(frozen=True, slots=True)
class Format:
    """One row of :data:`FORMATS`."""

    help: str
    module: str  # dotted name of the module with ``open_writer``
    #: True: the stored JSON text of each record is the output line as it is
    #: (no decoding, no re-encoding); ``open_writer`` serves typed records.
    verbatim: bool = False
    binary: bool = False  # writes bytes (``open_writer`` gets the stream's ``buffer``)

    def open_writer(self, out: IO[str], options: ExportOptions) -> RowWriter:
        """The row writer of this format on ``out`` (its header, if any, written)."""
        module = cast(_FormatModule, importlib.import_module(self.module))
        if self.binary:
            buffer = getattr(out, "buffer", None)
            if buffer is None:
                raise ValueError(f"{self.module} writes bytes: it needs a stream with a buffer")
            return module.open_writer(cast(IO[str], buffer), options)
        return module.open_writer(out, options)


FORMATS: dict[str, Format] = {
    "jsonl": Format("the records as stored", "exporter.export.jsonl", verbatim=True),
    "csv": Format("one flat row per measurement", "exporter.export.csvfmt"),
    "ooni": Format("OONI web_connectivity-style JSON lines", "exporter.export.ooni"),
    "parquet": Format(
        "one typed row per measurement, Parquet (needs pyarrow)",
        "exporter.export.parquet",
        binary=True,
    ),
}
