"""Crop geometry: the classifier only ever sees real frame pixels, wherever the face is."""
from __future__ import annotations

import numpy as np
import pytest

from deepfake_detect.stages.crop import crop_face, crop_region, crop_square, square_crop_box


def _gradient(h: int, w: int) -> np.ndarray:
    """A frame whose every pixel is unique, so a crop can be located exactly."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x // 256) * 16 + (y // 256)], axis=-1).astype(np.uint8)


def test_square_inside_the_frame_is_centred_on_the_face():
    box = np.array([40, 50, 80, 90], np.float32)
    assert crop_square(box, 0.5, 200, 200).tolist() == square_crop_box(box, 0.5).tolist() == [30, 40, 90, 100]


@pytest.mark.parametrize("box", [[0, 20, 40, 60], [70, 70, 100, 100], [-5, -5, 30, 30]])
def test_square_at_the_edge_slides_inside_and_keeps_its_size(box):
    box = np.array(box, np.float32)
    x1, y1, x2, y2 = crop_square(box, 0.5, 100, 100)
    wanted = square_crop_box(box, 0.5)
    assert x2 - x1 == y2 - y1 == wanted[2] - wanted[0]  # same context, only moved
    assert 0 <= x1 and 0 <= y1 and x2 <= 100 and y2 <= 100


def test_square_larger_than_the_frame_shrinks_to_fit():
    # a tight face-crop photo: the face fills the picture, the margin cannot be had
    x1, y1, x2, y2 = crop_square(np.array([5, 0, 95, 120], np.float32), 0.3, 120, 100)
    assert (x2 - x1, y2 - y1) == (100, 100) and x1 == 0 and 0 <= y1 <= 20


def test_edge_crop_has_no_replicated_pixels():
    frame = _gradient(100, 100)
    crop = crop_face(frame, np.array([0, 20, 40, 60], np.float32), margin=0.5, size=60)
    assert crop.shape == (60, 60, 3)
    # the square (side 60) slid to x 0..60: the crop is exactly that part of the frame
    np.testing.assert_array_equal(crop, frame[10:70, 0:60])
    # no column repeats, as it would with edge replication
    assert len({crop[:, k].tobytes() for k in range(60)}) == 60


def test_crop_region_halves():
    frame = _gradient(10, 21)
    np.testing.assert_array_equal(crop_region(frame, "left_half"), frame[:, :10])
    np.testing.assert_array_equal(crop_region(frame, "right_half"), frame[:, 10:])
    assert crop_region(frame, "") is frame
    with pytest.raises(ValueError, match="unknown region"):
        crop_region(frame, "top_half")


def test_sharpness_falls_as_a_face_loses_detail():
    """A face crop's sharpness drops with blur and with upscaling from a small face; a flat crop has none."""
    import cv2
    from skimage import data

    from deepfake_detect.stages.face_quality import sharpness

    face = np.ascontiguousarray(data.astronaut()[30:254, 150:374])  # 224 px around her face
    blurred = cv2.GaussianBlur(face, (0, 0), 2.0)
    small = cv2.resize(cv2.resize(face, (56, 56), interpolation=cv2.INTER_AREA), (224, 224))  # a 56-px face blown up
    flat = np.full_like(face, 128)
    values = sharpness(np.stack([face, blurred, small, flat]))
    assert values.shape == (4,) and values.dtype == np.float32
    assert values[0] > 2 * values[1] > 0 and values[0] > 2 * values[2] > 0 and values[3] == 0
    assert sharpness(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0,)
