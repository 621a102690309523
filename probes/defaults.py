"""Every default and shared threshold, written once; everything else imports it from here.

The config's defaults (CONTRACT §3) are the default values of the records in
:mod:`probes.model`; the CLI, the store and the exporter's replays use the
same names rather than copies of the numbers. This module imports nothing,
so anything may import it.
"""

from __future__ import annotations

__all__ = [
    "BODY_PROPORTION",
    "DEFAULT_BODY_HEAD_BYTES",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_DATA_DIR",
    "DEFAULT_DNS_WINDOW_S",
    "DEFAULT_INTERVAL_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PER_VANTAGE",
    "DEFAULT_RETENTION_S",
    "DEFAULT_THROTTLE_RATIO",
    "DEFAULT_TIMEOUT_S",
    "MAX_BODY_BYTES_LIMIT",
    "MAX_BODY_HEAD_BYTES",
    "MAX_DNS_WINDOW_S",
    "TITLE_WORD_MIN",
]

# --- config.yaml's defaults: and storage: -------------------------------------------------------

#: ``defaults.interval``: how often each (target, vantage) is measured, seconds.
DEFAULT_INTERVAL_S = 60.0
#: ``defaults.timeout``: one measurement's whole deadline, seconds.
DEFAULT_TIMEOUT_S = 10.0
#: ``defaults.throttle_ratio``: a throughput below this share of the control's is throttled.
DEFAULT_THROTTLE_RATIO = 0.25
#: ``defaults.max_body_bytes``: an HTTP body is kept up to this, after decompression.
DEFAULT_MAX_BODY_BYTES = 1_048_576
#: Upper bound for defaults.max_body_bytes: a probe reads bodies into memory.
MAX_BODY_BYTES_LIMIT = 64 * 1024 * 1024
#: ``defaults.body_head_bytes``: how much of a body's start the HTTP record keeps
#: (``body_head``, decoded), so a stored log can be re-judged on it later.
DEFAULT_BODY_HEAD_BYTES = 65_536
#: Upper bound for defaults.body_head_bytes: every stored record carries its head.
MAX_BODY_HEAD_BYTES = 1_048_576
#: ``storage.dir``: where the store and the probe log live.
DEFAULT_DATA_DIR = "./lifeline-data"
#: ``storage.retention``: how long measurements are kept, seconds.
DEFAULT_RETENTION_S = 30 * 86400.0

# --- measuring ----------------------------------------------------------------------------------

#: Measurements in flight at once, in all, and per vantage (a slow proxy must
#: not starve the other vantages).
DEFAULT_CONCURRENCY = 64
DEFAULT_PER_VANTAGE = 24
#: ``vantages[].dns_window``: how long the DNS stage keeps listening after a UDP
#: question's first reply for further replies to it (DNS injection: the forged
#: reply comes first, the real one after it), seconds; 0 turns it off. Bounded
#: by the measurement's deadline; not counted in the DNS stage's duration_s.
DEFAULT_DNS_WINDOW_S = 0.3
#: The largest ``dns_window`` a config may ask for.
MAX_DNS_WINDOW_S = 5.0

# --- judging ------------------------------------------------------------------------------------

#: OONI's similarity thresholds (Web Connectivity): body length proportion and
#: the minimum length of a title word that must appear in both titles.
BODY_PROPORTION = 0.7
TITLE_WORD_MIN = 5
