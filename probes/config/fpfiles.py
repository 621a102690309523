"""``fingerprints.files``: fingerprint files in OONI's blocking-fingerprints CSV layout.

A file has a header row naming its columns (``name``, ``location_found``,
``pattern_type`` and ``pattern`` are required; ``scope`` is read when present;
OONI's other columns, such as ``expected_countries``, ``source`` and ``notes``,
may be there and are ignored). Each row is one fingerprint:

- ``location_found``: ``body``, ``header.<name>`` (``header.location``,
  ``header.server``, ...) or ``dns`` (an injected answer);
- ``pattern_type``: ``full`` (equal), ``prefix``, ``contains`` or ``regexp``;
- ``scope`` ``fp`` marks a false positive (a page that looks like blocking but is not).

Files are read when the config is (so ``serve``'s reload reads them again);
relative paths are taken against the config file's directory. Every bad row
is a config problem naming the file and its line.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import os
import re
from pathlib import Path

from yaml.nodes import Node

from probes.config.reader import Reader
from probes.config.yamlload import is_null
from probes.model import FingerprintRow

__all__ = ["MAX_FILE_BYTES", "parse_fingerprint_csv", "read_fingerprint_files"]

#: A fingerprint file larger than this is refused (OONI's own HTTP file is ~270 KB).
MAX_FILE_BYTES = 8 * 1024 * 1024
#: Problems reported per file before the rest are summed up.
_MAX_PROBLEMS = 20
_REQUIRED = ("name", "location_found", "pattern_type", "pattern")
_PATTERN_TYPES = ("full", "prefix", "contains", "regexp")
_HEADER_NAME = re.compile(r"^header\.[a-z0-9!#$%&'*+.^_`|~-]+$")


def read_fingerprint_files(
    r: Reader, node: Node | None, path: str
) -> tuple[tuple[str, ...], tuple[FingerprintRow, ...]] | None:
    """The files' paths and their rows; None (after reporting problems) if any is bad."""
    if is_null(node):
        return (), ()
    assert node is not None
    elements = r.sequence(node, path)
    if elements is None:
        return None
    paths: list[str] = []
    rows: list[FingerprintRow] = []
    ok = True
    for i, element in enumerate(elements):
        where = f"{path}[{i}]"
        text = r.text(element, where)
        if text is None:
            ok = False
            continue
        if not text.value.strip():
            r.error(where, "must be a file name", element)
            ok = False
            continue
        file = Path(os.path.expanduser(text.value))
        if not file.is_absolute() and r.base_dir is not None:
            file = r.base_dir / file
        found, problems = _read_file(file)
        for problem in problems:
            r.error(where, problem, element)
        if problems:
            ok = False
            continue
        paths.append(str(file))
        rows.extend(found)
    return (tuple(paths), tuple(rows)) if ok else None


def _read_file(file: Path) -> tuple[list[FingerprintRow], list[str]]:
    try:
        if not file.is_file():
            what = "does not exist" if not file.exists() else "is not a regular file"
            return [], [f"fingerprint file {file} {what}"]
        if file.stat().st_size > MAX_FILE_BYTES:
            return [], [f"fingerprint file {file} is larger than {MAX_FILE_BYTES} bytes"]
        data = file.read_bytes()
    except (OSError, ValueError) as exc:
        return [], [f"fingerprint file {file} cannot be read ({exc})"]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [f"{file}: is not UTF-8 text ({exc.reason} at byte {exc.start})"]
    return parse_fingerprint_csv(text, str(file))


def parse_fingerprint_csv(text: str, origin: str) -> tuple[list[FingerprintRow], list[str]]:
    """The rows of one file's text and the problems found, each as '<origin>:<line>: ...'."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[str] = []
    rows: list[FingerprintRow] = []
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return [], [f"{origin}:1: {exc}"]
    if header is None:
        return [], [f"{origin}: is empty (expected a header row: {', '.join(_REQUIRED)}, ...)"]
    columns = [c.strip().lower() for c in header]
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        return [], [f"{origin}:1: the header row lacks the column(s) {', '.join(missing)}"]
    index = {c: columns.index(c) for c in (*_REQUIRED, "scope") if c in columns}
    line = reader.line_num + 1
    names: dict[str, int] = {}
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"{origin}:{line}: {exc}")
            break
        start, line = line, reader.line_num + 1
        if not any(f.strip() for f in fields):
            continue  # a blank line
        row, problem = _row(fields, index, f"{origin}:{start}")
        if problem is None and row is not None and row.name in names:
            problem = f"the name {row.name!r} is used already (line {names[row.name]})"
        if problem is not None:
            problems.append(f"{origin}:{start}: {problem}")
            if len(problems) >= _MAX_PROBLEMS:
                problems.append(f"{origin}: more problems not shown")
                break
            continue
        assert row is not None
        names[row.name] = start
        rows.append(row)
    return rows, problems


def _row(
    fields: list[str], index: dict[str, int], origin: str
) -> tuple[FingerprintRow | None, str | None]:
    def get(column: str) -> str:
        i = index.get(column)
        return fields[i] if i is not None and i < len(fields) else ""

    name, where = get("name").strip(), get("location_found").strip().lower()
    kind, pattern = get("pattern_type").strip().lower(), get("pattern")
    scope = get("scope").strip().lower()
    if not name:
        return None, "the name is empty"
    if kind not in _PATTERN_TYPES:
        shown = repr(kind) if kind else "empty"
        return None, f"{name}: pattern_type is {shown}, expected one of {', '.join(_PATTERN_TYPES)}"
    if not pattern:
        return None, f"{name}: the pattern is empty (it would match everything)"
    if where == "dns":
        if kind != "full":
            return None, f"{name}: a dns fingerprint is one address (pattern_type full), not {kind}"
        try:
            ipaddress.ip_address(pattern.strip().strip("[]"))
        except ValueError:
            return None, f"{name}: {pattern!r} is not an IP address"
        pattern = pattern.strip()
    elif where != "body" and not _HEADER_NAME.match(where):
        shown = repr(where) if where else "empty"
        return None, f"{name}: location_found is {shown}, expected body, dns or header.<name>"
    if kind == "regexp":
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            return None, f"{name}: {pattern!r} is not a valid regular expression: {exc}"
    return FingerprintRow(name, where, kind, pattern, scope, origin), None
