import numpy as np
import pytest

from deepfake_detect.stages.decode import open_media
from deepfake_detect.stages.detect import FACE_DETECTORS, DetectSettings, Face, FaceDetector, create_face_detector
from deepfake_detect.stages.track import FaceTracker


@pytest.fixture(scope="module")
def detector():
    return create_face_detector(DetectSettings())


def test_detects_fixture_face_and_maps_boxes_back(detector, clips):
    reader = open_media(clips["one"])
    frames = reader.read(np.array([5, 20]))
    small = create_face_detector(DetectSettings(detect_long_side=240))
    faces_small, faces_full = small.detect(frames), create_face_detector(DetectSettings(detect_long_side=0)).detect(frames)
    for a, b in zip(faces_small, faces_full):
        assert len(a) == len(b) == 1
        # detection on a half-size copy gives boxes in full-frame pixels, close to full-size detection
        assert np.abs(a[0].box - b[0].box).max() < 0.15 * b[0].size
        assert a[0].landmarks.shape == (5, 2) and a[0].confidence > 0.95
    crops = detector.crops(frames, faces_full)
    assert crops.shape == (2, 224, 224, 3) and crops.dtype == np.uint8


def test_no_face_frames(detector, clips):
    frames = open_media(clips["none"]).read(np.array([0, 10]))
    assert detector.detect(frames) == [[], []]
    assert detector.crops(frames, [[], []]).shape == (0, 224, 224, 3)


def _face(x, y, s):
    return Face(box=np.array([x, y, x + s, y + s], np.float32), confidence=0.99, landmarks=np.zeros((5, 2), np.float32))


def test_tracker_keeps_two_people_apart_when_they_cross():
    tracker = FaceTracker()
    crops_a = np.zeros((1, 64, 64, 3), np.uint8)
    crops_a[..., 0] = 200
    crops_b = np.zeros((1, 64, 64, 3), np.uint8)
    crops_b[..., 2] = 200
    ids = []
    for step in range(8):  # A moves right, B moves left: they pass at step ~4
        xa, xb = 100 + 40 * step, 420 - 40 * step
        got = tracker.update(step * 0.5, [_face(xa, 100, 80), _face(xb, 110, 80)], np.concatenate([crops_a, crops_b]))
        ids.append(got)
    assert all(g == ids[0] for g in ids) and ids[0][0] != ids[0][1]


def test_tracker_starts_new_track_after_long_gap_or_jump():
    tracker = FaceTracker()
    crop = np.full((1, 64, 64, 3), 120, np.uint8)
    a = tracker.update(0.0, [_face(100, 100, 80)], crop)
    b = tracker.update(0.5, [_face(110, 100, 80)], crop)
    c = tracker.update(1.0, [_face(600, 100, 80)], crop)  # 6 face sizes in half a second: someone else
    d = tracker.update(30.0, [_face(600, 100, 80)], crop)  # unseen for longer than max_gap_s
    assert a == b and c != b and d != c


class CentreFace(FaceDetector):
    """A stand-in detector: one face in the middle of every frame, to show the seam takes another."""

    name = "centre"

    def find(self, frames):
        h, w = frames.shape[1:3]
        box = np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4], np.float32)
        return [[(box, 0.99, np.zeros((5, 2), np.float32))] for _ in frames]


def test_a_detector_is_one_class_and_one_registry_line(monkeypatch):
    monkeypatch.setitem(FACE_DETECTORS, "centre", f"{__name__}:CentreFace")
    detector = create_face_detector(DetectSettings(detector="centre", detect_long_side=100))
    frames = np.zeros((2, 200, 400, 3), np.uint8)
    faces = detector.detect(frames)
    assert isinstance(detector, CentreFace) and [len(f) for f in faces] == [1, 1]
    np.testing.assert_allclose(faces[0][0].box, [100, 50, 300, 150])  # found at 100 px wide, mapped back to 400
    assert detector.crops(frames, faces).shape == (2, 224, 224, 3)


def test_an_unknown_detector_is_refused_when_the_settings_are_read():
    from deepfake_detect.pipeline.core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="unknown face detector 'retina'; known: mtcnn"):
        load_config(overrides={"detect.detector": "retina"})
    assert load_config(overrides={"detect.detector": "mtcnn"}).detect.detector == "mtcnn"
