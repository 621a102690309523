"""Reading OONI files: JSON, JSON lines, gzip, API ``measurement_meta`` answers.

A file holds one OONI measurement (JSON), many (JSONL), either gzipped, or OONI
API ``measurement_meta`` answers whose ``raw_measurement`` is the measurement as
a JSON string or an object (also inside a saved HTTP answer
``{"status": ..., "body": ...}``). What is not a web_connectivity measurement
is a :class:`Skipped` saying what it is.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class NotWebConnectivity(ValueError):
    """An object that is not a web_connectivity measurement (the sentence says what it is)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    source: str
    why: str


def read_file(path: str) -> Iterator[tuple[str, dict[str, Any] | Skipped]]:
    """(source, OONI measurement) of every measurement in a file; a Skipped for what is not one.

    Raises OSError when the file cannot be read.
    """
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            yield path, Skipped(path, f"not a readable gzip file: {exc}")
            return
    text = data.decode("utf-8", errors="replace")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = _UNPARSED
    if whole is _UNPARSED:
        # a commented JSON file (whole lines starting with //), or JSONL
        uncommented = "\n".join(
            line for line in text.splitlines() if not line.lstrip().startswith("//")
        )
        try:
            whole = json.loads(uncommented)
        except ValueError:
            yield from _jsonl(path, text)
            return
    yield path, _measurement_or_skip(path, whole)


_UNPARSED = object()


def _jsonl(path: str, text: str) -> Iterator[tuple[str, dict[str, Any] | Skipped]]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        yield path, Skipped(path, "empty file")
        return
    out: list[tuple[str, dict[str, Any] | Skipped]] = []
    for n, line in lines:
        source = f"{path}:{n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append((source, Skipped(source, f"not JSON ({exc.msg} at column {exc.colno})")))
            continue
        out.append((source, _measurement_or_skip(source, item)))
    if len(out) > 1 and all(
        isinstance(i, Skipped) and i.why.startswith("not JSON") for _, i in out
    ):
        yield path, Skipped(path, "neither JSON nor JSON lines")  # one message, not one a line
        return
    yield from out


def _measurement_or_skip(source: str, item: Any) -> dict[str, Any] | Skipped:
    try:
        return unwrap(item)
    except NotWebConnectivity as exc:
        return Skipped(source, str(exc))


def unwrap(item: Any) -> dict[str, Any]:
    """The raw OONI web_connectivity measurement in ``item`` (with the API's uid when known).

    Raises NotWebConnectivity saying what ``item`` is instead.
    """
    meta: dict[str, Any] = {}
    for _ in range(3):  # an HTTP answer around a measurement_meta around a measurement
        if not isinstance(item, dict):
            raise NotWebConnectivity(f"not an OONI measurement (a JSON {_kind(item)})")
        if "raw_measurement" in item:
            meta = item
            item = _json_value(item["raw_measurement"], "raw_measurement")
        elif "test_name" not in item and "body" in item and "status" in item:
            item = _json_value(item["body"], "body")
        else:
            break
    if not isinstance(item, dict):
        raise NotWebConnectivity(f"not an OONI measurement (a JSON {_kind(item)})")
    name = item.get("test_name")
    if name is None:
        hint = " (an object of test_keys alone?)" if "queries" in item or "control" in item else ""
        raise NotWebConnectivity(f"not an OONI measurement: no test_name{hint}")
    if name != "web_connectivity":
        raise NotWebConnectivity(f"an OONI {name!r} measurement, not web_connectivity")
    if not isinstance(item.get("input"), str) or not item["input"]:
        raise NotWebConnectivity("a web_connectivity measurement without an input URL")
    out = dict(item)
    if meta.get("measurement_uid") and not out.get("measurement_uid"):
        out["measurement_uid"] = meta["measurement_uid"]
    return out


def _json_value(value: Any, key: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise NotWebConnectivity(f"{key} is a string but not JSON ({exc.msg})") from None
    return value


def _kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
