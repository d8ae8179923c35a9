"""`detectors combine`: members of several detectors in one ensemble, each keeping its own crop cut,
normalisation and calibration."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from deepfake_detect.pipeline.cli import main
from deepfake_detect.stages.classify import CropClassifier
from deepfake_detect.stages.crop import cut_crop
from deepfake_detect.stages.ensemble import load_detector

pytest.importorskip("efficientnet_pytorch", reason="the imported member needs efficientnet_pytorch")
BOX = np.array([200.0, 120.0, 330.0, 290.0], np.float32)


@pytest.fixture(scope="module")
def folders(weights_dir, tmp_path_factory):
    from test_published import _IcprNet, _randomise

    root = tmp_path_factory.mktemp("combine")
    path = root / "EfficientNetB4_DFDC_bestval-0.pth"
    torch.save(_randomise(_IcprNet(False), seed=7).state_dict(), path)
    runner = CliRunner()
    assert runner.invoke(main, ["detectors", "import", "icpr2020", str(path), "--out", str(root / "icpr")]).exit_code == 0
    result = runner.invoke(main, ["detectors", "combine", str(weights_dir), str(root / "icpr"), "--out", str(root / "both")])
    assert result.exit_code == 0, result.output
    return weights_dir, root / "icpr", root / "both"


def _scores(folder, frame):
    model = load_detector(folder)
    crop = cut_crop(frame, BOX, model.config.crop_policy, model.config.crop_margin, model.config.input_size)
    return CropClassifier(model, torch.device("cpu")).score(crop[None])


def test_each_member_scores_as_in_its_own_detector(folders):
    ours, icpr, both = folders
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    combined = load_detector(both)
    groups = combined.config.input_groups()
    assert [g.crop_policy for g, _ in groups] == ["square", "icpr2020"] and len(combined.config.members) == 3
    crops = [cut_crop(frame, BOX, g.crop_policy, g.crop_margin, g.input_size)[None] for g, _ in groups]
    got = CropClassifier(combined, torch.device("cpu")).score(crops)
    expected = np.concatenate([_scores(ours, frame).members, _scores(icpr, frame).members], axis=1)
    assert np.allclose(got.members, expected, atol=1e-5)
    assert got.ensemble[0] == pytest.approx(float(expected.mean()), abs=1e-5)   # no calibration in either source
    assert combined.config.threshold == 0.5 and "not fitted" in combined.config.provenance["operating_point"]


def test_a_combined_detector_analyses_end_to_end_with_heatmaps(folders, clips, tmp_path):
    _, _, both = folders
    info = CliRunner().invoke(main, ["info", "--weights", str(both)])
    assert "combined from" in info.output and "input groups: 2" in info.output
    result = CliRunner().invoke(main, ["analyze", str(clips["photo"]), "--weights", str(both), "--out", str(tmp_path),
                                       "--render"])
    assert result.exit_code in (0, 1, 3), result.output
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert len(report["model"]["members"]) == 3 and 0 <= report["score"] <= 1
    assert len(report["tracks"][0]["faces"][0]["member_scores"]) == 3
    assert any(key.startswith("annotated") for key in report["outputs"])


def test_fewer_than_two_folders_are_refused(folders, tmp_path):
    ours, _, _ = folders
    result = CliRunner().invoke(main, ["detectors", "combine", str(ours), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "two detector folders" in result.output


def test_a_map_carried_between_two_cuts_lands_on_the_same_face_point():
    from deepfake_detect.pipeline.core.outputs import _crop_to_crop
    from deepfake_detect.stages.crop import crop_window

    box, shape = BOX.astype(np.float64), (480, 640)
    square, dfdc = ("square", 0.3, 224), ("dfdc-winner", 0.0, 380)
    assert np.allclose(_crop_to_crop(shape, box, square, square), [[1, 0, 0], [0, 1, 0]], atol=1e-5)
    warp = _crop_to_crop(shape, box, dfdc, square)

    def in_crop(cut, x, y):   # a frame point in a crop's pixels
        (sx1, sy1, sx2, sy2), (tx1, ty1, tx2, ty2) = crop_window(cut[0], box, cut[1], *shape, cut[2])
        return tx1 + (x - sx1) * (tx2 - tx1) / (sx2 - sx1), ty1 + (y - sy1) * (ty2 - ty1) / (sy2 - sy1)

    for x, y in ((265.0, 205.0), (210.0, 130.0), (320.0, 280.0)):   # the box's centre and two inner corners
        gx, gy = in_crop(dfdc, x, y)
        px, py = warp @ np.array([gx, gy, 1.0])
        assert (px, py) == pytest.approx(in_crop(square, x, y), abs=1e-3)
