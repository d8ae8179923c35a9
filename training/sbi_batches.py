"""Batches of real faces and their self-blended pseudo-fakes, cut exactly as inference cuts crops."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from stages.detect import crop_face
from training.data import FaceSet
from training.self_blend import self_blend_pair


class FacePool:
    """All training faces, drawn identity-balanced so a long clip does not dominate a short one."""

    def __init__(self, face_sets: list[tuple[str, FaceSet]]):
        self.by_identity: dict[str, list[tuple[FaceSet, int]]] = {}
        for identity, fs in face_sets:
            self.by_identity.setdefault(identity, []).extend((fs, k) for k in range(len(fs)))
        self.by_identity = {k: v for k, v in self.by_identity.items() if v}
        self.identities = sorted(self.by_identity)
        if not self.identities:
            raise ValueError("no faces to train on")

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_identity.values())

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        faces = self.by_identity[self.identities[rng.integers(len(self.identities))]]
        fs, k = faces[rng.integers(len(faces))]
        return fs.contexts[k], fs.boxes[k], fs.landmarks[k]


def sbi_pair_crops(context: np.ndarray, box: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                   margin: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(real crop, fake crop) from one context crop."""
    real, fake, _ = self_blend_pair(context, box, landmarks, rng)
    return crop_face(real, box, margin, size), crop_face(fake, box, margin, size)


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def sbi_batch(pool: FacePool, n_pairs: int, rng: np.random.Generator, transform: Callable[[np.ndarray], torch.Tensor],
              margin: float, size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """2*n_pairs images (each real beside its own fake) and labels 0/1."""
    images, labels = [], []
    for _ in range(n_pairs):
        real, fake = sbi_pair_crops(*pool.draw(rng), rng, margin, size)
        images += [transform(real), transform(fake)]
        labels += [0.0, 1.0]
    return normalise(torch.stack(images), mean, std), torch.tensor(labels)


def fixed_sbi_set(pool: FacePool, n_pairs: int, seed: int, margin: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic validation set (uint8 crops, labels) of held-out faces and their pseudo-fakes."""
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for _ in range(n_pairs):
        real, fake = sbi_pair_crops(*pool.draw(rng), rng, margin, size)
        crops += [real, fake]
        labels += [0, 1]
    return np.stack(crops), np.array(labels)
