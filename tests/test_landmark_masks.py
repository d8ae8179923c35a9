"""Self-blend masks from dlib's 68 landmarks (SBI's masks), on the astronaut face from scikit-image."""
from __future__ import annotations

import numpy as np
import pytest

from deepfake_detect.training.face_hulls import SHAPES, hull_mask68
from deepfake_detect.training.self_blend import face_mask, self_blend

pytest.importorskip("dlib", reason="68-point landmarks need the training extras: pip install -e '.[train]'")


@pytest.fixture(scope="module")
def points68(astronaut_face) -> np.ndarray:
    from deepfake_detect.training.landmarks68 import landmarks68

    return landmarks68(astronaut_face.image[None], astronaut_face.box[None])[0]


def grown(box: np.ndarray, share: float) -> tuple[int, int, int, int]:
    w, h = box[2] - box[0], box[3] - box[1]
    return int(box[0] - share * w), int(box[1] - share * h), int(box[2] + share * w), int(box[3] + share * h)


def test_landmarks_land_on_the_eyes_nose_and_mouth(astronaut_face, points68) -> None:
    assert points68.shape == (68, 2) and points68.dtype == np.float32
    x1, y1, x2, y2 = grown(astronaut_face.box, 0.15)
    assert ((points68[:, 0] >= x1) & (points68[:, 0] <= x2) & (points68[:, 1] >= y1) & (points68[:, 1] <= y2)).all()
    eye_l, eye_r, nose, mouth_l, mouth_r = astronaut_face.landmarks  # read off the photo by eye
    assert np.linalg.norm(points68[36:42].mean(0) - eye_l) < 8    # dlib's 36-41: the eye on the image's left
    assert np.linalg.norm(points68[42:48].mean(0) - eye_r) < 8
    assert np.linalg.norm(points68[30] - nose) < 10
    assert np.linalg.norm(points68[48] - mouth_l) < 10 and np.linalg.norm(points68[54] - mouth_r) < 10


@pytest.mark.parametrize("kind", SHAPES)
def test_each_mask_shape_covers_the_face_and_stays_on_it(astronaut_face, points68, kind: str) -> None:
    shape = astronaut_face.image.shape[:2]
    box = astronaut_face.box
    box_area = float((box[2] - box[0]) * (box[3] - box[1]))
    mask = hull_mask68(shape, points68, np.random.default_rng(0), kind)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    x1, y1, x2, y2 = grown(box, 0.15)
    inside = mask[max(0, y1 - (40 if kind == "extended" else 0)):y2, x1:x2].sum()  # extended takes in the forehead
    assert inside == mask.sum()
    hull = hull_mask68(shape, points68, np.random.default_rng(0), "hull")
    top_of_brows = int(points68[17:27, 1].min())
    if kind == "hull":
        assert 0.4 * box_area < mask.sum() < 1.2 * box_area
    elif kind == "extended":
        assert mask.sum() > hull.sum() and mask[:top_of_brows].sum() > hull[:top_of_brows].sum()
    else:  # full and components leave out parts of the hull
        assert 0.3 * hull.sum() < mask.sum() < hull.sum()


def test_unknown_shape_and_wrong_points_are_refused(points68) -> None:
    with pytest.raises(ValueError, match="unknown mask shape"):
        hull_mask68((64, 64), points68, np.random.default_rng(0), "ellipse")
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        hull_mask68((64, 64), points68[:5], np.random.default_rng(0))


def test_68_point_masks_are_seeded_soft_and_on_the_face(astronaut_face, points68) -> None:
    shape, box = astronaut_face.image.shape[:2], astronaut_face.box
    box_area = float((box[2] - box[0]) * (box[3] - box[1]))
    x1, y1, x2, y2 = grown(box, 0.2)
    masks = [face_mask(shape, box, points68, np.random.default_rng(seed)) for seed in range(8)]
    again = face_mask(shape, box, points68, np.random.default_rng(3))
    assert np.array_equal(masks[3], again)                                   # a seed reproduces its mask
    assert len({m.tobytes() for m in masks}) == len(masks)                   # and each seed deforms it anew
    for mask in masks:
        assert mask.dtype == np.float32 and mask.max() == pytest.approx(1.0)
        assert 0.25 * box_area < mask.sum() < 1.6 * box_area
        assert mask[max(0, y1 - 30):y2, x1:x2].sum() > 0.95 * mask.sum()     # inside the face (and forehead)
        assert np.count_nonzero((mask > 0.05) & (mask < 0.95)) > 0.05 * box_area  # a blurred edge


def test_68_point_self_blend_changes_only_the_masked_face(astronaut_face, points68) -> None:
    image = astronaut_face.image
    fake, mask = self_blend(image, astronaut_face.box, points68, np.random.default_rng(5))
    changed = np.abs(fake.astype(int) - image.astype(int)).max(axis=2) > 0
    assert changed.any() and not changed[mask == 0].any()
