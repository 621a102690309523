"""The built-in censorship lab: a censor, faithfully played on 127.0.0.0/8.

Origins, an honest and a censoring resolver, a SOCKS5 middlebox that blocks
like national filters do, a shut-down vantage and runtime switches; it writes
a lifeline config for itself and the verdicts a correct lifeline gives.
"""

from probes.lab.lab import Lab, LabThread
from probes.lab.netutil import Listening
from probes.lab.run import run_lab

__all__ = ["Lab", "LabThread", "Listening", "run_lab"]
