"""Training / evaluation transforms: shape, dtype, range and seeded determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from deepfake_detect.training.augment import build_eval_transform, build_train_transform

SIZE = 96


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    # Non-square crop so the transforms must also fix the aspect ratio.
    return np.ascontiguousarray(data.astronaut()[40:200, 150:290])


def _check_output(out: torch.Tensor) -> None:
    assert type(out) is torch.Tensor  # plain tensor, not a tv_tensors subclass
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_train_output_format(face: np.ndarray) -> None:
    transform = build_train_transform(SIZE)
    torch.manual_seed(0)
    for _ in range(10):
        _check_output(transform(face))


def test_train_is_seeded_and_random(face: np.ndarray) -> None:
    transform = build_train_transform(SIZE)
    torch.manual_seed(123)
    first = [transform(face) for _ in range(3)]
    torch.manual_seed(123)
    again = [transform(face) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # successive draws differ: it really augments


def test_a_lower_zoom_bound_shows_the_face_larger() -> None:
    """zoom_min_area 0.55 must reach the scale of tight face-crop photos; 0.8 must not."""
    square = np.zeros((SIZE, SIZE, 3), np.uint8)
    square[SIZE // 4:3 * SIZE // 4, SIZE // 4:3 * SIZE // 4] = 255   # a "face" on 25 % of the crop

    def largest_share(min_area: float) -> float:
        transform = build_train_transform(SIZE, min_area)
        torch.manual_seed(0)
        return max(float((transform(square).mean(0) > 0.5).float().mean()) for _ in range(60))

    # 0.8 keeps >= 80 % of the crop: the face can grow to 0.25 / 0.8 = 31 % of it, 0.55 to 45 %
    assert largest_share(0.8) < 0.25 / 0.8 + 0.03 < largest_share(0.55)


def test_eval_is_a_plain_resize(face: np.ndarray) -> None:
    transform = build_eval_transform(SIZE)
    out = transform(face)
    _check_output(out)
    assert torch.equal(out, transform(face))  # no randomness
    flat = np.full((50, 70, 3), 128, dtype=np.uint8)
    assert torch.allclose(transform(flat), torch.full((3, SIZE, SIZE), 128 / 255))  # not normalised
    # Channel order is kept (RGB in, RGB out): the astronaut's skin is redder than it is blue.
    assert out[0].mean() > out[2].mean()
