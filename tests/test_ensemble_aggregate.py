import json

import numpy as np
import pytest
import torch

from deepfake_detect.pipeline.core.config import AnalysisConfig
from deepfake_detect.pipeline.core.runner import Analyzer
from deepfake_detect.stages.aggregate import AggregateSettings, FaceScore, aggregate, confident_strategy, pick_keyframes
from deepfake_detect.stages.classify import CropClassifier, to_model_input
from deepfake_detect.stages.detect import DetectSettings
from deepfake_detect.stages.ensemble import DetectorConfig, DetectorError, create_detector, load_detector, save_detector


def test_save_load_round_trip_gives_identical_scores(weights_dir):
    model = load_detector(weights_dir)
    again = load_detector(weights_dir)
    crops = np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3), dtype=np.uint8)
    a = CropClassifier(model, torch.device("cpu")).score(crops)
    b = CropClassifier(again, torch.device("cpu")).score(crops)
    assert a.members.shape == (3, 2)
    np.testing.assert_allclose(a.ensemble, b.ensemble, rtol=1e-6)
    np.testing.assert_allclose(a.ensemble, a.members.mean(axis=1), rtol=1e-5)  # "mean" combiner


def test_tampered_weights_are_refused(weights_dir, tmp_path):
    for name in ("detector.safetensors", "detector.json"):
        (tmp_path / name).write_bytes((weights_dir / name).read_bytes())
    with open(tmp_path / "detector.safetensors", "r+b") as fh:
        fh.seek(-10, 2)
        fh.write(b"\x00" * 10)
    with pytest.raises(DetectorError, match="sha256"):
        load_detector(tmp_path)


def test_stacking_combiner_uses_its_layer(tmp_path):
    model = create_detector(combiner="stacking", trained=True)
    model.stacker.weight.data = torch.tensor([[2.0, 0.0]])
    model.stacker.bias.data = torch.tensor([-1.0])
    loaded = load_detector(save_detector(model, tmp_path))
    assert json.loads((tmp_path / "detector.json").read_text())["combiner"] == "stacking"
    logits = torch.tensor([[0.5, 3.0]])
    assert loaded.combine(logits).item() == pytest.approx(torch.sigmoid(torch.tensor(0.0)).item())


def test_detail_size_takes_away_fine_detail_and_keeps_the_rest(tmp_path):
    # a 1-px checkerboard (detail no 112-px copy of a 224-px crop can hold) goes flat; a smooth ramp stays
    size = 224
    checker = (np.indices((size, size)).sum(axis=0) % 2 * 255).astype(np.uint8)
    ramp = np.tile(np.linspace(0, 255, size).astype(np.uint8), (size, 1))
    crops = np.stack([np.repeat(img[..., None], 3, axis=2) for img in (checker, ramp)])
    full = to_model_input(crops, (0, 0, 0), (1, 1, 1), size, torch.device("cpu"))
    capped = to_model_input(crops, (0, 0, 0), (1, 1, 1), size, torch.device("cpu"), detail_size=size // 2)
    assert full[0].std() > 0.45 and capped[0].std() < 0.05
    assert (capped[1] - full[1]).abs().max() < 0.02
    # the detector file carries it, and a value that leaves nothing out (or nothing in) is refused
    save_detector(create_detector(trained=True, detail_size=112), tmp_path)
    assert load_detector(tmp_path).config.detail_size == 112
    for bad in (224, 4, 112.5):
        with pytest.raises(DetectorError, match="detail_size"):
            DetectorConfig.from_dict({"detail_size": bad})


def test_untrained_detector_gives_no_verdicts(tmp_path):
    save_detector(create_detector(trained=False), tmp_path)
    with pytest.raises(DetectorError, match="not trained"):
        Analyzer(AnalysisConfig(weights=str(tmp_path), device="cpu"))


def test_crops_are_cut_with_the_detectors_own_margin(tmp_path):
    """detector.json records the training margin; analyze uses it unless the config sets one."""
    save_detector(create_detector(trained=True, crop_margin=0.45), tmp_path)
    assert load_detector(tmp_path).config.crop_margin == 0.45
    assert Analyzer(AnalysisConfig(weights=str(tmp_path), device="cpu")).face_detector.settings.crop_margin == 0.45
    explicit = AnalysisConfig(weights=str(tmp_path), device="cpu", detect=DetectSettings(crop_margin=0.2))
    assert Analyzer(explicit).face_detector.settings.crop_margin == 0.2


def test_confident_strategy_matches_dfdc_rule():
    s = AggregateSettings(threshold=0.5)
    mostly_fake = np.array([0.9] * 5 + [0.1] * 5)      # 50 % confidently fake: mean of those
    assert confident_strategy(mostly_fake, s) == pytest.approx(0.9)
    clean = np.array([0.05] * 19 + [0.95])             # 95 % confidently real: one outlier ignored
    assert confident_strategy(clean, s) == pytest.approx(0.05)
    mixed = np.array([0.6, 0.4, 0.5, 0.7])
    assert confident_strategy(mixed, s) == pytest.approx(0.55)


def _face(frame, track, score, t=None):
    return FaceScore(frame, t if t is not None else frame / 25, track, [0, 0, 10, 10], 0.99, score, {})


def test_video_is_as_fake_as_its_most_fake_person():
    faces = [_face(i, 0, 0.1) for i in range(10)] + [_face(i, 1, 0.95) for i in range(10)]
    v = aggregate(faces, 10, AggregateSettings(threshold=0.5, track_strategy="mean"))
    assert v.verdict == "fake" and v.score == pytest.approx(0.95)
    assert [t.verdict for t in v.tracks] == ["real", "fake"]
    assert v.fake_percentage == pytest.approx(100.0)


def test_short_track_does_not_decide_and_verdict_bands():
    faces = [_face(i, 0, 0.1) for i in range(20)] + [_face(3, 7, 0.99)]
    v = aggregate(faces, 20, AggregateSettings(threshold=0.5, track_strategy="mean"))
    assert v.verdict == "real" and not v.tracks[1].counted
    assert v.fake_percentage == 0.0
    unsure = aggregate([_face(i, 0, 0.55) for i in range(4)], 4, AggregateSettings(threshold=0.5, inconclusive_band=0.1))
    assert unsure.verdict == "inconclusive"
    assert aggregate([], 32, AggregateSettings(threshold=0.5)).verdict == "no_face"


def test_fake_percentage_counts_frames_not_faces():
    faces = [_face(i, 0, 0.9 if i < 4 else 0.1) for i in range(8)]
    v = aggregate(faces, 10, AggregateSettings(threshold=0.5, track_strategy="mean"))
    assert v.fake_percentage == pytest.approx(40.0)  # 4 of 10 analysed frames


def test_keyframes_are_the_most_suspicious_and_spread():
    faces = [_face(i, 0, s) for i, s in enumerate([0.1, 0.9, 0.95, 0.2, 0.3, 0.1, 0.8, 0.1, 0.1, 0.7, 0.1, 0.1])]
    keys = pick_keyframes(faces, 3, 12)
    assert [k.frame_index for k in keys] == [2, 6, 9]  # 1 is too close to 2


def test_too_few_decoded_frames_make_any_verdict_inconclusive():
    # the downgrade lives with the verdict rule: 4 of 10 sampled frames decoded is under half
    faces = [_face(i, 0, 0.99) for i in range(4)]
    settings = AggregateSettings(threshold=0.5)
    assert aggregate(faces, 4, settings).verdict == "fake"
    low = aggregate(faces, 4, settings, frames_sampled=10)
    assert low.verdict == "inconclusive" and low.score == pytest.approx(0.99)
    assert low.downgraded == "fewer than half of the sampled frames could be decoded (4 of 10)"
    half = aggregate([_face(i, 0, 0.99) for i in range(5)], 5, settings, frames_sampled=10)
    assert half.verdict == "fake" and half.downgraded == ""
    assert aggregate([], 2, settings, frames_sampled=10).verdict == "inconclusive"  # even with no face seen


def test_a_detector_with_lite2_as_third_member_analyses_with_heatmaps(clips, tmp_path):
    # candidate H's layout (configs/train-0.4-lite2-member.yaml): three members, stacking, through analyze
    from click.testing import CliRunner

    from deepfake_detect.pipeline.cli import main

    torch.manual_seed(0)
    members = ["mobilenetv2_100", "tf_efficientnetv2_b0", "tf_efficientnet_lite2"]
    folder = save_detector(create_detector(members=members, combiner="stacking", trained=True, version="test"),
                           tmp_path / "three")
    result = CliRunner().invoke(main, ["analyze", str(clips["photo"]), "--weights", str(folder),
                                       "--out", str(tmp_path / "out"), "--render"])
    assert result.exit_code in (0, 1, 3), result.output
    report = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert report["model"]["members"] == members and 0 <= report["score"] <= 1
    assert set(report["tracks"][0]["faces"][0]["member_scores"]) == set(members)
    assert any(key.startswith("annotated") for key in report["outputs"])
