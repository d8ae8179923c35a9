"""The detector shipped in weights/: it loads with no other file, and it does what it was trained for.

The behaviour check uses the astronaut photo from scikit-image, a face the detector never saw in
training, and self-blended fakes of it: the kind of fake the model learnt. Accuracy on real
fakes is measured by `deepfake-detect evaluate`, not here (see weights/MODEL_CARD.md).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deepfake_detect.pipeline.cli import main
from deepfake_detect.pipeline.core.config import DEFAULT_WEIGHTS
from deepfake_detect.stages.classify import CropClassifier
from deepfake_detect.stages.ensemble import CONFIG_FILE, WEIGHTS_FILE, load_detector
from deepfake_detect.training.sbi_batches import sbi_pair_crops

pytestmark = pytest.mark.skipif(not (DEFAULT_WEIGHTS / CONFIG_FILE).is_file(),
                                reason="no detector installed in weights/")

@pytest.fixture(scope="module")
def shipped():
    return load_detector(DEFAULT_WEIGHTS)  # checks the tensors' sha256 against detector.json


def test_shipped_detector_is_complete_and_small(shipped):
    cfg = shipped.config
    assert cfg.trained and cfg.members == ["mobilenetv2_100", "tf_efficientnetv2_b0"]
    assert cfg.combiner in ("mean", "stacking") and 0.0 < cfg.threshold < 1.0
    assert (DEFAULT_WEIGHTS / WEIGHTS_FILE).stat().st_size <= 60 * 2**20
    assert (DEFAULT_WEIGHTS / "MODEL_CARD.md").is_file()
    # the config says completely what network it is: each member's timm arguments, and its calibration
    saved = json.loads((DEFAULT_WEIGHTS / CONFIG_FILE).read_text())
    assert saved["architectures"]["mobilenetv2_100"] == {"model_name": "mobilenetv2_100", "pad_type": "same"}
    assert set(saved["architectures"]) == set(cfg.members)
    assert cfg.calibration["scale"] > 0 and set(saved["training"]["phases"]) >= {"faces_s", "total_s"}


def test_self_blended_fakes_of_an_unseen_face_score_above_the_real_face(shipped, astronaut_face):
    rng = np.random.default_rng(0)
    face = astronaut_face
    pairs = [sbi_pair_crops(face.image, face.box, face.landmarks, rng, margin=shipped.config.crop_margin, size=224)
             for _ in range(16)]
    classifier = CropClassifier(shipped, torch.device("cpu"))
    real = classifier.score(np.stack([p[0] for p in pairs])).ensemble
    fake = classifier.score(np.stack([p[1] for p in pairs])).ensemble
    assert fake.mean() > real.mean() + 0.1
    assert (fake > real).mean() >= 0.75


def test_analyze_gives_a_verdict_with_the_shipped_weights(shipped, clips, tmp_path):
    result = CliRunner().invoke(main, ["analyze", str(clips["photo"]), "--out", str(tmp_path), "--no-render"])
    report = json.loads((tmp_path / "photo.jpg.json").read_text())
    assert report["verdict"] in ("real", "fake", "inconclusive")
    assert result.exit_code == {"real": 0, "fake": 1, "inconclusive": 3}[report["verdict"]]
    assert report["model"]["sha256"] == shipped.config.sha256
