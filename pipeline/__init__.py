"""deepfake-detect: orchestration, configuration, CLI, daemon and reports around the stages."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepfake-detect")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

# Before anything imports torch (which reads it once): idle OpenMP threads sleep instead of
# spinning, so they do not take the cores from the decoder thread or from a second analysis.
from deepfake_detect.pipeline.core.threads import passive_waits  # noqa: E402

passive_waits()
