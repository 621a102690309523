"""`serve`'s log lines on stderr: ``--log-level`` and ``--log-format`` (docs/serve.md).

Every record of the process goes through one stderr handler with a redacting
filter (:data:`REDACTOR`: URL passwords, secret query values and the
config's secrets are masked before anything is written), in one of two
formats:

- ``text``: ``2026-01-01T00:00:00.250000Z info incident_start: <message>``
- ``json``: one object a line, ``{"ts", "level", "logger", "event", "msg", …}``
  with the event's fields (:mod:`exporter.events` names them).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from probes.model import Config
from probes.redact import Redactor, config_secrets
from probes.timefmt import rfc3339

__all__ = [
    "LEVELS",
    "LOG_FORMATS",
    "REDACTOR",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure",
    "remember_secrets",
]

LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: Attribute of a LogRecord that carries an event's name and fields (exporter.events sets them).
EVENT_ATTR, FIELDS_ATTR = "lifeline_event", "lifeline_fields"

#: The one redactor of the process; each config `serve` runs adds its secrets.
REDACTOR = Redactor()


def remember_secrets(config: Config, *extra: str) -> None:
    """Mask this config's secrets (and ``extra`` ones, e.g. web-config hashes) from now on."""
    REDACTOR.remember(config_secrets(config) | set(extra))


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return REDACTOR(value)
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _redact(v) for k, v in value.items()}
    return value


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, arguments, fields and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = REDACTOR(message), None
        if record.exc_text:
            record.exc_text = REDACTOR(record.exc_text)
            record.exc_info = None  # formatted and masked above; never formatted again
        if record.stack_info:
            record.stack_info = REDACTOR(record.stack_info)
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            setattr(record, FIELDS_ATTR, _redact(fields))
        return True


def _event(record: logging.LogRecord) -> str:
    event = getattr(record, EVENT_ATTR, None)
    return event if isinstance(event, str) else "log"


class TextFormatter(logging.Formatter):
    """``TS level event: message`` (the exception, if any, on the lines after)."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{rfc3339(record.created)} {record.levelname.lower()} "
            f"{_event(record)}: {record.getMessage()}"
        )
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, event, msg, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _event(record),
            "msg": record.getMessage(),
        }
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                doc.setdefault(key, value)
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure(level: str = "info", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """Send every log record of the process to ``stream`` (stderr) at ``level`` and above."""
    if level not in LEVELS:
        raise ValueError(f"--log-level {level!r}: use one of {', '.join(LEVELS)}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"--log-format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_lifeline", False):
            root.removeHandler(old)
    handler._lifeline = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries: warnings and worse
    logging.getLogger("lifeline").setLevel(level.upper())
