"""Shared fixtures: a detector saved through the real save/load path, and synthetic media.

The detector has random weights (marked trained so the pipeline accepts it): tests check the
pipeline's mechanics, never its accuracy. Media are made from skimage's astronaut photo.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deepfake_detect.pipeline.core.samples import make_sample_photo, make_sample_video
from deepfake_detect.stages.ensemble import create_detector, save_detector


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """The ONNX Runtime exports of this session's detectors go to a temporary folder, never to the
    user's cache (subprocesses the tests start inherit it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("DEEPFAKE_DETECT_CACHE", str(tmp_path_factory.mktemp("model-cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_detector(create_detector(trained=True, version="test"), tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "one": make_sample_video(root / "one face.mp4", seconds=1.6, size=(480, 270), faces=1, audio=True),
        "two": make_sample_video(root / "two.mp4", seconds=1.6, size=(480, 270), faces=2),
        "none": make_sample_video(root / "none.mp4", seconds=1.0, size=(320, 180), faces=0),
        "photo": make_sample_photo(root / "photo.jpg", size=(480, 360), faces=1),
    }


@pytest.fixture(scope="session")
def astronaut_face() -> SimpleNamespace:
    """skimage's astronaut photo with her face read off the 512x512 image by eye: the face box and
    MTCNN-style points (left eye, right eye, nose, mouth left, mouth right) in x, y pixels."""
    from skimage import data

    return SimpleNamespace(
        image=data.astronaut(),
        box=np.array([180, 70, 265, 180], dtype=np.float32),
        landmarks=np.array([[202, 101], [247, 102], [222, 125], [205, 141], [244, 141]], dtype=np.float32))
