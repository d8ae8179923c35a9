"""Self-blended pseudo-fakes on the astronaut face from scikit-image (no files, no network)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from deepfake_detect.training.self_blend import BLEND_RATIOS, face_mask, self_blend, self_blend_pair


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def expanded(box: np.ndarray, share: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Box grown by `share` of its width/height on every side, clipped to the image."""
    w, h = box[2] - box[0], box[3] - box[1]
    x1, y1 = max(0, int(box[0] - share * w)), max(0, int(box[1] - share * h))
    x2, y2 = min(shape[1], int(np.ceil(box[2] + share * w))), min(shape[0], int(np.ceil(box[3] + share * h)))
    return x1, y1, x2, y2


@pytest.mark.parametrize("with_landmarks", [True, False])
def test_mask_is_a_soft_face_shaped_region(astronaut_face, astronaut: np.ndarray, with_landmarks: bool) -> None:
    BOX, LANDMARKS = astronaut_face.box, astronaut_face.landmarks
    box_area = float((BOX[2] - BOX[0]) * (BOX[3] - BOX[1]))
    x1, y1, x2, y2 = expanded(BOX, 0.15, astronaut.shape[:2])  # box grown by 30 % in each dimension
    for seed in range(8):
        mask = face_mask(astronaut.shape[:2], BOX, LANDMARKS if with_landmarks else None,
                         np.random.default_rng(seed))
        assert mask.shape == astronaut.shape[:2] and mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() == pytest.approx(1.0)
        # Covers a good part of the face but is not the whole image.
        assert 0.3 * box_area < mask.sum() < 2.0 * box_area
        assert mask[y1:y2, x1:x2].sum() > 0.9 * mask.sum()
        # Soft edge: a band of intermediate values, not a hard 0/1 cut-out.
        assert np.count_nonzero((mask > 0.05) & (mask < 0.95)) > 0.05 * box_area


def test_mask_uses_both_shapes_when_landmarks_given(astronaut_face, astronaut: np.ndarray) -> None:
    BOX, LANDMARKS = astronaut_face.box, astronaut_face.landmarks
    # Hull masks follow the landmark polygon, ellipses the box: over a few seeds the masks must not
    # all come from one family. Compare against the ellipse-only masks drawn with the same seeds.
    masks_lm = [face_mask(astronaut.shape[:2], BOX, LANDMARKS, np.random.default_rng(s)) for s in range(10)]
    masks_el = [face_mask(astronaut.shape[:2], BOX, None, np.random.default_rng(s)) for s in range(10)]
    same = [np.array_equal(a, b) for a, b in zip(masks_lm, masks_el)]
    assert not all(same)


def test_fake_changes_only_the_masked_face(astronaut_face, astronaut: np.ndarray) -> None:
    BOX, LANDMARKS = astronaut_face.box, astronaut_face.landmarks
    fake, mask = self_blend(astronaut, BOX, LANDMARKS, np.random.default_rng(3))
    assert fake.shape == astronaut.shape and fake.dtype == np.uint8
    assert mask.shape == astronaut.shape[:2] and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert np.isclose(mask.max(), BLEND_RATIOS, atol=1e-3).any()  # peak = the drawn blend ratio

    diff = np.abs(fake.astype(int) - astronaut.astype(int)).mean(axis=2)
    core = mask > 0.5 * mask.max()
    assert diff[core].mean() > 2.0                      # visibly altered inside the mask
    assert np.array_equal(fake[mask == 0], astronaut[mask == 0])  # untouched where the mask is 0
    x1, y1, x2, y2 = expanded(BOX, 0.6, astronaut.shape[:2])
    far = np.ones(mask.shape, bool)
    far[y1:y2, x1:x2] = False
    assert np.array_equal(fake[far], astronaut[far])     # far from the face nothing changes


def test_returned_mask_is_the_blend_weight() -> None:
    # On a flat colour the geometric jitter changes nothing and the pixel transform gives another
    # flat colour. When self_blend_pair swaps roles, `real` is that transformed flat target and the
    # source is the original flat image, so fake = image * mask + real * (1 - mask) is fully known:
    # this checks that the returned mask (blend ratio included) is the weight really used.
    flat = np.empty((256, 256, 3), np.uint8)
    flat[:] = (150, 110, 90)
    box = np.array([80, 60, 170, 190], np.float32)
    checked = 0
    for seed in range(12):
        real, fake, mask = self_blend_pair(flat, box, None, np.random.default_rng(seed))
        if np.array_equal(real, flat) or np.abs(real.astype(int) - flat).max() < 5:
            continue  # not swapped, or the transform barely changed the colour: nothing to learn
        expected = flat * mask[..., None] + real * (1 - mask[..., None])
        assert np.abs(fake - expected).max() <= 0.5 + 1e-3  # only uint8 rounding
        checked += 1
    assert checked >= 2


def test_seed_reproduces_and_varies(astronaut_face, astronaut: np.ndarray) -> None:
    BOX, LANDMARKS = astronaut_face.box, astronaut_face.landmarks
    a_fake, a_mask = self_blend(astronaut, BOX, LANDMARKS, np.random.default_rng(42))
    b_fake, b_mask = self_blend(astronaut, BOX, LANDMARKS, np.random.default_rng(42))
    c_fake, c_mask = self_blend(astronaut, BOX, LANDMARKS, np.random.default_rng(43))
    assert np.array_equal(a_fake, b_fake) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(a_fake, c_fake) and not np.array_equal(a_mask, c_mask)


def test_small_crop_without_landmarks(astronaut_face, astronaut: np.ndarray) -> None:
    BOX = astronaut_face.box
    # A 130x130 crop around the face scaled to 64x64, as a low-resolution face from a video.
    x0, y0, side, size = 157, 60, 130, 64
    crop = cv2.resize(astronaut[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    box = (BOX - np.array([x0, y0, x0, y0], np.float32)) * (size / side)
    for seed in range(5):
        fake, mask = self_blend(crop, box, None, np.random.default_rng(seed))
        assert fake.shape == (size, size, 3) and fake.dtype == np.uint8
        assert mask.shape == (size, size) and mask.dtype == np.float32
        assert mask.max() > 0.2 and mask.sum() > 0.2 * (box[2] - box[0]) * (box[3] - box[1]) * mask.max()
        assert not np.array_equal(fake, crop)
        assert np.array_equal(fake[mask == 0], crop[mask == 0])


def test_pair_swaps_roles_and_keeps_real_consistent(astronaut_face, astronaut: np.ndarray) -> None:
    BOX, LANDMARKS = astronaut_face.box, astronaut_face.landmarks
    swapped = 0
    for seed in range(10):
        real, fake, mask = self_blend_pair(astronaut, BOX, LANDMARKS, np.random.default_rng(seed))
        assert real.shape == fake.shape == astronaut.shape and real.dtype == np.uint8
        # Whatever the roles, the fake differs from its real partner only under the mask.
        assert np.array_equal(fake[mask == 0], real[mask == 0])
        assert np.abs(fake.astype(int) - real.astype(int))[mask > 0.5 * mask.max()].mean() > 1.0
        swapped += not np.array_equal(real, astronaut)
    assert 0 < swapped < 10  # both roles occur
