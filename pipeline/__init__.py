"""deepfake-detect: orchestration, configuration, CLI, daemon and reports around the stages."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepfake-detect")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
