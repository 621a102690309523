"""The config's fingerprints, written once beside the probe log, found again by digest.

Each record says which fingerprint set judged it (``judged_with.fingerprints``, a
digest: :func:`probes.judge.fingerprint_digest`). The built-in part of a set comes
with lifeline; the config's own part (``fingerprints:`` and its files) would not
come with a log that is read without its config. So `serve` and `check --log`
write it here, in ``fingerprints-<digest>.json`` beside the log (content-addressed:
written once per set, never changed), and `lifeline classify FILE` looks for it
beside FILE.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from probes.fingerprints import FingerprintSet
from probes.judge import fingerprint_digest
from probes.model import FingerprintRow, Fingerprints

__all__ = ["SCHEMA", "file_for", "read_fingerprints", "write_fingerprints"]

SCHEMA = "lifeline.fingerprints/1"


def file_for(directory: str | Path, digest: str) -> Path:
    """Where the set of ``digest`` is kept in ``directory``."""
    return Path(directory) / f"fingerprints-{digest.removeprefix('sha256:')[:32]}.json"


def write_fingerprints(directory: str | Path, extra: Fingerprints) -> Path | None:
    """Write the config's fingerprints ``extra`` beside the log, once; its path.

    Nothing is written for none (the set is the built-in one, which lifeline has).
    Raises OSError when the directory cannot be written.
    """
    if extra == Fingerprints():
        return None
    digest = fingerprint_digest(FingerprintSet.build(extra))
    path = file_for(directory, digest)
    if path.is_file():
        return path
    doc = {"schema": SCHEMA, "digest": digest, "extra": _extra_dict(extra)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fingerprints-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_fingerprints(directory: str | Path, digest: str) -> FingerprintSet | None:
    """The set of ``digest``: the built-in one, or built from its file in ``directory``.

    None when neither gives that digest (no file, or one that is not the set: the
    built-in fingerprints changed since, or the file was edited).
    """
    builtin = FingerprintSet.build()
    if fingerprint_digest(builtin) == digest:
        return builtin
    path = file_for(directory, digest)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        extra = _extra_of(doc["extra"])
        found = FingerprintSet.build(extra)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if fingerprint_digest(found) == digest else None


def _extra_dict(extra: Fingerprints) -> dict[str, Any]:
    return dataclasses.asdict(extra)


def _extra_of(data: dict[str, Any]) -> Fingerprints:
    """A :class:`Fingerprints` from its dict (lists back to tuples, rows to their type)."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(Fingerprints):
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, list):
            value = tuple(
                FingerprintRow(**v) if f.name == "rows" and isinstance(v, dict) else v
                for v in value
            )
        kwargs[f.name] = value
    return Fingerprints(**kwargs)
