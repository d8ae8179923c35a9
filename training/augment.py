"""Image transforms for classifier training and evaluation (torchvision.transforms.v2).

Both take a uint8 HxWx3 RGB numpy face crop and return a float32 3xSxS tensor in [0, 1]. They do
not normalise: the mean/std belong to the backbone and are applied by the model config.

The training transform imitates what happens to real videos between camera and detector
(re-encoding, resizing, blur, noise, lighting) so the classifier cannot lean on pristine-image
statistics. All randomness comes from torch's global RNG, so `torch.manual_seed` reproduces it.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchvision.transforms import v2

Transform = Callable[[np.ndarray], torch.Tensor]


def _downscale_upscale(size: int) -> v2.Transform:
    """Resolution loss: shrink to a random 1/4..1 of the side, then back to `size`."""
    return v2.Compose([v2.RandomResize(min_size=max(1, size // 4), max_size=size), v2.Resize((size, size))])


DEFAULT_ZOOM_MIN_AREA = 0.8   # the shipped recipe's zoom (see build_train_transform)


def build_train_transform(size: int, zoom_min_area: float = DEFAULT_ZOOM_MIN_AREA) -> Transform:
    """Random training transform: numpy uint8 HxWx3 RGB -> float32 tensor 3 x size x size in [0, 1].

    `zoom_min_area`: the smallest share of the crop a random zoom keeps. 0.8 (mild) covers MTCNN's
    box jitter; about 0.6 also shows faces as large as in photos that are already tight face crops
    (the face box fills the photo, so no margin can be added around it).
    """
    return v2.Compose([
        v2.ToImage(),
        # A zoom instead of a plain resize: the face position and scale in our crops vary with
        # MTCNN's box, and cropping adds no black borders.
        v2.RandomResizedCrop((size, size), scale=(zoom_min_area, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([v2.RandomRotation(degrees=8, interpolation=v2.InterpolationMode.BILINEAR)], p=0.3),
        v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.02)], p=0.5),
        # Degradations in the order they happen to a shared video: resize, then re-encode, then
        # whatever blur the player / decoder adds.
        v2.RandomApply([_downscale_upscale(size)], p=0.25),
        v2.RandomApply([v2.JPEG(quality=(30, 95))], p=0.5),  # JPEG needs uint8, so before ToDtype
        v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=0.2),
        v2.ToDtype(torch.float32, scale=True),
        # GaussianNoise only accepts float images; clip=True keeps the output in [0, 1].
        v2.RandomApply([v2.RandomChoice([v2.GaussianNoise(sigma=s) for s in (0.01, 0.02, 0.04)])], p=0.2),
        v2.ToPureTensor(),
    ])


def build_eval_transform(size: int) -> Transform:
    """Deterministic evaluation transform: resize to size x size, float32 in [0, 1]."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((size, size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.ToPureTensor(),
    ])
