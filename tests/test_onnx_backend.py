"""The ONNX Runtime path scores as PyTorch does, is cached safely, and keeps timm out of start-up."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from deepfake_detect.pipeline.core.config import AnalysisConfig, ConfigError, load_config
from deepfake_detect.pipeline.core.model_cache import cache_dir, detector_onnx
from deepfake_detect.pipeline.core.runner import Analyzer, resolve_backend
from deepfake_detect.pipeline.core.threads import thread_policy
from deepfake_detect.stages.classify import CropClassifier, OnnxCropClassifier
from deepfake_detect.stages.detect import create_face_detector
from deepfake_detect.stages.ensemble import create_detector, load_detector, load_verified_config
from deepfake_detect.stages.onnx_models import make_session


def _analyzer(weights_dir, backend: str) -> Analyzer:
    return Analyzer(AnalysisConfig(weights=str(weights_dir), device="cpu", backend=backend))


def test_onnx_classifier_gives_the_pytorch_scores(weights_dir):
    model = load_detector(weights_dir)
    config = load_verified_config(weights_dir)
    session = make_session(detector_onnx(config, str(config.sha256), lambda: model), threads=2)
    crops = np.random.default_rng(1).integers(0, 255, (37, 224, 224, 3), dtype=np.uint8)  # not a batch multiple
    ours = OnnxCropClassifier(session, config, batch_size=16).score(crops)
    reference = CropClassifier(model, torch.device("cpu")).score(crops)
    assert ours.members.shape == reference.members.shape == (37, 2)
    np.testing.assert_allclose(ours.members, reference.members, atol=1e-4)
    np.testing.assert_allclose(ours.ensemble, reference.ensemble, atol=1e-4)


def test_stacking_and_calibration_are_in_the_exported_graph(tmp_path):
    model = create_detector(combiner="stacking", trained=True, calibration={"scale": 1.7, "shift": -0.4})
    model.stacker.weight.data = torch.tensor([[1.5, -0.5]])
    crops = np.random.default_rng(2).integers(0, 255, (5, 224, 224, 3), dtype=np.uint8)
    session = make_session(detector_onnx(model.config, "stacking-test", lambda: model), threads=1)
    ours = OnnxCropClassifier(session, model.config).score(crops)
    reference = CropClassifier(model, torch.device("cpu")).score(crops)
    np.testing.assert_allclose(ours.ensemble, reference.ensemble, atol=1e-4)


def test_mtcnn_in_onnx_runtime_finds_the_same_faces(clips):
    from deepfake_detect.pipeline.core.model_cache import face_detector_onnx
    from deepfake_detect.stages.decode import Sampling, open_media
    from deepfake_detect.stages.mtcnn import MtcnnDetector

    reader = open_media(clips["two"])
    frames = reader.read(reader.sample(Sampling("count", 6)))
    nets = {name: make_session(path, 2) for name, path in face_detector_onnx(MtcnnDetector).items()}
    ours = create_face_detector(sessions=nets).detect(frames)
    reference = create_face_detector().detect(frames)
    assert sum(map(len, reference)) >= 6  # two people in most frames: the comparison is not empty
    assert [len(f) for f in ours] == [len(f) for f in reference]
    for mine, theirs in zip(ours, reference):
        for a, b in zip(mine, theirs):
            np.testing.assert_allclose(a.box, b.box, atol=0.05)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
            assert a.confidence == pytest.approx(b.confidence, abs=1e-4)


def test_analysis_through_onnx_runtime_matches_pytorch(weights_dir, clips):
    """Same faces, same tracks, face and video scores within 1e-3 (the issue's no-loss bound)."""
    onnx, torch_ = _analyzer(weights_dir, "onnx"), _analyzer(weights_dir, "torch")
    assert (onnx.backend, torch_.backend) == ("onnx", "torch")
    for clip in ("one", "two"):
        a, b = onnx.analyze(clips[clip]), torch_.analyze(clips[clip])
        assert not a.errors and not b.errors
        assert [len(t.faces) for t in a.tracks] == [len(t.faces) for t in b.tracks]
        assert len(a.tracks) >= (2 if clip == "two" else 1)
        for ta, tb in zip(a.tracks, b.tracks):
            assert [f.frame_index for f in ta.faces] == [f.frame_index for f in tb.faces]
            assert max(abs(fa.score - fb.score) for fa, fb in zip(ta.faces, tb.faces)) <= 1e-3
        assert a.score == pytest.approx(b.score, abs=1e-3)


def test_a_damaged_cached_export_is_rebuilt(weights_dir):
    config = load_verified_config(weights_dir)
    path = detector_onnx(config, str(config.sha256), lambda: load_detector(weights_dir))
    assert path.parent == cache_dir()
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # a half-written or damaged file
    calls = []
    again = detector_onnx(config, str(config.sha256), lambda: calls.append(1) or load_detector(weights_dir))
    assert calls == [1] and again.read_bytes() == good


def test_onnx_path_does_not_import_timm(weights_dir, clips):
    """A --no-render analysis on CPU runs from the ONNX files: timm (and its second of start-up)
    is only imported when Grad-CAM needs the PyTorch detector."""
    _analyzer(weights_dir, "onnx")  # the cache exists before the child starts
    script = ("import sys; from deepfake_detect.pipeline.core.config import AnalysisConfig; "
              "from deepfake_detect.pipeline.core.runner import Analyzer; "
              f"a = Analyzer(AnalysisConfig(weights={str(weights_dir)!r}, device='cpu')); "
              f"r = a.analyze({str(clips['one'])!r}); assert not r.errors, r.errors; "
              "print('timm' in sys.modules, a.backend)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy(),
                         check=True, timeout=300).stdout.split()
    assert out == ["False", "onnx"]


def test_backend_and_thread_settings_are_checked():
    with pytest.raises(ConfigError, match="backend"):
        load_config(overrides={"backend": "tensorrt"})
    with pytest.raises(ConfigError, match="threads"):
        load_config(overrides={"threads": 0})
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("onnx", torch.device("cuda"))
    assert resolve_backend("auto", torch.device("cpu")) == "onnx"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"


def test_thread_policy_shares_the_cores(monkeypatch):
    monkeypatch.setattr("deepfake_detect.pipeline.core.threads.available_cores", lambda: 8)
    assert thread_policy().compute == 8
    assert thread_policy(concurrent=2).compute == 4
    assert thread_policy(concurrent=16).compute == 1   # never zero
    assert thread_policy(concurrent=2, threads=3).compute == 3  # the user's --threads wins
    assert thread_policy(concurrent=8).decode == 1
