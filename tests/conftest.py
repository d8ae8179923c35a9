"""Shared fixtures: a detector saved through the real save/load path, and synthetic media.

The detector has random weights (marked trained so the pipeline accepts it): tests check the
pipeline's mechanics, never its accuracy. Media are made from skimage's astronaut photo.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.samples import make_sample_photo, make_sample_video
from stages.ensemble import create_detector, save_detector


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
