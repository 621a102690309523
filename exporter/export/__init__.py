"""`lifeline export`, `lifeline classify` and `lifeline incidents`: history for researchers.

- :mod:`.stream`: ``export``, measurements from the store, streamed, in one of
  :data:`.formats.FORMATS` (:mod:`.jsonl` the records as stored, :mod:`.csvfmt`
  one flat row each, :mod:`.ooni` OONI web_connectivity-style JSON lines).
- :mod:`.classify`: replays a JSONL log through today's classifier and says
  which verdicts would change.
- :mod:`.timeline`: `incidents`, the verdict timeline of the store, non-ok periods, newest first.

Names are imported from their modules when first used, so that the CLI, which
reads the formats table to build ``--format``, does not load the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.export.classify import Reclassified, reclassify, run_classify
    from exporter.export.common import resolve_time
    from exporter.export.csvfmt import CSV_COLUMNS, csv_row
    from exporter.export.formats import FORMATS, ExportOptions, Format
    from exporter.export.ooni import ooni_record
    from exporter.export.stream import export, run_export
    from exporter.export.timeline import (
        INCIDENTS_SCHEMA,
        Incident,
        format_duration,
        incidents,
        run_incidents,
    )

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "INCIDENTS_SCHEMA",
    "ExportOptions",
    "Format",
    "Incident",
    "Reclassified",
    "csv_row",
    "export",
    "format_duration",
    "incidents",
    "ooni_record",
    "reclassify",
    "resolve_time",
    "run_classify",
    "run_export",
    "run_incidents",
]

_HOME = {
    "Reclassified": "classify", "reclassify": "classify", "run_classify": "classify",
    "resolve_time": "common",
    "CSV_COLUMNS": "csvfmt", "csv_row": "csvfmt",
    "FORMATS": "formats", "ExportOptions": "formats", "Format": "formats",
    "INCIDENTS_SCHEMA": "timeline", "Incident": "timeline", "format_duration": "timeline",
    "incidents": "timeline", "run_incidents": "timeline",
    "ooni_record": "ooni",
    "export": "stream", "run_export": "stream",
}  # fmt: skip


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
