"""ablate: architecture ablations of small image CNNs, one command per study."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ablate")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
