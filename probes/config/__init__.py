"""Reading config.yaml into the validated records of :mod:`probes.model` (CONTRACT §3).

The YAML is composed into nodes (not constructed into Python objects) so that
every value keeps its line. The walk never stops at the first problem: each
one is collected as ``path.to.field: what is wrong (line N)`` and all of them
are raised together in one :class:`ConfigError`, because an operator fixing a
config wants the whole list, not one round trip per typo. Unknown keys are
rejected everywhere: a misspelt key silently ignored is a probe silently not
made.

``${NAME}`` in a string value is replaced from the environment so that proxy
passwords need not live in the file. Error messages show the ``${NAME}``
template, never what it expanded to, and never a proxy password.

One module per job: :mod:`~probes.config.yamlload` (YAML nodes with their
lines), :mod:`~probes.config.problems` (the problem list and
:class:`ConfigError`), :mod:`~probes.config.reader` (typed access to nodes,
``${NAME}``), :mod:`~probes.config.fields` (readers several sections share),
one module per group of sections (:mod:`~probes.config.sections`,
:mod:`~probes.config.vantages`, :mod:`~probes.config.resolvers`,
:mod:`~probes.config.proxies`, :mod:`~probes.config.targets`), and
:mod:`~probes.config.document`, which reads the whole file.
"""

from __future__ import annotations

from probes.config.document import load_config, parse_config
from probes.config.durations import parse_duration
from probes.config.problems import ConfigError
from probes.defaults import MAX_BODY_BYTES_LIMIT

__all__ = ["MAX_BODY_BYTES_LIMIT", "ConfigError", "load_config", "parse_config", "parse_duration"]
