"""`detectors combine`: members of several detectors in one ensemble, each keeping its own crop cut,
normalisation and calibration."""
from __future__ import annotations

import json
import shutil

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


@pytest.fixture(scope="module")
def fit_data(tmp_path_factory):
    """real/: 4 photos of the sample face (positions, sizes, tints); fake/: 3 self-blends of it."""
    from test_training import _face_box, _frame, _write

    from deepfake_detect.training.self_blend import self_blend

    root = tmp_path_factory.mktemp("fit_data")
    for k, (size, t, tint) in enumerate((((320, 240), 0.1, (1.0, 1.0, 1.0)), ((288, 288), 0.35, (1.15, 0.95, 0.85)),
                                         ((360, 240), 0.6, (0.8, 0.9, 1.1)), ((256, 320), 0.85, (0.9, 1.1, 0.9)))):
        _write(root / "real" / f"person{k}.png", _frame(size, t, tint))
    rng = np.random.default_rng(3)
    for k, t in enumerate((0.2, 0.5, 0.75)):
        frame = _frame((320, 240), t, (1.0, 1.0, 1.0))
        _write(root / "fake" / f"swap{k}.png", self_blend(frame, _face_box(320, 240, t), None, rng)[0])
    return root


def test_combine_fits_its_operating_point_on_data_no_member_trained_on(folders, fit_data, tmp_path):
    ours, icpr, _ = folders
    trained_here = tmp_path / "ours"   # a detector trained here, with the split of its run: it trained on person0
    shutil.copytree(ours, trained_here)
    (trained_here / "split.json").write_text(json.dumps({"train": ["real/person0"], "holdout": ["real/person1"]}))
    config = json.loads((trained_here / "detector.json").read_text())
    (trained_here / "detector.json").write_text(json.dumps({**config, "combiner": "stacking"}))
    # a stacking detector's members have no calibration of their own: they join only an ensemble fitted on data
    unfitted = CliRunner().invoke(main, ["detectors", "combine", str(trained_here), str(icpr), "--out", str(tmp_path / "u")])
    assert unfitted.exit_code == 2 and "--fit" in unfitted.output
    out = tmp_path / "fitted"
    result = CliRunner().invoke(main, ["detectors", "combine", str(trained_here), str(icpr), "--out", str(out),
                                       "--fit", str(fit_data), "--frames", "2"])
    assert result.exit_code == 0, result.output
    assert "6 of 7 items" in result.output and "1 left out" in result.output
    assert "warning: fitted on fewer than 20 real or fake items" in result.stderr
    config = json.loads((out / "detector.json").read_text())
    fit = config["training"]["combiner"]
    assert (fit["real_items"], fit["fake_items"]) == (3, 3) and fit["faces"] >= 6
    assert config["provenance"]["operating_point"].startswith(f"fitted on {fit['faces']} faces of 3 real and 3 fake")
    assert config["combiner"] == fit["chosen"] and config["threshold"] == fit["threshold"]
    # the fitted detector reproduces the fit's own scores: analyse the fitting data with it
    evaluated = CliRunner().invoke(main, ["evaluate", str(fit_data), "--weights", str(out), "--frames", "2",
                                          "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    rows = [r for r in json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_item"]
            if r["path"] != "real/person0.png"]
    from deepfake_detect.training.metrics import binary_metrics

    scores = np.array([f["score"] for r in rows for f in r["faces"]])
    labels = np.array([r["label"] for r in rows for f in r["faces"]])
    assert binary_metrics(labels, scores, fit["threshold"])["roc_auc"] == pytest.approx(
        fit["holdout_metrics"]["roc_auc"], abs=1e-3)
    info = CliRunner().invoke(main, ["info", "--weights", str(out)])
    assert "fitted on" in info.output and "not fitted" not in info.output


def test_combine_refuses_fit_data_without_both_labels(folders, fit_data, tmp_path):
    ours, icpr, _ = folders
    only_real = tmp_path / "only_real"
    shutil.copytree(fit_data / "real", only_real / "real")
    result = CliRunner().invoke(main, ["detectors", "combine", str(ours), str(icpr), "--out", str(tmp_path / "x"),
                                       "--fit", str(only_real)])
    assert result.exit_code == 2 and "real and fake items" in result.output
    assert not (tmp_path / "x").exists()   # refused before anything was written or loaded
