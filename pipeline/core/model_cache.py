"""Where the ONNX Runtime copies of the networks are kept, and how they are checked.

They are exported from the shipped safetensors on first use (a few seconds, once) into a cache
folder: `$DEEPFAKE_DETECT_CACHE`, else `$XDG_CACHE_HOME/deepfake-detect`, else
`~/.cache/deepfake-detect`. Each file's name carries what it was built from (the detector's
config and weights digest, or facenet-pytorch's version, and the export version); a sidecar
`.sha256` holds its checksum, verified on every load, so a damaged or half-written file is
rebuilt rather than run. Nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from deepfake_detect.pipeline.core.writers import atomic_write_bytes, atomic_write_text
from deepfake_detect.stages.detect import FaceDetector
from deepfake_detect.stages.ensemble import DetectorConfig, file_sha256
from deepfake_detect.stages.onnx_models import EXPORT_VERSION

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    if os.environ.get("DEEPFAKE_DETECT_CACHE"):
        return Path(os.environ["DEEPFAKE_DETECT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepfake-detect"


def detector_key(config: DetectorConfig, weights_digest: str) -> str:
    """What the exported ensemble depends on: every config field that shapes the graph (not the
    training provenance) and the weights."""
    shape = {k: v for k, v in asdict(config).items() if k not in ("training", "sha256")}
    text = json.dumps(shape, sort_keys=True, default=str) + weights_digest
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _verified(path: Path) -> bool:
    sidecar = Path(str(path) + ".sha256")
    try:
        return path.is_file() and sidecar.read_text().strip() == file_sha256(path)
    except OSError:
        return False


def cached_onnx(name: str, build: Callable[[], bytes], folder: Path | None = None) -> Path:
    """The cached file `name`, built with `build()` when missing or failing its checksum. The file
    goes first, its checksum after: a crash between the two leaves a file that is rebuilt."""
    path = (folder or cache_dir()) / name
    if not _verified(path):
        log.info("exporting %s for ONNX Runtime (once)", name)
        data = build()
        atomic_write_bytes(path, data)
        atomic_write_text(Path(str(path) + ".sha256"), hashlib.sha256(data).hexdigest() + "\n")
    return path


def detector_onnx(config: DetectorConfig, weights_digest: str, load_model: Callable[[], object]) -> Path:
    """The ensemble as ONNX; `load_model()` gives the PyTorch detector only when it must be exported."""
    from deepfake_detect.stages.onnx_models import export_detector

    def build() -> bytes:
        return export_detector(load_model(), config.input_size)  # type: ignore[arg-type]

    return cached_onnx(f"detector-{detector_key(config, weights_digest)}-v{EXPORT_VERSION}.onnx", build)


def face_detector_onnx(detector: type[FaceDetector]) -> dict[str, Path]:
    """The networks a face detector runs on ONNX Runtime (its `onnx_exports`), exported once and cached."""
    return {name: cached_onnx(file_name, build) for name, (file_name, build) in detector.onnx_exports().items()}
