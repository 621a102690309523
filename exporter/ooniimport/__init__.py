"""`lifeline import ooni`: OONI web_connectivity measurements as lifeline records.

One module per job:

- :mod:`.read`: the files (JSON, JSONL, gzip, API ``measurement_meta``) to raw
  OONI measurements, a :class:`Skipped` for what is not one;
- :mod:`.fields`: OONI's field values (failures, times, endpoints, bodies,
  headers, the vantage and service names) read as lifeline's;
- :mod:`.probe`, :mod:`.control`: the probe's observations and the test
  helper's ``control`` as one :class:`~probes.records.Measurement` each;
- :mod:`.mapping`: both judged with lifeline's classifier and built-in
  fingerprints, the call the runner makes
  (:meth:`probes.judge.JudgingContext.judge`), with the record's ``ooni`` block;
- :mod:`.summary`: the confusion table of docs/accuracy.md;
- :mod:`.run`: the command (printed, summarised or stored).

What OONI recorded that the records cannot hold is listed in docs/ooni.md.
"""

from __future__ import annotations

from .control import CONTROL_VANTAGE
from .mapping import Imported, import_files, judge, ooni_block, to_measurements
from .read import NotWebConnectivity, Skipped, read_file, unwrap
from .run import EXIT_ALL, EXIT_SKIPPED, EXIT_USAGE, run_import
from .summary import agrees, summary_markdown

__all__ = [
    "CONTROL_VANTAGE",
    "EXIT_ALL",
    "EXIT_SKIPPED",
    "EXIT_USAGE",
    "Imported",
    "NotWebConnectivity",
    "Skipped",
    "agrees",
    "import_files",
    "judge",
    "ooni_block",
    "read_file",
    "run_import",
    "summary_markdown",
    "to_measurements",
    "unwrap",
]
