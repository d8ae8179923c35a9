import numpy as np
import pytest

from deepfake_detect.stages.decode import open_media
from deepfake_detect.stages.detect import DetectSettings, Face, FaceDetector
from deepfake_detect.stages.track import FaceTracker


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(DetectSettings())


def test_detects_fixture_face_and_maps_boxes_back(detector, clips):
    reader = open_media(clips["one"])
    frames = reader.read(np.array([5, 20]))
    small = FaceDetector(DetectSettings(detect_long_side=240))
    faces_small, faces_full = small.detect(frames), FaceDetector(DetectSettings(detect_long_side=0)).detect(frames)
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
