"""Batches of real faces and their self-blended pseudo-fakes, cut exactly as inference cuts crops."""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from deepfake_detect.stages.detect import crop_face
from deepfake_detect.training.data import FaceSet
from deepfake_detect.training.self_blend import self_blend_pair


class FacePool:
    """Faces drawn level by level, uniformly at each level, so that no clump dominates.

    Each entry is keyed by a path of levels, e.g. (identity,) for real faces or (family, identity)
    for real fakes: a draw picks a family uniformly, then an identity within it, then a face. FF++
    and talking-head families come as clumps of near-identical clips of one person; drawn per face,
    one long clip would outweigh a whole family of short ones.
    """

    def __init__(self, face_sets: Sequence[tuple[str | tuple[str, ...], FaceSet]]):
        self.tree: dict = {}
        for key, fs in face_sets:
            path = (key,) if isinstance(key, str) else tuple(key)
            if not len(fs):
                continue
            node = self.tree
            for level in path[:-1]:
                node = node.setdefault(level, {})
            node.setdefault(path[-1], []).extend((fs, k) for k in range(len(fs)))
        self.by_identity: dict[str, list[tuple[FaceSet, int]]] = {}
        self._collect(self.tree, ())
        self.identities = sorted(self.by_identity)
        if not self.identities:
            raise ValueError("no faces to train on")

    def _collect(self, node: dict, path: tuple[str, ...]) -> None:
        for key, child in node.items():
            if isinstance(child, dict):
                self._collect(child, path + (key,))
            else:
                self.by_identity["/".join(path + (key,))] = child

    @functools.cached_property
    def digest(self) -> str:
        """sha1 of the faces themselves (computed once), so another dataset never hits a cache entry."""
        content = hashlib.sha1()
        for identity in self.identities:
            content.update(identity.encode())
            for fs, k in self.by_identity[identity]:
                content.update(fs.boxes[k].tobytes())
                content.update(fs.landmarks[k].tobytes())
                if fs.landmarks68 is not None:  # masks from 68 points: another set, another digest
                    content.update(fs.landmarks68[k].tobytes())
                content.update(np.ascontiguousarray(fs.contexts[k][::8, ::8]).tobytes())
        return content.hexdigest()

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_identity.values())

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        node: dict | list = self.tree
        while isinstance(node, dict):
            keys = sorted(node)
            node = node[keys[rng.integers(len(keys))]]
        fs, k = node[rng.integers(len(node))]
        # the self-blend mask's landmarks: dlib's 68 where the faces were extracted with them
        return fs.contexts[k], fs.boxes[k], fs.landmarks[k] if fs.landmarks68 is None else fs.landmarks68[k]


def sbi_pair_crops(context: np.ndarray, box: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                   margin: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(real crop, fake crop) from one context crop."""
    real, fake, _ = self_blend_pair(context, box, landmarks, rng)
    return crop_face(real, box, margin, size), crop_face(fake, box, margin, size)


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def face_crop(context: np.ndarray, box: np.ndarray, landmarks: np.ndarray, margin: float, size: int) -> np.ndarray:
    """The classifier crop of one pooled face, as inference cuts it."""
    return crop_face(context, box, margin, size)


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


def fixed_face_set(pool: FacePool, n: int, seed: int, label: int, margin: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic set of `n` plain crops from `pool` (e.g. held-out real fakes), all labelled `label`."""
    rng = np.random.default_rng(seed)
    crops = [face_crop(*pool.draw(rng), margin, size) for _ in range(n)]
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8), np.full(n, label)
