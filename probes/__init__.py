"""lifeline's measuring side: stages, failure vocabulary, classifier, runner, lab."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lifeline")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
