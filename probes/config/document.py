"""The whole file: read it, compose it, read every section, and raise every problem at once."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from yaml.nodes import Node

from probes.config.problems import ConfigError
from probes.config.reader import Reader
from probes.config.sections import (
    read_defaults,
    read_fingerprints,
    read_probe,
    read_storage,
    read_version,
    read_window,
)
from probes.config.targets import read_canaries, read_services
from probes.config.vantages import read_vantages
from probes.config.yamlload import compose, is_null
from probes.model import Config, Defaults, Fingerprints, Storage, Target

_TOP_KEYS = (
    "version", "defaults", "vantages", "canaries", "services",
    "storage", "probe", "fingerprints", "window",
)  # fmt: skip

T = TypeVar("T")


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file.

    Relative ``ca_file`` paths are taken against the file's directory, so a
    config and its CA can be moved together. ``env`` (default: the process
    environment) supplies ``${NAME}`` substitutions.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such config file"], source=source) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: not UTF-8 text"], source=source) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        problem = f"{source}: cannot read the config file: {reason}"
        raise ConfigError([problem], source=source) from None
    directory = Path(os.path.abspath(source)).parent
    config = parse_config(text, source=source, base_dir=directory, env=env)
    return dataclasses.replace(config, path=source)


def parse_config(
    text: str,
    *,
    source: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Validate config text; raises :class:`ConfigError` listing every problem.

    ``base_dir`` anchors a relative ``ca_file`` (default: the current directory).
    """
    root = compose(text, source)
    anchor = None if base_dir is None else Path(base_dir)
    reader = Reader(os.environ if env is None else env, anchor)
    config = read_config(reader, root)
    if reader.errors or config is None:
        raise ConfigError(reader.errors or ["config: not usable"], source=source)
    return config


def read_config(r: Reader, root: Node | None) -> Config | None:
    if is_null(root):
        r.error("config", "is empty: it needs version: 1, vantages and services")
        return None
    assert root is not None
    top = r.mapping(root, "", _TOP_KEYS)
    if top is None:
        return None
    read_version(r, top.get("version"), root)
    defaults = _optional(r, top, "defaults", read_defaults, Defaults())
    vantages = read_vantages(r, top.get("vantages"), root)
    no_targets: tuple[Target, ...] = ()
    no_patterns: tuple[str, ...] = ()
    canaries = _optional(r, top, "canaries", read_canaries, no_targets)
    services = read_services(r, top.get("services"), root)
    storage = _optional(r, top, "storage", read_storage, Storage())
    probe_allow = _optional(r, top, "probe", read_probe, no_patterns)
    fingerprints = _optional(r, top, "fingerprints", read_fingerprints, Fingerprints())
    window = _optional(r, top, "window", read_window, None)
    if None in (defaults, vantages, canaries, services, storage, probe_allow, fingerprints):
        return None
    assert defaults is not None and vantages is not None and services is not None
    assert canaries is not None and storage is not None and probe_allow is not None
    assert fingerprints is not None
    return Config(
        vantages=vantages,
        services=services,
        defaults=defaults,
        canaries=canaries,
        storage=storage,
        probe_allow=probe_allow,
        fingerprints=fingerprints,
        window_activity=window,
        secrets=frozenset(r.substituted),
    )


def _optional(
    r: Reader,
    section: dict[str, Node],
    key: str,
    read: Callable[[Reader, Node, str], T | None],
    default: T,
) -> T | None:
    """An optional section or field: absent or null means the default."""
    node = section.get(key)
    if is_null(node):
        return default
    assert node is not None
    return read(r, node, key)
